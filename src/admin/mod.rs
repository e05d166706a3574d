//! The admin Unix socket: bound with mode 0660, the configured group and a POSIX ACL entry
//! per allowed group before readiness is reported, every connection's peer credentials
//! checked (root, the daemon's own user, members of the admin groups, supplementary groups
//! included, all as the kernel recorded them at `connect`), one request per line (`proto`),
//! each command audited with who sent it. A slow, silent or hostile client holds only its
//! own task: reads and writes have time limits (blank lines do not extend them), lines a
//! size limit, and connections a cap; refused connections are audited at most once a
//! minute per uid, with a count of the rest.

mod access;
mod bind;
pub mod client;
mod error;
mod handler;
pub mod proto;
mod refusals;
mod server;

pub(crate) use access::Access;
pub use bind::{bind, AdminError};
pub(crate) use error::Reply;
pub use error::{CommandError, ErrorCode};
pub(crate) use handler::Handler;
pub(crate) use server::{serve, Limits};
