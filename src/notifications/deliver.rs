//! One sink's sender task: takes queued events one at a time and POSTs each, retrying 408,
//! 429, 5xx and transport failures with exponential backoff and jitter (`Retry-After`
//! honoured up to `retry_max_delay`), up to `max_attempts`; then the event is dropped and
//! counted. Nothing here is awaited by a rotation.

use super::sign::{signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::{Drops, Queued};
use crate::observe::Observer;
use azure_core::credentials::TokenCredential;
use rand::Rng;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

/// The token scope of Event Grid's data plane.
pub(crate) const EVENT_GRID_SCOPE: &str = "https://eventgrid.azure.net/.default";
/// The content type of a webhook's body: one event in structured mode.
pub(crate) const CLOUDEVENT_JSON: &str = "application/cloudevents+json; charset=utf-8";
/// The content type of an Event Grid body: a batch (of one event).
pub(crate) const CLOUDEVENT_BATCH_JSON: &str = "application/cloudevents-batch+json; charset=utf-8";

/// Where a sink sends, and how it authenticates.
pub(crate) enum Target {
    /// A POST signed with the HMAC key.
    Webhook {
        url: url::Url,
        key: Zeroizing<Vec<u8>>,
    },
    /// A POST to an Event Grid topic with a bearer token of `credential`.
    EventGrid {
        url: url::Url,
        credential: Arc<dyn TokenCredential>,
    },
}

/// The retry bounds of one sink.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
    pub timeout: Duration,
}

/// Why one try failed.
#[derive(Debug)]
struct Failure {
    /// Worth another try (408, 429, 5xx, no answer).
    retry: bool,
    /// The answer's `Retry-After`.
    retry_after: Option<Duration>,
    /// For the log: the status or the transport error (never the URL, which may hold a
    /// secret path, nor the token).
    detail: String,
}

/// Everything one sender task needs.
pub(crate) struct Sender {
    pub name: String,
    pub target: Target,
    pub client: reqwest::Client,
    pub retry: Retry,
    pub observer: Arc<dyn Observer>,
    pub drops: Arc<Drops>,
}

impl Sender {
    /// Delivers queued events until `stop` turns true and the queue is empty.
    pub(crate) async fn run(
        self,
        mut rx: mpsc::Receiver<Queued>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let next = if *stop.borrow() {
                rx.try_recv().ok()
            } else {
                tokio::select! {
                    q = rx.recv() => q,
                    changed = stop.changed() => {
                        // The notifier was dropped without `stop`: nothing waits for a drain.
                        if changed.is_err() {
                            return;
                        }
                        continue;
                    }
                }
            };
            let Some(q) = next else { return };
            self.deliver(&q).await;
            self.drops.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    async fn deliver(&self, q: &Queued) {
        for attempt in 1..=self.retry.max_attempts {
            match self.try_once(q).await {
                Ok(()) => {
                    self.observer.notify_delivered(&self.name);
                    return;
                }
                Err(f) if !f.retry => {
                    tracing::warn!(sink = %self.name, event = %q.kind, detail = %f.detail, "notification refused by the receiver; dropped");
                    self.drops
                        .dropped(&self.name, super::Reason::Rejected, q.kind);
                    return;
                }
                Err(f) if attempt == self.retry.max_attempts => {
                    tracing::warn!(sink = %self.name, event = %q.kind, attempts = attempt, detail = %f.detail, "notification not delivered; gave up");
                    self.drops
                        .dropped(&self.name, super::Reason::GaveUp, q.kind);
                    return;
                }
                Err(f) => {
                    let wait = backoff(&self.retry, attempt, f.retry_after);
                    tracing::info!(sink = %self.name, event = %q.kind, attempt, detail = %f.detail, wait_ms = wait.as_millis() as u64, "notification not delivered; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn try_once(&self, q: &Queued) -> Result<(), Failure> {
        let request = match &self.target {
            Target::Webhook { url, key } => {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                self.client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, CLOUDEVENT_JSON)
                    .header(TIMESTAMP_HEADER, now.to_string())
                    .header(SIGNATURE_HEADER, signature(key, now, &q.body))
            }
            Target::EventGrid { url, credential } => {
                let token = credential
                    .get_token(&[EVENT_GRID_SCOPE], None)
                    .await
                    .map_err(|e| Failure {
                        retry: true,
                        retry_after: None,
                        detail: format!(
                            "no Event Grid token: {}",
                            crate::azure::bounded(
                                &crate::azure::error_chain(&e),
                                None,
                                crate::azure::MAX_DETAIL_CHARS
                            )
                        ),
                    })?;
                self.client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, CLOUDEVENT_BATCH_JSON)
                    .bearer_auth(token.token.secret())
            }
        };
        let answer = request
            .timeout(self.retry.timeout)
            .body(q.body.clone())
            .send()
            .await
            .map_err(|e| Failure {
                retry: true,
                retry_after: None,
                detail: format!("no answer: {}", crate::azure::error_chain(&e.without_url())),
            })?;
        let status = answer.status().as_u16();
        if answer.status().is_success() {
            return Ok(());
        }
        Err(Failure {
            retry: status == 408 || status == 429 || status >= 500,
            retry_after: answer
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after),
            detail: format!("HTTP {status}"),
        })
    }
}

/// `Retry-After`: seconds, or an HTTP date (the time left until it).
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The wait after failed try `attempt` (1-based): the answer's `Retry-After` if any, else
/// `base` doubled per try, with jitter (between half and all of it); never above `max`.
fn backoff(r: &Retry, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(r.max);
    }
    let doubled = r
        .base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(r.max);
    let half = doubled / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> Retry {
        Retry {
            max_attempts: 8,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after_up_to_the_maximum() {
        for attempt in 1..=10 {
            let full = Duration::from_secs(1u64 << (attempt - 1)).min(Duration::from_secs(60));
            let d = backoff(&retry(), attempt, None);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert_eq!(
            backoff(&retry(), 1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            backoff(&retry(), 1, Some(Duration::from_secs(7200))),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("12"), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
