//! The rate limit on auditing refused connections.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often a uid's refused connections are audited one by one.
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Most uids tracked at once; beyond that, refusals are counted under one entry.
const REFUSERS_KEPT: usize = 1024;

/// Rate limit for auditing refused connections: the first refusal of a uid in a minute is
/// recorded with its details; the rest of that minute are counted and recorded as one
/// summary once the minute is over (2,000 refusals are two records, not 2,000 fsyncs).
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    /// uid → (start of its window, refusals counted but not recorded in it).
    by_uid: HashMap<u32, (Instant, u64)>,
    /// Counts of windows that ended, not yet handed out by [`Refusals::summaries`].
    ended: Vec<(u32, u64)>,
}

/// The key under which refusals are counted once [`REFUSERS_KEPT`] uids are tracked.
pub(crate) const SEVERAL_USERS: u32 = u32::MAX;

impl Refusals {
    /// Notes a refusal of `uid` at `now`; true when it is to be recorded in full.
    pub fn note(&mut self, uid: u32, now: Instant) -> bool {
        let key = if self.by_uid.len() >= REFUSERS_KEPT && !self.by_uid.contains_key(&uid) {
            SEVERAL_USERS
        } else {
            uid
        };
        match self.by_uid.get_mut(&key) {
            Some((start, counted)) if now.duration_since(*start) < REFUSAL_WINDOW => {
                *counted += 1;
                false
            }
            Some((start, counted)) => {
                if *counted > 0 {
                    self.ended.push((key, *counted));
                }
                *start = now;
                *counted = u64::from(key != uid);
                key == uid
            }
            None => {
                self.by_uid.insert(key, (now, u64::from(key != uid)));
                key == uid
            }
        }
    }

    /// The refusals counted but not recorded, per uid, of every window that has ended by
    /// `now` (of every window with `all`); those windows are forgotten.
    pub(crate) fn summaries(&mut self, now: Instant, all: bool) -> Vec<(u32, u64)> {
        let mut out = std::mem::take(&mut self.ended);
        self.by_uid.retain(|uid, (start, counted)| {
            if all || now.duration_since(*start) >= REFUSAL_WINDOW {
                if *counted > 0 {
                    out.push((*uid, *counted));
                }
                false
            } else {
                true
            }
        });
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_recorded_once_a_minute_per_uid_and_summarised() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        assert!(r.note(1000, t0), "the first refusal of a uid is recorded");
        for i in 1..2000u64 {
            assert!(!r.note(1000, t0 + Duration::from_millis(i)));
        }
        assert!(r.note(1001, t0), "another uid has its own minute");
        assert!(r.summaries(t0 + Duration::from_secs(30), false).is_empty());
        assert_eq!(
            r.summaries(t0 + Duration::from_secs(61), false),
            vec![(1000, 1999)],
            "one summary for the rest of the minute; uid 1001 had nothing more"
        );
        assert!(r.note(1000, t0 + Duration::from_secs(62)), "a new minute");
        assert!(!r.note(1000, t0 + Duration::from_secs(63)));
        assert_eq!(
            r.summaries(t0 + Duration::from_secs(64), true),
            vec![(1000, 1)]
        );
    }

    #[test]
    fn refusals_from_many_uids_are_counted_together() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        for uid in 0..REFUSERS_KEPT as u32 {
            assert!(r.note(uid, t0));
        }
        assert!(!r.note(999_999, t0));
        assert!(!r.note(999_998, t0));
        assert!(!r.note(999_997, t0 + Duration::from_secs(61)));
        // Two in the first minute, one in the next: every refusal is counted.
        assert_eq!(
            r.summaries(t0 + Duration::from_secs(62), true),
            vec![(SEVERAL_USERS, 1), (SEVERAL_USERS, 2)]
        );
    }
}
