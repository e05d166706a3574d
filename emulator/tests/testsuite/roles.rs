//! Directory roles over real HTTPS: `roleManagement/directory/roleDefinitions` and
//! `roleAssignments` (list, create, delete) and `servicePrincipals?$filter=appId eq`, their
//! permissions, and that an assignment made here is the one the password-reset check uses.

use crate::common::*;
use keyturn_emulator::{Emulator, FaultKind, FaultRule};
use serde_json::{json, Value};

const PAA: &str = "7be44c8a-adaf-4e2a-84d6-ab2649e08a13";
const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";
/// Reads roles (`RoleManagement.Read.Directory`) and service principals (`Application.Read.All`).
const ROLE_READER: &str = "66666666-6666-6666-6666-666666666666";
const ROLE_READER_SECRET: &str = "role-reader-secret";
/// Assigns roles (`RoleManagement.ReadWrite.Directory`), holds no directory role.
const ROLE_WRITER: &str = "99999999-9999-9999-9999-999999999999";
const ROLE_WRITER_SECRET: &str = "role-writer-secret";
const HELPDESK_OID: &str = "44444444-0000-0000-0000-00000000000b";

async fn start_with_apps() -> Emulator {
    start_seeded(&format!(
        r#"
[[apps]]
tenant = "contoso"
name = "role-reader"
client_id = "{ROLE_READER}"
secrets = ["{ROLE_READER_SECRET}"]
graph_permissions = ["RoleManagement.Read.Directory", "Application.Read.All"]

[[apps]]
tenant = "contoso"
name = "role-writer"
client_id = "{ROLE_WRITER}"
secrets = ["{ROLE_WRITER_SECRET}"]
graph_permissions = ["RoleManagement.ReadWrite.Directory", "User-PasswordProfile.ReadWrite.All"]

[[apps]]
tenant = "contoso"
name = "helpdesk"
client_id = "{HELPDESK}"
object_id = "{HELPDESK_OID}"
secrets = ["{HELPDESK_SECRET}"]
graph_permissions = ["User.Read.All", "User-PasswordProfile.ReadWrite.All"]
directory_roles = ["User Administrator"]
"#
    ))
    .await
}

async fn call(
    emu: &Emulator,
    method: reqwest::Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http(emu)
        .request(method, format!("{}/v1.0/{path}", emu.graph_base()))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn token(emu: &Emulator, client: &str, secret: &str) -> String {
    app_token(&http(emu), emu, client, secret, GRAPH_SCOPE).await
}

fn role_ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|a| a["roleDefinitionId"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn definitions_assignments_and_service_principals_in_graph_s_shapes() {
    let emu = start_with_apps().await;
    let t = token(&emu, ROLE_READER, ROLE_READER_SECRET).await;

    // Built-in definitions: id = templateId; $filter on displayName.
    let (s, v) = call(
        &emu,
        reqwest::Method::GET,
        &t,
        "roleManagement/directory/roleDefinitions?$filter=displayName eq 'Privileged Authentication Administrator'",
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"].as_array().map(Vec::len), Some(1), "{v}");
    let d = &v["value"][0];
    assert_eq!(d["id"], PAA);
    assert_eq!(d["templateId"], PAA);
    assert_eq!(d["isBuiltIn"], true);
    assert_eq!(d["displayName"], "Privileged Authentication Administrator");

    // The helpdesk app's service principal by appId, then its assignments by principalId.
    let (s, v) = call(
        &emu,
        reqwest::Method::GET,
        &t,
        &format!("servicePrincipals?$filter=appId eq '{HELPDESK}'"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"][0]["id"], HELPDESK_OID, "{v}");
    assert_eq!(v["value"][0]["appId"], HELPDESK);
    assert_eq!(v["value"][0]["displayName"], "helpdesk");
    let (s, v) = call(
        &emu,
        reqwest::Method::GET,
        &t,
        &format!(
            "roleManagement/directory/roleAssignments?$filter=principalId eq '{HELPDESK_OID}'"
        ),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let a = &v["value"][0];
    assert_eq!(v["value"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(a["principalId"], HELPDESK_OID);
    assert_eq!(a["roleDefinitionId"], USER_ADMIN);
    assert_eq!(a["directoryScopeId"], "/");
    assert!(a["id"].as_str().expect("id").ends_with("-1"), "{a}");

    // A user's assignments: svc-coreview-1 holds seven roles.
    let (s, v) = call(
        &emu,
        reqwest::Method::GET,
        &t,
        &format!("roleManagement/directory/roleAssignments?$filter=principalId eq '{SVC1_ID}'"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(role_ids(&v).len(), 7, "{v}");
    assert!(role_ids(&v).contains(&USER_ADMIN.to_owned()), "{v}");

    // A filter the emulator does not serve is a 400, not a silent full list.
    let (s, v) = call(
        &emu,
        reqwest::Method::GET,
        &t,
        "roleManagement/directory/roleAssignments?$filter=startswith(principalId,'a')",
        None,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "Request_BadRequest");
}

#[tokio::test]
async fn reading_roles_or_service_principals_without_a_permission_is_403() {
    let emu = start_with_apps().await;
    // The helpdesk app reads users but holds no role-management or application permission.
    let t = token(&emu, HELPDESK, HELPDESK_SECRET).await;
    for path in [
        "roleManagement/directory/roleDefinitions".to_owned(),
        format!("roleManagement/directory/roleAssignments?$filter=principalId eq '{SVC1_ID}'"),
        format!("servicePrincipals?$filter=appId eq '{HELPDESK}'"),
    ] {
        let (s, v) = call(&emu, reqwest::Method::GET, &t, &path, None).await;
        assert_eq!(s, 403, "{path}: {v}");
        assert_eq!(v["error"]["code"], "Authorization_RequestDenied", "{v}");
        assert!(v["error"]["innerError"]["request-id"].is_string(), "{v}");
    }
    // The role reader cannot create an assignment (it only reads).
    let t = token(&emu, ROLE_READER, ROLE_READER_SECRET).await;
    let (s, v) = call(
        &emu,
        reqwest::Method::POST,
        &t,
        "roleManagement/directory/roleAssignments",
        Some(
            json!({"roleDefinitionId": PAA, "principalId": HELPDESK_OID, "directoryScopeId": "/"}),
        ),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "Authorization_RequestDenied");
}

#[tokio::test]
async fn an_assignment_created_or_deleted_here_is_what_the_reset_check_uses() {
    let emu = start_with_apps().await;
    let writer = token(&emu, ROLE_WRITER, ROLE_WRITER_SECRET).await;
    let reset = |t: String| {
        let emu = &emu;
        async move {
            call(
                emu,
                reqwest::Method::PATCH,
                &t,
                &format!("users/{SVC1}"),
                Some(json!({"passwordProfile": {"password": "Another-Pass-9!", "forceChangePasswordNextSignIn": false}})),
            )
            .await
        }
    };
    // User Administrator cannot reset a user holding Exchange Administrator (and more).
    let (s, v) = reset(token(&emu, HELPDESK, HELPDESK_SECRET).await).await;
    assert_eq!(s, 403, "{v}");

    // Assign Privileged Authentication Administrator to the helpdesk app's service principal.
    let (s, created) = call(
        &emu,
        reqwest::Method::POST,
        &writer,
        "roleManagement/directory/roleAssignments",
        Some(json!({
            "@odata.type": "#microsoft.graph.unifiedRoleAssignment",
            "roleDefinitionId": PAA,
            "principalId": HELPDESK_OID,
            "directoryScopeId": "/"
        })),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["roleDefinitionId"], PAA);
    assert_eq!(created["principalId"], HELPDESK_OID);
    let id = created["id"].as_str().expect("id").to_owned();
    // Listed, readable by id, and a second identical assignment is refused.
    let (s, v) = call(
        &emu,
        reqwest::Method::GET,
        &writer,
        &format!(
            "roleManagement/directory/roleAssignments?$filter=principalId eq '{HELPDESK_OID}'"
        ),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(role_ids(&v), vec![PAA.to_owned(), USER_ADMIN.to_owned()]);
    let (s, v) = call(
        &emu,
        reqwest::Method::GET,
        &writer,
        &format!("roleManagement/directory/roleAssignments/{id}"),
        None,
    )
    .await;
    assert_eq!((s, v["id"].as_str()), (200, Some(id.as_str())), "{v}");
    let (s, v) = call(
        &emu,
        reqwest::Method::POST,
        &writer,
        "roleManagement/directory/roleAssignments",
        Some(
            json!({"roleDefinitionId": PAA, "principalId": HELPDESK_OID, "directoryScopeId": "/"}),
        ),
    )
    .await;
    assert_eq!(s, 400, "{v}");

    // A new token carries the role in `wids`, and the reset now succeeds.
    let t = token(&emu, HELPDESK, HELPDESK_SECRET).await;
    let (s, v) = reset(t).await;
    assert_eq!(s, 204, "{v}");

    // Deleted: gone from the list, and resets are refused again.
    let (s, v) = call(
        &emu,
        reqwest::Method::DELETE,
        &writer,
        &format!("roleManagement/directory/roleAssignments/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = call(
        &emu,
        reqwest::Method::DELETE,
        &writer,
        &format!("roleManagement/directory/roleAssignments/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], "Request_ResourceNotFound");
    let (s, v) = reset(token(&emu, HELPDESK, HELPDESK_SECRET).await).await;
    assert_eq!(s, 403, "{v}");

    // Unknown role definitions and principals are refused.
    let (s, v) = call(
        &emu,
        reqwest::Method::POST,
        &writer,
        "roleManagement/directory/roleAssignments",
        Some(json!({"roleDefinitionId": "00000000-0000-0000-0000-000000000000", "principalId": HELPDESK_OID, "directoryScopeId": "/"})),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = call(
        &emu,
        reqwest::Method::POST,
        &writer,
        "roleManagement/directory/roleAssignments",
        Some(json!({"roleDefinitionId": PAA, "principalId": "nobody", "directoryScopeId": "/"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
}

#[tokio::test]
async fn faults_apply_to_the_role_routes() {
    let emu = start_with_apps().await;
    let t = token(&emu, ROLE_READER, ROLE_READER_SECRET).await;
    emu.control()
        .add_fault(FaultRule {
            route: "graph.roles".into(),
            kind: FaultKind::Status,
            status: Some(503),
            count: Some(1),
            ..FaultRule::default()
        })
        .expect("rule");
    let path =
        format!("roleManagement/directory/roleAssignments?$filter=principalId eq '{SVC1_ID}'");
    let (s, v) = call(&emu, reqwest::Method::GET, &t, &path, None).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "serviceNotAvailable");
    let (s, _) = call(&emu, reqwest::Method::GET, &t, &path, None).await;
    assert_eq!(s, 200, "the rule is used up");
    // The service principals route has its own name.
    emu.control()
        .add_fault(FaultRule {
            route: "graph.service_principals".into(),
            status: Some(500),
            count: Some(1),
            ..FaultRule::default()
        })
        .expect("rule");
    let (s, _) = call(
        &emu,
        reqwest::Method::GET,
        &t,
        &format!("servicePrincipals?$filter=appId eq '{HELPDESK}'"),
        None,
    )
    .await;
    assert_eq!(s, 500);
}
