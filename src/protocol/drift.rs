//! Drift detection: Graph's last password change against the current version's rotation
//! time (`docs/protocol.md`, "Drift").

use super::{rotated_at, Account, Drift, Engine, RotationError};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::store::SecretRecord;

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
}
