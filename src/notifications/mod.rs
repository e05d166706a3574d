//! Event notifications (`[[notify]]`, `docs/notifications.md`): chosen audit records sent as
//! CloudEvents 1.0 to webhooks (signed with HMAC-SHA256) and Azure Event Grid topics (an Entra
//! token of one of the identities).
//!
//! [`Notifier::start`] builds one queue and one sender task per sink; its [`NotifySink`] is an
//! audit copy (`AuditSink`) the wiring adds beside the file: `record` only picks the records the
//! sink takes and queues them with `try_send`, so delivery never holds up or fails a rotation.
//! A full queue, or an event given up after its tries, is dropped: counted
//! (`keyturn_notify_dropped_total{sink,reason}`, through the [`Observer`]) and audited as
//! `notify.dropped`, at most one record per sink per [`AUDIT_DROPS_EVERY`] (the first at once),
//! so a dead receiver does not flood the audit log. [`Notifier::stop`] drains the queues for a
//! bounded time.
//!
//! - `event`: the CloudEvent for a record, and which records a sink takes.
//! - `sign`: the webhook signature.
//! - `deliver`: the sender task, its retries and backoff.

mod deliver;
mod event;
mod sign;

use crate::audit::{AuditError, AuditEvent, AuditSink, EventKind, Outcome};
use crate::azure::{Http, SetupError};
use crate::config::{Config, KeySource, NotifyConfig};
use crate::observe::Observer;
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use zeroize::Zeroizing;

/// At most one `notify.dropped` record per sink this often.
pub(crate) const AUDIT_DROPS_EVERY: Duration = Duration::from_secs(60);

/// The Event Grid API version keyturn publishes with (basic topics).
const EVENT_GRID_API_VERSION: &str = "2018-01-01";

/// Why a sink could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("notify sink {sink}: {detail}")]
pub struct NotifySetupError {
    /// The sink's `name`.
    pub sink: String,
    /// What is wrong and what to do.
    pub detail: String,
}

/// One queued event: its body as sent, and its audit kind (for logs and drop records).
pub(crate) struct Queued {
    body: hyper::body::Bytes,
    kind: &'static str,
}

/// Why an event was dropped: the `reason` label of `keyturn_notify_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The sink's queue was full.
    QueueFull,
    /// Every try failed (`max_attempts`).
    GaveUp,
    /// The receiver refused it (4xx other than 408 and 429): trying again would not help.
    Rejected,
    /// keyturn stopped before it was delivered (the drain's bound ran out).
    Stopped,
}

impl Reason {
    const ALL: [Reason; 4] = [
        Reason::QueueFull,
        Reason::GaveUp,
        Reason::Rejected,
        Reason::Stopped,
    ];

    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::QueueFull => "queue_full",
            Reason::GaveUp => "gave_up",
            Reason::Rejected => "rejected",
            Reason::Stopped => "stopped",
        }
    }
}

/// One sink's drops not yet audited, and its events queued or in flight.
pub(crate) struct Drops {
    observer: Arc<dyn Observer>,
    counts: [AtomicU64; 4],
    last_kind: Mutex<&'static str>,
    wake: tokio::sync::Notify,
    /// Events queued or being delivered.
    pending: AtomicUsize,
}

impl Drops {
    fn new(observer: Arc<dyn Observer>) -> Drops {
        Drops {
            observer,
            counts: Default::default(),
            last_kind: Mutex::new(""),
            wake: tokio::sync::Notify::new(),
            pending: AtomicUsize::new(0),
        }
    }

    /// Counts one dropped `kind` event and wakes the reporter.
    pub(crate) fn dropped(&self, sink: &str, reason: Reason, kind: &'static str) {
        self.observer.notify_dropped(sink, reason.as_str());
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.counts[i].fetch_add(1, Ordering::SeqCst);
        *self.last_kind.lock().unwrap_or_else(|e| e.into_inner()) = kind;
        self.wake.notify_one();
    }

    /// The `notify.dropped` record for the drops since the last one, if any (and resets them).
    fn take_record(&self, sink: &str) -> Option<AuditEvent> {
        let counts: Vec<(Reason, u64)> = Reason::ALL
            .iter()
            .zip(&self.counts)
            .map(|(r, c)| (*r, c.swap(0, Ordering::SeqCst)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        let last = *self.last_kind.lock().unwrap_or_else(|e| e.into_inner());
        let by: Vec<String> = counts
            .iter()
            .map(|(r, n)| format!("{}: {n}", r.as_str()))
            .collect();
        let mut ev = AuditEvent::new(EventKind::NotifyDropped, time::OffsetDateTime::now_utc());
        ev.outcome = Some(Outcome::Warning);
        ev.detail = Some(format!(
            "notify sink {sink:?}: {total} event(s) not delivered ({}); the last one {last}; see the log and keyturn_notify_dropped_total",
            by.join(", ")
        ));
        Some(ev)
    }
}

/// One sink as the audit side sees it.
struct Queue {
    name: String,
    events: Vec<String>,
    source: String,
    /// Event Grid takes a batch (an array), a webhook one event.
    batch: bool,
    tx: mpsc::Sender<Queued>,
    drops: Arc<Drops>,
}

/// The audit copy that queues the records each sink takes (never waits, never fails).
pub(crate) struct NotifySink {
    queues: Vec<Queue>,
}

#[async_trait]
impl AuditSink for NotifySink {
    async fn record(&self, ev: &AuditEvent) -> Result<(), AuditError> {
        for q in &self.queues {
            if !event::selected(&q.events, ev) {
                continue;
            }
            let body = match event::cloud_event(ev, &q.source) {
                Ok(ce) if q.batch => serde_json::to_vec(&[ce]),
                Ok(ce) => serde_json::to_vec(&ce),
                Err(e) => {
                    tracing::error!(sink = %q.name, error = %e, "cannot build the CloudEvent; this is a bug in keyturn");
                    continue;
                }
            };
            let Ok(body) = body else { continue };
            let kind = ev.event.as_str();
            q.drops.pending.fetch_add(1, Ordering::SeqCst);
            let queued = Queued {
                body: body.into(),
                kind,
            };
            if q.tx.try_send(queued).is_err() {
                q.drops.pending.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(sink = %q.name, event = kind, "notification queue full; event dropped");
                q.drops.dropped(&q.name, Reason::QueueFull, kind);
            }
        }
        Ok(())
    }
}

/// The running sinks: their audit side, sender tasks and drop reporters.
pub(crate) struct Notifier {
    sink: Arc<NotifySink>,
    senders: Vec<tokio::task::JoinHandle<()>>,
    reporters: Vec<tokio::task::JoinHandle<()>>,
    drops: Vec<(String, Arc<Drops>)>,
    audit: Arc<dyn AuditSink>,
    stop: watch::Sender<bool>,
}

impl Notifier {
    /// Starts a sender task per `[[notify]]` sink of `config`; `None` without any. Drops are
    /// recorded to `audit` (the file, not this copy); requests go through `http`'s client,
    /// counts to `observer`.
    pub(crate) fn start(
        config: &Config,
        http: &Http,
        observer: Arc<dyn Observer>,
        audit: Arc<dyn AuditSink>,
    ) -> Result<Option<Notifier>, StartError> {
        if config.notify.is_empty() {
            return Ok(None);
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut queues = Vec::new();
        let mut senders = Vec::new();
        let mut reporters = Vec::new();
        let mut all_drops = Vec::new();
        for n in &config.notify {
            let (target, batch) = target(config, n, http)?;
            let drops = Arc::new(Drops::new(observer.clone()));
            let (tx, rx) = mpsc::channel(n.queue.max(1));
            let sender = deliver::Sender {
                name: n.name.clone(),
                target,
                client: http.client.clone(),
                retry: deliver::Retry {
                    max_attempts: n.max_attempts.max(1),
                    base: n.retry_base_delay,
                    max: n.retry_max_delay,
                    timeout: n.timeout,
                },
                observer: observer.clone(),
                drops: drops.clone(),
            };
            senders.push(tokio::spawn(sender.run(rx, stop_rx.clone())));
            reporters.push(tokio::spawn(report_drops(
                n.name.clone(),
                drops.clone(),
                audit.clone(),
            )));
            all_drops.push((n.name.clone(), drops.clone()));
            queues.push(Queue {
                name: n.name.clone(),
                events: n.events.clone(),
                source: n.source.clone().unwrap_or_else(event::default_source),
                batch,
                tx,
                drops,
            });
            tracing::info!(sink = %n.name, kind = %n.kind, events = ?n.events, "notifications on");
        }
        Ok(Some(Notifier {
            sink: Arc::new(NotifySink { queues }),
            senders,
            reporters,
            drops: all_drops,
            audit,
            stop,
        }))
    }

    /// The audit copy to add beside the file.
    pub(crate) fn sink(&self) -> Arc<dyn AuditSink> {
        self.sink.clone()
    }

    /// Delivers what is queued for at most `grace`, then stops: what is still queued is
    /// counted as dropped (`stopped`) and the drops not yet audited are.
    pub(crate) async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut senders = self.senders;
        let all = futures::future::join_all(senders.iter_mut());
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "notifications still undelivered at stop; dropped"
            );
            for s in &senders {
                s.abort();
            }
        }
        for r in &self.reporters {
            r.abort();
        }
        for (name, drops) in &self.drops {
            for _ in 0..drops.pending.swap(0, Ordering::SeqCst) {
                drops.dropped(name, Reason::Stopped, "(queued at stop)");
            }
            if let Some(ev) = drops.take_record(name) {
                if let Err(e) = self.audit.record(&ev).await {
                    tracing::warn!(sink = %name, error = %e, "cannot record notify.dropped");
                }
            }
        }
    }
}

/// Records `notify.dropped` for `sink`'s drops: at once after a quiet spell, then at most once
/// per [`AUDIT_DROPS_EVERY`] with the drops counted meanwhile.
async fn report_drops(sink: String, drops: Arc<Drops>, audit: Arc<dyn AuditSink>) {
    loop {
        drops.wake.notified().await;
        if let Some(ev) = drops.take_record(&sink) {
            if let Err(e) = audit.record(&ev).await {
                tracing::warn!(sink = %sink, error = %e, "cannot record notify.dropped");
            }
            tokio::time::sleep(AUDIT_DROPS_EVERY).await;
        }
    }
}

/// Why the notifier could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A sink's own set-up (its HMAC key, its URL).
    #[error(transparent)]
    Sink(#[from] NotifySetupError),
    /// An Event Grid sink's identity.
    #[error(transparent)]
    Identity(#[from] SetupError),
}

/// A sink's target, and whether it takes a batch.
fn target(
    config: &Config,
    n: &NotifyConfig,
    http: &Http,
) -> Result<(deliver::Target, bool), StartError> {
    let err = |detail: String| NotifySetupError {
        sink: n.name.clone(),
        detail,
    };
    match n.kind.as_str() {
        "webhook" => {
            let url =
                crate::config::notify_url_ok(n.url.as_deref().unwrap_or_default()).map_err(err)?;
            let source = crate::config::webhook_key_source(n).ok_or_else(|| {
                err("no HMAC key source (secret_file, secret_credential, secret_env)".into())
            })?;
            let key = read_key(&source).map_err(err)?;
            Ok((deliver::Target::Webhook { url, key }, false))
        }
        "event_grid" => {
            let endpoint = n.endpoint.as_deref().unwrap_or_default();
            let mut url = url::Url::parse(endpoint)
                .map_err(|e| err(format!("endpoint {endpoint:?} is not a URL ({e})")))?;
            if !url.query_pairs().any(|(k, _)| k == "api-version") {
                url.query_pairs_mut()
                    .append_pair("api-version", EVENT_GRID_API_VERSION);
            }
            let name = n.identity.as_deref().unwrap_or_default();
            let id = config.identities.get(name).ok_or_else(|| {
                err(format!(
                    "identity {name:?} is not defined under [identities]"
                ))
            })?;
            let credential = crate::azure::credential(name, id, http, &config.network)?;
            Ok((deliver::Target::EventGrid { url, credential }, true))
        }
        other => Err(err(format!("{other:?} is not a kind")).into()),
    }
}

/// A webhook's HMAC key (trimmed of surrounding white space, as a client secret is).
fn read_key(source: &KeySource) -> Result<Zeroizing<Vec<u8>>, String> {
    let text = match source {
        KeySource::File(f) => std::fs::read_to_string(f)
            .map(Zeroizing::new)
            .map_err(|e| format!("cannot read secret_file {}: {e}", f.display()))?,
        KeySource::Credential(c) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                format!("secret_credential {c:?} needs $CREDENTIALS_DIRECTORY (systemd LoadCredential=); it is not set")
            })?;
            let path = std::path::Path::new(&dir).join(c);
            std::fs::read_to_string(&path)
                .map(Zeroizing::new)
                .map_err(|e| format!("cannot read credential {}: {e}", path.display()))?
        }
        // Not kept as a source: `VarError::NotUnicode` holds the variable's value, the key.
        KeySource::Env(var) => Zeroizing::new(
            std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?,
        ),
    };
    let key = text.trim();
    if key.len() < 16 {
        return Err(
            "the HMAC key is shorter than 16 bytes; use a random one, e.g. `openssl rand -hex 32`"
                .into(),
        );
    }
    Ok(Zeroizing::new(key.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{MemorySink, Trigger};

    /// Counts drops by reason.
    #[derive(Default)]
    struct Dropped(Mutex<Vec<(String, &'static str)>>);

    impl Observer for Dropped {
        fn request(&self, _: &'static str, _: Option<u16>, _: Duration) {}
        fn paced(&self, _: &'static str, _: Duration) {}
        fn notify_dropped(&self, sink: &str, reason: &'static str) {
            self.0.lock().unwrap().push((sink.to_owned(), reason));
        }
    }

    fn failed() -> AuditEvent {
        let mut ev = AuditEvent::new(EventKind::RotationFailed, time::OffsetDateTime::now_utc());
        ev.account = Some("svc-1".into());
        ev.trigger = Some(Trigger::Schedule);
        ev
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_new_event_and_never_waits() {
        let observer = Arc::new(Dropped::default());
        let drops = Arc::new(Drops::new(observer.clone()));
        // Nobody takes from the queue: the first event waits in it, the second has no room.
        let (tx, _rx) = mpsc::channel(1);
        let sink = NotifySink {
            queues: vec![Queue {
                name: "ops".into(),
                events: vec!["rotation.failed".into()],
                source: "keyturn://t".into(),
                batch: false,
                tx,
                drops: drops.clone(),
            }],
        };
        sink.record(&failed()).await.unwrap();
        assert!(observer.0.lock().unwrap().is_empty());
        sink.record(&failed()).await.unwrap();
        // A record the sink does not take is not queued (nor dropped).
        let started = AuditEvent::new(EventKind::RotationStarted, time::OffsetDateTime::now_utc());
        sink.record(&started).await.unwrap();
        assert_eq!(
            *observer.0.lock().unwrap(),
            [("ops".to_owned(), "queue_full")]
        );
        assert_eq!(drops.pending.load(Ordering::SeqCst), 1);
        let ev = drops.take_record("ops").unwrap();
        assert_eq!(ev.event, EventKind::NotifyDropped);
        let detail = ev.detail.unwrap();
        assert!(
            detail.contains("1 event(s)") && detail.contains("queue_full: 1"),
            "{detail}"
        );
        assert!(detail.contains("rotation.failed"), "{detail}");
        assert!(drops.take_record("ops").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn drops_are_audited_at_once_then_at_most_once_a_minute() {
        let drops = Arc::new(Drops::new(crate::observe::unobserved()));
        let audit = MemorySink::default();
        let reporter = tokio::spawn(report_drops(
            "ops".into(),
            drops.clone(),
            Arc::new(audit.clone()),
        ));
        let settle = || async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        };
        drops.dropped("ops", Reason::GaveUp, "rotation.failed");
        settle().await;
        assert_eq!(audit.kinds(), [EventKind::NotifyDropped]);
        // Three more within the minute: no record until it is over, then one for the three.
        for _ in 0..3 {
            drops.dropped("ops", Reason::QueueFull, "drift.detected");
        }
        tokio::time::advance(AUDIT_DROPS_EVERY / 2).await;
        settle().await;
        assert_eq!(audit.events().len(), 1);
        tokio::time::advance(AUDIT_DROPS_EVERY / 2).await;
        settle().await;
        let events = audit.events();
        assert_eq!(events.len(), 2);
        let detail = events[1].detail.clone().unwrap();
        assert!(
            detail.contains("3 event(s)") && detail.contains("queue_full: 3"),
            "{detail}"
        );
        reporter.abort();
    }
}
