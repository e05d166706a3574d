//! Directory roles in Graph v1.0's shapes: `GET /v1.0/roleManagement/directory/roleDefinitions`,
//! `GET` and `POST /v1.0/roleManagement/directory/roleAssignments`, `GET` and `DELETE
//! …/roleAssignments/{id}`, and `GET /v1.0/servicePrincipals` (`$filter=appId eq '…'`).
//!
//! **One source of truth**: an assignment is a role name in an app's or a user's
//! `directory_roles` (the lists scenarios seed and the password-reset check reads); these routes
//! list, add and remove those entries, so what they show is what the reset check uses. An app's
//! principal is its service principal, whose object id is the app's `object_id` (as in
//! `oauth2PermissionGrants`). Built-in role definitions only; the definition's `id` is its
//! template id (Graph's own answer for built-ins).
//!
//! Wire facts (Graph's "List unifiedRoleAssignments", "Create unifiedRoleAssignment",
//! "List roleDefinitions" and "List servicePrincipals" pages): reading assignments or
//! definitions needs `RoleManagement.Read.Directory`, `RoleManagement.Read.All`,
//! `Directory.Read.All`, `RoleManagement.ReadWrite.Directory` or `Directory.ReadWrite.All`;
//! creating one needs `RoleManagement.ReadWrite.Directory`, and a signed-in user also needs
//! Privileged Role Administrator (the least privileged role Graph names) or Global
//! Administrator; an app with the permission needs no role. Listing service principals needs
//! `Application.Read.All`, `Application.ReadWrite.All`, `Directory.Read.All` or
//! `Directory.ReadWrite.All`. Assignment ids have Graph's layout for tenant-wide assignments of
//! built-in roles: base64url (no padding) of the role template id's 16 bytes then the
//! principal's object id's 16 bytes (GUIDs in their little-endian byte order), then `-1` (the
//! examples on Graph's pages decode so). **Unsure** (docs/emulator.md): the status and message
//! for an unknown role definition or principal and for a duplicate assignment; DELETE's
//! permission (taken as POST's).

use super::{authenticate, bad_request, denied, graph_error, not_found};
use crate::http::{empty, json, Req, Resp};
use crate::shared::{lock, Shared};
use crate::state::State;
use base64::Engine as _;
use hyper::Method;
use serde_json::{json, Value};

/// Application permissions that allow reading role definitions and assignments.
const READ_PERMS: [&str; 5] = [
    "RoleManagement.Read.Directory",
    "RoleManagement.Read.All",
    "Directory.Read.All",
    "RoleManagement.ReadWrite.Directory",
    "Directory.ReadWrite.All",
];
/// Application permission that allows creating and deleting role assignments.
const WRITE_PERM: &str = "RoleManagement.ReadWrite.Directory";
/// Directory roles of a signed-in user that may create or delete role assignments.
const ASSIGNING_ROLES: [&str; 2] = ["Privileged Role Administrator", "Global Administrator"];
/// Application permissions that allow listing service principals.
const SP_READ_PERMS: [&str; 4] = [
    "Application.Read.All",
    "Application.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

const BASE: &str = "https://graph.microsoft.com/v1.0/$metadata#";

/// A path this module serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/v1.0/roleManagement/directory/roleDefinitions`
    Definitions,
    /// `/v1.0/roleManagement/directory/roleAssignments`
    Assignments,
    /// `/v1.0/roleManagement/directory/roleAssignments/{id}`
    Assignment(String),
    /// `/v1.0/servicePrincipals`
    ServicePrincipals,
}

impl Route {
    /// The route for a path's segments, if this module serves it.
    pub(crate) fn parse(segs: &[&str]) -> Option<Route> {
        match segs {
            ["v1.0", "roleManagement", "directory", "roleDefinitions"] => Some(Route::Definitions),
            ["v1.0", "roleManagement", "directory", "roleAssignments"] => Some(Route::Assignments),
            ["v1.0", "roleManagement", "directory", "roleAssignments", id] if !id.is_empty() => {
                Some(Route::Assignment(id.to_string()))
            }
            ["v1.0", "servicePrincipals"] => Some(Route::ServicePrincipals),
            _ => None,
        }
    }

    /// The route name for faults and counters.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Route::Definitions | Route::Assignments | Route::Assignment(_) => "graph.roles",
            Route::ServicePrincipals => "graph.service_principals",
        }
    }
}

/// One assignment: (principal object id, role template id).
struct Assignment {
    principal: String,
    template: &'static str,
}

impl Assignment {
    /// Graph's id: base64url(template GUID bytes ‖ principal GUID bytes) + `-1`; a principal
    /// id that is not a GUID (scenarios may seed any id) contributes its UTF-8 bytes.
    fn id(&self) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let guid = |s: &str| {
            uuid::Uuid::parse_str(s)
                .map(|u| u.to_bytes_le().to_vec())
                .unwrap_or_else(|_| s.as_bytes().to_vec())
        };
        let mut bytes = guid(self.template);
        bytes.extend(guid(&self.principal));
        format!("{}-1", b64.encode(bytes))
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id(),
            "principalId": self.principal,
            "roleDefinitionId": self.template,
            "directoryScopeId": "/",
            "resourceScope": "/",
        })
    }
}

/// Every assignment in the tenant: the apps' (by service principal) then the users'.
fn assignments(st: &State, tenant: &str) -> Vec<Assignment> {
    let apps = st
        .apps
        .iter()
        .filter(|a| a.tenant == tenant)
        .map(|a| (&a.object_id, &a.directory_roles));
    let users = st
        .users
        .iter()
        .filter(|u| u.tenant == tenant)
        .map(|u| (&u.id, &u.directory_roles));
    apps.chain(users)
        .flat_map(|(principal, roles)| {
            roles.iter().filter_map(move |r| {
                crate::roles::template_id(r).map(|template| Assignment {
                    principal: principal.clone(),
                    template,
                })
            })
        })
        .collect()
}

/// The role list of a principal (an app's service principal or a user), by object id.
fn roles_of<'a>(st: &'a mut State, tenant: &str, principal: &str) -> Option<&'a mut Vec<String>> {
    if let Some(i) = st
        .apps
        .iter()
        .position(|a| a.tenant == tenant && a.object_id.eq_ignore_ascii_case(principal))
    {
        return Some(&mut st.apps[i].directory_roles);
    }
    let i = st
        .users
        .iter()
        .position(|u| u.tenant == tenant && u.id.eq_ignore_ascii_case(principal))?;
    Some(&mut st.users[i].directory_roles)
}

/// `$filter=prop eq 'v' [and prop eq 'v']…` with the properties in `allowed`; `None` when the
/// filter uses anything else.
fn parse_filter(f: &str, allowed: &[&str]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for clause in f.split(" and ") {
        let (prop, value) = clause.trim().split_once(" eq ")?;
        let value = value.trim().strip_prefix('\'')?.strip_suffix('\'')?;
        let prop = prop.trim();
        if !allowed.contains(&prop) {
            return None;
        }
        out.push((prop.to_string(), value.replace("''", "'")));
    }
    Some(out)
}

/// The `$filter` clauses, or the 400 answer for a filter the emulator does not serve.
fn filter(req: &Req, rid: &str, allowed: &[&str]) -> Result<Vec<(String, String)>, Resp> {
    match req.query("$filter") {
        None => Ok(Vec::new()),
        Some(f) => parse_filter(f, allowed).ok_or_else(|| {
            bad_request(
                req,
                rid,
                &format!(
                    "Invalid filter clause: the emulator filters on {} with eq only, not {f}",
                    allowed.join(", ")
                ),
            )
        }),
    }
}

fn not_allowed(req: &Req, rid: &str) -> Resp {
    graph_error(
        req,
        rid,
        405,
        "Request_BadRequest",
        "The HTTP method is not supported for this resource.",
    )
}

/// Handles the routes of [`Route`].
pub(crate) fn handle(shared: &Shared, req: &Req, route: &Route, rid: &str) -> Resp {
    let mut st = lock(&shared.state);
    let claims = match authenticate(shared, &st, req, rid) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let is_app = claims.idtyp == "app";
    let has = |perms: &[&str]| claims.roles.iter().any(|r| perms.contains(&r.as_str()));
    let may_write = if is_app {
        has(&[WRITE_PERM])
    } else {
        crate::roles::names(&claims.wids)
            .iter()
            .any(|r| ASSIGNING_ROLES.contains(&r.as_str()))
    };
    let tenant = claims.tid.clone();
    match (route, &req.method) {
        (Route::Definitions, &Method::GET) => {
            if is_app && !has(&READ_PERMS) {
                return denied(req, rid);
            }
            let clauses = match filter(req, rid, &["displayName", "templateId", "id"]) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let value: Vec<Value> = crate::roles::BUILT_IN
                .iter()
                .filter(|(name, id)| {
                    clauses.iter().all(|(p, v)| match p.as_str() {
                        "displayName" => name == v,
                        _ => id.eq_ignore_ascii_case(v),
                    })
                })
                .map(|(name, id)| {
                    json!({
                        "id": id,
                        "displayName": name,
                        "isBuiltIn": true,
                        "isEnabled": true,
                        "isPrivileged": crate::roles::is_privileged(name),
                        "resourceScopes": ["/"],
                        "templateId": id,
                        "version": "1",
                    })
                })
                .collect();
            let context = format!("{BASE}roleManagement/directory/roleDefinitions");
            json(200, &json!({"@odata.context": context, "value": value}))
        }
        (Route::Assignments, &Method::GET) => {
            if is_app && !has(&READ_PERMS) {
                return denied(req, rid);
            }
            let clauses = match filter(req, rid, &["principalId", "roleDefinitionId"]) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let value: Vec<Value> = assignments(&st, &tenant)
                .iter()
                .filter(|a| {
                    clauses.iter().all(|(p, v)| match p.as_str() {
                        "principalId" => a.principal.eq_ignore_ascii_case(v),
                        _ => a.template.eq_ignore_ascii_case(v),
                    })
                })
                .map(Assignment::to_json)
                .collect();
            let context = format!("{BASE}roleManagement/directory/roleAssignments");
            json(200, &json!({"@odata.context": context, "value": value}))
        }
        (Route::Assignment(id), &Method::GET) => {
            if is_app && !has(&READ_PERMS) {
                return denied(req, rid);
            }
            match assignments(&st, &tenant).iter().find(|a| a.id() == *id) {
                Some(a) => {
                    let mut out = a.to_json();
                    out["@odata.context"] = json!(format!(
                        "{BASE}roleManagement/directory/roleAssignments/$entity"
                    ));
                    json(200, &out)
                }
                None => not_found(req, rid, id),
            }
        }
        (Route::Assignments, &Method::POST) => {
            if !may_write {
                return denied(req, rid);
            }
            let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
                return bad_request(req, rid, "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.");
            };
            let text = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let (Some(role), Some(principal)) = (text("roleDefinitionId"), text("principalId"))
            else {
                return bad_request(req, rid, "roleDefinitionId and principalId are required.");
            };
            match text("directoryScopeId").as_deref() {
                Some("/") => {}
                Some(other) => {
                    return bad_request(req, rid, &format!("The emulator assigns roles tenant-wide only (directoryScopeId '/'), not '{other}'."));
                }
                None => {
                    return bad_request(
                        req,
                        rid,
                        "Either directoryScopeId or appScopeId is required.",
                    )
                }
            }
            // A template id (Graph also takes the tenant's role definition id, the same for
            // built-ins); a display name is not an id.
            let Some(template) = crate::roles::BUILT_IN
                .iter()
                .find(|(_, id)| id.eq_ignore_ascii_case(&role))
                .map(|(_, id)| *id)
            else {
                return not_found(req, rid, &role);
            };
            let Some(list) = roles_of(&mut st, &tenant, &principal) else {
                return bad_request(req, rid, &format!("Invalid value specified for property 'principalId' of resource 'UnifiedRoleAssignment': no user or service principal '{principal}' in this tenant."));
            };
            if list
                .iter()
                .any(|r| crate::roles::template_id(r) == Some(template))
            {
                return bad_request(req, rid, "A conflicting object with one or more of the specified property values is present in the directory.");
            }
            let Some(name) = crate::roles::name_of(template) else {
                return not_found(req, rid, &role);
            };
            list.push(name.to_string());
            let principal = principal.to_ascii_lowercase();
            let a = Assignment {
                principal,
                template,
            };
            let mut out = a.to_json();
            out["@odata.context"] = json!(format!(
                "{BASE}roleManagement/directory/roleAssignments/$entity"
            ));
            shared.persist(&st);
            json(201, &out)
        }
        (Route::Assignment(id), &Method::DELETE) => {
            if !may_write {
                return denied(req, rid);
            }
            let Some(a) = assignments(&st, &tenant)
                .into_iter()
                .find(|a| a.id() == *id)
            else {
                return not_found(req, rid, id);
            };
            if let Some(list) = roles_of(&mut st, &tenant, &a.principal) {
                list.retain(|r| crate::roles::template_id(r) != Some(a.template));
            }
            shared.persist(&st);
            empty(204)
        }
        (Route::ServicePrincipals, &Method::GET) => {
            if is_app && !has(&SP_READ_PERMS) {
                return denied(req, rid);
            }
            let clauses = match filter(req, rid, &["appId", "id", "displayName"]) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let value: Vec<Value> = st
                .apps
                .iter()
                .filter(|a| a.tenant == tenant)
                .filter(|a| {
                    clauses.iter().all(|(p, v)| match p.as_str() {
                        "appId" => a.client_id.eq_ignore_ascii_case(v),
                        "id" => a.object_id.eq_ignore_ascii_case(v),
                        _ => a.name.as_deref() == Some(v.as_str()),
                    })
                })
                .map(|a| {
                    json!({
                        "id": a.object_id,
                        "appId": a.client_id,
                        "displayName": a.name,
                        "servicePrincipalType": "Application",
                        "accountEnabled": true,
                    })
                })
                .collect();
            let context = format!("{BASE}servicePrincipals");
            json(200, &json!({"@odata.context": context, "value": value}))
        }
        _ => not_allowed(req, rid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_ids_have_graph_s_layout() {
        // From Graph's "List unifiedRoleAssignments" example 2: Global Administrator and Global
        // Reader assigned to f1847572-48aa-47aa-96a3-2ec61904f41f.
        let a = |template| Assignment {
            principal: "f1847572-48aa-47aa-96a3-2ec61904f41f".into(),
            template,
        };
        assert_eq!(
            a("62e90394-69f5-4237-9190-012177145e10").id(),
            "lAPpYvVpN0KRkAEhdxReEHJ1hPGqSKpHlqMuxhkE9B8-1"
        );
        assert_eq!(
            a("f2ef992c-3afb-46b9-b7cf-a126ee74c451").id(),
            "LJnv8vs6uUa3z6Em7nTEUXJ1hPGqSKpHlqMuxhkE9B8-1"
        );
    }

    #[test]
    fn filters_take_eq_clauses_on_known_properties() {
        assert_eq!(
            parse_filter(
                "principalId eq 'abc' and roleDefinitionId eq 'x'",
                &["principalId", "roleDefinitionId"]
            ),
            Some(vec![
                ("principalId".into(), "abc".into()),
                ("roleDefinitionId".into(), "x".into())
            ])
        );
        assert_eq!(parse_filter("principalId ne 'abc'", &["principalId"]), None);
        assert_eq!(parse_filter("other eq 'abc'", &["principalId"]), None);
    }
}
