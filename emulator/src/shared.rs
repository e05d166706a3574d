//! The state shared by every connection of one emulator: directory and vaults, fault rules and
//! counters, throttling windows, clock.

use crate::clock::Clock;
use crate::faults::FaultEngine;
use crate::state::State;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// Fixed-window request counters for throttling.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    /// key → (window start in Unix ms, requests counted in it)
    windows: HashMap<String, (i64, u32)>,
}

impl Throttle {
    /// Counts one request against `key`; `Err(retry_after_seconds)` when over `limit`.
    pub(crate) fn hit(
        &mut self,
        key: &str,
        limit: u32,
        window_ms: u64,
        now_ms: i64,
    ) -> Result<(), u64> {
        let window_ms = window_ms.max(1) as i64;
        let w = self.windows.entry(key.to_string()).or_insert((now_ms, 0));
        if now_ms - w.0 >= window_ms {
            *w = (now_ms, 0);
        }
        if w.1 >= limit {
            let remaining_ms = (w.0 + window_ms - now_ms).max(1);
            return Err(((remaining_ms + 999) / 1000) as u64);
        }
        w.1 += 1;
        Ok(())
    }
}

/// One event an Event Grid topic took (`eventgrid`).
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct PublishedEvent {
    /// The app (client id) whose token published it.
    pub app_id: String,
    /// The request's `Content-Type`.
    pub content_type: String,
    /// The CloudEvent as sent.
    pub event: serde_json::Value,
}

/// Shared by all connections.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub faults: Mutex<FaultEngine>,
    pub throttle: Mutex<Throttle>,
    pub clock: Clock,
    pub state_file: Option<PathBuf>,
    /// The events each Event Grid topic took, by topic (not kept in the state file).
    pub events: Mutex<std::collections::BTreeMap<String, Vec<PublishedEvent>>>,
}

/// Locks a mutex, recovering from poisoning (a panicking handler must not wedge the emulator).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Writes the state file, if there is one. Called with the state locked after a change.
    pub(crate) fn persist(&self, st: &State) {
        if let Some(p) = &self.state_file {
            if let Err(e) = st.save(p) {
                tracing::error!(error = %e, "could not persist the emulator state");
            }
        }
    }
}
