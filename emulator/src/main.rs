//! `keyturn-emulator`: runs the emulator until SIGINT or SIGTERM.

use clap::Parser;
use keyturn_emulator::{Emulator, EmulatorConfig, Scenario, TlsSource};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A local emulator of Entra ID tokens, Key Vault secrets and Microsoft Graph users, over TLS.
///
/// When ready it prints one line on stdout:
/// KEYTURN_EMULATOR_READY {"addr":..,"ca_pem":<path>,"authority_host":..,"graph_base":..,"identity_endpoint":..,"identity_header":..,"vaults":{name:url}}
/// Clients must resolve localhost, login.microsoftonline.com, graph.microsoft.com and
/// {vault}.vault.azure.net to the address and trust the CA. Logs go to stderr.
#[derive(Parser, Debug)]
#[command(name = "keyturn-emulator", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0", env = "KEYTURN_EMULATOR_LISTEN")]
    listen: SocketAddr,
    /// Scenario file (TOML) that seeds tenants, apps, identities, users, vaults, limits, faults.
    #[arg(long, env = "KEYTURN_EMULATOR_SCENARIO")]
    scenario: Option<PathBuf>,
    /// Where to write the generated CA certificate (PEM). Default: a file in the temp dir.
    #[arg(long, conflicts_with_all = ["cert", "key"])]
    ca_out: Option<PathBuf>,
    /// Use this server certificate (PEM chain) instead of generating one; needs --key.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// CA certificate (PEM) that signed --cert, reported in the ready line (default: --cert).
    #[arg(long, requires = "cert")]
    ca: Option<PathBuf>,
    /// Persist state (users, apps, secrets, token-signing key) to this JSON file and reload it
    /// at start; when it exists the scenario's entities are ignored (its faults still apply).
    #[arg(long, env = "KEYTURN_EMULATOR_STATE_FILE")]
    state_file: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `debug`,
    /// `keyturn_emulator::access=info,warn`.
    #[arg(long, default_value = "info", env = "KEYTURN_EMULATOR_LOG")]
    log: String,
}

/// Exit code for invalid configuration (EX_USAGE).
const EX_USAGE: i32 = 64;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|e| {
        eprintln!("keyturn-emulator: invalid --log {:?}: {e}", args.log);
        std::process::exit(EX_USAGE)
    });
    // Colour only on a terminal, and not with NO_COLOR set to anything but "" (no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();

    let scenario = match &args.scenario {
        Some(p) => match Scenario::from_file(p) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("keyturn-emulator: {e}");
                std::process::exit(EX_USAGE)
            }
        },
        None => None,
    };
    let (tls, ca_path) = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => (
            TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
                ca: args.ca.clone(),
            },
            args.ca.clone().unwrap_or_else(|| cert.clone()),
        ),
        _ => {
            let p = args.ca_out.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("keyturn-emulator-{}-ca.pem", std::process::id()))
            });
            (
                TlsSource::Generate {
                    ca_out: Some(p.clone()),
                },
                p,
            )
        }
    };
    let cfg = EmulatorConfig {
        listen: args.listen,
        scenario,
        tls,
        state_file: args.state_file.clone(),
    };
    let emu = match Emulator::start(cfg).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("keyturn-emulator: {e}");
            let code = match e {
                keyturn_emulator::Error::Scenario(_) | keyturn_emulator::Error::Invalid(_) => {
                    EX_USAGE
                }
                _ => 1,
            };
            std::process::exit(code)
        }
    };
    let vaults: serde_json::Map<String, serde_json::Value> = emu
        .control()
        .vault_names()
        .into_iter()
        .map(|v| {
            let url = emu.vault_url(&v);
            (v, serde_json::Value::String(url))
        })
        .collect();
    let ready = serde_json::json!({
        "addr": emu.addr().to_string(),
        "ca_pem": ca_path.display().to_string(),
        "authority_host": emu.authority_host(),
        "graph_base": emu.graph_base(),
        "identity_endpoint": emu.identity_endpoint(),
        "identity_header": emu.identity_header(),
        "vaults": vaults,
    });
    println!("KEYTURN_EMULATOR_READY {ready}");
    wait_for_signal().await;
    tracing::info!("signal received, shutting down");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), emu.shutdown()).await;
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the emulator");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
