//! Entra ID: the v2.0 token endpoint (client credentials with secret or assertion, password
//! grant) and the App Service-shaped managed-identity endpoint. `client` authenticates the
//! client of a token request (secret, certificate or federated assertion).

mod client;

use client::authenticate_client;

use crate::aad::{aad, aad_response, issuer_v1, issuer_v2, AadError, GRAPH_AUD};
use crate::http::{field, json, with_header, Req, Resp};
use crate::jwt::{self, Claims};
use crate::roles;
use crate::shared::{lock, Shared};
use crate::state::{App, SignIn, State, GRAPH_APP_ID};
use serde_json::json;

/// Resource (audience) of a `.default` scope, or of any scope list for the password grant.
fn resource_of(scope: &str) -> Option<String> {
    for s in scope.split_whitespace() {
        if let Some(r) = s.strip_suffix("/.default") {
            return Some(r.to_string());
        }
        if s.contains("://") {
            if let Some((r, _)) = s.rsplit_once('/') {
                if r.contains("://") && r.len() > "https://".len() {
                    return Some(r.to_string());
                }
            }
            return Some(s.to_string());
        }
    }
    None
}

/// The client app type Conditional Access sees in a password grant (ROPC): an OAuth 2.0
/// (modern authentication) request from a non-browser client, i.e.
/// `mobileAppsAndDesktopClients` (*believed*, not confirmed by a Microsoft page: ROPC is not
/// one of the legacy protocols `exchangeActiveSync`/`other` stand for).
pub(crate) const ROPC_CLIENT_APP_TYPE: &str = "mobileAppsAndDesktopClients";

/// Key Vault's first-party app id (the resource a vault token is for).
const KEY_VAULT_APP_ID: &str = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093";

/// The app id of the resource a token is asked for (what Conditional Access's target
/// resources name): Graph's and Key Vault's well-known ids, else the resource as given.
fn resource_app_id(resource: &str) -> String {
    match jwt::norm_aud(resource) {
        a if a == jwt::norm_aud(GRAPH_AUD) => GRAPH_APP_ID.to_string(),
        a if a == jwt::norm_aud(crate::aad::VAULT_AUD) => KEY_VAULT_APP_ID.to_string(),
        _ => resource.to_string(),
    }
}

/// What the enforced (`enabled`) Conditional Access policies that apply demand of a password
/// sign-in of user `idx` from `ip` to `resource`: `Some("block")`, `Some("mfa")` or `None`.
/// Report-only policies are evaluated but not enforced, as in Entra.
fn ca_demand(
    st: &State,
    idx: usize,
    resource: &str,
    ip: Option<std::net::IpAddr>,
) -> Option<&'static str> {
    let u = &st.users[idx];
    let apps = [resource_app_id(resource)];
    let sign_in = SignIn {
        user_id: &u.id,
        user_roles: &u.directory_roles,
        apps: &apps,
        client_app_type: ROPC_CLIENT_APP_TYPE,
        ip,
    };
    let enforced: Vec<_> = st
        .conditional_access
        .evaluate(&u.tenant, &sign_in)
        .into_iter()
        .filter(|(p, r)| r.is_ok() && p.spec.state == "enabled")
        .filter_map(|(p, _)| p.spec.grant_controls.as_ref())
        .collect();
    let demands = |c: &str| {
        enforced
            .iter()
            .any(|g| g.built_in_controls.iter().any(|x| x == c))
    };
    if demands("block") {
        Some("block")
    } else if demands("mfa") {
        Some("mfa")
    } else {
        None
    }
}

/// The answer to a password grant that asks a scope the app holds no consent for: Entra's
/// `invalid_grant` AADSTS65001 with `suberror` `consent_required` (the message and the suberror
/// as Microsoft Q&A threads quote them; *unconfirmed* beyond that).
fn consent_required(app: &App) -> AadError {
    aad(
        400,
        "invalid_grant",
        65001,
        format!(
            "The user or administrator has not consented to use the application with ID '{}' named '{}'. Send an interactive authorization request for this user and resource.",
            app.client_id,
            app.name.as_deref().unwrap_or(&app.client_id)
        ),
    )
    .with_suberror("consent_required")
}

/// The scopes of a password grant's `scope` that `granted` (the user's delegated permissions
/// on Graph for the app) covers, in the request's order; `Err` with the first scope it does
/// not cover. A Graph permission may be asked bare (`User.Read`) or with Graph's URI in front;
/// `{resource}/.default` asks for every granted permission of Graph and needs at least one.
/// Another resource's scopes are never covered (the emulator models Graph's grants only).
fn consented_scopes(scope: &str, granted: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |g: &String| {
        if !out.iter().any(|x| x == g) {
            out.push(g.clone());
        }
    };
    for s in scope.split_whitespace() {
        let (resource, name) = match s.rsplit_once('/') {
            Some((r, n)) if s.contains("://") => (Some(r), n),
            _ => (None, s),
        };
        if resource.is_some_and(|r| jwt::norm_aud(r) != jwt::norm_aud(GRAPH_AUD)) {
            return Err(s.to_string());
        }
        if name == ".default" {
            if granted.is_empty() {
                return Err(s.to_string());
            }
            granted.iter().for_each(&mut add);
            continue;
        }
        match granted.iter().find(|g| g.eq_ignore_ascii_case(name)) {
            Some(g) => add(g),
            None => return Err(s.to_string()),
        }
    }
    Ok(out)
}

fn app_claims(app: &App, resource: &str, now: i64, lifetime: i64) -> Claims {
    let tid = app.tenant.clone();
    Claims {
        aud: resource.to_string(),
        iss: issuer_v1(&tid),
        iat: now,
        nbf: now,
        exp: now + lifetime,
        tid,
        appid: app.client_id.clone(),
        oid: app.object_id.clone(),
        sub: app.object_id.clone(),
        idtyp: "app".into(),
        roles: if jwt::norm_aud(resource) == jwt::norm_aud(GRAPH_AUD) {
            app.graph_permissions.clone()
        } else {
            Vec::new()
        },
        wids: roles::wids(&app.directory_roles),
        upn: None,
        scp: None,
        uti: uuid::Uuid::new_v4().simple().to_string(),
        ver: "1.0".into(),
    }
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) fn token(shared: &Shared, req: &Req, tenant: &str) -> Resp {
    match token_inner(shared, req, tenant) {
        Ok(r) => r,
        Err(e) => aad_response(shared, req, e),
    }
}

fn token_inner(shared: &Shared, req: &Req, tenant: &str) -> Result<Resp, AadError> {
    if req.method != hyper::Method::POST {
        return Err(aad(
            400,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests. Received a GET request.",
        ));
    }
    let form = req.form();
    let now = shared.clock.unix();
    let now_ms = shared.clock.unix_ms();
    let mut st = lock(&shared.state);
    if st.tenant(tenant).is_none() {
        return Err(aad(400, "invalid_request", 90002, format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.")));
    }
    let lifetime = st.limits.token_lifetime_s as i64;
    let key = st.signer().ok_or_else(no_key)?;
    let grant = field(&form, "grant_type").unwrap_or("");
    let scope = field(&form, "scope").unwrap_or("");
    match grant {
        "" => Err(aad(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        )),
        "client_credentials" => {
            let app = authenticate_client(&st, tenant, &form, false, now)?;
            if scope.is_empty() {
                return Err(aad(
                    400,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'scope'.",
                ));
            }
            let resource = scope
                .split_whitespace()
                .next()
                .and_then(|s| s.strip_suffix("/.default"))
                .filter(|_| scope.split_whitespace().count() == 1)
                .ok_or_else(|| {
                    aad(400, "invalid_scope", 1002012, format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."))
                })?;
            let claims = app_claims(app, resource, now, lifetime);
            let tok = jwt::sign(&key, &claims);
            Ok(token_ok(&tok, lifetime, None, None, None))
        }
        "password" => {
            let app = authenticate_client(&st, tenant, &form, true, now)?.clone();
            let username = field(&form, "username").unwrap_or("");
            let password = field(&form, "password").unwrap_or("");
            let resource = resource_of(scope).unwrap_or_else(|| GRAPH_AUD.to_string());
            let threshold = st.limits.lockout_threshold;
            let lockout_ms = st.limits.lockout_ms as i64;
            let tenant_id = st.tenant(tenant).map(|t| t.id.clone()).unwrap_or_default();
            let Some(idx) = st.user_idx(&tenant_id, username) else {
                return Err(aad(400, "invalid_grant", 50034, format!("The user account {{EUII Hidden}} does not exist in the {tenant_id} directory. To sign into this application, the account must be added to the directory.")));
            };
            let ca = ca_demand(&st, idx, &resource, req.peer);
            let changed;
            let result = {
                let u = &mut st.users[idx];
                if u.locked_until_ms.is_some_and(|t| t > now_ms) {
                    changed = false;
                    Err(aad(400, "invalid_grant", 50053, "Your account is locked because you've tried to sign in too many times with an incorrect user ID or password."))
                } else if u.disabled {
                    changed = false;
                    Err(aad(400, "invalid_grant", 50057, "The user account is disabled. The account has been disabled by an administrator."))
                } else if u.password != password {
                    u.failed_attempts += 1;
                    if u.failed_attempts >= threshold {
                        u.locked_until_ms = Some(now_ms + lockout_ms);
                        u.failed_attempts = 0;
                    }
                    changed = true;
                    Err(aad(
                        400,
                        "invalid_grant",
                        50126,
                        "Error validating credentials due to invalid username or password.",
                    ))
                } else {
                    changed = u.failed_attempts != 0 || u.locked_until_ms.is_some();
                    u.failed_attempts = 0;
                    u.locked_until_ms = None;
                    if u.password_expired || u.force_change_password_next_sign_in {
                        Err(aad(400, "invalid_grant", 50055, "The password is expired. The user's password is expired, and therefore their login or session was ended. They will be offered the opportunity to reset it, or may ask an admin to reset it via Reset a user's password in Microsoft Entra ID."))
                    } else if u.security_defaults_blocked {
                        Err(aad(400, "invalid_grant", 530035, "Access has been blocked by security defaults. This is due to the request using legacy auth or being deemed unsafe by security defaults policies. For more information, please visit https://aka.ms/securitydefaults"))
                    } else if u.ca_blocked || ca == Some("block") {
                        Err(aad(400, "invalid_grant", 53003, "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance."))
                    } else if u.mfa_registration_required {
                        Err(aad(400, "interaction_required", 50079, format!("Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication to access '{resource}'.")))
                    } else if u.mfa_required || ca == Some("mfa") {
                        Err(aad(400, "interaction_required", 50076, format!("Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '{resource}'.")))
                    } else {
                        Ok(u.clone())
                    }
                }
            };
            if changed {
                shared.persist(&st);
            }
            let user = result?;
            // Consent: the app must hold a delegated permission grant (tenant-wide, or for
            // this user) for every scope asked, public and confidential clients alike
            // (v2-oauth-ropc; AADSTS65001 otherwise). Checked once the password and the
            // sign-in policies have passed: the order among these answers is *unconfirmed*.
            let granted = st.granted_scopes(&user.tenant, &app.object_id, &user.id, GRAPH_APP_ID);
            let scp = consented_scopes(scope, &granted).map_err(|_| consent_required(&app))?;
            let claims = Claims {
                aud: resource.clone(),
                iss: issuer_v1(&user.tenant),
                iat: now,
                nbf: now,
                exp: now + lifetime,
                tid: user.tenant.clone(),
                appid: app.client_id.clone(),
                oid: user.id.clone(),
                sub: user.id.clone(),
                idtyp: "user".into(),
                roles: Vec::new(),
                wids: roles::wids(&user.directory_roles),
                upn: Some(user.upn.clone()),
                scp: Some(scp.join(" ")),
                uti: uuid::Uuid::new_v4().simple().to_string(),
                ver: "1.0".into(),
            };
            let tok = jwt::sign(&key, &claims);
            let id_token = scope.split_whitespace().any(|s| s == "openid").then(|| {
                // A v2.0 id_token, as the v2.0 endpoint issues: MSAL checks `iss` against the
                // issuer of the OpenID configuration and `aud` against its client id.
                key.sign_json(&json!({
                    "aud": app.client_id,
                    "iss": issuer_v2(req, &user.tenant),
                    "iat": now,
                    "nbf": now,
                    "exp": now + lifetime,
                    "name": user.display_name.clone().unwrap_or_else(|| user.upn.clone()),
                    "oid": user.id,
                    "preferred_username": user.upn,
                    "sub": user.id,
                    "tid": user.tenant,
                    "uti": uuid::Uuid::new_v4().simple().to_string(),
                    "ver": "2.0",
                }))
            });
            // `client_info` (when asked for): base64url JSON of the user's object id and tenant
            // id, which MSAL turns into the account's home_account_id.
            let client_info = (field(&form, "client_info") == Some("1")).then(|| {
                use base64::Engine;
                let ci = json!({"uid": user.id, "utid": user.tenant}).to_string();
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ci)
            });
            Ok(token_ok(&tok, lifetime, Some(scope), id_token, client_info))
        }
        other => Err(aad(
            400,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{other}'."),
        )),
    }
}

/// No signing key (the crypto library could not make one): a transient-looking error.
fn no_key() -> AadError {
    aad(
        500,
        "temporarily_unavailable",
        90033,
        "A transient error has occurred. Please try again. (the emulator has no token-signing key)",
    )
}

fn token_ok(
    tok: &str,
    lifetime: i64,
    scope: Option<&str>,
    id_token: Option<String>,
    client_info: Option<String>,
) -> Resp {
    let mut body = json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": tok,
    });
    if let Some(s) = scope {
        body["scope"] = json!(s);
    }
    if let Some(i) = id_token {
        body["id_token"] = json!(i);
    }
    if let Some(c) = client_info {
        body["client_info"] = json!(c);
    }
    let r = json(200, &body);
    let r = with_header(r, "x-ms-request-id", &uuid::Uuid::new_v4().to_string());
    with_header(r, "cache-control", "no-store, no-cache")
}

/// `GET /msi/token?api-version=2019-08-01&resource=...[&client_id=...|&object_id=...]`
/// with `x-identity-header` (App Service shape).
pub(crate) fn msi(shared: &Shared, req: &Req) -> Resp {
    let st = lock(&shared.state);
    let corr = uuid::Uuid::new_v4().to_string();
    let err = |status: u16, msg: &str| {
        json(
            status,
            &json!({"statusCode": status, "message": msg, "correlationId": corr}),
        )
    };
    if req.header("x-identity-header") != Some(st.msi_identity_header.as_str()) {
        return err(
            401,
            "Unauthorized: x-identity-header is missing or does not match IDENTITY_HEADER.",
        );
    }
    let Some(resource) = req.query("resource").filter(|r| !r.is_empty()) else {
        return err(400, "Required query parameter 'resource' is missing.");
    };
    let mi = if let Some(cid) = req.query("client_id") {
        st.managed_identities
            .iter()
            .find(|m| m.client_id.eq_ignore_ascii_case(cid))
    } else if let Some(oid) = req.query("object_id").or(req.query("principal_id")) {
        st.managed_identities.iter().find(|m| {
            st.apps
                .iter()
                .any(|a| a.client_id == m.app && a.object_id.eq_ignore_ascii_case(oid))
        })
    } else {
        st.managed_identities.iter().find(|m| m.system_assigned)
    };
    let Some(app) = mi.and_then(|m| st.apps.iter().find(|a| a.client_id == m.app)) else {
        return err(400, "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId.");
    };
    let now = shared.clock.unix();
    let lifetime = st.limits.token_lifetime_s as i64;
    let claims = app_claims(app, resource, now, lifetime);
    let Some(key) = st.signer() else {
        return err(500, "The emulator has no token-signing key.");
    };
    let tok = jwt::sign(&key, &claims);
    json(
        200,
        &json!({
            "access_token": tok,
            "expires_on": (now + lifetime).to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": mi.map(|m| m.client_id.clone()).unwrap_or_default(),
        }),
    )
}
