//! Metrics and health over HTTP (off by default; loopback when on): `/metrics` in the
//! Prometheus text format (`prometheus-client`), `/healthz` (the process and its main loop
//! are alive) and `/readyz` (start-up recovery is done, or it is an `[ha]` standby, and it is
//! not stopping).
//!
//! Azure requests and paced waits are counted in a [`Metrics`] the wiring creates and hands
//! to the Azure client and the rate limits as their [`Observer`]; `/metrics` reads the same
//! handle. No counter is global, so each service in one process counts its own.

use crate::audit::AuditSink;
use crate::daemon::{DaemonStatus, StatusBoard};
use crate::observe::Observer;
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceStatus {
    service: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabel {
    account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountCheck {
    account: String,
    check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountOutcome {
    account: String,
    outcome: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkReason {
    sink: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabel {
    budget: String,
}

/// One vault's (or Graph app's) budget, for the adaptive back-off.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VaultBudget {
    service: String,
    vault: String,
    budget: String,
}

impl VaultBudget {
    fn new(budget: &str, vault: &str) -> Self {
        VaultBudget {
            service: if budget.starts_with("graph") {
                "graph"
            } else {
                "keyvault"
            }
            .into(),
            vault: vault.into(),
            budget: budget.into(),
        }
    }
}

/// The counters of one running service, handed by the wiring to its Azure client and rate
/// limits (as their [`Observer`]) and read by its `/metrics`: Azure requests, paced waits,
/// connections closed early. Each service started in one process has its own.
pub(crate) struct Metrics {
    /// Azure requests by service and HTTP status.
    requests: Family<ServiceStatus, Counter>,
    /// Azure answers with HTTP 429, by service.
    throttled: Family<ServiceLabel, Counter>,
    /// Azure request latency by service.
    latency: Family<ServiceLabel, Histogram, fn() -> Histogram>,
    /// Requests that waited for a client-side budget, and how long in all.
    paced: Family<BudgetLabel, Counter>,
    paced_seconds: Family<BudgetLabel, Counter<f64, AtomicU64>>,
    /// Connections closed to make room for newer ones (see [`serve`]).
    evicted: Counter,
    /// 429s keyturn's pacing did not predict, by vault and budget.
    unpredicted: Family<VaultBudget, Counter>,
    /// The adaptive back-off's rate factor, by vault and budget (1: the whole share).
    rate_factor: Family<VaultBudget, Gauge<f64, AtomicU64>>,
    /// When each identity's own credential expires (Unix seconds), where known offline.
    credential_expiry: std::sync::Mutex<std::collections::BTreeMap<String, i64>>,
    /// Notifications delivered, by sink.
    notify_delivered: Family<SinkLabel, Counter>,
    /// Notifications dropped, by sink and reason.
    notify_dropped: Family<SinkReason, Counter>,
    /// The append-blob copy of the audit log: records not copied yet and the age of the
    /// oldest; `None` without `[daemon.audit_blob]`.
    audit_copy: std::sync::Mutex<Option<(u64, f64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            throttled: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            paced: Family::default(),
            paced_seconds: Family::default(),
            evicted: Counter::default(),
            unpredicted: Family::default(),
            rate_factor: Family::default(),
            credential_expiry: Default::default(),
            notify_delivered: Family::default(),
            notify_dropped: Family::default(),
            audit_copy: Default::default(),
        }
    }
}

impl Metrics {
    /// New counters, all at zero.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }
}

impl Observer for Metrics {
    fn request(&self, service: &'static str, status: Option<u16>, elapsed: Duration) {
        let status = status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "none".into());
        if status == "429" {
            self.throttled
                .get_or_create(&ServiceLabel {
                    service: service.into(),
                })
                .inc();
        }
        self.requests
            .get_or_create(&ServiceStatus {
                service: service.into(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&ServiceLabel {
                service: service.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// `budget` is `keyvault_write`, `keyvault_other`, `keyvault_subscription` or
    /// `graph_write` (see `crate::limits`).
    fn paced(&self, budget: &'static str, waited: Duration) {
        let label = BudgetLabel {
            budget: budget.into(),
        };
        self.paced.get_or_create(&label).inc();
        self.paced_seconds
            .get_or_create(&label)
            .inc_by(waited.as_secs_f64());
    }

    fn unpredicted_throttle(&self, budget: &'static str, vault: &str, factor: f64) {
        let label = VaultBudget::new(budget, vault);
        self.unpredicted.get_or_create(&label).inc();
        self.rate_factor.get_or_create(&label).set(factor);
    }

    fn rate_factor(&self, budget: &'static str, vault: &str, factor: f64) {
        self.rate_factor
            .get_or_create(&VaultBudget::new(budget, vault))
            .set(factor);
    }

    fn credential_expiries(&self, expiries: &std::collections::BTreeMap<String, i64>) {
        *self
            .credential_expiry
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = expiries.clone();
    }

    fn notify_delivered(&self, sink: &str) {
        self.notify_delivered
            .get_or_create(&SinkLabel { sink: sink.into() })
            .inc();
    }

    fn audit_copy(&self, pending: u64, lag_seconds: f64) {
        *self.audit_copy.lock().unwrap_or_else(|e| e.into_inner()) = Some((pending, lag_seconds));
    }

    fn notify_dropped(&self, sink: &str, reason: &'static str) {
        self.notify_dropped
            .get_or_create(&SinkReason {
                sink: sink.into(),
                reason: reason.into(),
            })
            .inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityLabel {
    identity: String,
}

/// The Prometheus text for the daemon's state now and the counters in `metrics`.
pub(crate) fn render(
    metrics: &Metrics,
    status: &DaemonStatus,
    now: time::OffsetDateTime,
) -> String {
    let mut reg = Registry::with_prefix("keyturn");
    let rotations = Family::<AccountOutcome, Counter>::default();
    let last_success = Family::<AccountLabel, Gauge<f64, AtomicU64>>::default();
    let secret_age = Family::<AccountLabel, Gauge<f64, AtomicU64>>::default();
    let next = Family::<AccountLabel, Gauge<f64, AtomicU64>>::default();
    let pending = Family::<AccountLabel, Gauge>::default();
    let paused = Family::<AccountLabel, Gauge>::default();
    let awaiting = Family::<AccountLabel, Gauge>::default();
    let enabled = Family::<AccountLabel, Gauge>::default();
    let failures = Family::<AccountLabel, Gauge>::default();
    let account_ready = Family::<AccountCheck, Gauge>::default();
    let ts = |t: time::OffsetDateTime| t.unix_timestamp_nanos() as f64 / 1e9;
    for a in &status.accounts {
        let l = AccountLabel {
            account: a.name.clone(),
        };
        for (outcome, n) in &a.counts {
            rotations
                .get_or_create(&AccountOutcome {
                    account: a.name.clone(),
                    outcome: outcome.clone(),
                })
                .inc_by(*n);
        }
        if let Some(t) = a.last_success {
            last_success.get_or_create(&l).set(ts(t));
        }
        if let Some(t) = a.rotated_at {
            secret_age
                .get_or_create(&l)
                .set((now - t).as_seconds_f64().max(0.0));
        }
        if let Some(t) = a.next_due {
            next.get_or_create(&l).set(ts(t));
        }
        pending.get_or_create(&l).set(a.pending as i64);
        paused.get_or_create(&l).set(a.paused as i64);
        awaiting.get_or_create(&l).set(a.awaiting_adoption as i64);
        enabled.get_or_create(&l).set(a.enabled as i64);
        failures.get_or_create(&l).set(a.failures as i64);
        // The last known result of each watched check; a check never known (it could not
        // run yet) has no series rather than a guess.
        for c in a.readiness.iter().flat_map(|r| &r.checks) {
            if let Some(ready) = c.ready {
                account_ready
                    .get_or_create(&AccountCheck {
                        account: a.name.clone(),
                        check: c.check.to_owned(),
                    })
                    .set(ready as i64);
            }
        }
    }
    reg.register(
        "rotations",
        "Rotations since start, by account and outcome",
        rotations,
    );
    reg.register(
        "last_success_timestamp_seconds",
        "When the account's last rotation succeeded",
        last_success,
    );
    reg.register(
        "secret_age_seconds",
        "Age of the password in force (since keyturn-rotated-at)",
        secret_age,
    );
    reg.register(
        "next_rotation_timestamp_seconds",
        "When the account is next due",
        next,
    );
    reg.register(
        "pending",
        "1 while a password waits in the staging secret, tagged pending",
        pending,
    );
    reg.register(
        "paused",
        "1 while scheduled rotations of the account are paused",
        paused,
    );
    reg.register(
        "awaiting_adoption",
        "1 while the account has no secret in Key Vault and waits for keyturn adopt",
        awaiting,
    );
    reg.register(
        "enabled",
        "0 for an account with enabled = false, which keyturn leaves alone",
        enabled,
    );
    reg.register(
        "consecutive_failures",
        "Failed attempts since the last success",
        failures,
    );
    reg.register(
        "account_ready",
        "The readiness watch's last known result of each check: 1 ready, 0 not ready",
        account_ready,
    );
    if let Some(a) = &status.audit {
        let writable = Gauge::<i64>::default();
        writable.set(a.writable as i64);
        reg.register(
            "audit_writable",
            "1 while audit records can be written; 0: rotations are refused (fail closed)",
            writable,
        );
        let refused = Counter::<u64>::default();
        refused.inc_by(a.refused);
        reg.register(
            "audit_refused_records",
            "Audit records refused since writing began failing",
            refused,
        );
    }
    let expiry = Family::<IdentityLabel, Gauge>::default();
    for (identity, at) in metrics
        .credential_expiry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        expiry
            .get_or_create(&IdentityLabel {
                identity: identity.clone(),
            })
            .set(*at);
    }
    reg.register(
        "identity_credential_expiry_timestamp_seconds",
        "When the identity's own credential expires: a client certificate's notAfter, a client secret's declared secret_expires",
        expiry,
    );
    let ready = Gauge::<i64>::default();
    ready.set((status.ready && !status.stopping) as i64);
    reg.register(
        "ready",
        "1 once start-up recovery is done, 0 while stopping",
        ready,
    );
    if let Some(ha) = &status.ha {
        let leader = Gauge::<i64>::default();
        leader.set(ha.leads() as i64);
        reg.register(
            "leader",
            "With [ha]: 1 while this replica holds the lease and acts, 0 on a standby",
            leader,
        );
    }
    let copy = *metrics.audit_copy.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((pending, lag)) = copy {
        let p = Gauge::<i64>::default();
        p.set(i64::try_from(pending).unwrap_or(i64::MAX));
        reg.register(
            "audit_copy_pending_records",
            "With [daemon.audit_blob]: audit records in the local log not yet in the append blob",
            p,
        );
        let l = Gauge::<f64, AtomicU64>::default();
        l.set(lag);
        reg.register(
            "audit_copy_lag_seconds",
            "With [daemon.audit_blob]: how old the oldest audit record not yet in the append blob is (0: none)",
            l,
        );
    }
    reg.register(
        "azure_requests",
        "Azure HTTP requests by service and status (none: no answer)",
        metrics.requests.clone(),
    );
    reg.register(
        "azure_throttled",
        "Azure answers with HTTP 429, by service",
        metrics.throttled.clone(),
    );
    reg.register(
        "azure_request_duration_seconds",
        "Azure request latency by service",
        metrics.latency.clone(),
    );
    reg.register(
        "unpredicted_throttles",
        "Azure 429s keyturn's own pacing did not predict (another client uses the budget), by service, vault and budget",
        metrics.unpredicted.clone(),
    );
    reg.register(
        "pacing_rate_factor",
        "keyturn's rate for a budget after unpredicted 429s, as a fraction of its share (adaptive back-off; 1: the whole share)",
        metrics.rate_factor.clone(),
    );
    reg.register(
        "paced_requests",
        "Azure requests that waited for keyturn's own rate limit ([limits]), by budget",
        metrics.paced.clone(),
    );
    reg.register(
        "paced_wait_seconds",
        "Time Azure requests spent waiting for keyturn's own rate limit, by budget",
        metrics.paced_seconds.clone(),
    );
    reg.register(
        "notify_delivered",
        "Notifications ([[notify]]) delivered, by sink",
        metrics.notify_delivered.clone(),
    );
    reg.register(
        "notify_dropped",
        "Notifications ([[notify]]) dropped, by sink and reason (queue_full, gave_up, rejected, stopped)",
        metrics.notify_dropped.clone(),
    );
    reg.register(
        "metrics_connections_closed_early",
        "Connections to this listener closed to make room for newer ones (metrics.max_connections)",
        metrics.evicted.clone(),
    );
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

fn answer(status: u16, content_type: &str, body: String) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn route(
    path: &str,
    metrics: &Metrics,
    board: &StatusBoard,
    audit: &dyn AuditSink,
    heartbeat_limit: Option<Duration>,
) -> hyper::Response<Full<Bytes>> {
    if path == "/metrics" {
        let mut status = board.lock().unwrap_or_else(|e| e.into_inner()).clone();
        status.audit = audit.health();
        return answer(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(metrics, &status, time::OffsetDateTime::now_utc()),
        );
    }
    // Probes read the three fields they need under the lock; they never copy the accounts.
    let (heartbeat, ready, stopping) = {
        let s = board.lock().unwrap_or_else(|e| e.into_inner());
        // A standby is ready: it answers `status`, and Kubernetes keeps it in the rotation.
        (s.heartbeat, s.ready || s.standby().is_some(), s.stopping)
    };
    match path {
        "/healthz" => {
            let stale = match (heartbeat_limit, heartbeat) {
                (Some(limit), Some(beat)) => beat.elapsed() > limit,
                _ => false,
            };
            if stale {
                answer(
                    503,
                    "text/plain",
                    "the main loop has not run recently\n".into(),
                )
            } else if !audit.is_writable() {
                let why = audit
                    .health()
                    .and_then(|a| a.last_error)
                    .unwrap_or_default();
                answer(
                    503,
                    "text/plain",
                    format!("the audit log cannot be written ({why}): rotations are refused until it can\n"),
                )
            } else {
                answer(200, "text/plain", "ok\n".into())
            }
        }
        "/readyz" => {
            if ready && !stopping {
                answer(200, "text/plain", "ready\n".into())
            } else if stopping {
                answer(503, "text/plain", "stopping\n".into())
            } else {
                answer(503, "text/plain", "starting: recovery is running\n".into())
            }
        }
        _ => answer(
            404,
            "text/plain",
            "not found: /metrics, /healthz, /readyz\n".into(),
        ),
    }
}

/// How long a client has to send a request's headers (also the longest a kept-alive
/// connection may sit idle between requests).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one connection.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// The connections being served, oldest first, each with the means to close it.
#[derive(Default)]
struct Held {
    next_id: u64,
    conns: std::collections::VecDeque<(u64, tokio::sync::oneshot::Sender<()>)>,
}

/// Serves `metrics`, the board's state and health on `listener` until `shutdown` completes.
///
/// At most `max_connections` connections are held: a new one beyond that closes the
/// oldest, so idle or slow clients cannot lock out the scraper or a health probe, nor take
/// the process's file descriptors (the admin socket needs some). Each connection has
/// [`HEADER_TIMEOUT`] to send its request headers and lives at most 30 s. A failed accept
/// (out of file descriptors) is logged and retried after a pause ([`crate::accept`]).
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    board: StatusBoard,
    audit: Arc<dyn AuditSink>,
    heartbeat_limit: Option<Duration>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let max_connections = max_connections.max(1);
    let held = Arc::new(std::sync::Mutex::new(Held::default()));
    let mut backoff = crate::accept::Backoff::new("metrics");
    let mut evicted_unreported = 0u64;
    let mut last_eviction_warning: Option<Instant> = None;
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => match a {
                Ok(a) => {
                    backoff.succeeded();
                    a
                }
                Err(e) => {
                    backoff.failed(&e).await;
                    continue;
                }
            },
        };
        let (id, closed) = {
            let mut h = held.lock().unwrap_or_else(|e| e.into_inner());
            while h.conns.len() >= max_connections {
                if let Some((_, close)) = h.conns.pop_front() {
                    let _ = close.send(());
                    metrics.evicted.inc();
                    evicted_unreported += 1;
                }
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            let id = h.next_id;
            h.next_id += 1;
            h.conns.push_back((id, tx));
            (id, rx)
        };
        if evicted_unreported > 0
            && last_eviction_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(
                closed = evicted_unreported,
                max_connections,
                "metrics listener: more connections than metrics.max_connections; closed the oldest"
            );
            evicted_unreported = 0;
            last_eviction_warning = Some(Instant::now());
        }
        let metrics = metrics.clone();
        let board = board.clone();
        let audit = audit.clone();
        let held = held.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let r = route(
                        req.uri().path(),
                        &metrics,
                        &board,
                        audit.as_ref(),
                        heartbeat_limit,
                    );
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_LIFETIME, conn) => {}
                _ = closed => {}
            }
            held.lock()
                .unwrap_or_else(|e| e.into_inner())
                .conns
                .retain(|(i, _)| *i != id);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::MemorySink;
    use crate::daemon::AccountStatus;

    /// A board with `n` accounts, each with the strings a real one has.
    fn board(n: usize) -> StatusBoard {
        let accounts = (0..n)
            .map(|i| AccountStatus {
                name: format!("account-{i}"),
                user: format!("svc-{i}@contoso.onmicrosoft.com"),
                ..Default::default()
            })
            .collect();
        Arc::new(std::sync::Mutex::new(DaemonStatus {
            ready: true,
            accounts,
            ..Default::default()
        }))
    }

    #[test]
    fn each_known_readiness_check_is_exported_and_a_never_known_one_is_not() {
        use crate::daemon::{AccountReadiness, CheckReadiness, Readiness};
        let b = board(2);
        let check = |name: &'static str, state, ready| CheckReadiness {
            check: name,
            state,
            ready,
            detail: String::new(),
            since: None,
        };
        b.lock().unwrap().accounts[0].readiness = Some(AccountReadiness {
            ready: Some(false),
            checked_at: None,
            checks: vec![
                check("user_exists", Readiness::Ready, Some(true)),
                check("user_enabled", Readiness::NotReady, Some(false)),
                check("user_cloud_only", Readiness::Unknown, None),
            ],
        });
        let text = render(
            &Metrics::new(),
            &b.lock().unwrap(),
            time::OffsetDateTime::now_utc(),
        );
        let series =
            |c: &str| format!("keyturn_account_ready{{account=\"account-0\",check=\"{c}\"}}");
        assert!(
            text.contains(&format!("{} 1", series("user_exists"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 0", series("user_enabled"))),
            "{text}"
        );
        assert!(!text.contains(&series("user_cloud_only")), "{text}");
        assert!(
            !text.contains("keyturn_account_ready{account=\"account-1\""),
            "{text}"
        );
    }

    #[test]
    fn disabled_and_unadopted_accounts_are_exported() {
        let b = board(2);
        {
            let mut s = b.lock().unwrap();
            s.accounts[0].awaiting_adoption = true;
            s.accounts[0].enabled = true;
        }
        let text = render(
            &Metrics::new(),
            &b.lock().unwrap(),
            time::OffsetDateTime::now_utc(),
        );
        assert!(
            text.contains("keyturn_awaiting_adoption{account=\"account-0\"} 1"),
            "{text}"
        );
        assert!(text.contains("keyturn_awaiting_adoption{account=\"account-1\"} 0"));
        assert!(text.contains("keyturn_enabled{account=\"account-0\"} 1"));
        assert!(text.contains("keyturn_enabled{account=\"account-1\"} 0"));
    }

    #[test]
    fn early_closes_are_exported() {
        let text = render(
            &Metrics::default(),
            &DaemonStatus::default(),
            time::OffsetDateTime::now_utc(),
        );
        assert!(
            text.contains("keyturn_metrics_connections_closed_early_total"),
            "{text}"
        );
    }

    /// The value of the sample `line_start` in `metrics`' text, if there is one.
    fn sample(metrics: &Metrics, line_start: &str) -> Option<f64> {
        render(
            metrics,
            &DaemonStatus::default(),
            time::OffsetDateTime::UNIX_EPOCH,
        )
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn what_is_observed_is_rendered_by_that_handle_only() {
        let (one, other) = (Metrics::new(), Metrics::new());
        let observer: Arc<dyn Observer> = one.clone();
        observer.request("graph", Some(204), Duration::from_millis(30));
        observer.request("keyvault", Some(429), Duration::from_millis(5));
        observer.request("keyvault", None, Duration::from_millis(5));
        observer.paced("keyvault_write", Duration::from_millis(1500));
        let requests = r#"keyturn_azure_requests_total{service="graph",status="204"}"#;
        let throttled = r#"keyturn_azure_throttled_total{service="keyvault"}"#;
        let no_answer = r#"keyturn_azure_requests_total{service="keyvault",status="none"}"#;
        let paced = r#"keyturn_paced_requests_total{budget="keyvault_write"}"#;
        let waited = r#"keyturn_paced_wait_seconds_total{budget="keyvault_write"}"#;
        assert_eq!(sample(&one, requests), Some(1.0));
        assert_eq!(sample(&one, throttled), Some(1.0));
        assert_eq!(sample(&one, no_answer), Some(1.0));
        assert_eq!(sample(&one, paced), Some(1.0));
        assert_eq!(sample(&one, waited), Some(1.5));
        for line in [requests, throttled, no_answer, paced, waited] {
            assert_eq!(
                sample(&other, line),
                None,
                "{line} counted in another handle"
            );
        }
    }

    #[test]
    fn probes_do_not_copy_every_account() {
        let audit = MemorySink::default();
        let (small, large) = (board(1), board(200_000));
        let time = |b: &StatusBoard, path: &str| {
            let started = Instant::now();
            for _ in 0..5 {
                let r = route(
                    path,
                    &Metrics::default(),
                    b,
                    &audit,
                    Some(Duration::from_secs(60)),
                );
                assert_eq!(r.status(), 200, "{path}");
            }
            started.elapsed() / 5
        };
        // Copying 200,000 accounts takes tens of milliseconds; reading three fields does
        // not depend on the number of accounts at all.
        for path in ["/healthz", "/readyz"] {
            let (s, l) = (time(&small, path), time(&large, path));
            assert!(
                l < s + Duration::from_millis(5),
                "{path}: {l:?} with 200,000 accounts, {s:?} with one"
            );
        }
    }
}
