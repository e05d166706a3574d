//! The user lifecycle over real HTTPS, as keyturn sends it through reqwest: `POST /users` (its
//! required fields and 400s, its permission), `DELETE /users/{id}` into the deleted items and
//! back (`restore`), the sensitive-action rule for users holding admin roles, and faults on the
//! new routes, commit-then-fail on the create included.

use crate::common::*;
use keyturn_emulator::{Emulator, FaultKind, FaultRule};
use serde_json::{json, Value};

/// Creates users and assigns roles, holds Privileged Authentication Administrator (as a
/// `provision_identity` app would).
const PROVISIONER: &str = "77777777-7777-7777-7777-777777777777";
const PROVISIONER_SECRET: &str = "provisioner-secret";
/// `User.ReadWrite.All` and User Administrator only: deletes users without admin roles.
const USER_ADMIN_APP: &str = "88888888-8888-8888-8888-888888888888";
const USER_ADMIN_SECRET: &str = "user-admin-secret";
const NEW_UPN: &str = "svc-new@contoso.onmicrosoft.com";
const NEW_PASSWORD: &str = "Fresh-Pass-2026!x";

async fn start_with_apps() -> Emulator {
    start_seeded(&format!(
        r#"
[[apps]]
tenant = "contoso"
name = "provisioner"
client_id = "{PROVISIONER}"
secrets = ["{PROVISIONER_SECRET}"]
graph_permissions = ["User.ReadWrite.All", "RoleManagement.ReadWrite.Directory"]
directory_roles = ["Privileged Authentication Administrator"]

[[apps]]
tenant = "contoso"
name = "user-admin"
client_id = "{USER_ADMIN_APP}"
secrets = ["{USER_ADMIN_SECRET}"]
graph_permissions = ["User.ReadWrite.All"]
directory_roles = ["User Administrator"]
"#
    ))
    .await
}

async fn token(emu: &Emulator, client: &str, secret: &str) -> String {
    app_token(&http(emu), emu, client, secret, GRAPH_SCOPE).await
}

async fn call(
    emu: &Emulator,
    method: reqwest::Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http(emu)
        .request(method, format!("{}/{path}", emu.graph_base()))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn new_user(upn: &str, password: &str) -> Value {
    json!({
        "accountEnabled": true,
        "displayName": "New service account",
        "mailNickname": "svc-new",
        "userPrincipalName": upn,
        "passwordProfile": {"password": password, "forceChangePasswordNextSignIn": false},
    })
}

async fn sign_in(emu: &Emulator, user: &str, password: &str) -> (u16, Value) {
    token_request(
        &http(emu),
        emu,
        TENANT,
        &[
            ("grant_type", "password"),
            ("client_id", ROTATOR),
            ("client_secret", ROTATOR_SECRET),
            ("scope", "openid"),
            ("username", user),
            ("password", password),
        ],
    )
    .await
}

#[tokio::test]
async fn a_created_user_signs_in_with_its_password() {
    let emu = start_with_apps().await;
    let t = token(&emu, PROVISIONER, PROVISIONER_SECRET).await;
    let (s, body) = call(
        &emu,
        reqwest::Method::POST,
        &t,
        "v1.0/users",
        Some(new_user(NEW_UPN, NEW_PASSWORD)),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["userPrincipalName"], NEW_UPN);
    assert_eq!(body["displayName"], "New service account");
    let id = body["id"].as_str().expect("id").to_string();
    assert!(
        !body.to_string().contains(NEW_PASSWORD),
        "the answer carries no password"
    );

    // Readable by UPN and by id, enabled, no forced change.
    let (s, u) = call(
        &emu,
        reqwest::Method::GET,
        &t,
        &format!("v1.0/users/{NEW_UPN}?$select=id,accountEnabled,passwordProfile,mailNickname"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["id"], id.as_str());
    assert_eq!(u["accountEnabled"], true);
    assert_eq!(u["mailNickname"], "svc-new");
    assert_eq!(u["passwordProfile"]["forceChangePasswordNextSignIn"], false);
    let (s, body) = sign_in(&emu, NEW_UPN, NEW_PASSWORD).await;
    assert_eq!(s, 200, "{body}");

    // The beta endpoint creates too.
    let (s, body) = call(
        &emu,
        reqwest::Method::POST,
        &t,
        "beta/users",
        Some(new_user("svc-beta@contoso.onmicrosoft.com", NEW_PASSWORD)),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_create_is_refused_with_graph_s_errors() {
    let emu = start_with_apps().await;
    let t = token(&emu, PROVISIONER, PROVISIONER_SECRET).await;
    let mut missing = new_user(NEW_UPN, NEW_PASSWORD);
    missing
        .as_object_mut()
        .expect("object")
        .remove("mailNickname");
    let cases = [
        (
            missing,
            "Property mailNickname value is required but is empty or missing.",
        ),
        (
            new_user("svc-new@fabrikam.example", NEW_PASSWORD),
            "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.",
        ),
        (
            new_user(PLAIN, NEW_PASSWORD),
            "Another object with the same value for property userPrincipalName already exists.",
        ),
        (
            new_user(NEW_UPN, "short"),
            "The specified password does not comply with password complexity requirements. Please provide a different password.",
        ),
        (
            new_user("svc new@contoso.onmicrosoft.com", NEW_PASSWORD),
            "Invalid value specified for property 'userPrincipalName' of resource 'User'.",
        ),
    ];
    for (body, message) in cases {
        let (s, answer) = call(&emu, reqwest::Method::POST, &t, "v1.0/users", Some(body)).await;
        assert_eq!(s, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "Request_BadRequest");
        assert_eq!(answer["error"]["message"], message);
    }
    // The taken UPN names its property, as Graph's details do.
    let (_, answer) = call(
        &emu,
        reqwest::Method::POST,
        &t,
        "v1.0/users",
        Some(new_user(PLAIN, NEW_PASSWORD)),
    )
    .await;
    assert_eq!(
        answer["error"]["details"][0],
        json!({"code": "ObjectConflict", "target": "userPrincipalName"})
    );
    // keyturn's everyday identity (User-PasswordProfile.ReadWrite.All) may not create users.
    let rotator = token(&emu, ROTATOR, ROTATOR_SECRET).await;
    let (s, answer) = call(
        &emu,
        reqwest::Method::POST,
        &rotator,
        "v1.0/users",
        Some(new_user(NEW_UPN, NEW_PASSWORD)),
    )
    .await;
    assert_eq!(s, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "Authorization_RequestDenied");
    assert!(emu.control().user(TENANT, NEW_UPN).is_err(), "nothing made");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_deleted_user_waits_in_deleted_items_and_comes_back() {
    let emu = start_with_apps().await;
    let t = token(&emu, USER_ADMIN_APP, USER_ADMIN_SECRET).await;
    let id = emu.control().user(TENANT, PLAIN).expect("plain").id;

    let (s, body) = call(
        &emu,
        reqwest::Method::DELETE,
        &t,
        &format!("v1.0/users/{PLAIN}"),
        None,
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let (s, _) = call(
        &emu,
        reqwest::Method::GET,
        &t,
        &format!("v1.0/users/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = sign_in(&emu, PLAIN, PLAIN_PASSWORD).await;
    assert_eq!(s, 400, "a deleted user cannot sign in");

    let (s, item) = call(
        &emu,
        reqwest::Method::GET,
        &t,
        &format!("v1.0/directory/deletedItems/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{item}");
    assert_eq!(item["@odata.type"], "#microsoft.graph.user");
    assert_eq!(item["id"], id.as_str());
    assert_eq!(
        item["userPrincipalName"],
        format!("{}{PLAIN}", id.replace('-', ""))
    );
    assert!(item["deletedDateTime"].is_string(), "{item}");
    let (s, list) = call(
        &emu,
        reqwest::Method::GET,
        &t,
        "v1.0/directory/deletedItems/microsoft.graph.user",
        None,
    )
    .await;
    assert_eq!(s, 200, "{list}");
    let ids: Vec<&str> = list["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);

    // A second delete finds nothing; the restore brings the user back with its password.
    let (s, _) = call(
        &emu,
        reqwest::Method::DELETE,
        &t,
        &format!("v1.0/users/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, restored) = call(
        &emu,
        reqwest::Method::POST,
        &t,
        &format!("v1.0/directory/deletedItems/{id}/restore"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{restored}");
    assert_eq!(restored["userPrincipalName"], PLAIN);
    let (s, _) = sign_in(&emu, PLAIN, PLAIN_PASSWORD).await;
    assert_eq!(s, 200);
    let (s, _) = call(
        &emu,
        reqwest::Method::GET,
        &t,
        &format!("v1.0/directory/deletedItems/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    emu.shutdown().await;
}

#[tokio::test]
async fn deleting_or_disabling_an_admin_needs_a_higher_role() {
    let emu = start_with_apps().await;
    // svc-coreview-1 holds Authentication, Exchange, … Administrator: User Administrator
    // does not cover them ("Who can perform sensitive actions").
    let user_admin = token(&emu, USER_ADMIN_APP, USER_ADMIN_SECRET).await;
    for (method, body) in [
        (reqwest::Method::DELETE, None),
        (
            reqwest::Method::PATCH,
            Some(json!({"accountEnabled": false})),
        ),
    ] {
        let (s, answer) = call(
            &emu,
            method,
            &user_admin,
            &format!("v1.0/users/{SVC1}"),
            body,
        )
        .await;
        assert_eq!(s, 403, "{answer}");
        assert_eq!(
            answer["error"]["message"],
            "Insufficient privileges to complete the operation."
        );
    }
    // keyturn's rotator holds PAA but not User.ReadWrite.All: no delete either.
    let rotator = token(&emu, ROTATOR, ROTATOR_SECRET).await;
    let (s, _) = call(
        &emu,
        reqwest::Method::DELETE,
        &rotator,
        &format!("v1.0/users/{SVC1}"),
        None,
    )
    .await;
    assert_eq!(s, 403);
    assert!(emu.control().user(TENANT, SVC1).is_ok(), "still there");

    // Privileged Authentication Administrator with the permission may.
    let provisioner = token(&emu, PROVISIONER, PROVISIONER_SECRET).await;
    let (s, answer) = call(
        &emu,
        reqwest::Method::PATCH,
        &provisioner,
        &format!("v1.0/users/{SVC1}"),
        Some(json!({"accountEnabled": false})),
    )
    .await;
    assert_eq!(s, 204, "{answer}");
    assert_eq!(
        emu.control()
            .user(TENANT, SVC1)
            .expect("svc1")
            .flags
            .disabled,
        Some(true)
    );
    let (s, answer) = call(
        &emu,
        reqwest::Method::DELETE,
        &provisioner,
        &format!("v1.0/users/{SVC1}"),
        None,
    )
    .await;
    assert_eq!(s, 204, "{answer}");
    assert!(emu.control().user(TENANT, SVC1).is_err());
    emu.shutdown().await;
}

#[tokio::test]
async fn a_lost_create_answer_still_created_the_user() {
    let emu = start_with_apps().await;
    let t = token(&emu, PROVISIONER, PROVISIONER_SECRET).await;
    // Commit then 500: the user exists although the answer says it failed.
    emu.control()
        .add_fault(FaultRule {
            route: "graph.create".into(),
            kind: FaultKind::CommitThenFail,
            count: Some(1),
            ..Default::default()
        })
        .expect("rule");
    let (s, answer) = call(
        &emu,
        reqwest::Method::POST,
        &t,
        "v1.0/users",
        Some(new_user(NEW_UPN, NEW_PASSWORD)),
    )
    .await;
    assert_eq!(s, 500, "{answer}");
    assert!(emu.control().user(TENANT, NEW_UPN).is_ok(), "created");
    let (s, _) = sign_in(&emu, NEW_UPN, NEW_PASSWORD).await;
    assert_eq!(s, 200, "with the password sent");

    // Commit then drop: no answer at all, the user exists.
    emu.control()
        .add_fault(FaultRule {
            route: "graph.create".into(),
            kind: FaultKind::CommitThenFail,
            then: Some("drop".into()),
            count: Some(1),
            ..Default::default()
        })
        .expect("rule");
    let sent = http(&emu)
        .post(format!("{}/v1.0/users", emu.graph_base()))
        .bearer_auth(&t)
        .json(&new_user(
            "svc-dropped@contoso.onmicrosoft.com",
            NEW_PASSWORD,
        ))
        .send()
        .await;
    assert!(sent.is_err(), "the connection was dropped: {sent:?}");
    assert!(emu
        .control()
        .user(TENANT, "svc-dropped@contoso.onmicrosoft.com")
        .is_ok());

    // A status fault on the delete changes nothing; the counters name the new routes.
    emu.control()
        .add_fault(FaultRule {
            route: "graph.delete".into(),
            kind: FaultKind::Status,
            status: Some(503),
            count: Some(1),
            ..Default::default()
        })
        .expect("rule");
    let (s, _) = call(
        &emu,
        reqwest::Method::DELETE,
        &t,
        &format!("v1.0/users/{NEW_UPN}"),
        None,
    )
    .await;
    assert_eq!(s, 503);
    assert!(emu.control().user(TENANT, NEW_UPN).is_ok());
    emu.control()
        .add_fault(FaultRule {
            route: "graph.deleted_items".into(),
            kind: FaultKind::Status,
            status: Some(500),
            count: Some(1),
            ..Default::default()
        })
        .expect("rule");
    let (s, _) = call(
        &emu,
        reqwest::Method::GET,
        &t,
        "v1.0/directory/deletedItems/microsoft.graph.user",
        None,
    )
    .await;
    assert_eq!(s, 500);
    let c = emu.control().counters();
    assert_eq!(c.requests.get("graph.create"), Some(&2));
    assert_eq!(c.requests.get("graph.delete"), Some(&1));
    assert_eq!(c.requests.get("graph.deleted_items"), Some(&1));
    assert_eq!(c.responses.get("graph.create 500"), Some(&1));
    emu.shutdown().await;
}

#[tokio::test]
async fn role_definitions_say_which_roles_are_privileged() {
    let emu = start_with_apps().await;
    let t = token(&emu, PROVISIONER, PROVISIONER_SECRET).await;
    let (s, defs) = call(
        &emu,
        reqwest::Method::GET,
        &t,
        "v1.0/roleManagement/directory/roleDefinitions",
        None,
    )
    .await;
    assert_eq!(s, 200, "{defs}");
    let privileged = |name: &str| {
        defs["value"]
            .as_array()
            .expect("value")
            .iter()
            .find(|d| d["displayName"] == name)
            .map(|d| d["isPrivileged"].clone())
    };
    assert_eq!(privileged("User Administrator"), Some(json!(true)));
    assert_eq!(privileged("Global Reader"), Some(json!(true)));
    assert_eq!(privileged("Exchange Administrator"), Some(json!(false)));
    assert_eq!(privileged("Reports Reader"), Some(json!(false)));
    emu.shutdown().await;
}
