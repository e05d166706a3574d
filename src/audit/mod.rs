//! Audit events: what keyturn did, to which account, why, and whether it worked.
//!
//! Every protocol step is recorded *before* the step it announces proceeds: if the
//! record cannot be written the step does not happen (fail closed). Records never hold
//! a password or anything derived from one.
//!
//! - `event` (re-exported here): the record's fields, [`AuditEvent`] and its kinds.
//! - `sinks` (re-exported here): standard output, memory, [`Tee`] and `Detached`; the
//!   [`AuditSink`] trait they implement and [`AuditError`] are here.
//! - [`chain`]: the record's bytes, canonical form and hash chain.
//! - [`file`]: the file sink (the record of truth): append-only, fsync, rotation, seal,
//!   fail closed on a full or read-only disk.
//! - [`journald`]: a structured copy to the systemd journal.
//! - [`tools`]: `keyturn audit show | verify | tail`.
//!
//! The format is documented in `docs/audit.md`.

pub mod chain;
mod event;
pub mod file;
pub mod journald;
mod sinks;
pub mod tools;

pub use file::{AuditHealth, FaultSwitch, FileOptions, FileSink};
pub use journald::JournaldSink;

pub(crate) use event::{format_time, SCHEMA_VERSION};
pub use event::{Actor, AuditEvent, ErrorInfo, EventKind, Outcome, ReadinessChange, Trigger};
pub(crate) use sinks::Detached;
pub use sinks::{MemorySink, Tee};
pub(crate) use sinks::{StdoutFormat, StdoutSink};

use async_trait::async_trait;
use std::path::PathBuf;

/// Why an audit record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot write the audit log {path}: {source}; keyturn stops rotating until it can (check disk space and permissions)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the audit log {path}: {source}; check that the directory exists and is writable by keyturn")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the audit log {path} ends with a record keyturn cannot continue (line {line}: {detail}); run `keyturn audit verify --file {path}`, then move the file aside to start a new chain")]
    Corrupt {
        path: PathBuf,
        line: usize,
        detail: String,
    },
}

/// Somewhere audit records go.
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// Records the event durably; an error means the action it announces must not proceed.
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError>;

    /// False while records cannot be written (full or read-only disk): keyturn then
    /// starts no rotation. Copies and in-memory sinks are always writable.
    fn is_writable(&self) -> bool {
        true
    }

    /// The state of the record of truth, for status answers and health checks; `None`
    /// for sinks without one.
    fn health(&self) -> Option<AuditHealth> {
        None
    }
}
