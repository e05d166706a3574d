//! keyturn's integration tests, one binary (as rust-lang/cargo's `tests/testsuite`): one module
//! per area, sharing `common`.

mod common;

mod admin;
mod audit;
mod azurite;
mod bad_answers;
mod bad_configs;
mod chaos;
mod config;
mod daemon;
mod deploy;
mod doctor;
mod e2e;
mod first_start;
mod ha;
mod ha_chaos;
mod lifecycle_retire;
mod listeners;
mod listing;
mod msp;
mod msp_audit;
mod msp_daemon;
mod msp_expiry;
mod notify;
mod ops;
mod package;
mod process;
mod protocol;
mod provision;
mod reserve;
mod scale;
mod scale_e2e;
mod service;
mod signin;
mod verify_consent;
mod watch;
