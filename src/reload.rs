//! Configuration reload (SIGHUP and the admin `reload` command): load and validate the file,
//! build the new accounts, hand them to the daemon. A configuration that fails is rejected
//! with every problem logged and audited, and the old one stays in force.

use crate::audit::{Actor, AuditEvent, AuditSink, EventKind, Outcome};
use crate::clock::Clock;
use crate::config::{self, Config};
use crate::daemon::Command;
use crate::limits::{Limiter, LimitsConfig};
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Reloads the configuration (SIGHUP and the admin `reload` command share it).
#[async_trait]
pub trait Reload: Send + Sync {
    /// Loads, validates and applies the configuration file; on `Err` the old one stays in
    /// force. `Ok` is a summary of what changed.
    async fn reload(&self, actor: Actor) -> Result<String, ReloadError>;
}

/// Why a reload was rejected; the old configuration stays in force. The `Display` text is
/// what the `reload` command answers and the `config.rejected` record holds.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file failed to load or validate (every problem, with its key).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The HTTP client, a credential or an account could not be built from it.
    #[error(transparent)]
    Setup(#[from] crate::azure::SetupError),
    /// The blocking task that reads the files panicked or was cancelled.
    #[error(
        "reading the configuration failed ({source}); this is a bug in keyturn, please report it"
    )]
    Internal {
        #[source]
        source: tokio::task::JoinError,
    },
    /// The daemon's command channel closed before it took the new configuration.
    #[error("the daemon is stopping")]
    Stopping,
}

/// Reloads one configuration file into a running daemon.
pub(crate) struct Reloader {
    path: PathBuf,
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
    commands: mpsc::Sender<Command>,
    /// The configuration in force, to tell which changes need a restart.
    current: Mutex<Config>,
    /// One reload at a time.
    busy: tokio::sync::Mutex<()>,
    /// The rate-limit buckets in force: kept across reloads while `[limits]` is unchanged, so
    /// that what the running accounts spent still counts (new buckets would start full).
    limiter: Mutex<Arc<Limiter>>,
    /// The readiness watch, handed each reloaded configuration's targets.
    watch: Option<crate::doctor::watch::Watch>,
}

/// The buckets for a new configuration: the current ones if `[limits]` did not change.
fn limiter_for(current: &Arc<Limiter>, limits: &LimitsConfig) -> Arc<Limiter> {
    if current.config() == limits {
        current.clone()
    } else {
        Arc::new(Limiter::new(limits.clone(), current.observer()).with_fence(current.fence()))
    }
}

impl Reloader {
    /// A reloader for `path`, whose configuration `current` is in force now, paced by
    /// `limiter`.
    pub fn new(
        path: PathBuf,
        current: Config,
        limiter: Arc<Limiter>,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
        commands: mpsc::Sender<Command>,
    ) -> Self {
        Reloader {
            path,
            audit,
            clock,
            commands,
            current: Mutex::new(Self::kept(current)),
            busy: tokio::sync::Mutex::new(()),
            limiter: Mutex::new(limiter),
            watch: None,
        }
    }

    /// Hands each reloaded configuration's accounts and identities to the readiness
    /// watch `watch`.
    pub fn with_watch(mut self, watch: crate::doctor::watch::Watch) -> Self {
        self.watch = Some(watch);
        self
    }

    async fn record(&self, kind: EventKind, outcome: Outcome, actor: Actor, detail: String) {
        let mut ev = AuditEvent::new(kind, self.clock.now());
        ev.actor = Some(actor);
        ev.outcome = Some(outcome);
        ev.detail = Some(detail);
        if let Err(e) = self.audit.record(&ev).await {
            tracing::error!(error = %e, "cannot audit the reload");
        }
    }

    /// What is kept of a configuration in force: the sections compared at the next reload,
    /// without the accounts (the daemon holds those; ten thousand of them are megabytes).
    fn kept(mut config: Config) -> Config {
        config.accounts = Vec::new();
        config
    }

    async fn apply(&self) -> Result<String, ReloadError> {
        // Reading the file, the CA and secret files and group names blocks: off the runtime.
        let path = self.path.clone();
        let in_force = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let watched = self.watch.is_some();
        let (loaded, accounts, limiter, targets) = tokio::task::spawn_blocking(move || {
            let loaded = config::load(&path)?;
            // The new client reports to the observer the wiring handed the limiter.
            let http = crate::azure::http_client(
                &loaded.config.tls,
                &loaded.config.network,
                in_force.observer(),
            )?;
            let limiter = limiter_for(&in_force, &loaded.config.limits);
            let credentials = crate::app::credentials(&loaded, &http)?;
            let accounts = crate::app::accounts_with(&loaded, &http, &limiter, &credentials)?;
            crate::app::report_credential_expiry(&loaded.config, &*in_force.observer());
            let targets =
                watched.then(|| crate::doctor::watch::Targets::build(&loaded, &http, &credentials));
            Ok::<_, ReloadError>((loaded, accounts, limiter, targets))
        })
        .await
        .map_err(|source| ReloadError::Internal { source })??;
        let settings = crate::app::settings(&loaded);
        let tuning = crate::app::tuning(&loaded);
        // The watch gets the new accounts' identities before the daemon hands it the
        // accounts themselves.
        if let (Some(w), Some(t)) = (&self.watch, targets) {
            w.set(t);
        }
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Reload {
                accounts,
                settings,
                tuning,
                reply: Some(tx),
            })
            .await
            .map_err(|_| ReloadError::Stopping)?;
        let mut summary = rx.await.map_err(|_| ReloadError::Stopping)?;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let restart = needs_restart(&current, &loaded.config);
        if !restart.is_empty() {
            summary.push_str(&format!(
                "; changes to {} need a restart: they take effect when keyturn next starts",
                restart.join(", ")
            ));
        }
        *current = Self::kept(loaded.config);
        *self.limiter.lock().unwrap_or_else(|e| e.into_inner()) = limiter;
        Ok(summary)
    }
}

/// The keys that differ between `old` and `new` and that a reload cannot apply (they are
/// used only at start-up); every other setting takes effect at the reload. Each field is
/// named here, so that a new setting forces a decision.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let Config {
        daemon,
        admin,
        metrics,
        notify,
        ha,
        // Rebuilt at each reload: new HTTP client, credentials, stores and accounts (the
        // included files are read again at each reload, so their list is too).
        include: _,
        tls: _,
        network: _,
        identities: _,
        defaults: _,
        accounts: _,
        // The reloader keeps or replaces the buckets.
        limits: _,
    } = new;
    let crate::config::DaemonConfig {
        state_dir,
        audit_log,
        audit_stdout,
        audit_retention,
        audit_blob,
        unclean_start_delay,
        // The daemon's settings and the engine's tuning, replaced by the reload.
        drift_check_interval: _,
        readiness_check_interval: _,
        max_concurrent_rotations: _,
        max_concurrent_per_tenant: _,
        shutdown_grace: _,
        retry_base_delay: _,
        retry_max_delay: _,
        apply_attempts: _,
    } = daemon;
    let mut out = Vec::new();
    for (changed, key) in [
        (old.daemon.state_dir != *state_dir, "daemon.state_dir"),
        (old.daemon.audit_log != *audit_log, "daemon.audit_log"),
        (
            old.daemon.audit_stdout != *audit_stdout,
            "daemon.audit_stdout",
        ),
        (
            old.daemon.audit_retention != *audit_retention,
            "daemon.audit_retention",
        ),
        // The copier and its blob client are built at start-up.
        (old.daemon.audit_blob != *audit_blob, "daemon.audit_blob"),
        (
            old.daemon.unclean_start_delay != *unclean_start_delay,
            "daemon.unclean_start_delay",
        ),
        (old.admin != *admin, "[admin]"),
        (old.metrics != *metrics, "[metrics]"),
        (old.notify != *notify, "[[notify]]"),
        // The elector and its blob client are built at start-up.
        (old.ha != *ha, "[ha]"),
    ] {
        if changed {
            out.push(key);
        }
    }
    out
}

#[async_trait]
impl Reload for Reloader {
    async fn reload(&self, actor: Actor) -> Result<String, ReloadError> {
        let _one = self.busy.lock().await;
        crate::notify::reloading();
        let result = self.apply().await;
        match &result {
            Ok(summary) => {
                tracing::info!(path = %self.path.display(), "configuration reloaded: {summary}");
                self.record(
                    EventKind::ConfigLoaded,
                    Outcome::Success,
                    actor,
                    summary.clone(),
                )
                .await;
            }
            Err(problems) => {
                tracing::error!(path = %self.path.display(), "configuration rejected; the previous one stays in force: {problems}");
                self.record(
                    EventKind::ConfigRejected,
                    Outcome::Failure,
                    actor,
                    problems.to_string(),
                )
                .await;
            }
        }
        crate::notify::ready("running");
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::MemorySink;
    use crate::clock::ManualClock;

    const CONFIG: &str = r#"
[limits]
headroom = 0.02

[identities.rotator]
kind = "client_secret"
tenant_id = "contoso.onmicrosoft.com"
client_id = "6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a"
client_secret = "s3cret"
allow_inline_secret = true

[[accounts]]
name = "a"
user = "svc-a@contoso.onmicrosoft.com"
identity = "rotator"
vault = "https://kv.vault.azure.net/"
secret = "svc-a"
"#;

    #[tokio::test]
    async fn a_reload_keeps_the_buckets_unless_the_limits_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyturn.toml");
        std::fs::write(&path, CONFIG).unwrap();
        let loaded = config::load(&path).unwrap();
        let in_force = Arc::new(Limiter::new(
            loaded.config.limits.clone(),
            crate::observe::unobserved(),
        ));
        let (tx, mut rx) = mpsc::channel(1);
        // The daemon's side: accept whatever accounts a reload brings.
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                if let Command::Reload {
                    reply: Some(reply), ..
                } = cmd
                {
                    let _ = reply.send("accepted".to_owned());
                }
            }
        });
        let reloader = Reloader::new(
            path.clone(),
            loaded.config.clone(),
            in_force.clone(),
            Arc::new(MemorySink::default()),
            Arc::new(ManualClock::new(time::OffsetDateTime::UNIX_EPOCH)),
            tx,
        );
        assert_eq!(in_force.vault_buckets(), 0);

        // Same [limits]: the reloaded account is paced by the buckets in force.
        reloader.apply().await.unwrap();
        assert_eq!(in_force.vault_buckets(), 1);
        assert!(Arc::ptr_eq(&reloader.limiter.lock().unwrap(), &in_force));

        // Other [limits]: new buckets with the new budgets.
        std::fs::write(&path, CONFIG.replace("headroom = 0.02", "headroom = 0.2")).unwrap();
        reloader.apply().await.unwrap();
        let now = reloader.limiter.lock().unwrap().clone();
        assert!(!Arc::ptr_eq(&now, &in_force));
        assert_eq!((now.config().headroom, now.vault_buckets()), (0.2, 1));
    }

    #[tokio::test]
    async fn a_reload_with_a_huge_duration_is_rejected_and_audited() {
        // `expiry_grace` near u64::MAX seconds once panicked validation: the reload answered
        // nothing and no `config.rejected` was written.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyturn.toml");
        std::fs::write(&path, CONFIG).unwrap();
        let loaded = config::load(&path).unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let audit = MemorySink::default();
        let reloader = Reloader::new(
            path.clone(),
            loaded.config.clone(),
            Arc::new(Limiter::new(
                loaded.config.limits.clone(),
                crate::observe::unobserved(),
            )),
            Arc::new(audit.clone()),
            Arc::new(ManualClock::new(time::OffsetDateTime::UNIX_EPOCH)),
            tx,
        );
        std::fs::write(
            &path,
            format!("[defaults]\nexpiry_grace = \"18446744073709551615s\"\n{CONFIG}"),
        )
        .unwrap();
        let keys = |e: ReloadError| match e {
            ReloadError::Config(c) => c.problems().into_iter().map(|p| p.key).collect::<Vec<_>>(),
            other => panic!("not a configuration problem: {other}"),
        };
        let answer = reloader.reload(Actor::Daemon).await.unwrap_err();
        assert!(
            answer.to_string().contains("defaults.expiry_grace"),
            "{answer}"
        );
        assert_eq!(keys(answer), ["defaults.expiry_grace"]);
        let rejected = audit
            .events()
            .into_iter()
            .find(|e| e.event == EventKind::ConfigRejected)
            .expect("a config.rejected record");
        assert!(rejected
            .detail
            .is_some_and(|d| d.contains("defaults.expiry_grace")));

        // So is an account whose secret is another's staging secret.
        let b = CONFIG
            .split_once("[[accounts]]")
            .map(|(_, a)| {
                a.replace("name = \"a\"", "name = \"b\"")
                    .replace("\"svc-a\"", "\"SVC-A-pending\"")
            })
            .unwrap();
        std::fs::write(&path, format!("{CONFIG}\n[[accounts]]{b}")).unwrap();
        let answer = reloader.reload(Actor::Daemon).await.unwrap_err();
        let text = answer.to_string();
        assert!(
            text.contains("accounts[1].secret") && text.contains("accounts[0].secret"),
            "{text}"
        );
        assert!(keys(answer).contains(&"accounts[1].secret".to_owned()));
    }

    #[test]
    fn every_setting_that_a_reload_cannot_apply_is_named() {
        let old = Config::default();
        let mut new = Config::default();
        assert!(needs_restart(&old, &new).is_empty());
        new.daemon.apply_attempts = 1;
        new.daemon.retry_max_delay = std::time::Duration::from_secs(60);
        new.network.timeout = std::time::Duration::from_secs(5);
        assert!(
            needs_restart(&old, &new).is_empty(),
            "applied by the reload"
        );
        new.daemon.unclean_start_delay = std::time::Duration::ZERO;
        new.daemon.audit_stdout = crate::config::AuditStdout::Json;
        new.admin.require_reason = true;
        new.metrics.listen = Some("127.0.0.1:9464".parse().unwrap());
        assert_eq!(
            needs_restart(&old, &new),
            [
                "daemon.audit_stdout",
                "daemon.unclean_start_delay",
                "[admin]",
                "[metrics]"
            ]
        );
    }

    #[test]
    fn a_reload_reads_its_files_off_the_runtime_threads() {
        // A reload of thousands of accounts reads, parses and validates for a while. On a
        // runtime with one thread, a ticker task only ticks during the reload if that work
        // runs off the runtime's thread. (A FIFO that blocks the read would be the sharper
        // probe, but credential files must be regular files, so no file can block.)
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyturn.toml");
        std::fs::write(&path, CONFIG).unwrap();
        let loaded = config::load(&path).unwrap();
        let mut big = CONFIG.to_owned();
        for i in 0..5_000 {
            big.push_str(&format!(
                "\n[[accounts]]\nname = \"n{i}\"\nuser = \"svc-{i}@contoso.onmicrosoft.com\"\nidentity = \"rotator\"\nvault = \"https://kv.vault.azure.net/\"\nsecret = \"svc-{i}\"\n"
            ));
        }
        std::fs::write(&path, big).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (result, ticks) = rt.block_on(async move {
            let (tx, mut rx) = mpsc::channel(1);
            tokio::spawn(async move {
                while let Some(cmd) = rx.recv().await {
                    if let Command::Reload {
                        reply: Some(reply), ..
                    } = cmd
                    {
                        let _ = reply.send("accepted".to_owned());
                    }
                }
            });
            let reloader = Reloader::new(
                path,
                loaded.config.clone(),
                Arc::new(Limiter::new(
                    loaded.config.limits.clone(),
                    crate::observe::unobserved(),
                )),
                Arc::new(MemorySink::default()),
                Arc::new(ManualClock::new(time::OffsetDateTime::UNIX_EPOCH)),
                tx,
            );
            let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let ticker = {
                let ticks = ticks.clone();
                tokio::spawn(async move {
                    loop {
                        ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                })
            };
            // Let the ticker start, then count only what it does during the reload.
            tokio::task::yield_now().await;
            let before = ticks.load(std::sync::atomic::Ordering::Relaxed);
            let result = reloader.apply().await;
            let during = ticks.load(std::sync::atomic::Ordering::Relaxed) - before;
            ticker.abort();
            (result, during)
        });
        assert!(result.is_ok(), "{result:?}");
        assert!(
            ticks >= 5,
            "the runtime's only thread ticked {ticks} time(s) during the reload: the reload held it"
        );
    }
}
