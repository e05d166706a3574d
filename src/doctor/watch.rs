//! The checks the daemon's readiness watch runs (`docs/doctor.md`, "The watch"): the cheap,
//! read-only subset of doctor's account checks, per account, through the account's own
//! (rate-limited) Graph adapter. No secret value is read: Key Vault is not asked at all.
//!
//! [`account_checks`] is the one list of what the watch runs; [`Watch`] hands it to the
//! daemon as its [`ReadinessProbe`]. A check whose question got no answer (Graph down,
//! throttled, no token) is [`Watched::Unknown`]: the watch keeps the last result and pages
//! no one for an outage.

use super::{account, Check, Status};
use crate::daemon::{Managed, Probed, Readiness, ReadinessProbe};
use crate::directory::DirectoryError;
use async_trait::async_trait;

/// One watched check: what it found, or that it could not ask.
#[derive(Debug, Clone)]
pub enum Watched {
    /// Graph answered; `fail` is not ready, `pass` and `warn` are ready.
    Found(Check),
    /// No answer (Graph did not answer, throttled, no token): not a finding.
    Unknown {
        /// The check's name.
        check: &'static str,
        /// Why it could not run (never a secret).
        detail: String,
    },
}

impl From<Check> for Watched {
    fn from(c: Check) -> Self {
        Watched::Found(c)
    }
}

impl Watched {
    /// As the daemon takes it.
    fn probed(self) -> Probed {
        match self {
            Watched::Found(c) => Probed {
                check: c.check.to_owned(),
                readiness: match c.status {
                    Status::Pass | Status::Warn => Readiness::Ready,
                    Status::Fail => Readiness::NotReady,
                },
                detail: c.detail,
            },
            Watched::Unknown { check, detail } => Probed {
                check: check.to_owned(),
                readiness: Readiness::Unknown,
                detail,
            },
        }
    }
}

/// The checks the watch runs for one account, in a stable order. Each is cheap and
/// read-only; today one Graph user read (`user_exists`, `user_enabled`, `user_cloud_only`,
/// judged as `keyturn doctor` judges them).
pub async fn account_checks(m: &Managed) -> Vec<Watched> {
    // Added at merge, each `Check` into a `Watched` with `Watched::from`, and a question
    // that got no answer from Graph as `Watched::Unknown` (not a `fail`):
    // - sign-in readiness: `super::signin::sign_in_readiness` (Conditional Access What-If;
    //   its detail names each policy that applies and its grant controls);
    // - the role checks: `user_roles` (the account's directory roles) and `reset_rights`
    //   (whether the app's roles may reset it; the detail names the missing role).
    // They need the identity's Graph token and the HTTP client: add them to `Watch` (built
    // in `service`, rebuilt at reload) and pass `&Watch` here.
    user_checks(m).await
}

/// `user_exists`, `user_enabled`, `user_cloud_only` from one Graph read of the user.
async fn user_checks(m: &Managed) -> Vec<Watched> {
    let user = &m.account.user;
    match m.account.directory.user(user).await {
        Ok(info) => vec![
            Check::pass("user_exists", format!("{user} exists")).into(),
            account::user_enabled(user, info.account_enabled).into(),
            account::user_cloud_only(user, info.on_premises_sync_enabled).into(),
        ],
        Err(e) => {
            let found = match &e {
                DirectoryError::Rejected { status: 404, .. } => Some(Check::fail(
                    "user_exists",
                    format!("no user {user:?} in the tenant (Graph: 404)"),
                    "check the account's `user` and the identity's tenant_id; was the user deleted?",
                )),
                DirectoryError::Rejected { status: 403, .. } => Some(Check::fail(
                    "user_exists",
                    format!("Graph refused to read {user:?} (403): {e}"),
                    "add the Microsoft Graph application permission User.Read.All to the app and grant admin consent",
                )),
                DirectoryError::Rejected { .. } => Some(Check::fail(
                    "user_exists",
                    format!("Graph refused to read {user:?}: {e}"),
                    "run `keyturn doctor --account` for the details",
                )),
                DirectoryError::Unknown { .. }
                | DirectoryError::NotSent { .. }
                | DirectoryError::SignIn { .. } => None,
            };
            match found {
                // The user cannot be read: the checks that judge its properties have
                // nothing to judge this time.
                Some(c) => vec![
                    c.into(),
                    unknown("user_enabled", "the user could not be read"),
                    unknown("user_cloud_only", "the user could not be read"),
                ],
                None => {
                    let why = format!("no answer from Graph: {e}");
                    ["user_exists", "user_enabled", "user_cloud_only"]
                        .into_iter()
                        .map(|c| unknown(c, &why))
                        .collect()
                }
            }
        }
    }
}

fn unknown(check: &'static str, detail: &str) -> Watched {
    Watched::Unknown {
        check,
        detail: detail.to_owned(),
    }
}

/// The daemon's [`ReadinessProbe`]: [`account_checks`].
#[derive(Debug, Clone, Default)]
pub struct Watch;

#[async_trait]
impl ReadinessProbe for Watch {
    async fn probe(&self, account: &Managed) -> Vec<Probed> {
        account_checks(account)
            .await
            .into_iter()
            .map(Watched::probed)
            .collect()
    }
}
