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
