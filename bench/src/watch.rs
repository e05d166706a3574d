//! Notices the emulator's first request for a watched path (from its access log, a tracing
//! target), to time a `rotate` command to the first Key Vault request it causes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// What the emulator's access log says about the watched path (first request's time).
pub(crate) struct Watch {
    pub(crate) on: AtomicBool,
    pub(crate) prefix: Mutex<String>,
    pub(crate) hit: Mutex<Option<Instant>>,
}

pub(crate) static WATCH: Watch = Watch {
    on: AtomicBool::new(false),
    prefix: Mutex::new(String::new()),
    hit: Mutex::new(None),
};

pub(crate) struct WatchLayer;

struct PathVisitor(Option<String>);

impl tracing::field::Visit for PathVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "path" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for WatchLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if !WATCH.on.load(Ordering::Relaxed) {
            return;
        }
        let mut v = PathVisitor(None);
        event.record(&mut v);
        if let Some(path) = v.0 {
            let prefix = WATCH.prefix.lock().unwrap_or_else(|e| e.into_inner());
            if path.starts_with(prefix.as_str()) {
                let mut hit = WATCH.hit.lock().unwrap_or_else(|e| e.into_inner());
                hit.get_or_insert_with(Instant::now);
            }
        }
    }
}
