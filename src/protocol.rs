//! The rotation protocol (`docs/protocol.md`): stage → apply → verify → commit → finish,
//! recovery of rotations left `pending`, and drift detection.
//!
//! The invariant: at every instant, the password Entra ID holds for an account is the
//! latest version of `<secret>`, or the latest version of `<secret>-pending` while that
//! version is tagged `pending`. Every branch below exists to keep it.
//!
//! The engine is pure logic over [`SecretStore`], [`Directory`], [`AuditSink`] and
//! [`Clock`]; it reads no wall clock and does no I/O of its own.

use crate::audit::{
    Actor, AuditError, AuditEvent, AuditSink, ErrorInfo, EventKind, Outcome, Trigger,
};
use crate::clock::Clock;
use crate::directory::{Applied, Directory, DirectoryError, Verified};
use crate::password::{Password, PasswordPolicy, PolicyError};
use crate::store::{tag, NewVersion, SecretRecord, SecretStore, StoreError, Tags};
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

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

/// What the staging secret's name adds to `<secret>`.
pub const STAGING_SUFFIX: &str = "-pending";

/// The staging secret's name for `secret`.
pub fn staging_name(secret: &str) -> String {
    format!("{secret}{STAGING_SUFFIX}")
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
    pub rotated_at: OffsetDateTime,
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
    pub fn set_tuning(&self, tuning: Tuning) {
        *self.tuning.lock().unwrap_or_else(|e| e.into_inner()) = tuning;
    }

    fn lock_for(&self, account: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(account.to_owned()).or_default().clone()
    }

    /// True while a rotation of `account` runs in this process.
    pub fn is_busy(&self, account: &str) -> bool {
        self.lock_for(account).try_lock().is_err()
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

    /// Compares Graph's last password change with the current version's rotation time.
    pub async fn check_drift(&self, account: &Account) -> Result<Option<Drift>, RotationError> {
        let current = account
            .store
            .latest(&account.secret)
            .await
            .map_err(|source| RotationError::Read {
                account: account.name.clone(),
                source,
            })?;
        match current {
            Some(current) => self.check_drift_of(account, &current).await,
            None => Ok(None),
        }
    }

    /// [`Engine::check_drift`] against a `<secret>` version the caller has just read (the
    /// daemon reads it once for the drift check and the due time).
    pub async fn check_drift_of(
        &self,
        account: &Account,
        current: &SecretRecord,
    ) -> Result<Option<Drift>, RotationError> {
        let user = account
            .directory
            .user(&account.user)
            .await
            .map_err(|source| RotationError::Directory {
                account: account.name.clone(),
                source,
            })?;
        let Some(rotated_at) = rotated_at(current) else {
            return Ok(None);
        };
        match user.last_password_change {
            // Checked: `rotated_at` comes from a tag anyone with write access can set.
            Some(changed_at)
                if rotated_at
                    .checked_add(self.tuning().drift_tolerance)
                    .is_some_and(|limit| changed_at > limit) =>
            {
                let mut ev = AuditEvent::new(EventKind::DriftDetected, self.clock.now());
                ev.account = Some(account.name.clone());
                ev.user = Some(account.user.clone());
                ev.vault = Some(account.store.vault().to_owned());
                ev.secret = Some(account.secret.clone());
                ev.version = Some(current.version.clone());
                ev.outcome = Some(Outcome::Warning);
                ev.detail = Some(format!(
                    "Entra's password changed at {} but Key Vault's version is from {}: someone changed it outside keyturn",
                    crate::audit::format_time(changed_at),
                    crate::audit::format_time(rotated_at)
                ));
                self.record(&account.name, ev).await?;
                Ok(Some(Drift {
                    changed_at,
                    rotated_at,
                }))
            }
            _ => Ok(None),
        }
    }

    async fn record(&self, account: &str, ev: AuditEvent) -> Result<(), RotationError> {
        self.audit
            .record(&ev)
            .await
            .map_err(|source| RotationError::Audit {
                account: account.to_owned(),
                source,
            })
    }

    fn event(&self, ctx: &Ctx<'_>, kind: EventKind) -> AuditEvent {
        let mut ev = AuditEvent::new(kind, self.clock.now());
        ev.account = Some(ctx.account.name.clone());
        ev.rotation_id = Some(ctx.rotation_id);
        ev.user = Some(ctx.account.user.clone());
        ev.vault = Some(ctx.account.store.vault().to_owned());
        ev.trigger = Some(ctx.request.trigger);
        ev.actor = Some(ctx.request.actor.clone());
        ev
    }

    fn end_event(&self, ctx: &Ctx<'_>, kind: EventKind, outcome: Outcome) -> AuditEvent {
        let mut ev = self.event(ctx, kind);
        ev.outcome = Some(outcome);
        ev.reason = ctx.request.reason.clone();
        ev.ticket = ctx.request.ticket.clone();
        ev.duration_ms = Some(ctx.started.elapsed().as_millis() as u64);
        ev
    }

    async fn rotate_locked(
        &self,
        account: &Account,
        request: &Request,
    ) -> Result<Rotated, RotationError> {
        let ctx = Ctx {
            account,
            rotation_id: request.rotation_id.unwrap_or_else(Uuid::new_v4),
            request,
            started: tokio::time::Instant::now(),
        };
        let mut ev = self.event(&ctx, EventKind::RotationStarted);
        ev.reason = request.reason.clone();
        ev.ticket = request.ticket.clone();
        self.record(&account.name, ev).await?;

        // 2. Generate.
        let password = match account.policy.generate() {
            Ok(p) => p,
            Err(source) => {
                let mut ev = self.end_event(&ctx, EventKind::RotationFailed, Outcome::Failure);
                ev.error = Some(ErrorInfo {
                    kind: "policy".into(),
                    message: source.to_string(),
                    ..Default::default()
                });
                self.record(&account.name, ev).await?;
                return Err(RotationError::Policy {
                    account: account.name.clone(),
                    source,
                });
            }
        };

        // 3. Stage: nothing else happens until Key Vault has acknowledged this write.
        let staged = account
            .store
            .set(
                &account.staging(),
                NewVersion {
                    value: &password,
                    tags: self.tags(&ctx, Some(tag::PENDING)),
                    expires: None,
                },
            )
            .await;
        let staged = match staged {
            Ok(w) => w,
            Err(source) => {
                let mut ev = self.end_event(&ctx, EventKind::RotationFailed, Outcome::Failure);
                ev.secret = Some(account.staging());
                ev.error = Some(store_error_info(&source));
                ev.detail = Some("stage failed: nothing changed".into());
                self.record(&account.name, ev).await?;
                return Err(RotationError::Stage {
                    account: account.name.clone(),
                    source,
                });
            }
        };
        let mut ev = self.event(&ctx, EventKind::RotationStaged);
        ev.secret = Some(account.staging());
        ev.version = Some(staged.version.clone());
        ev.request_id = staged.request_id.clone();
        self.record(&account.name, ev).await?;

        // 4. Apply.
        match self.apply(&ctx, &password).await? {
            ApplyResult::Applied(applied) => {
                self.after_apply(&ctx, &password, &staged.version, applied, false)
                    .await
            }
            ApplyResult::Refused(err) => {
                // Every attempt with this fresh password was refused: Entra never took it.
                self.abandon(&ctx, &staged.version, err).await
            }
            ApplyResult::Unknown(err) => {
                self.left_pending(&ctx, &err.to_string(), Some(&err)).await
            }
        }
    }

    fn tags(&self, ctx: &Ctx<'_>, state: Option<&str>) -> Tags {
        let mut tags = Tags::new();
        if let Some(state) = state {
            tags.insert(tag::STATE.into(), state.into());
        }
        tags.insert(tag::ROTATION_ID.into(), ctx.rotation_id.to_string());
        tags.insert(tag::ACCOUNT.into(), ctx.account.name.clone());
        tags.insert(
            tag::ROTATED_AT.into(),
            self.clock.now().format(&Rfc3339).unwrap_or_default(),
        );
        tags.insert(tag::TRIGGER.into(), ctx.request.trigger.as_str().into());
        tags
    }

    /// Step 4: PATCH with the same password until Graph answers definitely.
    async fn apply(
        &self,
        ctx: &Ctx<'_>,
        password: &Password,
    ) -> Result<ApplyResult, RotationError> {
        let tuning = self.tuning();
        let mut delay = tuning.base_delay;
        let mut all_refused = true;
        let mut last_err = None;
        for attempt in 1..=tuning.apply_attempts.max(1) {
            match ctx
                .account
                .directory
                .reset_password(&ctx.account.user, password)
                .await
            {
                Ok(applied) => return Ok(ApplyResult::Applied(applied)),
                Err(err) => {
                    let retry_after = match &err {
                        DirectoryError::Rejected { .. } => None,
                        DirectoryError::Unknown { retry_after, .. } => {
                            all_refused = false;
                            *retry_after
                        }
                        DirectoryError::NotSent { .. } | DirectoryError::SignIn { .. } => {
                            all_refused = false;
                            None
                        }
                    };
                    tracing::warn!(account = %ctx.account.name, rotation_id = %ctx.rotation_id, attempt, error = %err, "reset attempt failed; retrying with the same value");
                    let definite = matches!(err, DirectoryError::Rejected { .. });
                    last_err = Some(err);
                    if definite && all_refused {
                        // A definite refusal will repeat: 400/403/404 do not heal by retrying.
                        break;
                    }
                    if attempt < tuning.apply_attempts {
                        let wait = retry_after
                            .unwrap_or_else(|| jitter(delay))
                            .max(Duration::from_millis(1));
                        tokio::time::sleep(wait.min(Duration::from_secs(600))).await;
                        delay = delay.saturating_mul(2).min(tuning.max_delay);
                    }
                }
            }
        }
        let err = last_err.unwrap_or_else(|| DirectoryError::NotSent {
            user: ctx.account.user.clone(),
            detail: "no attempt was made".into(),
        });
        Ok(
            if all_refused && matches!(err, DirectoryError::Rejected { .. }) {
                ApplyResult::Refused(err)
            } else {
                ApplyResult::Unknown(err)
            },
        )
    }

    /// Steps 5 to 7, once Graph has accepted the password.
    async fn after_apply(
        &self,
        ctx: &Ctx<'_>,
        password: &Password,
        staged_version: &str,
        applied: Applied,
        resumed: bool,
    ) -> Result<Rotated, RotationError> {
        let account = ctx.account;
        let mut ev = self.event(ctx, EventKind::RotationApplied);
        ev.request_id = applied.request_id.clone();
        ev.outcome = Some(Outcome::Success);
        self.record(&account.name, ev).await?;

        let mut warnings = Vec::new();
        // 5. Verify. After a 204, Entra holds the password whatever the sign-in says, so
        // no verify result stops the commit; it only warns.
        if account.verify {
            let (outcome, detail, error) = self.verify(ctx, password).await;
            if outcome != Outcome::Success {
                warnings.push(detail.clone());
            }
            let mut ev = self.event(ctx, EventKind::RotationVerified);
            ev.outcome = Some(outcome);
            ev.detail = Some(detail);
            ev.error = error;
            self.record(&account.name, ev).await?;
        }

        // 6. Commit.
        let now = self.clock.now();
        let committed = account
            .store
            .set(
                &account.secret,
                NewVersion {
                    value: password,
                    tags: self.tags(ctx, None),
                    expires: account.expiry.and_then(|e| now.checked_add(e)),
                },
            )
            .await;
        let committed = match committed {
            Ok(w) => w,
            Err(source) => {
                let cause = format!("commit to {} failed: {source}", account.secret);
                return self.left_pending_store(ctx, &cause, &source).await;
            }
        };
        let mut ev = self.event(ctx, EventKind::RotationCommitted);
        ev.secret = Some(account.secret.clone());
        ev.version = Some(committed.version.clone());
        ev.request_id = committed.request_id.clone();
        self.record(&account.name, ev).await?;

        // 7. Finish: mark the staging version committed (no new version).
        let mut tags = self.tags(ctx, Some(tag::COMMITTED));
        tags.insert(
            tag::ROTATED_AT.into(),
            now.format(&Rfc3339).unwrap_or_default(),
        );
        if let Err(e) = account
            .store
            .update_tags(&account.staging(), staged_version, tags)
            .await
        {
            warnings.push(format!(
                "the staging version is still tagged pending ({e}); recovery marks it committed later"
            ));
        }

        let mut ev = self.end_event(
            ctx,
            EventKind::RotationCompleted,
            if warnings.is_empty() {
                Outcome::Success
            } else {
                Outcome::Warning
            },
        );
        ev.secret = Some(account.secret.clone());
        ev.version = Some(committed.version.clone());
        if !warnings.is_empty() {
            ev.detail = Some(warnings.join("; "));
        }
        self.record(&account.name, ev).await?;
        Ok(Rotated {
            rotation_id: ctx.rotation_id,
            version: committed.version,
            resumed,
            warnings,
            finish_only: false,
        })
    }

    /// Step 5: sign in with the password; returns the outcome, a description and the error.
    async fn verify(
        &self,
        ctx: &Ctx<'_>,
        password: &Password,
    ) -> (Outcome, String, Option<ErrorInfo>) {
        let tuning = self.tuning();
        let attempts = tuning.verify_attempts.clamp(1, 9);
        let mut last = None;
        for attempt in 1..=attempts {
            match ctx
                .account
                .directory
                .verify(&ctx.account.user, password)
                .await
            {
                Ok(Verified::SignedIn) => {
                    return (
                        Outcome::Success,
                        "signed in with the new password".into(),
                        None,
                    )
                }
                Ok(Verified::BlockedByPolicy { aadsts, message }) => {
                    let detail = blocked_advice(aadsts);
                    return (
                        Outcome::Warning,
                        detail,
                        Some(ErrorInfo {
                            kind: "sign_in_blocked".into(),
                            http_status: Some(400),
                            code: Some(format!("AADSTS{aadsts}")),
                            request_id: None,
                            message,
                        }),
                    );
                }
                Err(err) => {
                    let replicating = matches!(err, DirectoryError::SignIn { aadsts: 50126, .. })
                        || matches!(err, DirectoryError::Unknown { .. });
                    last = Some(err);
                    if !replicating {
                        break;
                    }
                    if attempt < attempts {
                        tokio::time::sleep(tuning.verify_delay).await;
                    }
                }
            }
        }
        let err = last.unwrap_or_else(|| DirectoryError::NotSent {
            user: ctx.account.user.clone(),
            detail: "no sign-in attempt".into(),
        });
        (
            Outcome::Warning,
            format!("could not confirm the new password by signing in ({err}); Graph accepted it, so it is committed"),
            Some(directory_error_info(&err)),
        )
    }

    async fn abandon(
        &self,
        ctx: &Ctx<'_>,
        staged_version: &str,
        err: DirectoryError,
    ) -> Result<Rotated, RotationError> {
        let account = ctx.account;
        let mut tags = self.tags(ctx, Some(tag::ABANDONED));
        tags.remove(tag::ROTATED_AT);
        let tagged = account
            .store
            .update_tags(&account.staging(), staged_version, tags)
            .await;
        let mut ev = self.end_event(ctx, EventKind::RotationAbandoned, Outcome::Failure);
        ev.secret = Some(account.staging());
        ev.version = Some(staged_version.to_owned());
        ev.error = Some(directory_error_info(&err));
        ev.detail = Some(match &tagged {
            Ok(()) => "Entra refused the password; it still holds the previous one".into(),
            Err(e) => format!("Entra refused the password; the staging version could not be tagged abandoned ({e}) and stays pending until recovery settles it"),
        });
        self.record(&account.name, ev).await?;
        Err(RotationError::Abandoned {
            account: account.name.clone(),
            rotation_id: ctx.rotation_id,
            source: err,
        })
    }

    async fn left_pending(
        &self,
        ctx: &Ctx<'_>,
        cause: &str,
        err: Option<&DirectoryError>,
    ) -> Result<Rotated, RotationError> {
        let mut ev = self.end_event(ctx, EventKind::RotationLeftPending, Outcome::Pending);
        ev.secret = Some(ctx.account.staging());
        ev.error = err.map(directory_error_info);
        ev.detail = Some(
            "the password stays in the staging secret, tagged pending; recovery completes it"
                .into(),
        );
        self.record(&ctx.account.name, ev).await?;
        Err(RotationError::Pending {
            account: ctx.account.name.clone(),
            rotation_id: ctx.rotation_id,
            cause: cause.to_owned(),
        })
    }

    async fn left_pending_store(
        &self,
        ctx: &Ctx<'_>,
        cause: &str,
        err: &StoreError,
    ) -> Result<Rotated, RotationError> {
        let mut ev = self.end_event(ctx, EventKind::RotationLeftPending, Outcome::Pending);
        ev.secret = Some(ctx.account.secret.clone());
        ev.error = Some(store_error_info(err));
        ev.detail = Some("Entra holds the new password; it stays in the staging secret, tagged pending, until the commit succeeds".into());
        self.record(&ctx.account.name, ev).await?;
        Err(RotationError::Pending {
            account: ctx.account.name.clone(),
            rotation_id: ctx.rotation_id,
            cause: cause.to_owned(),
        })
    }

    async fn recover_locked(
        &self,
        account: &Account,
        request: &Request,
    ) -> Result<Option<Rotated>, RotationError> {
        let read = |source| RotationError::Read {
            account: account.name.clone(),
            source,
        };
        let staged = account
            .store
            .latest(&account.staging())
            .await
            .map_err(read)?;
        let Some(staged) = staged.filter(|s| s.tag(tag::STATE) == Some(tag::PENDING)) else {
            return Ok(None);
        };
        let rotation_id = staged
            .tag(tag::ROTATION_ID)
            .and_then(|s| Uuid::parse_str(s).ok())
            .unwrap_or_else(Uuid::new_v4);
        let recovery = Request {
            trigger: Trigger::Recovery,
            actor: request.actor.clone(),
            reason: request.reason.clone(),
            ticket: request.ticket.clone(),
            rotation_id: None,
        };
        let ctx = Ctx {
            account,
            rotation_id,
            request: &recovery,
            started: tokio::time::Instant::now(),
        };
        let mut ev = self.event(&ctx, EventKind::RotationResumed);
        ev.secret = Some(account.staging());
        ev.version = Some(staged.version.clone());
        ev.detail = Some(format!(
            "a pending rotation started by {} was found",
            staged.tag(tag::TRIGGER).unwrap_or("an unknown trigger")
        ));
        self.record(&account.name, ev).await?;

        let current = account.store.latest(&account.secret).await.map_err(read)?;
        if let Some(current) = &current {
            if current.tag(tag::ROTATION_ID) == staged.tag(tag::ROTATION_ID)
                && current.value == staged.value
            {
                // Only step 7 is missing.
                return self.finish_only(&ctx, &staged, current).await.map(Some);
            }
        }

        match self.apply(&ctx, &staged.value).await? {
            ApplyResult::Applied(applied) => self
                .after_apply(&ctx, &staged.value, &staged.version, applied, true)
                .await
                .map(Some),
            ApplyResult::Refused(err) => {
                // A refusal now does not prove Entra never took the password: an earlier
                // process may have applied it before, say, a role was removed. It is proof
                // only when Entra's password has not changed since the password was staged.
                match self.never_applied(account, &staged).await {
                    Ok(true) => self.abandon(&ctx, &staged.version, err).await.map(Some),
                    Ok(false) => self.left_pending(&ctx, "Entra refused the pending password, but it may have taken it earlier; not abandoning", Some(&err)).await.map(Some),
                    Err(e) => self.left_pending(&ctx, &format!("Entra refused the pending password and the last password change could not be read ({e})"), Some(&err)).await.map(Some),
                }
            }
            ApplyResult::Unknown(err) => self
                .left_pending(&ctx, &err.to_string(), Some(&err))
                .await
                .map(Some),
        }
    }

    /// True when Graph proves that the password has not changed since `staged` was written.
    async fn never_applied(
        &self,
        account: &Account,
        staged: &SecretRecord,
    ) -> Result<bool, DirectoryError> {
        let user = account.directory.user(&account.user).await?;
        Ok(match (user.last_password_change, staged.created) {
            (Some(changed), Some(created)) => changed
                .checked_add(self.tuning().clock_skew)
                .is_some_and(|c| c < created),
            _ => false,
        })
    }

    async fn finish_only(
        &self,
        ctx: &Ctx<'_>,
        staged: &SecretRecord,
        current: &SecretRecord,
    ) -> Result<Rotated, RotationError> {
        let account = ctx.account;
        let mut tags = staged.tags.clone();
        tags.insert(tag::STATE.into(), tag::COMMITTED.into());
        let warnings = Vec::new();
        if let Err(e) = account
            .store
            .update_tags(&account.staging(), &staged.version, tags)
            .await
        {
            // Still pending; the next recovery tries again. The invariant holds either way.
            let cause = format!("the staging version could not be tagged committed: {e}");
            let mut ev = self.end_event(ctx, EventKind::RotationLeftPending, Outcome::Pending);
            ev.error = Some(store_error_info(&e));
            self.record(&account.name, ev).await?;
            return Err(RotationError::Pending {
                account: account.name.clone(),
                rotation_id: ctx.rotation_id,
                cause,
            });
        }
        let mut ev = self.end_event(ctx, EventKind::RotationCompleted, Outcome::Success);
        ev.secret = Some(account.secret.clone());
        ev.version = Some(current.version.clone());
        ev.detail =
            Some("the password was already committed; marked the staging version committed".into());
        self.record(&account.name, ev).await?;
        Ok(Rotated {
            rotation_id: ctx.rotation_id,
            version: current.version.clone(),
            resumed: true,
            warnings,
            finish_only: true,
        })
    }
}

/// When the version's password became Entra's: its `keyturn-rotated-at` tag, or its
/// creation time for a secret keyturn adopted.
pub fn rotated_at(record: &SecretRecord) -> Option<OffsetDateTime> {
    record
        .tag(tag::ROTATED_AT)
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
        .or(record.created)
}

fn jitter(d: Duration) -> Duration {
    // Full jitter between d/2 and d: spreads retries of many accounts.
    let ms = d.as_millis().max(2) as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

fn blocked_advice(aadsts: u32) -> String {
    let (what, fix) = match aadsts {
        50076 => ("multi-factor authentication is required", "exclude the service account from MFA policies, or turn verify off for it"),
        50079 => ("the account must register for multi-factor authentication", "exclude the service account from the MFA registration policy, or turn verify off for it"),
        53003 => ("a Conditional Access policy blocks the sign-in", "exclude the service account (or keyturn's network) from the policy, or turn verify off for it"),
        530035 => ("security defaults block the sign-in", "use Conditional Access instead of security defaults, or turn verify off for it"),
        _ => ("a policy blocks the sign-in", "review the account's sign-in policies, or turn verify off for it"),
    };
    format!("the new password was accepted, but {what} (AADSTS{aadsts}): {fix}")
}

pub(crate) fn store_error_info(e: &StoreError) -> ErrorInfo {
    ErrorInfo {
        kind: e.kind().into(),
        http_status: e.status(),
        code: e.code().map(String::from),
        request_id: e.request_id().map(String::from),
        message: e.to_string(),
    }
}

pub(crate) fn directory_error_info(e: &DirectoryError) -> ErrorInfo {
    ErrorInfo {
        kind: e.kind().into(),
        http_status: e.status(),
        code: e.code(),
        request_id: e.request_id().map(String::from),
        message: e.to_string(),
    }
}
