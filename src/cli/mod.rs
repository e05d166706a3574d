//! The command line: `run`, `rotate`, `adopt`, `provision`, `plan`, `doctor`, `check-config`, `audit`, `demo`
//! (with the `demo` feature). `main.rs` only calls [`main`]. This module holds dispatch;
//! `args` the clap types; `client` the commands sent to the daemon over the admin socket,
//! `audit` the `keyturn audit …` commands, `check` `keyturn check-config`. The service
//! itself is wired in [`crate::service`].

mod args;
mod audit;
mod check;
mod client;

use crate::admin;
use crate::config::{self, Loaded, EXIT_CONFIG};
use crate::service::ServiceError;
use args::{AuditCmd, AuditSource, Cli, Cmd, Conn, LogFormat, Targets};
use audit::audit_command;
use check::check_config;
use clap::Parser;
use client::{client, target};
use std::path::Path;

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
            Cmd::CheckConfig { config } => check_config(&config.config),
            Cmd::Run { config } => match load(&config.config) {
                Ok(loaded) => report(crate::service::run(loaded, std::future::pending()).await),
                Err(code) => code,
            },
            Cmd::Rotate {
                targets,
                reason,
                ticket,
                no_wait,
                urgent,
                offline,
                conn,
            } => {
                if offline {
                    let Some(account) = targets.account else {
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
                    client(
                        &conn,
                        admin::proto::Request::Rotate {
                            target: targets.target(),
                            reason,
                            ticket,
                            wait: !no_wait,
                            urgent,
                        },
                    )
                    .await
                }
            }
            Cmd::Provision {
                accounts,
                all,
                reason,
                ticket,
                dry_run,
                prune_roles,
                json,
                config,
            } => match load(&config.config) {
                Ok(loaded) => report(
                    crate::service::provision(
                        loaded,
                        crate::service::ProvisionArgs {
                            accounts,
                            all,
                            reason,
                            ticket,
                            dry_run,
                            prune_roles,
                            json,
                        },
                    )
                    .await,
                ),
                Err(code) => code,
            },
            Cmd::Status { conn } => client(&conn, admin::proto::Request::Status).await,
            Cmd::Pause { targets, conn } => {
                client(&conn, admin::proto::Request::Pause(targets.target())).await
            }
            Cmd::Resume { targets, conn } => {
                client(&conn, admin::proto::Request::Resume(targets.target())).await
            }
            Cmd::Reload { conn } => client(&conn, admin::proto::Request::Reload).await,
            Cmd::Adopt {
                accounts,
                reason,
                ticket,
                force,
                dry_run,
                conn,
            } => {
                client::adopt(
                    &conn,
                    &accounts,
                    &client::AdoptOptions {
                        reason,
                        ticket,
                        force,
                        dry_run,
                    },
                )
                .await
            }
            Cmd::Retire {
                accounts,
                reason,
                ticket,
                delete,
                dry_run,
                conn,
            } => match load(&conn.config) {
                Ok(loaded) => {
                    crate::retire::run(
                        loaded,
                        crate::retire::Options {
                            accounts,
                            reason,
                            ticket,
                            delete,
                            dry_run,
                            json: conn.json,
                            socket: conn.socket.clone(),
                        },
                    )
                    .await
                }
                Err(code) => code,
            },
            Cmd::Plan { config, json } => match load(&config.config) {
                Ok(loaded) => plan(&loaded, json).await,
                Err(code) => code,
            },
            Cmd::Doctor {
                config,
                account,
                json,
                write_probe,
            } => match load(&config.config) {
                Ok(loaded) => doctor(&loaded, account.as_deref(), json, write_probe).await,
                Err(code) => code,
            },
            Cmd::Audit { command } => audit_command(command).await,
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
        Cmd::Provision { dry_run: false, .. } => "keyturn provision",
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

/// `keyturn doctor`: prints the report; its exit code (0, 1, 69), or 64 / 1 when it cannot run.
async fn doctor(loaded: &Loaded, account: Option<&str>, json: bool, write_probe: bool) -> i32 {
    match crate::doctor::doctor(
        loaded,
        account,
        write_probe,
        time::OffsetDateTime::now_utc(),
    )
    .await
    {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                print!("{}", r.human());
            }
            r.exit_code()
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
