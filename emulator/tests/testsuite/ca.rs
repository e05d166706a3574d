//! Conditional Access: policies and named locations through Graph, the What-If evaluation,
//! and the password grant following the same policies (so a prediction and a sign-in agree).

use crate::common::*;
use keyturn_emulator::{Emulator, Scenario};
use serde_json::{json, Value};

/// May create policies (`Policy.ReadWrite.ConditionalAccess`).
const ADMIN: &str = "66666666-6666-6666-6666-666666666666";
const ADMIN_SECRET: &str = "ca-admin-secret";
/// May read and evaluate (`Policy.Read.ConditionalAccess`), not create.
const READER: &str = "67676767-6767-6767-6767-676767676767";
const READER_SECRET: &str = "ca-reader-secret";
/// User Administrator's template id (svc-coreview-1 holds the role).
const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
const SVC_CA: &str = "svc-coreview-ca@contoso.onmicrosoft.com";
const SVC_CA_ID: &str = "aaaaaaaa-0000-0000-0000-000000000003";
const BLOCK_OUTSIDE_OFFICE: &str = "Block svc-coreview-ca outside the office";
const REPORT_ONLY_MFA: &str = "Require MFA for administrators (report-only)";

async fn start_ca() -> Emulator {
    start_seeded(&format!(
        r#"
[[apps]]
tenant = "contoso"
name = "ca-admin"
client_id = "{ADMIN}"
secrets = ["{ADMIN_SECRET}"]
graph_permissions = ["Policy.ReadWrite.ConditionalAccess", "Policy.Read.All"]

[[apps]]
tenant = "contoso"
name = "ca-reader"
client_id = "{READER}"
secrets = ["{READER_SECRET}"]
graph_permissions = ["Policy.Read.ConditionalAccess"]
"#
    ))
    .await
}

async fn token(emu: &Emulator, client: &str, secret: &str) -> String {
    app_token(&http(emu), emu, client, secret, GRAPH_SCOPE).await
}

async fn call(emu: &Emulator, token: &str, post: Option<&Value>, what: &str) -> (u16, Value) {
    let url = format!(
        "{}/v1.0/identity/conditionalAccess/{what}",
        emu.graph_base()
    );
    let h = http(emu);
    let r = match post {
        Some(b) => h.post(url).json(b),
        None => h.get(url),
    };
    let r = r.bearer_auth(token).send().await.expect("Graph");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn what_if(user: &str, ip: Option<&str>, applied_only: bool) -> Value {
    let mut conditions = json!({"clientAppType": "mobileAppsAndDesktopClients"});
    if let Some(ip) = ip {
        conditions["ipAddress"] = json!(ip);
    }
    json!({
        "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": user},
        "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": [GRAPH_APP_ID]},
        "signInConditions": conditions,
        "appliedPoliciesOnly": applied_only,
    })
}

fn mfa_for_user_admins(name: &str, state: &str) -> Value {
    json!({
        "displayName": name,
        "state": state,
        "conditions": {
            "clientAppTypes": ["all"],
            "users": {"includeRoles": [USER_ADMIN]},
            "applications": {"includeApplications": ["All"]},
        },
        "grantControls": {"operator": "OR", "builtInControls": ["mfa"]},
    })
}

/// A password grant as keyturn's verify makes it (the demo's rotator, consented).
async fn ropc(emu: &Emulator, user: &str, password: &str) -> (u16, Value) {
    token_request(
        &http(emu),
        emu,
        TENANT,
        &[
            ("grant_type", "password"),
            ("client_id", ROTATOR),
            ("client_secret", ROTATOR_SECRET),
            ("scope", "openid User.Read"),
            ("username", user),
            ("password", password),
        ],
    )
    .await
}

fn by_name<'a>(answer: &'a Value, name: &str) -> Option<&'a Value> {
    answer["value"]
        .as_array()?
        .iter()
        .find(|p| p["displayName"] == name)
}

#[tokio::test]
async fn what_if_names_the_policies_that_apply_and_why_the_others_do_not() {
    let emu = start_ca().await;
    let reader = token(&emu, READER, READER_SECRET).await;
    let (s, all) = call(
        &emu,
        &reader,
        Some(&what_if(SVC1_ID, None, false)),
        "evaluate",
    )
    .await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(
        all["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.whatIfAnalysisResult)"
    );
    // svc-coreview-1 holds User Administrator: the report-only MFA policy applies (What-If
    // lists report-only policies as applying); the block policy names another user.
    let mfa = by_name(&all, REPORT_ONLY_MFA).expect("report-only policy listed");
    assert_eq!(mfa["policyApplies"], true, "{mfa}");
    assert_eq!(mfa["analysisReasons"], "notSet");
    assert_eq!(mfa["state"], "enabledForReportingButNotEnforced");
    assert_eq!(mfa["grantControls"]["builtInControls"], json!(["mfa"]));
    assert_eq!(mfa["conditions"]["users"]["includeRoles"][0], USER_ADMIN);
    let block = by_name(&all, BLOCK_OUTSIDE_OFFICE).expect("block policy listed");
    assert_eq!(block["policyApplies"], false, "{block}");
    // Users and, without an address, the location it cannot judge.
    assert_eq!(block["analysisReasons"], "users,notEnoughInformation");
    // appliedPoliciesOnly leaves the others out.
    let (_, applied) = call(
        &emu,
        &reader,
        Some(&what_if(SVC1_ID, None, true)),
        "evaluate",
    )
    .await;
    assert_eq!(
        applied["value"].as_array().map(Vec::len),
        Some(1),
        "{applied}"
    );
    // For svc-coreview-ca from outside the office the block applies; from inside it does not.
    let (_, outside) = call(
        &emu,
        &reader,
        Some(&what_if(SVC_CA_ID, Some("198.51.100.7"), true)),
        "evaluate",
    )
    .await;
    assert!(
        by_name(&outside, BLOCK_OUTSIDE_OFFICE).is_some(),
        "{outside}"
    );
    let (_, inside) = call(
        &emu,
        &reader,
        Some(&what_if(SVC_CA_ID, Some("203.0.113.20"), false)),
        "evaluate",
    )
    .await;
    let block = by_name(&inside, BLOCK_OUTSIDE_OFFICE).expect("listed");
    assert_eq!(block["policyApplies"], false);
    assert_eq!(block["analysisReasons"], "location");
}

#[tokio::test]
async fn an_enforced_mfa_policy_for_a_role_fails_the_password_grant_with_50076() {
    let emu = start_ca().await;
    // Before: the password grant of svc-coreview-1 works (the report-only policy is not enforced).
    let (s, b) = ropc(&emu, SVC1, SVC1_PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    let admin = token(&emu, ADMIN, ADMIN_SECRET).await;
    let (s, created) = call(
        &emu,
        &admin,
        Some(&mfa_for_user_admins("MFA for user admins", "enabled")),
        "policies",
    )
    .await;
    assert_eq!(s, 201, "{created}");
    assert!(created["id"].as_str().is_some_and(|i| !i.is_empty()));
    assert_eq!(created["state"], "enabled");
    let (s, b) = ropc(&emu, SVC1, SVC1_PASSWORD).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"], "interaction_required", "{b}");
    assert_eq!(b["error_codes"], json!([50076]));
    assert!(b["error_description"]
        .as_str()
        .is_some_and(|d| d.starts_with("AADSTS50076: ")));
    // What-If agrees.
    let (_, applied) = call(
        &emu,
        &admin,
        Some(&what_if(SVC1_ID, None, true)),
        "evaluate",
    )
    .await;
    assert!(
        by_name(&applied, "MFA for user admins").is_some(),
        "{applied}"
    );
    // The policy is listed.
    let (s, list) = call(&emu, &admin, None, "policies").await;
    assert_eq!(s, 200);
    assert!(by_name(&list, "MFA for user admins").is_some(), "{list}");
}

#[tokio::test]
async fn a_block_answers_53003_and_an_excluded_address_range_lets_the_sign_in_through() {
    let emu = start_ca().await;
    // The demo's policy blocks svc-coreview-ca everywhere but the office; the emulator sees
    // this test's requests from the loopback address.
    emu.control()
        .set_password(TENANT, SVC_CA, "Known-Pass-3!")
        .expect("password set");
    let (s, b) = ropc(&emu, SVC_CA, "Known-Pass-3!").await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"], "invalid_grant");
    assert_eq!(b["error_codes"], json!([53003]));
    // A wrong password is still the password's answer: Conditional Access comes after it.
    let (_, b) = ropc(&emu, SVC_CA, "Wrong-Pass-3!").await;
    assert_eq!(b["error_codes"], json!([50126]));
    // Name the loopback range as a location and exclude it from an enforced MFA policy.
    let admin = token(&emu, ADMIN, ADMIN_SECRET).await;
    let (s, loc) = call(
        &emu,
        &admin,
        Some(&json!({
            "@odata.type": "#microsoft.graph.ipNamedLocation",
            "displayName": "keyturn host",
            "isTrusted": false,
            "ipRanges": [
                {"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": "127.0.0.0/8"},
                {"@odata.type": "#microsoft.graph.iPv6CidrRange", "cidrAddress": "::1/128"},
            ],
        })),
        "namedLocations",
    )
    .await;
    assert_eq!(s, 201, "{loc}");
    assert_eq!(loc["ipRanges"][0]["cidrAddress"], "127.0.0.0/8");
    let loc_id = loc["id"].as_str().expect("id").to_string();
    let mut policy =
        mfa_for_user_admins("MFA for user admins, not from the keyturn host", "enabled");
    policy["conditions"]["locations"] =
        json!({"includeLocations": ["All"], "excludeLocations": [loc_id]});
    let (s, b) = call(&emu, &admin, Some(&policy), "policies").await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = ropc(&emu, SVC1, SVC1_PASSWORD).await;
    assert_eq!(s, 200, "from the excluded range: {b}");
    let (_, w) = call(
        &emu,
        &admin,
        Some(&what_if(SVC1_ID, Some("127.0.0.1"), false)),
        "evaluate",
    )
    .await;
    let p = by_name(&w, "MFA for user admins, not from the keyturn host").expect("listed");
    assert_eq!(p["policyApplies"], false);
    assert_eq!(p["analysisReasons"], "location");
    let (_, w) = call(
        &emu,
        &admin,
        Some(&what_if(SVC1_ID, Some("198.51.100.7"), true)),
        "evaluate",
    )
    .await;
    assert!(
        by_name(&w, "MFA for user admins, not from the keyturn host").is_some(),
        "{w}"
    );
}

#[tokio::test]
async fn reading_needs_a_policy_read_permission_and_creating_the_write_permission() {
    let emu = start_ca().await;
    // helpdesk holds Graph permissions for users, none for policies.
    let rotator = token(&emu, HELPDESK, HELPDESK_SECRET).await;
    for (post, what) in [
        (Some(what_if(SVC1_ID, None, true)), "evaluate"),
        (None, "policies"),
        (None, "namedLocations"),
    ] {
        let (s, b) = call(&emu, &rotator, post.as_ref(), what).await;
        assert_eq!(s, 403, "{what}: {b}");
        assert_eq!(b["error"]["code"], "Authorization_RequestDenied", "{b}");
    }
    let reader = token(&emu, READER, READER_SECRET).await;
    let (s, list) = call(&emu, &reader, None, "policies").await;
    assert_eq!(s, 200);
    assert_eq!(list["value"].as_array().map(Vec::len), Some(2), "{list}");
    let (s, b) = call(
        &emu,
        &reader,
        Some(&mfa_for_user_admins("not allowed", "enabled")),
        "policies",
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["code"], "Authorization_RequestDenied");
}

#[tokio::test]
async fn a_policy_graph_would_refuse_is_a_400_naming_the_field() {
    let emu = start_ca().await;
    let admin = token(&emu, ADMIN, ADMIN_SECRET).await;
    let (s, b) = call(
        &emu,
        &admin,
        Some(&mfa_for_user_admins("x", "on")),
        "policies",
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("state")),
        "{b}"
    );
    let (s, b) = call(
        &emu,
        &admin,
        Some(&json!({"signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": SVC1_ID},
            "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": [GRAPH_APP_ID]},
            "signInConditions": {"ipAddress": "not-an-ip"}})),
        "evaluate",
    )
    .await;
    assert_eq!(s, 400, "{b}");
}

#[test]
fn a_scenario_policy_must_name_known_locations_and_valid_values() {
    let err = Scenario::from_toml_str(
        r#"
[[tenants]]
id = "t"

[[conditional_access_policies]]
tenant = "t"
displayName = "p"
state = "enabled"
grantControls = { operator = "OR", builtInControls = ["compliantDevice"] }
[conditional_access_policies.conditions]
users = { includeUsers = ["All"] }
applications = { includeApplications = ["All"] }
locations = { includeLocations = ["nowhere"] }
"#,
    )
    .expect_err("invalid policy");
    let text = err.to_string();
    assert!(text.contains("compliantDevice"), "{text}");
    assert!(text.contains("\"nowhere\""), "{text}");
}
