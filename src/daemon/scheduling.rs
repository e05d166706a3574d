//! When each account runs next: its due time on the heap after a success or a failure (the
//! retry's backoff with jitter), the loop's next wake-up, firing the accounts that are due,
//! and the drift timer.

use super::jobs::Job;
use super::Daemon;
use crate::audit::Trigger;
use crate::protocol::Request;
use rand::Rng;
use std::time::Duration;
use time::OffsetDateTime;

/// The longest the main loop sleeps without looking at the heap of due times.
const MAX_WAKE: Duration = Duration::from_secs(86400);

impl Daemon {
    pub(super) fn drift_timer(&self) -> Option<tokio::time::Interval> {
        (!self.settings.drift_interval.is_zero()).then(|| {
            let period = self.settings.drift_interval;
            let start = tokio::time::Instant::now()
                .checked_add(period)
                .unwrap_or_else(tokio::time::Instant::now);
            tokio::time::interval_at(start, period)
        })
    }

    pub(super) fn set_due(&mut self, idx: usize, due: OffsetDateTime, trigger: Trigger) {
        let slot = &mut self.slots[idx];
        slot.next_due = Some(due);
        slot.next_trigger = trigger;
        self.heap.schedule(idx, due);
        self.board_mut(idx, |b| b.next_due = Some(due));
    }

    pub(super) fn schedule_after_success(&mut self, idx: usize) {
        let slot = &self.slots[idx];
        let now = self.clock.now();
        let due = slot
            .managed
            .schedule
            .next_fire_after(slot.name(), now)
            .unwrap_or(now.saturating_add(time::Duration::days(7)));
        self.slots[idx].failures = 0;
        self.set_due(idx, due, Trigger::Schedule);
    }

    pub(super) fn schedule_retry(&mut self, idx: usize) {
        let failures = {
            let slot = &mut self.slots[idx];
            slot.failures = slot.failures.saturating_add(1);
            slot.failures
        };
        // Saturating throughout: the delays are bounded by validation, but no setting may
        // make the daemon's arithmetic panic.
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let base = millis(self.settings.retry_base);
        let max = millis(self.settings.retry_max);
        let exp = base
            .saturating_mul(1u64 << failures.saturating_sub(1).min(20))
            .min(max)
            .max(1);
        let ms = rand::rng().random_range(exp / 2..=exp);
        let due = self
            .clock
            .now()
            .saturating_add(time::Duration::milliseconds(
                i64::try_from(ms).unwrap_or(i64::MAX),
            ));
        let trigger = self.slots[idx].next_trigger;
        self.set_due(idx, due, trigger);
    }

    pub(super) fn next_wake(&mut self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        match self.heap.next() {
            Some(due) => {
                // At most a day ahead: a due time further out is looked at again then (and
                // an `Instant` that far ahead could overflow).
                let wait = Duration::try_from(due - self.clock.now()).unwrap_or(Duration::ZERO);
                now + wait.min(MAX_WAKE)
            }
            None => now + MAX_WAKE,
        }
    }

    pub(super) fn fire_due(&mut self) {
        let now = self.clock.now();
        while let Some(idx) = self.heap.pop_due(now) {
            let Some(slot) = self.slots.get(idx) else {
                continue;
            };
            // Running (rescheduled when it ends), paused (rescheduled on resume) or
            // disabled.
            if slot.busy || slot.paused || !slot.managed.enabled {
                continue;
            }
            let trigger = slot.next_trigger;
            self.spawn(idx, Job::Rotate, Request::daemon(trigger), None, None);
        }
    }
}
