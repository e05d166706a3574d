//! keyturn: rotates the passwords of Microsoft Entra ID management service accounts,
//! keeping each one in Azure Key Vault, without ever losing one.
//!
//! # Layout
//!
//! Dependencies point down this list's groups, never up (`docs/architecture.md` has the map
//! and what is still to move). What nothing outside the crate uses is `pub(crate)`: the
//! modules named here without a link (`signals`, `notify`, `accept`, `metrics`, `notifications`) and, inside
//! the public ones, the items the binary, `tests/`, `bench/` and `fuzz/` do not name.
//!
//! Core, depending on nothing above it:
//! - [`password`]: the password policy, the generator and the zeroized [`password::Password`].
//! - [`store`]: the [`store::SecretStore`] trait (Key Vault) and its error enum.
//! - [`directory`]: the [`directory::Directory`] trait (Entra ID through Graph).
//! - [`entra_roles`]: Entra's built-in directory roles by name (template ids) and the
//!   `preset:coreview` preset, as accounts declare them in `roles`.
//! - [`audit`]: audit events, the chained file sink (the record of truth), copies to
//!   stdout and journald, and `keyturn audit show | verify | tail` (`docs/audit.md`).
//! - [`clock`]: time as an input.
//! - [`schedule`]: when an account is due (cron in a time zone, plus a stable offset).
//! - `signals`: SIGTERM/SIGINT/SIGUSR1/SIGHUP as a `signals::Signal` enum; imports
//!   nothing from keyturn.
//! - `notify`: systemd notifications (READY, STOPPING, the watchdog).
//! - [`idle`]: the hook that gives memory back to the kernel when the daemon goes idle.
//! - `accept`: what the accept loops of the admin socket and the metrics listener do on
//!   an error (log, pause, retry).
//! - [`fence`]: fencing by time, the leader's permission to send requests (`docs/ha.md`).
//! - [`observe`]: the [`observe::Observer`] trait the Azure client and the rate limits
//!   report requests and paced waits to (the wiring hands them the service's metrics).
//!
//! The rotation engine and its test doubles:
//! - [`protocol`]: the rotation protocol over those traits: stage, apply, verify, commit,
//!   finish, recovery and drift (`docs/protocol.md`).
//! - [`memory`]: in-memory store and directory with scripted faults, for tests.
//! - [`provision`]: `keyturn provision`: a missing user created with the write-ahead rule
//!   (staged in Key Vault first), its directory roles assigned, over the [`provision::entra::Entra`]
//!   trait (`provision::memory` its in-memory double) (`docs/lifecycle.md`).
//!
//! Configuration:
//! - [`config`]: the file and environment overrides into validated structs (`[limits]`
//!   included), every problem with its key; exit code 64.
//!
//! The runtime:
//! - [`daemon`]: the run loop (`mod.rs`), the due-time heap (`due`), per-tenant queues
//!   (`queues`), jobs, commands, the status board (`board`), the instance lock (`lock`) and
//!   the readiness watch (`readiness`).
//! - [`limits`]: client-side rate limits (per vault, per Graph app and tenant) as decorators;
//!   waits are reported to an observer the wiring hands in.
//! - [`azure`]: the real adapters (Key Vault SDK, Graph over reqwest, azure_identity).
//! - `notifications`: `[[notify]]`: chosen audit events as CloudEvents to webhooks (HMAC
//!   signed) and Event Grid topics, queued and retried apart from the rotations
//!   (`docs/notifications.md`).
//! - `metrics`: one service's counters (an [`observe::Observer`]), and `/metrics`,
//!   `/healthz`, `/readyz` over HTTP.
//! - [`ha`]: `[ha]`, the leader election on an Azure Blob Storage lease (`docs/ha.md`).
//! - [`admin`]: the admin Unix socket: server, wire protocol and client.
//! - [`app`]: a validated configuration into accounts backed by the real adapters.
//! - [`reload`]: SIGHUP and `keyturn reload`: load, validate, swap, or keep the old.
//! - [`plan`]: `keyturn plan`: what start-up would do to each account, read-only.
//! - [`doctor`]: `keyturn doctor`: read-only checks of each identity and account, with fixes;
//!   `doctor::watch`, the checks the daemon's readiness watch runs.
//!
//! Wiring and entry points:
//! - [`service`]: `service::run(loaded, shutdown)`, the one place that starts keyturn (lock,
//!   audit sinks, clients, engine, daemon, admin socket, metrics, signals, sd_notify).
//! - [`cli`]: argument parsing and dispatch, client commands, the audit tools.
//! - `demo` (cargo feature `demo`, on by default): `keyturn demo` against the embedded
//!   emulator.
#![forbid(unsafe_code)]

pub(crate) mod accept;
pub mod admin;
pub mod app;
pub mod audit;
pub(crate) mod audit_blob;
pub mod azure;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod directory;
pub mod doctor;
pub mod entra_roles;
pub mod fence;
pub mod ha;
pub mod idle;
pub mod limits;
pub mod memory;
pub(crate) mod metrics;
pub(crate) mod notifications;
pub(crate) mod notify;
pub mod observe;
pub mod password;
pub mod plan;
pub mod protocol;
pub mod provision;
pub mod reload;
pub mod retire;
pub mod schedule;
pub mod service;
pub(crate) mod signals;
pub mod store;
