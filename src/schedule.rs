//! When accounts are due: a cron expression (croner) in a time zone, plus a stable
//! per-account offset inside a window, so a thousand accounts do not rotate in the
//! same second.
//!
//! "Due" is computed from Key Vault: an account is due when the first fire time after
//! its current version's `keyturn-rotated-at` has passed. A daemon that was down catches
//! up at start-up, and a fresh replica knows as much as an old one.

use chrono::TimeZone;
use croner::Cron;
use sha2::{Digest, Sha256};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Why a schedule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0:?} is not a cron expression ({1}); use 5 fields (minute hour day month weekday) or 6 with seconds first, e.g. \"0 3 * * MON\"")]
    Cron(String, String),
    #[error("{0:?} is not an IANA time zone; use e.g. \"UTC\" or \"Europe/Paris\"")]
    TimeZone(String),
    #[error("the window {} is not shorter than the time between two fires of the schedule; shorten it", humantime::format_duration(*.0))]
    Window(Duration),
    #[error("the cron expression {0:?} never fires")]
    Never(String),
}

/// A parsed schedule. Cheap to clone: the parsed cron expression (about 5 KiB in croner) is
/// shared, so ten thousand accounts on the same schedule hold one copy of it.
#[derive(Debug, Clone)]
pub struct Schedule {
    pattern: Arc<str>,
    cron: Arc<Cron>,
    tz: chrono_tz::Tz,
    window: Duration,
}

/// Two schedules are equal when they fire at the same times: same cron expression, time
/// zone and window (the parsed expression follows from the first).
impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.tz == other.tz && self.window == other.window
    }
}

impl Schedule {
    /// Parses `pattern` in time zone `tz`, with fire times spread over `window`.
    pub fn new(pattern: &str, tz: &str, window: Duration) -> Result<Self, ScheduleError> {
        let cron = Cron::from_str(pattern)
            .map_err(|e| ScheduleError::Cron(pattern.to_owned(), e.to_string()))?;
        let tz = chrono_tz::Tz::from_str(tz).map_err(|_| ScheduleError::TimeZone(tz.to_owned()))?;
        let schedule = Schedule {
            pattern: pattern.into(),
            cron: Arc::new(cron),
            tz,
            window,
        };
        let gap = schedule
            .min_gap()
            .ok_or_else(|| ScheduleError::Never(pattern.to_owned()))?;
        if window >= gap {
            return Err(ScheduleError::Window(window));
        }
        Ok(schedule)
    }

    /// The cron expression as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The account's stable offset inside the window.
    pub fn offset(&self, account: &str) -> Duration {
        let ms = self.window.as_millis() as u64;
        if ms == 0 {
            return Duration::ZERO;
        }
        let digest = Sha256::digest(account.as_bytes());
        let mut n = [0u8; 8];
        n.copy_from_slice(&digest[..8]);
        Duration::from_millis(u64::from_be_bytes(n) % ms)
    }

    /// The first fire time of `account` strictly after `t`.
    pub(crate) fn next_fire_after(
        &self,
        account: &str,
        t: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let offset = time::Duration::try_from(self.offset(account)).ok()?;
        // Checked: `t` may come from a Key Vault tag, which anyone with write access can set.
        let from = self.to_chrono(t.checked_sub(offset)?)?;
        let next = self.cron.find_next_occurrence(&from, false).ok()?;
        from_chrono(next.timestamp(), next.timestamp_subsec_nanos())?.checked_add(offset)
    }

    /// The typical time between two fires (the longest of a few consecutive gaps), for `exp`.
    pub(crate) fn period_hint(&self) -> Duration {
        self.gaps()
            .into_iter()
            .max()
            .unwrap_or(Duration::from_secs(7 * 86400))
    }

    fn min_gap(&self) -> Option<Duration> {
        self.gaps().into_iter().min()
    }

    fn gaps(&self) -> Vec<Duration> {
        let start = self.tz.timestamp_opt(1_767_225_600, 0).single(); // 2026-01-01
        let Some(start) = start else {
            return Vec::new();
        };
        let times: Vec<_> = self.cron.iter_after(start).take(6).collect();
        times
            .windows(2)
            .filter_map(|w| (w[1] - w[0]).to_std().ok())
            .collect()
    }

    fn to_chrono(&self, t: OffsetDateTime) -> Option<chrono::DateTime<chrono_tz::Tz>> {
        let secs = t.unix_timestamp();
        let nanos = t.nanosecond();
        chrono::DateTime::from_timestamp(secs, nanos).map(|d| d.with_timezone(&self.tz))
    }
}

fn from_chrono(secs: i64, nanos: u32) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.checked_add(time::Duration::nanoseconds(i64::from(nanos))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn weekly_default_fires_on_monday_inside_the_window() {
        let s = Schedule::new("0 3 * * MON", "UTC", Duration::from_secs(4 * 3600)).unwrap();
        let after = datetime!(2026-11-18 12:00 UTC); // a Wednesday
        let next = s.next_fire_after("coreview", after).unwrap();
        assert!(
            next >= datetime!(2026-11-23 03:00 UTC) && next < datetime!(2026-11-23 07:00 UTC),
            "{next}"
        );
        assert_eq!(s.period_hint(), Duration::from_secs(7 * 86400));
    }

    #[test]
    fn offsets_are_stable_and_spread() {
        let s = Schedule::new("0 3 * * MON", "UTC", Duration::from_secs(3600)).unwrap();
        assert_eq!(s.offset("a"), s.offset("a"));
        let offsets: std::collections::HashSet<_> = (0..1000)
            .map(|i| s.offset(&format!("acct-{i}")).as_secs())
            .collect();
        assert!(
            offsets.len() > 600,
            "1000 accounts share only {} distinct seconds",
            offsets.len()
        );
    }

    #[test]
    fn the_fire_after_a_rotation_is_the_next_one_not_the_same() {
        let s = Schedule::new("0 3 * * MON", "UTC", Duration::from_secs(3600)).unwrap();
        let first = s
            .next_fire_after("x", datetime!(2026-11-18 00:00 UTC))
            .unwrap();
        let second = s.next_fire_after("x", first).unwrap();
        assert_eq!(second - first, time::Duration::days(7));
    }

    #[test]
    fn time_zones_are_honoured() {
        let s = Schedule::new("0 3 * * *", "Europe/Paris", Duration::ZERO).unwrap();
        let next = s
            .next_fire_after("x", datetime!(2026-07-01 00:00 UTC))
            .unwrap();
        assert_eq!(
            next,
            datetime!(2026-07-01 01:00 UTC),
            "03:00 in Paris in summer is 01:00 UTC"
        );
    }

    #[test]
    fn bad_input_is_named() {
        assert!(matches!(
            Schedule::new("every monday", "UTC", Duration::ZERO),
            Err(ScheduleError::Cron(..))
        ));
        assert!(matches!(
            Schedule::new("0 3 * * MON", "Mars/Olympus", Duration::ZERO),
            Err(ScheduleError::TimeZone(..))
        ));
        assert!(matches!(
            Schedule::new("*/10 * * * * *", "UTC", Duration::from_secs(60)),
            Err(ScheduleError::Window(..))
        ));
    }
}
