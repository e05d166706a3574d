//! Jobs: queuing one for an account, starting it as a task when its tenant and the global
//! bound allow, and taking in its result (the status board, the next due time, the reply).
//! The tasks themselves: a rotation, or a reconcile (recovery, drift check, due time).

use super::{
    AccountAck, AccountError, AccountFailure, AccountResult, Daemon, Managed, RotationSummary,
};
use crate::audit::{Actor, AuditEvent, EventKind, Outcome, Trigger};
use crate::clock::Clock;
use crate::config::OnMissingSecret;
use crate::protocol::{self, Engine, Request, Rotated, RotationError};
use crate::store::{tag, SecretRecord, Tags};
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::oneshot;

/// What a task did.
enum TaskOut {
    /// A rotation completed (fresh, resumed, or for drift).
    Rotated(Rotated),
    /// Nothing to do; when known, the account's due time read from Key Vault, and the
    /// current version (unknown from a listing, which has no version ids) and its
    /// rotation time.
    Idle(
        Option<(OffsetDateTime, Trigger)>,
        Option<(Option<String>, OffsetDateTime)>,
    ),
    /// It failed; retried with backoff.
    Failed(RotationError),
    /// The secret does not exist and `on_missing_secret = "wait"`: await adoption.
    Missing,
    /// The account was retired (`keyturn retire`): its secret, or its deleted secret, is
    /// tagged `keyturn-retired`; the tags say when, by whom and why.
    Retired(Tags),
    /// `adopt` without `force` found the secret already there (its version): refused,
    /// and the account scheduled from it.
    HasSecret(String, (OffsetDateTime, Trigger), OffsetDateTime),
}

/// What a finished task reports.
pub(super) struct Done {
    name: String,
    /// The tenant whose allowance the task used.
    pub(super) tenant: Arc<str>,
    out: TaskOut,
    reply: Option<oneshot::Sender<AccountResult>>,
    ack: Option<oneshot::Sender<AccountAck>>,
    /// Who asked for the job (the daemon for its own).
    request_actor: Actor,
}

/// A job waiting for a concurrency slot: a small record, no task.
pub(super) struct Queued {
    /// The account, by name (indices change on reload).
    name: String,
    job: Job,
    request: Request,
    reply: Option<oneshot::Sender<AccountResult>>,
    ack: Option<oneshot::Sender<AccountAck>>,
}

#[derive(Clone, Copy)]
pub(super) enum Job {
    /// A rotation (scheduled, retried, or asked for).
    Rotate,
    /// Recovery + drift check (+ a drift rotation) + due time from Key Vault.
    Reconcile,
    /// The same from what a vault listing showed of the account: no Key Vault read unless
    /// its staging secret is tagged pending or Graph suggests a drift (then as `Reconcile`).
    ReconcileListed(Listed),
    /// `keyturn adopt`: a first rotation now; refused when the secret exists, unless forced.
    Adopt { force: bool },
}

impl Daemon {
    /// Queues a reconcile the daemon starts itself (start-up recovery, a reload, the drift
    /// timer): nobody waits for its answer.
    pub(super) fn spawn_reconcile(&mut self, idx: usize, trigger: Trigger) {
        self.spawn(idx, Job::Reconcile, Request::daemon(trigger), None, None);
    }

    /// Queues a job for the account; it starts when the global and its tenant's allowances
    /// have room.
    pub(super) fn spawn(
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
    pub(super) fn dispatch(&mut self) {
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
                let _ = reply.send((name.clone(), Err(AccountError::Removed.into())));
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
                    request_actor: Actor::Daemon,
                }
            });
            self.running.insert(handle.id(), (task_name, task_tenant));
            return;
        };
        let engine = self.engine.clone();
        let managed = self.slots[idx].managed.clone();
        let clock = self.clock.clone();
        let task = (name.clone(), tenant.clone());
        let urgent = request.urgent;
        let request_actor = request.actor.clone();
        let handle = self.tasks.spawn(async move {
            let account = &managed.account;
            let work = async {
                match job {
                    Job::Rotate => match engine.rotate(account, &request).await {
                        Ok(r) => TaskOut::Rotated(r),
                        Err(e) => TaskOut::Failed(e),
                    },
                    Job::Reconcile => reconcile(&engine, &managed, &request, clock.as_ref()).await,
                    Job::ReconcileListed(listed) => {
                        reconcile_listed(&engine, &managed, &request, listed, clock.as_ref()).await
                    }
                    Job::Adopt { force } => {
                        adopt(&engine, &managed, &request, force, clock.as_ref()).await
                    }
                }
            };
            // An urgent rotation's requests may use the budget reserved for other clients.
            let out = if urgent {
                crate::limits::urgent(work).await
            } else {
                work.await
            };
            Done {
                name,
                tenant,
                out,
                reply,
                ack,
                request_actor,
            }
        });
        self.running.insert(handle.id(), task);
    }

    /// A task ended: its tenant has room again.
    pub(super) fn release(&mut self, tenant: &Arc<str>) {
        self.queues.release(tenant);
    }

    /// A task panicked (a bug) or was cut off: the account is free again and retried with
    /// backoff, like a failed rotation; whatever the task left half-done in Key Vault is
    /// what recovery handles (a staged password is completed or abandoned on the retry).
    /// Its waiters see their reply channel closed.
    pub(super) fn crashed(&mut self, name: &str, e: &tokio::task::JoinError) {
        let Some(&idx) = self.index.get(name) else {
            return;
        };
        if e.is_cancelled() {
            return;
        }
        self.slots[idx].epoch += 1;
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
    pub(super) fn reconcile_if_moved(&mut self, idx: usize) {
        if std::mem::take(&mut self.slots[idx].reconcile_when_idle) && !self.slots[idx].busy {
            self.spawn_reconcile(idx, Trigger::Recovery);
        }
    }

    pub(super) fn finished(&mut self, done: Done) {
        let Some(&idx) = self.index.get(&done.name) else {
            tracing::info!(account = %done.name, "a task of a removed account ended");
            return;
        };
        self.slots[idx].busy = false;
        self.slots[idx].epoch += 1;
        // Anything but "no secret" shows the secret exists (or now does).
        if !matches!(
            done.out,
            TaskOut::Missing | TaskOut::Failed(_) | TaskOut::Retired(_)
        ) {
            self.slots[idx].awaiting = false;
            self.board_mut(idx, |b| b.awaiting_adoption = false);
        }
        let name = done.name.clone();
        let now = self.clock.now();
        let (result, ack_msg): (
            Result<RotationSummary, AccountFailure>,
            Result<String, AccountFailure>,
        ) = match done.out {
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
                    Ok(RotationSummary::from(&r)),
                    Ok(format!("rotated (rotation {})", r.rotation_id)),
                )
            }
            TaskOut::Idle(due, current) => {
                self.idle(idx, due, current);
                (
                    Err(AccountError::NothingToDo.into()),
                    Ok("consistent; nothing to do".into()),
                )
            }
            TaskOut::Missing => {
                self.await_adoption(idx);
                (
                    Err(AccountError::AwaitingAdoption.into()),
                    Ok("no secret in Key Vault; awaiting adoption (keyturn adopt)".into()),
                )
            }
            TaskOut::Retired(tags) => {
                self.retire(idx, &tags, &done.request_actor);
                (
                    Err(AccountError::Retired.into()),
                    Ok("retired (keyturn retire): never rotated again".into()),
                )
            }
            TaskOut::HasSecret(version, (due, trigger), rotated) => {
                self.board_mut(idx, |b| {
                    b.version = Some(version.clone());
                    b.rotated_at = Some(rotated);
                });
                self.set_due(idx, due, trigger);
                (
                    Err(AccountError::AlreadyAdopted { version }.into()),
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
                let failure = AccountFailure::from(e);
                (Err(failure.clone()), Err(failure))
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
}

impl Daemon {
    /// The account is consistent: due at `due` (`None`: when it was due already), its
    /// current version (when read) and rotation time as shown.
    fn idle(
        &mut self,
        idx: usize,
        due: Option<(OffsetDateTime, Trigger)>,
        current: Option<(Option<String>, OffsetDateTime)>,
    ) {
        if let Some((version, rotated)) = current {
            self.board_mut(idx, |b| {
                if version.is_some() {
                    b.version = version;
                }
                b.rotated_at = Some(rotated);
            });
        }
        let (due, trigger) = due.unwrap_or_else(|| {
            let s = &self.slots[idx];
            (s.next_due.unwrap_or(self.clock.now()), s.next_trigger)
        });
        self.set_due(idx, due, trigger);
    }

    /// An account a vault listing showed consistent (its secret exists, nothing pending)
    /// and not yet due, scheduled from the listing alone: no job, so the account stays
    /// free for commands while the drift check asks Graph about it (`listing::drift_reads`).
    /// `None` when the listing is not enough (pending, missing, or due now: those go the
    /// job's way, which checks drift before a catch-up rotation).
    pub(super) fn schedule_from_listing(
        &mut self,
        idx: usize,
        listed: Listed,
    ) -> Option<OffsetDateTime> {
        let rotated = listed.rotated.filter(|_| !listed.pending)?;
        let now = self.clock.now();
        let FirstDue::At(due, trigger, rotated) =
            due_at(&self.slots[idx].managed, Some(rotated), now)
        else {
            return None;
        };
        if due <= now {
            return None;
        }
        self.slots[idx].awaiting = false;
        self.board_mut(idx, |b| b.awaiting_adoption = false);
        self.idle(idx, Some((due, trigger)), Some((None, rotated)));
        Some(rotated)
    }

    /// The account was retired: nothing scheduled, never rotated again. The first time it is
    /// found (per start) it is logged; the first time a user's request finds it (`keyturn
    /// retire` asks the running daemon to reconcile the account once it is done), the
    /// retirement is recorded as `account.retired`, with that user as actor and the reason,
    /// ticket and what was done from the secret's tags. Found by the daemon itself (start-up,
    /// the drift timer), it is only logged: the record is written when it happens (by this
    /// daemon, or by `keyturn retire` itself when no daemon ran).
    fn retire(&mut self, idx: usize, tags: &Tags, actor: &Actor) {
        self.heap.remove(idx);
        let slot = &mut self.slots[idx];
        slot.next_due = None;
        slot.failures = 0;
        slot.awaiting = false;
        let first = !std::mem::replace(&mut slot.retired, true);
        self.board_mut(idx, |b| {
            b.retired = true;
            b.awaiting_adoption = false;
            b.next_due = None;
        });
        let get = |k: &str| tags.get(k).cloned();
        if first {
            let name = &self.slots[idx].managed.account.name;
            tracing::info!(account = %name, retired_at = ?get(tag::RETIRED), "the account is retired (keyturn retire): keyturn never rotates it again; remove it from the configuration");
        }
        if matches!(actor, Actor::Daemon) || self.slots[idx].retired_recorded {
            return;
        }
        self.slots[idx].retired_recorded = true;
        // Retired before this process started: the daemon that ran then recorded it (or
        // `keyturn retire` itself, when none ran); a user's reconcile now only finds it.
        let retired_at = get(tag::RETIRED).and_then(|t| {
            OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
        });
        let started = self
            .board
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .started_at;
        if let (Some(retired_at), Some(started)) = (retired_at, started) {
            if retired_at < started {
                return;
            }
        }
        let account = &self.slots[idx].managed.account;
        let mut ev = AuditEvent::new(EventKind::AccountRetired, self.clock.now());
        ev.account = Some(account.name.clone());
        ev.user = Some(account.user.clone());
        ev.vault = Some(account.store.vault().to_owned());
        ev.secret = Some(account.secret.clone());
        ev.actor = Some(actor.clone());
        ev.trigger = Some(Trigger::Socket);
        ev.outcome = Some(Outcome::Success);
        ev.reason = get(tag::RETIRED_REASON);
        ev.ticket = get(tag::RETIRED_TICKET);
        ev.detail = Some(crate::store::retired_detail(tags));
        let audit = self.audit.clone();
        tokio::spawn(async move {
            if let Err(e) = audit.record(&ev).await {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        });
    }

    /// The account's secret does not exist and it waits for `adopt`: nothing scheduled; the
    /// first time (per start), a warning and an `account.awaiting_adoption` record.
    fn await_adoption(&mut self, idx: usize) {
        self.heap.remove(idx);
        let slot = &mut self.slots[idx];
        slot.next_due = None;
        slot.failures = 0;
        let first = !std::mem::replace(&mut slot.awaiting, true);
        self.board_mut(idx, |b| {
            b.awaiting_adoption = true;
            b.next_due = None;
        });
        if !first {
            return;
        }
        let account = &self.slots[idx].managed.account;
        let detail = format!(
            "no secret {:?} in {}: keyturn leaves the account alone until `keyturn adopt {} --reason R` (or the password is stored in the secret, or on_missing_secret = \"rotate\")",
            account.secret,
            account.store.vault(),
            account.name
        );
        tracing::warn!(account = %account.name, "{detail}");
        let mut ev = AuditEvent::new(EventKind::AccountAwaitingAdoption, self.clock.now());
        ev.account = Some(account.name.clone());
        ev.actor = Some(Actor::Daemon);
        ev.outcome = Some(Outcome::Warning);
        ev.detail = Some(detail);
        let audit = self.audit.clone();
        // The loop does not wait for the record: it is a report, not a step to order.
        tokio::spawn(async move {
            if let Err(e) = audit.record(&ev).await {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        });
    }
}

/// The deleted secret's tags when `keyturn retire` marked it (`GET /deletedsecrets/{name}`):
/// how the daemon's reconcile and `keyturn plan` learn that an account whose secret is gone was
/// retired (a live secret's own tags say it otherwise).
pub(crate) async fn retired_deleted(
    account: &protocol::Account,
) -> Result<Option<Tags>, crate::store::StoreError> {
    Ok(account
        .store
        .deleted_tags(&account.secret)
        .await?
        .filter(|t| t.contains_key(tag::RETIRED)))
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
    // (A retired account has no pending staging secret: `keyturn retire` refuses one that
    // has, so recovery has nothing to complete for it.)
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
    // Retired: the secret's latest version is marked, or the secret is gone and its deleted
    // copy is. Checked before the drift check and before a missing secret is re-created.
    if let Some(tags) = match &current {
        Some(c) => c.tag(tag::RETIRED).is_some().then(|| c.tags.clone()),
        None => match retired_deleted(account).await {
            Ok(t) => t,
            Err(source) => {
                return TaskOut::Failed(RotationError::Read {
                    account: account.name.clone(),
                    source,
                })
            }
        },
    } {
        return TaskOut::Retired(tags);
    }
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

/// What a vault listing showed of one account (`daemon::listing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Listed {
    /// The latest version of `<secret>-pending` is tagged `pending`: recovery reads it.
    pub(super) pending: bool,
    /// `<secret>`'s latest version's rotation time; `None`: the secret does not exist.
    pub(super) rotated: Option<OffsetDateTime>,
}

/// [`reconcile`] from a listing: nothing pending and no drift suggested costs no Key Vault
/// request (only Graph's user read of the drift check). A pending staging secret, or a
/// drift Graph suggests against a listing that may predate the last rotation, goes the
/// reading way, which confirms it before acting.
async fn reconcile_listed(
    engine: &Engine,
    managed: &Managed,
    request: &Request,
    listed: Listed,
    clock: &dyn Clock,
) -> TaskOut {
    let account = &managed.account;
    if listed.pending {
        return reconcile(engine, managed, request, clock).await;
    }
    // No secret: was a retired one deleted? (A marked live secret is not listed here:
    // `listing` sends it the reading way.)
    if listed.rotated.is_none() {
        match retired_deleted(account).await {
            Ok(Some(tags)) => return TaskOut::Retired(tags),
            Ok(None) => {}
            Err(source) => {
                return TaskOut::Failed(RotationError::Read {
                    account: account.name.clone(),
                    source,
                })
            }
        }
    }
    if let Some(rotated) = listed.rotated {
        match engine.drift_suspected(account, rotated).await {
            Ok(true) => return reconcile(engine, managed, request, clock).await,
            Ok(false) => {}
            Err(e) => {
                // Drift needs Graph's user read; its failure must not block scheduling.
                tracing::warn!(account = %account.name, error = %e, "drift check skipped");
            }
        }
    }
    let now = clock.now();
    match due_at(managed, listed.rotated, now) {
        FirstDue::At(due, trigger, rotated) => {
            TaskOut::Idle(Some((due, trigger)), Some((None, rotated)))
        }
        FirstDue::Missing => TaskOut::Missing,
        FirstDue::RotateMissing => missing_rotate(managed, now),
    }
}

/// `keyturn adopt`: a first rotation now. When the secret exists already, the account is
/// managed already: refused (and scheduled from it) unless `force`.
async fn adopt(
    engine: &Engine,
    managed: &Managed,
    request: &Request,
    force: bool,
    clock: &dyn Clock,
) -> TaskOut {
    let account = &managed.account;
    if !force {
        match account.store.latest(&account.secret).await {
            Ok(Some(current)) => {
                let version = current.version.clone();
                return match first_due(managed, Some(&current), clock.now()) {
                    FirstDue::At(due, trigger, rotated) => {
                        TaskOut::HasSecret(version, (due, trigger), rotated)
                    }
                    // Not reached: a secret that exists has a due time.
                    FirstDue::Missing | FirstDue::RotateMissing => TaskOut::Idle(None, None),
                };
            }
            Ok(None) => {}
            Err(source) => {
                return TaskOut::Failed(RotationError::Read {
                    account: account.name.clone(),
                    source,
                })
            }
        }
    }
    match engine.rotate(account, request).await {
        Ok(r) => TaskOut::Rotated(r),
        Err(e) => TaskOut::Failed(e),
    }
}

/// What start-up makes of an account's secret (the daemon's reconcile and `keyturn plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstDue {
    /// Due at this time (with the trigger it fires with); the password in force was set at
    /// the last time.
    At(OffsetDateTime, Trigger, OffsetDateTime),
    /// No secret, `on_missing_secret = "wait"`: awaits adoption.
    Missing,
    /// No secret, `on_missing_secret = "rotate"`: a first rotation now creates it.
    RotateMissing,
}

/// When the account is due, from the current version of `<secret>` (`None`: it does not
/// exist) and its schedule.
pub fn first_due(
    managed: &Managed,
    current: Option<&SecretRecord>,
    now: OffsetDateTime,
) -> FirstDue {
    let rotated = current.map(|c| protocol::rotated_at(c).unwrap_or(OffsetDateTime::UNIX_EPOCH));
    due_at(managed, rotated, now)
}

/// [`first_due`] from the current version's rotation time (`None`: no secret), as a vault
/// listing shows it (`keyturn plan`).
pub(crate) fn first_due_at(
    managed: &Managed,
    rotated: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> FirstDue {
    due_at(managed, rotated, now)
}

/// [`first_due`] from the current version's rotation time (`None`: no secret).
fn due_at(managed: &Managed, rotated: Option<OffsetDateTime>, now: OffsetDateTime) -> FirstDue {
    let account = &managed.account;
    match rotated {
        Some(rotated) => {
            let due = managed
                .schedule
                .next_fire_after(&account.name, rotated)
                .unwrap_or(now);
            let trigger = if due <= now {
                Trigger::CatchUp
            } else {
                Trigger::Schedule
            };
            FirstDue::At(due, trigger, rotated)
        }
        None => match managed.on_missing_secret {
            OnMissingSecret::Wait => FirstDue::Missing,
            OnMissingSecret::Rotate => FirstDue::RotateMissing,
        },
    }
}

/// [`first_due`] as the reconcile's result.
fn due_from(managed: &Managed, current: Option<SecretRecord>, now: OffsetDateTime) -> TaskOut {
    match first_due(managed, current.as_ref(), now) {
        FirstDue::At(due, trigger, rotated) => TaskOut::Idle(
            Some((due, trigger)),
            current.map(|c| (Some(c.version), rotated)),
        ),
        FirstDue::Missing => TaskOut::Missing,
        FirstDue::RotateMissing => missing_rotate(managed, now),
    }
}

/// No secret and `on_missing_secret = "rotate"`: due now.
fn missing_rotate(managed: &Managed, now: OffsetDateTime) -> TaskOut {
    let account = &managed.account;
    tracing::warn!(account = %account.name, secret = %account.secret, "the secret does not exist; on_missing_secret = \"rotate\": keyturn creates it with a first rotation");
    TaskOut::Idle(Some((now, Trigger::CatchUp)), None)
}
