//! keyturn-emulator: a local stand-in for Entra ID (token endpoint, managed identity), Key
//! Vault secrets and Microsoft Graph users, over real TLS, so that the official Azure SDK
//! clients cannot tell the difference for the operations keyturn uses.
//!
//! # Layout
//!
//! Imports point one way, down: a module imports from its own layer or those below it, never
//! from above, so the modules form no import cycle.
//!
//! - Top: [`Emulator`] / [`EmulatorConfig`] (here): start a server on `127.0.0.1:<port>`, stop
//!   it. `server`: TLS accept loop, routing to the services, fault application.
//!   [`control`]: [`Control`], the handle tests use (and the `/_emulator/...` HTTP API).
//! - Services, which never import one another: `entra` (`/{tenant}/oauth2/v2.0/token`,
//!   `/msi/token`), `oidc` (discovery documents, JWKS, instance and user realm discovery),
//!   `keyvault` (`/secrets/...` on `{vault}.vault.azure.net`), `graph` (`/v1.0/users/...`).
//! - What services share: `aad` (token audiences, issuer URLs, the AADSTS error answer),
//!   `shared` (the per-emulator state behind its locks: state, faults, throttling, clock).
//! - [`scenario`]: what the emulated tenant contains ([`Scenario`], parsed from TOML or JSON
//!   and validated), and seeding a state from it.
//! - Bottom: `state` (the directory and vaults, their lookup tables and persistence, and the
//!   plain data types a scenario seeds), `rules` (Entra's password rules, Key Vault's naming
//!   rules), `roles` (built-in directory roles), `jwt` (token signing and checking),
//!   [`faults`] (fault rules, [`FaultRule`], and [`Counters`]), `clock` (the adjustable clock),
//!   `http` (request and response helpers), [`tls`] (certificates), [`Error`].
//! - Beside the layers, `testkit` (cargo feature `testkit`, for tests only): the harness
//!   keyturn's and the emulator's integration tests share; it uses only the public API.
//!
//! Wire facts follow `shared/design/azure-wire.md`; `docs/emulator.md` lists what is and is
//! not emulated.
#![forbid(unsafe_code)]
// Handlers return `Result<_, Response>` where the error is the answer to send; a response is
// built once per request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod aad;
mod clock;
pub mod control;
mod entra;
mod error;
pub mod eventgrid;
pub mod faults;
mod graph;
mod http;
mod jwt;
mod keyvault;
mod oidc;
mod roles;
mod rules;
pub mod scenario;
mod server;
mod shared;
mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;

pub use control::{Control, InvariantQuery, InvariantReport, UserInfo};
pub use error::Error;
pub use faults::{Counters, FaultKind, FaultRule};
pub use scenario::{Limits, Scenario, UserFlags};

use shared::{lock, Shared};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Where the server certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// Generate a throwaway CA and a server certificate for `localhost`, `127.0.0.1`,
    /// `*.vault.azure.net`, `login.microsoftonline.com` and `graph.microsoft.com`; write the
    /// CA's PEM to `ca_out` if given.
    Generate {
        /// Where to write the CA certificate (PEM).
        ca_out: Option<PathBuf>,
    },
    /// Use a PEM certificate (chain) and key; `ca` is the PEM clients must trust (default: the
    /// certificate file itself).
    Files {
        /// Server certificate chain (PEM).
        cert: PathBuf,
        /// Server private key (PEM).
        key: PathBuf,
        /// CA certificate (PEM) reported by [`Emulator::ca_pem`].
        ca: Option<PathBuf>,
    },
}

/// How to start an emulator.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Seed for a fresh state (ignored for entities when `state_file` already exists; its
    /// fault rules are always installed).
    pub scenario: Option<Scenario>,
    /// Server certificate.
    pub tls: TlsSource,
    /// Persist the state (users, apps, vaults, secrets, token-signing key) to this JSON file
    /// after every change (write to a temporary file, then rename), and load it at start.
    pub state_file: Option<PathBuf>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            scenario: None,
            tls: TlsSource::Generate { ca_out: None },
            state_file: None,
        }
    }
}

/// A running emulator. Dropping it stops the listener; [`Emulator::shutdown`] also waits.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    ca_pem: String,
    control: Control,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Emulator {
    /// Builds the state and TLS material, binds the listener and starts serving.
    pub async fn start(cfg: EmulatorConfig) -> Result<Emulator, Error> {
        if let Some(sc) = &cfg.scenario {
            sc.validate()?;
        }
        let clock = clock::Clock::default();
        let st = match &cfg.state_file {
            Some(p) if p.exists() => state::State::load(p)?,
            _ => {
                let mut st = state::State::empty();
                if let Some(sc) = &cfg.scenario {
                    sc.apply_to(&mut st, clock.unix())?;
                }
                st
            }
        };
        let tls = match &cfg.tls {
            TlsSource::Generate { ca_out } => {
                let m = tls::generate()?;
                if let Some(p) = ca_out {
                    std::fs::write(p, &m.ca_pem).map_err(|source| Error::Io {
                        path: p.clone(),
                        source,
                    })?;
                }
                m
            }
            TlsSource::Files { cert, key, ca } => tls::from_files(cert, key, ca.as_deref())?,
        };
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: cfg.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            state: Mutex::new(st),
            faults: Mutex::new(faults::FaultEngine::default()),
            throttle: Mutex::new(shared::Throttle::default()),
            clock,
            state_file: cfg.state_file.clone(),
            events: Mutex::default(),
        });
        shared.persist(&lock(&shared.state));
        let control = Control { shared };
        if let Some(sc) = &cfg.scenario {
            for f in &sc.faults {
                control.add_fault(f.clone())?;
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
        let task = tokio::spawn(server::serve(listener, acceptor, control.clone(), stop_rx));
        tracing::info!(%addr, "keyturn-emulator listening");
        Ok(Emulator {
            addr,
            ca_pem: tls.ca_pem,
            control,
            stop,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA that signed the server certificate (what clients must trust).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Authority host for credentials: `https://localhost:{port}`.
    pub fn authority_host(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Graph base URL (paths under `/v1.0`): `https://localhost:{port}`.
    pub fn graph_base(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Managed-identity endpoint for `IDENTITY_ENDPOINT`: `https://localhost:{port}/msi/token`.
    pub fn identity_endpoint(&self) -> String {
        format!("https://localhost:{}/msi/token", self.addr.port())
    }

    /// Value clients must send as `x-identity-header` (`IDENTITY_HEADER`).
    pub fn identity_header(&self) -> String {
        lock(&self.control.shared.state).msi_identity_header.clone()
    }

    /// URL of a vault: `https://{vault}.vault.azure.net:{port}/`.
    pub fn vault_url(&self, vault: &str) -> String {
        format!(
            "https://{}.vault.azure.net:{}/",
            vault.to_ascii_lowercase(),
            self.addr.port()
        )
    }

    /// The endpoint of the Event Grid topic `topic` (any name; CloudEvents 1.0 input):
    /// `https://{topic}.westeurope-1.eventgrid.azure.net:{port}/api/events`. Its host is not in
    /// [`Emulator::resolve_hosts`]: resolve it too.
    pub fn event_grid_endpoint(&self, topic: &str) -> String {
        format!(
            "https://{}.{}.eventgrid.azure.net:{}/api/events",
            topic.to_ascii_lowercase(),
            eventgrid::REGION,
            self.addr.port()
        )
    }

    /// Every host name clients must resolve to [`Emulator::addr`] (reqwest
    /// `ClientBuilder::resolve`): `localhost`, `login.microsoftonline.com`,
    /// `graph.microsoft.com` and `{vault}.vault.azure.net` for each vault that exists now.
    pub fn resolve_hosts(&self) -> Vec<String> {
        let mut v = vec![
            "localhost".to_string(),
            "login.microsoftonline.com".to_string(),
            "graph.microsoft.com".to_string(),
        ];
        v.extend(
            self.control
                .vault_names()
                .into_iter()
                .map(|n| format!("{n}.vault.azure.net")),
        );
        v
    }

    /// A handle on the state: seed, faults, counters, passwords, invariant, clock.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Stops accepting, closes open connections, waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
