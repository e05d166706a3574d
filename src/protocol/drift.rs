//! Drift detection: Graph's last password change against the current version's rotation
//! time (`docs/protocol.md`, "Drift").

use super::{rotated_at, Account, Drift, Engine, RotationError};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::store::SecretRecord;
use time::OffsetDateTime;

impl Engine {
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
    pub(crate) async fn check_drift_of(
        &self,
        account: &Account,
        current: &SecretRecord,
    ) -> Result<Option<Drift>, RotationError> {
        let changed = self.last_password_change(account).await?;
        let Some(rotated_at) = rotated_at(current) else {
            return Ok(None);
        };
        match changed {
            Some(changed_at) if self.drifted(changed_at, rotated_at) => {
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

    /// Whether Graph's last password change is later than `rotated_at` (a rotation time a
    /// vault listing showed) by more than the tolerance: a drift *suspected* from a
    /// listing, which may be older than the account's last rotation. Records nothing; the
    /// caller confirms it with [`Engine::check_drift_of`] on a fresh read of `<secret>`.
    pub(crate) async fn drift_suspected(
        &self,
        account: &Account,
        rotated_at: OffsetDateTime,
    ) -> Result<bool, RotationError> {
        Ok(self
            .last_password_change(account)
            .await?
            .is_some_and(|changed_at| self.drifted(changed_at, rotated_at)))
    }

    /// Graph's `lastPasswordChangeDateTime` of the account's user (one user read).
    async fn last_password_change(
        &self,
        account: &Account,
    ) -> Result<Option<OffsetDateTime>, RotationError> {
        let user = account
            .directory
            .user(&account.user)
            .await
            .map_err(|source| RotationError::Directory {
                account: account.name.clone(),
                source,
            })?;
        Ok(user.last_password_change)
    }

    fn drifted(&self, changed_at: OffsetDateTime, rotated_at: OffsetDateTime) -> bool {
        // Checked: `rotated_at` comes from a tag anyone with write access can set.
        rotated_at
            .checked_add(self.tuning().drift_tolerance)
            .is_some_and(|limit| changed_at > limit)
    }
}
