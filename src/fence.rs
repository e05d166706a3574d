//! Fencing by time (`docs/ha.md`): whether this process may still send a request to Azure
//! as the leader, and for how long. The leader election (`ha`) opens the fence each time a
//! lease renewal succeeds; the rate-limit decorators (`limits`) ask it before every Key Vault
//! and Graph operation, which is refused once the leader has gone `deadline` without a
//! renewal and otherwise runs under a timeout that ends before the lease could expire.
//!
//! Time here is the monotonic clock (`tokio::time::Instant`): the argument assumes only
//! that this machine's clock and Azure Storage's run at nearly the same *rate*, as
//! client-go's leader election assumes of its own. It imports nothing from keyturn.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Why a request may not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    /// This process does not hold the lease (yet, or any more).
    #[error("this keyturn is not the leader: no Azure request is sent (docs/ha.md)")]
    NotLeader,
    /// The lease has not been renewed within the deadline: the leader stops acting before
    /// another replica can take the lease over.
    #[error(
        "the leader's lease was not renewed in time: no further Azure request is sent (docs/ha.md)"
    )]
    Expired,
}

#[derive(Debug, Default)]
struct Window {
    /// Requests may start before this instant.
    acting_until: Option<Instant>,
    /// The lease may have expired from this instant on: every request must be over by then.
    lease_until: Option<Instant>,
}

/// The leader's permission to act, opened by each successful lease renewal.
#[derive(Debug, Default)]
pub struct Fence {
    window: Mutex<Window>,
}

/// What a request is allowed: it may start now and must be over within `time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// The time left before the lease could expire.
    pub time: Duration,
}

impl Fence {
    /// A closed fence: nothing may be sent until [`Fence::renewed`].
    pub fn new() -> Fence {
        Fence::default()
    }

    /// A renewal (or acquisition) sent at `sent` succeeded: the lease, `lease` long, runs at
    /// least until `sent + lease` (Azure started counting when the request reached it, after
    /// `sent`), and requests may start until `sent + deadline`.
    pub fn renewed(&self, sent: Instant, deadline: Duration, lease: Duration) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        w.acting_until = Some(sent + deadline);
        w.lease_until = Some(sent + lease);
    }

    /// The lease is lost or released: nothing more is sent.
    pub fn close(&self) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        *w = Window::default();
    }

    /// Whether a request may start at `now`, and how long it may take.
    pub fn permit_at(&self, now: Instant) -> Result<Permit, Fenced> {
        let w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        match (w.acting_until, w.lease_until) {
            (Some(acting), Some(lease)) if now < acting => Ok(Permit {
                time: lease.saturating_duration_since(now),
            }),
            (Some(_), Some(_)) => Err(Fenced::Expired),
            _ => Err(Fenced::NotLeader),
        }
    }

    /// [`Fence::permit_at`] now.
    pub fn permit(&self) -> Result<Permit, Fenced> {
        self.permit_at(Instant::now())
    }

    /// Runs `op` if the fence allows it, cut off when the lease could expire:
    /// [`Cut::Refused`] without running it when the fence is closed, [`Cut::TimedOut`] when
    /// it ran out of time (its outcome at Azure is then unknown).
    pub async fn run<T>(&self, op: impl std::future::Future<Output = T>) -> Result<T, Cut> {
        let permit = self.permit().map_err(Cut::Refused)?;
        tokio::time::timeout(permit.time, op)
            .await
            .map_err(|_| Cut::TimedOut(permit.time))
    }
}

/// Why [`Fence::run`] did not return the operation's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Not sent.
    Refused(Fenced),
    /// Sent, and cut off after this long: the outcome is unknown.
    TimedOut(Duration),
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::Refused(why) => write!(f, "not sent: {why}"),
            Cut::TimedOut(after) => write!(
                f,
                "cut off after {}ms so that it ends before the leader's lease could expire (docs/ha.md); its outcome is unknown",
                after.as_millis()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_until_renewed_then_open_until_the_deadline() {
        let f = Fence::new();
        let t0 = Instant::now();
        assert_eq!(f.permit_at(t0), Err(Fenced::NotLeader));
        f.renewed(t0, Duration::from_secs(10), Duration::from_secs(15));
        assert_eq!(
            f.permit_at(t0 + Duration::from_secs(4)),
            Ok(Permit {
                time: Duration::from_secs(11)
            })
        );
        assert_eq!(
            f.permit_at(t0 + Duration::from_secs(10)),
            Err(Fenced::Expired)
        );
        f.renewed(
            t0 + Duration::from_secs(5),
            Duration::from_secs(10),
            Duration::from_secs(15),
        );
        assert!(f.permit_at(t0 + Duration::from_secs(14)).is_ok());
        f.close();
        assert_eq!(
            f.permit_at(t0 + Duration::from_secs(6)),
            Err(Fenced::NotLeader)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_operation_is_cut_off_when_the_lease_could_expire() {
        let f = Fence::new();
        f.renewed(
            Instant::now(),
            Duration::from_secs(10),
            Duration::from_secs(15),
        );
        tokio::time::advance(Duration::from_secs(9)).await;
        let started = Instant::now();
        let r = f
            .run(tokio::time::sleep(Duration::from_secs(60)))
            .await
            .unwrap_err();
        assert_eq!(r, Cut::TimedOut(Duration::from_secs(6)));
        assert_eq!(started.elapsed(), Duration::from_secs(6));
        assert_eq!(f.run(async { 1 }).await, Err(Cut::Refused(Fenced::Expired)));
    }
}
