//! Requests from outside the schedule (signals, the admin socket): rotate, pause, resume,
//! reconcile and reload, with the answers sent back to the requester.

use super::jobs::Job;
use super::{Daemon, Managed, Settings, Slot};
use crate::audit::Trigger;
use crate::protocol::{Request, Rotated, Tuning};
use serde::Serialize;
use std::collections::HashMap;
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

impl Daemon {
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

    pub(super) fn command(&mut self, cmd: Command) {
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
