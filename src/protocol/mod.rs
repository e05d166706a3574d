//! The rotation protocol (`docs/protocol.md`): stage → apply → verify → commit → finish,
//! recovery of rotations left `pending`, and drift detection.
//!
//! The invariant: at every instant, the password Entra ID holds for an account is the
//! latest version of `<secret>`, or the latest version of `<secret>-pending` while that
//! version is tagged `pending`. Every branch below exists to keep it.
//!
//! The engine is pure logic over [`SecretStore`], [`Directory`], [`AuditSink`] and
//! [`Clock`]; it reads no wall clock and does no I/O of its own.
//!
//! Layout: this file holds the public types ([`Account`], [`Tuning`], [`Request`],
//! [`Rotated`], [`Drift`], [`RotationError`]) and [`Engine`]'s entry points; `rotate`
//! the steps of a fresh rotation and how it ends short of committed; `recover` the
//! completion of a rotation left pending; `drift` drift detection; `events` the audit
//! events and the error details they carry.

use crate::audit::{Actor, AuditError, AuditSink, Trigger};
use crate::clock::Clock;
use crate::directory::{Applied, Directory, DirectoryError};
use crate::password::{PasswordPolicy, PolicyError};
use crate::store::{staging_name, tag, SecretRecord, SecretStore, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

mod drift;
mod events;
mod recover;
mod rotate;

/// Everything the protocol needs to know about one managed account.
#[derive(Clone)]
pub struct Account {
    /// The configured name (audit records, tags, locks).
    pub name: String,
    /// The Entra user: object id or UPN.
    pub user: String,
    /// The Key Vault secret that holds the current password.
    pub secret: String,
    /// How new passwords are made.
    pub policy: PasswordPolicy,
    /// Sign in with the new password after setting it.
    pub verify: bool,
    /// How long after a rotation `<secret>` should expire (period + grace), for Key Vault's
    /// own near-expiry events; `None` writes no `exp`.
    pub expiry: Option<time::Duration>,
    /// The account's vault.
    pub store: Arc<dyn SecretStore>,
    /// The account's tenant, through its Graph identity.
    pub directory: Arc<dyn Directory>,
}

impl Account {
    /// The staging (write-ahead) secret's name: `<secret>-pending`.
    pub fn staging(&self) -> String {
        staging_name(&self.secret)
    }
}

/// Retry and tolerance settings.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Graph PATCH attempts with the same password before leaving it pending.
    pub apply_attempts: u32,
    /// First backoff delay between attempts (doubles, with jitter, up to `max_delay`).
    pub base_delay: Duration,
    /// Longest backoff delay (a longer `Retry-After` is still honoured).
    pub max_delay: Duration,
    /// Sign-in attempts while Entra replicates the new password (AADSTS50126). Kept
    /// well under Entra's lock-out threshold of 10 failures.
    pub verify_attempts: u32,
    /// Delay between sign-in attempts.
    pub verify_delay: Duration,
    /// How much later than `keyturn-rotated-at` Graph's `lastPasswordChangeDateTime` may be
    /// before it counts as drift (clock skew and replication).
    pub drift_tolerance: time::Duration,
    /// Clock skew allowed between Key Vault's and Entra's clocks when proving that Entra
    /// never took a pending password (see `docs/protocol.md`, "Recovery proofs").
    pub clock_skew: time::Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            apply_attempts: 5,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            verify_attempts: 5,
            verify_delay: Duration::from_secs(5),
            drift_tolerance: time::Duration::minutes(5),
            clock_skew: time::Duration::minutes(5),
        }
    }
}

/// Who asked for a rotation, and why.
#[derive(Debug, Clone)]
pub struct Request {
    /// What started it.
    pub trigger: Trigger,
    /// Who started it.
    pub actor: Actor,
    /// A person's reason (socket, CLI).
    pub reason: Option<String>,
    /// A person's ticket number.
    pub ticket: Option<String>,
    /// The id to give a fresh rotation (so a caller can report it before it ends); a new
    /// one when absent. A resumed rotation keeps the id it was staged with.
    pub rotation_id: Option<Uuid>,
    /// An operator asked for it urgently (`keyturn rotate --all --urgent`): its requests may
    /// use the budget reserved for the vault's other clients (`limits.reserve`).
    pub urgent: bool,
    /// The rotation takes the account under management (`keyturn adopt`): the versions it
    /// writes carry [`crate::store::tag::ADOPTED`].
    pub adopt: bool,
}

impl Request {
    /// A request made by keyturn itself.
    pub fn daemon(trigger: Trigger) -> Self {
        Request {
            trigger,
            actor: Actor::Daemon,
            reason: None,
            ticket: None,
            rotation_id: None,
            urgent: false,
            adopt: false,
        }
    }
}

/// A rotation that completed: Entra and `<secret>` hold the same new password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The rotation's id (tags and audit records).
    pub rotation_id: Uuid,
    /// The new `<secret>` version.
    pub version: String,
    /// True when this completed a rotation a previous attempt left pending.
    pub resumed: bool,
    /// Warnings (verify blocked by MFA/Conditional Access, finish tag not written, …).
    pub warnings: Vec<String>,
    /// True when recovery found the password already committed and only tagged the
    /// staging version (no password changed).
    pub finish_only: bool,
}

/// Drift: someone changed the password outside keyturn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// Graph's `lastPasswordChangeDateTime`.
    pub changed_at: OffsetDateTime,
    /// When keyturn last rotated (or the adopted secret was created).
    pub(crate) rotated_at: OffsetDateTime,
}

/// Why a rotation did not complete. Every variant says what state it left.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("account {account}: could not read Key Vault: {source}; nothing was changed")]
    Read {
        account: String,
        #[source]
        source: StoreError,
    },
    #[error("account {account}: could not stage the new password in Key Vault: {source}; nothing was changed")]
    Stage {
        account: String,
        #[source]
        source: StoreError,
    },
    #[error("account {account}: could not read the user from Graph: {source}")]
    Directory {
        account: String,
        #[source]
        source: DirectoryError,
    },
    #[error("account {account}: rotation {rotation_id} abandoned: {source}; Entra still holds the previous password, which is the latest version of the secret")]
    Abandoned {
        account: String,
        rotation_id: Uuid,
        #[source]
        source: DirectoryError,
    },
    #[error("account {account}: rotation {rotation_id} left pending ({cause}); the password is in the staging secret and recovery completes it on the next attempt")]
    Pending {
        account: String,
        rotation_id: Uuid,
        cause: String,
    },
    #[error("account {account}: {source}")]
    Audit {
        account: String,
        #[source]
        source: AuditError,
    },
    #[error("account {account}: the password policy cannot be used: {source}")]
    Policy {
        account: String,
        #[source]
        source: PolicyError,
    },
}

impl RotationError {
    /// A short machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            RotationError::Read { .. } => "read",
            RotationError::Stage { .. } => "stage",
            RotationError::Directory { .. } => "directory",
            RotationError::Abandoned { .. } => "abandoned",
            RotationError::Pending { .. } => "pending",
            RotationError::Audit { .. } => "audit",
            RotationError::Policy { .. } => "policy",
        }
    }

    /// True when a password is waiting in the staging secret.
    pub fn is_pending(&self) -> bool {
        matches!(self, RotationError::Pending { .. })
    }
}

/// How a series of PATCH attempts with one password ended.
enum ApplyResult {
    Applied(Applied),
    /// Every attempt that reached Graph was a definite refusal.
    Refused(DirectoryError),
    /// At least one attempt may have taken effect, or none reached Graph.
    Unknown(DirectoryError),
}

/// Runs the protocol. One engine serves every account; it serializes rotations per account.
pub struct Engine {
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
    /// Read at the start of each step that uses it; a reload replaces it
    /// ([`Engine::set_tuning`]), and rotations under way keep the values they started with.
    tuning: Mutex<Tuning>,
    /// One lock per account name: one rotation per account at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Context of one rotation, for audit records.
struct Ctx<'a> {
    account: &'a Account,
    rotation_id: Uuid,
    request: &'a Request,
    started: tokio::time::Instant,
}

impl Engine {
    /// A new engine writing audit records to `audit` and reading time from `clock`.
    pub fn new(audit: Arc<dyn AuditSink>, clock: Arc<dyn Clock>, tuning: Tuning) -> Self {
        Engine {
            audit,
            clock,
            tuning: Mutex::new(tuning),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The engine's tuning in force.
    pub fn tuning(&self) -> Tuning {
        self.tuning
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the tuning (a configuration reload); steps that start later use it.
    pub(crate) fn set_tuning(&self, tuning: Tuning) {
        *self.tuning.lock().unwrap_or_else(|e| e.into_inner()) = tuning;
    }

    fn lock_for(&self, account: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(account.to_owned()).or_default().clone()
    }

    /// Rotates the account's password. A pending rotation is completed first, and then
    /// counts as this rotation (a new password is never generated while one is pending).
    pub async fn rotate(
        &self,
        account: &Account,
        request: &Request,
    ) -> Result<Rotated, RotationError> {
        let lock = self.lock_for(&account.name);
        let _guard = lock.lock().await;
        if let Some(done) = self.recover_locked(account, request).await? {
            // A recovery that applied the pending password satisfies the request. One that
            // only marked an already committed rotation goes on to a fresh rotation.
            if !done.finish_only {
                return Ok(done);
            }
        }
        self.rotate_locked(account, request).await
    }

    /// Completes or settles a rotation left pending; `Ok(None)` when nothing was pending.
    pub async fn recover(
        &self,
        account: &Account,
        request: &Request,
    ) -> Result<Option<Rotated>, RotationError> {
        let lock = self.lock_for(&account.name);
        let _guard = lock.lock().await;
        self.recover_locked(account, request).await
    }
}

/// When the version's password became Entra's: its `keyturn-rotated-at` tag, or its
/// creation time for a secret keyturn adopted.
pub(crate) fn rotated_at(record: &SecretRecord) -> Option<OffsetDateTime> {
    rotated_at_of(&record.tags, record.created)
}

/// [`rotated_at`] from a version's tags and creation time (a vault listing has both, and
/// no value).
pub(crate) fn rotated_at_of(
    tags: &crate::store::Tags,
    created: Option<OffsetDateTime>,
) -> Option<OffsetDateTime> {
    tags.get(tag::ROTATED_AT)
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
        .or(created)
}
