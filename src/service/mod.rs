//! The one place that wires keyturn: [`run`] takes a loaded configuration and a shutdown
//! future and starts everything `keyturn run` is: the instance lock, the audit sinks, the
//! Azure clients behind the rate limits, the protocol engine, the daemon, the admin socket,
//! the metrics and health listener, signals and systemd notifications. `keyturn run`,
//! `keyturn demo` and the in-process tests all start keyturn through it.
//! [`rotate_offline`] wires the same pieces for one rotation without a daemon.

mod audit;
mod offline;
mod provision;

use crate::admin;
use crate::audit::{Actor, AuditError, Trigger};
use crate::azure::SetupError;
use crate::clock::SystemClock;
use crate::config::{Loaded, EXIT_CONFIG};
use crate::daemon::{Command, Daemon, DaemonError, InstanceLock, PauseFile, PauseFileError};
use crate::metrics::Metrics;
use crate::protocol::{Engine, Request};
use crate::signals::{Signal, Signals};

pub(crate) use audit::audit_sinks;
use audit::prune_audit_files;
pub(crate) use offline::rotate_offline;
pub(crate) use provision::{provision, ProvisionArgs};

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Why keyturn's service could not start, or had to stop. The `Display` text is what the
/// command line prints; [`ServiceError::exit_code`] is the process's exit status.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The instance lock is held or cannot be taken, or the daemon had to stop (its audit
    /// log cannot be written).
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The audit log's folder cannot be created.
    #[error("cannot create the audit log's folder {}: {source}", .path.display())]
    AuditFolder {
        /// The folder.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The thread that copies audit records to stdout or the journal cannot be started.
    #[error("cannot start the audit copy to {sink}: {source}")]
    AuditCopy {
        /// `stdout` or `journald`.
        sink: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client, a credential or an account's client cannot be built.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The admin socket cannot be set up.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// `metrics.listen` cannot be bound.
    #[error("cannot listen on metrics.listen {addr}: {source}")]
    MetricsListen {
        /// The configured address.
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The signal handlers cannot be installed.
    #[error("cannot install the signal handlers: {source}")]
    Signals {
        #[source]
        source: std::io::Error,
    },
    /// The pause file in `daemon.state_dir` cannot be read.
    #[error(transparent)]
    Pauses(#[from] PauseFileError),
    /// A `[[notify]]` sink cannot be set up (its HMAC key cannot be read).
    #[error(transparent)]
    Notify(#[from] crate::notifications::NotifySetupError),
}

impl ServiceError {
    /// The process's exit status for this error: 64 (`EX_CONFIG`, which systemd's
    /// `RestartPreventExitStatus=64` does not restart) when the configuration must change
    /// before a restart can work (a credential or a CA file that cannot be used), 1 for the
    /// rest. No `_` arm: a new failure must choose.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            ServiceError::Setup(e) => match e {
                SetupError::Identity { .. } | SetupError::Ca { .. } => EXIT_CONFIG,
                SetupError::Http(..) => 1,
            },
            // A restart cannot mend the file: someone must fix or delete it.
            ServiceError::Pauses(_) => EXIT_CONFIG,
            ServiceError::Notify(_) => EXIT_CONFIG,
            ServiceError::Daemon(_)
            | ServiceError::AuditFolder { .. }
            | ServiceError::Audit(_)
            | ServiceError::AuditCopy { .. }
            | ServiceError::Admin(_)
            | ServiceError::MetricsListen { .. }
            | ServiceError::Signals { .. } => 1,
        }
    }
}

/// The longest a stop waits for queued notifications to be delivered (at most
/// `daemon.shutdown_grace`).
const NOTIFY_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs keyturn's service until SIGTERM or SIGINT, or until `shutdown` completes (both stop
/// it the same way: in-flight rotations get the grace period); returns the exit code.
///
/// `keyturn run` passes a future that never completes, `keyturn demo --for` a timer, tests
/// whatever they like. SIGUSR1 and SIGHUP are handled here too (`crate::signals`). Whether
/// the process may run as root is the command line's decision, not this function's.
pub async fn run(
    mut loaded: Loaded,
    shutdown: impl Future<Output = ()>,
) -> Result<i32, ServiceError> {
    // Released when dropped, on every return below: a failed start is not a crash.
    let lock = InstanceLock::acquire(&loaded.config.daemon.state_dir)?;
    let pause_file = PauseFile::in_dir(&loaded.config.daemon.state_dir);
    let paused = pause_file.load()?;
    let file_audit = audit_sinks(&loaded)?;
    // This service's counters: its Azure client and rate limits report to them, and its
    // `/metrics` reads them.
    let metrics = Metrics::new();
    crate::app::report_credential_expiry(&loaded.config, &*metrics);
    let http =
        crate::azure::http_client(&loaded.config.tls, &loaded.config.network, metrics.clone())?;
    // `[[notify]]`: a copy beside the file that only queues; its drops are recorded to the
    // file's sinks, never to itself.
    let notifier = crate::notifications::Notifier::start(
        &loaded.config,
        &http,
        metrics.clone(),
        file_audit.clone(),
    )
    .map_err(notify_error)?;
    // With `[ha]`, every Key Vault and Graph operation is behind the leader's fence (and
    // the audit copy's appends).
    let fence = loaded
        .config
        .ha
        .as_ref()
        .map(|_| Arc::new(crate::fence::Fence::new()));
    // `[daemon.audit_blob]`: a copier that reads the file and appends to the blob; its sink
    // only wakes it.
    let mut copier = match &loaded.config.daemon.audit_blob {
        Some(cfg) => Some(copier(&loaded, cfg, &http, fence.clone(), metrics.clone())?),
        None => None,
    };
    let mut sinks: Vec<Arc<dyn crate::audit::AuditSink>> = vec![file_audit.clone()];
    if let Some(c) = &copier {
        sinks.push(Arc::new(c.sink()));
    }
    if let Some(n) = &notifier {
        sinks.push(n.sink());
    }
    let audit: Arc<dyn crate::audit::AuditSink> = match sinks.len() {
        1 => file_audit,
        _ => Arc::new(crate::audit::Tee(sinks)),
    };
    let limiter = Arc::new(
        crate::limits::Limiter::new(loaded.config.limits.clone(), metrics.clone())
            .with_fence(fence.clone()),
    );
    let credentials = crate::app::credentials(&loaded, &http)?;
    let accounts = crate::app::accounts_with(&loaded, &http, &limiter, &credentials)?;
    // The readiness watch runs doctor's cheap account checks (`doctor::watch`), with the
    // identities' credentials (the accounts' own: one token cache per identity) and the
    // client; the reloader hands it each new configuration.
    let watch = crate::doctor::watch::Watch::new(crate::doctor::watch::Targets::build(
        &loaded,
        &http,
        &credentials,
    ));
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
    let shutdown_grace = loaded.config.daemon.shutdown_grace;
    let mut settings = crate::app::settings(&loaded);
    if lock.unclean {
        settings.startup_delay = loaded.config.daemon.unclean_start_delay;
    }
    let mut daemon = Daemon::new(engine, audit.clone(), clock.clone(), settings, accounts)
        .with_pauses(pause_file, paused)
        .with_readiness_probe(Arc::new(watch.clone()));
    if let Some(w) = watchdog {
        daemon = daemon.with_heartbeat(w / 4);
    }
    let board = daemon.board();
    let elector = match (&loaded.config.ha, fence) {
        (Some(ha), Some(fence)) => Some(Arc::new(elector(
            &loaded,
            ha,
            &http,
            fence,
            board.clone(),
            audit.clone(),
            clock.clone(),
        )?)),
        _ => None,
    };
    let takeover = crate::ha::takeover_delay(
        &loaded.config.network,
        loaded.config.daemon.unclean_start_delay,
    );
    let (tx, rx) = mpsc::channel(64);
    let reloader: Arc<dyn crate::reload::Reload> = Arc::new(
        crate::reload::Reloader::new(
            loaded.path.clone(),
            loaded.config.clone(),
            limiter,
            audit.clone(),
            clock.clone(),
            tx.clone(),
        )
        .with_watch(watch),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = Vec::new();
    if let Some(retention) = loaded.config.daemon.audit_retention {
        tasks.push(tokio::spawn(prune_audit_files(
            loaded.config.daemon.audit_log.clone(),
            retention,
            audit.clone(),
            clock.clone(),
            stopped(),
        )));
    }

    // The admin socket is bound (mode 0660, group) before readiness is reported.
    let admin_cfg = loaded.config.admin.clone();
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
            .map_err(|source| ServiceError::MetricsListen { addr, source })?;
        tasks.push(tokio::spawn(crate::metrics::serve(
            listener,
            metrics,
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
    let (signalled, signal_tasks) = watch_signals(tx, reloader, board.clone())
        .map_err(|source| ServiceError::Signals { source })?;
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
    let stop = async {
        tokio::select! {
            _ = signalled => {}
            _ = shutdown => {}
        }
    };
    tokio::pin!(stop);
    // With `[ha]`: a standby until the lease is taken, then the daemon runs while a task
    // keeps the lease; losing it stops the daemon as a stop signal would.
    let mut lost_rx = None;
    let mut keeper = None;
    let mut leads = elector.is_none();
    if let Some(el) = &elector {
        tracing::info!(
            me = el.me(),
            "keyturn is ready as a standby ([ha]): waiting for the lease"
        );
        crate::notify::ready("standby: waiting for the lease");
        // Nothing of this process is in flight while it waits.
        readied.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::select! {
            leading = el.lead() => {
                if leading.took_over {
                    daemon = daemon.with_takeover_delay(takeover);
                }
                let (lost_tx, rx) = tokio::sync::oneshot::channel();
                lost_rx = Some(rx);
                let el = el.clone();
                keeper = Some(tokio::spawn(async move {
                    let _ = lost_tx.send(el.keep(&leading).await);
                }));
                leads = true;
            }
            _ = &mut stop => crate::notify::stopping(),
        }
    }
    let mut lost = false;
    if leads {
        daemon
            .run(
                rx,
                async {
                    tokio::select! {
                        _ = &mut stop => {}
                        Ok(_) = async { lost_rx.expect("guarded by the if").await }, if lost_rx.is_some() => lost = true,
                    }
                    crate::notify::stopping();
                },
                Some(ready_tx),
            )
            .await?;
    }
    if let Some(k) = keeper {
        k.abort();
    }
    if let Some(el) = &elector {
        // A leader that stopped gracefully gives the lease up; one whose rotations were cut
        // off at the end of the grace period lets it run out, so that the next leader waits
        // the takeover delay for their requests.
        let cut_off = board.lock().unwrap_or_else(|e| e.into_inner()).cut_off;
        if leads && !lost && !cut_off {
            // The copy catches up while this replica still holds the lease.
            if let Some(c) = copier.take() {
                c.stop(COPY_DRAIN.min(shutdown_grace)).await;
            }
            el.release().await;
        }
    }
    if let Some(c) = copier {
        c.stop(COPY_DRAIN.min(shutdown_grace)).await;
    }
    for t in signal_tasks {
        t.abort();
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(n) = notifier {
        n.stop(NOTIFY_DRAIN.min(shutdown_grace)).await;
    }
    if !admin_cfg.socket.as_os_str().is_empty() {
        let _ = std::fs::remove_file(&admin_cfg.socket);
    }
    // Stopped before ready after an unclean stop: the delay was not waited out, so the
    // dropped lock keeps the mark.
    if readied.load(std::sync::atomic::Ordering::SeqCst) {
        lock.release();
    }
    Ok(if lost {
        crate::ha::EXIT_LOST_LEADERSHIP
    } else {
        0
    })
}

/// The longest a stop waits for the audit copy to catch up (at most
/// `daemon.shutdown_grace`); what is left is copied at the next start.
const COPY_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The `[daemon.audit_blob]` copier: the blob reached with its identity's credential.
fn copier(
    loaded: &Loaded,
    cfg: &crate::config::AuditBlobConfig,
    http: &crate::azure::Http,
    fence: Option<Arc<crate::fence::Fence>>,
    observer: Arc<dyn crate::observe::Observer>,
) -> Result<crate::audit_blob::Copier, ServiceError> {
    let net = &loaded.config.network;
    let id = loaded
        .config
        .identities
        .get(&cfg.identity)
        .ok_or_else(|| SetupError::Identity {
            identity: cfg.identity.clone(),
            detail: "daemon.audit_blob.identity names no [identities.NAME]".into(),
            source: None,
        })?;
    let credential = crate::azure::credential(&cfg.identity, id, http, net)?;
    let setup = crate::audit_blob::Setup {
        cfg: cfg.clone(),
        credential,
        live: loaded.config.daemon.audit_log.clone(),
        state_dir: loaded.config.daemon.state_dir.clone(),
        fence,
        observer,
    };
    Ok(crate::audit_blob::start(setup, http, net)?)
}

/// The `[ha]` elector: the lease blob reached with `ha.identity`'s credential.
fn elector(
    loaded: &Loaded,
    ha: &crate::config::HaConfig,
    http: &crate::azure::Http,
    fence: Arc<crate::fence::Fence>,
    board: crate::daemon::StatusBoard,
    audit: Arc<dyn crate::audit::AuditSink>,
    clock: Arc<SystemClock>,
) -> Result<crate::ha::Elector, ServiceError> {
    let net = &loaded.config.network;
    let id = loaded
        .config
        .identities
        .get(&ha.identity)
        .ok_or_else(|| SetupError::Identity {
            identity: ha.identity.clone(),
            detail: "ha.identity names no [identities.NAME]".into(),
            source: None,
        })?;
    let credential = crate::azure::credential(&ha.identity, id, http, net)?;
    Ok(crate::ha::Elector::new(
        ha, credential, http, net, fence, board, audit, clock,
    )?)
}

/// A notifier that could not start, as the service's error.
fn notify_error(e: crate::notifications::StartError) -> ServiceError {
    match e {
        crate::notifications::StartError::Sink(e) => ServiceError::Notify(e),
        crate::notifications::StartError::Identity(e) => ServiceError::Setup(e),
    }
}

/// Maps each [`Signal`] to what it asks of the daemon: the returned future completes on the
/// first [`Signal::Stop`]; the tasks are the ones to abort once the daemon has stopped.
fn watch_signals(
    commands: mpsc::Sender<Command>,
    reload: Arc<dyn crate::reload::Reload>,
    board: crate::daemon::StatusBoard,
) -> std::io::Result<(impl Future<Output = ()>, Vec<tokio::task::JoinHandle<()>>)> {
    let mut signals = Signals::install()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // A rotation request and a reload each wait beside the signal loop, so neither a full
    // command queue nor a slow reload holds up a stop; one more of each queues behind a
    // running one (the kernel merges repeated signals the same way).
    let (rotate_tx, mut rotate_rx) = mpsc::channel::<()>(1);
    let (reload_tx, mut reload_rx) = mpsc::channel::<()>(1);
    let standby = move || {
        board
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .standby()
            .is_some()
    };
    let is_standby = standby.clone();
    let rotator = tokio::spawn(async move {
        while rotate_rx.recv().await.is_some() {
            if is_standby() {
                tracing::warn!(
                    "SIGUSR1 ignored: this replica is an [ha] standby; signal the leader"
                );
                continue;
            }
            tracing::info!("SIGUSR1: rotating every account");
            if commands.send(rotate_all_command()).await.is_err() {
                break;
            }
        }
    });
    let reloader = tokio::spawn(async move {
        while reload_rx.recv().await.is_some() {
            // A standby keeps the configuration it started with, as the socket's `reload`
            // is refused with `not_leader` (docs/ha.md): restart it after changing the file.
            if standby() {
                tracing::warn!(
                    "SIGHUP ignored: this replica is an [ha] standby and keeps the configuration it started with; restart it to apply a changed file (a rolling update does)"
                );
                continue;
            }
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
fn rotate_all_command() -> Command {
    Command::Rotate {
        target: crate::daemon::Target::All,
        request: Request::daemon(Trigger::Signal),
        wait: false,
        reply: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_or_ca_file_that_cannot_be_used_exits_64_and_the_rest_1() {
        let io = || std::io::Error::other("boom");
        let identity = SetupError::Identity {
            identity: "rotator".into(),
            detail: "certificate_credential \"c\" needs $CREDENTIALS_DIRECTORY".into(),
            source: None,
        };
        let ca = SetupError::Ca {
            path: "/etc/ca.pem".into(),
            detail: "no PEM certificate in the file".into(),
            source: None,
        };
        assert_eq!(ServiceError::from(identity).exit_code(), 64);
        assert_eq!(ServiceError::from(ca).exit_code(), 64);
        let key = crate::notifications::NotifySetupError {
            sink: "ops".into(),
            detail: "cannot read secret_file /etc/keyturn/webhook.key".into(),
        };
        assert_eq!(ServiceError::from(key).exit_code(), 64);
        for e in [
            ServiceError::from(DaemonError::Locked {
                path: "/var/lib/keyturn/lock".into(),
                holder: "42".into(),
            }),
            ServiceError::MetricsListen {
                addr: "127.0.0.1:9464".parse().unwrap(),
                source: io(),
            },
            ServiceError::AuditFolder {
                path: "/var/log/keyturn".into(),
                source: io(),
            },
        ] {
            assert_eq!(e.exit_code(), 1, "{e}");
        }
    }
}
