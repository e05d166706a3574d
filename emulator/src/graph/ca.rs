//! Conditional Access on Graph: `GET`/`POST /identity/conditionalAccess/policies` and
//! `/namedLocations`, and the What-If evaluation `POST /identity/conditionalAccess/evaluate`
//! (Graph v1.0 and beta, same shapes), over the model in `state::ca`.
//!
//! Permissions, from Graph's reference pages: reading policies, named locations and the
//! What-If evaluation need `Policy.Read.ConditionalAccess` (or `Policy.Read.All`,
//! `Policy.ReadWrite.ConditionalAccess`); creating needs `Policy.ReadWrite.ConditionalAccess`
//! (older pages also listed `Policy.Read.All` with it; the emulator asks the write permission
//! only). A delegated token needs the same in `scp`. Otherwise 403 `Authorization_RequestDenied`.
//!
//! What-If answers a `whatIfAnalysisResult` collection: each policy of the tenant with
//! `policyApplies` and `analysisReasons` (`notSet` when it applies; otherwise the conditions
//! that did not match, comma-separated as an OData flags value: *unconfirmed* how the real
//! service joins several). Report-only policies (`enabledForReportingButNotEnforced`) are
//! listed as applying, as Graph's own examples show; disabled ones answer `policyNotEnabled`.

use super::{authenticate, bad_request, denied};
use crate::http::{json, rfc3339, Req, Resp};
use crate::shared::{lock, Shared};
use crate::state::{NamedLocation, NamedLocationSpec, Policy, PolicySpec, SignIn, State};
use hyper::Method;
use serde_json::{json, Value};

/// Application permissions that allow reading policies and the What-If evaluation.
const READ_PERMS: [&str; 3] = [
    "Policy.Read.ConditionalAccess",
    "Policy.Read.All",
    "Policy.ReadWrite.ConditionalAccess",
];
/// Application permissions that allow creating policies and named locations.
const WRITE_PERMS: [&str; 1] = ["Policy.ReadWrite.ConditionalAccess"];

const BASE: &str = "https://graph.microsoft.com/v1.0/$metadata#";

/// Handles `/{v1.0|beta}/identity/conditionalAccess/{what}`.
pub(crate) fn handle(shared: &Shared, req: &Req, what: &str, rid: &str) -> Resp {
    let mut st = lock(&shared.state);
    let claims = match authenticate(shared, &st, req, rid) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let held: Vec<String> = if claims.idtyp == "app" {
        claims.roles.clone()
    } else {
        claims
            .scp
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let may = |perms: &[&str]| held.iter().any(|h| perms.contains(&h.as_str()));
    let now = shared.clock.unix();
    let tenant = claims.tid.clone();
    match (what, &req.method) {
        ("policies" | "namedLocations" | "evaluate", m)
            if *m == Method::GET || *m == Method::POST => {}
        _ => {
            return super::graph_error(
                req,
                rid,
                405,
                "Request_BadRequest",
                "The HTTP method is not supported for this resource.",
            )
        }
    }
    let write = req.method == Method::POST && what != "evaluate";
    if !may(if write { &WRITE_PERMS } else { &READ_PERMS }) {
        return denied(req, rid);
    }
    match (what, req.method.clone()) {
        ("policies", Method::GET) => {
            let value: Vec<Value> = st
                .conditional_access
                .policies
                .iter()
                .filter(|p| p.tenant == tenant)
                .map(policy_json)
                .collect();
            json(
                200,
                &json!({"@odata.context": format!("{BASE}identity/conditionalAccess/policies"), "value": value}),
            )
        }
        ("policies", _) => {
            let spec: PolicySpec = match serde_json::from_slice(&req.body) {
                Ok(s) => s,
                Err(e) => return bad_request(req, rid, &format!("Invalid policy: {e}")),
            };
            let problems = spec.problems();
            if !problems.is_empty() {
                return bad_request(
                    req,
                    rid,
                    &format!("Invalid policy: {}", problems.join("; ")),
                );
            }
            let p = Policy {
                tenant,
                id: uuid::Uuid::new_v4().to_string(),
                created: now,
                spec,
            };
            let mut body = policy_json(&p);
            body["@odata.context"] =
                json!(format!("{BASE}identity/conditionalAccess/policies/$entity"));
            st.conditional_access.put_policy(p);
            shared.persist(&st);
            json(201, &body)
        }
        ("namedLocations", Method::GET) => {
            let value: Vec<Value> = st
                .conditional_access
                .named_locations
                .iter()
                .filter(|n| n.tenant == tenant)
                .map(location_json)
                .collect();
            json(
                200,
                &json!({"@odata.context": format!("{BASE}identity/conditionalAccess/namedLocations"), "value": value}),
            )
        }
        ("namedLocations", _) => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            if body.get("@odata.type").and_then(Value::as_str)
                != Some("#microsoft.graph.ipNamedLocation")
            {
                return bad_request(req, rid, "The emulator models ipNamedLocation only: give \"@odata.type\": \"#microsoft.graph.ipNamedLocation\".");
            }
            let spec: NamedLocationSpec = match serde_json::from_value(body) {
                Ok(s) => s,
                Err(e) => return bad_request(req, rid, &format!("Invalid named location: {e}")),
            };
            let problems = spec.problems();
            if !problems.is_empty() {
                return bad_request(
                    req,
                    rid,
                    &format!("Invalid named location: {}", problems.join("; ")),
                );
            }
            let n = NamedLocation {
                tenant,
                id: uuid::Uuid::new_v4().to_string(),
                created: now,
                spec,
            };
            let mut body = location_json(&n);
            body["@odata.context"] = json!(format!(
                "{BASE}identity/conditionalAccess/namedLocations/$entity"
            ));
            st.conditional_access.put_named_location(n);
            shared.persist(&st);
            json(201, &body)
        }
        ("evaluate", Method::POST) => evaluate(&st, req, rid, &tenant),
        _ => super::graph_error(
            req,
            rid,
            405,
            "Request_BadRequest",
            "The HTTP method is not supported for this resource.",
        ),
    }
}

/// `POST /identity/conditionalAccess/evaluate`.
fn evaluate(st: &State, req: &Req, rid: &str, tenant: &str) -> Resp {
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return bad_request(req, rid, "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.");
    };
    let identity = &body["signInIdentity"];
    if identity["@odata.type"].as_str() != Some("#microsoft.graph.userSignIn") {
        return bad_request(req, rid, "signInIdentity: the emulator evaluates #microsoft.graph.userSignIn (with userId) only.");
    }
    let Some(user_ref) = identity["userId"].as_str() else {
        return bad_request(req, rid, "signInIdentity.userId is required.");
    };
    let context = &body["signInContext"];
    if context["@odata.type"].as_str() != Some("#microsoft.graph.applicationContext") {
        return bad_request(req, rid, "signInContext: the emulator evaluates #microsoft.graph.applicationContext (with includeApplications) only.");
    }
    let apps: Vec<String> = context["includeApplications"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if apps.is_empty() {
        return bad_request(
            req,
            rid,
            "signInContext.includeApplications: name at least one application.",
        );
    }
    let conditions = &body["signInConditions"];
    let client_app_type = conditions["clientAppType"].as_str().unwrap_or("all");
    if !crate::state::CLIENT_APP_TYPES.contains(&client_app_type) {
        return bad_request(
            req,
            rid,
            &format!("signInConditions.clientAppType {client_app_type:?} is not valid."),
        );
    }
    let ip = match conditions["ipAddress"].as_str() {
        None => None,
        Some(s) => match s.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                return bad_request(
                    req,
                    rid,
                    &format!("signInConditions.ipAddress {s:?} is not an IP address."),
                )
            }
        },
    };
    let applied_only = body["appliedPoliciesOnly"].as_bool().unwrap_or(false);
    // *Unconfirmed*: the real service's answer for a user it does not find.
    let Some(idx) = st.user_idx(tenant, user_ref) else {
        return super::not_found(req, rid, user_ref);
    };
    let user = &st.users[idx];
    let sign_in = SignIn {
        user_id: &user.id,
        user_roles: &user.directory_roles,
        apps: &apps,
        client_app_type,
        ip,
    };
    let value: Vec<Value> = st
        .conditional_access
        .evaluate(&user.tenant, &sign_in)
        .into_iter()
        .filter(|(_, r)| !applied_only || r.is_ok())
        .map(|(p, r)| {
            let mut v = policy_json(p);
            v["policyApplies"] = json!(r.is_ok());
            v["analysisReasons"] = json!(match &r {
                Ok(()) => "notSet".to_string(),
                Err(reasons) => reasons.join(","),
            });
            v
        })
        .collect();
    json(
        200,
        &json!({
            "@odata.context": format!("{BASE}Collection(microsoft.graph.whatIfAnalysisResult)"),
            "value": value,
        }),
    )
}

/// A policy in Graph's `conditionalAccessPolicy` shape (the conditions the emulator does not
/// model are `null` or empty, as Graph answers for a policy that does not use them).
fn policy_json(p: &Policy) -> Value {
    let s = &p.spec;
    let c = &s.conditions;
    let types: Vec<&str> = if c.client_app_types.is_empty() {
        vec!["all"]
    } else {
        c.client_app_types.iter().map(String::as_str).collect()
    };
    json!({
        "id": p.id,
        "templateId": null,
        "displayName": s.display_name,
        "createdDateTime": rfc3339(p.created),
        "modifiedDateTime": null,
        "state": s.state,
        "partialEnablementStrategy": null,
        "sessionControls": null,
        "conditions": {
            "userRiskLevels": [],
            "signInRiskLevels": [],
            "clientAppTypes": types,
            "servicePrincipalRiskLevels": [],
            "insiderRiskLevels": null,
            "clients": null,
            "platforms": null,
            "locations": c.locations.as_ref().map(|l| json!({
                "includeLocations": l.include_locations,
                "excludeLocations": l.exclude_locations,
            })),
            "times": null,
            "deviceStates": null,
            "devices": null,
            "clientApplications": null,
            "authenticationFlows": null,
            "applications": {
                "includeApplications": c.applications.include_applications,
                "excludeApplications": c.applications.exclude_applications,
                "includeUserActions": [],
                "includeAuthenticationContextClassReferences": [],
                "applicationFilter": null,
            },
            "users": {
                "includeUsers": c.users.include_users,
                "excludeUsers": c.users.exclude_users,
                "includeGroups": c.users.include_groups,
                "excludeGroups": c.users.exclude_groups,
                "includeRoles": c.users.include_roles,
                "excludeRoles": c.users.exclude_roles,
                "includeGuestsOrExternalUsers": null,
                "excludeGuestsOrExternalUsers": null,
            },
        },
        "grantControls": s.grant_controls.as_ref().map(|g| json!({
            "operator": g.operator,
            "builtInControls": g.built_in_controls,
            "customAuthenticationFactors": [],
            "termsOfUse": [],
            "authenticationStrength": null,
        })),
    })
}

/// A named location in Graph's `ipNamedLocation` shape.
fn location_json(n: &NamedLocation) -> Value {
    let ranges: Vec<Value> = n
        .spec
        .ip_ranges
        .iter()
        .map(|r| {
            let kind = if r.cidr_address.contains(':') {
                "#microsoft.graph.iPv6CidrRange"
            } else {
                "#microsoft.graph.iPv4CidrRange"
            };
            json!({"@odata.type": kind, "cidrAddress": r.cidr_address})
        })
        .collect();
    json!({
        "@odata.type": "#microsoft.graph.ipNamedLocation",
        "id": n.id,
        "displayName": n.spec.display_name,
        "createdDateTime": rfc3339(n.created),
        "modifiedDateTime": rfc3339(n.created),
        "isTrusted": n.spec.is_trusted,
        "ipRanges": ranges,
    })
}
