//! keyturn: rotates the passwords of Microsoft Entra ID management service accounts,
//! keeping each one in Azure Key Vault, without ever losing one.
//!
//! # Layout
//!
//! - [`password`]: the password policy, the generator and the zeroized [`password::Password`].
//! - [`store`]: the [`store::SecretStore`] trait (Key Vault) and its error enum.
//! - [`directory`]: the [`directory::Directory`] trait (Entra ID through Graph).
//! - [`protocol`]: the rotation protocol over those traits: stage, apply, verify, commit,
//!   finish, recovery and drift (`docs/protocol.md`).
//! - [`audit`]: audit events, the chained file sink (the record of truth), copies to
//!   stdout and journald, and `keyturn audit show | verify | tail` (`docs/audit.md`).
//! - [`clock`]: time as an input.
//! - [`limits`]: client-side rate limits (per vault, per Graph app and tenant) as decorators.
//! - [`idle`]: the hook that gives memory back to the kernel when the daemon goes idle.
//! - [`accept`]: what the accept loops of the admin socket and the metrics listener do on
//!   an error (log, pause, retry).
//! - [`memory`]: in-memory store and directory with scripted faults, for tests.
#![forbid(unsafe_code)]

pub mod accept;
pub mod admin;
pub mod app;
pub mod audit;
pub mod azure;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod directory;
pub mod idle;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod password;
pub mod protocol;
pub mod reload;
pub mod schedule;
pub mod service;
pub mod signals;
pub mod store;
