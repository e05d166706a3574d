//! Sinks besides the file: standard output, memory, several at once ([`Tee`]), and a copy
//! that never holds up the caller ([`Detached`]).

use super::{AuditError, AuditEvent, AuditHealth, AuditSink, EventKind};
use async_trait::async_trait;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// How records look on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StdoutFormat {
    /// One JSON object per line.
    Json,
    /// One readable line per record.
    Human,
}

/// Writes records to standard output (containers, the demo).
pub(crate) struct StdoutSink(pub StdoutFormat);

#[async_trait]
impl AuditSink for StdoutSink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let line = match self.0 {
            StdoutFormat::Json => serde_json::to_string(event).unwrap_or_default(),
            StdoutFormat::Human => event.human(),
        };
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop rotations: the file sink is the record of truth.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        Ok(())
    }
}

/// Keeps records in memory (tests, and `status` answers).
#[derive(Default, Clone)]
pub struct MemorySink(Arc<Mutex<Vec<AuditEvent>>>);

impl MemorySink {
    /// A copy of every record so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The kinds of every record so far, in order.
    pub fn kinds(&self) -> Vec<EventKind> {
        self.events().iter().map(|e| e.event).collect()
    }
}

#[async_trait]
impl AuditSink for MemorySink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.clone());
        Ok(())
    }
}

/// Sends each record to several sinks; the first is the record of truth and its
/// failure fails the call, the others are copies.
pub struct Tee(pub Vec<Arc<dyn AuditSink>>);

#[async_trait]
impl AuditSink for Tee {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let mut first = true;
        for sink in &self.0 {
            let r = sink.record(event).await;
            if first {
                r?;
                first = false;
            } else if let Err(e) = r {
                tracing::warn!(error = %e, "an audit copy failed");
            }
        }
        Ok(())
    }

    fn is_writable(&self) -> bool {
        self.0.first().is_none_or(|s| s.is_writable())
    }

    fn health(&self) -> Option<AuditHealth> {
        self.0.first().and_then(|s| s.health())
    }
}

/// A copy that never holds up the caller: records are queued (up to `capacity`) to a
/// thread that writes them to the inner sink; when the queue is full the copy is
/// dropped, counted and reported with a warning. Use it for stdout and journald.
pub(crate) struct Detached {
    tx: std::sync::mpsc::SyncSender<AuditEvent>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    name: &'static str,
}

impl Detached {
    /// Starts the writer thread for `inner`.
    pub fn spawn(
        name: &'static str,
        inner: Arc<dyn AuditSink>,
        capacity: usize,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<AuditEvent>(capacity);
        std::thread::Builder::new()
            .name(format!("audit-{name}"))
            .spawn(move || {
                while let Ok(ev) = rx.recv() {
                    if let Err(e) = futures::executor::block_on(inner.record(&ev)) {
                        tracing::warn!(copy = name, error = %e, "an audit copy failed");
                    }
                }
            })?;
        Ok(Detached {
            tx,
            dropped: Arc::default(),
            name,
        })
    }
}

#[async_trait]
impl AuditSink for Detached {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        if self.tx.try_send(event.clone()).is_err() {
            let n = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            tracing::warn!(
                copy = self.name,
                dropped = n,
                "an audit copy is behind; dropped a copy (the audit file has the record)"
            );
        }
        Ok(())
    }
}
