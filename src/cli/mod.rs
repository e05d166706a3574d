//! The command line: `run`, `rotate`, `adopt`, `plan`, `check-config`, `audit`, `demo`
//! (with the `demo` feature). `main.rs` only calls [`main`]. This module holds argument parsing (the clap
//! types) and dispatch; `client` the commands sent to the daemon over the admin socket,
//! `audit` the `keyturn audit …` commands, `check` `keyturn check-config`. The service
//! itself is wired in [`crate::service`].

mod audit;
mod check;
mod client;

use crate::admin;
use crate::config::{self, Loaded, EXIT_CONFIG};
use crate::service::ServiceError;
use audit::audit_command;
use check::check_config;
use clap::{Parser, Subcommand, ValueEnum};
use client::{client, target};
use std::path::{Path, PathBuf};

/// Rotates the passwords of Entra ID management service accounts through Azure Key Vault.
#[derive(Parser, Debug)]
#[command(name = "keyturn", version, about)]
pub(crate) struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Let `run` and `rotate --offline` run as root (refused by default: exit 64).
    #[arg(
        long,
        global = true,
        env = "KEYTURN_ALLOW_ROOT",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub allow_root: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

/// Log output formats.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Readable lines (no timestamps under systemd: journald adds them).
    Text,
    /// One JSON object per line.
    Json,
}

/// How a client command reaches the daemon.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Conn {
    /// The configuration file (its admin.socket is used).
    #[arg(
        long,
        short,
        env = "KEYTURN_CONFIG",
        default_value = "/etc/keyturn/keyturn.toml"
    )]
    pub config: PathBuf,
    /// The admin socket (overrides the configuration's).
    #[arg(long, env = "KEYTURN_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Run the daemon: recover, schedule and rotate every configured account.
    Run {
        /// The configuration file.
        #[arg(
            long,
            short,
            env = "KEYTURN_CONFIG",
            default_value = "/etc/keyturn/keyturn.toml"
        )]
        config: PathBuf,
    },
    /// Rotate one account (a tenant's, or all) now: through the daemon's admin socket, or with
    /// `--offline` in the foreground when no daemon runs.
    Rotate {
        /// The account's name.
        #[arg(required_unless_present_any = ["all", "tenant"], conflicts_with_all = ["all", "tenant"])]
        account: Option<String>,
        /// Every account in this tenant: an identity's `tenant_id` as written there (its id
        /// or its domain).
        #[arg(long, value_name = "TENANT", conflicts_with = "all")]
        tenant: Option<String>,
        /// Every account.
        #[arg(long)]
        all: bool,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
        /// Ticket number (recorded in the audit log).
        #[arg(long)]
        ticket: Option<String>,
        /// Return once started, with the rotation ids, instead of waiting for the end.
        #[arg(long)]
        no_wait: bool,
        /// Rotate in this process without a daemon (takes the daemon's lock and uses the
        /// whole configuration file).
        #[arg(long)]
        offline: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show the daemon's state and every account's last and next rotation.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop scheduled rotations of an account (a tenant's, or all) until `resume`.
    Pause {
        /// The account's name.
        #[arg(required_unless_present_any = ["all", "tenant"], conflicts_with_all = ["all", "tenant"])]
        account: Option<String>,
        /// Every account in this tenant: an identity's `tenant_id` as written there (its id
        /// or its domain).
        #[arg(long, value_name = "TENANT", conflicts_with = "all")]
        tenant: Option<String>,
        /// Every account.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Restart scheduled rotations of an account (a tenant's, or all).
    Resume {
        /// The account's name.
        #[arg(required_unless_present_any = ["all", "tenant"], conflicts_with_all = ["all", "tenant"])]
        account: Option<String>,
        /// Every account in this tenant: an identity's `tenant_id` as written there (its id
        /// or its domain).
        #[arg(long, value_name = "TENANT", conflicts_with = "all")]
        tenant: Option<String>,
        /// Every account.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Take over an account whose secret is not in Key Vault yet: rotate it now, so that its
    /// password (unknown until then) is a known one in Key Vault. Tell the account's consumer
    /// where to read it first (docs/first-deployment.md).
    Adopt {
        /// The account's name.
        account: String,
        /// Why (required; recorded in the audit log with who asked).
        #[arg(long, required = true)]
        reason: Option<String>,
        /// Ticket number (recorded in the audit log).
        #[arg(long)]
        ticket: Option<String>,
        /// Adopt even if the secret exists already (its password is replaced).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print what `keyturn run` would do to each account at start-up, reading Key Vault
    /// only: complete a pending rotation, rotate now, next rotation at T, await adoption,
    /// disabled, paused. Writes nothing; needs no daemon.
    Plan {
        /// The configuration file.
        #[arg(
            long,
            short,
            env = "KEYTURN_CONFIG",
            default_value = "/etc/keyturn/keyturn.toml"
        )]
        config: PathBuf,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reload the configuration file (like SIGHUP); a bad file is rejected and the old stays.
    Reload {
        #[command(flatten)]
        conn: Conn,
    },
    /// Run recovery and the drift check now for an account (default: all).
    Reconcile {
        /// The account's name.
        #[arg(conflicts_with_all = ["all", "tenant"])]
        account: Option<String>,
        /// Every account in this tenant (an identity's `tenant_id` as written there).
        #[arg(long, value_name = "TENANT", conflicts_with = "all")]
        tenant: Option<String>,
        /// Every account.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Validate the configuration and report every problem (exit 64 on error).
    CheckConfig {
        /// The configuration file.
        #[arg(
            long,
            short,
            env = "KEYTURN_CONFIG",
            default_value = "/etc/keyturn/keyturn.toml"
        )]
        config: PathBuf,
    },
    /// Read, check and follow the audit log (see docs/audit.md).
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Run keyturn against the embedded Azure emulator: no Azure account needed.
    #[cfg(feature = "demo")]
    Demo {
        /// Stop after this long (e.g. "45s"); runs until Ctrl-C when absent.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Seconds between scheduled rotations of each account.
        #[arg(long, default_value_t = 10)]
        every: u32,
        /// Where the demo keeps its files (audit log, CA, lock); a temporary folder by default.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Where the audit tools read: `--file`, or the configuration's `daemon.audit_log`.
#[derive(clap::Args, Debug)]
pub(crate) struct AuditSource {
    /// The audit log (its rotated files beside it are read too); overrides --config.
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// The configuration file whose `daemon.audit_log` is read.
    #[arg(
        long,
        short,
        env = "KEYTURN_CONFIG",
        default_value = "/etc/keyturn/keyturn.toml"
    )]
    pub config: PathBuf,
}

/// `keyturn audit …`.
#[derive(Subcommand, Debug)]
pub(crate) enum AuditCmd {
    /// Show records as a table (or JSON lines), oldest first, across rotated files.
    Show {
        #[command(flatten)]
        source: AuditSource,
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        /// Only records since: a duration back from now (7d, 12h), a date or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only these event types (repeat or comma-separate; `rotation` means rotation.*).
        #[arg(long, value_delimiter = ',')]
        event: Vec<String>,
        /// Only this outcome: success, warning, failure (or failed), pending.
        #[arg(long)]
        outcome: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain; exit 0 intact, 1 broken (the first broken record is named), 2 unreadable.
    Verify {
        /// The files to check (any order); the log and its rotated files by default.
        files: Vec<PathBuf>,
        #[command(flatten)]
        source: AuditSource,
        /// The files hold a piece of the chain: no genesis needed at the start, more may follow.
        #[arg(long)]
        partial: bool,
    },
    /// Follow the live log (Ctrl-C to stop).
    Tail {
        #[command(flatten)]
        source: AuditSource,
        /// Records shown before following.
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: usize,
        /// JSON lines instead of readable lines.
        #[arg(long)]
        json: bool,
    },
    /// Write every file of the log (rotated files, then the live one) to stdout as stored,
    /// byte for byte: a copy that `keyturn audit verify` checks elsewhere (`kubectl exec …
    /// keyturn audit export > audit.jsonl` where the image has no tar for `kubectl cp`).
    Export {
        #[command(flatten)]
        source: AuditSource,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    // The demo prints audit events; diagnostics would drown them.
    #[cfg(feature = "demo")]
    let quiet = matches!(cli.command, Cmd::Demo { .. });
    #[cfg(not(feature = "demo"))]
    let quiet = false;
    let default_filter = if quiet { "warn" } else { "info" };
    init_tracing(cli.log_format, default_filter);
    if let Some(code) = refuse_root(&cli) {
        return code;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyturn: cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Cmd::CheckConfig { config } => check_config(&config),
            Cmd::Run { config } => match load(&config) {
                Ok(loaded) => report(crate::service::run(loaded, std::future::pending()).await),
                Err(code) => code,
            },
            Cmd::Rotate {
                account,
                tenant,
                all,
                reason,
                ticket,
                no_wait,
                offline,
                conn,
            } => {
                if offline {
                    let Some(account) = account else {
                        eprintln!("keyturn: --offline rotates one account: name it");
                        return EXIT_CONFIG;
                    };
                    match load(&conn.config) {
                        Ok(loaded) => report(
                            crate::service::rotate_offline(loaded, &account, reason, ticket).await,
                        ),
                        Err(code) => code,
                    }
                } else {
                    let target = target(account, tenant, all);
                    client(
                        &conn,
                        admin::proto::Request::Rotate {
                            target,
                            reason,
                            ticket,
                            wait: !no_wait,
                        },
                    )
                    .await
                }
            }
            Cmd::Status { conn } => client(&conn, admin::proto::Request::Status).await,
            Cmd::Pause {
                account,
                tenant,
                all,
                conn,
            } => {
                let target = target(account, tenant, all);
                client(&conn, admin::proto::Request::Pause(target)).await
            }
            Cmd::Resume {
                account,
                tenant,
                all,
                conn,
            } => {
                let target = target(account, tenant, all);
                client(&conn, admin::proto::Request::Resume(target)).await
            }
            Cmd::Reload { conn } => client(&conn, admin::proto::Request::Reload).await,
            Cmd::Adopt {
                account,
                reason,
                ticket,
                force,
                conn,
            } => {
                client(
                    &conn,
                    admin::proto::Request::Adopt {
                        account,
                        reason,
                        ticket,
                        force,
                    },
                )
                .await
            }
            Cmd::Plan { config, json } => match load(&config) {
                Ok(loaded) => plan(&loaded, json).await,
                Err(code) => code,
            },
            Cmd::Audit { command } => audit_command(command),
            Cmd::Reconcile {
                account,
                tenant,
                all,
                conn,
            } => {
                let target = target(account, tenant, all);
                client(&conn, admin::proto::Request::Reconcile(target)).await
            }
            #[cfg(feature = "demo")]
            Cmd::Demo {
                duration,
                every,
                dir,
            } => report(crate::demo::run(duration, every, dir).await),
        }
    })
}

/// `run` and `rotate --offline` write the lock, the audit log and its seal as whoever runs
/// them: as root they would leave root-owned files the service user cannot write, and act
/// on files the service user controls. They refuse root unless `--allow-root` is given
/// (`KEYTURN_ALLOW_ROOT=1`); the other commands only read files or talk to the socket.
/// `demo` keeps its files in a folder of its own and is allowed.
fn refuse_root(cli: &Cli) -> Option<i32> {
    let writes = match &cli.command {
        Cmd::Run { .. } => "keyturn run",
        Cmd::Rotate { offline: true, .. } => "keyturn rotate --offline",
        _ => return None,
    };
    if cli.allow_root || !nix::unistd::geteuid().is_root() {
        return None;
    }
    eprintln!(
        "keyturn: refusing to run `{writes}` as root: it writes the instance lock, the audit log and its seal, which must stay the service user's. Run it as that user (e.g. `sudo -u keyturn {writes} …`), or pass --allow-root (KEYTURN_ALLOW_ROOT=1) if root is meant to run it"
    );
    Some(EXIT_CONFIG)
}

/// The exit code of a command that ran the service (or the demo): a [`ServiceError`]'s own
/// ([`ServiceError::exit_code`]: 64 for a credential that cannot be built), else 1.
fn report<E: Into<anyhow::Error>>(r: Result<i32, E>) -> i32 {
    match r {
        Ok(code) => code,
        Err(e) => {
            let e = e.into();
            eprintln!("keyturn: {}", error_text(&e));
            e.downcast_ref::<ServiceError>()
                .map_or(1, ServiceError::exit_code)
        }
    }
}

/// An error and its sources, each source that its error's text does not already show
/// appended after a colon (thiserror messages mostly include their source; anyhow's
/// contexts do not).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for source in e.chain().skip(1) {
        let s = source.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
    }
    text
}

fn init_tracing(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("KEYTURN_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ));
    let _ = match (format, under_systemd) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
}

/// Colour in logs only on a terminal, and not when `NO_COLOR` is set to anything but ""
/// (<https://no-color.org>): a pipe, a file, the journal or a container's log gets plain text.
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// `keyturn plan`: prints the plan; exit 0, 1 when an account's Key Vault could not be
/// read, or the code `keyturn run` would exit with when it cannot start.
async fn plan(loaded: &Loaded, json: bool) -> i32 {
    match crate::plan::plan(loaded, time::OffsetDateTime::now_utc()).await {
        Ok(p) => {
            if json {
                println!("{}", serde_json::to_string(&p).unwrap_or_default());
            } else {
                print!("{}", p.human());
            }
            i32::from(p.has_errors())
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            e.exit_code()
        }
    }
}

fn load(path: &Path) -> Result<Loaded, i32> {
    config::load(path).map_err(|e| {
        eprintln!("keyturn: invalid configuration: {e}");
        EXIT_CONFIG
    })
}
