//! What an accept loop does when `accept` fails (most often `EMFILE`: the process is out of
//! file descriptors): log, pause, retry — never spin, never exit. The admin socket and the
//! metrics listener share it.

use std::time::{Duration, Instant};

/// First pause after a failed accept; it doubles while failures go on.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between attempts.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// While failures go on, one warning per this long (with the count since the last one).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Back-off state of one accept loop.
#[derive(Debug)]
pub(crate) struct Backoff {
    /// Which listener, for the log (`admin socket`, `metrics`).
    listener: &'static str,
    /// The next pause.
    pause: Duration,
    /// Failures since the last success.
    failures: u64,
    /// Failures not yet reported in a warning.
    unreported: u64,
    /// When the last warning was written.
    last_warning: Option<Instant>,
}

impl Backoff {
    /// A loop for `listener` with no failures yet.
    pub fn new(listener: &'static str) -> Self {
        Backoff {
            listener,
            pause: FIRST_PAUSE,
            failures: 0,
            unreported: 0,
            last_warning: None,
        }
    }

    /// An accept succeeded: the next failure starts from the first pause again.
    pub fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                listener = self.listener,
                failures = self.failures,
                "accepting connections again"
            );
        }
        self.pause = FIRST_PAUSE;
        self.failures = 0;
        self.unreported = 0;
        self.last_warning = None;
    }

    /// An accept failed with `error`: warns (at most once per 10 s) and pauses, longer
    /// each time while the failures go on (50 ms doubling up to 1 s).
    pub async fn failed(&mut self, error: &std::io::Error) {
        self.failures += 1;
        self.unreported += 1;
        if self.last_warning.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            tracing::warn!(
                listener = self.listener,
                %error,
                failures = self.unreported,
                pause_ms = self.pause.as_millis() as u64,
                "accept failed; pausing before the next attempt (out of file descriptors? see LimitNOFILE= and max_connections)"
            );
            self.unreported = 0;
            self.last_warning = Some(Instant::now());
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
    }

    /// The pause the next failure will take.
    #[cfg(test)]
    fn next_pause(&self) -> Duration {
        self.pause
    }
}

/// Descriptors kept for everything but the listeners' connections (the audit log, the
/// HTTP client's connections to Azure, the runtime).
const RESERVED_FILES: u64 = 128;

/// Warns when the process's open-file limit leaves less than [`RESERVED_FILES`] beside
/// `connections` (the listeners' caps together): accepts would then fail with `EMFILE`.
pub(crate) fn check_file_limit(connections: usize) {
    use nix::sys::resource::{getrlimit, Resource};
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let needed = connections as u64 + RESERVED_FILES;
        if soft < needed {
            tracing::warn!(
                limit = soft,
                needed,
                "the open-file limit is low for admin.max_connections + metrics.max_connections; raise it (LimitNOFILE=) or lower them"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_grow_to_a_second_and_reset_on_success() {
        let mut b = Backoff::new("test");
        let e = std::io::Error::from_raw_os_error(24);
        let started = tokio::time::Instant::now();
        for _ in 0..10 {
            b.failed(&e).await;
        }
        // 50 + 100 + 200 + 400 + 800 + 5 × 1000 ms
        assert_eq!(started.elapsed(), Duration::from_millis(6550));
        assert_eq!(b.next_pause(), MAX_PAUSE);
        b.succeeded();
        assert_eq!(b.next_pause(), FIRST_PAUSE);
    }
}
