//! The status read model: what the daemon knows about itself and each account, shared with
//! the admin socket's `status` and the metrics listener. The daemon writes it; they read it.

use serde::Serialize;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// What the daemon knows about an account (status answers, metrics, tests).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccountStatus {
    /// The account's name.
    pub name: String,
    /// The Entra user.
    pub user: String,
    /// The vault.
    pub vault: String,
    /// The secret.
    pub secret: String,
    /// The cron expression.
    pub schedule: String,
    /// When it is next due.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_due: Option<OffsetDateTime>,
    /// A rotation or reconcile runs now.
    pub busy: bool,
    /// Scheduled rotations are paused (kept across restarts in the state folder).
    pub paused: bool,
    /// The daemon manages it (`enabled`; false: no Azure calls, commands refused).
    pub enabled: bool,
    /// Its secret does not exist and `on_missing_secret = "wait"`: nothing is scheduled
    /// until `keyturn adopt`.
    pub awaiting_adoption: bool,
    /// `keyturn retire` retired it (its secret, or its deleted secret, is tagged
    /// `keyturn-retired`): never rotated or re-created again.
    pub retired: bool,
    /// One word for all of the above: `disabled`, `rotating`, `paused`,
    /// `awaiting_adoption`, `retired` or `idle` ([`AccountStatus::state_name`]).
    pub state: &'static str,
    /// Consecutive failures.
    pub failures: u32,
    /// The last rotation's outcome: `success`, `warning`, `failed: KIND`.
    pub last_outcome: Option<String>,
    /// When the last rotation ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_end: Option<OffsetDateTime>,
    /// When the last successful rotation ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
    /// The current `<secret>` version, when known.
    pub version: Option<String>,
    /// When the password in force was set (its `keyturn-rotated-at`), when known.
    #[serde(with = "time::serde::rfc3339::option")]
    pub rotated_at: Option<OffsetDateTime>,
    /// A rotation is left pending in the staging secret.
    pub pending: bool,
    /// Rotations by outcome since start (`success`, `warning`, `failed`).
    pub counts: std::collections::BTreeMap<String, u64>,
    /// What the readiness watch last found (`None`: not checked yet, the watch is off
    /// (`daemon.readiness_check_interval = "0s"`) or the account is disabled).
    pub readiness: Option<AccountReadiness>,
}

/// One watched check's result as a word: the check passed (`ready`), failed (`not_ready`), or
/// could not run (`unknown`: Graph did not answer, throttled, no token; not a finding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// The check passed (or only warns).
    Ready,
    /// The check failed: a rotation or the account's use would fail.
    NotReady,
    /// The check could not run this time.
    Unknown,
}

impl Readiness {
    /// The word in status, records and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::NotReady => "not_ready",
            Readiness::Unknown => "unknown",
        }
    }
}

/// What the readiness watch found about one account.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccountReadiness {
    /// Every known check passed (`Some(true)`), one failed (`Some(false)`), or no check
    /// has a known result yet (`None`).
    pub ready: Option<bool>,
    /// When the watch last looked at the account.
    #[serde(with = "time::serde::rfc3339::option")]
    pub checked_at: Option<OffsetDateTime>,
    /// Each watched check.
    pub checks: Vec<CheckReadiness>,
}

/// One watched check of one account.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReadiness {
    /// The check's name (`user_enabled`, ... as `docs/doctor.md` lists them).
    pub check: &'static str,
    /// The last look's result (`unknown` when it could not run).
    pub state: Readiness,
    /// The last known result, kept through `unknown` looks (the metric's value):
    /// `Some(true)` ready, `Some(false)` not ready, `None` never known.
    pub ready: Option<bool>,
    /// The finding of the last look (why it could not run, for `unknown`).
    pub detail: String,
    /// Since when the last known result holds.
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
}

impl AccountStatus {
    /// The account's state in one word, the first that applies of: `disabled`,
    /// `rotating` (a job runs), `retired`, `paused`, `awaiting_adoption`, `idle`.
    pub fn state_name(&self) -> &'static str {
        if !self.enabled {
            "disabled"
        } else if self.busy {
            "rotating"
        } else if self.retired {
            "retired"
        } else if self.paused {
            "paused"
        } else if self.awaiting_adoption {
            "awaiting_adoption"
        } else {
            "idle"
        }
    }
}

/// The daemon as a whole.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DaemonStatus {
    /// keyturn's version.
    pub version: String,
    /// When the daemon started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// Start-up recovery is done and scheduling runs.
    pub ready: bool,
    /// Stopping.
    pub stopping: bool,
    /// Every account.
    pub accounts: Vec<AccountStatus>,
    /// Last time the main loop ran (for the systemd watchdog and health checks).
    #[serde(skip)]
    pub heartbeat: Option<std::time::Instant>,
    /// The audit log's state when the status was taken (filled by the admin socket and
    /// the metrics listener from the audit sink).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<crate::audit::AuditHealth>,
    /// With `[ha]`: this replica's role and who leads (`docs/ha.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaStatus>,
    /// The last stop's grace period ran out and rotations were cut off: their requests may
    /// still land, so the `[ha]` lease is left to expire rather than released.
    #[serde(skip)]
    pub cut_off: bool,
}

/// A replica's place in the `[ha]` leader election.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HaStatus {
    /// `leader` (holds the lease and acts) or `standby` (answers `status`, refuses the rest).
    pub role: &'static str,
    /// This replica, as recorded in the lease blob's metadata when it leads.
    pub me: String,
    /// Who holds the lease, as the blob's metadata names it, when known.
    pub leader: Option<String>,
    /// The lease blob.
    pub lease_url: String,
}

impl HaStatus {
    /// `leader`.
    pub const LEADER: &'static str = "leader";
    /// `standby`.
    pub const STANDBY: &'static str = "standby";

    /// This replica leads.
    pub fn leads(&self) -> bool {
        self.role == Self::LEADER
    }
}

impl DaemonStatus {
    /// A standby (with `[ha]`, not holding the lease): mutating commands are refused with
    /// `not_leader`, naming [`HaStatus::leader`].
    pub fn standby(&self) -> Option<&HaStatus> {
        self.ha.as_ref().filter(|h| !h.leads())
    }
}

/// Shared view of the daemon's state.
pub(crate) type StatusBoard = Arc<Mutex<DaemonStatus>>;
