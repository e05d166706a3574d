//! Requests from outside the schedule (signals, the admin socket): rotate, pause, resume,
//! reconcile and reload, with the answers sent back to the requester. This module holds the
//! types (`Command`, `Target`, the answers and their failures); `handle` the daemon's handling.

mod handle;
pub(crate) use handle::ListedReconcile;

use super::{Managed, Settings};
use crate::protocol::{Request, Rotated, RotationError, Tuning};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::oneshot;
use uuid::Uuid;

/// What a rotation request produced for one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationSummary {
    /// The rotation's id (for `--no-wait`, the id it was started with).
    pub rotation_id: Uuid,
    /// The new `<secret>` version, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// It completed a rotation an earlier attempt left pending.
    pub resumed: bool,
    /// Warnings (verify blocked by policy, …).
    pub warnings: Vec<String>,
    /// False when the caller did not wait for the end.
    pub completed: bool,
}

impl From<&Rotated> for RotationSummary {
    fn from(r: &Rotated) -> Self {
        RotationSummary {
            rotation_id: r.rotation_id,
            version: Some(r.version.clone()),
            resumed: r.resumed,
            warnings: r.warnings.clone(),
            completed: true,
        }
    }
}

/// The result of one account's rotation, as sent back to a requester.
pub(crate) type AccountResult = (String, Result<RotationSummary, AccountFailure>);

/// The result of a pause/resume/reconcile for one account.
pub(crate) type AccountAck = (String, Result<String, AccountFailure>);

/// Why a command did not complete for one account, as sent back to a requester. The
/// `Display` text is what the admin socket shows for the account.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AccountFailure {
    /// The daemon did not carry the command out (no such account, busy, paused, …).
    #[error(transparent)]
    Refused(#[from] AccountError),
    /// The rotation or reconcile ran and failed; the engine's error with its sources
    /// (shared: a job may answer both a rotate and a reconcile requester).
    #[error(transparent)]
    Rotation(Arc<RotationError>),
}

impl From<RotationError> for AccountFailure {
    fn from(e: RotationError) -> Self {
        AccountFailure::Rotation(Arc::new(e))
    }
}

/// Why a command was not carried out for one account ([`AccountFailure::Refused`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The command named an account the configuration does not have.
    #[error("no account named {name:?} is configured")]
    NoSuchAccount {
        /// The name asked for.
        name: String,
    },
    /// The command named a tenant that no configured account is in.
    #[error("no account is configured in tenant {tenant:?}; name the tenant as an identity's tenant_id has it (its id or its domain, as written there)")]
    NoAccountInTenant {
        /// The tenant asked for.
        tenant: String,
    },
    /// A manual rotation was asked for while one of the account runs.
    #[error("a rotation of this account is already running; try again when it ends")]
    AlreadyRotating,
    /// A manual rotation was asked for a paused account.
    #[error("the account is paused; resume it first")]
    Paused,
    /// A reconcile was asked for while a rotation of the account runs.
    #[error("busy: a rotation runs now")]
    ReconcileWhileRotating,
    /// A reload removed the account while its job waited in the tenant queue.
    #[error("the account was removed")]
    Removed,
    /// A rotation was asked for and reconciling found nothing to do.
    #[error("nothing to do")]
    NothingToDo,
    /// The account has `enabled = false`: the daemon leaves it alone.
    #[error("the account is disabled (enabled = false in the configuration): keyturn leaves it alone; set enabled = true and reload to manage it")]
    Disabled,
    /// A rotation was asked for an account whose secret does not exist yet.
    #[error("the account has no secret in Key Vault yet and waits for adoption: take it over with `keyturn adopt ACCOUNT --reason R` (see docs/first-deployment.md)")]
    AwaitingAdoption,
    /// The account was retired (`keyturn retire`): keyturn never rotates it again.
    #[error("the account is retired (keyturn retire): keyturn no longer rotates it; remove it from the configuration")]
    Retired,
    /// `adopt` found the secret there already: the account is managed already.
    #[error("the account's secret exists already (version {version}): it is managed already; `keyturn rotate` changes its password, `keyturn adopt --force` rotates it anyway and records an adoption")]
    AlreadyAdopted {
        /// The current version of the secret.
        version: String,
    },
    /// The pause file could not be written: the pause or resume was not applied.
    #[error("not done: {detail}")]
    PauseNotSaved {
        /// Why the file could not be written.
        detail: String,
    },
}

/// Which accounts a command is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One account by name.
    One(String),
    /// Every account in one tenant: those whose Graph identity's `tenant_id` is this
    /// (compared case-insensitively; an id and a domain of one tenant are not matched).
    Tenant(String),
    /// Every account.
    All,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::One(name) => f.write_str(name),
            Target::Tenant(tenant) => write!(f, "tenant {tenant}"),
            Target::All => f.write_str("all"),
        }
    }
}

/// A request from outside the schedule (signals, the admin socket).
pub enum Command {
    /// Rotate one account, a tenant's or all now. With `wait = false` the reply comes when
    /// the rotations are started.
    Rotate {
        target: Target,
        request: Request,
        wait: bool,
        reply: Option<oneshot::Sender<Vec<AccountResult>>>,
    },
    /// Stop (`paused = true`) or restart scheduled rotations of one account, a tenant's or
    /// all.
    Pause {
        target: Target,
        paused: bool,
        reply: Option<oneshot::Sender<Vec<AccountAck>>>,
    },
    /// `keyturn adopt`: a first rotation of one account, whose secret does not exist yet
    /// (or, with `force`, does).
    Adopt {
        account: String,
        request: Request,
        force: bool,
        reply: Option<oneshot::Sender<Vec<AccountResult>>>,
    },
    /// Run recovery and the drift check now.
    Reconcile {
        target: Target,
        request: Request,
        reply: Option<oneshot::Sender<Vec<AccountAck>>>,
    },
    /// Replace the accounts, settings and the engine's tuning with a new, already validated
    /// configuration.
    Reload {
        accounts: Vec<Managed>,
        settings: Settings,
        tuning: Tuning,
        reply: Option<oneshot::Sender<String>>,
    },
}

#[cfg(test)]
mod tests {
    use super::AccountError;

    #[test]
    fn account_errors_read_as_before() {
        for (e, text) in [
            (
                AccountError::NoSuchAccount { name: "x".into() },
                "no account named \"x\" is configured",
            ),
            (
                AccountError::AlreadyRotating,
                "a rotation of this account is already running; try again when it ends",
            ),
            (
                AccountError::Paused,
                "the account is paused; resume it first",
            ),
            (
                AccountError::ReconcileWhileRotating,
                "busy: a rotation runs now",
            ),
            (AccountError::Removed, "the account was removed"),
            (
                AccountError::NoAccountInTenant {
                    tenant: "fabrikam.com".into(),
                },
                "no account is configured in tenant \"fabrikam.com\"; name the tenant as an identity's tenant_id has it (its id or its domain, as written there)",
            ),
            (AccountError::NothingToDo, "nothing to do"),
        ] {
            assert_eq!(e.to_string(), text);
        }
    }
}
