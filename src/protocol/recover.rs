//! Recovery of a rotation left `pending` in the staging secret: finish it, re-apply its
//! password, or abandon it when Graph proves it was never applied.

use super::events::store_error_info;
use super::{Account, ApplyResult, Ctx, Engine, Request, Rotated, RotationError};
use crate::audit::{EventKind, Outcome, Trigger};
use crate::directory::DirectoryError;
use crate::store::{tag, SecretRecord};
use uuid::Uuid;

impl Engine {
    pub(super) async fn recover_locked(
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
            urgent: request.urgent,
            // Completing an adoption's rotation completes the adoption.
            adopt: request.adopt || staged.tag(tag::ADOPTED).is_some(),
        };
        let ctx = Ctx {
            account,
            rotation_id,
            request: &recovery,
            started: tokio::time::Instant::now(),
        };
        if staged.tag(tag::TRIGGER) == Some(Trigger::Provision.as_str()) {
            // `keyturn provision` staged this password before creating the user: the user
            // may not exist yet, or its create may still be in flight, or the user may be
            // someone else's. Re-applying (a reset) or abandoning here could be wrong, so
            // it is left to `keyturn provision`, which settles it by reading the user.
            // Only the harmless finish (the password already in `<secret>`) is done here.
            let current = account.store.latest(&account.secret).await.map_err(read)?;
            let committed = current.as_ref().is_some_and(|c| {
                c.tag(tag::ROTATION_ID) == staged.tag(tag::ROTATION_ID) && c.value == staged.value
            });
            if !committed {
                let mut ev = self.end_event(&ctx, EventKind::RotationLeftPending, Outcome::Pending);
                ev.secret = Some(account.staging());
                ev.version = Some(staged.version.clone());
                ev.detail = Some(format!("`keyturn provision` staged this password to create the user and has not completed; keyturn leaves it to `keyturn provision {}` (rerun it if it was interrupted) and neither resets, abandons nor rotates the account meanwhile", account.name));
                self.record(&account.name, ev).await?;
                return Err(RotationError::Pending {
                    account: account.name.clone(),
                    rotation_id,
                    cause: format!("a provisioning of the account is in flight or was interrupted: rerun `keyturn provision {}` to complete it", account.name),
                });
            }
        }
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
