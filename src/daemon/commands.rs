//! Requests from outside the schedule (signals, the admin socket): rotate, pause, resume,
//! reconcile and reload, with the answers sent back to the requester.

use super::jobs::Job;
use super::{Daemon, Managed, Settings, Slot};
use crate::audit::Trigger;
use crate::protocol::{Request, Rotated, RotationError, Tuning};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;
use uuid::Uuid;

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
pub(crate) type AccountResult = (String, Result<RotationSummary, AccountFailure>);

/// The result of a pause/resume/reconcile for one account.
pub(crate) type AccountAck = (String, Result<String, AccountFailure>);

/// Why a command did not complete for one account, as sent back to a requester. The
/// `Display` text is what the admin socket shows for the account.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AccountFailure {
    /// The daemon did not carry the command out (no such account, busy, paused, …).
    #[error(transparent)]
    Refused(#[from] AccountError),
    /// The rotation or reconcile ran and failed; the engine's error with its sources
    /// (shared: a job may answer both a rotate and a reconcile requester).
    #[error(transparent)]
    Rotation(Arc<RotationError>),
}

impl From<RotationError> for AccountFailure {
    fn from(e: RotationError) -> Self {
        AccountFailure::Rotation(Arc::new(e))
    }
}

/// Why a command was not carried out for one account ([`AccountFailure::Refused`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The command named an account the configuration does not have.
    #[error("no account named {name:?} is configured")]
    NoSuchAccount {
        /// The name asked for.
        name: String,
    },
    /// The command named a tenant that no configured account is in.
    #[error("no account is configured in tenant {tenant:?}; name the tenant as an identity's tenant_id has it (its id or its domain, as written there)")]
    NoAccountInTenant {
        /// The tenant asked for.
        tenant: String,
    },
    /// A manual rotation was asked for while one of the account runs.
    #[error("a rotation of this account is already running; try again when it ends")]
    AlreadyRotating,
    /// A manual rotation was asked for a paused account.
    #[error("the account is paused; resume it first")]
    Paused,
    /// A reconcile was asked for while a rotation of the account runs.
    #[error("busy: a rotation runs now")]
    ReconcileWhileRotating,
    /// A reload removed the account while its job waited in the tenant queue.
    #[error("the account was removed")]
    Removed,
    /// A rotation was asked for and reconciling found nothing to do.
    #[error("nothing to do")]
    NothingToDo,
    /// The account has `enabled = false`: the daemon leaves it alone.
    #[error("the account is disabled (enabled = false in the configuration): keyturn leaves it alone; set enabled = true and reload to manage it")]
    Disabled,
    /// A rotation was asked for an account whose secret does not exist yet.
    #[error("the account has no secret in Key Vault yet and waits for adoption: take it over with `keyturn adopt ACCOUNT --reason R` (see docs/first-deployment.md)")]
    AwaitingAdoption,
    /// `adopt` found the secret there already: the account is managed already.
    #[error("the account's secret exists already (version {version}): it is managed already; `keyturn rotate` changes its password, `keyturn adopt --force` rotates it anyway and records an adoption")]
    AlreadyAdopted {
        /// The current version of the secret.
        version: String,
    },
    /// The pause file could not be written: the pause or resume was not applied.
    #[error("not done: {detail}")]
    PauseNotSaved {
        /// Why the file could not be written.
        detail: String,
    },
}

/// Which accounts a command is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One account by name.
    One(String),
    /// Every account in one tenant: those whose Graph identity's `tenant_id` is this
    /// (compared case-insensitively; an id and a domain of one tenant are not matched).
    Tenant(String),
    /// Every account.
    All,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::One(name) => f.write_str(name),
            Target::Tenant(tenant) => write!(f, "tenant {tenant}"),
            Target::All => f.write_str("all"),
        }
    }
}

/// A request from outside the schedule (signals, the admin socket).
pub enum Command {
    /// Rotate one account, a tenant's or all now. With `wait = false` the reply comes when
    /// the rotations are started.
    Rotate {
        target: Target,
        request: Request,
        wait: bool,
        reply: Option<oneshot::Sender<Vec<AccountResult>>>,
    },
    /// Stop (`paused = true`) or restart scheduled rotations of one account, a tenant's or
    /// all.
    Pause {
        target: Target,
        paused: bool,
        reply: Option<oneshot::Sender<Vec<AccountAck>>>,
    },
    /// `keyturn adopt`: a first rotation of one account, whose secret does not exist yet
    /// (or, with `force`, does).
    Adopt {
        account: String,
        request: Request,
        force: bool,
        reply: Option<oneshot::Sender<Vec<AccountResult>>>,
    },
    /// Run recovery and the drift check now.
    Reconcile {
        target: Target,
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

impl Daemon {
    /// The accounts a command is for: the one named (refused when it is disabled), or every
    /// enabled one of a tenant or of all.
    fn targets(&self, target: &Target) -> Result<Vec<usize>, AccountError> {
        match target {
            Target::One(name) => {
                let idx = *self
                    .index
                    .get(name)
                    .ok_or_else(|| AccountError::NoSuchAccount { name: name.clone() })?;
                if !self.slots[idx].managed.enabled {
                    return Err(AccountError::Disabled);
                }
                Ok(vec![idx])
            }
            Target::Tenant(tenant) => {
                let found: Vec<usize> = (0..self.slots.len())
                    .filter(|i| {
                        self.slots[*i]
                            .managed
                            .account
                            .directory
                            .tenant()
                            .is_some_and(|t| t.eq_ignore_ascii_case(tenant))
                    })
                    .collect();
                if found.is_empty() {
                    Err(AccountError::NoAccountInTenant {
                        tenant: tenant.clone(),
                    })
                } else {
                    Ok(found
                        .into_iter()
                        .filter(|i| self.slots[*i].managed.enabled)
                        .collect())
                }
            }
            Target::All => Ok((0..self.slots.len())
                .filter(|i| self.slots[*i].managed.enabled)
                .collect()),
        }
    }

    pub(super) fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Rotate {
                target,
                request,
                wait,
                reply,
            } => {
                let targets = match self.targets(&target) {
                    Ok(t) => t,
                    Err(e) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(vec![(target.to_string(), Err(e.into()))]);
                        }
                        return;
                    }
                };
                let mut immediate = Vec::new();
                let mut waits = Vec::new();
                for idx in targets {
                    let name = self.slots[idx].name().to_owned();
                    if self.slots[idx].busy {
                        immediate.push((name, Err(AccountError::AlreadyRotating.into())));
                        continue;
                    }
                    if self.slots[idx].paused {
                        immediate.push((name, Err(AccountError::Paused.into())));
                        continue;
                    }
                    if self.slots[idx].awaiting {
                        immediate.push((name, Err(AccountError::AwaitingAdoption.into())));
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
                target,
                paused,
                reply,
            } => {
                let acks = match self.targets(&target) {
                    Err(e) => vec![(target.to_string(), Err(e.into()))],
                    Ok(targets) => match self.save_pauses(&targets, paused) {
                        Err(e) => targets
                            .iter()
                            .map(|idx| (self.slots[*idx].name().to_owned(), Err(e.clone().into())))
                            .collect(),
                        Ok(()) => targets
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
                    },
                };
                if let Some(reply) = reply {
                    let _ = reply.send(acks);
                }
            }
            Command::Adopt {
                account,
                request,
                force,
                reply,
            } => {
                // (A named account is one target.)
                let answer = self.targets(&Target::One(account.clone())).and_then(|t| {
                    let idx = t
                        .first()
                        .copied()
                        .ok_or_else(|| AccountError::NoSuchAccount {
                            name: account.clone(),
                        })?;
                    if self.slots[idx].busy {
                        Err(AccountError::AlreadyRotating)
                    } else if self.slots[idx].paused {
                        Err(AccountError::Paused)
                    } else {
                        Ok(idx)
                    }
                });
                match answer {
                    Err(e) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(vec![(account, Err(e.into()))]);
                        }
                    }
                    Ok(idx) => {
                        let (tx, rx) = oneshot::channel();
                        let request = Request {
                            rotation_id: Some(Uuid::new_v4()),
                            ..request
                        };
                        self.spawn(idx, Job::Adopt { force }, request, Some(tx), None);
                        reply_when_done(reply, Vec::new(), vec![rx]);
                    }
                }
            }
            Command::Reconcile {
                target,
                request,
                reply,
            } => {
                let targets = match self.targets(&target) {
                    Ok(t) => t,
                    Err(e) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(vec![(target.to_string(), Err(e.into()))]);
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
                            Err(AccountError::ReconcileWhileRotating.into()),
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
                        || (new.enabled && !old.enabled)
                        || old.on_missing_secret != new.on_missing_secret
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
        if removed > 0 {
            // A removed account's pause goes with it.
            self.save_pauses_or_warn();
        }
        for idx in fresh {
            if !self.slots[idx].managed.enabled {
                continue;
            }
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
}

impl Daemon {
    /// Writes the pause file as it is to be once `targets` are paused (or resumed); the
    /// pause or resume is applied only when that succeeded, so the file and the daemon agree.
    fn save_pauses(&self, targets: &[usize], paused: bool) -> Result<(), AccountError> {
        let Some(file) = &self.pauses else {
            return Ok(());
        };
        let mut names = self.paused_names();
        for idx in targets {
            let name = self.slots[*idx].name().to_owned();
            if paused {
                names.insert(name);
            } else {
                names.remove(&name);
            }
        }
        file.save(&names).map_err(|e| AccountError::PauseNotSaved {
            detail: e.to_string(),
        })
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

#[cfg(test)]
mod tests {
    use super::AccountError;

    #[test]
    fn account_errors_read_as_before() {
        for (e, text) in [
            (
                AccountError::NoSuchAccount { name: "x".into() },
                "no account named \"x\" is configured",
            ),
            (
                AccountError::AlreadyRotating,
                "a rotation of this account is already running; try again when it ends",
            ),
            (
                AccountError::Paused,
                "the account is paused; resume it first",
            ),
            (
                AccountError::ReconcileWhileRotating,
                "busy: a rotation runs now",
            ),
            (AccountError::Removed, "the account was removed"),
            (
                AccountError::NoAccountInTenant {
                    tenant: "fabrikam.com".into(),
                },
                "no account is configured in tenant \"fabrikam.com\"; name the tenant as an identity's tenant_id has it (its id or its domain, as written there)",
            ),
            (AccountError::NothingToDo, "nothing to do"),
        ] {
            assert_eq!(e.to_string(), text);
        }
    }
}
