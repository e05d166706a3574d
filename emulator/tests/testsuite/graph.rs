//! Microsoft Graph users over real HTTPS: reads with $select, password resets with Entra's
//! rules and permissions, every error, write throttling.

use crate::common::*;
use keyturn_emulator::{Emulator, Limits, Scenario};
use serde_json::{json, Value};

async fn get(
    h: &reqwest::Client,
    emu: &Emulator,
    token: Option<&str>,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = h.get(format!("{}/v1.0/{path}", emu.graph_base()));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.expect("GET");
    let (s, hd) = (r.status().as_u16(), r.headers().clone());
    (s, hd, r.json().await.unwrap_or(Value::Null))
}

async fn reset(
    h: &reqwest::Client,
    emu: &Emulator,
    token: &str,
    user: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = h
        .patch(format!("{}/v1.0/users/{user}", emu.graph_base()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("PATCH");
    let (s, hd) = (r.status().as_u16(), r.headers().clone());
    (s, hd, r.json().await.unwrap_or(Value::Null))
}

fn profile(pw: &str) -> Value {
    json!({"passwordProfile": {"password": pw, "forceChangePasswordNextSignIn": false, "forceChangePasswordNextSignInWithMfa": false}})
}

fn assert_graph_error(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    want: u16,
    code: &str,
) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let rid = headers
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request-id header");
    assert_eq!(body["error"]["innerError"]["request-id"], rid);
    assert!(body["error"]["innerError"]["date"].is_string());
    assert!(body["error"]["innerError"]["client-request-id"].is_string());
}

#[tokio::test]
async fn read_with_select_and_reset_password() {
    let emu = start().await;
    let h = http(&emu);
    let t = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, GRAPH_SCOPE).await;
    let path = format!(
        "users/{SVC1}?$select=id,userPrincipalName,accountEnabled,lastPasswordChangeDateTime"
    );
    let (s, _, before) = get(&h, &emu, Some(&t), &path).await;
    assert_eq!(s, 200, "{before}");
    assert_eq!(before["id"], SVC1_ID);
    assert_eq!(before["userPrincipalName"], SVC1);
    assert_eq!(before["accountEnabled"], true);
    assert!(
        before.get("displayName").is_none(),
        "only selected properties"
    );
    let changed_before = before["lastPasswordChangeDateTime"]
        .as_str()
        .expect("date")
        .to_string();
    assert!(
        changed_before.ends_with('Z') && changed_before.len() == 20,
        "{changed_before}"
    );

    emu.control()
        .advance_clock(std::time::Duration::from_secs(5));
    let (s, hd, body) = reset(&h, &emu, &t, SVC1_ID, profile("New-Pass-1234!")).await;
    assert_eq!(s, 204, "{body}");
    assert!(hd.contains_key("request-id"));
    assert!(emu
        .control()
        .check_password(TENANT, SVC1, "New-Pass-1234!")
        .expect("check"));
    assert!(!emu
        .control()
        .check_password(TENANT, SVC1, SVC1_PASSWORD)
        .expect("check"));
    let (_, _, after) = get(&h, &emu, Some(&t), &path).await;
    assert!(after["lastPasswordChangeDateTime"].as_str().expect("date") > changed_before.as_str());

    // The same password again is accepted (an admin reset may reuse it).
    let (s, _, _) = reset(&h, &emu, &t, SVC1, profile("New-Pass-1234!")).await;
    assert_eq!(s, 204);

    // Default GET: the default property set.
    let (s, _, all) = get(&h, &emu, Some(&t), &format!("users/{SVC1}")).await;
    assert_eq!(s, 200);
    assert!(
        all["displayName"].is_string() && all.get("accountEnabled").is_none(),
        "{all}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn force_change_is_stored_visible_and_blocks_sign_in() {
    let emu = start().await;
    let h = http(&emu);
    let t = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, GRAPH_SCOPE).await;
    // Without forceChangePasswordNextSignIn, Entra forces a change at next sign-in.
    let (s, _, _) = reset(
        &h,
        &emu,
        &t,
        PLAIN,
        json!({"passwordProfile": {"password": "Forced-Pass-1!"}}),
    )
    .await;
    assert_eq!(s, 204);
    let (_, _, u) = get(
        &h,
        &emu,
        Some(&t),
        &format!("users/{PLAIN}?$select=passwordProfile"),
    )
    .await;
    assert_eq!(u["passwordProfile"]["forceChangePasswordNextSignIn"], true);
    assert_eq!(u["passwordProfile"]["password"], Value::Null);
    let (s, b) = token_request(
        &h,
        &emu,
        TENANT,
        &[
            ("grant_type", "password"),
            ("client_id", ROTATOR),
            ("client_secret", ROTATOR_SECRET),
            ("scope", "openid"),
            ("username", PLAIN),
            ("password", "Forced-Pass-1!"),
        ],
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(b["error_codes"], json!([50055]));
    // With false, sign-in works.
    let (s, _, _) = reset(&h, &emu, &t, PLAIN, profile("Forced-Pass-2!")).await;
    assert_eq!(s, 204);
    let (_, _, u) = get(
        &h,
        &emu,
        Some(&t),
        &format!("users/{PLAIN}?$select=passwordProfile"),
    )
    .await;
    assert_eq!(u["passwordProfile"]["forceChangePasswordNextSignIn"], false);
    emu.shutdown().await;
}

#[tokio::test]
async fn password_rules_answer_the_real_400() {
    let emu = start().await;
    let h = http(&emu);
    let t = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, GRAPH_SCOPE).await;
    let long = "Aa1!".repeat(65); // 260 characters
    for bad in [
        "Sh0rt!",
        "alllowercase",
        "NoDigitsOrSymbols",
        "Unicode-Pässword1",
        "Tab\tPassword1",
        long.as_str(),
    ] {
        let (s, hd, b) = reset(&h, &emu, &t, PLAIN, profile(bad)).await;
        assert_graph_error(s, &hd, &b, 400, "Request_BadRequest");
        assert_eq!(
            b["error"]["message"],
            "The specified password does not comply with password complexity requirements. Please provide a different password."
        );
    }
    assert!(emu
        .control()
        .check_password(TENANT, PLAIN, PLAIN_PASSWORD)
        .expect("unchanged"));
    // Three classes of four are enough; the whole allowed symbol set is accepted.
    for good in [
        "lower-and-1234",
        "UPPER-and-lower",
        "Aa1@#$%^&*-_!+=[]{}|\\:',.?/`~\"();<>",
    ] {
        let (s, _, b) = reset(&h, &emu, &t, PLAIN, profile(good)).await;
        assert_eq!(s, 204, "{good}: {b}");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn permissions_and_missing_users() {
    let emu = start().await;
    let h = http(&emu);
    // No Graph permission at all.
    let t = app_token(&h, &emu, NOPERM, NOPERM_SECRET, GRAPH_SCOPE).await;
    let (s, hd, b) = reset(&h, &emu, &t, PLAIN, profile("Good-Pass-123")).await;
    assert_graph_error(s, &hd, &b, 403, "Authorization_RequestDenied");
    assert_eq!(
        b["error"]["message"],
        "Insufficient privileges to complete the operation."
    );
    let (s, hd, b) = get(&h, &emu, Some(&t), &format!("users/{PLAIN}")).await;
    assert_graph_error(s, &hd, &b, 403, "Authorization_RequestDenied");
    // User Administrator: ordinary users yes, a holder of admin roles no.
    let t = app_token(&h, &emu, HELPDESK, HELPDESK_SECRET, GRAPH_SCOPE).await;
    let (s, _, b) = reset(&h, &emu, &t, PLAIN, profile("Good-Pass-123")).await;
    assert_eq!(s, 204, "{b}");
    let (s, hd, b) = reset(&h, &emu, &t, SVC1, profile("Good-Pass-123")).await;
    assert_graph_error(s, &hd, &b, 403, "Authorization_RequestDenied");
    assert!(emu
        .control()
        .check_password(TENANT, SVC1, SVC1_PASSWORD)
        .expect("unchanged"));
    // Unknown user.
    let (s, hd, b) = get(&h, &emu, Some(&t), "users/nobody@contoso.onmicrosoft.com").await;
    assert_graph_error(s, &hd, &b, 404, "Request_ResourceNotFound");
    let (s, hd, b) = reset(
        &h,
        &emu,
        &t,
        "00000000-0000-0000-0000-000000000000",
        profile("Good-Pass-123"),
    )
    .await;
    assert_graph_error(s, &hd, &b, 404, "Request_ResourceNotFound");
    // Unknown property in $select.
    let (s, hd, b) = get(
        &h,
        &emu,
        Some(&t),
        &format!("users/{PLAIN}?$select=id,bogus"),
    )
    .await;
    assert_graph_error(s, &hd, &b, 400, "Request_BadRequest");
    emu.shutdown().await;
}

#[tokio::test]
async fn tokens_are_checked() {
    let emu = start().await;
    let h = http(&emu);
    let path = format!("users/{PLAIN}");
    let (s, hd, b) = get(&h, &emu, None, &path).await;
    assert_graph_error(s, &hd, &b, 401, "InvalidAuthenticationToken");
    assert!(hd.contains_key("www-authenticate"));
    // A Key Vault token on Graph.
    let vt = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, VAULT_SCOPE).await;
    let (s, hd, b) = get(&h, &emu, Some(&vt), &path).await;
    assert_graph_error(s, &hd, &b, 401, "InvalidAuthenticationToken");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("audience"),
        "{b}"
    );
    // A token not signed by the emulator.
    let forged = unsigned_jwt(&json!({"aud": "https://graph.microsoft.com", "exp": now() + 600}));
    let (s, hd, b) = get(&h, &emu, Some(&forged), &path).await;
    assert_graph_error(s, &hd, &b, 401, "InvalidAuthenticationToken");
    // An expired token.
    let gt = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, GRAPH_SCOPE).await;
    let (s, _, _) = get(&h, &emu, Some(&gt), &path).await;
    assert_eq!(s, 200);
    emu.control()
        .advance_clock(std::time::Duration::from_secs(3600));
    let (s, hd, b) = get(&h, &emu, Some(&gt), &path).await;
    assert_graph_error(s, &hd, &b, 401, "InvalidAuthenticationToken");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("expired"),
        "{b}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn write_throttling_answers_429_with_retry_after() {
    let mut sc: Scenario = scenario();
    sc.limits = Some(Limits {
        graph_write_limit: 2,
        graph_write_window_ms: 5_000,
        ..Limits::default()
    });
    let emu = start_with(sc).await;
    let h = http(&emu);
    let t = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, GRAPH_SCOPE).await;
    for _ in 0..2 {
        let (s, _, _) = reset(&h, &emu, &t, PLAIN, profile("Good-Pass-123")).await;
        assert_eq!(s, 204);
    }
    let (s, hd, b) = reset(&h, &emu, &t, PLAIN, profile("Other-Pass-123")).await;
    assert_graph_error(s, &hd, &b, 429, "TooManyRequests");
    let retry: u64 = hd
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=5).contains(&retry), "{retry}");
    assert!(hd.contains_key("x-ms-throttle-scope"));
    assert!(emu
        .control()
        .check_password(TENANT, PLAIN, "Good-Pass-123")
        .expect("throttled write not applied"));
    // Reads are not write-throttled.
    let (s, _, _) = get(&h, &emu, Some(&t), &format!("users/{PLAIN}")).await;
    assert_eq!(s, 200);
    assert_eq!(
        emu.control().counters().throttled.get("graph.patch"),
        Some(&1)
    );
    emu.control()
        .advance_clock(std::time::Duration::from_secs(retry));
    let (s, _, _) = reset(&h, &emu, &t, PLAIN, profile("Other-Pass-123")).await;
    assert_eq!(s, 204);
    emu.shutdown().await;
}

/// An app with `User.ReadWrite.All` and no directory role, seeded at run time.
const WRITER: &str = "66666666-6666-6666-6666-666666666666";
const WRITER_SECRET: &str = "writer-secret";

fn seed_writer(emu: &Emulator) {
    let sc = Scenario::from_toml_str(&format!(
        r#"
[[tenants]]
id = "contoso"
domain = "contoso.onmicrosoft.com"

[[apps]]
tenant = "contoso"
client_id = "{WRITER}"
secrets = ["{WRITER_SECRET}"]
graph_permissions = ["User.ReadWrite.All"]
"#
    ))
    .expect("writer scenario");
    emu.control().seed(&sc).expect("seed writer");
}

#[tokio::test]
async fn patch_accepts_odata_type_and_stores_writable_properties() {
    let emu = start().await;
    seed_writer(&emu);
    let h = http(&emu);
    // What msgraph-sdk sends: the type annotation next to passwordProfile.
    let t = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, GRAPH_SCOPE).await;
    let mut body = profile("Typed-Pass-123");
    body["@odata.type"] = json!("#microsoft.graph.user");
    let (s, _, b) = reset(&h, &emu, &t, PLAIN, body).await;
    assert_eq!(s, 204, "{b}");
    assert!(emu
        .control()
        .check_password(TENANT, PLAIN, "Typed-Pass-123")
        .expect("user"));
    // Other writable properties need User.ReadWrite.All, not a directory role.
    let (s, hd, b) = reset(&h, &emu, &t, PLAIN, json!({"usageLocation": "DE"})).await;
    assert_graph_error(s, &hd, &b, 403, "Authorization_RequestDenied");
    let w = app_token(&h, &emu, WRITER, WRITER_SECRET, GRAPH_SCOPE).await;
    let (s, _, b) = reset(
        &h,
        &emu,
        &w,
        PLAIN,
        json!({
            "@odata.type": "#microsoft.graph.user",
            "displayName": "Plain User Renamed",
            "usageLocation": "DE",
            "jobTitle": "Tester",
            "businessPhones": ["+49 30 1234"],
            "showInAddressList": false,
            "userPrincipalName": PLAIN.to_uppercase(),
        }),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    let (s, _, u) = get(
        &h,
        &emu,
        Some(&w),
        &format!("users/{PLAIN}?$select=displayName,usageLocation,jobTitle,businessPhones,department,showInAddressList,userType"),
    )
    .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["displayName"], "Plain User Renamed");
    assert_eq!(u["usageLocation"], "DE");
    assert_eq!(u["jobTitle"], "Tester");
    assert_eq!(u["businessPhones"], json!(["+49 30 1234"]));
    assert_eq!(u["department"], Value::Null);
    assert_eq!(u["showInAddressList"], false);
    assert_eq!(u["userType"], "Member");
    // The writer may not reset passwords: that needs a directory role as well.
    let (s, hd, b) = reset(&h, &emu, &w, PLAIN, profile("Writer-Pass-123")).await;
    assert_graph_error(s, &hd, &b, 403, "Authorization_RequestDenied");
    emu.shutdown().await;
}

#[tokio::test]
async fn patch_refuses_read_only_unknown_and_mistyped_properties() {
    let emu = start().await;
    seed_writer(&emu);
    let h = http(&emu);
    let w = app_token(&h, &emu, WRITER, WRITER_SECRET, GRAPH_SCOPE).await;
    let cases = [
        (json!({"id": SVC1_ID}), "Property 'id' is read-only and cannot be set."),
        (
            json!({"createdDateTime": "2020-01-01T00:00:00Z"}),
            "Property 'createdDateTime' is read-only and cannot be set.",
        ),
        (
            json!({"lastPasswordChangeDateTime": "2020-01-01T00:00:00Z"}),
            "Property 'lastPasswordChangeDateTime' is read-only and cannot be set.",
        ),
        (
            json!({"favouriteColour": "blue"}),
            "Property 'favouriteColour' does not exist as a declared property or extension property.",
        ),
        (
            json!({"accountEnabled": "yes"}),
            "Invalid value specified for property 'accountEnabled' of resource 'User'.",
        ),
        (
            json!({"businessPhones": "+1 555"}),
            "Invalid value specified for property 'businessPhones' of resource 'User'.",
        ),
        (
            json!({"@odata.type": "#microsoft.graph.group", "displayName": "x"}),
            "A type named 'microsoft.graph.group' could not be resolved by the model. When a model is available, each type name must resolve to a valid type.",
        ),
    ];
    for (body, message) in cases {
        let (s, hd, b) = reset(&h, &emu, &w, PLAIN, body.clone()).await;
        assert_graph_error(s, &hd, &b, 400, "Request_BadRequest");
        assert_eq!(b["error"]["message"], message, "{body}");
    }
    // Nothing was changed by the refused requests (one bad property refuses all of them).
    let (s, hd, b) = reset(
        &h,
        &emu,
        &w,
        PLAIN,
        json!({"jobTitle": "Changed", "id": SVC1_ID}),
    )
    .await;
    assert_graph_error(s, &hd, &b, 400, "Request_BadRequest");
    let (_, _, u) = get(
        &h,
        &emu,
        Some(&w),
        &format!("users/{PLAIN}?$select=jobTitle,accountEnabled"),
    )
    .await;
    assert_eq!(u["jobTitle"], Value::Null);
    assert_eq!(u["accountEnabled"], true);
    emu.shutdown().await;
}
