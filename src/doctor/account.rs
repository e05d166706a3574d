//! The account checks: the Entra user (exists, enabled, not synced from on-premises), its
//! directory roles and whether the app may reset it (`super::roles`), its sign-in readiness
//! (`super::signin`: Conditional Access's What-If), the Key Vault secret (readable, present,
//! nothing left pending), write access (`super::vault`) and its age.

use super::{AccountReport, Check};
use crate::azure::Http;
use crate::config::{IdentityConfig, ResolvedAccount};
use crate::daemon::{first_due_at, FirstDue, Managed};
use crate::store::{tag, Listing};
use azure_core::credentials::Secret;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// How long past its due time a secret may be before its age is a warning (a rotation due
/// and retried with backoff is normal; a day late is not).
const AGE_GRACE: time::Duration = time::Duration::days(1);

/// What the identity checks found that the account checks use.
pub(super) struct FromIdentity<'a> {
    /// The account identity's Graph token.
    pub graph_token: Option<&'a Secret>,
    /// The app's directory roles, when known.
    pub app_roles: Option<&'a [String]>,
    /// The `vault_write` check of the account's vault and vault identity.
    pub vault_write: Check,
}

pub(super) async fn check(
    a: &ResolvedAccount,
    id: &IdentityConfig,
    m: &Managed,
    from: FromIdentity<'_>,
    http: &Http,
    now: OffsetDateTime,
    listing: Option<&Listing>,
) -> AccountReport {
    let mut checks = Vec::new();
    if !a.enabled {
        checks.push(Check::warn(
            "account_enabled",
            "enabled = false: keyturn leaves this account alone",
            "set enabled = true and `keyturn reload` to manage it",
        ));
    }
    match from.graph_token {
        Some(token) => {
            let (found, user_id) = user(a, id, token, http).await;
            checks.extend(found);
            match &user_id {
                Some(user_id) => {
                    let base = super::identity::graph_base(id);
                    checks.extend(
                        super::roles::account_roles(
                            http,
                            &base,
                            token,
                            &super::roles::Holder::of(a, user_id),
                            from.app_roles,
                        )
                        .await,
                    );
                }
                None => {
                    checks.push(Check::warn(
                        "user_roles",
                        "not checked: the user could not be read",
                        "fix user_exists first",
                    ));
                    checks.push(super::roles::reset_rights(from.app_roles, None));
                }
            }
            let exists = checks
                .iter()
                .any(|c| c.check == "user_exists" && c.status == super::Status::Pass);
            if let (true, Some(user_id)) = (exists, &user_id) {
                checks.push(super::sign_in_readiness(a, id, token, http, user_id).await);
            }
        }
        None => checks.push(Check::fail(
            "user_exists",
            format!("not checked: identity {:?} has no Graph token", a.identity),
            format!("fix identity {:?}'s graph_token check first", a.identity),
        )),
    }
    let mut vault_checks = vault(m, a, now, listing).await;
    // After secret_readable and nothing_pending, before secret_age.
    let at = vault_checks
        .iter()
        .position(|c| c.check == "secret_age")
        .unwrap_or(vault_checks.len());
    vault_checks.insert(at, from.vault_write);
    checks.extend(vault_checks);
    AccountReport {
        account: a.name.clone(),
        checks,
    }
}

/// `user_roles` alone for account `a` (`keyturn adopt`'s role check), with the account
/// identity `id` (named `id_name`): a token, the user's object id, its role assignments.
pub(super) async fn roles_only(
    a: &ResolvedAccount,
    id_name: &str,
    id: &IdentityConfig,
    http: &Http,
    network: &crate::config::NetworkConfig,
) -> Result<super::RoleReport, crate::azure::SetupError> {
    let declared = a
        .roles
        .as_ref()
        .map(|r| r.iter().map(|r| r.name.clone()).collect());
    let report = |check: Check, held: Option<&[String]>| {
        let (missing, extra) = held
            .and_then(|h| super::roles::drift(a.roles.as_deref(), h))
            .unwrap_or_default();
        let named = |ids: Vec<String>| ids.iter().map(|i| super::roles::role_name(i)).collect();
        super::RoleReport {
            check,
            declared: declared.clone(),
            missing: named(missing),
            extra: named(extra),
        }
    };
    let credential = crate::azure::credential(id_name, id, http, network)?;
    let base = super::identity::graph_base(id);
    let scope = id
        .graph_scope
        .clone()
        .unwrap_or_else(|| crate::azure::graph::graph_scope(&base));
    let token = match credential.get_token(&[scope.as_str()], None).await {
        Ok(t) => t.token,
        Err(e) => {
            return Ok(report(
                Check::warn(
                    "user_roles",
                    format!(
                        "not checked: identity {id_name:?} got no Graph token: {}",
                        crate::azure::bounded(&crate::azure::error_chain(&e), None, 300)
                    ),
                    format!("`keyturn doctor --account {}` names the fix", a.name),
                ),
                None,
            ))
        }
    };
    let (_, user_id) = user(a, id, &token, http).await;
    let Some(user_id) = user_id else {
        return Ok(report(
            Check::warn(
                "user_roles",
                "not checked: the user could not be read",
                format!("`keyturn doctor --account {}` names the fix", a.name),
            ),
            None,
        ));
    };
    let holder = super::roles::Holder::of(a, &user_id);
    let (asked, held) = super::roles::user_roles(http, &base, &token, &holder).await;
    Ok(report(asked.check(), held.as_deref()))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    id: Option<String>,
    account_enabled: Option<bool>,
    on_premises_sync_enabled: Option<bool>,
}

/// The user checks, and the user's object id when it could be read.
async fn user(
    a: &ResolvedAccount,
    id: &IdentityConfig,
    token: &Secret,
    http: &Http,
) -> (Vec<Check>, Option<String>) {
    (user_checks(a, id, token, http).await).unwrap_or_else(|c| (vec![c], None))
}

async fn user_checks(
    a: &ResolvedAccount,
    id: &IdentityConfig,
    token: &Secret,
    http: &Http,
) -> Result<(Vec<Check>, Option<String>), Check> {
    let base = super::identity::graph_base(id);
    let mut url = match url::Url::parse(&format!("{base}/v1.0/users")) {
        Ok(u) => u,
        Err(e) => {
            return Err(Check::fail(
                "user_exists",
                format!("graph_base {base:?} is not a URL: {e}"),
                "fix the identity's graph_base",
            ))
        }
    };
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.push(&a.user);
    }
    url.query_pairs_mut()
        .append_pair("$select", "id,accountEnabled,onPremisesSyncEnabled");
    let resp = match http
        .client
        .get(url)
        .bearer_auth(token.secret())
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return Err(Check::fail(
                "user_exists",
                format!(
                    "Graph did not answer: {}",
                    crate::azure::bounded(&crate::azure::error_chain(&e), None, 300)
                ),
                "check the network path to Graph (proxy, firewall, [network.resolve])",
            ))
        }
    };
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(Check::fail(
            "user_exists",
            format!("no user {:?} in the tenant", a.user),
            "check the account's `user` (its userPrincipalName or object id) and the identity's tenant_id",
        ));
    }
    if status == reqwest::StatusCode::FORBIDDEN {
        return Err(Check::fail(
            "user_exists",
            format!("Graph refused to read {:?} (403)", a.user),
            "add the Microsoft Graph application permission User.Read.All to the app and grant admin consent",
        ));
    }
    if !status.is_success() {
        return Err(Check::fail(
            "user_exists",
            format!("Graph answered {status} reading {:?}", a.user),
            "run doctor again; if it persists, check Graph's service health",
        ));
    }
    let user: User = match resp.json().await {
        Ok(u) => u,
        Err(e) => {
            return Err(Check::fail(
                "user_exists",
                format!("Graph's answer for {:?} cannot be read: {e}", a.user),
                "check graph_base points at Microsoft Graph",
            ))
        }
    };
    let checks = vec![
        Check::pass("user_exists", format!("{} exists", a.user)),
        user_enabled(&a.user, user.account_enabled),
        user_cloud_only(&a.user, user.on_premises_sync_enabled),
    ];
    Ok((checks, user.id))
}

/// `user_enabled` from Graph's `accountEnabled` (doctor and the readiness watch).
pub(super) fn user_enabled(user: &str, account_enabled: Option<bool>) -> Check {
    match account_enabled {
        Some(false) => Check::fail(
            "user_enabled",
            format!("{user} is disabled (accountEnabled = false): its sign-ins fail"),
            "enable the user in Entra ID, or set enabled = false for this account",
        ),
        _ => Check::pass("user_enabled", "accountEnabled"),
    }
}

/// `user_cloud_only` from Graph's `onPremisesSyncEnabled` (doctor and the readiness watch).
pub(super) fn user_cloud_only(user: &str, on_premises_sync_enabled: Option<bool>) -> Check {
    match on_premises_sync_enabled {
        Some(true) => Check::fail(
            "user_cloud_only",
            format!("{user} is synced from on-premises (onPremisesSyncEnabled): the next sync overwrites a password keyturn sets"),
            "manage the account where it is mastered (Active Directory), or use a cloud-only account",
        ),
        _ => Check::pass("user_cloud_only", "not synced from on-premises"),
    }
}

/// The secret checks. `listing`: the vault's listing, which tells whether the secret exists,
/// when it was rotated and whether a rotation was left pending (its tags), so that only the
/// secret's own value is read (`secret_readable`: the question is whether it can be read);
/// without it, or when it shows a disabled version, both secrets are read.
async fn vault(
    m: &Managed,
    a: &ResolvedAccount,
    now: OffsetDateTime,
    listing: Option<&Listing>,
) -> Vec<Check> {
    let store = &m.account.store;
    let staging = m.account.staging();
    let listed = listing.filter(|l| {
        [&a.secret, &staging]
            .iter()
            .all(|name| l.get(name.as_str()).is_none_or(|s| s.enabled))
    });
    // The current version's rotation time: from the listing, or from the value read.
    let listed_current = listed.map(|l| {
        l.get(&a.secret).map(|c| {
            crate::protocol::rotated_at_of(&c.tags, c.created).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        })
    });
    let current = match listed_current {
        // Listed as absent: nothing to read.
        Some(None) => Ok(None),
        _ => store.latest(&a.secret).await.map(|c| {
            c.map(|c| crate::protocol::rotated_at(&c).unwrap_or(OffsetDateTime::UNIX_EPOCH))
        }),
    };
    let current = match current {
        Ok(c) => c,
        Err(e) => {
            return vec![Check::fail(
                "secret_readable",
                format!("cannot read {:?} in {}: {e}", a.secret, store.vault()),
                format!(
                    "give identity {:?} the role Key Vault Secrets Officer on the vault (reads and writes), and check the vault's firewall",
                    a.vault_identity
                ),
            )]
        }
    };
    let mut checks = Vec::new();
    match &current {
        Some(_) => checks.push(Check::pass(
            "secret_readable",
            format!("{:?} in {} can be read", a.secret, store.vault()),
        )),
        None => checks.push(Check::warn(
            "secret_readable",
            format!(
                "no secret {:?} in {}: awaiting adoption",
                a.secret,
                store.vault()
            ),
            format!(
                "`keyturn adopt {} --reason R`, or store the current password in it, or set on_missing_secret = \"rotate\"",
                a.name
            ),
        )),
    }
    // A pending rotation's id, from the listing's tags or the staging secret read.
    let pending = match listed {
        Some(l) => Ok(l
            .get(&staging)
            .filter(|s| s.tag(tag::STATE) == Some(tag::PENDING))
            .map(|s| s.tag(tag::ROTATION_ID).unwrap_or("?").to_owned())),
        None => store.latest(&staging).await.map(|s| {
            s.filter(|s| s.tag(tag::STATE) == Some(tag::PENDING))
                .map(|s| s.tag(tag::ROTATION_ID).unwrap_or("?").to_owned())
        }),
    };
    match pending {
        Ok(Some(rotation)) => checks.push(Check::warn(
            "nothing_pending",
            format!("rotation {rotation} was left pending in {staging:?}"),
            "start keyturn (`keyturn run`): its start-up completes or abandons it",
        )),
        Ok(None) => checks.push(Check::pass("nothing_pending", "no rotation left pending")),
        Err(e) => checks.push(Check::fail(
            "nothing_pending",
            format!("cannot read {staging:?} in {}: {e}", store.vault()),
            format!(
                "give identity {:?} the role Key Vault Secrets Officer on the vault",
                a.vault_identity
            ),
        )),
    }
    if let FirstDue::At(due, _, rotated) = first_due_at(m, current, now) {
        checks.push(if now > due + AGE_GRACE {
            Check::warn(
                "secret_age",
                format!(
                    "the password was set {} and was due again {} (schedule {:?})",
                    rfc(rotated),
                    rfc(due),
                    m.schedule.pattern()
                ),
                "start keyturn or check why it did not rotate (`keyturn status`, the audit log); `keyturn rotate` rotates it now",
            )
        } else {
            Check::pass(
                "secret_age",
                format!("set {}, next due {}", rfc(rotated), rfc(due)),
            )
        });
    }
    checks
}

fn rfc(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}
