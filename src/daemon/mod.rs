//! The long-running service: recovery at start-up, due times computed from Key Vault, a
//! single timer over a heap of due times (O(log n) per event, no task per idle account),
//! bounded concurrency, global and per tenant (jobs wait in per-tenant queues served
//! round-robin, O(1) per event; a task exists only while its job runs), backoff with jitter
//! for failing accounts, drift checks, commands from signals and the admin socket (rotate,
//! adopt, pause, resume, reconcile, reload), accounts left alone (`enabled = false`) or
//! awaiting adoption (no secret, `on_missing_secret = "wait"`), and a graceful shutdown.
//!
//! This file holds [`Daemon`] and its run loop; `scheduling` when each account runs next
//! (due times, retries, the wake-up, drift); `due` the due-time heap and `queues` the
//! per-tenant queues (plain data structures), `jobs` starting jobs as tasks and taking in
//! their results, `commands` the [`Command`]s, `board` the status read model
//! ([`StatusBoard`]), `lock` the [`InstanceLock`], `pauses` the [`PauseFile`] that keeps
//! pauses across restarts and the daemon's use of it, `readiness` the readiness watch (a
//! task that runs a [`ReadinessProbe`] per account every `readiness_interval`).

mod board;
mod commands;
mod due;
mod jobs;
mod listing;
mod lock;
mod pauses;
mod queues;
mod readiness;
mod scheduling;

pub(crate) use board::StatusBoard;
pub use board::{
    AccountReadiness, AccountStatus, CheckReadiness, DaemonStatus, HaStatus, Readiness,
};
pub(crate) use commands::{AccountAck, AccountResult};
pub use commands::{AccountError, AccountFailure, Command, RotationSummary, Target};
pub(crate) use jobs::{first_due_at, retired_deleted, FirstDue};
pub use lock::InstanceLock;
pub use pauses::{PauseFile, PauseFileError, PAUSE_FILE};
pub use readiness::{Probed, ReadinessProbe};

use jobs::{Done, Queued};

use crate::audit::{Actor, AuditEvent, AuditSink, EventKind, Outcome, Trigger};
use crate::clock::Clock;
use crate::config::OnMissingSecret;
use crate::protocol::{Account, Engine};
use crate::schedule::Schedule;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// An account with its schedule.
#[derive(Clone)]
pub struct Managed {
    /// What the protocol needs.
    pub account: Account,
    /// When it is due.
    pub schedule: Schedule,
    /// The daemon manages it at all (`enabled`); a disabled account gets no Azure calls.
    pub enabled: bool,
    /// What the daemon does when its secret does not exist (`on_missing_secret`).
    pub on_missing_secret: OnMissingSecret,
}

/// How the daemon behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// At most this many rotations at once.
    pub max_concurrent: usize,
    /// At most this many rotations at once in one tenant.
    pub max_per_tenant: usize,
    /// First retry delay for a failing account.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Drift check period; zero disables.
    pub drift_interval: Duration,
    /// Readiness watch period (`daemon.readiness_check_interval`); zero disables. The watch
    /// runs only with a probe ([`Daemon::with_readiness_probe`]).
    pub readiness_interval: Duration,
    /// How long shutdown waits for in-flight rotations.
    pub shutdown_grace: Duration,
    /// Wait this long before start-up recovery (after an unclean stop, so that requests a
    /// killed process left in flight have landed or died; see docs/protocol.md).
    pub startup_delay: Duration,
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("another keyturn holds the lock {path} (pid {holder}); stop it first, or use another daemon.state_dir")]
    Locked { path: PathBuf, holder: String },
    #[error("cannot create or lock {path}: {source}; check that daemon.state_dir exists and is writable")]
    LockFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

struct Slot {
    /// Shared with the readiness watch's plan (one copy of the account, not two).
    managed: Arc<Managed>,
    next_due: Option<OffsetDateTime>,
    /// The trigger to use when `next_due` fires.
    next_trigger: Trigger,
    busy: bool,
    paused: bool,
    /// Its secret does not exist and `on_missing_secret = "wait"`: nothing is scheduled
    /// until `adopt` (or the secret appears). Reported once, when it is first found.
    awaiting: bool,
    /// `keyturn retire` retired it: nothing is scheduled, rotations are refused.
    retired: bool,
    /// This process recorded the retirement (`account.retired`) already.
    retired_recorded: bool,
    failures: u32,
    /// A reload changed where or when the account is due while a job of it ran: reconcile
    /// it (due time from the new secret and schedule) once that job ends.
    reconcile_when_idle: bool,
    /// Jobs of the account that ended: a vault listing taken before the last one ended
    /// is older than what that job saw, and is not used for the account.
    epoch: u64,
}

impl Slot {
    fn new(managed: Managed) -> Self {
        Slot {
            managed: Arc::new(managed),
            next_due: None,
            next_trigger: Trigger::Schedule,
            busy: false,
            paused: false,
            awaiting: false,
            retired: false,
            retired_recorded: false,
            failures: 0,
            reconcile_when_idle: false,
            epoch: 0,
        }
    }

    fn name(&self) -> &str {
        &self.managed.account.name
    }
}

/// The daemon.
pub struct Daemon {
    engine: Arc<Engine>,
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    slots: Vec<Slot>,
    index: HashMap<String, usize>,
    /// When each account (by index into `slots`) is next due.
    heap: due::DueHeap,
    tasks: JoinSet<Done>,
    /// Account and tenant of each running task, to clean up after one that panicked.
    running: HashMap<tokio::task::Id, (String, Arc<str>)>,
    /// Jobs waiting for a slot, per tenant, served round-robin within the tenant limit.
    queues: queues::TenantQueues<Queued>,
    board: StatusBoard,
    /// When set, the main loop marks the board this often (watchdog, health).
    heartbeat: Option<Duration>,
    /// Where pauses are kept across restarts; `None`: in memory only (tests).
    pauses: Option<PauseFile>,
    /// The readiness watch's checks; `None`: no watch.
    probe: Option<Arc<dyn ReadinessProbe>>,
    /// The running watch: where its plan (interval, accounts) is sent at each reload, and
    /// its task (aborted at shutdown).
    watch: Option<(
        tokio::sync::watch::Sender<readiness::Plan>,
        tokio::task::JoinHandle<()>,
    )>,
    /// The start-up delay is an `[ha]` takeover delay (for its log line).
    takeover: bool,
    /// The drift check's vault listings while they run (at most one round at a time).
    listings: JoinSet<listing::Outcome>,
    /// The drift checks' Graph reads of accounts scheduled from a listing while they run.
    drift_reads: JoinSet<listing::DriftReads>,
    /// The vault listings of `reconcile` commands while they run, each with what its
    /// command's answer still needs.
    command_listings: JoinSet<(listing::Outcome, commands::ListedReconcile)>,
}

impl Daemon {
    /// A daemon for `accounts`.
    pub fn new(
        engine: Arc<Engine>,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
        settings: Settings,
        accounts: Vec<Managed>,
    ) -> Self {
        let board = Arc::new(Mutex::new(DaemonStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: Some(clock.now()),
            ..Default::default()
        }));
        let queues = queues::TenantQueues::new(settings.max_per_tenant);
        let mut d = Daemon {
            engine,
            audit,
            clock,
            settings,
            slots: Vec::new(),
            index: HashMap::new(),
            heap: due::DueHeap::default(),
            tasks: JoinSet::new(),
            running: HashMap::new(),
            queues,
            board,
            heartbeat: None,
            pauses: None,
            probe: None,
            watch: None,
            takeover: false,
            listings: JoinSet::new(),
            drift_reads: JoinSet::new(),
            command_listings: JoinSet::new(),
        };
        d.set_slots(accounts.into_iter().map(Slot::new).collect());
        d
    }

    /// Makes the main loop mark the board's heartbeat every `period`.
    pub(crate) fn with_heartbeat(mut self, period: Duration) -> Self {
        self.heartbeat = Some(period);
        self
    }

    /// Runs `probe`'s checks every `settings.readiness_interval` once the daemon is ready
    /// (the readiness watch, `readiness.rs`).
    pub fn with_readiness_probe(mut self, probe: Arc<dyn ReadinessProbe>) -> Self {
        self.probe = Some(probe);
        self
    }

    /// What the readiness watch checks now.
    fn watch_plan(&self) -> readiness::Plan {
        readiness::Plan {
            interval: self.settings.readiness_interval,
            accounts: self
                .slots
                .iter()
                .filter(|s| s.managed.enabled)
                .map(|s| Arc::clone(&s.managed))
                .collect(),
        }
    }

    /// Starts the readiness watch (once ready), or hands it the reloaded plan.
    fn start_or_update_watch(&mut self) {
        let Some(probe) = self.probe.clone() else {
            return;
        };
        let plan = self.watch_plan();
        match &self.watch {
            Some((plans, _)) => {
                plans.send_replace(plan);
            }
            None => {
                let (tx, rx) = tokio::sync::watch::channel(plan);
                let w = readiness::Watch::new(
                    probe,
                    self.board.clone(),
                    self.audit.clone(),
                    self.clock.clone(),
                    rx,
                );
                self.watch = Some((tx, tokio::spawn(w.run())));
            }
        }
    }

    /// Waits at least `delay` before start-up recovery: a new `[ha]` leader's takeover
    /// delay, so that the requests the old leader left in flight have landed or died
    /// (`docs/ha.md`). The longer of this and the unclean-start delay is waited.
    pub(crate) fn with_takeover_delay(mut self, delay: Duration) -> Self {
        if delay > self.settings.startup_delay {
            self.settings.startup_delay = delay;
            self.takeover = true;
        }
        self
    }

    /// The shared status board.
    pub fn board(&self) -> StatusBoard {
        self.board.clone()
    }

    fn set_slots(&mut self, mut slots: Vec<Slot>) {
        // Built in place from the `Vec<Managed>` it came from, the vector keeps that one's
        // larger capacity in bytes for the daemon's life (3.7 MB at 10,000 accounts).
        slots.shrink_to_fit();
        self.index = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name().to_owned(), i))
            .collect();
        self.slots = slots;
        self.heap.clear();
        for idx in 0..self.slots.len() {
            let s = &self.slots[idx];
            if !s.managed.enabled || s.paused {
                continue;
            }
            if let Some(due) = s.next_due {
                let trigger = s.next_trigger;
                self.set_due(idx, due, trigger);
            }
        }
        let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
        let old: HashMap<String, AccountStatus> =
            b.accounts.drain(..).map(|a| (a.name.clone(), a)).collect();
        b.accounts = self
            .slots
            .iter()
            .map(|s| {
                let a = &s.managed.account;
                let mut st = old.get(&a.name).cloned().unwrap_or_default();
                st.name = a.name.clone();
                st.user = a.user.clone();
                st.vault = a.store.vault().to_owned();
                st.secret = a.secret.clone();
                st.schedule = s.managed.schedule.pattern().to_owned();
                st.next_due = s.next_due;
                st.busy = s.busy;
                st.paused = s.paused;
                st.enabled = s.managed.enabled;
                st.awaiting_adoption = s.awaiting;
                st.retired = s.retired;
                if !s.managed.enabled || self.settings.readiness_interval.is_zero() {
                    // Not watched (any more): no stale readiness in status or metrics.
                    st.readiness = None;
                }
                st.state = st.state_name();
                st
            })
            .collect();
    }

    fn board_mut(&self, idx: usize, f: impl FnOnce(&mut AccountStatus)) {
        let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = b.accounts.get_mut(idx) {
            f(s);
            s.state = s.state_name();
        }
    }

    async fn audit_daemon(&self, kind: EventKind, detail: String) {
        let mut ev = AuditEvent::new(kind, self.clock.now());
        ev.actor = Some(Actor::Daemon);
        ev.outcome = Some(Outcome::Success);
        ev.detail = Some(detail);
        if let Err(e) = self.audit.record(&ev).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Runs until `shutdown` completes. `ready` is sent once recovery and scheduling are done.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: impl Future<Output = ()>,
        ready: Option<oneshot::Sender<()>>,
    ) -> Result<(), DaemonError> {
        tokio::pin!(shutdown);
        self.audit_daemon(
            EventKind::DaemonStarted,
            format!(
                "keyturn {} managing {} account(s)",
                env!("CARGO_PKG_VERSION"),
                self.slots.len()
            ),
        )
        .await;
        let disabled = self.slots.iter().filter(|s| !s.managed.enabled).count();
        if disabled > 0 {
            tracing::info!(
                disabled,
                "accounts with enabled = false are left alone: no Azure calls, no rotations"
            );
        }

        if !self.settings.startup_delay.is_zero() {
            if self.takeover {
                tracing::warn!(
                    delay = ?self.settings.startup_delay,
                    "taking over from another replica whose lease ran out; waiting for its in-flight requests to settle before recovery (docs/ha.md)"
                );
            } else {
                tracing::warn!(
                    delay = ?self.settings.startup_delay,
                    "the previous keyturn stopped uncleanly; waiting for its in-flight requests to settle before recovery"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.startup_delay) => {}
                _ = &mut shutdown => return Ok(()),
            }
        }
        // Start-up: recover every enabled account and take its due time from Key Vault: from
        // one listing per vault (`listing`), reading only what is pending.
        let enabled: Vec<usize> = (0..self.slots.len())
            .filter(|&idx| self.slots[idx].managed.enabled)
            .collect();
        let lists = self.vault_lists(&enabled);
        tokio::select! {
            outcome = listing::run(lists) => self.reconcile_listed(outcome, Trigger::Recovery, false),
            _ = &mut shutdown => return Ok(()),
        }
        let mut stopped = false;
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(done) = self.tasks.join_next_with_id() => self.joined(done),
                _ = &mut shutdown => { stopped = true; break; }
            }
        }
        if stopped {
            self.stop().await;
            return Ok(());
        }
        self.board.lock().unwrap_or_else(|e| e.into_inner()).ready = true;
        if let Some(ready) = ready {
            let _ = ready.send(());
        }
        tracing::info!(accounts = self.slots.len(), "keyturn is ready");
        crate::idle::release();
        self.start_or_update_watch();

        let mut drift = self.drift_timer();
        let mut beat = self.heartbeat.map(tokio::time::interval);
        loop {
            let wake = self.next_wake();
            tokio::select! {
                _ = &mut shutdown => break,
                _ = async { beat.as_mut().expect("guarded by the if").tick().await }, if beat.is_some() => {
                    self.board.lock().unwrap_or_else(|e| e.into_inner()).heartbeat = Some(std::time::Instant::now());
                }
                Some(cmd) = commands.recv() => {
                    let reloaded = matches!(cmd, Command::Reload { .. });
                    self.command(cmd);
                    if reloaded {
                        drift = self.drift_timer();
                        self.start_or_update_watch();
                    }
                }
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.joined(done),
                _ = tokio::time::sleep_until(wake) => self.fire_due(),
                _ = async { drift.as_mut().expect("guarded by the if").tick().await }, if drift.is_some() => {
                    self.drift_check();
                }
                Some(listed) = self.listings.join_next(), if !self.listings.is_empty() => match listed {
                    Ok(outcome) => self.reconcile_listed(outcome, Trigger::Drift, true),
                    Err(e) => tracing::error!(error = %e, "a drift check's vault listing failed; the next drift check tries again"),
                },
                Some(read) = self.drift_reads.join_next(), if !self.drift_reads.is_empty() => match read {
                    Ok(read) => self.drift_read(read),
                    Err(e) => tracing::error!(error = %e, "a drift check's Graph reads failed; the next drift check tries again"),
                },
                Some(listed) = self.command_listings.join_next(), if !self.command_listings.is_empty() => match listed {
                    Ok((outcome, pending)) => self.reconcile_from_listing(outcome, pending),
                    // A panic in a listing task is a bug; the command's client sees its
                    // answer dropped.
                    Err(e) => tracing::error!(error = %e, "a reconcile command's vault listing failed"),
                },
            }
        }
        self.stop().await;
        Ok(())
    }

    fn joined(&mut self, done: Result<(tokio::task::Id, Done), tokio::task::JoinError>) {
        match done {
            Ok((id, done)) => {
                self.running.remove(&id);
                let tenant = done.tenant.clone();
                self.finished(done);
                self.release(&tenant);
            }
            Err(e) => {
                if let Some((name, tenant)) = self.running.remove(&e.id()) {
                    self.crashed(&name, &e);
                    self.release(&tenant);
                } else {
                    tracing::error!(error = %e, "a task of a removed account failed");
                }
            }
        }
        self.dispatch();
        if self.tasks.is_empty() && self.board_ready() {
            // The burst is over (nothing runs, so nothing is queued either).
            crate::idle::release();
        }
    }

    fn board_ready(&self) -> bool {
        self.board.lock().unwrap_or_else(|e| e.into_inner()).ready
    }

    /// The drift check: lists the vaults of the accounts that are idle, then reconciles
    /// each from its listing (`reconcile_listed`, when the listing is in).
    fn drift_check(&mut self) {
        if !self.listings.is_empty() || !self.drift_reads.is_empty() {
            tracing::warn!(
                "the previous drift check is still listing its vaults or reading Graph; this one is skipped"
            );
            return;
        }
        let idle: Vec<usize> = (0..self.slots.len())
            .filter(|&idx| {
                let s = &self.slots[idx];
                !s.busy && !s.paused && s.managed.enabled
            })
            .collect();
        let lists = self.vault_lists(&idle);
        self.listings.spawn(listing::run(lists));
    }

    async fn stop(&mut self) {
        if let Some((_, task)) = self.watch.take() {
            // Read-only: nothing to finish.
            task.abort();
        }
        self.listings.abort_all();
        self.drift_reads.abort_all();
        self.command_listings.abort_all();
        self.board
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stopping = true;
        let in_flight = self.tasks.len();
        self.audit_daemon(
            EventKind::DaemonStopping,
            format!(
                "stopping; waiting up to {}s for {in_flight} rotation(s)",
                self.settings.shutdown_grace.as_secs()
            ),
        )
        .await;
        let grace = tokio::time::sleep(self.settings.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = self.tasks.join_next_with_id() => match next {
                    Some(done) => self.joined(done),
                    None => break,
                },
                _ = &mut grace => {
                    tracing::warn!(left = self.tasks.len(), "shutdown grace period ran out; rotations still running are cut off and recovery completes them at the next start");
                    self.board.lock().unwrap_or_else(|e| e.into_inner()).cut_off = true;
                    self.tasks.abort_all();
                    break;
                }
            }
        }
    }
}
