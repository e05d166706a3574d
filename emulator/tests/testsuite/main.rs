//! keyturn-emulator's integration tests, one binary (as rust-lang/cargo's `tests/testsuite`):
//! one module per area, sharing `common`.

mod common;

mod ca;
mod cli;
mod consent;
mod control;
mod entra;
mod eventgrid;
mod graph;
mod keyvault;
mod lifecycle;
mod msi;
mod oidc;
mod roles;
mod sdk;
mod sdk_js;
mod sdk_python;
