//! The command line: `run`, `rotate`, `check-config`, `audit`, `demo`. `main.rs` only calls [`main`].

use crate::admin;
use crate::audit::{
    Actor, AuditSink, Detached, FileSink, JournaldSink, StdoutFormat, StdoutSink, Tee, Trigger,
};
use crate::clock::SystemClock;
use crate::config::{self, AuditStdout, Loaded, EXIT_CONFIG};
use crate::daemon::{Command, Daemon, InstanceLock};
use crate::protocol::{Engine, Request};
use crate::signals::{Signal, Signals};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Rotates the passwords of Entra ID management service accounts through Azure Key Vault.
#[derive(Parser, Debug)]
#[command(name = "keyturn", version, about)]
pub struct Cli {
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
pub enum LogFormat {
    /// Readable lines (no timestamps under systemd: journald adds them).
    Text,
    /// One JSON object per line.
    Json,
}

/// How a client command reaches the daemon.
#[derive(clap::Args, Debug, Clone)]
pub struct Conn {
    /// The configuration file (its admin.socket is used; `--offline` reads everything).
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

/// Exit code when the daemon cannot be reached (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: i32 = 69;

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
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
    /// Rotate one account (or all) now: through the daemon's admin socket, or with
    /// `--offline` in the foreground when no daemon runs.
    Rotate {
        /// The account's name.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        account: Option<String>,
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
        /// Rotate in this process without a daemon (takes the daemon's lock).
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
    /// Stop scheduled rotations of an account (or all) until `resume`.
    Pause {
        /// The account's name.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        account: Option<String>,
        /// Every account.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Restart scheduled rotations of an account (or all).
    Resume {
        /// The account's name.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        account: Option<String>,
        /// Every account.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Reload the configuration file (like SIGHUP); a bad file is rejected and the old stays.
    Reload {
        #[command(flatten)]
        conn: Conn,
    },
    /// Run recovery and the drift check now for an account (default: all).
    Reconcile {
        /// The account's name.
        #[arg(conflicts_with = "all")]
        account: Option<String>,
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
pub struct AuditSource {
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
pub enum AuditCmd {
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
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    // The demo prints audit events; diagnostics would drown them.
    let default_filter = if matches!(cli.command, Cmd::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
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
                Ok(loaded) => report(run(loaded).await),
                Err(code) => code,
            },
            Cmd::Rotate {
                account,
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
                        Ok(loaded) => report(rotate(loaded, &account, reason, ticket).await),
                        Err(code) => code,
                    }
                } else {
                    let target = target(account, all);
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
            Cmd::Pause { account, all, conn } => {
                client(&conn, admin::proto::Request::Pause(target(account, all))).await
            }
            Cmd::Resume { account, all, conn } => {
                client(&conn, admin::proto::Request::Resume(target(account, all))).await
            }
            Cmd::Reload { conn } => client(&conn, admin::proto::Request::Reload).await,
            Cmd::Audit { command } => audit_command(command),
            Cmd::Reconcile { account, all, conn } => {
                client(
                    &conn,
                    admin::proto::Request::Reconcile(target(account, all)),
                )
                .await
            }
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

fn target(account: Option<String>, all: bool) -> admin::proto::Target {
    match (account, all) {
        (Some(a), false) => admin::proto::Target::One(a),
        _ => admin::proto::Target::All,
    }
}

/// The admin socket named by the configuration file, without validating the rest of it.
fn configured_socket(path: &Path) -> Option<PathBuf> {
    let raw = ::config::Config::builder()
        .add_source(::config::File::from(path).format(::config::FileFormat::Toml))
        .add_source(
            ::config::Environment::with_prefix("KEYTURN")
                .prefix_separator("__")
                .separator("__"),
        )
        .build()
        .ok()?;
    raw.get_string("admin.socket").ok().map(PathBuf::from)
}

async fn client(conn: &Conn, req: admin::proto::Request) -> i32 {
    let socket = conn
        .socket
        .clone()
        .or_else(|| configured_socket(&conn.config))
        .unwrap_or_else(|| crate::config::AdminConfig::default().socket);
    match admin::client::send(&socket, &req).await {
        Ok(r) => {
            if conn.json {
                println!("{}", r.encode());
            } else {
                print!("{}", admin::client::human(&req, &r));
            }
            admin::client::exit_code(&r)
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            EXIT_UNAVAILABLE
        }
    }
}

fn report(r: anyhow::Result<i32>) -> i32 {
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keyturn: {e:#}");
            1
        }
    }
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

fn load(path: &Path) -> Result<Loaded, i32> {
    config::load(path).map_err(|e| {
        eprintln!("keyturn: invalid configuration: {e}");
        EXIT_CONFIG
    })
}

fn check_config(path: &Path) -> i32 {
    match config::load(path) {
        Ok(loaded) => {
            println!(
                "{}: OK, {} account(s), {} identity(ies)",
                path.display(),
                loaded.accounts.len(),
                loaded.config.identities.len()
            );
            for a in &loaded.accounts {
                println!(
                    "  {:<24} {} in {} ({}) schedule {:?}",
                    a.name,
                    a.secret,
                    a.vault,
                    a.user,
                    a.schedule.pattern()
                );
            }
            0
        }
        Err(e) => {
            let problems = e.problems();
            eprintln!("{}: {} problem(s):", path.display(), problems.len());
            for p in problems {
                eprintln!("  {}: {}", p.key, p.message);
            }
            EXIT_CONFIG
        }
    }
}

fn audit_path(source: &AuditSource) -> Result<PathBuf, i32> {
    match &source.file {
        Some(f) => Ok(f.clone()),
        None => load(&source.config).map(|l| l.config.daemon.audit_log),
    }
}

/// `keyturn audit show|verify|tail`; returns the exit code.
pub fn audit_command(command: AuditCmd) -> i32 {
    use crate::audit::tools;
    let unreadable = |e: tools::Unreadable| {
        eprintln!("keyturn: {e}");
        tools::EXIT_UNREADABLE
    };
    match command {
        AuditCmd::Show {
            source,
            account,
            since,
            event,
            outcome,
            json,
        } => {
            let path = match audit_path(&source) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let since = match since
                .map(|s| tools::parse_since(&s, time::OffsetDateTime::now_utc()))
                .transpose()
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("keyturn: {e}");
                    return EXIT_CONFIG;
                }
            };
            let files = match tools::log_files(&path) {
                Ok(f) => f,
                Err(source) => return unreadable(tools::Unreadable { path, source }),
            };
            let records = match tools::read_records(&files, &mut std::io::stderr()) {
                Ok(r) => r,
                Err(e) => return unreadable(e),
            };
            let filter = tools::Filter {
                account,
                since,
                events: event,
                outcome,
            };
            match tools::show(&records, &filter, json, &mut std::io::stdout().lock()) {
                Ok(_) => 0,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
                Err(e) => {
                    eprintln!("keyturn: {e}");
                    1
                }
            }
        }
        AuditCmd::Verify {
            files,
            source,
            partial,
        } => {
            let files = if files.is_empty() {
                let path = match audit_path(&source) {
                    Ok(p) => p,
                    Err(code) => return code,
                };
                match tools::log_files(&path) {
                    Ok(f) => f,
                    Err(source) => return unreadable(tools::Unreadable { path, source }),
                }
            } else {
                files
            };
            tools::verify_command(&files, partial, &mut std::io::stdout().lock())
        }
        AuditCmd::Tail {
            source,
            lines,
            json,
        } => {
            let path = match audit_path(&source) {
                Ok(p) => p,
                Err(code) => return code,
            };
            match tools::tail(&path, lines, json, &mut std::io::stdout(), &|| false) {
                Ok(()) => 0,
                Err(e) => unreadable(e),
            }
        }
    }
}

/// The audit sinks the configuration asks for: the file first (record of truth).
pub fn audit_sinks(loaded: &Loaded) -> anyhow::Result<Arc<dyn AuditSink>> {
    let path = &loaded.config.daemon.audit_log;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the audit log's folder {}: {e}",
                dir.display()
            )
        })?;
    }
    let mut sinks: Vec<Arc<dyn AuditSink>> = vec![Arc::new(FileSink::open(path)?)];
    // Copies go through a queue so a slow stdout or journal never holds up a rotation.
    let stdout: Option<Arc<dyn AuditSink>> = match loaded.config.daemon.audit_stdout {
        AuditStdout::Off => None,
        AuditStdout::Json => Some(Arc::new(StdoutSink(StdoutFormat::Json))),
        AuditStdout::Human => Some(Arc::new(StdoutSink(StdoutFormat::Human))),
    };
    if let Some(s) = stdout {
        sinks.push(Arc::new(Detached::spawn("stdout", s, 4096)?));
    }
    // Under systemd, a structured copy in the journal.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match JournaldSink::connect() {
            Ok(j) => sinks.push(Arc::new(Detached::spawn("journald", Arc::new(j), 4096)?)),
            Err(e) => tracing::warn!(error = %e, "no audit copy in the journal"),
        }
    }
    Ok(Arc::new(Tee(sinks)))
}

/// `keyturn run`.
pub async fn run(loaded: Loaded) -> anyhow::Result<i32> {
    run_until(loaded, std::future::pending()).await
}

/// `keyturn run` that also stops, like on SIGTERM, when `stop` completes (`keyturn demo --for`).
pub async fn run_until(
    mut loaded: Loaded,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<i32> {
    // Released when dropped, on every return below: a failed start is not a crash.
    let lock = InstanceLock::acquire(&loaded.config.daemon.state_dir)?;
    let audit = audit_sinks(&loaded)?;
    let http = crate::azure::http_client(&loaded.config.tls, &loaded.config.network)?;
    let limiter = Arc::new(crate::limits::Limiter::new(loaded.config.limits.clone()));
    let accounts = crate::app::accounts_with(&loaded, &http, &limiter)?;
    // The accounts as written are built; only the resolved ones are still read below, and the
    // reloader is handed the configuration without them rather than a copy of thousands.
    loaded.config.accounts = Vec::new();
    let clock = Arc::new(SystemClock);
    let engine = Arc::new(Engine::new(
        audit.clone(),
        clock.clone(),
        crate::app::tuning(&loaded),
    ));
    let watchdog = crate::notify::watchdog_interval();
    let mut settings = crate::app::settings(&loaded);
    if lock.unclean {
        settings.startup_delay = loaded.config.daemon.unclean_start_delay;
    }
    let mut daemon = Daemon::new(engine, audit.clone(), clock.clone(), settings, accounts);
    if let Some(w) = watchdog {
        daemon = daemon.with_heartbeat(w / 4);
    }
    let board = daemon.board();
    let (tx, rx) = mpsc::channel(64);
    let reloader: Arc<dyn admin::Reload> = Arc::new(crate::reload::Reloader::new(
        loaded.path.clone(),
        loaded.config.clone(),
        limiter,
        audit.clone(),
        clock.clone(),
        tx.clone(),
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // The admin socket is bound (mode 0660, group) before readiness is reported.
    let admin_cfg = loaded.config.admin.clone();
    let mut tasks = Vec::new();
    if !admin_cfg.socket.as_os_str().is_empty() {
        let listener = admin::bind(&admin_cfg)?;
        let access = admin::Access::from_config(&admin_cfg)?;
        let handler = Arc::new(admin::Handler {
            commands: tx.clone(),
            board: board.clone(),
            audit: audit.clone(),
            clock: clock.clone(),
            reload: Some(reloader.clone()),
            require_reason: admin_cfg.require_reason,
            require_ticket: admin_cfg.require_ticket,
        });
        let limits = admin::Limits {
            max_connections: admin_cfg.max_connections,
            request_timeout: admin_cfg.request_timeout,
        };
        tasks.push(tokio::spawn(admin::serve(
            listener,
            access,
            handler,
            limits,
            stopped(),
        )));
        tracing::info!(socket = %admin_cfg.socket.display(), "admin socket listening");
    }

    if let Some(addr) = loaded.config.metrics.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on metrics.listen {addr}: {e}"))?;
        tasks.push(tokio::spawn(crate::metrics::serve(
            listener,
            board.clone(),
            audit.clone(),
            watchdog,
            loaded.config.metrics.max_connections,
            stopped(),
        )));
        tracing::info!(%addr, "metrics and health listening");
    }

    let admin_files = match admin_cfg.socket.as_os_str().is_empty() {
        true => 0,
        false => admin_cfg.max_connections,
    };
    let metrics = &loaded.config.metrics;
    let metrics_files = metrics.listen.map_or(0, |_| metrics.max_connections);
    crate::accept::check_file_limit(admin_files + metrics_files);
    let (shutdown, signal_tasks) = watch_signals(tx, reloader)?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    // Ready means the unclean start delay, if any, is over.
    let readied = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let n = loaded.accounts.len();
    // The daemon holds what it needs; the parsed file (every account twice: as written and
    // resolved) is not kept for the life of the process.
    drop(loaded);
    tokio::spawn({
        let readied = readied.clone();
        async move {
            if ready_rx.await.is_ok() {
                readied.store(true, std::sync::atomic::Ordering::SeqCst);
                crate::notify::ready(&format!("managing {n} account(s)"));
            }
        }
    });
    if let Some(w) = watchdog {
        let board = board.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(w / 2);
            loop {
                tick.tick().await;
                let beat = board.lock().unwrap_or_else(|e| e.into_inner()).heartbeat;
                // Ping only while the main loop is alive (or still starting up).
                if beat.is_none_or(|b| b.elapsed() < w) {
                    crate::notify::watchdog();
                }
            }
        });
    }
    daemon
        .run(
            rx,
            async {
                tokio::select! {
                    _ = shutdown => {}
                    _ = stop => {}
                }
                crate::notify::stopping();
            },
            Some(ready_tx),
        )
        .await?;
    for t in signal_tasks {
        t.abort();
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    if !admin_cfg.socket.as_os_str().is_empty() {
        let _ = std::fs::remove_file(&admin_cfg.socket);
    }
    // Stopped before ready after an unclean stop: the delay was not waited out, so the
    // dropped lock keeps the mark.
    if readied.load(std::sync::atomic::Ordering::SeqCst) {
        lock.release();
    }
    Ok(0)
}

/// `keyturn rotate ACCOUNT`: one rotation in the foreground.
pub async fn rotate(
    loaded: Loaded,
    account: &str,
    reason: Option<String>,
    ticket: Option<String>,
) -> anyhow::Result<i32> {
    // Released when dropped on an early return (kept unclean if it inherited a crash it has
    // not waited out yet); `release` below once it has.
    let lock = InstanceLock::acquire(&loaded.config.daemon.state_dir)?;
    let audit = audit_sinks(&loaded)?;
    let http = crate::azure::http_client(&loaded.config.tls, &loaded.config.network)?;
    let accounts = crate::app::accounts(&loaded, &http)?;
    if lock.unclean {
        let delay = loaded.config.daemon.unclean_start_delay;
        eprintln!("keyturn: the previous keyturn stopped uncleanly; waiting {} for its in-flight requests to settle", humantime::format_duration(delay));
        tokio::time::sleep(delay).await;
    }
    let Some(managed) = accounts.into_iter().find(|m| m.account.name == account) else {
        lock.release();
        eprintln!(
            "keyturn: no account named {account:?} in {}",
            loaded.path.display()
        );
        return Ok(EXIT_CONFIG);
    };
    let engine = Engine::new(audit, Arc::new(SystemClock), crate::app::tuning(&loaded));
    let request = Request {
        trigger: Trigger::Cli,
        actor: crate::audit::Actor::current_user(),
        reason,
        ticket,
        rotation_id: None,
    };
    let result = engine.rotate(&managed.account, &request).await;
    lock.release();
    match result {
        Ok(r) => {
            println!(
                "rotated {account}: rotation {} version {}{}",
                r.rotation_id,
                r.version,
                if r.resumed {
                    " (completed a pending rotation)"
                } else {
                    ""
                }
            );
            for w in r.warnings {
                println!("warning: {w}");
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            Ok(if e.is_pending() { 75 } else { 1 })
        }
    }
}

/// Maps each [`Signal`] to what it asks of the daemon: the returned future completes on the
/// first [`Signal::Stop`]; the tasks are the ones to abort once the daemon has stopped.
fn watch_signals(
    commands: mpsc::Sender<Command>,
    reload: Arc<dyn admin::Reload>,
) -> std::io::Result<(
    impl std::future::Future<Output = ()>,
    Vec<tokio::task::JoinHandle<()>>,
)> {
    let mut signals = Signals::install()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // A rotation request and a reload each wait beside the signal loop, so neither a full
    // command queue nor a slow reload holds up a stop; one more of each queues behind a
    // running one (the kernel merges repeated signals the same way).
    let (rotate_tx, mut rotate_rx) = mpsc::channel::<()>(1);
    let (reload_tx, mut reload_rx) = mpsc::channel::<()>(1);
    let rotator = tokio::spawn(async move {
        while rotate_rx.recv().await.is_some() {
            tracing::info!("SIGUSR1: rotating every account");
            if commands.send(rotate_all_command()).await.is_err() {
                break;
            }
        }
    });
    let reloader = tokio::spawn(async move {
        while reload_rx.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            // The outcome is logged and audited by the reloader.
            let _ = reload.reload(Actor::Daemon).await;
        }
    });
    let dispatcher = tokio::spawn(async move {
        let mut stop_tx = Some(stop_tx);
        loop {
            match signals.recv().await {
                Signal::Stop => {
                    if let Some(tx) = stop_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Signal::RotateAll => {
                    let _ = rotate_tx.try_send(());
                }
                Signal::Reload => {
                    let _ = reload_tx.try_send(());
                }
            }
        }
    });
    let stopped = async move {
        let _ = stop_rx.await;
    };
    Ok((stopped, vec![dispatcher, rotator, reloader]))
}

/// The command SIGUSR1 sends: rotate every account, trigger `signal`.
pub fn rotate_all_command() -> Command {
    Command::Rotate {
        account: None,
        request: Request::daemon(Trigger::Signal),
        wait: false,
        reply: None,
    }
}
