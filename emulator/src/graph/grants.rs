//! Delegated permission grants: `GET` and `POST /v1.0/oauth2PermissionGrants`.
//!
//! The shape follows Graph v1.0's `oAuth2PermissionGrant` resource: `clientId` is the client
//! app's **service principal object id** (not its app id), `consentType` `AllPrincipals`
//! (admin consent for every user) or `Principal` (one user, `principalId`), `resourceId` the
//! resource's service principal object id, `scope` the delegated permissions,
//! space-separated. Permissions of `POST` (Graph's "Create oAuth2PermissionGrant" page):
//! `DelegatedPermissionGrant.ReadWrite.All` or `Directory.ReadWrite.All`; a signed-in admin
//! needs a role that may grant them (the emulator takes Global Administrator and Privileged
//! Role Administrator). **Choices**: the emulator names Microsoft Graph by its app id
//! ([`GRAPH_APP_ID`]) where Graph's own answer carries its service principal's object id in
//! the tenant; a second grant for the same client, consent type, principal and resource is
//! refused with 409 (*unconfirmed*: the real message may differ); `$filter` takes `eq` on
//! `clientId`, `consentType`, `principalId` and `resourceId`, joined by `and`.

use super::{authenticate, bad_request, denied, graph_error};
use crate::http::{json, Req, Resp};
use crate::shared::{lock, Shared};
use crate::state::{new_version_id, PermissionGrant, CONSENT_TYPES, GRAPH_APP_ID};
use hyper::Method;
use serde_json::{json, Value};

/// Application permissions that allow listing grants.
const READ_PERMS: [&str; 4] = [
    "DelegatedPermissionGrant.Read.All",
    "DelegatedPermissionGrant.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
/// Application permissions that allow creating a grant.
const WRITE_PERMS: [&str; 2] = [
    "DelegatedPermissionGrant.ReadWrite.All",
    "Directory.ReadWrite.All",
];
/// Directory roles of a signed-in user that may create a grant.
const GRANTING_ROLES: [&str; 2] = ["Global Administrator", "Privileged Role Administrator"];

const CONTEXT: &str = "https://graph.microsoft.com/v1.0/$metadata#oauth2PermissionGrants";

fn to_json(g: &PermissionGrant) -> Value {
    json!({
        "id": g.id,
        "clientId": g.client_id,
        "consentType": g.consent_type,
        "principalId": g.principal_id,
        "resourceId": g.resource_id,
        "scope": g.scope,
    })
}

/// `$filter=clientId eq '…' and …`: the (property, value) pairs, or `None` when the filter
/// uses anything else.
fn parse_filter(f: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for clause in f.split(" and ") {
        let (prop, value) = clause.trim().split_once(" eq ")?;
        let value = value.trim().strip_prefix('\'')?.strip_suffix('\'')?;
        let prop = prop.trim();
        if !["clientId", "consentType", "principalId", "resourceId"].contains(&prop) {
            return None;
        }
        out.push((prop.to_string(), value.to_string()));
    }
    Some(out)
}

fn matches(g: &PermissionGrant, prop: &str, value: &str) -> bool {
    let v = match prop {
        "clientId" => Some(g.client_id.as_str()),
        "consentType" => Some(g.consent_type.as_str()),
        "principalId" => g.principal_id.as_deref(),
        "resourceId" => Some(g.resource_id.as_str()),
        _ => None,
    };
    v.is_some_and(|v| v.eq_ignore_ascii_case(value))
}

/// Handles `/v1.0/oauth2PermissionGrants`.
pub(crate) fn handle(shared: &Shared, req: &Req, rid: &str) -> Resp {
    let mut st = lock(&shared.state);
    let claims = match authenticate(shared, &st, req, rid) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let is_app = claims.idtyp == "app";
    let has = |perms: &[&str]| claims.roles.iter().any(|r| perms.contains(&r.as_str()));
    match req.method {
        Method::GET => {
            if is_app && !has(&READ_PERMS) {
                return denied(req, rid);
            }
            let filter = match req.query("$filter") {
                None => Vec::new(),
                Some(f) => match parse_filter(f) {
                    Some(f) => f,
                    None => {
                        return bad_request(req, rid, &format!("Invalid filter clause: {f}"));
                    }
                },
            };
            let value: Vec<Value> = st
                .permission_grants
                .iter()
                .filter(|g| g.tenant == claims.tid)
                .filter(|g| filter.iter().all(|(p, v)| matches(g, p, v)))
                .map(to_json)
                .collect();
            json(200, &json!({"@odata.context": CONTEXT, "value": value}))
        }
        Method::POST => {
            let allowed = if is_app {
                has(&WRITE_PERMS)
            } else {
                crate::roles::names(&claims.wids)
                    .iter()
                    .any(|r| GRANTING_ROLES.contains(&r.as_str()))
            };
            if !allowed {
                return denied(req, rid);
            }
            let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
                return bad_request(req, rid, "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.");
            };
            let text = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let (Some(client_id), Some(consent_type), Some(resource_id), Some(scope)) = (
                text("clientId"),
                text("consentType"),
                text("resourceId"),
                text("scope"),
            ) else {
                return bad_request(
                    req,
                    rid,
                    "clientId, consentType, resourceId and scope are required.",
                );
            };
            if !st
                .apps
                .iter()
                .any(|a| a.tenant == claims.tid && a.object_id.eq_ignore_ascii_case(&client_id))
            {
                return bad_request(req, rid, &format!("Invalid value specified for property 'clientId' of resource 'OAuth2PermissionGrant': '{client_id}' is not the object id of a service principal in this tenant (an app's object id, not its client id)."));
            }
            if !CONSENT_TYPES.contains(&consent_type.as_str()) {
                return bad_request(req, rid, &format!("Invalid value specified for property 'consentType' of resource 'OAuth2PermissionGrant': use AllPrincipals or Principal, not '{consent_type}'."));
            }
            let principal = text("principalId");
            let principal_id = match (consent_type.as_str(), principal) {
                ("AllPrincipals", None) => None,
                ("Principal", Some(p)) => match st.user_idx(&claims.tid, &p) {
                    Some(i) => Some(st.users[i].id.clone()),
                    None => return bad_request(req, rid, &format!("Invalid value specified for property 'principalId' of resource 'OAuth2PermissionGrant': no user '{p}'.")),
                },
                ("AllPrincipals", Some(_)) => return bad_request(req, rid, "principalId must be null when consentType is AllPrincipals."),
                _ => return bad_request(req, rid, "principalId is required when consentType is Principal."),
            };
            if !resource_id.eq_ignore_ascii_case(GRAPH_APP_ID) {
                return bad_request(req, rid, &format!("Invalid value specified for property 'resourceId' of resource 'OAuth2PermissionGrant': the emulator has Microsoft Graph only ('{GRAPH_APP_ID}'), not '{resource_id}'."));
            }
            let scope = scope.split_whitespace().collect::<Vec<_>>().join(" ");
            if scope.is_empty() {
                return bad_request(req, rid, "Invalid value specified for property 'scope' of resource 'OAuth2PermissionGrant': name at least one delegated permission.");
            }
            let grant = PermissionGrant {
                id: new_version_id(),
                tenant: claims.tid.clone(),
                client_id: client_id.to_ascii_lowercase(),
                consent_type,
                principal_id,
                resource_id: GRAPH_APP_ID.to_string(),
                scope,
            };
            if st.permission_grants.iter().any(|g| {
                g.tenant == grant.tenant
                    && g.client_id.eq_ignore_ascii_case(&grant.client_id)
                    && g.consent_type == grant.consent_type
                    && g.principal_id == grant.principal_id
                    && g.resource_id.eq_ignore_ascii_case(&grant.resource_id)
            }) {
                return graph_error(
                    req,
                    rid,
                    409,
                    "Request_MultipleObjectsWithSameKeyValue",
                    "Permission entry already exists.",
                );
            }
            let mut out = to_json(&grant);
            out["@odata.context"] = json!(format!("{CONTEXT}/$entity"));
            st.put_permission_grant(grant);
            shared.persist(&st);
            json(201, &out)
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
