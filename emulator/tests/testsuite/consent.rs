//! Consent for the password grant: AADSTS65001 without a delegated permission grant, grants
//! seeded by a scenario or created through Graph's `oauth2PermissionGrants`, and the client
//! authentication a confidential client owes.

use crate::common::*;
use keyturn_emulator::{Emulator, Scenario};
use serde_json::{json, Value};

const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// An app with a client secret and no grant; its service principal object id is fixed.
const VERIFIER: &str = "77777777-7777-7777-7777-777777777777";
const VERIFIER_OID: &str = "77777777-0000-0000-0000-00000000000a";
const VERIFIER_SECRET: &str = "verifier-secret";
/// An app that may create grants (`DelegatedPermissionGrant.ReadWrite.All`).
const GRANTER: &str = "88888888-8888-8888-8888-888888888888";
const GRANTER_SECRET: &str = "granter-secret";

async fn start_with_apps() -> Emulator {
    start_seeded(&format!(
        r#"
[[apps]]
tenant = "contoso"
name = "verifier"
client_id = "{VERIFIER}"
object_id = "{VERIFIER_OID}"
secrets = ["{VERIFIER_SECRET}"]

[[apps]]
tenant = "contoso"
name = "granter"
client_id = "{GRANTER}"
secrets = ["{GRANTER_SECRET}"]
graph_permissions = ["DelegatedPermissionGrant.ReadWrite.All"]
"#
    ))
    .await
}

async fn ropc_as(
    emu: &Emulator,
    client: &[(&str, &str)],
    scope: &str,
    user: &str,
    password: &str,
) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", "password"),
        ("scope", scope),
        ("username", user),
        ("password", password),
    ];
    form.extend_from_slice(client);
    token_request(&http(emu), emu, TENANT, &form).await
}

fn verifier() -> [(&'static str, &'static str); 2] {
    [("client_id", VERIFIER), ("client_secret", VERIFIER_SECRET)]
}

fn assert_consent_required(status: u16, body: &Value) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert_eq!(body["suberror"], "consent_required", "{body}");
    assert_eq!(body["error_codes"], json!([65001]), "{body}");
    let desc = body["error_description"].as_str().expect("description");
    assert!(
        desc.starts_with(&format!("AADSTS65001: The user or administrator has not consented to use the application with ID '{VERIFIER}' named 'verifier'.")),
        "{desc}"
    );
    for k in ["timestamp", "trace_id", "correlation_id"] {
        assert!(
            body[k].as_str().is_some_and(|s| !s.is_empty()),
            "{k}: {body}"
        );
    }
}

async fn grants(emu: &Emulator, token: &str, filter: Option<&str>) -> (u16, Value) {
    let mut r = http(emu)
        .get(format!("{}/v1.0/oauth2PermissionGrants", emu.graph_base()))
        .bearer_auth(token);
    if let Some(f) = filter {
        r = r.query(&[("$filter", f)]);
    }
    let r = r.send().await.expect("GET grants");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON"))
}

async fn create_grant(emu: &Emulator, token: &str, body: &Value) -> (u16, Value) {
    let r = http(emu)
        .post(format!("{}/v1.0/oauth2PermissionGrants", emu.graph_base()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("POST grant");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON"))
}

#[tokio::test]
async fn the_password_grant_needs_consent_for_every_scope_it_asks() {
    let emu = start_with_apps().await;
    // No grant at all: the right password of an unblocked user is still refused.
    let (s, b) = ropc_as(&emu, &verifier(), "openid User.Read", PLAIN, PLAIN_PASSWORD).await;
    assert_consent_required(s, &b);
    // `.default` needs a grant too.
    let (s, b) = ropc_as(
        &emu,
        &verifier(),
        "https://graph.microsoft.com/.default",
        PLAIN,
        PLAIN_PASSWORD,
    )
    .await;
    assert_consent_required(s, &b);
    // A wrong password is still the password's answer (50126), not consent's.
    let (s, b) = ropc_as(
        &emu,
        &verifier(),
        "openid User.Read",
        PLAIN,
        "Wrong-Pass-1!",
    )
    .await;
    assert_eq!((s, &b["error_codes"]), (400, &json!([50126])), "{b}");

    // Tenant-wide consent for `openid User.Read`, seeded.
    let grant = r#"
[[oauth2_permission_grants]]
app = "77777777-7777-7777-7777-777777777777"
scope = "openid User.Read"
"#;
    emu.control()
        .seed(&Scenario::from_toml_str(grant).expect("grant"))
        .expect("seeded");
    let (s, b) = ropc_as(&emu, &verifier(), "openid User.Read", PLAIN, PLAIN_PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["scope"], "openid User.Read");
    let claims = peek_claims(b["access_token"].as_str().expect("token"));
    assert_eq!(claims["scp"], "openid User.Read", "{claims}");
    // Graph's URI in front of a permission is the same permission.
    let (s, b) = ropc_as(
        &emu,
        &verifier(),
        "openid https://graph.microsoft.com/User.Read",
        PLAIN,
        PLAIN_PASSWORD,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // A permission outside the grant is refused.
    let (s, b) = ropc_as(
        &emu,
        &verifier(),
        "openid User.Read Mail.Read",
        PLAIN,
        PLAIN_PASSWORD,
    )
    .await;
    assert_consent_required(s, &b);
}

#[tokio::test]
async fn a_principal_grant_covers_its_user_only() {
    let emu = start_with_apps().await;
    let grant = format!(
        r#"
[[oauth2_permission_grants]]
app = "{VERIFIER}"
consent_type = "Principal"
principal = "{SVC1}"
scope = "openid User.Read"
"#
    );
    emu.control()
        .seed(&Scenario::from_toml_str(&grant).expect("grant"))
        .expect("seeded");
    let (s, b) = ropc_as(&emu, &verifier(), "openid User.Read", SVC1, SVC1_PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = ropc_as(&emu, &verifier(), "openid User.Read", PLAIN, PLAIN_PASSWORD).await;
    assert_consent_required(s, &b);
}

#[tokio::test]
async fn grants_are_created_and_listed_through_graph() {
    let emu = start_with_apps().await;
    let h = http(&emu);
    let granter = app_token(&h, &emu, GRANTER, GRANTER_SECRET, GRAPH_SCOPE).await;
    let body = json!({
        "clientId": VERIFIER_OID,
        "consentType": "AllPrincipals",
        "principalId": null,
        "resourceId": GRAPH_APP_ID,
        "scope": "openid User.Read",
    });
    let (s, created) = create_grant(&emu, &granter, &body).await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["clientId"], VERIFIER_OID);
    assert_eq!(created["consentType"], "AllPrincipals");
    assert_eq!(created["principalId"], Value::Null);
    assert_eq!(created["resourceId"], GRAPH_APP_ID);
    assert_eq!(created["scope"], "openid User.Read");
    assert!(
        created["id"].as_str().is_some_and(|i| !i.is_empty()),
        "{created}"
    );

    // The same key again: 409.
    let (s, again) = create_grant(&emu, &granter, &body).await;
    assert_eq!(s, 409, "{again}");

    // Listed, and found by the client's object id.
    let (s, list) = grants(
        &emu,
        &granter,
        Some(&format!("clientId eq '{VERIFIER_OID}'")),
    )
    .await;
    assert_eq!(s, 200, "{list}");
    let value = list["value"].as_array().expect("value");
    assert_eq!(value.len(), 1, "{list}");
    assert_eq!(value[0]["id"], created["id"]);

    // The verify sign-in now works.
    let (s, b) = ropc_as(&emu, &verifier(), "openid User.Read", PLAIN, PLAIN_PASSWORD).await;
    assert_eq!(s, 200, "{b}");

    // The client id where the object id belongs: 400, naming the mistake.
    let (s, b) = create_grant(
        &emu,
        &granter,
        &json!({"clientId": VERIFIER, "consentType": "AllPrincipals", "resourceId": GRAPH_APP_ID, "scope": "openid"}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("object id")),
        "{b}"
    );

    // An app without the permission may neither create nor list grants.
    let reader = app_token(&h, &emu, READER, READER_SECRET, GRAPH_SCOPE).await;
    let (s, b) = create_grant(&emu, &reader, &body).await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (403, &json!("Authorization_RequestDenied")),
        "{b}"
    );
    let (s, b) = grants(&emu, &reader, None).await;
    assert_eq!(s, 403, "{b}");
}

#[tokio::test]
async fn a_confidential_client_must_authenticate_in_the_password_grant() {
    let emu = start_with_apps().await;
    emu.control()
        .seed(
            &Scenario::from_toml_str(&format!(
                "[[oauth2_permission_grants]]\napp = \"{VERIFIER}\"\nscope = \"openid User.Read\"\n"
            ))
            .expect("grant"),
        )
        .expect("seeded");
    // No secret and no assertion: AADSTS7000218, even with consent.
    let (s, b) = ropc_as(
        &emu,
        &[("client_id", VERIFIER)],
        "openid User.Read",
        PLAIN,
        PLAIN_PASSWORD,
    )
    .await;
    assert_eq!(
        (s, &b["error"], &b["error_codes"]),
        (401, &json!("invalid_client"), &json!([7000218])),
        "{b}"
    );
    // A certificate assertion authenticates it.
    let assertion = unsigned_jwt(&json!({
        "iss": VERIFIER,
        "sub": VERIFIER,
        "aud": format!("{}/contoso/oauth2/v2.0/token", emu.authority_host()),
        "exp": now() + 600,
        "nbf": now() - 10,
        "jti": "consent-test",
    }));
    let (s, b) = ropc_as(
        &emu,
        &[
            ("client_id", VERIFIER),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
        ],
        "openid User.Read",
        PLAIN,
        PLAIN_PASSWORD,
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

/// The claims of a JWT, unchecked.
fn peek_claims(token: &str) -> Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("claims")
}
