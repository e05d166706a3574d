//! Fault injection, the control API, persistence and the scenario format, over real HTTPS.

use crate::common::*;
use keyturn_emulator::{Emulator, EmulatorConfig, FaultKind, FaultRule, InvariantQuery, Scenario};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn rule(route: &str, kind: FaultKind) -> FaultRule {
    FaultRule {
        id: None,
        route: route.into(),
        vault: None,
        tenant: None,
        kind,
        status: None,
        retry_after: None,
        latency_ms: None,
        then: None,
        probability: None,
        count: None,
        content_type: None,
        body: None,
        body_bytes: None,
        echo_request: None,
        fired: 0,
    }
}

async fn kv_get(
    h: &reqwest::Client,
    emu: &Emulator,
    token: &str,
    name: &str,
) -> Result<(u16, reqwest::header::HeaderMap, Value), reqwest::Error> {
    let r = h
        .get(format!(
            "{}secrets/{name}/?api-version=2025-07-01",
            emu.vault_url(VAULT)
        ))
        .bearer_auth(token)
        .send()
        .await?;
    let (s, hd) = (r.status().as_u16(), r.headers().clone());
    Ok((s, hd, r.json().await.unwrap_or(Value::Null)))
}

async fn kv_set(
    h: &reqwest::Client,
    emu: &Emulator,
    token: &str,
    name: &str,
    body: Value,
) -> Result<u16, reqwest::Error> {
    let r = h
        .put(format!(
            "{}secrets/{name}?api-version=2025-07-01",
            emu.vault_url(VAULT)
        ))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    Ok(r.status().as_u16())
}

async fn patch_password(
    h: &reqwest::Client,
    emu: &Emulator,
    token: &str,
    user: &str,
    pw: &str,
) -> Result<u16, reqwest::Error> {
    let r = h
        .patch(format!("{}/v1.0/users/{user}", emu.graph_base()))
        .bearer_auth(token)
        .json(&json!({"passwordProfile": {"password": pw, "forceChangePasswordNextSignIn": false}}))
        .send()
        .await?;
    Ok(r.status().as_u16())
}

#[tokio::test]
async fn status_fault_fires_count_times_with_retry_after() {
    let emu = start().await;
    let h = http(&emu);
    let t = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, VAULT_SCOPE).await;
    let id = emu
        .control()
        .add_fault(FaultRule {
            status: Some(503),
            retry_after: Some(2),
            count: Some(2),
            ..rule("kv.get", FaultKind::Status)
        })
        .expect("rule");
    for _ in 0..2 {
        let (s, hd, b) = kv_get(&h, &emu, &t, "svc-coreview-1")
            .await
            .expect("answer");
        assert_eq!(s, 503);
        assert_eq!(
            hd.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("2")
        );
        assert_eq!(b["error"]["code"], "ServiceUnavailable");
        assert!(hd.contains_key("x-ms-request-id"));
    }
    let (s, _, _) = kv_get(&h, &emu, &t, "svc-coreview-1")
        .await
        .expect("answer");
    assert_eq!(s, 200, "the rule is used up");
    assert!(emu.control().faults().is_empty());
    let c = emu.control().counters();
    assert_eq!(c.faults_by_rule.get(&id), Some(&2));
    assert_eq!(c.faults_by_kind.get("status"), Some(&2));
    assert_eq!(c.requests.get("kv.get"), Some(&3));
    emu.shutdown().await;
}

/// A proxy's HTML error page that echoes the refused request, repeated to a huge size.
#[tokio::test]
async fn answer_fault_can_echo_the_request_in_a_huge_html_page() {
    let emu = start().await;
    let h = http(&emu);
    let t = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, VAULT_SCOPE).await;
    let bad = FaultRule {
        echo_request: Some(true),
        ..rule("kv.get", FaultKind::Status)
    };
    assert!(
        emu.control().add_fault(bad).is_err(),
        "echo is for answer only"
    );
    emu.control()
        .add_fault(FaultRule {
            status: Some(400),
            content_type: Some("text/html".into()),
            body: Some("<html><h1>400 Bad Request</h1><pre>{request}</pre></html>".into()),
            body_bytes: Some(4 * 1024 * 1024),
            echo_request: Some(true),
            count: Some(1),
            ..rule("kv.set", FaultKind::Answer)
        })
        .expect("rule");
    let r = h
        .put(format!(
            "{}secrets/echoed?api-version=2025-07-01",
            emu.vault_url(VAULT)
        ))
        .bearer_auth(&t)
        .json(&json!({"value": "Echo-Me-123!"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/html")
    );
    let text = r.text().await.expect("body");
    assert!(text.len() >= 4 * 1024 * 1024, "{} bytes", text.len());
    assert!(text.starts_with(
        "<html><h1>400 Bad Request</h1><pre>{\"value\":\"Echo-Me-123!\"}</pre></html>"
    ));
    assert!(!text.contains("{request}"));
    // Not handled: the secret was not written.
    let (s, _, _) = kv_get(&h, &emu, &t, "echoed").await.expect("answer");
    assert_eq!(s, 404);
    emu.shutdown().await;
}

#[tokio::test]
async fn latency_fault_delays_token_answers() {
    let emu = start().await;
    let h = http(&emu);
    emu.control()
        .add_fault(FaultRule {
            latency_ms: Some(300),
            count: Some(1),
            ..rule("token", FaultKind::Latency)
        })
        .expect("rule");
    let started = Instant::now();
    app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, VAULT_SCOPE).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        emu.control().counters().faults_by_kind.get("latency"),
        Some(&1)
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn drop_fault_closes_the_connection_before_handling() {
    let emu = start().await;
    let h = http(&emu);
    let t = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, GRAPH_SCOPE).await;
    emu.control()
        .add_fault(FaultRule {
            count: Some(1),
            ..rule("graph.patch", FaultKind::Drop)
        })
        .expect("rule");
    let err = patch_password(&h, &emu, &t, PLAIN, "Never-Applied-1")
        .await
        .expect_err("dropped");
    assert!(err.status().is_none(), "no HTTP answer: {err}");
    assert!(emu
        .control()
        .check_password(TENANT, PLAIN, PLAIN_PASSWORD)
        .expect("unchanged"));
    assert_eq!(
        patch_password(&h, &emu, &t, PLAIN, "Applied-Pass-1")
            .await
            .expect("answer"),
        204
    );
    assert_eq!(
        emu.control().counters().faults_by_kind.get("drop"),
        Some(&1)
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn commit_then_fail_applies_the_change() {
    let emu = start().await;
    let h = http(&emu);
    let gt = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, GRAPH_SCOPE).await;
    let vt = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, VAULT_SCOPE).await;
    // Graph: the reset happens, the connection drops.
    emu.control()
        .add_fault(FaultRule {
            then: Some("drop".into()),
            count: Some(1),
            ..rule("graph.patch", FaultKind::CommitThenFail)
        })
        .expect("rule");
    patch_password(&h, &emu, &gt, PLAIN, "Committed-Pass-1")
        .await
        .expect_err("dropped after commit");
    assert!(emu
        .control()
        .check_password(TENANT, PLAIN, "Committed-Pass-1")
        .expect("changed"));
    // Key Vault: the version is created, the answer is 500.
    emu.control()
        .add_fault(FaultRule {
            count: Some(1),
            ..rule("kv.set", FaultKind::CommitThenFail)
        })
        .expect("rule");
    let s = kv_set(&h, &emu, &vt, "ctf", json!({"value": "stored"}))
        .await
        .expect("answer");
    assert_eq!(s, 500);
    let (s, _, b) = kv_get(&h, &emu, &vt, "ctf").await.expect("answer");
    assert_eq!((s, b["value"].clone()), (200, json!("stored")));
    // A failing request does not consume a commit-then-fail rule.
    emu.control()
        .add_fault(FaultRule {
            count: Some(1),
            ..rule("kv.get", FaultKind::CommitThenFail)
        })
        .expect("rule");
    let (s, _, _) = kv_get(&h, &emu, &vt, "missing").await.expect("answer");
    assert_eq!(s, 404);
    let (s, _, _) = kv_get(&h, &emu, &vt, "ctf").await.expect("answer");
    assert_eq!(s, 500);
    assert_eq!(
        emu.control()
            .counters()
            .faults_by_kind
            .get("commit_then_fail"),
        Some(&3)
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn probability_and_filters() {
    let emu = start().await;
    let h = http(&emu);
    let t = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, VAULT_SCOPE).await;
    let never = emu
        .control()
        .add_fault(FaultRule {
            status: Some(500),
            probability: Some(0.0),
            ..rule("kv.*", FaultKind::Status)
        })
        .expect("rule");
    let other_vault = emu
        .control()
        .add_fault(FaultRule {
            status: Some(500),
            vault: Some("other-vault".into()),
            ..rule("*", FaultKind::Status)
        })
        .expect("rule");
    for _ in 0..5 {
        let (s, _, _) = kv_get(&h, &emu, &t, "svc-coreview-1")
            .await
            .expect("answer");
        assert_eq!(s, 200);
    }
    assert!(emu.control().remove_fault(&never));
    assert!(emu.control().remove_fault(&other_vault));
    emu.control()
        .add_fault(FaultRule {
            status: Some(429),
            retry_after: Some(1),
            probability: Some(1.0),
            tenant: Some(TENANT.into()),
            ..rule("kv.*", FaultKind::Status)
        })
        .expect("rule");
    for _ in 0..3 {
        let (s, hd, _) = kv_get(&h, &emu, &t, "svc-coreview-1")
            .await
            .expect("answer");
        assert_eq!(s, 429);
        assert_eq!(
            hd.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }
    // Injected 429s are faults, not throttling.
    let c = emu.control().counters();
    assert_eq!(c.faults_by_kind.get("status"), Some(&3));
    assert!(c.throttled.is_empty());
    emu.control().clear_faults();
    assert!(emu.control().faults().is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn control_api_over_https() {
    let emu = start().await;
    let h = http(&emu);
    let base = format!("{}/_emulator", emu.authority_host());
    // Faults: add, list, delete.
    let r: Value = h
        .post(format!("{base}/faults"))
        .json(&json!({"route": "graph.get", "kind": "status", "status": 500, "count": 5}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = r["ids"][0].as_str().expect("id").to_string();
    let list: Value = h
        .get(format!("{base}/faults"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(list["faults"][0]["id"], id.as_str());
    let bad = h
        .post(format!("{base}/faults"))
        .json(&json!({"route": "nope", "kind": "drop"}))
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status().as_u16(), 400);
    assert_eq!(
        h.delete(format!("{base}/faults/{id}"))
            .send()
            .await
            .expect("delete")
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        h.delete(format!("{base}/faults"))
            .send()
            .await
            .expect("delete")
            .status()
            .as_u16(),
        200
    );

    // check-password never returns a password.
    let r: Value = h
        .post(format!("{base}/users/{TENANT}/{SVC1}/check-password"))
        .json(&json!({"password": SVC1_PASSWORD}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(r, json!({"current": true}));
    let r: Value = h
        .post(format!(
            "{base}/users/contoso.onmicrosoft.com/{SVC1_ID}/check-password"
        ))
        .json(&json!({"password": "nope"}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(r, json!({"current": false}));
    let r = h
        .post(format!("{base}/users/{TENANT}/nobody/check-password"))
        .json(&json!({"password": "x"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 404);

    // The invariant holds from the start (secrets seeded from the users).
    let q = json!({"tenant": TENANT, "user": SVC1, "vault": VAULT, "secret": "svc-coreview-1", "staging_secret": "svc-coreview-1-pending"});
    let inv = |h: reqwest::Client, q: Value, base: String| async move {
        h.post(format!("{base}/invariant"))
            .json(&q)
            .send()
            .await
            .expect("post")
            .json::<Value>()
            .await
            .expect("json")
    };
    let r = inv(h.clone(), q.clone(), base.clone()).await;
    assert_eq!(
        r,
        json!({"latest_matches": true, "pending_matches": false, "pending_tag": null, "holds": true})
    );

    // Out-of-band reset (drift): the invariant breaks, lastPasswordChange moves.
    emu.control().advance_clock(Duration::from_secs(10));
    let before = emu
        .control()
        .user(TENANT, SVC1)
        .expect("user")
        .last_password_change;
    let r = h
        .post(format!("{base}/users/{TENANT}/{SVC1}/password"))
        .json(&json!({"password": "Drifted-Pass-1!"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        emu.control()
            .user(TENANT, SVC1)
            .expect("user")
            .last_password_change
            > before
    );
    let r = inv(h.clone(), q.clone(), base.clone()).await;
    assert_eq!(r["holds"], false);

    // A pending staging version with Entra's password makes it hold again.
    let vt = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, VAULT_SCOPE).await;
    let s = kv_set(
        &h,
        &emu,
        &vt,
        "svc-coreview-1-pending",
        json!({"value": "Drifted-Pass-1!", "tags": {"keyturn-state": "pending"}}),
    )
    .await
    .expect("set");
    assert_eq!(s, 200);
    let r = inv(h.clone(), q.clone(), base.clone()).await;
    assert_eq!(
        r,
        json!({"latest_matches": false, "pending_matches": true, "pending_tag": "pending", "holds": true})
    );
    let report = emu
        .control()
        .invariant(&InvariantQuery {
            tenant: TENANT.into(),
            user: SVC1.into(),
            vault: VAULT.into(),
            secret: "svc-coreview-1".into(),
            staging_secret: None,
        })
        .expect("invariant");
    assert!(report.holds && report.pending_matches);

    // Seeding at run time (TOML) adds a vault; counters are JSON.
    let r = h
        .post(format!("{base}/scenario"))
        .body("[[vaults]]\nname = \"second-vault\"\ntenant = \"contoso\"\n")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    assert!(emu
        .resolve_hosts()
        .contains(&"second-vault.vault.azure.net".to_string()));
    let r = h
        .post(format!("{base}/scenario"))
        .body("[[vaults]]\nname = \"x\"\ntenant = \"nowhere\"\n")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    // JSON works too (same shape).
    let r = h
        .post(format!("{base}/scenario"))
        .json(&json!({"users": [{"tenant": "contoso", "upn": "json.user@contoso.onmicrosoft.com", "password": "Json-Pass-123"}]}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    assert!(emu
        .control()
        .check_password(TENANT, "json.user@contoso.onmicrosoft.com", "Json-Pass-123")
        .expect("seeded"));
    let c: Value = h
        .get(format!("{base}/counters"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(
        c["requests"]["kv.set"].as_u64().is_some_and(|n| n >= 1),
        "{c}"
    );

    // The control API is not reachable through an Azure host name.
    let r = h
        .get(format!(
            "https://keyturn-demo.vault.azure.net:{}/_emulator/counters",
            emu.addr().port()
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    let r = h
        .get(format!(
            "https://login.microsoftonline.com:{}/_emulator/counters",
            emu.addr().port()
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    emu.shutdown().await;
}

#[tokio::test]
async fn state_file_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let cfg = || EmulatorConfig {
        scenario: Some(scenario()),
        state_file: Some(state.clone()),
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start(cfg()).await.expect("start");
    let h = http(&emu);
    let vt = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, VAULT_SCOPE).await;
    assert_eq!(
        kv_set(&h, &emu, &vt, "kept", json!({"value": "across restarts"}))
            .await
            .expect("set"),
        200
    );
    emu.control()
        .set_password(TENANT, PLAIN, "Restart-Pass-1")
        .expect("password");
    emu.shutdown().await;

    let emu = Emulator::start(cfg()).await.expect("restart");
    let h = http(&emu);
    // The old token is still valid: the signing key was persisted.
    let (s, _, b) = kv_get(&h, &emu, &vt, "kept").await.expect("answer");
    assert_eq!((s, b["value"].clone()), (200, json!("across restarts")));
    assert!(emu
        .control()
        .check_password(TENANT, PLAIN, "Restart-Pass-1")
        .expect("check"));
    emu.shutdown().await;
}

#[test]
fn scenario_validation_reports_every_problem() {
    let err = Scenario::from_toml_str(
        r#"
[[tenants]]
id = "t"
[[apps]]
tenant = "missing"
client_id = "a"
[[users]]
tenant = "t"
upn = "someone@t"
[[vaults]]
name = "v"
tenant = "t"
access = [{ client_id = "a", role = "Owner" }]
secrets = [{ name = "s", from_user = "t/nobody" }]
[[faults]]
route = "kv.get"
kind = "status"
"#,
    )
    .expect_err("invalid");
    let text = err.to_string();
    for part in [
        "apps[a].tenant",
        "vaults.name \"v\"",
        "role \"Owner\"",
        "from_user",
        "faults[0]",
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }
    let err = Scenario::from_toml_str("[[tenants]]\nid = \"t\"\ncolour = \"blue\"\n")
        .expect_err("unknown field");
    assert!(err.to_string().contains("colour"), "{err}");
}

#[test]
fn shipped_demo_scenario_parses() {
    let sc = Scenario::from_file(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/demo-scenario.toml"
    )))
    .expect("demo scenario");
    assert_eq!(sc.vaults.len(), 1);
    // svc-coreview-ca is blocked by a policy, not by the `ca_blocked` flag.
    assert_eq!(sc.users.iter().filter(|u| u.ca_blocked).count(), 0);
    assert_eq!(sc.conditional_access_policies.len(), 2);
    assert_eq!(sc.named_locations.len(), 1);
}

#[tokio::test]
async fn given_certificate_and_key_are_used() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("key");
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let leaf = CertificateParams::new(vec![
        "localhost".to_string(),
        "*.vault.azure.net".to_string(),
    ])
    .expect("params");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).expect("leaf");
    let (cert, key, ca_path) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, leaf_cert.pem()).expect("write");
    std::fs::write(&key, leaf_key.serialize_pem()).expect("write");
    std::fs::write(&ca_path, ca_cert.pem()).expect("write");
    let emu = Emulator::start(EmulatorConfig {
        scenario: Some(scenario()),
        tls: keyturn_emulator::TlsSource::Files {
            cert,
            key,
            ca: Some(ca_path),
        },
        ..EmulatorConfig::default()
    })
    .await
    .expect("start");
    assert_eq!(emu.ca_pem(), ca_cert.pem());
    let h = http(&emu);
    let t = app_token(&h, &emu, ROTATOR, ROTATOR_SECRET, VAULT_SCOPE).await;
    let (s, _, _) = kv_get(&h, &emu, &t, "svc-coreview-1")
        .await
        .expect("answer");
    assert_eq!(s, 200);
    emu.shutdown().await;
}
