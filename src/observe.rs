//! What the Azure adapters and the rate limits report as they work: each Azure request,
//! and each wait for a client-side budget (and the notification sinks, each delivery and drop). They report to an [`Observer`] the wiring hands
//! them (the daemon's `metrics::Metrics`, whose `/metrics` shows the counts), so
//! neither reaches for the metrics, and each service started in one process counts its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Told about Azure requests and paced waits.
pub trait Observer: Send + Sync {
    /// One Azure request to `service` (`keyvault`, `graph`, `entra` or `other`), answered
    /// with the HTTP `status` (`None`: no answer), after `elapsed`.
    fn request(&self, service: &'static str, status: Option<u16>, elapsed: Duration);

    /// One request waited `waited` for the client-side budget `budget` (`keyvault_write`,
    /// `keyvault_other`, `graph_write`; see `crate::limits`).
    fn paced(&self, budget: &'static str, waited: Duration);

    /// When each identity's own credential expires (Unix seconds), where known offline
    /// (`config::credential_expiries`): set at start-up and at each reload, replacing the
    /// previous set.
    fn credential_expiries(&self, _expiries: &BTreeMap<String, i64>) {}

    /// One notification delivered by the `[[notify]]` sink `sink` (`crate::notifications`).
    fn notify_delivered(&self, _sink: &str) {}

    /// One notification of the sink `sink` dropped, for `reason` (`queue_full`, `gave_up`,
    /// `rejected`, `stopped`).
    fn notify_dropped(&self, _sink: &str, _reason: &'static str) {}
    /// A 429 keyturn's pacing did not predict (someone else is using `vault`'s `budget`):
    /// keyturn's own rate for it now runs at `factor` of its share (`crate::limits`).
    fn unpredicted_throttle(&self, _budget: &'static str, _vault: &str, _factor: f64) {}

    /// The rate factor of `vault`'s `budget` as it recovers (1: the whole share).
    fn rate_factor(&self, _budget: &'static str, _vault: &str, _factor: f64) {}

    /// The append-blob copy of the audit log (`crate::audit_blob`): `pending` local records
    /// not in the blob yet, the oldest of them `lag_seconds` old (0 when none).
    fn audit_copy(&self, _pending: u64, _lag_seconds: f64) {}
}

tokio::task_local! {
    /// 429 answers the current task's Azure requests received (see [`count_throttles`]).
    static THROTTLES: std::cell::Cell<u32>;
}

/// Runs `f` and counts the HTTP 429 answers its requests received, the SDK's retries
/// included (which hide a 429 that a retry got past): the rate limits learn from them
/// that someone else is using the budget.
pub async fn count_throttles<F: std::future::Future>(f: F) -> (F::Output, u32) {
    THROTTLES
        .scope(std::cell::Cell::new(0), async move {
            let out = f.await;
            (out, THROTTLES.with(|c| c.get()))
        })
        .await
}

/// A request of the current task was answered 429 (the HTTP client calls this).
pub(crate) fn note_throttled() {
    let _ = THROTTLES.try_with(|c| c.set(c.get().saturating_add(1)));
}

/// An observer that keeps nothing: for work no `/metrics` reports on (`keyturn rotate
/// --offline`, tools, tests).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Unobserved;

impl Observer for Unobserved {
    fn request(&self, _: &'static str, _: Option<u16>, _: Duration) {}

    fn paced(&self, _: &'static str, _: Duration) {}
}

/// A shared [`Unobserved`].
pub fn unobserved() -> Arc<dyn Observer> {
    Arc::new(Unobserved)
}
