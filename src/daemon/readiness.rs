//! The readiness watch: every `daemon.readiness_check_interval` (after start-up recovery),
//! the watched checks of each enabled account, one account at a time and spread over the
//! interval, so that a large fleet sends Graph a trickle rather than a burst. A result that
//! changed (or a check failing the first time it runs) is audited (`readiness.changed`),
//! and every result goes on the status board (`keyturn status`, the metric
//! `keyturn_account_ready`).
//!
//! Read-only and on the side: the watch never rotates, takes no account lock and holds up
//! no rotation. A check that could not run (Graph did not answer, throttled, no token) is
//! `unknown`: it keeps the last known result, audits nothing and is logged once per pass.
//!
//! Which checks run is the wiring's choice, handed in as a [`ReadinessProbe`]
//! (`doctor::watch::Watch`), so the daemon does not import `doctor`.

use super::board::{AccountReadiness, CheckReadiness, Readiness};
use super::{Managed, StatusBoard};
use crate::audit::{Actor, AuditEvent, AuditSink, EventKind, Outcome, ReadinessChange};
use crate::clock::Clock;
use async_trait::async_trait;
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;

/// One watched check's result, as a [`ReadinessProbe`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    /// The check's name (`user_enabled`, ... as `docs/doctor.md` lists them).
    pub check: &'static str,
    /// Ready, not ready, or unknown (could not run).
    pub readiness: Readiness,
    /// The finding, one line, naming what failed (the user, the policy, the role); never a
    /// secret.
    pub detail: String,
}

/// Runs the watched checks of one account. Read-only; a check that cannot get an answer
/// reports [`Readiness::Unknown`] rather than `NotReady`.
#[async_trait]
pub trait ReadinessProbe: Send + Sync {
    /// The checks of `account`, in a stable order.
    async fn probe(&self, account: &Managed) -> Vec<Probed>;
}

/// What the watch checks now: its interval (zero: off) and the enabled accounts. The daemon
/// sends a new one at each reload.
#[derive(Clone)]
pub(super) struct Plan {
    pub interval: Duration,
    /// Shared with the daemon's slots.
    pub accounts: Vec<Arc<Managed>>,
}

/// The first pass starts at a random moment within this long after start-up (or within
/// the interval, when that is shorter), so that daemons started together do not look
/// together.
const FIRST_PASS_MAX: Duration = Duration::from_secs(30);
/// The longest gap between two accounts' checks in a pass (a pass spreads its accounts over
/// half the interval, but a small fleet is not made to wait for hours).
const MAX_GAP: Duration = Duration::from_secs(1);

/// The gap between two accounts in a pass of `n` accounts every `interval`: half the
/// interval spread evenly, at most [`MAX_GAP`].
pub(super) fn gap(interval: Duration, n: usize) -> Duration {
    let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    (interval / 2 / n).min(MAX_GAP)
}

/// A check's last known result.
struct Known {
    ready: bool,
    since: OffsetDateTime,
}

/// The watch task's state.
pub(super) struct Watch {
    pub probe: Arc<dyn ReadinessProbe>,
    pub board: StatusBoard,
    pub audit: Arc<dyn AuditSink>,
    pub clock: Arc<dyn Clock>,
    pub plans: watch::Receiver<Plan>,
    /// By account, then by check (one entry per account: at 10,000 accounts a map keyed by
    /// account and check held 70,000 entries, 10 MB).
    known: HashMap<String, Vec<(&'static str, Known)>>,
}

impl Watch {
    pub(super) fn new(
        probe: Arc<dyn ReadinessProbe>,
        board: StatusBoard,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
        plans: watch::Receiver<Plan>,
    ) -> Self {
        Watch {
            probe,
            board,
            audit,
            clock,
            plans,
            known: HashMap::new(),
        }
    }

    /// Runs until the daemon drops its sender (or aborts the task at shutdown).
    pub(super) async fn run(mut self) {
        let mut last_pass: Option<tokio::time::Instant> = None;
        loop {
            let interval = self.plans.borrow_and_update().interval;
            if interval.is_zero() {
                // Off: forget, so that turning it on again audits what fails then.
                self.known.clear();
                last_pass = None;
                if self.plans.changed().await.is_err() {
                    return;
                }
                continue;
            }
            // A reload that changes the interval moves the next pass (from the last one).
            let at = match last_pass {
                Some(t) => t + interval,
                None => {
                    let first = interval.min(FIRST_PASS_MAX);
                    let ms = u64::try_from(first.as_millis()).unwrap_or(u64::MAX);
                    tokio::time::Instant::now()
                        + Duration::from_millis(rand::rng().random_range(0..=ms))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                changed = self.plans.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            }
            last_pass = Some(tokio::time::Instant::now());
            let plan = self.plans.borrow().clone();
            self.pass(&plan).await;
        }
    }

    /// One look at every account of `plan`.
    async fn pass(&mut self, plan: &Plan) {
        let gap = gap(plan.interval, plan.accounts.len());
        let mut unknown: Vec<String> = Vec::new();
        for m in &plan.accounts {
            if self.plans.borrow().interval.is_zero() {
                return;
            }
            let found = self.probe.probe(m).await;
            for p in found.iter().filter(|p| p.readiness == Readiness::Unknown) {
                unknown.push(format!("{} {}: {}", m.account.name, p.check, p.detail));
            }
            self.apply(m, found).await;
            tokio::time::sleep(gap).await;
        }
        // Accounts no longer watched (removed, disabled) are forgotten.
        let names: HashSet<&str> = plan
            .accounts
            .iter()
            .map(|m| m.account.name.as_str())
            .collect();
        self.known.retain(|a, _| names.contains(a.as_str()));
        if let Some(first) = unknown.first() {
            tracing::warn!(
                checks = unknown.len(),
                "readiness watch: {} check(s) could not run and keep their last result (first: {first}); the next pass tries again",
                unknown.len()
            );
        }
        // A pass allocates and frees a Graph answer per check: give the pages back.
        crate::idle::release();
    }

    /// Takes in one account's results: audits each change, updates the board.
    async fn apply(&mut self, m: &Managed, found: Vec<Probed>) {
        let now = self.clock.now();
        let name = &m.account.name;
        let mut checks = Vec::with_capacity(found.len());
        let mut known = self.known.remove(name.as_str()).unwrap_or_default();
        for p in found {
            let slot = known.iter().position(|(check, _)| *check == p.check);
            let before = slot.map(|i| (known[i].1.ready, known[i].1.since));
            let (ready, since) = match p.readiness {
                Readiness::Unknown => (before.map(|b| b.0), before.map(|b| b.1)),
                Readiness::Ready | Readiness::NotReady => {
                    let ready = p.readiness == Readiness::Ready;
                    let since = match before {
                        Some((was, since)) if was == ready => since,
                        _ => now,
                    };
                    // A change, or a check failing the first time it runs (a first pass
                    // is not audited: a fleet of ready accounts writes nothing).
                    let changed = match before {
                        Some((was, _)) => was != ready,
                        None => !ready,
                    };
                    if changed {
                        self.record(m, &p, before.map(|b| b.0), now).await;
                    }
                    let now_known = Known { ready, since };
                    match slot {
                        Some(i) => known[i].1 = now_known,
                        None => known.push((p.check, now_known)),
                    }
                    (Some(ready), Some(since))
                }
            };
            checks.push(CheckReadiness {
                check: p.check,
                state: p.readiness,
                ready,
                detail: p.detail,
                since: since.filter(|_| ready.is_some()),
            });
        }
        if !known.is_empty() {
            known.shrink_to_fit();
            self.known.insert(name.clone(), known);
        }
        let readiness = AccountReadiness {
            ready: if checks.iter().any(|c| c.ready == Some(false)) {
                Some(false)
            } else if checks.iter().any(|c| c.ready == Some(true)) {
                Some(true)
            } else {
                None
            },
            checked_at: Some(now),
            checks,
        };
        let off = self.plans.borrow().interval.is_zero();
        let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
        // A reload may have removed or disabled the account, or turned the watch off, while
        // it was checked: then its result is dropped.
        if let Some(s) = b.accounts.iter_mut().find(|s| s.name == *name) {
            if s.enabled && !off {
                s.readiness = Some(readiness);
            }
        }
    }

    /// The `readiness.changed` record of `p` (and its log line).
    async fn record(&self, m: &Managed, p: &Probed, before: Option<bool>, now: OffsetDateTime) {
        let word = |r: bool| if r { "ready" } else { "not_ready" };
        let from = before.map(word).unwrap_or("unchecked");
        let to = word(p.readiness == Readiness::Ready);
        let name = &m.account.name;
        if p.readiness == Readiness::Ready {
            tracing::info!(account = %name, check = %p.check, "readiness: {name} is ready again for {}: {}", p.check, p.detail);
        } else {
            tracing::warn!(account = %name, check = %p.check, "readiness: {name} is not ready: {} failed: {}", p.check, p.detail);
        }
        let mut ev = AuditEvent::new(EventKind::ReadinessChanged, now);
        ev.account = Some(name.clone());
        ev.user = Some(m.account.user.clone());
        ev.actor = Some(Actor::Daemon);
        ev.outcome = Some(if p.readiness == Readiness::Ready {
            Outcome::Success
        } else {
            Outcome::Warning
        });
        ev.readiness = Some(ReadinessChange {
            check: p.check.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
        });
        ev.detail = Some(format!("{}: {from} -> {to}: {}", p.check, p.detail));
        if let Err(e) = self.audit.record(&ev).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::MemorySink;
    use crate::clock::SystemClock;
    use crate::daemon::{AccountStatus, DaemonStatus};
    use crate::memory::{MemoryDirectory, MemoryVault};
    use crate::protocol::Account;
    use std::sync::Mutex;

    fn managed(name: &str) -> Managed {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Managed {
            account: Account {
                name: name.into(),
                user: format!("{name}@contoso.onmicrosoft.com"),
                secret: name.into(),
                policy: Default::default(),
                verify: false,
                expiry: None,
                store: Arc::new(MemoryVault::new(
                    "https://kv.vault.azure.net/",
                    clock.clone(),
                )),
                directory: Arc::new(MemoryDirectory::new(clock)),
            },
            schedule: crate::schedule::Schedule::new("0 3 * * MON", "UTC", Duration::ZERO).unwrap(),
            enabled: true,
            on_missing_secret: crate::config::OnMissingSecret::Wait,
        }
    }

    struct Never;
    #[async_trait]
    impl ReadinessProbe for Never {
        async fn probe(&self, _: &Managed) -> Vec<Probed> {
            Vec::new()
        }
    }

    fn found(check: &'static str, readiness: Readiness) -> Vec<Probed> {
        vec![Probed {
            check,
            readiness,
            detail: format!("{check} is {}", readiness.as_str()),
        }]
    }

    /// The watch's bookkeeping, result by result: what is audited, what the board shows.
    #[tokio::test]
    async fn only_changes_and_first_failures_are_audited_and_unknown_keeps_the_last_result() {
        let m = managed("a");
        let audit = MemorySink::default();
        let board: StatusBoard = Arc::new(Mutex::new(DaemonStatus {
            accounts: vec![AccountStatus {
                name: "a".into(),
                enabled: true,
                ..Default::default()
            }],
            ..Default::default()
        }));
        let (_tx, rx) = watch::channel(Plan {
            interval: Duration::from_secs(60),
            accounts: vec![Arc::new(m.clone())],
        });
        let mut w = Watch::new(
            Arc::new(Never),
            board.clone(),
            Arc::new(audit.clone()),
            Arc::new(SystemClock),
            rx,
        );
        let changes = || {
            audit
                .events()
                .into_iter()
                .filter_map(|e| e.readiness.map(|r| (r.check, r.from, r.to)))
                .collect::<Vec<_>>()
        };
        let shown = |check: &str| {
            let b = board.lock().unwrap();
            let r = b.accounts[0].readiness.clone().unwrap();
            let c = r.checks.iter().find(|c| c.check == check).unwrap().clone();
            (r.ready, c.state, c.ready)
        };
        let t = |c: &str, f: &str, to: &str| (c.to_owned(), f.to_owned(), to.to_owned());

        // A first pass that passes writes nothing; one that fails is audited from unchecked.
        w.apply(&m, found("x", Readiness::Ready)).await;
        w.apply(&m, found("y", Readiness::NotReady)).await;
        assert_eq!(changes(), vec![t("y", "unchecked", "not_ready")]);
        // The same result again: nothing.
        w.apply(&m, found("y", Readiness::NotReady)).await;
        assert_eq!(changes().len(), 1);
        // Unknown: nothing audited, the last known result stays.
        w.apply(&m, found("y", Readiness::Unknown)).await;
        assert_eq!(changes().len(), 1);
        assert_eq!(shown("y"), (Some(false), Readiness::Unknown, Some(false)));
        // Back to ready, then a change the other way.
        w.apply(&m, found("y", Readiness::Ready)).await;
        w.apply(&m, found("x", Readiness::NotReady)).await;
        assert_eq!(
            changes(),
            vec![
                t("y", "unchecked", "not_ready"),
                t("y", "not_ready", "ready"),
                t("x", "ready", "not_ready"),
            ]
        );
        assert_eq!(shown("x"), (Some(false), Readiness::NotReady, Some(false)));
        let e = &audit.events()[2];
        assert_eq!(e.event, EventKind::ReadinessChanged);
        assert_eq!(e.account.as_deref(), Some("a"));
        assert_eq!(e.outcome, Some(Outcome::Warning));
        assert_eq!(
            e.detail.as_deref(),
            Some("x: ready -> not_ready: x is not_ready")
        );
        // A check never known: no result on the board.
        w.apply(&m, found("z", Readiness::Unknown)).await;
        assert_eq!(shown("z"), (None, Readiness::Unknown, None));
    }

    #[test]
    fn a_pass_spreads_over_half_the_interval_at_most_a_second_apart() {
        let h6 = Duration::from_secs(6 * 3600);
        assert_eq!(gap(h6, 3), MAX_GAP);
        // 10,000 accounts every 6 h: one Graph read a second, the pass within 3 h.
        assert_eq!(gap(h6, 10_000), MAX_GAP);
        assert_eq!(gap(h6, 40_000), Duration::from_millis(270));
        assert_eq!(gap(Duration::from_secs(2), 0), MAX_GAP);
        assert_eq!(gap(Duration::from_secs(1), 4), Duration::from_millis(125));
    }
}
