//! The audit record: its fields, the kinds of event, and its readable form.

use super::tools;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// Schema version of the JSON records (see `docs/audit.md`).
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// What started a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The account's schedule fired.
    Schedule,
    /// The account was overdue at start-up.
    CatchUp,
    /// SIGUSR1.
    Signal,
    /// The admin socket.
    Socket,
    /// Completion of a rotation a previous run left pending.
    Recovery,
    /// Someone changed the password outside keyturn.
    Drift,
    /// `keyturn rotate` on the command line.
    Cli,
    /// `keyturn provision` created the user with this password (`docs/lifecycle.md`). A
    /// staging version with this trigger is left to `keyturn provision` by the daemon's
    /// recovery.
    Provision,
}

impl Trigger {
    /// The tag value written to Key Vault.
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch-up",
            Trigger::Signal => "signal",
            Trigger::Socket => "socket",
            Trigger::Recovery => "recovery",
            Trigger::Drift => "drift",
            Trigger::Cli => "cli",
            Trigger::Provision => "provision",
        }
    }
}

/// Who asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// keyturn itself (schedule, recovery, drift).
    Daemon,
    /// A local user (CLI, socket) identified by uid, name and pid.
    User {
        uid: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<i32>,
    },
}

impl Actor {
    /// The user running this process.
    pub fn current_user() -> Actor {
        Actor::User {
            uid: uid(),
            name: std::env::var("USER").ok(),
            pid: Some(std::process::id() as i32),
        }
    }
}

fn uid() -> u32 {
    // Without unsafe code there is no getuid(); the owner of /proc/self is the real uid.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// The kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum EventKind {
    #[serde(rename = "daemon.started")]
    DaemonStarted,
    #[serde(rename = "daemon.stopping")]
    DaemonStopping,
    #[serde(rename = "config.loaded")]
    ConfigLoaded,
    #[serde(rename = "config.rejected")]
    ConfigRejected,
    #[serde(rename = "rotation.started")]
    RotationStarted,
    #[serde(rename = "rotation.staged")]
    RotationStaged,
    #[serde(rename = "rotation.applied")]
    RotationApplied,
    #[serde(rename = "rotation.verified")]
    RotationVerified,
    #[serde(rename = "rotation.committed")]
    RotationCommitted,
    #[serde(rename = "rotation.completed")]
    RotationCompleted,
    #[serde(rename = "rotation.failed")]
    RotationFailed,
    #[serde(rename = "rotation.abandoned")]
    RotationAbandoned,
    #[serde(rename = "rotation.resumed")]
    RotationResumed,
    #[serde(rename = "rotation.left_pending")]
    RotationLeftPending,
    #[serde(rename = "drift.detected")]
    DriftDetected,
    /// An account has no secret in Key Vault and `on_missing_secret = "wait"`: the daemon
    /// leaves it alone until `keyturn adopt` (once per start, when first found).
    #[serde(rename = "account.awaiting_adoption")]
    AccountAwaitingAdoption,
    /// `keyturn retire` took the account out of management: the user disabled or deleted,
    /// its secrets soft-deleted (the detail says what was done; actor, reason, ticket).
    #[serde(rename = "account.retired")]
    AccountRetired,
    /// The readiness watch found a check's result changed (or failing the first time it
    /// ran): the `readiness` member says which check, from what, to what; the detail names
    /// the finding (`docs/doctor.md`, "The watch").
    #[serde(rename = "readiness.changed")]
    ReadinessChanged,
    #[serde(rename = "admin.command_accepted")]
    AdminCommandAccepted,
    #[serde(rename = "admin.command_refused")]
    AdminCommandRefused,
    /// The first record of a chain.
    #[serde(rename = "audit.genesis")]
    AuditGenesis,
    /// The last record of a file that reached its size limit; the chain continues in
    /// the next file.
    #[serde(rename = "audit.rotated")]
    AuditRotated,
    /// Writing works again after a failure, or an incomplete record was removed.
    #[serde(rename = "audit.recovered")]
    AuditRecovered,
    /// At start-up the log ended before the record its seal names: records were lost.
    #[serde(rename = "audit.seal_mismatch")]
    AuditSealMismatch,
    /// The oldest rotated files are about to be removed (`daemon.audit_retention`); the
    /// detail names the record the chain then starts at.
    #[serde(rename = "audit.pruned")]
    AuditPruned,
    /// Notifications (`[[notify]]`) were dropped: a sink's queue was full, or a receiver
    /// refused or never took them (at most one record per sink a minute; the detail counts
    /// them by reason).
    #[serde(rename = "notify.dropped")]
    NotifyDropped,
    /// `keyturn provision` started on an account (actor, reason, ticket; the detail says
    /// what it found and will do).
    #[serde(rename = "provision.started")]
    ProvisionStarted,
    /// The new user's password is in the staging secret, tagged `pending` with trigger
    /// `provision`, before the user is created (the write-ahead rule).
    #[serde(rename = "provision.staged")]
    ProvisionStaged,
    /// A provisioning left pending by an earlier run was found and is being completed.
    #[serde(rename = "provision.resumed")]
    ProvisionResumed,
    /// Graph created the user (or a lost create answer was resolved by reading it).
    #[serde(rename = "provision.user_created")]
    ProvisionUserCreated,
    /// The new user's password was committed as the latest version of `<secret>`.
    #[serde(rename = "provision.committed")]
    ProvisionCommitted,
    /// A declared directory role was assigned to the user (the detail names it).
    #[serde(rename = "provision.role_assigned")]
    ProvisionRoleAssigned,
    /// A role the declaration does not list was removed (`--prune-roles`).
    #[serde(rename = "provision.role_removed")]
    ProvisionRoleRemoved,
    /// Entra matches the declaration (the detail says what changed, or that nothing did).
    #[serde(rename = "provision.completed")]
    ProvisionCompleted,
    /// A step failed; the detail and error say which and what is left.
    #[serde(rename = "provision.failed")]
    ProvisionFailed,
    /// The create's outcome is unknown: the password stays in the staging secret, tagged
    /// pending; rerunning `keyturn provision` completes it.
    #[serde(rename = "provision.left_pending")]
    ProvisionLeftPending,
    /// Entra provably never took the staged password (its create was refused): the staging
    /// version is tagged `abandoned`.
    #[serde(rename = "provision.abandoned")]
    ProvisionAbandoned,
    /// This replica took the `[ha]` lease: it leads from now on (`docs/ha.md`).
    #[serde(rename = "ha.acquired")]
    HaAcquired,
    /// This replica lost the lease (not renewed in time, or taken): it stops acting.
    #[serde(rename = "ha.lost")]
    HaLost,
    /// This replica gave the lease up at a graceful stop, so a standby leads at once.
    #[serde(rename = "ha.released")]
    HaReleased,
}

impl EventKind {
    /// The dotted name used in records.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::DaemonStarted => "daemon.started",
            EventKind::DaemonStopping => "daemon.stopping",
            EventKind::ConfigLoaded => "config.loaded",
            EventKind::ConfigRejected => "config.rejected",
            EventKind::RotationStarted => "rotation.started",
            EventKind::RotationStaged => "rotation.staged",
            EventKind::RotationApplied => "rotation.applied",
            EventKind::RotationVerified => "rotation.verified",
            EventKind::RotationCommitted => "rotation.committed",
            EventKind::RotationCompleted => "rotation.completed",
            EventKind::RotationFailed => "rotation.failed",
            EventKind::RotationAbandoned => "rotation.abandoned",
            EventKind::RotationResumed => "rotation.resumed",
            EventKind::RotationLeftPending => "rotation.left_pending",
            EventKind::DriftDetected => "drift.detected",
            EventKind::AccountAwaitingAdoption => "account.awaiting_adoption",
            EventKind::AccountRetired => "account.retired",
            EventKind::ReadinessChanged => "readiness.changed",
            EventKind::AdminCommandAccepted => "admin.command_accepted",
            EventKind::AdminCommandRefused => "admin.command_refused",
            EventKind::AuditGenesis => "audit.genesis",
            EventKind::AuditRotated => "audit.rotated",
            EventKind::AuditRecovered => "audit.recovered",
            EventKind::AuditSealMismatch => "audit.seal_mismatch",
            EventKind::AuditPruned => "audit.pruned",
            EventKind::NotifyDropped => "notify.dropped",
            EventKind::ProvisionStarted => "provision.started",
            EventKind::ProvisionStaged => "provision.staged",
            EventKind::ProvisionResumed => "provision.resumed",
            EventKind::ProvisionUserCreated => "provision.user_created",
            EventKind::ProvisionCommitted => "provision.committed",
            EventKind::ProvisionRoleAssigned => "provision.role_assigned",
            EventKind::ProvisionRoleRemoved => "provision.role_removed",
            EventKind::ProvisionCompleted => "provision.completed",
            EventKind::ProvisionFailed => "provision.failed",
            EventKind::ProvisionLeftPending => "provision.left_pending",
            EventKind::ProvisionAbandoned => "provision.abandoned",
            EventKind::HaAcquired => "ha.acquired",
            EventKind::HaLost => "ha.lost",
            EventKind::HaReleased => "ha.released",
        }
    }
}

/// How it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Warning,
    Failure,
    Pending,
}

/// An Azure error, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ErrorInfo {
    /// Machine-readable kind (`throttled`, `rejected`, `unknown_outcome`, …).
    pub kind: String,
    /// HTTP status, when a service answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Graph error code or `AADSTSnnnnn` or Key Vault code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Azure request id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Human-readable message (never holds a password).
    pub message: String,
}

/// A readiness watch result that changed (the `readiness` member of `readiness.changed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessChange {
    /// The check's name (`user_enabled`, ... as `docs/doctor.md` lists them).
    pub check: String,
    /// Its result before: `ready`, `not_ready`, or `unchecked` (its first result).
    pub from: String,
    /// Its result now: `ready` or `not_ready` (a check that could not run changes nothing).
    pub to: String,
}

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// Schema version.
    pub v: u32,
    /// When, RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "rfc3339_millis")]
    pub time: OffsetDateTime,
    /// What happened.
    pub event: EventKind,
    /// The configured account name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The rotation this belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<Uuid>,
    /// The Entra user (object id or UPN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The vault URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault: Option<String>,
    /// The secret name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The Key Vault version this event wrote or read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What started the rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// Who asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// The reason given by a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The ticket given by a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// How it went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Azure request id of the call this event reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The error, for failures and warnings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// How long the rotation (or step) took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Which readiness check changed, from what to what (`readiness.changed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ReadinessChange>,
    /// Free text for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn rfc3339_millis<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*t))
}

/// RFC 3339, UTC, milliseconds: `2026-11-22T10:00:00.123Z`.
pub(crate) fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

impl AuditEvent {
    /// A new event of `kind` at `time`; fill the rest with struct update syntax or setters.
    pub fn new(kind: EventKind, time: OffsetDateTime) -> Self {
        AuditEvent {
            v: SCHEMA_VERSION,
            time,
            event: kind,
            account: None,
            rotation_id: None,
            user: None,
            vault: None,
            secret: None,
            version: None,
            trigger: None,
            actor: None,
            reason: None,
            ticket: None,
            outcome: None,
            request_id: None,
            error: None,
            duration_ms: None,
            readiness: None,
            detail: None,
        }
    }

    /// A one-line human-readable rendering (for the demo and terminals).
    pub fn human(&self) -> String {
        let mut s = format!("{} {:<22}", format_time(self.time), self.event.as_str());
        if let Some(a) = &self.account {
            s.push_str(&format!(" account={a}"));
        }
        if let Some(t) = &self.trigger {
            s.push_str(&format!(" trigger={}", t.as_str()));
        }
        if let Some(o) = &self.outcome {
            s.push_str(&format!(
                " outcome={}",
                serde_json::to_value(o)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            ));
        }
        if let Some(v) = &self.version {
            s.push_str(&format!(" version={}", tools::prefix(v, 8)));
        }
        if let Some(d) = self.duration_ms {
            s.push_str(&format!(" took={d}ms"));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(
                " error=[{}] {}",
                e.code.as_deref().unwrap_or(&e.kind),
                e.message
            ));
        }
        if let Some(d) = &self.detail {
            s.push_str(&format!(" ({d})"));
        }
        s
    }
}
