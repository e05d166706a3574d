//! The Entra token endpoint over real HTTPS: every AADSTS answer the issue lists, client
//! errors, lock-out with the emulator clock, client assertions.

use crate::common::*;
use keyturn_emulator::{Emulator, UserFlags};
use serde_json::{json, Value};

async fn ropc(http: &reqwest::Client, emu: &Emulator, user: &str, password: &str) -> (u16, Value) {
    token_request(
        http,
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

/// Asserts the shape of a real Entra error answer.
fn assert_aadsts(status: u16, body: &Value, want_status: u16, want_error: &str, code: u64) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], want_error, "{body}");
    let desc = body["error_description"]
        .as_str()
        .expect("error_description");
    assert!(desc.starts_with(&format!("AADSTS{code}: ")), "{desc}");
    assert!(
        desc.contains("Trace ID: ")
            && desc.contains("Correlation ID: ")
            && desc.contains("Timestamp: "),
        "{desc}"
    );
    assert_eq!(body["error_codes"], json!([code]));
    for k in ["timestamp", "trace_id", "correlation_id"] {
        assert!(
            body[k].as_str().is_some_and(|s| !s.is_empty()),
            "{k} in {body}"
        );
    }
    assert_eq!(
        body["error_uri"],
        format!("https://login.microsoftonline.com/error?code={code}")
    );
}

#[tokio::test]
async fn password_grant_answers_by_user_state() {
    let emu = start().await;
    let h = http(&emu);
    let cases: [(&str, &str, &str, u64); 8] = [
        (
            "nobody@contoso.onmicrosoft.com",
            "Whatever-1",
            "invalid_grant",
            50034,
        ),
        (PLAIN, "Wrong-Pass-1", "invalid_grant", 50126),
        (
            "disabled@contoso.onmicrosoft.com",
            "Disabled-Pass-1",
            "invalid_grant",
            50057,
        ),
        (
            "expired@contoso.onmicrosoft.com",
            "Expired-Pass-1",
            "invalid_grant",
            50055,
        ),
        (
            "mfa@contoso.onmicrosoft.com",
            "Mfa-Pass-1!",
            "interaction_required",
            50076,
        ),
        (
            "mfareg@contoso.onmicrosoft.com",
            "MfaReg-Pass-1!",
            "interaction_required",
            50079,
        ),
        (
            "svc-coreview-ca@contoso.onmicrosoft.com",
            "Initial-Pass-3!",
            "invalid_grant",
            53003,
        ),
        (
            "secdef@contoso.onmicrosoft.com",
            "SecDef-Pass-1!",
            "invalid_grant",
            530035,
        ),
    ];
    for (user, pw, error, code) in cases {
        let (status, body) = ropc(&h, &emu, user, pw).await;
        assert_aadsts(status, &body, 400, error, code);
    }
    // The right password of an unblocked user: a token for Graph (scope openid).
    let (status, body) = ropc(&h, &emu, PLAIN, PLAIN_PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["access_token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));
    assert!(body["id_token"].is_string());
    // A UPN in another case is the same user.
    let (status, _) = ropc(&h, &emu, &PLAIN.to_uppercase(), PLAIN_PASSWORD).await;
    assert_eq!(status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn lockout_after_ten_failures_lasts_the_configured_time() {
    let emu = start().await;
    let h = http(&emu);
    for i in 0..10 {
        let (status, body) = ropc(&h, &emu, PLAIN, "Wrong-Pass-1").await;
        assert_aadsts(status, &body, 400, "invalid_grant", 50126);
        let _ = i;
    }
    // Locked: even the right password is refused.
    let (status, body) = ropc(&h, &emu, PLAIN, PLAIN_PASSWORD).await;
    assert_aadsts(status, &body, 400, "invalid_grant", 50053);
    assert!(emu.control().user(TENANT, PLAIN).expect("user").locked);
    emu.control()
        .advance_clock(std::time::Duration::from_secs(61));
    let (status, body) = ropc(&h, &emu, PLAIN, PLAIN_PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    emu.shutdown().await;
}

#[tokio::test]
async fn flags_changed_at_run_time_change_the_answer() {
    let emu = start().await;
    let h = http(&emu);
    let flags = UserFlags {
        mfa_required: Some(true),
        ..Default::default()
    };
    emu.control()
        .set_user_flags(TENANT, PLAIN, &flags)
        .expect("flags");
    let (status, body) = ropc(&h, &emu, PLAIN, PLAIN_PASSWORD).await;
    assert_aadsts(status, &body, 400, "interaction_required", 50076);
    // Through the control API too.
    let r = h
        .patch(format!(
            "{}/_emulator/users/{TENANT}/{PLAIN}",
            emu.authority_host()
        ))
        .json(&json!({"mfa_required": false, "disabled": true}))
        .send()
        .await
        .expect("patch flags");
    assert_eq!(r.status().as_u16(), 200);
    let (status, body) = ropc(&h, &emu, PLAIN, PLAIN_PASSWORD).await;
    assert_aadsts(status, &body, 400, "invalid_grant", 50057);
    emu.shutdown().await;
}

#[tokio::test]
async fn client_errors() {
    let emu = start().await;
    let h = http(&emu);
    let cc = |client_id: &'static str, secret: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", VAULT_SCOPE),
        ]
    };
    let (s, b) = token_request(&h, &emu, TENANT, &cc(ROTATOR, "wrong")).await;
    assert_aadsts(s, &b, 401, "invalid_client", 7000215);
    let (s, b) = token_request(&h, &emu, TENANT, &cc(HELPDESK, "helpdesk-old-secret")).await;
    assert_aadsts(s, &b, 401, "invalid_client", 7000222);
    let (s, b) = token_request(
        &h,
        &emu,
        TENANT,
        &cc("00000000-0000-0000-0000-00000000dead", "x"),
    )
    .await;
    assert_aadsts(s, &b, 400, "unauthorized_client", 700016);
    let (s, b) = token_request(&h, &emu, "no-such-tenant", &cc(ROTATOR, ROTATOR_SECRET)).await;
    assert_aadsts(s, &b, 400, "invalid_request", 90002);
    // The app exists, but in another tenant.
    let (s, b) = token_request(&h, &emu, "fabrikam", &cc(ROTATOR, ROTATOR_SECRET)).await;
    assert_aadsts(s, &b, 400, "unauthorized_client", 700016);
    // No credential at all.
    let (s, b) = token_request(
        &h,
        &emu,
        TENANT,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", ROTATOR),
            ("scope", VAULT_SCOPE),
        ],
    )
    .await;
    assert_aadsts(s, &b, 401, "invalid_client", 7000218);
    // The password grant checks the client secret too.
    let (s, b) = token_request(
        &h,
        &emu,
        TENANT,
        &[
            ("grant_type", "password"),
            ("client_id", ROTATOR),
            ("client_secret", "wrong"),
            ("scope", "openid"),
            ("username", PLAIN),
            ("password", PLAIN_PASSWORD),
        ],
    )
    .await;
    assert_aadsts(s, &b, 401, "invalid_client", 7000215);
    // The tenant's domain works as the tenant in the path.
    let (s, b) = token_request(
        &h,
        &emu,
        "contoso.onmicrosoft.com",
        &cc(ROTATOR, ROTATOR_SECRET),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["expires_in"], 3599);
    assert_eq!(b["ext_expires_in"], 3599);
    emu.shutdown().await;
}

#[tokio::test]
async fn client_assertions_certificate_and_federated() {
    let emu = start().await;
    let h = http(&emu);
    let endpoint = format!("{}/{TENANT}/oauth2/v2.0/token", emu.authority_host());
    let send = |assertion: String| {
        let h = h.clone();
        let emu_url = endpoint.clone();
        async move {
            let r = h
                .post(emu_url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", ROTATOR),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.as_str()),
                    ("scope", GRAPH_SCOPE),
                ])
                .send()
                .await
                .expect("request");
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.expect("json"))
        }
    };
    // Certificate-style assertion: iss = sub = client id, aud = token endpoint.
    let (s, b) = send(unsigned_jwt(
        &json!({"iss": ROTATOR, "sub": ROTATOR, "aud": endpoint, "exp": now() + 600}),
    ))
    .await;
    assert_eq!(s, 200, "{b}");
    // Expired assertion.
    let (s, b) = send(unsigned_jwt(
        &json!({"iss": ROTATOR, "sub": ROTATOR, "aud": endpoint, "exp": now() - 10}),
    ))
    .await;
    assert_aadsts(s, &b, 400, "invalid_client", 700024);
    // Wrong audience for a certificate assertion.
    let (s, b) = send(unsigned_jwt(
        &json!({"iss": ROTATOR, "sub": ROTATOR, "aud": "https://elsewhere/", "exp": now() + 600}),
    ))
    .await;
    assert_aadsts(s, &b, 400, "invalid_client", 700021);
    // Federated: unknown issuer, wrong audience.
    let (s, b) = send(unsigned_jwt(&json!({"iss": "https://evil", "sub": "x", "aud": "api://AzureADTokenExchange", "exp": now() + 600}))).await;
    assert_aadsts(s, &b, 400, "invalid_client", 700211);
    let (s, b) = send(unsigned_jwt(&json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:keyturn:keyturn",
        "aud": "api://Other",
        "exp": now() + 600
    })))
    .await;
    assert_aadsts(s, &b, 400, "invalid_client", 700212);
    // Garbage.
    let (s, b) = send("not-a-jwt".into()).await;
    assert_aadsts(s, &b, 400, "invalid_request", 50027);
    emu.shutdown().await;
}

#[tokio::test]
async fn issued_tokens_carry_audience_tenant_app_and_roles() {
    let emu = start().await;
    let h = http(&emu);
    let t = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, GRAPH_SCOPE).await;
    let payload = t.split('.').nth(1).expect("payload");
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("json");
    assert_eq!(claims["aud"], "https://graph.microsoft.com");
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(claims["appid"], ROTATOR);
    assert_eq!(
        claims["roles"],
        json!([
            "User.Read.All",
            "User-PasswordProfile.ReadWrite.All",
            "Policy.Read.ConditionalAccess"
        ])
    );
    let exp = claims["exp"].as_i64().expect("exp");
    assert!((exp - now() - 3599).abs() < 60);
    emu.shutdown().await;
}
