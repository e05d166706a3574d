//! `[ha]`: two or more replicas, one leader, elected on an Azure Blob Storage lease
//! (`docs/ha.md`). `lease.rs` speaks to the blob through the official SDK; [`Elector`]
//! keeps this replica's role: a standby tries to take the lease every third of its
//! duration, the leader renews it as often and opens the [`Fence`] with each renewal; when
//! it has gone the deadline (two thirds of the lease) without one, the fence closes (no
//! Azure request is sent any more) and [`Elector::keep`] returns. The wiring (`service`)
//! runs the daemon only while this replica leads, and stops the process when it loses the
//! lease.

mod lease;

use crate::audit::{Actor, AuditEvent, AuditSink, EventKind, Outcome};
use crate::azure::{Http, SetupError};
use crate::clock::Clock;
use crate::config::{HaConfig, NetworkConfig};
use crate::daemon::{HaStatus, StatusBoard};
use crate::fence::Fence;
use azure_core::credentials::TokenCredential;
use lease::{BlobLease, LeaseError};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How soon a failed renewal is tried again (well inside the deadline).
const RETRY_RENEWAL: Duration = Duration::from_secs(1);

/// The exit status of `keyturn run` when this replica lost the lease: 75 (`EX_TEMPFAIL`),
/// so that systemd or Kubernetes starts it again, as a standby.
pub const EXIT_LOST_LEADERSHIP: i32 = 75;

/// This replica took the lease.
#[derive(Debug, Clone, Copy)]
pub struct Leading {
    /// The lease had run out under another holder (or was broken), rather than being free
    /// (first start, or released at a graceful stop): wait the takeover delay before acting.
    pub took_over: bool,
    /// When the acquisition was sent: the lease runs at least `lease_duration` from here.
    since: Instant,
}

/// This replica in the leader election.
pub struct Elector {
    lease: BlobLease,
    cfg: HaConfig,
    /// This replica's name in the blob's metadata: host name and pid.
    me: String,
    fence: Arc<Fence>,
    board: StatusBoard,
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
}

/// This replica as the blob's metadata records it: the host name (a pod's name on
/// Kubernetes) and the process id.
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host} pid {}", std::process::id())
}

/// The takeover delay a new leader waits before recovery when the old one's lease ran out:
/// the longest an Azure request of the old leader can have stayed in flight
/// (`network.timeout`, the longest any request is allowed), or `daemon.unclean_start_delay`
/// if that is longer.
pub fn takeover_delay(net: &NetworkConfig, unclean_start_delay: Duration) -> Duration {
    net.timeout.max(unclean_start_delay)
}

impl Elector {
    /// The elector for `cfg`, its blob reached through `http` with `credential`; it opens and
    /// closes `fence` and writes this replica's role on `board`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &HaConfig,
        credential: Arc<dyn TokenCredential>,
        http: &Http,
        net: &NetworkConfig,
        fence: Arc<Fence>,
        board: StatusBoard,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
    ) -> Result<Elector, SetupError> {
        let url = crate::config::lease_url_problem(&cfg.lease_url).map_err(|detail| {
            SetupError::Identity {
                identity: cfg.identity.clone(),
                detail: format!("ha.lease_url: {detail}"),
                source: None,
            }
        })?;
        let seconds = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(60);
        let lease = BlobLease::new(url, credential, http, net, seconds)?;
        let me = holder_name();
        let e = Elector {
            lease,
            cfg: cfg.clone(),
            me,
            fence,
            board,
            audit,
            clock,
        };
        e.set_role(HaStatus::STANDBY, None);
        Ok(e)
    }

    /// This replica's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    fn set_role(&self, role: &'static str, leader: Option<String>) {
        let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
        b.ha = Some(HaStatus {
            role,
            me: self.me.clone(),
            leader,
            lease_url: self.cfg.lease_url.clone(),
        });
    }

    async fn audit(&self, kind: EventKind, outcome: Outcome, detail: String) {
        let mut ev = AuditEvent::new(kind, self.clock.now());
        ev.actor = Some(Actor::Daemon);
        ev.outcome = Some(outcome);
        ev.detail = Some(detail);
        if let Err(e) = self.audit.record(&ev).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Waits as a standby until this replica takes the lease.
    pub async fn lead(&self) -> Leading {
        let every = self.cfg.renew_every();
        let mut logged: Option<Option<String>> = None;
        loop {
            let free = match tokio::time::timeout(every, self.lease.look()).await {
                Ok(Ok(seen)) => {
                    if logged.as_ref() != Some(&seen.holder) {
                        tracing::info!(
                            leader = seen.holder.as_deref().unwrap_or("none"),
                            "standby: another replica leads"
                        );
                        crate::notify::status(&format!(
                            "standby; leader: {}",
                            seen.holder.as_deref().unwrap_or("none")
                        ));
                        logged = Some(seen.holder.clone());
                    }
                    self.set_role(HaStatus::STANDBY, seen.holder.clone());
                    seen.free
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "standby: cannot read the lease blob; trying again");
                    false
                }
                Err(_) => {
                    tracing::warn!(timeout = ?every, "standby: reading the lease blob timed out; trying again");
                    false
                }
            };
            let sent = Instant::now();
            match tokio::time::timeout(every, self.lease.acquire()).await {
                Ok(Ok(true)) => {
                    self.fence
                        .renewed(sent, self.cfg.deadline(), self.cfg.lease_duration);
                    if let Err(e) = self.lease.record_holder(&self.me).await {
                        tracing::warn!(error = %e, "cannot record this replica as the holder in the lease blob's metadata; standbys show no leader name");
                    }
                    let detail = format!(
                        "{} leads (lease {}, {}s){}",
                        self.me,
                        self.cfg.lease_url,
                        self.cfg.lease_duration.as_secs(),
                        if free {
                            ""
                        } else {
                            "; the previous holder's lease ran out: waiting the takeover delay before recovery"
                        }
                    );
                    tracing::info!(holder = %self.me, "took the lease: this replica leads");
                    crate::notify::status(&format!("leader ({})", self.me));
                    // Recorded before this replica says it leads or acts.
                    self.audit(EventKind::HaAcquired, Outcome::Success, detail)
                        .await;
                    self.set_role(HaStatus::LEADER, Some(self.me.clone()));
                    return Leading {
                        took_over: !free,
                        since: sent,
                    };
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "standby: cannot take the lease; trying again")
                }
                Err(_) => {
                    tracing::warn!(timeout = ?every, "standby: taking the lease timed out; trying again")
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Renews the lease every third of its duration until it is lost; then closes the fence,
    /// records `ha.lost` and returns why. Started right after [`Elector::lead`].
    pub async fn keep(&self, leading: &Leading) -> String {
        let every = self.cfg.renew_every();
        let deadline = self.cfg.deadline();
        // `lead` opened the fence with the acquisition; count from it.
        let mut last_ok = leading.since;
        let mut failed = false;
        let why = loop {
            let acting_until = last_ok + deadline;
            let next = if failed {
                Instant::now() + RETRY_RENEWAL
            } else {
                last_ok + every
            };
            tokio::time::sleep_until(next.min(acting_until)).await;
            let now = Instant::now();
            if now >= acting_until {
                break format!(
                    "the lease was not renewed for {}s (the deadline; the lease is {}s)",
                    deadline.as_secs(),
                    self.cfg.lease_duration.as_secs()
                );
            }
            match tokio::time::timeout(acting_until - now, self.lease.renew()).await {
                Ok(Ok(())) => {
                    self.fence.renewed(now, deadline, self.cfg.lease_duration);
                    last_ok = now;
                    failed = false;
                }
                Ok(Err(LeaseError::Lost(d))) => break d,
                Ok(Err(LeaseError::Failed(d))) => {
                    tracing::warn!(error = %d, "cannot renew the lease; trying again before the deadline");
                    failed = true;
                }
                Err(_) => failed = true,
            }
        };
        self.fence.close();
        self.set_role(HaStatus::STANDBY, None);
        tracing::error!(reason = %why, "lost the lease: this replica stops acting and exits");
        crate::notify::status("lost the lease; stopping");
        self.audit(
            EventKind::HaLost,
            Outcome::Failure,
            format!("{} stops acting: {why}", self.me),
        )
        .await;
        why
    }

    /// Gives the lease up at a graceful stop (nothing is in flight any more), so that a
    /// standby takes over at once.
    pub async fn release(&self) {
        self.fence.close();
        let every = self.cfg.renew_every();
        match tokio::time::timeout(every, self.lease.release()).await {
            Ok(Ok(())) => {
                self.set_role(HaStatus::STANDBY, None);
                self.audit(
                    EventKind::HaReleased,
                    Outcome::Success,
                    format!("{} released the lease", self.me),
                )
                .await;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot release the lease; a standby takes over when it runs out")
            }
            Err(_) => tracing::warn!(
                "releasing the lease timed out; a standby takes over when it runs out"
            ),
        }
    }
}
