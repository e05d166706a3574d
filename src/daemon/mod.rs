//! The long-running service: recovery at start-up, due times computed from Key Vault, a
//! single timer over a heap of due times (O(log n) per event, no task per idle account),
//! bounded concurrency, global and per tenant (jobs wait in per-tenant queues served
//! round-robin, O(1) per event; a task exists only while its job runs), backoff with jitter for failing accounts, drift checks, commands
//! from signals and the admin socket (rotate, pause, resume, reconcile, reload), and a
//! graceful shutdown.

mod due;
mod queues;

use crate::audit::{Actor, AuditEvent, AuditSink, EventKind, Outcome, Trigger};
use crate::clock::Clock;
use crate::protocol::{self, Account, Engine, Request, Rotated, RotationError, Tuning};
use crate::schedule::Schedule;
use crate::store::SecretRecord;
use rand::Rng;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use uuid::Uuid;

/// The longest the main loop sleeps without looking at the heap of due times.
const MAX_WAKE: Duration = Duration::from_secs(86400);

/// An account with its schedule.
#[derive(Clone)]
pub struct Managed {
    /// What the protocol needs.
    pub account: Account,
    /// When it is due.
    pub schedule: Schedule,
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
    /// How long shutdown waits for in-flight rotations.
    pub shutdown_grace: Duration,
    /// Wait this long before start-up recovery (after an unclean stop, so that requests a
    /// killed process left in flight have landed or died; see docs/protocol.md).
    pub startup_delay: Duration,
}

/// What a rotation request produced for one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationSummary {
    /// The rotation's id (for `--no-wait`, the id it was started with).
    pub rotation_id: Uuid,
    /// The new `<secret>` version, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// It completed a rotation an earlier attempt left pending.
    pub resumed: bool,
    /// Warnings (verify blocked by policy, …).
    pub warnings: Vec<String>,
    /// False when the caller did not wait for the end.
    pub completed: bool,
}

impl From<&Rotated> for RotationSummary {
    fn from(r: &Rotated) -> Self {
        RotationSummary {
            rotation_id: r.rotation_id,
            version: Some(r.version.clone()),
            resumed: r.resumed,
            warnings: r.warnings.clone(),
            completed: true,
        }
    }
}

/// The result of one account's rotation, as sent back to a requester.
pub type AccountResult = (String, Result<RotationSummary, String>);

/// The result of a pause/resume/reconcile for one account.
pub type AccountAck = (String, Result<String, String>);

/// A request from outside the schedule (signals, the admin socket).
pub enum Command {
    /// Rotate one account (`Some(name)`) or all now. With `wait = false` the reply comes
    /// when the rotations are started.
    Rotate {
        account: Option<String>,
        request: Request,
        wait: bool,
        reply: Option<oneshot::Sender<Vec<AccountResult>>>,
    },
    /// Stop (`paused = true`) or restart scheduled rotations of one account or all.
    Pause {
        account: Option<String>,
        paused: bool,
        reply: Option<oneshot::Sender<Vec<AccountAck>>>,
    },
    /// Run recovery and the drift check now.
    Reconcile {
        account: Option<String>,
        request: Request,
        reply: Option<oneshot::Sender<Vec<AccountAck>>>,
    },
    /// Replace the accounts, settings and the engine's tuning with a new, already validated
    /// configuration.
    Reload {
        accounts: Vec<Managed>,
        settings: Settings,
        tuning: Tuning,
        reply: Option<oneshot::Sender<String>>,
    },
}

/// What the daemon knows about an account (status answers, metrics, tests).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccountStatus {
    /// The account's name.
    pub name: String,
    /// The Entra user.
    pub user: String,
    /// The vault.
    pub vault: String,
    /// The secret.
    pub secret: String,
    /// The cron expression.
    pub schedule: String,
    /// When it is next due.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_due: Option<OffsetDateTime>,
    /// A rotation or reconcile runs now.
    pub busy: bool,
    /// Scheduled rotations are paused.
    pub paused: bool,
    /// Consecutive failures.
    pub failures: u32,
    /// The last rotation's outcome: `success`, `warning`, `failed: KIND`.
    pub last_outcome: Option<String>,
    /// When the last rotation ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_end: Option<OffsetDateTime>,
    /// When the last successful rotation ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
    /// The current `<secret>` version, when known.
    pub version: Option<String>,
    /// When the password in force was set (its `keyturn-rotated-at`), when known.
    #[serde(with = "time::serde::rfc3339::option")]
    pub rotated_at: Option<OffsetDateTime>,
    /// A rotation is left pending in the staging secret.
    pub pending: bool,
    /// Rotations by outcome since start (`success`, `warning`, `failed`).
    pub counts: std::collections::BTreeMap<String, u64>,
}

/// The daemon as a whole.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DaemonStatus {
    /// keyturn's version.
    pub version: String,
    /// When the daemon started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// Start-up recovery is done and scheduling runs.
    pub ready: bool,
    /// Stopping.
    pub stopping: bool,
    /// Every account.
    pub accounts: Vec<AccountStatus>,
    /// Last time the main loop ran (for the systemd watchdog and health checks).
    #[serde(skip)]
    pub heartbeat: Option<std::time::Instant>,
    /// The audit log's state when the status was taken (filled by the admin socket and
    /// the metrics listener from the audit sink).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<crate::audit::AuditHealth>,
}

/// Shared view of the daemon's state.
pub type StatusBoard = Arc<Mutex<DaemonStatus>>;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("another keyturn holds the lock {path} (pid {holder}); stop it first, or use another daemon.state_dir")]
    Locked { path: PathBuf, holder: String },
    #[error("cannot create or lock {path}: {detail}; check that daemon.state_dir exists and is writable")]
    LockFile { path: PathBuf, detail: String },
    #[error("cannot write the audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

/// The single-instance lock: an exclusive `flock` on `<state_dir>/keyturn.lock`, held
/// for the life of the value. The file holds the holder's pid while it runs; it is emptied
/// when the value is released or dropped, on every exit path (a failed start included),
/// so a pid left in it means the holder did not get there: it was killed (SIGKILL, OOM),
/// aborted, or panicked, and the next holder is [`unclean`](Self::unclean).
pub struct InstanceLock {
    /// `None` only in tests simulating a crash.
    file: Option<std::fs::File>,
    /// The previous holder did not release the lock: it was killed or crashed.
    pub unclean: bool,
}

impl InstanceLock {
    /// Takes the lock or says who holds it. The lock file is opened without following a
    /// symbolic link and must be a regular file owned by this user or the state
    /// directory's owner ([`crate::audit::file::open_owned`]).
    pub fn acquire(state_dir: &Path) -> Result<Self, DaemonError> {
        use std::io::{Read, Seek, Write};
        let path = state_dir.join("keyturn.lock");
        let io = |e: std::io::Error| DaemonError::LockFile {
            path: path.clone(),
            detail: e.to_string(),
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let mut file = crate::audit::file::open_owned(
            &path,
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = (&file).take(64).read_to_string(&mut holder);
                return Err(DaemonError::Locked {
                    path,
                    holder: holder.trim().to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut previous = String::new();
        let _ = (&file).take(64).read_to_string(&mut previous);
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(InstanceLock {
            file: Some(file),
            unclean: !previous.trim().is_empty(),
        })
    }

    /// A clean stop: the next start needs no settling delay. Call it once this process has
    /// waited out an unclean predecessor (`unclean_start_delay`) or did not inherit one;
    /// dropping the lock without calling it keeps an inherited unclean mark (a start that
    /// failed before the delay was over did not let the crashed process's requests settle).
    pub fn release(mut self) {
        self.unclean = false;
    }

    /// Closes the file like a killed process: the `flock` goes, the pid stays.
    #[cfg(test)]
    fn simulate_crash(mut self) {
        self.file = None;
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // A panic is a crash: its rotations stopped anywhere, so the next start must wait.
        // An unclean mark this process inherited and has not waited out stays too.
        if std::thread::panicking() || self.unclean {
            return;
        }
        if let Some(file) = &self.file {
            let _ = file.set_len(0);
            let _ = file.sync_all();
        }
    }
}

/// What a task did.
enum TaskOut {
    /// A rotation completed (fresh, resumed, or for drift).
    Rotated(Rotated),
    /// Nothing to do; when known, the account's due time read from Key Vault, and the
    /// current version and its rotation time.
    Idle(
        Option<(OffsetDateTime, Trigger)>,
        Option<(String, OffsetDateTime)>,
    ),
    /// It failed; retried with backoff.
    Failed(RotationError),
}

/// What a finished task reports.
struct Done {
    name: String,
    /// The tenant whose allowance the task used.
    tenant: Arc<str>,
    out: TaskOut,
    reply: Option<oneshot::Sender<AccountResult>>,
    ack: Option<oneshot::Sender<AccountAck>>,
}

/// A job waiting for a concurrency slot: a small record, no task.
struct Queued {
    /// The account, by name (indices change on reload).
    name: String,
    job: Job,
    request: Request,
    reply: Option<oneshot::Sender<AccountResult>>,
    ack: Option<oneshot::Sender<AccountAck>>,
}

#[derive(Clone, Copy)]
enum Job {
    Rotate,
    /// Recovery + drift check (+ a drift rotation) + due time from Key Vault.
    Reconcile,
}

struct Slot {
    managed: Managed,
    next_due: Option<OffsetDateTime>,
    /// The trigger to use when `next_due` fires.
    next_trigger: Trigger,
    busy: bool,
    paused: bool,
    failures: u32,
    /// A reload changed where or when the account is due while a job of it ran: reconcile
    /// it (due time from the new secret and schedule) once that job ends.
    reconcile_when_idle: bool,
}

impl Slot {
    fn new(managed: Managed) -> Self {
        Slot {
            managed,
            next_due: None,
            next_trigger: Trigger::Schedule,
            busy: false,
            paused: false,
            failures: 0,
            reconcile_when_idle: false,
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
        };
        d.set_slots(accounts.into_iter().map(Slot::new).collect());
        d
    }

    /// Makes the main loop mark the board's heartbeat every `period`.
    pub fn with_heartbeat(mut self, period: Duration) -> Self {
        self.heartbeat = Some(period);
        self
    }

    /// The shared status board.
    pub fn board(&self) -> StatusBoard {
        self.board.clone()
    }

    fn set_slots(&mut self, slots: Vec<Slot>) {
        self.index = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name().to_owned(), i))
            .collect();
        self.slots = slots;
        self.heap.clear();
        for idx in 0..self.slots.len() {
            if let Some(due) = self.slots[idx].next_due {
                let trigger = self.slots[idx].next_trigger;
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
                st
            })
            .collect();
    }

    fn board_mut(&self, idx: usize, f: impl FnOnce(&mut AccountStatus)) {
        let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = b.accounts.get_mut(idx) {
            f(s);
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

        if !self.settings.startup_delay.is_zero() {
            tracing::warn!(
                delay = ?self.settings.startup_delay,
                "the previous keyturn stopped uncleanly; waiting for its in-flight requests to settle before recovery"
            );
            tokio::select! {
                _ = tokio::time::sleep(self.settings.startup_delay) => {}
                _ = &mut shutdown => return Ok(()),
            }
        }
        // Start-up: recover every account and read its due time from Key Vault.
        for idx in 0..self.slots.len() {
            self.spawn(
                idx,
                Job::Reconcile,
                Request::daemon(Trigger::Recovery),
                None,
                None,
            );
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
                    }
                }
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.joined(done),
                _ = tokio::time::sleep_until(wake) => self.fire_due(),
                _ = async { drift.as_mut().expect("guarded by the if").tick().await }, if drift.is_some() => {
                    for idx in 0..self.slots.len() {
                        if !self.slots[idx].busy && !self.slots[idx].paused {
                            self.spawn(idx, Job::Reconcile, Request::daemon(Trigger::Drift), None, None);
                        }
                    }
                }
            }
        }
        self.stop().await;
        Ok(())
    }

    fn drift_timer(&self) -> Option<tokio::time::Interval> {
        (!self.settings.drift_interval.is_zero()).then(|| {
            let period = self.settings.drift_interval;
            let start = tokio::time::Instant::now()
                .checked_add(period)
                .unwrap_or_else(tokio::time::Instant::now);
            tokio::time::interval_at(start, period)
        })
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

    fn set_due(&mut self, idx: usize, due: OffsetDateTime, trigger: Trigger) {
        let slot = &mut self.slots[idx];
        slot.next_due = Some(due);
        slot.next_trigger = trigger;
        self.heap.schedule(idx, due);
        self.board_mut(idx, |b| b.next_due = Some(due));
    }

    fn schedule_after_success(&mut self, idx: usize) {
        let slot = &self.slots[idx];
        let now = self.clock.now();
        let due = slot
            .managed
            .schedule
            .next_fire_after(slot.name(), now)
            .unwrap_or(now.saturating_add(time::Duration::days(7)));
        self.slots[idx].failures = 0;
        self.set_due(idx, due, Trigger::Schedule);
    }

    fn schedule_retry(&mut self, idx: usize) {
        let failures = {
            let slot = &mut self.slots[idx];
            slot.failures = slot.failures.saturating_add(1);
            slot.failures
        };
        // Saturating throughout: the delays are bounded by validation, but no setting may
        // make the daemon's arithmetic panic.
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let base = millis(self.settings.retry_base);
        let max = millis(self.settings.retry_max);
        let exp = base
            .saturating_mul(1u64 << failures.saturating_sub(1).min(20))
            .min(max)
            .max(1);
        let ms = rand::rng().random_range(exp / 2..=exp);
        let due = self
            .clock
            .now()
            .saturating_add(time::Duration::milliseconds(
                i64::try_from(ms).unwrap_or(i64::MAX),
            ));
        let trigger = self.slots[idx].next_trigger;
        self.set_due(idx, due, trigger);
    }

    fn next_wake(&mut self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        match self.heap.next() {
            Some(due) => {
                // At most a day ahead: a due time further out is looked at again then (and
                // an `Instant` that far ahead could overflow).
                let wait = Duration::try_from(due - self.clock.now()).unwrap_or(Duration::ZERO);
                now + wait.min(MAX_WAKE)
            }
            None => now + MAX_WAKE,
        }
    }

    fn fire_due(&mut self) {
        let now = self.clock.now();
        while let Some(idx) = self.heap.pop_due(now) {
            let Some(slot) = self.slots.get(idx) else {
                continue;
            };
            // Running (rescheduled when it ends) or paused (rescheduled on resume).
            if slot.busy || slot.paused {
                continue;
            }
            let trigger = slot.next_trigger;
            self.spawn(idx, Job::Rotate, Request::daemon(trigger), None, None);
        }
    }

    fn targets(&self, account: &Option<String>) -> Result<Vec<usize>, String> {
        match account {
            Some(name) => self
                .index
                .get(name)
                .map(|i| vec![*i])
                .ok_or_else(|| format!("no account named {name:?} is configured")),
            None => Ok((0..self.slots.len()).collect()),
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Rotate {
                account,
                request,
                wait,
                reply,
            } => {
                let targets = match self.targets(&account) {
                    Ok(t) => t,
                    Err(e) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(vec![(account.unwrap_or_default(), Err(e))]);
                        }
                        return;
                    }
                };
                let mut immediate = Vec::new();
                let mut waits = Vec::new();
                for idx in targets {
                    let name = self.slots[idx].name().to_owned();
                    if self.slots[idx].busy {
                        immediate.push((name, Err("a rotation of this account is already running; try again when it ends".to_owned())));
                        continue;
                    }
                    if self.slots[idx].paused {
                        immediate.push((
                            name,
                            Err("the account is paused; resume it first".to_owned()),
                        ));
                        continue;
                    }
                    let id = Uuid::new_v4();
                    let request = Request {
                        rotation_id: Some(id),
                        ..request.clone()
                    };
                    if wait {
                        let (tx, rx) = oneshot::channel();
                        self.spawn(idx, Job::Rotate, request, Some(tx), None);
                        waits.push(rx);
                    } else {
                        self.spawn(idx, Job::Rotate, request, None, None);
                        immediate.push((
                            name,
                            Ok(RotationSummary {
                                rotation_id: id,
                                version: None,
                                resumed: false,
                                warnings: Vec::new(),
                                completed: false,
                            }),
                        ));
                    }
                }
                reply_when_done(reply, immediate, waits);
            }
            Command::Pause {
                account,
                paused,
                reply,
            } => {
                let acks = match self.targets(&account) {
                    Err(e) => vec![(account.unwrap_or_default(), Err(e))],
                    Ok(targets) => targets
                        .into_iter()
                        .map(|idx| {
                            self.slots[idx].paused = paused;
                            self.board_mut(idx, |b| b.paused = paused);
                            if paused {
                                // Not due while paused; `next_due` stays for the resume.
                                self.heap.remove(idx);
                            } else {
                                if let Some(due) = self.slots[idx].next_due {
                                    let trigger = self.slots[idx].next_trigger;
                                    self.set_due(idx, due, trigger);
                                }
                            }
                            let what = if paused { "paused" } else { "resumed" };
                            (self.slots[idx].name().to_owned(), Ok(what.to_owned()))
                        })
                        .collect(),
                };
                if let Some(reply) = reply {
                    let _ = reply.send(acks);
                }
            }
            Command::Reconcile {
                account,
                request,
                reply,
            } => {
                let targets = match self.targets(&account) {
                    Ok(t) => t,
                    Err(e) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(vec![(account.unwrap_or_default(), Err(e))]);
                        }
                        return;
                    }
                };
                let mut immediate = Vec::new();
                let mut waits = Vec::new();
                for idx in targets {
                    if self.slots[idx].busy {
                        immediate.push((
                            self.slots[idx].name().to_owned(),
                            Err("busy: a rotation runs now".to_owned()),
                        ));
                        continue;
                    }
                    let (tx, rx) = oneshot::channel();
                    self.spawn(idx, Job::Reconcile, request.clone(), None, Some(tx));
                    waits.push(rx);
                }
                reply_when_done(reply, immediate, waits);
            }
            Command::Reload {
                accounts,
                settings,
                tuning,
                reply,
            } => {
                self.engine.set_tuning(tuning);
                let summary = self.reload(accounts, settings);
                if let Some(reply) = reply {
                    let _ = reply.send(summary);
                }
            }
        }
    }

    /// Swaps in a new configuration. Accounts keep their state (failures, pause) by name; new
    /// ones, and those whose due time may have moved (another schedule, time zone or window,
    /// vault or secret), are reconciled: recovery, then the due time from Key Vault. One that
    /// is busy is reconciled when its job ends. Rotations of removed accounts finish and are
    /// then forgotten.
    fn reload(&mut self, accounts: Vec<Managed>, settings: Settings) -> String {
        let mut old: HashMap<String, Slot> = self
            .slots
            .drain(..)
            .map(|s| (s.name().to_owned(), s))
            .collect();
        let (mut kept, mut added, mut changed) = (0, 0, 0);
        let mut fresh = Vec::new();
        let mut slots = Vec::new();
        for m in accounts {
            match old.remove(&m.account.name) {
                Some(mut s) => {
                    let (old, new) = (&s.managed, &m);
                    let moved = old.schedule != new.schedule
                        || old.account.secret != new.account.secret
                        || crate::config::normalize_vault(old.account.store.vault())
                            != crate::config::normalize_vault(new.account.store.vault());
                    s.managed = m;
                    if moved {
                        // The old due time belongs to the old secret or schedule.
                        s.next_due = None;
                        changed += 1;
                        fresh.push(slots.len());
                    }
                    kept += 1;
                    slots.push(s);
                }
                None => {
                    added += 1;
                    fresh.push(slots.len());
                    slots.push(Slot::new(m));
                }
            }
        }
        let removed = old.len();
        self.queues.set_limit(settings.max_per_tenant);
        self.settings = settings;
        self.set_slots(slots);
        for idx in fresh {
            if self.slots[idx].busy {
                self.slots[idx].reconcile_when_idle = true;
            } else {
                self.spawn(
                    idx,
                    Job::Reconcile,
                    Request::daemon(Trigger::Recovery),
                    None,
                    None,
                );
            }
        }
        let mut summary = format!("{kept} account(s) kept, {added} added, {removed} removed");
        if changed > 0 {
            summary.push_str(&format!(
                "; {changed} kept account(s) with another schedule, time zone, window, vault or secret are reconciled and rescheduled"
            ));
        }
        tracing::info!("configuration reloaded: {summary}");
        summary
    }

    /// Queues a job for the account; it starts when the global and its tenant's allowances
    /// have room.
    fn spawn(
        &mut self,
        idx: usize,
        job: Job,
        request: Request,
        reply: Option<oneshot::Sender<AccountResult>>,
        ack: Option<oneshot::Sender<AccountAck>>,
    ) {
        let slot = &mut self.slots[idx];
        slot.busy = true;
        let tenant = tenant_of(&slot.managed);
        let queued = Queued {
            name: slot.managed.account.name.clone(),
            job,
            request,
            reply,
            ack,
        };
        self.board_mut(idx, |b| b.busy = true);
        self.queues.push(tenant, queued);
        self.dispatch();
    }

    /// Starts waiting jobs while there is room: tenants take turns.
    fn dispatch(&mut self) {
        while self.tasks.len() < self.settings.max_concurrent.max(1) {
            let Some((tenant, queued)) = self.queues.next() else {
                return;
            };
            self.start(tenant, queued);
        }
    }

    /// Runs one job as a task.
    fn start(&mut self, tenant: Arc<str>, queued: Queued) {
        let Queued {
            name,
            job,
            request,
            reply,
            ack,
        } = queued;
        let Some(&idx) = self.index.get(&name) else {
            // Removed by a reload while it waited.
            if let Some(reply) = reply {
                let _ = reply.send((name.clone(), Err("the account was removed".into())));
            }
            let task_name = name.clone();
            let task_tenant = tenant.clone();
            let handle = self.tasks.spawn(async move {
                Done {
                    name,
                    tenant,
                    out: TaskOut::Idle(None, None),
                    reply: None,
                    ack,
                }
            });
            self.running.insert(handle.id(), (task_name, task_tenant));
            return;
        };
        let engine = self.engine.clone();
        let managed = self.slots[idx].managed.clone();
        let clock = self.clock.clone();
        let task = (name.clone(), tenant.clone());
        let handle = self.tasks.spawn(async move {
            let account = &managed.account;
            let out = match job {
                Job::Rotate => match engine.rotate(account, &request).await {
                    Ok(r) => TaskOut::Rotated(r),
                    Err(e) => TaskOut::Failed(e),
                },
                Job::Reconcile => reconcile(&engine, &managed, &request, clock.as_ref()).await,
            };
            Done {
                name,
                tenant,
                out,
                reply,
                ack,
            }
        });
        self.running.insert(handle.id(), task);
    }

    /// A task ended: its tenant has room again.
    fn release(&mut self, tenant: &Arc<str>) {
        self.queues.release(tenant);
    }

    /// A task panicked (a bug) or was cut off: the account is free again and retried with
    /// backoff, like a failed rotation; whatever the task left half-done in Key Vault is
    /// what recovery handles (a staged password is completed or abandoned on the retry).
    /// Its waiters see their reply channel closed.
    fn crashed(&mut self, name: &str, e: &tokio::task::JoinError) {
        let Some(&idx) = self.index.get(name) else {
            return;
        };
        if e.is_cancelled() {
            return;
        }
        tracing::error!(account = %name, error = %e, "a rotation task panicked (a bug in keyturn; please report it); retrying with backoff");
        self.slots[idx].busy = false;
        let now = self.clock.now();
        self.board_mut(idx, |b| {
            b.last_outcome = Some("failed: internal error".into());
            b.last_end = Some(now);
            *b.counts.entry("failed".into()).or_default() += 1;
        });
        self.schedule_retry(idx);
        let failures = self.slots[idx].failures;
        self.board_mut(idx, |b| {
            b.busy = false;
            b.failures = failures;
        });
        self.reconcile_if_moved(idx);
    }

    /// Reconciles an account a reload changed while it was busy (see [`Daemon::reload`]).
    fn reconcile_if_moved(&mut self, idx: usize) {
        if std::mem::take(&mut self.slots[idx].reconcile_when_idle) && !self.slots[idx].busy {
            self.spawn(
                idx,
                Job::Reconcile,
                Request::daemon(Trigger::Recovery),
                None,
                None,
            );
        }
    }

    fn finished(&mut self, done: Done) {
        let Some(&idx) = self.index.get(&done.name) else {
            tracing::info!(account = %done.name, "a task of a removed account ended");
            return;
        };
        self.slots[idx].busy = false;
        let name = done.name.clone();
        let now = self.clock.now();
        let (result, ack_msg): (Result<RotationSummary, String>, Result<String, String>) =
            match &done.out {
                TaskOut::Rotated(r) => {
                    tracing::info!(account = %name, rotation_id = %r.rotation_id, version = %r.version, "rotation completed");
                    let outcome = if r.warnings.is_empty() {
                        "success"
                    } else {
                        "warning"
                    };
                    self.board_mut(idx, |b| {
                        b.last_outcome = Some(outcome.into());
                        b.version = Some(r.version.clone());
                        b.pending = false;
                        b.last_end = Some(now);
                        b.last_success = Some(now);
                        *b.counts.entry(outcome.into()).or_default() += 1;
                    });
                    self.schedule_after_success(idx);
                    (
                        Ok(r.into()),
                        Ok(format!("rotated (rotation {})", r.rotation_id)),
                    )
                }
                TaskOut::Idle(due, current) => {
                    if let Some((version, rotated)) = current.clone() {
                        self.board_mut(idx, |b| {
                            b.version = Some(version);
                            b.rotated_at = Some(rotated);
                        });
                    }
                    let (due, trigger) = due.unwrap_or_else(|| {
                        let s = &self.slots[idx];
                        (s.next_due.unwrap_or(now), s.next_trigger)
                    });
                    self.set_due(idx, due, trigger);
                    (
                        Err("nothing to do".into()),
                        Ok("consistent; nothing to do".into()),
                    )
                }
                TaskOut::Failed(e) => {
                    tracing::warn!(account = %name, error = %e, "rotation did not complete; retrying with backoff");
                    let pending = e.is_pending();
                    let kind = e.kind();
                    self.board_mut(idx, |b| {
                        b.last_outcome = Some(format!("failed: {kind}"));
                        b.pending = pending;
                        b.last_end = Some(now);
                        *b.counts.entry("failed".into()).or_default() += 1;
                    });
                    self.schedule_retry(idx);
                    (Err(e.to_string()), Err(e.to_string()))
                }
            };
        let failures = self.slots[idx].failures;
        self.board_mut(idx, |b| {
            b.busy = false;
            b.failures = failures;
        });
        if let Some(reply) = done.reply {
            let _ = reply.send((name.clone(), result));
        }
        if let Some(ack) = done.ack {
            let _ = ack.send((name, ack_msg));
        }
        self.reconcile_if_moved(idx);
    }

    async fn stop(&mut self) {
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
                    self.tasks.abort_all();
                    break;
                }
            }
        }
    }
}

/// Sends `reply` the immediate answers followed by each awaited one, once all have come,
/// without holding up the daemon's loop.
fn reply_when_done<T: Send + 'static>(
    reply: Option<oneshot::Sender<Vec<T>>>,
    immediate: Vec<T>,
    waits: Vec<oneshot::Receiver<T>>,
) {
    if let Some(reply) = reply {
        tokio::spawn(async move {
            let mut all = immediate;
            for rx in waits {
                if let Ok(r) = rx.await {
                    all.push(r);
                }
            }
            let _ = reply.send(all);
        });
    }
}

/// The key of the account's tenant allowance.
fn tenant_of(managed: &Managed) -> Arc<str> {
    Arc::from(managed.account.directory.tenant().unwrap_or(""))
}

/// Recovery, a drift check (and a drift rotation when Graph shows an outside change), then
/// the due time from Key Vault, from one read of `<secret>`.
async fn reconcile(
    engine: &Engine,
    managed: &Managed,
    request: &Request,
    clock: &dyn Clock,
) -> TaskOut {
    let account = &managed.account;
    match engine.recover(account, request).await {
        Ok(Some(done)) => return TaskOut::Rotated(done),
        Ok(None) => {}
        Err(e) => return TaskOut::Failed(e),
    }
    let current = match account.store.latest(&account.secret).await {
        Ok(c) => c,
        Err(source) => {
            return TaskOut::Failed(RotationError::Read {
                account: account.name.clone(),
                source,
            })
        }
    };
    if let Some(current) = &current {
        match engine.check_drift_of(account, current).await {
            Ok(Some(_)) => {
                return match engine
                    .rotate(account, &Request::daemon(Trigger::Drift))
                    .await
                {
                    Ok(r) => TaskOut::Rotated(r),
                    Err(e) => TaskOut::Failed(e),
                }
            }
            Ok(None) => {}
            Err(RotationError::Directory { source, .. }) => {
                // Drift needs Graph's user read; its failure must not block scheduling.
                tracing::warn!(account = %account.name, error = %source, "drift check skipped");
            }
            Err(e) => return TaskOut::Failed(e),
        }
    }
    due_from(managed, current, clock.now())
}

/// When the account is due, from the current version of `<secret>` (`None`: it does not exist).
fn due_from(managed: &Managed, current: Option<SecretRecord>, now: OffsetDateTime) -> TaskOut {
    let account = &managed.account;
    match current {
        Some(current) => {
            let rotated = protocol::rotated_at(&current).unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let due = managed
                .schedule
                .next_fire_after(&account.name, rotated)
                .unwrap_or(now);
            let trigger = if due <= now {
                Trigger::CatchUp
            } else {
                Trigger::Schedule
            };
            TaskOut::Idle(Some((due, trigger)), Some((current.version, rotated)))
        }
        None => {
            tracing::warn!(account = %account.name, secret = %account.secret, "the secret does not exist; keyturn creates it with a first rotation");
            TaskOut::Idle(Some((now, Trigger::CatchUp)), None)
        }
    }
}

#[cfg(test)]
mod lock_tests {
    use super::InstanceLock;

    #[test]
    fn an_unreleased_lock_marks_the_next_start_unclean() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstanceLock::acquire(dir.path()).unwrap();
        assert!(!first.unclean, "a fresh state dir is clean");
        assert!(matches!(
            InstanceLock::acquire(dir.path()),
            Err(super::DaemonError::Locked { .. })
        ));
        first.simulate_crash(); // like SIGKILL: the flock goes, the pid stays
        let second = InstanceLock::acquire(dir.path()).unwrap();
        assert!(second.unclean);
        second.release();
        let third = InstanceLock::acquire(dir.path()).unwrap();
        assert!(!third.unclean, "released: clean");
    }

    #[test]
    fn a_dropped_lock_is_clean_unless_it_inherited_a_crash_or_panicked() {
        let dir = tempfile::tempdir().unwrap();
        // A start that fails (an early return) drops the lock: the next start is clean.
        drop(InstanceLock::acquire(dir.path()).unwrap());
        let lock = InstanceLock::acquire(dir.path()).unwrap();
        assert!(!lock.unclean, "a failed start is not a crash");
        drop(lock);
        // A panic is a crash.
        let d = dir.path().to_owned();
        let panicked = std::thread::spawn(move || {
            let _lock = InstanceLock::acquire(&d).unwrap();
            panic!("a bug");
        });
        assert!(panicked.join().is_err());
        let lock = InstanceLock::acquire(dir.path()).unwrap();
        assert!(lock.unclean, "a panic leaves the pid");
        // A start after a crash that fails before the delay keeps the mark…
        drop(lock);
        let lock = InstanceLock::acquire(dir.path()).unwrap();
        assert!(lock.unclean, "the crash before it is not waited out yet");
        // …until one waits it out and releases.
        lock.release();
        assert!(!InstanceLock::acquire(dir.path()).unwrap().unclean);
    }

    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::symlink(&victim, state.join("keyturn.lock")).unwrap();
        let err = InstanceLock::acquire(&state).err().expect("refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }
}
