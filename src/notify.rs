//! systemd notifications (`Type=notify`): READY, STATUS, RELOADING, STOPPING and the
//! watchdog. Without `$NOTIFY_SOCKET` every call does nothing.

use sd_notify::NotifyState;
use std::time::Duration;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Start-up is done: config, lock, socket and recovery.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new STATUS line (e.g. the `[ha]` role), without changing readiness.
pub(crate) fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// A reload starts (send [`ready`] when it ends).
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutting down.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: letting in-flight rotations finish"),
    ]);
}

/// The watchdog interval systemd asked for (`WatchdogSec=`), if any: `$WATCHDOG_USEC`,
/// unless `$WATCHDOG_PID` names another process (as sd_watchdog_enabled(3) reads them;
/// the `sd-notify` crate also requires `WATCHDOG_PID` to be set, which systemd always does
/// but a supervisor need not).
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Keep-alive for the watchdog.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}
