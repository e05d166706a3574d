//! Microsoft Graph users: `GET` with `$select`, `PATCH` of `passwordProfile`.

use crate::aad::GRAPH_AUD;
use crate::http::{empty, json, rfc3339, with_header, Req, Resp, Throttled};
use crate::jwt::{self, Claims, TokenError};
use crate::rules::check_password_rules;
use crate::shared::{lock, Shared};
use crate::state::{State, User};
use hyper::Method;
use serde_json::{json, Value};

/// Roles that let an app reset the password of a user without directory roles.
const RESET_ORDINARY: [&str; 6] = [
    "User Administrator",
    "Helpdesk Administrator",
    "Password Administrator",
    "Authentication Administrator",
    "Privileged Authentication Administrator",
    "Global Administrator",
];
/// Roles that let an app reset the password of a user holding any directory role.
const RESET_PRIVILEGED: [&str; 2] = [
    "Privileged Authentication Administrator",
    "Global Administrator",
];
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

/// The kind of JSON value a user property takes (for `PATCH` validation).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    Strings,
    Object,
    Objects,
}

/// Writable user properties of Graph v1.0 ("Update user" reference), with their kind. Those
/// without a field of their own in [`User`] are kept in `User::properties`.
const WRITABLE: [(&str, Kind); 45] = [
    ("aboutMe", Kind::Str),
    ("accountEnabled", Kind::Bool),
    ("ageGroup", Kind::Str),
    ("birthday", Kind::Str),
    ("businessPhones", Kind::Strings),
    ("city", Kind::Str),
    ("companyName", Kind::Str),
    ("consentProvidedForMinor", Kind::Str),
    ("country", Kind::Str),
    ("department", Kind::Str),
    ("displayName", Kind::Str),
    ("employeeHireDate", Kind::Str),
    ("employeeId", Kind::Str),
    ("employeeLeaveDateTime", Kind::Str),
    ("employeeOrgData", Kind::Object),
    ("employeeType", Kind::Str),
    ("faxNumber", Kind::Str),
    ("givenName", Kind::Str),
    ("hireDate", Kind::Str),
    ("identities", Kind::Objects),
    ("interests", Kind::Strings),
    ("jobTitle", Kind::Str),
    ("mail", Kind::Str),
    ("mailNickname", Kind::Str),
    ("mobilePhone", Kind::Str),
    ("mySite", Kind::Str),
    ("officeLocation", Kind::Str),
    ("onPremisesExtensionAttributes", Kind::Object),
    ("onPremisesImmutableId", Kind::Str),
    ("otherMails", Kind::Strings),
    ("passwordPolicies", Kind::Str),
    ("passwordProfile", Kind::Object),
    ("pastProjects", Kind::Strings),
    ("postalCode", Kind::Str),
    ("preferredDataLocation", Kind::Str),
    ("preferredLanguage", Kind::Str),
    ("preferredName", Kind::Str),
    ("responsibilities", Kind::Strings),
    ("schools", Kind::Strings),
    ("showInAddressList", Kind::Bool),
    ("skills", Kind::Strings),
    ("state", Kind::Str),
    ("streetAddress", Kind::Str),
    ("surname", Kind::Str),
    ("usageLocation", Kind::Str),
];
/// `userPrincipalName` and `userType` are writable too; the emulator accepts them only with the
/// current value (it does not rename users or turn members into guests).
const WRITABLE_FIXED: [&str; 2] = ["userPrincipalName", "userType"];

/// Read-only user properties of Graph v1.0: `PATCH` refuses them ("Property 'x' is read-only
/// and cannot be set.").
const READ_ONLY: [&str; 28] = [
    "id",
    "createdDateTime",
    "creationType",
    "deletedDateTime",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "imAddresses",
    "isResourceAccount",
    "lastPasswordChangeDateTime",
    "legalAgeGroupClassification",
    "licenseAssignmentStates",
    "assignedLicenses",
    "assignedPlans",
    "provisionedPlans",
    "proxyAddresses",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "refreshTokensValidFromDateTime",
    "securityIdentifier",
    "signInActivity",
    "signInSessionsValidFromDateTime",
    "mailboxSettings",
];

/// Whether `name` is a property `$select` may name (case-insensitively); its canonical name.
fn known_property(name: &str) -> Option<&'static str> {
    WRITABLE
        .iter()
        .map(|(n, _)| *n)
        .chain(WRITABLE_FIXED)
        .chain(READ_ONLY)
        .find(|n| n.eq_ignore_ascii_case(name))
}

const DEFAULT_PROPERTIES: [&str; 11] = [
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
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

fn property(u: &User, name: &str) -> Value {
    match name {
        "id" => json!(u.id),
        "userPrincipalName" => json!(u.upn),
        "displayName" => json!(u.display_name.clone().unwrap_or_else(|| u
            .upn
            .split('@')
            .next()
            .unwrap_or("")
            .to_string())),
        "accountEnabled" => json!(!u.disabled),
        "lastPasswordChangeDateTime" => json!(rfc3339(u.last_password_change)),
        "passwordProfile" => json!({
            "password": null,
            "forceChangePasswordNextSignIn": u.force_change_password_next_sign_in,
            "forceChangePasswordNextSignInWithMfa": false,
        }),
        "createdDateTime" => json!(rfc3339(u.created)),
        "userType" => json!("Member"),
        "creationType" | "deletedDateTime" => Value::Null,
        other => u.properties.get(other).cloned().unwrap_or_else(|| {
            match WRITABLE.iter().find(|(n, _)| *n == other) {
                Some((_, Kind::Strings | Kind::Objects)) => json!([]),
                _ if other == "passwordPolicies" => json!("None"),
                _ => Value::Null,
            }
        }),
    }
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
            let target_privileged = !st.users[idx].directory_roles.is_empty();
            let caller_roles: Vec<String> = if is_app {
                app_roles
            } else {
                crate::roles::names(&claims.wids)
            };
            let needed: &[&str] = if target_privileged {
                &RESET_PRIVILEGED
            } else {
                &RESET_ORDINARY
            };
            // Password resets and enabling / disabling are sensitive actions: they need a
            // directory role of the caller, too. Other properties need the permission only.
            if (resets || enables) && !caller_roles.iter().any(|r| needed.contains(&r.as_str())) {
                return denied(req, rid);
            }
            // Throttling of writes per app and tenant.
            let key = format!("graph/{}/{}", claims.tid, claims.appid);
            let (limit, window) = (st.limits.graph_write_limit, st.limits.graph_write_window_ms);
            if let Err(retry) =
                lock(&shared.throttle).hit(&key, limit, window, shared.clock.unix_ms())
            {
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
                return with_header(r, "x-ms-throttle-information", "ResourceUnitLimitExceeded");
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
        _ => graph_error(
            req,
            rid,
            405,
            "Request_BadRequest",
            "The HTTP method is not supported for this resource.",
        ),
    }
}

/// Checks a `PATCH /users/{id}` body as Graph does before anything else: annotations, known
/// and writable properties, value types. The error is the message of a 400 `Request_BadRequest`.
fn check_patch(obj: &serde_json::Map<String, Value>, current: Option<&User>) -> Result<(), String> {
    for (k, v) in obj {
        if k == "@odata.type" {
            let t = v.as_str().unwrap_or_default();
            if !t
                .trim_start_matches('#')
                .eq_ignore_ascii_case("microsoft.graph.user")
            {
                return Err(format!("A type named '{}' could not be resolved by the model. When a model is available, each type name must resolve to a valid type.", t.trim_start_matches('#')));
            }
            continue;
        }
        if k.contains('@') {
            // Other instance annotations (e.g. `@odata.context`) are ignored by OData readers.
            continue;
        }
        if let Some(&(name, kind)) = WRITABLE.iter().find(|(n, _)| n == k) {
            let ok = match kind {
                Kind::Str => v.is_string() || v.is_null(),
                Kind::Bool => v.is_boolean(),
                Kind::Strings => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
                Kind::Object => v.is_object(),
                Kind::Objects => v.as_array().is_some_and(|a| a.iter().all(Value::is_object)),
            };
            if !ok || (name == "displayName" && v.is_null()) {
                return Err(format!(
                    "Invalid value specified for property '{name}' of resource 'User'."
                ));
            }
            continue;
        }
        if WRITABLE_FIXED.contains(&k.as_str()) {
            let same = match (k.as_str(), current) {
                ("userPrincipalName", Some(u)) => {
                    v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(&u.upn))
                }
                // An unknown user is answered with 404 afterwards.
                ("userPrincipalName", None) => true,
                _ => v.as_str() == Some("Member"),
            };
            if !same {
                return Err(format!(
                    "The emulator does not change '{k}' (only the current value is accepted)."
                ));
            }
            continue;
        }
        if READ_ONLY.contains(&k.as_str()) {
            return Err(format!("Property '{k}' is read-only and cannot be set."));
        }
        return Err(format!(
            "Property '{k}' does not exist as a declared property or extension property."
        ));
    }
    Ok(())
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}
