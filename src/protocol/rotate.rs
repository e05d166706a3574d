//! A fresh rotation: stage → apply → verify → commit → finish, and the ways it ends
//! short of committed (abandoned, left pending).

use super::events::{directory_error_info, store_error_info};
use super::{Account, ApplyResult, Ctx, Engine, Request, Rotated, RotationError};
use crate::audit::{ErrorInfo, EventKind, Outcome};
use crate::directory::{Applied, DirectoryError, Verified};
use crate::password::Password;
use crate::store::{tag, NewVersion, Step, StoreError, Tags};
use rand::Rng;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

impl Engine {
    pub(super) async fn rotate_locked(
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
                    step: Step::Stage,
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
        if ctx.request.adopt {
            tags.insert(
                tag::ADOPTED.into(),
                self.clock.now().format(&Rfc3339).unwrap_or_default(),
            );
        }
        tags
    }

    /// Step 4: PATCH with the same password until Graph answers definitely.
    pub(super) async fn apply(
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
    pub(super) async fn after_apply(
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
                    step: Step::Commit,
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
                Ok(Verified::ConsentMissing {
                    client_id,
                    scope,
                    message,
                }) => {
                    return (
                        Outcome::Warning,
                        consent_advice(&client_id, &scope),
                        Some(ErrorInfo {
                            kind: "consent_missing".into(),
                            http_status: Some(400),
                            code: Some("AADSTS65001".into()),
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

    pub(super) async fn abandon(
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

    pub(super) async fn left_pending(
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

    pub(super) async fn left_pending_store(
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
}

fn jitter(d: Duration) -> Duration {
    // Full jitter between d/2 and d: spreads retries of many accounts.
    let ms = d.as_millis().max(2) as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

/// The warning of a verify sign-in refused for want of consent (AADSTS65001): exactly what to
/// grant, to which app, and the command that grants it tenant-wide (`docs/deploy.md`).
fn consent_advice(client_id: &str, scope: &str) -> String {
    format!(
        "the new password was accepted, but the app {client_id} holds no consent to sign the account in (AADSTS65001): grant it Microsoft Graph's delegated permissions \"{scope}\" for all users, e.g. `az ad app permission grant --id {client_id} --api {graph} --scope \"{scope}\"` (deploy/azure/setup.sh does), or turn verify off for the account",
        graph = crate::directory::GRAPH_APP_ID,
    )
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
