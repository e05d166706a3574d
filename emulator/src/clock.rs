//! The emulator's clock: wall time plus an offset that tests can advance, so that lock-outs,
//! throttling windows and token expiry are testable without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use time::OffsetDateTime;

/// A cheap, cloneable clock shared by every part of one emulator.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Milliseconds added to the wall clock (only ever grows).
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The emulator's idea of now.
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
            + time::Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }

    /// Now as integer Unix seconds (the unit Key Vault and token claims use).
    pub fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// Now as Unix milliseconds (for windows shorter than a second).
    pub fn unix_ms(&self) -> i64 {
        (self.now().unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// Moves the emulator's time forward.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 4);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}
