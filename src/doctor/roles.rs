//! Directory roles: the app's (the Graph token's `wids`, else Graph's role assignments of its
//! service principal), an account's, and whether the app's roles suffice to reset the
//! account's password, per Microsoft's "Who can reset passwords" table
//! (<https://learn.microsoft.com/en-us/entra/identity/role-based-access-control/privileged-roles-permissions#who-can-reset-passwords>).
//!
//! The daemon's readiness watch (`super::watch`) calls [`user_roles`], [`app_roles_now`] and
//! [`reset_rights`] per account, without the rest of doctor; a read Graph did not answer
//! (no answer, 429, 5xx) is [`Asked::NoAnswer`] or [`AppRoles::NoAnswer`], which the watch
//! takes as unknown and doctor prints as the same warning as any unreadable answer.

use super::{Asked, Check};
use crate::azure::Http;
use crate::config::ResolvedAccount;
use crate::entra_roles::Role;
use azure_core::credentials::Secret;
use base64::Engine as _;
use serde_json::Value;

/// Global Administrator's template id.
const GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";
/// Privileged Authentication Administrator's template id.
const PRIV_AUTH_ADMIN: &str = "7be44c8a-adaf-4e2a-84d6-ab2649e08a13";
const AUTH_ADMIN: &str = "c4e39bd9-1100-46d3-8c65-fb160da0071f";
const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";
const HELPDESK_ADMIN: &str = "729827e3-9c14-49f7-bb1b-9608f156bbb8";
const PASSWORD_ADMIN: &str = "966707d0-3269-4727-9be2-8c3a10f19b9d";
const DIRECTORY_READERS: &str = "88d8e3e3-8f55-4a1e-953a-9b9898b8876b";
const GROUPS_ADMIN: &str = "fdd7a751-b60b-444a-984c-02652fe8fa1c";
const GUEST_INVITER: &str = "95e79109-95c0-4d8e-aee3-d01accf2d47b";
const MESSAGE_CENTER_READER: &str = "790c1fb9-7f7d-4f88-86a1-ef1f95c05c1b";
const REPORTS_READER: &str = "4a5d8f65-41da-4de4-8968-e035b65339cf";
const UX_SUCCESS_MANAGER: &str = "27460883-1df1-4691-b032-3b79643e5e63";
const USAGE_SUMMARY_READER: &str = "75934031-6c7e-415a-99d7-48dbd49e875e";

/// "Who can reset passwords", by column: a reset role and the target roles it may reset (a
/// target without roles: all of them). Privileged Authentication Administrator and Global
/// Administrator reset everyone.
const RESETTABLE_BY: [(&str, &[&str]); 4] = [
    (
        PASSWORD_ADMIN,
        &[DIRECTORY_READERS, GUEST_INVITER, PASSWORD_ADMIN],
    ),
    (
        HELPDESK_ADMIN,
        &[
            DIRECTORY_READERS,
            GUEST_INVITER,
            HELPDESK_ADMIN,
            MESSAGE_CENTER_READER,
            PASSWORD_ADMIN,
            REPORTS_READER,
            UX_SUCCESS_MANAGER,
            USAGE_SUMMARY_READER,
        ],
    ),
    (
        AUTH_ADMIN,
        &[
            AUTH_ADMIN,
            DIRECTORY_READERS,
            GUEST_INVITER,
            MESSAGE_CENTER_READER,
            PASSWORD_ADMIN,
            REPORTS_READER,
            UX_SUCCESS_MANAGER,
            USAGE_SUMMARY_READER,
        ],
    ),
    (
        USER_ADMIN,
        &[
            DIRECTORY_READERS,
            GROUPS_ADMIN,
            GUEST_INVITER,
            HELPDESK_ADMIN,
            MESSAGE_CENTER_READER,
            PASSWORD_ADMIN,
            REPORTS_READER,
            USER_ADMIN,
            UX_SUCCESS_MANAGER,
            USAGE_SUMMARY_READER,
        ],
    ),
];
const RESET_ANYONE: [&str; 2] = [PRIV_AUTH_ADMIN, GLOBAL_ADMIN];
/// Graph's `passwordProfile` reference: "In app-only scenarios, the calling app must be
/// assigned a supported permission and at least the User Administrator Microsoft Entra role".
/// Helpdesk and Password Administrator, which the table allows, are therefore only a warning
/// for an app.
const APP_RESET_ROLES: [&str; 4] = [USER_ADMIN, AUTH_ADMIN, PRIV_AUTH_ADMIN, GLOBAL_ADMIN];

/// The permission doctor asks for to read role assignments.
const READ_PERMISSION: &str = "RoleManagement.Read.Directory";

/// A role's display name ([`crate::entra_roles`], the one table of built-in roles), or its
/// id when that table does not know it.
pub(crate) fn role_name(id: &str) -> String {
    crate::entra_roles::name_of(id)
        .map(str::to_owned)
        .unwrap_or_else(|| id.to_owned())
}

fn names(ids: &[String]) -> String {
    if ids.is_empty() {
        return "no directory role".into();
    }
    ids.iter()
        .map(|i| role_name(i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a holder of `app` (template ids) may reset the password of a holder of `target`.
pub(crate) fn can_reset(app: &[String], target: &[String]) -> bool {
    app.iter().any(|a| {
        RESET_ANYONE.iter().any(|r| r.eq_ignore_ascii_case(a))
            || RESETTABLE_BY.iter().any(|(role, rows)| {
                role.eq_ignore_ascii_case(a)
                    && target
                        .iter()
                        .all(|t| rows.iter().any(|r| r.eq_ignore_ascii_case(t)))
            })
    })
}

/// The role to suggest for an app that must reset a holder of `target`: User Administrator
/// (the least Graph documents for app-only resets), else Authentication Administrator (which
/// also resets Authentication Administrators), else Privileged Authentication Administrator.
fn role_to_grant(target: &[String]) -> &'static str {
    [USER_ADMIN, AUTH_ADMIN]
        .into_iter()
        .find(|role| can_reset(&[(*role).to_owned()], target))
        .unwrap_or(PRIV_AUTH_ADMIN)
}

/// A Graph read that did not give an answer doctor can use.
enum ReadError {
    /// 403: the token lacks the permission.
    Forbidden,
    /// No answer: Graph could not be reached, throttled (429) or failed (5xx), described.
    /// Doctor reports it as [`ReadError::Other`]; the readiness watch as unknown.
    NoAnswer(String),
    /// Anything else, described.
    Other(String),
}

/// A claim of an access token: `None` when the token is not a readable JWT, `Some(None)`
/// when the claim is absent. The payload is read, the signature is not checked.
fn claim(token: &Secret, name: &str) -> Option<Option<Value>> {
    let payload = token.secret().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    Some(claims.get(name).cloned())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn get(http: &Http, token: &Secret, url: url::Url) -> Result<Value, ReadError> {
    let resp = http
        .client
        .get(url)
        .bearer_auth(token.secret())
        .send()
        .await
        .map_err(|e| {
            ReadError::NoAnswer(format!(
                "Graph did not answer: {}",
                crate::azure::bounded(&crate::azure::error_chain(&e), None, 300)
            ))
        })?;
    let status = resp.status();
    if status == reqwest::StatusCode::FORBIDDEN {
        return Err(ReadError::Forbidden);
    }
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        let code = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(|c| format!(" {c}")))
            .unwrap_or_default();
        let text = format!("Graph answered {status}{code}");
        return Err(
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                ReadError::NoAnswer(text)
            } else {
                ReadError::Other(text)
            },
        );
    }
    resp.json()
        .await
        .map_err(|e| ReadError::Other(format!("Graph's answer cannot be read: {e}")))
}

fn url(base: &str, path: &str, filter: &str) -> Result<url::Url, ReadError> {
    let mut u = url::Url::parse(&format!("{base}/v1.0/{path}"))
        .map_err(|e| ReadError::Other(format!("graph_base {base:?} is not a URL: {e}")))?;
    u.query_pairs_mut().append_pair("$filter", filter);
    Ok(u)
}

/// The template ids of a principal's directory role assignments.
async fn assigned(
    http: &Http,
    base: &str,
    token: &Secret,
    principal: &str,
) -> Result<Vec<String>, ReadError> {
    let filter = format!("principalId eq '{}'", principal.replace('\'', "''"));
    let v = get(
        http,
        token,
        url(base, "roleManagement/directory/roleAssignments", &filter)?,
    )
    .await?;
    let mut ids: Vec<String> = v["value"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["roleDefinitionId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// The app's service principal object id: the token's `oid` (an app token's `oid` is its
/// service principal), else `GET /servicePrincipals?$filter=appId eq '{appid}'`.
async fn service_principal(http: &Http, base: &str, token: &Secret) -> Result<String, ReadError> {
    if let Some(Some(oid)) = claim(token, "oid") {
        if let Some(oid) = oid.as_str() {
            return Ok(oid.to_owned());
        }
    }
    let appid = claim(token, "appid")
        .flatten()
        .and_then(|a| a.as_str().map(str::to_owned))
        .ok_or_else(|| ReadError::Other("the Graph token names no app (appid)".into()))?;
    let filter = format!("appId eq '{}'", appid.replace('\'', "''"));
    let v = get(http, token, url(base, "servicePrincipals", &filter)?).await?;
    v["value"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ReadError::Other(format!("no service principal for app {appid}")))
}

/// The app's directory roles (template ids) with the check that reports them; `None` when
/// they cannot be known. `token` is the identity's Graph token; `base` its Graph base URL.
pub(crate) async fn app_directory_roles(
    http: &Http,
    base: &str,
    token: &Secret,
) -> (Check, Option<Vec<String>>) {
    const CHECK: &str = "app_directory_roles";
    let (ids, from) = match claim(token, "wids") {
        Some(Some(wids)) => (strings(&wids), "the token's wids"),
        _ => {
            let read = match service_principal(http, base, token).await {
                Ok(sp) => assigned(http, base, token, &sp).await,
                Err(e) => Err(e),
            };
            match read {
                Ok(ids) => (ids, "Graph's role assignments"),
                Err(ReadError::Forbidden) => {
                    return (
                        Check::warn(
                            CHECK,
                            "Graph refused to list the app's directory roles (403), and the token carries no wids",
                            format!("add the Microsoft Graph application permission {READ_PERMISSION} and grant admin consent, so doctor can read the roles; the app needs Privileged Authentication Administrator to reset accounts holding admin roles"),
                        ),
                        None,
                    )
                }
                Err(ReadError::Other(e) | ReadError::NoAnswer(e)) => {
                    return (
                        Check::warn(
                            CHECK,
                            format!("the app's directory roles cannot be read: {e}"),
                            "run doctor again; check graph_base and the network path to Graph",
                        ),
                        None,
                    )
                }
            }
        }
    };
    let check = if ids.iter().any(|i| can_reset(std::slice::from_ref(i), &[])) {
        Check::pass(CHECK, format!("{} (from {from})", names(&ids)))
    } else {
        Check::fail(
            CHECK,
            format!(
                "the app holds {} (from {from}): no role that may reset passwords",
                names(&ids)
            ),
            "assign the directory role Privileged Authentication Administrator to the app's service principal (Entra admin center > Roles and administrators); User Administrator suffices only for accounts without admin roles",
        )
    };
    (check, Some(ids))
}

/// The account whose roles are checked: its name (for the fix), its user, the user's object
/// id, and the roles it declares (`roles`; `None`: none declared, nothing to compare).
pub(crate) struct Holder<'a> {
    pub account: &'a str,
    pub user: &'a str,
    pub user_id: &'a str,
    pub declared: Option<&'a [Role]>,
}

impl<'a> Holder<'a> {
    /// The holder of a configured account, whose user has the object id `user_id`.
    pub(crate) fn of(a: &'a ResolvedAccount, user_id: &'a str) -> Self {
        Holder {
            account: &a.name,
            user: &a.user,
            user_id,
            declared: a.roles.as_deref(),
        }
    }
}

/// The checks `user_roles` and `reset_rights` of one account: its directory roles (read with
/// `token`, by the user's object id) against the roles it declares, and whether `app` (the
/// app's roles, `None` when unknown) may reset its password.
pub(crate) async fn account_roles(
    http: &Http,
    base: &str,
    token: &Secret,
    holder: &Holder<'_>,
    app: Option<&[String]>,
) -> Vec<Check> {
    let (roles_check, target) = user_roles(http, base, token, holder).await;
    vec![roles_check.check(), reset_rights(app, target.as_deref())]
}

/// The check `user_roles` of one account, and its roles (template ids) when Graph listed
/// them (doctor, the readiness watch and `keyturn adopt`).
pub(crate) async fn user_roles(
    http: &Http,
    base: &str,
    token: &Secret,
    holder: &Holder<'_>,
) -> (Asked, Option<Vec<String>>) {
    let user = holder.user;
    match assigned(http, base, token, holder.user_id).await {
        Ok(ids) => (Asked::Answered(judge(holder, &ids)), Some(ids)),
        Err(ReadError::Forbidden) => (
            Asked::Answered(Check::warn(
                "user_roles",
                format!("Graph refused to list {user}'s directory roles (403)"),
                format!("add the Microsoft Graph application permission {READ_PERMISSION} (or Directory.Read.All) and grant admin consent"),
            )),
            None,
        ),
        Err(ReadError::Other(e)) => (Asked::Answered(unreadable_roles(user, &e)), None),
        Err(ReadError::NoAnswer(e)) => (Asked::NoAnswer(unreadable_roles(user, &e)), None),
    }
}

/// The roles a holder declares and does not hold, and those it holds and does not declare
/// (template ids, compared without regard to case): `None` when it declares none.
pub(crate) fn drift(
    declared: Option<&[Role]>,
    held: &[String],
) -> Option<(Vec<String>, Vec<String>)> {
    let declared = declared?;
    let missing = declared
        .iter()
        .filter(|d| !held.iter().any(|h| h.eq_ignore_ascii_case(&d.id)))
        .map(|d| d.id.clone())
        .collect();
    let extra = held
        .iter()
        .filter(|h| !declared.iter().any(|d| d.id.eq_ignore_ascii_case(h)))
        .cloned()
        .collect();
    Some((missing, extra))
}

/// `user_roles` from the roles the holder holds: a declared role missing is a `fail` (a
/// consumer relying on it would fail), a role held and not declared a `warn`; without
/// declared roles, the roles held, as found.
fn judge(holder: &Holder<'_>, held: &[String]) -> Check {
    const CHECK: &str = "user_roles";
    let (user, account) = (holder.user, holder.account);
    let Some((missing, extra)) = drift(holder.declared, held) else {
        return Check::pass(CHECK, format!("{user} holds {}", names(held)));
    };
    let extra_fix = format!("`keyturn provision {account} --prune-roles --reason R` removes the roles not declared, or add them to the account's roles");
    match (missing.is_empty(), extra.is_empty()) {
        (true, true) => Check::pass(CHECK, format!("{user} holds {} as declared", names(held))),
        (false, _) => {
            let mut detail = format!(
                "{user} lacks the declared role(s) {} (holds {})",
                names(&missing),
                names(held)
            );
            let mut fix = format!("`keyturn provision {account} --reason R` assigns them (with the provision_identity's rights)");
            if !extra.is_empty() {
                detail.push_str(&format!("; holds {} not declared", names(&extra)));
                fix.push_str(&format!("; {extra_fix}"));
            }
            Check::fail(CHECK, detail, fix)
        }
        (true, false) => Check::warn(
            CHECK,
            format!(
                "{user} holds {} not declared in its roles (declared: {})",
                names(&extra),
                holder
                    .declared
                    .map(|d| d
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| "none".into())
            ),
            extra_fix,
        ),
    }
}

fn unreadable_roles(user: &str, e: &str) -> Check {
    Check::warn(
        "user_roles",
        format!("{user}'s directory roles cannot be read: {e}"),
        "run doctor again; check the network path to Graph",
    )
}

/// The app's directory roles as the readiness watch reads them.
pub(crate) enum AppRoles {
    /// Template ids.
    Known(Vec<String>),
    /// Graph refused to list them and the token carries no `wids`.
    Refused,
    /// Graph did not answer (described).
    NoAnswer(String),
}

/// The app's directory roles for the readiness watch: Graph's role assignments first (a
/// role removed since the token was issued shows at once, where the token's `wids` would
/// show it only at the next token), else the token's `wids` when Graph refuses.
pub(crate) async fn app_roles_now(http: &Http, base: &str, token: &Secret) -> AppRoles {
    let read = match service_principal(http, base, token).await {
        Ok(sp) => assigned(http, base, token, &sp).await,
        Err(e) => Err(e),
    };
    match read {
        Ok(ids) => AppRoles::Known(ids),
        Err(ReadError::NoAnswer(e)) => AppRoles::NoAnswer(e),
        Err(ReadError::Forbidden | ReadError::Other(_)) => match claim(token, "wids") {
            Some(Some(wids)) => AppRoles::Known(strings(&wids)),
            _ => AppRoles::Refused,
        },
    }
}

/// Whether the app's roles suffice to reset an account holding `target` (template ids; `None`
/// when unknown).
pub(crate) fn reset_rights(app: Option<&[String]>, target: Option<&[String]>) -> Check {
    const CHECK: &str = "reset_rights";
    let Some(app) = app else {
        return Check::warn(
            CHECK,
            "cannot tell: the app's directory roles are unknown",
            "see app_directory_roles; Privileged Authentication Administrator may reset every account",
        );
    };
    let strict: Vec<String> = app
        .iter()
        .filter(|a| APP_RESET_ROLES.iter().any(|r| r.eq_ignore_ascii_case(a)))
        .cloned()
        .collect();
    if strict
        .iter()
        .any(|a| RESET_ANYONE.iter().any(|r| r.eq_ignore_ascii_case(a)))
    {
        return Check::pass(CHECK, format!("{} may reset any account", names(&strict)));
    }
    let Some(target) = target else {
        return Check::warn(
            CHECK,
            format!(
                "cannot tell whether {} suffices: the account's roles are unknown",
                names(app)
            ),
            format!("see user_roles ({READ_PERMISSION}); an account holding admin roles needs Privileged Authentication Administrator on the app"),
        );
    };
    let grant = role_name(role_to_grant(target));
    if can_reset(&strict, target) {
        Check::pass(
            CHECK,
            format!(
                "{} may reset a user holding {}",
                names(&strict),
                names(target)
            ),
        )
    } else if can_reset(app, target) {
        Check::warn(
            CHECK,
            format!("Microsoft's table lets {} reset a user holding {}, but Graph documents app-only resets as needing at least User Administrator", names(app), names(target)),
            format!("assign the directory role {grant} to the app's service principal"),
        )
    } else {
        Check::fail(
            CHECK,
            format!(
                "the app's roles ({}) may not reset a user holding {}",
                names(app),
                names(target)
            ),
            format!("assign the directory role {grant} to the app's service principal (Entra admin center > Roles and administrators; see \"Who can reset passwords\" in docs/doctor.md)"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;

    fn v(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }
    const EXCHANGE: &str = "29232cdf-9323-42fd-ade2-1d097af3e4de";

    #[test]
    fn every_role_doctor_names_is_in_the_one_table() {
        for id in [
            GLOBAL_ADMIN,
            PRIV_AUTH_ADMIN,
            AUTH_ADMIN,
            USER_ADMIN,
            HELPDESK_ADMIN,
            PASSWORD_ADMIN,
            DIRECTORY_READERS,
            GROUPS_ADMIN,
            GUEST_INVITER,
            MESSAGE_CENTER_READER,
            REPORTS_READER,
            UX_SUCCESS_MANAGER,
            USAGE_SUMMARY_READER,
        ] {
            assert_ne!(role_name(id), id, "{id} has no name in entra_roles");
        }
        assert_eq!(role_name(USER_ADMIN), "User Administrator");
        // Names doctor did not know before it used entra_roles' table.
        assert_eq!(
            role_name("3a2c62db-5318-420d-8d74-23affee5d9d5"),
            "Intune Administrator"
        );
    }

    fn declared(names: &[&str]) -> Vec<Role> {
        names
            .iter()
            .flat_map(|n| crate::entra_roles::resolve(n).unwrap())
            .collect()
    }

    #[test]
    fn user_roles_compares_held_roles_with_declared_ones() {
        let d = declared(&["User Administrator", "Reports Reader"]);
        let holder = |declared| Holder {
            account: "svc-a",
            user: "svc-a@x",
            user_id: "1",
            declared,
        };
        // As declared.
        let c = judge(&holder(Some(&d)), &v(&[REPORTS_READER, USER_ADMIN]));
        assert_eq!(c.status, Status::Pass, "{c:?}");
        // Missing: fail, naming the role and the command that assigns it.
        let c = judge(&holder(Some(&d)), &v(&[USER_ADMIN]));
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.detail
                .contains("lacks the declared role(s) Reports Reader"),
            "{c:?}"
        );
        assert!(
            c.fix.contains("keyturn provision svc-a --reason R"),
            "{c:?}"
        );
        // Extra: warn, naming it and the prune.
        let c = judge(
            &holder(Some(&d)),
            &v(&[REPORTS_READER, USER_ADMIN, EXCHANGE]),
        );
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.detail.contains("Exchange Administrator not declared"),
            "{c:?}"
        );
        assert!(c.fix.contains("--prune-roles"), "{c:?}");
        // Both: fail, naming both.
        let c = judge(&holder(Some(&d)), &v(&[USER_ADMIN, EXCHANGE]));
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.detail.contains("Reports Reader"), "{c:?}");
        assert!(c.detail.contains("Exchange Administrator"), "{c:?}");
        // Nothing declared: as found.
        let c = judge(&holder(None), &v(&[EXCHANGE]));
        assert_eq!(c.status, Status::Pass, "{c:?}");
        // Declared empty: every held role is extra.
        let c = judge(&holder(Some(&[])), &v(&[EXCHANGE]));
        assert_eq!(c.status, Status::Warn, "{c:?}");
    }

    #[test]
    fn the_reset_table_decides_who_may_reset_whom() {
        assert!(can_reset(&v(&[USER_ADMIN]), &[]));
        assert!(can_reset(
            &v(&[USER_ADMIN]),
            &v(&[USER_ADMIN, REPORTS_READER])
        ));
        assert!(!can_reset(&v(&[USER_ADMIN]), &v(&[AUTH_ADMIN])));
        assert!(!can_reset(
            &v(&[USER_ADMIN]),
            &v(&[REPORTS_READER, EXCHANGE])
        ));
        assert!(can_reset(&v(&[HELPDESK_ADMIN]), &v(&[REPORTS_READER])));
        assert!(!can_reset(&v(&[PASSWORD_ADMIN]), &v(&[REPORTS_READER])));
        assert!(can_reset(
            &v(&[PRIV_AUTH_ADMIN]),
            &v(&[GLOBAL_ADMIN, EXCHANGE])
        ));
        assert!(!can_reset(
            &v(&["f2ef992c-3afb-46b9-b7cf-a126ee74c451"]),
            &[]
        ));
    }

    #[test]
    fn reset_rights_names_the_role_to_grant() {
        let c = reset_rights(Some(&v(&[USER_ADMIN])), Some(&v(&[EXCHANGE])));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("User Administrator"), "{c:?}");
        assert!(c.detail.contains("Exchange Administrator"), "{c:?}");
        assert!(
            c.fix.contains("Privileged Authentication Administrator"),
            "{c:?}"
        );
        // Authentication Administrator may reset another one; User Administrator may not.
        let c = reset_rights(Some(&v(&[HELPDESK_ADMIN])), Some(&v(&[AUTH_ADMIN])));
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.contains("Authentication Administrator"), "{c:?}");
        // Helpdesk: allowed by the table, not by Graph's app-only note.
        let c = reset_rights(Some(&v(&[HELPDESK_ADMIN])), Some(&[]));
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.fix.contains("User Administrator"), "{c:?}");
        assert_eq!(
            reset_rights(Some(&v(&[USER_ADMIN])), Some(&[])).status,
            Status::Pass
        );
        assert_eq!(
            reset_rights(Some(&v(&[PRIV_AUTH_ADMIN])), None).status,
            Status::Pass
        );
        assert_eq!(
            reset_rights(Some(&v(&[USER_ADMIN])), None).status,
            Status::Warn
        );
        assert_eq!(reset_rights(None, Some(&[])).status, Status::Warn);
    }
}
