//! The crate's one error enum.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, starting or controlling the emulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source} (check the path and its permissions)")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The scenario (TOML or JSON) is not well-formed or refers to things that do not exist.
    #[error("invalid scenario: {0}")]
    Scenario(String),
    /// The TLS certificate or key could not be generated or loaded.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source} (is the port already in use?)")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The persisted state file exists but cannot be used.
    #[error("state file {path} is unusable: {message} (delete it to start from the scenario)")]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A control operation named a tenant, user, vault or fault rule that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A control operation was given an invalid argument.
    #[error("invalid request: {0}")]
    Invalid(String),
}
