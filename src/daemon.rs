//! The long-running service: recovery at start-up, due times computed from Key Vault, a
//! single timer over a heap of due times (O(log n) per event, no task per idle account),
//! bounded concurrency, backoff with jitter for failing accounts, drift checks, manual
//! rotations through [`Command`]s, and a graceful shutdown.

use crate::audit::{Actor, AuditEvent, AuditSink, EventKind, Outcome, Trigger};
use crate::clock::Clock;
use crate::protocol::{self, Account, Engine, Request, Rotated, RotationError};
use crate::schedule::Schedule;
use rand::Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;

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
    /// First retry delay for a failing account.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Drift check period; zero disables.
    pub drift_interval: Duration,
    /// How long shutdown waits for in-flight rotations.
    pub shutdown_grace: Duration,
}

/// The result of one account's rotation, as sent back to a requester.
pub type AccountResult = (String, Result<Rotated, String>);

/// A request from outside the schedule (signals, the admin socket).
pub enum Command {
    /// Rotate one account (`Some(name)`) or all now.
    Rotate {
        account: Option<String>,
        request: Request,
        reply: Option<oneshot::Sender<Vec<AccountResult>>>,
    },
}

/// What the daemon knows about an account (for status answers and tests).
#[derive(Debug, Clone, Default)]
pub struct AccountStatus {
    /// The account's name.
    pub name: String,
    /// When it is next due.
    pub next_due: Option<OffsetDateTime>,
    /// A rotation runs now.
    pub busy: bool,
    /// Consecutive failures.
    pub failures: u32,
    /// The last rotation's outcome.
    pub last_outcome: Option<String>,
    /// When the last rotation ended.
    pub last_end: Option<OffsetDateTime>,
    /// The current `<secret>` version, when known.
    pub version: Option<String>,
    /// A rotation is left pending in the staging secret.
    pub pending: bool,
}

/// Shared view of every account's state.
pub type StatusBoard = Arc<Mutex<Vec<AccountStatus>>>;

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
/// for the life of the value.
pub struct InstanceLock {
    _file: std::fs::File,
}

impl InstanceLock {
    /// Takes the lock or says who holds it.
    pub fn acquire(state_dir: &Path) -> Result<Self, DaemonError> {
        use std::io::{Read, Seek, Write};
        let path = state_dir.join("keyturn.lock");
        let io = |e: std::io::Error| DaemonError::LockFile {
            path: path.clone(),
            detail: e.to_string(),
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(DaemonError::Locked {
                    path,
                    holder: holder.trim().to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(InstanceLock { _file: file })
    }
}

/// What a finished task reports.
struct Done {
    idx: usize,
    result: Result<Option<Rotated>, RotationError>,
    reply: Option<oneshot::Sender<AccountResult>>,
}

#[derive(Clone, Copy)]
enum Job {
    Rotate,
    /// Recovery + drift check (+ a drift rotation when needed).
    Reconcile,
}

struct Slot {
    managed: Managed,
    next_due: Option<OffsetDateTime>,
    /// The trigger to use when `next_due` fires.
    next_trigger: Trigger,
    generation: u64,
    busy: bool,
    failures: u32,
}

/// The daemon.
pub struct Daemon {
    engine: Arc<Engine>,
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    slots: Vec<Slot>,
    heap: BinaryHeap<Reverse<(OffsetDateTime, usize, u64)>>,
    tasks: JoinSet<Done>,
    permits: Arc<Semaphore>,
    board: StatusBoard,
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
        let board = Arc::new(Mutex::new(
            accounts
                .iter()
                .map(|m| AccountStatus {
                    name: m.account.name.clone(),
                    ..Default::default()
                })
                .collect(),
        ));
        let permits = Arc::new(Semaphore::new(settings.max_concurrent.max(1)));
        Daemon {
            engine,
            audit,
            clock,
            settings,
            slots: accounts
                .into_iter()
                .map(|managed| Slot {
                    managed,
                    next_due: None,
                    next_trigger: Trigger::Schedule,
                    generation: 0,
                    busy: false,
                    failures: 0,
                })
                .collect(),
            heap: BinaryHeap::new(),
            tasks: JoinSet::new(),
            permits,
            board,
        }
    }

    /// The shared status board.
    pub fn board(&self) -> StatusBoard {
        self.board.clone()
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

        // Start-up: recover every account, then compute due times from Key Vault.
        let startup = self.startup();
        tokio::select! {
            _ = startup => {}
            _ = &mut shutdown => {
                self.stop().await;
                return Ok(());
            }
        }
        if let Some(ready) = ready {
            let _ = ready.send(());
        }
        tracing::info!(accounts = self.slots.len(), "keyturn is ready");

        let mut drift = (!self.settings.drift_interval.is_zero()).then(|| {
            let period = self.settings.drift_interval;
            tokio::time::interval_at(tokio::time::Instant::now() + period, period)
        });

        loop {
            let wake = self.next_wake();
            tokio::select! {
                _ = &mut shutdown => break,
                Some(cmd) = commands.recv() => self.command(cmd),
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match done {
                        Ok(done) => self.finished(done),
                        Err(e) => tracing::error!(error = %e, "a rotation task failed"),
                    }
                }
                _ = tokio::time::sleep_until(wake) => self.fire_due(),
                _ = async { drift.as_mut().expect("guarded").tick().await }, if drift.is_some() => {
                    for idx in 0..self.slots.len() {
                        if !self.slots[idx].busy {
                            self.spawn(idx, Job::Reconcile, Request::daemon(Trigger::Drift), None);
                        }
                    }
                }
            }
        }
        self.stop().await;
        Ok(())
    }

    async fn startup(&mut self) {
        for idx in 0..self.slots.len() {
            self.spawn(
                idx,
                Job::Reconcile,
                Request::daemon(Trigger::Recovery),
                None,
            );
        }
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(done) = done {
                let idx = done.idx;
                self.slots[idx].busy = false;
                match done.result {
                    Ok(Some(r)) => {
                        // Recovery completed a rotation (or a drift rotation ran).
                        self.update_board(idx, Some(Ok(&r)));
                        self.schedule_after_success(idx);
                    }
                    Ok(None) => self.schedule_from_vault(idx).await,
                    Err(e) => {
                        self.update_board(idx, Some(Err(&e)));
                        self.schedule_retry(idx);
                    }
                }
            }
        }
    }

    /// Reads the current version to find when the account is due.
    async fn schedule_from_vault(&mut self, idx: usize) {
        let slot = &self.slots[idx];
        let account = &slot.managed.account;
        match account.store.latest(&account.secret).await {
            Ok(Some(current)) => {
                let rotated = protocol::rotated_at(&current).unwrap_or(OffsetDateTime::UNIX_EPOCH);
                let due = slot
                    .managed
                    .schedule
                    .next_fire_after(&account.name, rotated);
                let now = self.clock.now();
                let trigger = if due.is_some_and(|d| d <= now) {
                    Trigger::CatchUp
                } else {
                    Trigger::Schedule
                };
                if let Ok(mut b) = self.board.lock() {
                    b[idx].version = Some(current.version.clone());
                }
                self.set_due(idx, due.unwrap_or(now), trigger);
            }
            Ok(None) => {
                tracing::warn!(account = %account.name, secret = %account.secret, "the secret does not exist; keyturn creates it with a first rotation");
                self.set_due(idx, self.clock.now(), Trigger::CatchUp);
            }
            Err(e) => {
                tracing::warn!(account = %account.name, error = %e, "cannot read the current version; retrying later");
                self.schedule_retry(idx);
            }
        }
    }

    fn set_due(&mut self, idx: usize, due: OffsetDateTime, trigger: Trigger) {
        let slot = &mut self.slots[idx];
        slot.generation += 1;
        slot.next_due = Some(due);
        slot.next_trigger = trigger;
        self.heap.push(Reverse((due, idx, slot.generation)));
        if let Ok(mut b) = self.board.lock() {
            b[idx].next_due = Some(due);
        }
    }

    fn schedule_after_success(&mut self, idx: usize) {
        let slot = &self.slots[idx];
        let now = self.clock.now();
        let due = slot
            .managed
            .schedule
            .next_fire_after(&slot.managed.account.name, now)
            .unwrap_or(now + time::Duration::days(7));
        self.slots[idx].failures = 0;
        self.set_due(idx, due, Trigger::Schedule);
    }

    fn schedule_retry(&mut self, idx: usize) {
        let failures = {
            let slot = &mut self.slots[idx];
            slot.failures += 1;
            slot.failures
        };
        let base = self.settings.retry_base.as_millis() as u64;
        let max = self.settings.retry_max.as_millis() as u64;
        let exp = base
            .saturating_mul(1u64 << (failures - 1).min(20))
            .min(max)
            .max(1);
        let ms = rand::rng().random_range(exp / 2..=exp);
        let due = self.clock.now() + time::Duration::milliseconds(ms as i64);
        let trigger = self.slots[idx].next_trigger;
        self.set_due(idx, due, trigger);
    }

    fn next_wake(&mut self) -> tokio::time::Instant {
        // Drop stale heap entries.
        while let Some(Reverse((_, idx, gen))) = self.heap.peek() {
            if self.slots[*idx].generation != *gen {
                self.heap.pop();
            } else {
                break;
            }
        }
        let now = tokio::time::Instant::now();
        match self.heap.peek() {
            Some(Reverse((due, _, _))) => {
                let wait = *due - self.clock.now();
                now + Duration::try_from(wait).unwrap_or(Duration::ZERO)
            }
            None => now + Duration::from_secs(86400),
        }
    }

    fn fire_due(&mut self) {
        let now = self.clock.now();
        while let Some(Reverse((due, idx, gen))) = self.heap.peek().copied() {
            if due > now {
                break;
            }
            self.heap.pop();
            if self.slots[idx].generation != gen || self.slots[idx].busy {
                continue; // stale, or rescheduled when the running task finishes
            }
            let trigger = self.slots[idx].next_trigger;
            self.spawn(idx, Job::Rotate, Request::daemon(trigger), None);
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Rotate {
                account,
                request,
                reply,
            } => {
                let targets: Vec<usize> = match &account {
                    Some(name) => self
                        .slots
                        .iter()
                        .position(|s| &s.managed.account.name == name)
                        .into_iter()
                        .collect(),
                    None => (0..self.slots.len()).collect(),
                };
                let mut replies = Vec::new();
                let mut immediate = Vec::new();
                if let Some(name) = &account {
                    if targets.is_empty() {
                        immediate.push((
                            name.clone(),
                            Err(format!("no account named {name:?} is configured")),
                        ));
                    }
                }
                for idx in targets {
                    let name = self.slots[idx].managed.account.name.clone();
                    if self.slots[idx].busy {
                        immediate.push((name, Err("a rotation of this account is already running; try again when it ends".into())));
                        continue;
                    }
                    let (tx, rx) = oneshot::channel();
                    self.spawn(idx, Job::Rotate, request.clone(), Some(tx));
                    replies.push(rx);
                }
                if let Some(reply) = reply {
                    tokio::spawn(async move {
                        let mut all = immediate;
                        for rx in replies {
                            if let Ok(r) = rx.await {
                                all.push(r);
                            }
                        }
                        let _ = reply.send(all);
                    });
                }
            }
        }
    }

    fn spawn(
        &mut self,
        idx: usize,
        job: Job,
        request: Request,
        reply: Option<oneshot::Sender<AccountResult>>,
    ) {
        let slot = &mut self.slots[idx];
        slot.busy = true;
        if let Ok(mut b) = self.board.lock() {
            b[idx].busy = true;
        }
        let engine = self.engine.clone();
        let account = slot.managed.account.clone();
        let permits = self.permits.clone();
        self.tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = match job {
                Job::Rotate => engine.rotate(&account, &request).await.map(Some),
                Job::Reconcile => reconcile(&engine, &account, &request).await,
            };
            Done { idx, result, reply }
        });
    }

    fn finished(&mut self, done: Done) {
        let idx = done.idx;
        self.slots[idx].busy = false;
        let name = self.slots[idx].managed.account.name.clone();
        match &done.result {
            Ok(Some(r)) => {
                tracing::info!(account = %name, rotation_id = %r.rotation_id, version = %r.version, "rotation completed");
                self.update_board(idx, Some(Ok(r)));
                self.schedule_after_success(idx);
            }
            Ok(None) => {
                // A reconcile found nothing to do: keep the schedule.
                let due = self.slots[idx].next_due.unwrap_or_else(|| self.clock.now());
                let trigger = self.slots[idx].next_trigger;
                self.set_due(idx, due, trigger);
                if let Ok(mut b) = self.board.lock() {
                    b[idx].busy = false;
                }
            }
            Err(e) => {
                tracing::warn!(account = %name, error = %e, "rotation did not complete; retrying with backoff");
                self.update_board(idx, Some(Err(e)));
                self.schedule_retry(idx);
            }
        }
        if let Some(reply) = done.reply {
            let r = done
                .result
                .map_err(|e| e.to_string())
                .and_then(|r| r.ok_or_else(|| "nothing to do".to_owned()));
            let _ = reply.send((name, r));
        }
    }

    fn update_board(&self, idx: usize, result: Option<Result<&Rotated, &RotationError>>) {
        let now = self.clock.now();
        if let Ok(mut b) = self.board.lock() {
            let s = &mut b[idx];
            s.busy = false;
            s.failures = self.slots[idx].failures;
            match result {
                Some(Ok(r)) => {
                    s.last_outcome = Some(if r.warnings.is_empty() {
                        "success".into()
                    } else {
                        "warning".into()
                    });
                    s.version = Some(r.version.clone());
                    s.pending = false;
                    s.last_end = Some(now);
                }
                Some(Err(e)) => {
                    s.last_outcome = Some(format!("failed: {}", e.kind()));
                    s.pending = e.is_pending();
                    s.last_end = Some(now);
                }
                None => {}
            }
        }
    }

    async fn stop(&mut self) {
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
                next = self.tasks.join_next() => match next {
                    Some(Ok(done)) => self.finished(done),
                    Some(Err(_)) => {}
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

/// Recovery, then a drift check, then a drift rotation when Graph shows an outside change.
async fn reconcile(
    engine: &Engine,
    account: &Account,
    request: &Request,
) -> Result<Option<Rotated>, RotationError> {
    if let Some(done) = engine.recover(account, request).await? {
        return Ok(Some(done));
    }
    match engine.check_drift(account).await {
        Ok(Some(_)) => engine
            .rotate(account, &Request::daemon(Trigger::Drift))
            .await
            .map(Some),
        Ok(None) => Ok(None),
        Err(RotationError::Directory { source, .. }) => {
            // Drift needs Graph's user read; its failure must not block scheduling.
            tracing::warn!(account = %account.name, error = %source, "drift check skipped");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
