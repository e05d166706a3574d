//! The user lifecycle: `POST /{v1.0|beta}/users` (create), `DELETE /users/{id|upn}` (soft
//! delete) and the deleted items, `GET /directory/deletedItems/{id}`, `GET
//! /directory/deletedItems/microsoft.graph.user`, `POST /directory/deletedItems/{id}/restore`
//! and `DELETE /directory/deletedItems/{id}` (permanent).
//!
//! Wire facts (Graph's "Create user", "Delete a user", "Get deleted item", "List deleted
//! items", "Restore deleted item" pages, checked 2026-11-30):
//! - create needs `User.ReadWrite.All` or `Directory.ReadWrite.All` (application), a signed-in
//!   caller User Administrator (or Global Administrator); the required properties are
//!   `accountEnabled`, `displayName`, `mailNickname`, `userPrincipalName` and `passwordProfile`
//!   (with `password`); success is `201 Created` with the user (its default properties).
//!   `forceChangePasswordNextSignIn` defaults to `true`.
//! - a missing property: "Property {name} value is required but is empty or missing." (the
//!   service's answer quoted in msgraph-sdk-powershell#230, 2023); a UPN on a domain that is not
//!   verified: "The domain portion of the userPrincipalName property is invalid. You must use one
//!   of the verified domain names in your organization." (quoted by Okta's and Microsoft Q&A's
//!   pages); a UPN taken: "Another object with the same value for property userPrincipalName
//!   already exists."; a weak password: the message `PATCH` answers.
//! - delete needs `User.ReadWrite.All` (application; `Directory.ReadWrite.All` is no longer
//!   enough), a signed-in caller User Administrator or Privileged Authentication Administrator;
//!   deleting a user who holds privileged administrator roles needs a higher role as in "Who can
//!   perform sensitive actions" (`crate::roles::may_act_sensitive`), for apps too ("In app-only
//!   scenarios, the User.ReadWrite.All application permission isn't enough privilege to delete
//!   users with privileged administrative roles"). `204` on success; the user moves to the
//!   deleted items for 30 days.
//!
//! **Unsure** (docs/emulator.md): the verified domains (the emulator takes the tenant's
//! `domain` and the domains of its users' UPNs); the message for a `passwordProfile` without
//! `password`; a deleted user's `userPrincipalName` (Entra prefixes the object id without
//! hyphens, as the emulator does); the restore's answer when the UPN was taken meanwhile; the
//! deleted items' read permissions for signed-in callers (the emulator lets any signed-in
//! caller read).

use super::properties::{check_patch, property, DEFAULT_PROPERTIES};
use super::{bad_request, denied, graph_error, not_found, throttled};
use crate::http::{empty, json, rfc3339, with_header, Req, Resp};
use crate::jwt::Claims;
use crate::rules::check_password_rules;
use crate::shared::{lock, Shared};
use crate::state::{DeletedUser, State, User};
use hyper::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Application permissions that allow creating users.
const CREATE_PERMS: [&str; 2] = ["User.ReadWrite.All", "Directory.ReadWrite.All"];
/// Directory roles of a signed-in caller that may create users.
const CREATE_ROLES: [&str; 2] = ["User Administrator", "Global Administrator"];
/// Application permission that allows deleting (and restoring) users.
const DELETE_PERM: &str = "User.ReadWrite.All";
/// Directory roles of a signed-in caller that may delete (and restore) users.
const DELETE_ROLES: [&str; 3] = [
    "User Administrator",
    "Privileged Authentication Administrator",
    "Global Administrator",
];
/// Application permissions that allow reading deleted users.
const DELETED_READ_PERMS: [&str; 4] = [
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
/// Properties a create must carry (`password` inside `passwordProfile`).
const REQUIRED: [&str; 5] = [
    "accountEnabled",
    "displayName",
    "mailNickname",
    "userPrincipalName",
    "passwordProfile",
];
/// Characters Entra accepts in a UPN's local part besides letters and digits ("username
/// policies").
const UPN_SYMBOLS: &str = "'.-_!#^~";

const UPN_TAKEN: &str =
    "Another object with the same value for property userPrincipalName already exists.";

fn caller_roles(st: &State, claims: &Claims) -> Vec<String> {
    if claims.idtyp == "app" {
        st.app(&claims.tid, &claims.appid)
            .map(|a| a.directory_roles.clone())
            .unwrap_or_default()
    } else {
        crate::roles::names(&claims.wids)
    }
}

fn has_perm(claims: &Claims, perms: &[&str]) -> bool {
    claims.roles.iter().any(|r| perms.contains(&r.as_str()))
}

fn has_role(st: &State, claims: &Claims, roles: &[&str]) -> bool {
    caller_roles(st, claims)
        .iter()
        .any(|r| roles.contains(&r.as_str()))
}

/// A 400 with Graph's `details` (code and target), as the property errors carry.
fn invalid(req: &Req, rid: &str, message: &str, code: &str, target: &str) -> Resp {
    let body = json!({
        "error": {
            "code": "Request_BadRequest",
            "message": message,
            "details": [{"code": code, "target": target}],
            "innerError": {
                "date": rfc3339(time::OffsetDateTime::now_utc().unix_timestamp()),
                "request-id": rid,
                "client-request-id": req.header("client-request-id").unwrap_or(rid),
            }
        }
    });
    json(400, &body)
}

/// The tenant's verified domains as the emulator knows them: its `domain` and the domains of
/// its users' UPNs (lower case).
fn verified_domains(st: &State, tenant: &str) -> Vec<String> {
    let mut out: Vec<String> = st
        .tenant(tenant)
        .and_then(|t| t.domain.clone())
        .into_iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    for u in st.users.iter().filter(|u| u.tenant == tenant) {
        if let Some((_, d)) = u.upn.rsplit_once('@') {
            let d = d.to_ascii_lowercase();
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

/// A user's default properties with the entity's `@odata.context`.
fn user_json(u: &User, context: &str) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("@odata.context".into(), json!(context));
    for name in DEFAULT_PROPERTIES {
        body.insert(name.to_string(), property(u, name));
    }
    Value::Object(body)
}

/// `POST /users`: the caller's state lock is held.
pub(super) fn create(
    shared: &Shared,
    st: &mut State,
    req: &Req,
    claims: &Claims,
    rid: &str,
) -> Resp {
    let allowed = if claims.idtyp == "app" {
        has_perm(claims, &CREATE_PERMS)
    } else {
        has_role(st, claims, &CREATE_ROLES)
    };
    if !allowed {
        return denied(req, rid);
    }
    let unreadable = "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.";
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return bad_request(req, rid, unreadable);
    };
    let Some(obj) = body.as_object() else {
        return bad_request(req, rid, unreadable);
    };
    if let Err(message) = check_patch(obj, None) {
        return bad_request(req, rid, &message);
    }
    for name in REQUIRED {
        let present = match obj.get(name) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(_) => true,
        };
        if !present {
            return invalid(
                req,
                rid,
                &format!("Property {name} value is required but is empty or missing."),
                "PropertyRequired",
                name,
            );
        }
    }
    let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or_default();
    let upn = text("userPrincipalName").to_string();
    let Some(password) = obj
        .get("passwordProfile")
        .and_then(|p| p.get("password"))
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    else {
        return invalid(
            req,
            rid,
            "Property password value is required but is empty or missing.",
            "PropertyRequired",
            "passwordProfile",
        );
    };
    let valid_upn = upn.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && local.len() <= 64
            && !domain.is_empty()
            && !domain.contains('@')
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || UPN_SYMBOLS.contains(c))
    });
    if !valid_upn {
        return invalid(
            req,
            rid,
            "Invalid value specified for property 'userPrincipalName' of resource 'User'.",
            "InvalidValue",
            "userPrincipalName",
        );
    }
    let tenant = st
        .tenant(&claims.tid)
        .map(|t| t.id.clone())
        .unwrap_or_else(|| claims.tid.clone());
    let domain = upn.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
    if !domain.is_some_and(|d| verified_domains(st, &tenant).contains(&d)) {
        return invalid(
            req,
            rid,
            "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.",
            "InvalidValue",
            "userPrincipalName",
        );
    }
    if st.user_idx(&tenant, &upn).is_some() {
        return invalid(req, rid, UPN_TAKEN, "ObjectConflict", "userPrincipalName");
    }
    if check_password_rules(password).is_err() {
        return bad_request(req, rid, "The specified password does not comply with password complexity requirements. Please provide a different password.");
    }
    if let Some(r) = throttled(shared, st, req, claims, rid) {
        return r;
    }
    let pp = &obj["passwordProfile"];
    let flag = |k: &str, default: bool| pp.get(k).and_then(Value::as_bool).unwrap_or(default);
    let force = flag("forceChangePasswordNextSignIn", true)
        || flag("forceChangePasswordNextSignInWithMfa", false);
    let properties: BTreeMap<String, Value> = obj
        .iter()
        .filter(|(k, _)| {
            !k.contains('@')
                && ![
                    "accountEnabled",
                    "displayName",
                    "userPrincipalName",
                    "passwordProfile",
                    "userType",
                ]
                .contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let now = shared.clock.unix();
    let user = User {
        tenant,
        id: uuid::Uuid::new_v4().to_string(),
        upn,
        display_name: Some(text("displayName").to_string()),
        password: password.to_string(),
        directory_roles: Vec::new(),
        disabled: !obj
            .get("accountEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        mfa_required: false,
        mfa_registration_required: false,
        ca_blocked: false,
        security_defaults_blocked: false,
        password_expired: false,
        force_change_password_next_sign_in: force,
        last_password_change: now,
        created: now,
        failed_attempts: 0,
        locked_until_ms: None,
        properties,
    };
    let version = if req.path.starts_with("/beta/") {
        "beta"
    } else {
        "v1.0"
    };
    let out = user_json(
        &user,
        &format!("https://graph.microsoft.com/{version}/$metadata#users/$entity"),
    );
    let location = format!(
        "https://graph.microsoft.com/v2/{}/directoryObjects/{}/Microsoft.DirectoryServices.User",
        user.tenant, user.id
    );
    st.put_user(user);
    shared.persist(st);
    with_header(json(201, &out), "location", &location)
}

/// `DELETE /users/{id|upn}`: the caller's state lock is held.
pub(super) fn delete(
    shared: &Shared,
    st: &mut State,
    req: &Req,
    claims: &Claims,
    user_ref: &str,
    rid: &str,
) -> Resp {
    let allowed = if claims.idtyp == "app" {
        has_perm(claims, &[DELETE_PERM])
    } else {
        has_role(st, claims, &DELETE_ROLES)
    };
    if !allowed {
        return denied(req, rid);
    }
    let Some(idx) = st.user_idx(&claims.tid, user_ref) else {
        return not_found(req, rid, user_ref);
    };
    let target = &st.users[idx].directory_roles;
    if !target.is_empty() && !crate::roles::may_act_sensitive(&caller_roles(st, claims), target) {
        return denied(req, rid);
    }
    if let Some(r) = throttled(shared, st, req, claims, rid) {
        return r;
    }
    let user = st.remove_user(idx);
    st.deleted_users.push(DeletedUser {
        user,
        deleted: shared.clock.unix(),
    });
    shared.persist(st);
    empty(204)
}

/// A deleted user as `deletedItems` shows it: `@odata.type`, the default properties with the
/// UPN prefixed by the object id without hyphens, and `deletedDateTime`.
fn deleted_json(d: &DeletedUser) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    out.insert("@odata.type".into(), json!("#microsoft.graph.user"));
    for name in DEFAULT_PROPERTIES {
        out.insert(name.to_string(), property(&d.user, name));
    }
    out.insert(
        "userPrincipalName".into(),
        json!(format!("{}{}", d.user.id.replace('-', ""), d.user.upn)),
    );
    out.insert("deletedDateTime".into(), json!(rfc3339(d.deleted)));
    out
}

/// Handles `/{v1.0|beta}/directory/deletedItems/{rest}` (`rest` the segments after
/// `deletedItems`).
pub(crate) fn handle_deleted(shared: &Shared, req: &Req, rest: &[String], rid: &str) -> Resp {
    let mut st = lock(&shared.state);
    let claims = match super::authenticate(shared, &st, req, rid) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let is_app = claims.idtyp == "app";
    let may_read = !is_app || has_perm(&claims, &DELETED_READ_PERMS);
    let may_write = if is_app {
        has_perm(&claims, &[DELETE_PERM])
    } else {
        has_role(&st, &claims, &DELETE_ROLES)
    };
    let tenant = st
        .tenant(&claims.tid)
        .map(|t| t.id.clone())
        .unwrap_or_else(|| claims.tid.clone());
    let base = "https://graph.microsoft.com/v1.0/$metadata#";
    let find = |st: &State, id: &str| {
        st.deleted_users
            .iter()
            .position(|d| d.user.tenant == tenant && d.user.id.eq_ignore_ascii_case(id))
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match (&req.method, rest.as_slice()) {
        (&Method::GET, ["microsoft.graph.user"]) => {
            if !may_read {
                return denied(req, rid);
            }
            let value: Vec<Value> = st
                .deleted_users
                .iter()
                .filter(|d| d.user.tenant == tenant)
                .map(|d| {
                    let mut v = deleted_json(d);
                    v.remove("@odata.type");
                    Value::Object(v)
                })
                .collect();
            json(
                200,
                &json!({"@odata.context": format!("{base}users"), "value": value}),
            )
        }
        (&Method::GET, [id] | [id, "microsoft.graph.user"]) => {
            if !may_read {
                return denied(req, rid);
            }
            let Some(i) = find(&st, id) else {
                return not_found(req, rid, id);
            };
            let mut v = deleted_json(&st.deleted_users[i]);
            v.insert(
                "@odata.context".into(),
                json!(format!("{base}directoryObjects/$entity")),
            );
            json(200, &Value::Object(v))
        }
        (&Method::POST, [id, "restore"]) => {
            if !may_write {
                return denied(req, rid);
            }
            let Some(i) = find(&st, id) else {
                return not_found(req, rid, id);
            };
            let upn = st.deleted_users[i].user.upn.clone();
            if st.user_idx(&tenant, &upn).is_some() {
                return invalid(req, rid, UPN_TAKEN, "ObjectConflict", "userPrincipalName");
            }
            let d = st.deleted_users.remove(i);
            let mut v = serde_json::Map::new();
            v.insert(
                "@odata.context".into(),
                json!(format!("{base}directoryObjects/$entity")),
            );
            v.insert("@odata.type".into(), json!("#microsoft.graph.user"));
            for name in DEFAULT_PROPERTIES {
                v.insert(name.to_string(), property(&d.user, name));
            }
            st.put_user(d.user);
            shared.persist(&st);
            json(200, &Value::Object(v))
        }
        (&Method::DELETE, [id]) => {
            if !may_write {
                return denied(req, rid);
            }
            let Some(i) = find(&st, id) else {
                return not_found(req, rid, id);
            };
            st.deleted_users.remove(i);
            shared.persist(&st);
            empty(204)
        }
        _ => graph_error(
            req,
            rid,
            400,
            "Request_BadRequest",
            "The emulator serves deletedItems/microsoft.graph.user, deletedItems/{id}, and deletedItems/{id}/restore only.",
        ),
    }
}
