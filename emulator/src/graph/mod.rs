//! Microsoft Graph users: `GET` with `$select`, `PATCH` of `passwordProfile`; delegated
//! permission grants.
//!
//! Here: the permissions and roles a request needs, the error answers, authentication,
//! throttling and the two methods; `properties`: the user properties Graph knows (which
//! are writable, read-only, selected by default), their values, and the check of a `PATCH`;
//! `grants`: `oauth2PermissionGrants` (list, create), the consent the password grant needs;
//! `ca`: Conditional Access policies, named locations and the What-If evaluation;
//! `roles`: directory roles (`roleManagement/directory/…`) and `servicePrincipals`;
//! `users`: the user lifecycle (`POST /users`, `DELETE /users/{id}`, `directory/deletedItems`).

mod ca;
mod grants;
mod properties;
mod roles;
mod users;

pub(crate) use ca::handle as handle_ca;
pub(crate) use grants::handle as handle_grants;
pub(crate) use roles::{handle as handle_roles, Route as RolesRoute};
pub(crate) use users::handle_deleted;

use properties::{check_patch, known_property, property, DEFAULT_PROPERTIES, WRITABLE_FIXED};

use crate::aad::GRAPH_AUD;
use crate::http::{empty, json, rfc3339, with_header, Req, Resp, Throttled};
use crate::jwt::{self, Claims, TokenError};
use crate::rules::check_password_rules;
use crate::shared::{lock, Shared};
use crate::state::State;
use hyper::Method;
use serde_json::{json, Value};

/// Application permissions that allow reading users.
const READ_PERMS: [&str; 5] = [
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
    "User-PasswordProfile.ReadWrite.All",
];
/// Application permissions that allow a password reset.
const RESET_PERMS: [&str; 3] = [
    "User-PasswordProfile.ReadWrite.All",
    "User.ReadWrite.All",
    "Directory.ReadWrite.All",
];
/// Application permissions that allow setting `accountEnabled` (the emulator has always
/// accepted the password permission for it too).
const ENABLE_PERMS: [&str; 4] = [
    "User.EnableDisableAccount.All",
    "User-PasswordProfile.ReadWrite.All",
    "User.ReadWrite.All",
    "Directory.ReadWrite.All",
];
/// Application permissions that allow updating other user properties.
const WRITE_PERMS: [&str; 3] = [
    "User.ReadWrite.All",
    "Directory.ReadWrite.All",
    "User.ManageIdentities.All",
];

/// A Graph error with `innerError`.
pub(crate) fn graph_error(
    req: &Req,
    request_id: &str,
    status: u16,
    code: &str,
    message: &str,
) -> Resp {
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": rfc3339(time::OffsetDateTime::now_utc().unix_timestamp()),
                "request-id": request_id,
                "client-request-id": req.header("client-request-id").unwrap_or(request_id),
            }
        }
    });
    json(status, &body)
}

fn unauthorized(req: &Req, rid: &str, message: &str) -> Resp {
    let r = graph_error(req, rid, 401, "InvalidAuthenticationToken", message);
    with_header(
        r,
        "www-authenticate",
        "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
    )
}

fn denied(req: &Req, rid: &str) -> Resp {
    graph_error(
        req,
        rid,
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

fn not_found(req: &Req, rid: &str, id: &str) -> Resp {
    graph_error(
        req,
        rid,
        404,
        "Request_ResourceNotFound",
        &format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
    )
}

fn bad_request(req: &Req, rid: &str, message: &str) -> Resp {
    graph_error(req, rid, 400, "Request_BadRequest", message)
}

fn authenticate(shared: &Shared, st: &State, req: &Req, rid: &str) -> Result<Claims, Resp> {
    let Some(token) = req.bearer().filter(|t| !t.is_empty()) else {
        return Err(unauthorized(req, rid, "Access token is empty."));
    };
    match jwt::verify(&st.key_bytes(), token, GRAPH_AUD, shared.clock.unix()) {
        Ok(c) => Ok(c),
        Err(TokenError::Expired) => Err(unauthorized(
            req,
            rid,
            "Lifetime validation failed, the token is expired.",
        )),
        Err(TokenError::NotYetValid) => Err(unauthorized(
            req,
            rid,
            "Lifetime validation failed, the token is not yet valid.",
        )),
        Err(TokenError::WrongAudience(_)) => Err(unauthorized(
            req,
            rid,
            "Access token validation failure. Invalid audience.",
        )),
        Err(TokenError::BadSignature) => {
            Err(unauthorized(req, rid, "Signature validation failed."))
        }
        Err(TokenError::Malformed) => Err(unauthorized(
            req,
            rid,
            "IDX14100: JWT is not well formed, there are no dots (.).",
        )),
    }
}

/// The tenant id a Graph request belongs to (from its token, unchecked), for fault filters.
pub(crate) fn peek_tenant(req: &Req) -> Option<String> {
    let t = jwt::peek(req.bearer()?)?;
    t.get("tid")?.as_str().map(str::to_string)
}

/// The 429 answer when the caller's app has used its Graph write budget in this tenant
/// (`limits.graph_write_limit` per `graph_write_window_ms`), counting this write otherwise.
fn throttled(shared: &Shared, st: &State, req: &Req, claims: &Claims, rid: &str) -> Option<Resp> {
    let key = format!("graph/{}/{}", claims.tid, claims.appid);
    let (limit, window) = (st.limits.graph_write_limit, st.limits.graph_write_window_ms);
    let retry = lock(&shared.throttle)
        .hit(&key, limit, window, shared.clock.unix_ms())
        .err()?;
    let mut r = graph_error(
        req,
        rid,
        429,
        "TooManyRequests",
        "Too many requests. Please try again later.",
    );
    r.extensions_mut().insert(Throttled);
    let r = with_header(r, "retry-after", &retry.to_string());
    let r = with_header(
        r,
        "x-ms-throttle-scope",
        &format!(
            "Tenant_Application/ReadWrite/{}/{}",
            claims.tid, claims.appid
        ),
    );
    Some(with_header(
        r,
        "x-ms-throttle-information",
        "ResourceUnitLimitExceeded",
    ))
}

/// Handles `POST /{v1.0|beta}/users` (create a user).
pub(crate) fn handle_create(shared: &Shared, req: &Req, rid: &str) -> Resp {
    let mut st = lock(&shared.state);
    let claims = match authenticate(shared, &st, req, rid) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if req.method != Method::POST {
        return graph_error(
            req,
            rid,
            405,
            "Request_BadRequest",
            "The emulator serves POST on /users only (read users by id or UPN).",
        );
    }
    users::create(shared, &mut st, req, &claims, rid)
}

/// Handles `/v1.0/users/{id|upn}`; `rid` is the request id sent in headers and bodies.
pub(crate) fn handle(shared: &Shared, req: &Req, user_ref: &str, rid: &str) -> Resp {
    let mut st = lock(&shared.state);
    let claims = match authenticate(shared, &st, req, rid) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let user_ref = percent_decode(user_ref);
    let app_roles: Vec<String> = st
        .app(&claims.tid, &claims.appid)
        .map(|a| a.directory_roles.clone())
        .unwrap_or_default();
    let is_app = claims.idtyp == "app";
    match req.method {
        Method::GET => {
            if is_app
                && !claims
                    .roles
                    .iter()
                    .any(|r| READ_PERMS.contains(&r.as_str()))
            {
                return denied(req, rid);
            }
            let Some(idx) = st.user_idx(&claims.tid, &user_ref) else {
                return not_found(req, rid, &user_ref);
            };
            let u = &st.users[idx];
            let mut out = serde_json::Map::new();
            let select = req.query("$select").map(str::to_string);
            let mut context =
                "https://graph.microsoft.com/v1.0/$metadata#users/$entity".to_string();
            match select.as_deref() {
                Some(sel) if !sel.trim().is_empty() => {
                    context =
                        format!("https://graph.microsoft.com/v1.0/$metadata#users({sel})/$entity");
                    for p in sel.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let Some(name) = known_property(p) else {
                            return bad_request(req, rid, &format!("Could not find a property named '{p}' on type 'microsoft.graph.user'."));
                        };
                        out.insert(name.to_string(), property(u, name));
                    }
                }
                _ => {
                    for name in DEFAULT_PROPERTIES {
                        out.insert(name.to_string(), property(u, name));
                    }
                }
            }
            let mut body = serde_json::Map::new();
            body.insert("@odata.context".into(), json!(context));
            body.extend(out);
            json(200, &Value::Object(body))
        }
        Method::PATCH => {
            let body: Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(_) => return bad_request(req, rid, "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format."),
            };
            let Some(obj) = body.as_object() else {
                return bad_request(req, rid, "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.");
            };
            let found = st.user_idx(&claims.tid, &user_ref);
            if let Err(message) = check_patch(obj, found.map(|i| &st.users[i])) {
                return bad_request(req, rid, &message);
            }
            let resets = obj.contains_key("passwordProfile");
            let enables = obj.contains_key("accountEnabled");
            // Annotations and the no-op `userPrincipalName` / `userType` need no permission.
            let others = obj.keys().any(|k| {
                !k.contains('@')
                    && !WRITABLE_FIXED.contains(&k.as_str())
                    && k != "passwordProfile"
                    && k != "accountEnabled"
            });
            let has = |perms: &[&str]| claims.roles.iter().any(|r| perms.contains(&r.as_str()));
            if is_app
                && ((resets && !has(&RESET_PERMS))
                    || (enables && !has(&ENABLE_PERMS))
                    || (others && !has(&WRITE_PERMS)))
            {
                return denied(req, rid);
            }
            let Some(idx) = st.user_idx(&claims.tid, &user_ref) else {
                return not_found(req, rid, &user_ref);
            };
            let caller_roles: Vec<String> = if is_app {
                app_roles
            } else {
                crate::roles::names(&claims.wids)
            };
            // Password resets and enabling / disabling are sensitive actions: they need a
            // directory role of the caller that covers every role the target holds
            // (`crate::roles::may_reset`). Other properties need the permission only.
            let target = &st.users[idx].directory_roles;
            if (resets && !crate::roles::may_reset(&caller_roles, target))
                || (enables && !crate::roles::may_act_sensitive(&caller_roles, target))
            {
                return denied(req, rid);
            }
            if let Some(r) = throttled(shared, &st, req, &claims, rid) {
                return r;
            }
            let mut new_password = None;
            let mut force = true;
            if let Some(pp) = obj.get("passwordProfile") {
                let Some(pw) = pp.get("password").and_then(|p| p.as_str()) else {
                    return bad_request(req, rid, "Invalid value specified for property 'passwordProfile' of resource 'User'.");
                };
                if check_password_rules(pw).is_err() {
                    return bad_request(req, rid, "The specified password does not comply with password complexity requirements. Please provide a different password.");
                }
                new_password = Some(pw.to_string());
                force = pp
                    .get("forceChangePasswordNextSignIn")
                    .and_then(|f| f.as_bool())
                    .unwrap_or(true)
                    || pp
                        .get("forceChangePasswordNextSignInWithMfa")
                        .and_then(|f| f.as_bool())
                        .unwrap_or(false);
            }
            let enabled = obj.get("accountEnabled").and_then(|v| v.as_bool());
            let now = shared.clock.unix();
            let u = &mut st.users[idx];
            if let Some(pw) = new_password {
                u.password = pw;
                u.last_password_change = now;
                u.force_change_password_next_sign_in = force;
                u.password_expired = false;
                u.failed_attempts = 0;
                u.locked_until_ms = None;
            }
            if let Some(e) = enabled {
                u.disabled = !e;
            }
            for (k, v) in obj {
                match k.as_str() {
                    "passwordProfile" | "accountEnabled" => {}
                    "displayName" => u.display_name = v.as_str().map(str::to_string),
                    k if k.contains('@') || WRITABLE_FIXED.contains(&k) => {}
                    k => {
                        u.properties.insert(k.to_string(), v.clone());
                    }
                }
            }
            shared.persist(&st);
            empty(204)
        }
        Method::DELETE => users::delete(shared, &mut st, req, &claims, &user_ref, rid),
        _ => graph_error(
            req,
            rid,
            405,
            "Request_BadRequest",
            "The HTTP method is not supported for this resource.",
        ),
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}
