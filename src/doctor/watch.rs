//! The checks the daemon's readiness watch runs (`docs/doctor.md`, "The watch"): the cheap,
//! read-only subset of doctor's account checks, per account. The user checks go through the
//! account's own (rate-limited) Graph adapter; the role and sign-in readiness checks through
//! the identity's credential (its token cached and refreshed by `azure_identity`) and the
//! HTTP client, which [`Targets`] holds per account. No secret value is read: Key Vault is
//! not asked at all.
//!
//! [`Watch::account_checks`] is the one list of what the watch runs; [`Watch`] is the
//! daemon's [`ReadinessProbe`], built by `service` and handed new [`Targets`] at each reload.
//! A check whose question got no answer (Graph down, throttled, no token) is
//! [`Watched::Unknown`]: the watch keeps the last result and pages no one for an outage.

use super::roles::{self, AppRoles};
use super::{account, Asked, Check, Status};
use crate::azure::Http;
use crate::config::{IdentityConfig, Loaded};
use crate::daemon::{Managed, Probed, Readiness, ReadinessProbe};
use crate::directory::DirectoryError;
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

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
                check: c.check,
                readiness: match c.status {
                    Status::Pass | Status::Warn => Readiness::Ready,
                    Status::Fail => Readiness::NotReady,
                },
                detail: c.detail,
            },
            Watched::Unknown { check, detail } => Probed {
                check,
                readiness: Readiness::Unknown,
                detail,
            },
        }
    }
}

/// `user_exists`, `user_enabled`, `user_cloud_only` from one Graph read of the user, and the
/// user's object id when it could be read.
async fn user_checks(m: &Managed) -> (Vec<Watched>, Option<String>) {
    let user = &m.account.user;
    match m.account.directory.user(user).await {
        Ok(info) => (
            vec![
                Check::pass("user_exists", format!("{user} exists")).into(),
                account::user_enabled(user, info.account_enabled).into(),
                account::user_cloud_only(user, info.on_premises_sync_enabled).into(),
            ],
            Some(info.id),
        ),
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
            let checks = match found {
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
            };
            (checks, None)
        }
    }
}

fn unknown(check: &'static str, detail: &str) -> Watched {
    Watched::Unknown {
        check,
        detail: detail.to_owned(),
    }
}

impl From<Asked> for Watched {
    fn from(a: Asked) -> Self {
        match a {
            Asked::Answered(c) => Watched::Found(c),
            Asked::NoAnswer(c) => Watched::Unknown {
                check: c.check,
                detail: c.detail,
            },
        }
    }
}

/// The checks that need the identity's token, in the order the watch reports them.
const TOKEN_CHECKS: [&str; 3] = ["user_roles", "reset_rights", "sign_in_readiness"];

/// Conditional Access's What-If allows about one request a second per tenant: the watch
/// asks at most one a second per tenant, whatever its gap between accounts.
const CA_PACE: Duration = Duration::from_secs(1);

/// One identity as the watch uses it: its configuration and credential.
struct Identity {
    config: IdentityConfig,
    /// Its credential, or why it could not be built (never a secret).
    credential: Result<Arc<dyn TokenCredential>, String>,
    /// Graph's base URL and the token scope for it.
    base: String,
    scope: String,
}

/// What the watch needs beyond an account's [`Managed`]: per account, its sign-in settings
/// and its identity's credential; the HTTP client. Built from a loaded configuration (at
/// start-up and at each reload, where reading credential files may block).
#[derive(Default)]
pub struct Targets {
    http: Option<Http>,
    accounts: HashMap<String, Target>,
}

/// One watched account's part of [`Targets`]: only what [`Managed`] lacks. Kept for every
/// account for the daemon's life, so it is small: equal `signin_apps` lists are one shared
/// list (measured at 10,000 accounts, a whole `ResolvedAccount` per account here was
/// 7.4 MB of the daemon's 33 MB of heap).
struct Target {
    /// `signin_apps`, shared by the accounts that list the same apps.
    signin_apps: Arc<[String]>,
    signin_ip: Option<std::net::IpAddr>,
    verify: bool,
    /// The declared `roles` (`None`: not declared), shared by the accounts that declare the
    /// same list (a preset, typically).
    roles: Option<Arc<[crate::entra_roles::Role]>>,
    identity: Arc<Identity>,
}

impl Targets {
    /// The targets of `loaded`'s enabled accounts, with `http` and the identities'
    /// `credentials` (the ones the accounts use, so a token is fetched once per identity).
    pub(crate) fn build(
        loaded: &Loaded,
        http: &Http,
        credentials: &crate::app::Credentials,
    ) -> Targets {
        let mut identities: HashMap<&str, Arc<Identity>> = HashMap::new();
        let mut apps: HashMap<&[String], Arc<[String]>> = HashMap::new();
        let mut declared: std::collections::BTreeMap<
            &[crate::entra_roles::Role],
            Arc<[crate::entra_roles::Role]>,
        > = std::collections::BTreeMap::new();
        let mut accounts = HashMap::with_capacity(loaded.accounts.len());
        for a in loaded.accounts.iter().filter(|a| a.enabled) {
            let Some(config) = loaded.config.identities.get(&a.identity) else {
                continue;
            };
            let id = identities
                .entry(a.identity.as_str())
                .or_insert_with(|| {
                    let base = super::identity::graph_base(config);
                    let scope = config
                        .graph_scope
                        .clone()
                        .unwrap_or_else(|| crate::azure::graph::graph_scope(&base));
                    Arc::new(Identity {
                        config: config.clone(),
                        credential: credentials.get(&a.identity).cloned().ok_or_else(|| {
                            format!("no credential for the identity {:?}", a.identity)
                        }),
                        base,
                        scope,
                    })
                })
                .clone();
            let signin_apps = apps
                .entry(a.signin_apps.as_slice())
                .or_insert_with(|| a.signin_apps.as_slice().into())
                .clone();
            let roles = a
                .roles
                .as_deref()
                .map(|r| declared.entry(r).or_insert_with(|| r.into()).clone());
            accounts.insert(
                a.name.clone(),
                Target {
                    signin_apps,
                    signin_ip: a.signin_ip,
                    verify: a.verify,
                    roles,
                    identity: id,
                },
            );
        }
        Targets {
            http: Some(http.clone()),
            accounts,
        }
    }
}

/// The daemon's [`ReadinessProbe`]: [`Watch::account_checks`]. Clones share the targets, so
/// the reloader can hand the running watch new ones ([`Watch::set`]).
#[derive(Clone, Default)]
pub struct Watch {
    targets: Arc<RwLock<Arc<Targets>>>,
    /// When each tenant was last asked for a What-If evaluation.
    asked: Arc<tokio::sync::Mutex<HashMap<String, tokio::time::Instant>>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Watch {
    /// A watch over `targets`.
    pub fn new(targets: Targets) -> Watch {
        let w = Watch::default();
        w.set(targets);
        w
    }

    /// Hands the watch a reloaded configuration's targets.
    pub fn set(&self, targets: Targets) {
        *self.targets.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(targets);
    }

    fn targets(&self) -> Arc<Targets> {
        self.targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The checks the watch runs for one account, in a stable order, each cheap and
    /// read-only: `user_exists`, `user_enabled`, `user_cloud_only` (one Graph read of the
    /// user), `user_roles` and `reset_rights` (the account's and the app's directory roles),
    /// `sign_in_readiness` (Conditional Access's What-If), judged as `keyturn doctor` judges
    /// them.
    pub async fn account_checks(&self, m: &Managed) -> Vec<Watched> {
        let (mut checks, user_id) = user_checks(m).await;
        let targets = self.targets();
        let (Some(http), Some(t)) = (&targets.http, targets.accounts.get(&m.account.name)) else {
            return checks;
        };
        let Some(user_id) = user_id else {
            checks.extend(
                TOKEN_CHECKS
                    .iter()
                    .map(|c| unknown(c, "the user could not be read")),
            );
            return checks;
        };
        let id = &t.identity;
        let token = match &id.credential {
            Ok(cred) => cred
                .get_token(&[id.scope.as_str()], None)
                .await
                .map(|t| t.token)
                .map_err(|e| crate::azure::bounded(&crate::azure::error_chain(&e), None, 300)),
            Err(e) => Err(e.clone()),
        };
        let token = match token {
            Ok(t) => t,
            Err(e) => {
                let why = format!("no Graph token: {e}");
                checks.extend(TOKEN_CHECKS.iter().map(|c| unknown(c, &why)));
                return checks;
            }
        };
        let (user_roles, target) = roles::user_roles(
            http,
            &id.base,
            &token,
            &roles::Holder {
                account: &m.account.name,
                user: &m.account.user,
                user_id: &user_id,
                declared: t.roles.as_deref(),
            },
        )
        .await;
        let reset = match roles::app_roles_now(http, &id.base, &token).await {
            AppRoles::NoAnswer(e) => unknown(
                "reset_rights",
                &format!("the app's directory roles: no answer from Graph: {e}"),
            ),
            app => {
                let app = match &app {
                    AppRoles::Known(ids) => Some(ids.as_slice()),
                    _ => None,
                };
                let c = roles::reset_rights(app, target.as_deref());
                // The account's roles unknown for want of an answer: a verdict that needs
                // them is not known either.
                if matches!(user_roles, Asked::NoAnswer(_)) && c.status != Status::Pass {
                    unknown(
                        "reset_rights",
                        "the account's directory roles: no answer from Graph",
                    )
                } else {
                    c.into()
                }
            }
        };
        checks.push(user_roles.into());
        checks.push(reset);
        self.pace(id.config.tenant_id.as_deref().unwrap_or_default())
            .await;
        checks.push(
            super::signin::evaluate(
                super::signin::SignIn {
                    signin_apps: &t.signin_apps,
                    signin_ip: t.signin_ip,
                    verify: t.verify,
                },
                &id.base,
                &token,
                http,
                &user_id,
            )
            .await
            .into(),
        );
        checks
    }

    /// Waits until the tenant's last What-If evaluation is [`CA_PACE`] ago.
    async fn pace(&self, tenant: &str) {
        let mut asked = self.asked.lock().await;
        if let Some(last) = asked.get(tenant) {
            tokio::time::sleep_until(*last + CA_PACE).await;
        }
        asked.insert(tenant.to_owned(), tokio::time::Instant::now());
    }
}

#[async_trait]
impl ReadinessProbe for Watch {
    async fn probe(&self, account: &Managed) -> Vec<Probed> {
        self.account_checks(account)
            .await
            .into_iter()
            .map(Watched::probed)
            .collect()
    }
}
