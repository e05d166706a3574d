//! The daemon's handling of a [`Command`]: the accounts it targets, each command's effect on
//! them (rotate, adopt, pause, resume, reconcile, reload) and its answer.

use super::{AccountAck, AccountError, Command, RotationSummary, Target};
use crate::audit::Trigger;
use crate::daemon::jobs::Job;
use crate::daemon::{Daemon, Managed, Settings, Slot};
use crate::protocol::Request;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;
use uuid::Uuid;

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

    pub(in crate::daemon) fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Rotate {
                target,
                request,
                wait,
                reply,
            } => {
                let targets = match self.targets(&target) {
                    Ok(t) => t,
                    Err(e) => return refuse(reply, &target, e),
                };
                let mut immediate = Vec::new();
                let mut waits = Vec::new();
                for idx in targets {
                    let name = self.slots[idx].name().to_owned();
                    if self.slots[idx].busy {
                        immediate.push((name, Err(AccountError::AlreadyRotating.into())));
                        continue;
                    }
                    if self.slots[idx].retired {
                        immediate.push((name, Err(AccountError::Retired.into())));
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
                    } else if self.slots[idx].retired {
                        Err(AccountError::Retired)
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
                            adopt: true,
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
                    Err(e) => return refuse(reply, &target, e),
                };
                let mut immediate = Vec::new();
                let mut idle = Vec::new();
                for idx in targets {
                    if self.slots[idx].busy {
                        immediate.push((
                            self.slots[idx].name().to_owned(),
                            Err(AccountError::ReconcileWhileRotating.into()),
                        ));
                    } else {
                        idle.push(idx);
                    }
                }
                if idle.len() > 1 {
                    // Several accounts: their vaults listed (25 secrets a request, no values)
                    // as start-up does, then each reconciled from its listing.
                    let lists = self.vault_lists(&idle);
                    let pending = ListedReconcile {
                        request,
                        reply,
                        immediate,
                    };
                    self.command_listings
                        .spawn(async move { (crate::daemon::listing::run(lists).await, pending) });
                    return;
                }
                let mut waits = Vec::new();
                for idx in idle {
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
                    s.managed = Arc::new(m);
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
                self.spawn_reconcile(idx, Trigger::Recovery);
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
/// One account's answer (`AccountResult` when `T` is a rotation's summary, `AccountAck`
/// when it is a text).
type Answer<T> = (String, Result<T, super::AccountFailure>);

/// Answers a command refused as a whole: its target names no account it may act on.
fn refuse<T>(reply: Option<oneshot::Sender<Vec<Answer<T>>>>, target: &Target, e: AccountError) {
    if let Some(reply) = reply {
        let _ = reply.send(vec![(target.to_string(), Err(e.into()))]);
    }
}

/// A `reconcile` command of several accounts while their vaults are listed.
pub(crate) struct ListedReconcile {
    /// The command's request (who asked, why).
    request: Request,
    /// Where its answer goes.
    reply: Option<oneshot::Sender<Vec<AccountAck>>>,
    /// The answers known before the listing (accounts that were busy).
    immediate: Vec<AccountAck>,
}

impl Daemon {
    /// Reconciles each account of a `reconcile` command from its vault's listing: one that
    /// changed since (a job ended, another vault or secret) or whose vault could not be
    /// listed by reading, one busy now refused as busy, one a reload removed left out.
    pub(in crate::daemon) fn reconcile_from_listing(
        &mut self,
        outcome: crate::daemon::listing::Outcome,
        pending: ListedReconcile,
    ) {
        let ListedReconcile {
            request,
            reply,
            mut immediate,
        } = pending;
        let mut waits = Vec::new();
        for (entry, listed) in outcome {
            let Some(&idx) = self.index.get(&entry.name) else {
                continue;
            };
            if self.slots[idx].busy {
                immediate.push((
                    entry.name.clone(),
                    Err(AccountError::ReconcileWhileRotating.into()),
                ));
                continue;
            }
            let job = match listed {
                Some(listed) if self.still_as_listed(idx, &entry) => Job::ReconcileListed(listed),
                _ => Job::Reconcile,
            };
            let (tx, rx) = oneshot::channel();
            self.spawn(idx, job, request.clone(), None, Some(tx));
            waits.push(rx);
        }
        reply_when_done(reply, immediate, waits);
    }
}

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
