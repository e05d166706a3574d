//! Entra's discovery documents: the OpenID configuration (v2.0 and v1 paths), the signing keys
//! at its `jwks_uri`, MSAL's instance discovery and user realm discovery.
//!
//! URLs in the documents use the host the client sent (`login.microsoftonline.com` through a
//! resolver, or `localhost:{port}`), so a client following them stays on the emulator.

use crate::aad::{aad, aad_response, base, issuer_v1, issuer_v2};
use crate::http::{json, with_header, Req, Resp};
use crate::shared::{lock, Shared};
use serde_json::json;

/// Which discovery document a path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Doc {
    /// `/{tenant}/v2.0/.well-known/openid-configuration`
    ConfigV2(String),
    /// `/{tenant}/.well-known/openid-configuration`
    ConfigV1(String),
    /// `/{tenant|common}/discovery/v2.0/keys` (true) or `/{tenant|common}/discovery/keys`
    Keys(String, bool),
    /// `/common/discovery/instance`
    Instance,
    /// `/common/userrealm/{username}`
    UserRealm(String),
}

impl Doc {
    /// Recognises a discovery path (split into segments).
    pub(crate) fn parse(segs: &[&str]) -> Option<Doc> {
        match segs {
            [t, "v2.0", ".well-known", "openid-configuration"] => {
                Some(Doc::ConfigV2(t.to_string()))
            }
            [t, ".well-known", "openid-configuration"] => Some(Doc::ConfigV1(t.to_string())),
            [t, "discovery", "v2.0", "keys"] => Some(Doc::Keys(t.to_string(), true)),
            [t, "discovery", "keys"] => Some(Doc::Keys(t.to_string(), false)),
            [_, "discovery", "instance"] => Some(Doc::Instance),
            [_, "userrealm", user] if !user.is_empty() => Some(Doc::UserRealm(user.to_string())),
            _ => None,
        }
    }
}

fn ok(body: &serde_json::Value) -> Resp {
    let r = json(200, body);
    let r = with_header(r, "x-ms-request-id", &uuid::Uuid::new_v4().to_string());
    with_header(r, "cache-control", "max-age=86400, private")
}

/// Answers a discovery request.
pub(crate) fn handle(shared: &Shared, req: &Req, doc: &Doc) -> Resp {
    let st = lock(&shared.state);
    let tenant_id = |t: &str| st.tenant(t).map(|x| x.id.clone());
    let not_found = |t: &str| {
        aad_response(
            shared,
            req,
            aad(400, "invalid_tenant", 90002, format!("Tenant '{t}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.")),
        )
    };
    let b = base(req);
    match doc {
        Doc::ConfigV2(t) => {
            let Some(tid) = tenant_id(t) else {
                return not_found(t);
            };
            ok(&json!({
                "token_endpoint": format!("{b}/{tid}/oauth2/v2.0/token"),
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "jwks_uri": format!("{b}/{tid}/discovery/v2.0/keys"),
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": issuer_v2(req, &tid),
                "request_uri_parameter_supported": false,
                "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
                "authorization_endpoint": format!("{b}/{tid}/oauth2/v2.0/authorize"),
                "device_authorization_endpoint": format!("{b}/{tid}/oauth2/v2.0/devicecode"),
                "http_logout_supported": true,
                "frontchannel_logout_supported": true,
                "end_session_endpoint": format!("{b}/{tid}/oauth2/v2.0/logout"),
                "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
                "kerberos_endpoint": format!("{b}/{tid}/kerberos"),
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
                "rbac_url": "https://pas.windows.net",
            }))
        }
        Doc::ConfigV1(t) => {
            let Some(tid) = tenant_id(t) else {
                return not_found(t);
            };
            ok(&json!({
                "token_endpoint": format!("{b}/{tid}/oauth2/token"),
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "jwks_uri": format!("{b}/common/discovery/keys"),
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
                "scopes_supported": ["openid"],
                "issuer": issuer_v1(&tid),
                "microsoft_multi_refresh_token": true,
                "authorization_endpoint": format!("{b}/{tid}/oauth2/authorize"),
                "device_authorization_endpoint": format!("{b}/{tid}/oauth2/devicecode"),
                "http_logout_supported": true,
                "frontchannel_logout_supported": true,
                "end_session_endpoint": format!("{b}/{tid}/oauth2/logout"),
                "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "amr", "nonce", "email", "given_name", "family_name", "nickname"],
                "check_session_iframe": format!("{b}/{tid}/oauth2/checksession"),
                "userinfo_endpoint": format!("{b}/{tid}/openid/userinfo"),
                "kerberos_endpoint": format!("{b}/{tid}/kerberos"),
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
                "rbac_url": "https://pas.windows.net",
            }))
        }
        Doc::Keys(t, v2) => {
            let tid = tenant_id(t);
            if tid.is_none() && !t.eq_ignore_ascii_case("common") {
                return not_found(t);
            }
            let keys: Vec<_> = st
                .signer()
                .map(|s| {
                    let issuer = match (&tid, v2) {
                        (Some(tid), true) => Some(issuer_v2(req, tid)),
                        (None, true) => Some(format!("{b}/{{tenantid}}/v2.0")),
                        _ => None,
                    };
                    s.jwk(issuer.as_deref())
                })
                .into_iter()
                .collect();
            ok(&json!({ "keys": keys }))
        }
        Doc::Instance => {
            // The tenant and host the client asked about: those of `authorization_endpoint`
            // (MSAL sends `https://{host}/{tenant}/oauth2/v2.0/authorize`).
            let auth = req.query("authorization_endpoint").unwrap_or("");
            let parsed = url::Url::parse(auth)
                .ok()
                .filter(|u| u.host_str().is_some());
            let tenant = parsed
                .as_ref()
                .and_then(|u| u.path_segments()?.next().map(str::to_string))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "common".into());
            let authority = parsed
                .as_ref()
                .and_then(|u| {
                    let h = u.host_str()?;
                    Some(match u.port() {
                        Some(p) => format!("{h}:{p}"),
                        None => h.to_string(),
                    })
                })
                .unwrap_or_else(|| req.authority.clone());
            let public = [
                "login.microsoftonline.com",
                "login.windows.net",
                "login.microsoft.com",
                "sts.windows.net",
            ];
            let host = parsed
                .as_ref()
                .and_then(|u| u.host_str())
                .map(str::to_ascii_lowercase);
            let ours = |h: &str| public.contains(&h) || h == "localhost" || h == "127.0.0.1";
            if let Some(h) = host.as_deref().filter(|h| !ours(h)) {
                return aad_response(
                    shared,
                    req,
                    aad(
                        400,
                        "invalid_instance",
                        50049,
                        format!("Unknown or invalid instance. (authority host '{h}')"),
                    ),
                );
            }
            let v2 = auth.contains("/v2.0/") || req.query("api-version") == Some("1.1");
            let doc = if v2 {
                format!("https://{authority}/{tenant}/v2.0/.well-known/openid-configuration")
            } else {
                format!("https://{authority}/{tenant}/.well-known/openid-configuration")
            };
            let mut metadata = vec![json!({
                "preferred_network": "login.microsoftonline.com",
                "preferred_cache": "login.windows.net",
                "aliases": public,
            })];
            if !public.contains(&authority.as_str()) {
                metadata.push(json!({
                    "preferred_network": authority,
                    "preferred_cache": authority,
                    "aliases": [authority],
                }));
            }
            ok(&json!({
                "tenant_discovery_endpoint": doc,
                "api-version": "1.1",
                "metadata": metadata,
            }))
        }
        Doc::UserRealm(user) => {
            let domain = user.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            match st.tenant(domain).filter(|_| !domain.is_empty()) {
                Some(t) => ok(&json!({
                    "ver": "1.0",
                    "account_type": "Managed",
                    "domain_name": t.domain.clone().unwrap_or_else(|| domain.to_string()),
                    "cloud_instance_name": "microsoftonline.com",
                    "cloud_audience_urn": "urn:federation:MicrosoftOnline",
                })),
                None => ok(&json!({
                    "ver": "1.0",
                    "account_type": "Unknown",
                    "cloud_instance_name": "microsoftonline.com",
                })),
            }
        }
    }
}
