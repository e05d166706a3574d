//! Configuration: a TOML file plus `KEYTURN__SECTION__KEY` environment overrides, read with
//! the `config` crate into serde structs, then validated as a whole so that
//! `keyturn check-config` reports every problem with its key path.
//!
//! - `model`: the serde types and their defaults, as read from the file.
//! - `validate`: everything serde cannot check, one function per section, every problem
//!   with its key; `identities`: the `[identities]` section (kinds, credential files, the
//!   form of Entra ids, `verify_identity`); `accounts`: the `[[accounts]]` section, resolved
//!   with the defaults, and the check that no two accounts write the same Key Vault secret.
//! - `notify`: the `[[notify]]` sinks (kinds, URLs, HMAC key sources, event names, bounds).
//! - `include`: the files `include = [...]` names (identities and accounts only), merged
//!   into the main file's, their problems named with their paths.
//! - `expiry`: the app credential's own expiry where known offline (a certificate's
//!   `notAfter`, a client secret's declared `secret_expires`) and the warnings before it.
//! - `load`: the file and the environment into a validated [`Loaded`], or a [`ConfigError`].
//!   Also `admin_socket`: only the socket, as the client commands read it (file and
//!   environment, the rest unvalidated).

mod accounts;
mod expiry;
mod identities;
mod include;
mod load;
mod model;
mod notify;
mod validate;

pub use accounts::{normalize_vault, provision_warnings};
pub use expiry::{credential_expiries, expiry_warnings, EXPIRY_WARNING};
pub(crate) use load::admin_socket;
pub use load::{load, load_str, load_with_env, ConfigError, Loaded};
pub use model::*;
pub use notify::{notify_url_ok, webhook_key_source, KeySource, NOTIFY_EVENTS, NOTIFY_KINDS};
pub(crate) use validate::lease_url_problem;
pub use validate::{validate, DURATION_MAXIMUMS, LEASE_DURATION_BOUNDS};

/// Exit code for a bad configuration (`EX_USAGE` in sysexits.h, as linkerd2-proxy uses).
pub(crate) const EXIT_CONFIG: i32 = 64;
