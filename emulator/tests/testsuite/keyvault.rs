//! Key Vault secrets over raw HTTPS: the challenge, validation, soft delete, paging, token
//! checks and per-vault throttling, as a client sees them.

use crate::common::*;
use keyturn_emulator::{Emulator, Limits};
use serde_json::{json, Value};

struct Kv {
    h: reqwest::Client,
    base: String,
    token: String,
}

impl Kv {
    async fn new(emu: &Emulator, client_id: &str, secret: &str) -> Kv {
        let h = http(emu);
        let token = app_token(&h, emu, client_id, secret, VAULT_SCOPE).await;
        Kv {
            base: emu.vault_url(VAULT).trim_end_matches('/').to_string(),
            h,
            token,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut r = self
            .h
            .request(
                method,
                format!("{}{path}{sep}api-version=2025-07-01", self.base),
            )
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("request");
        let (s, hd) = (r.status().as_u16(), r.headers().clone());
        (s, hd, r.json().await.unwrap_or(Value::Null))
    }

    async fn set(&self, name: &str, body: Value) -> (u16, Value) {
        let (s, _, b) = self
            .call(
                reqwest::Method::PUT,
                &format!("/secrets/{name}"),
                Some(body),
            )
            .await;
        (s, b)
    }
}

fn assert_kv_error(status: u16, body: &Value, want: u16, code: &str, inner: Option<&str>) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string());
    if let Some(i) = inner {
        assert_eq!(body["error"]["innererror"]["code"], i, "{body}");
    }
}

#[tokio::test]
async fn challenge_is_exactly_the_real_one() {
    let emu = start().await;
    let h = http(&emu);
    let r = h
        .get(format!(
            "{}secrets/svc-coreview-1/?api-version=2025-07-01",
            emu.vault_url(VAULT)
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.headers().get("www-authenticate").and_then(|v| v.to_str().ok()),
        Some("Bearer authorization=\"https://login.microsoftonline.com/contoso\", resource=\"https://vault.azure.net\"")
    );
    assert!(r.headers().contains_key("x-ms-request-id"));
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body,
        json!({"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}})
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn get_with_and_without_slash_versions_and_not_found() {
    let emu = start().await;
    let kv = Kv::new(&emu, ROTATOR, ROTATOR_SECRET).await;
    for p in ["/secrets/svc-coreview-1", "/secrets/svc-coreview-1/"] {
        let (s, hd, b) = kv.call(reqwest::Method::GET, p, None).await;
        assert_eq!(s, 200, "{p}: {b}");
        assert!(hd.contains_key("x-ms-request-id"));
        assert_eq!(b["value"], SVC1_PASSWORD);
        assert_eq!(b["attributes"]["recoveryLevel"], "Recoverable+Purgeable");
        assert!(b["attributes"]["created"].is_i64());
    }
    let (s, _, b) = kv.call(reqwest::Method::GET, "/secrets/nope/", None).await;
    assert_kv_error(s, &b, 404, "SecretNotFound", None);
    let (s, _, b) = kv
        .call(
            reqwest::Method::GET,
            "/secrets/svc-coreview-1/0123456789abcdef0123456789abcdef",
            None,
        )
        .await;
    assert_kv_error(s, &b, 404, "SecretNotFound", None);
    emu.shutdown().await;
}

#[tokio::test]
async fn validation_uses_the_real_codes() {
    let emu = start().await;
    let kv = Kv::new(&emu, ROTATOR, ROTATOR_SECRET).await;
    let (s, b) = kv.set("bad_name", json!({"value": "x"})).await;
    assert_kv_error(s, &b, 400, "BadParameter", None);
    let (s, b) = kv
        .set("big", json!({"value": "x".repeat(25 * 1024 + 1)}))
        .await;
    assert_kv_error(s, &b, 400, "BadParameter", None);
    let tags: serde_json::Map<String, Value> =
        (0..16).map(|i| (format!("t{i}"), json!("v"))).collect();
    let (s, b) = kv.set("tags", json!({"value": "x", "tags": tags})).await;
    assert_kv_error(s, &b, 400, "BadParameter", None);
    let (s, b) = kv
        .set(
            "tags",
            json!({"value": "x", "tags": {"k": "v".repeat(513)}}),
        )
        .await;
    assert_kv_error(s, &b, 400, "BadParameter", None);
    let (s, b) = kv
        .set("ct", json!({"value": "x", "contentType": "c".repeat(256)}))
        .await;
    assert_kv_error(s, &b, 400, "BadParameter", None);
    // At the limits it works.
    let tags: serde_json::Map<String, Value> = (0..15)
        .map(|i| (format!("t{i}"), json!("v".repeat(512))))
        .collect();
    let (s, b) = kv
        .set(
            &"n".repeat(127),
            json!({"value": "x".repeat(25 * 1024), "tags": tags}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let id = b["id"].as_str().expect("id");
    let version = id.rsplit('/').next().expect("version");
    assert_eq!(version.len(), 32);
    emu.shutdown().await;
}

#[tokio::test]
async fn soft_delete_conflict_recover_purge() {
    let emu = start().await;
    let kv = Kv::new(&emu, ROTATOR, ROTATOR_SECRET).await;
    let (s, _) = kv.set("doomed", json!({"value": "v1"})).await;
    assert_eq!(s, 200);
    let (s, _, b) = kv
        .call(reqwest::Method::DELETE, "/secrets/doomed", None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["recoveryId"]
        .as_str()
        .is_some_and(|r| r.ends_with("/deletedsecrets/doomed")));
    let deleted = b["deletedDate"].as_i64().expect("deletedDate");
    assert_eq!(
        b["scheduledPurgeDate"].as_i64().expect("purge date") - deleted,
        90 * 86_400
    );
    let (s, _, b) = kv
        .call(reqwest::Method::GET, "/secrets/doomed/", None)
        .await;
    assert_kv_error(s, &b, 404, "SecretNotFound", None);
    let (s, b) = kv.set("doomed", json!({"value": "v2"})).await;
    assert_kv_error(
        s,
        &b,
        409,
        "Conflict",
        Some("ObjectIsDeletedButRecoverable"),
    );
    let (s, _, b) = kv
        .call(reqwest::Method::GET, "/deletedsecrets/doomed", None)
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = kv
        .call(
            reqwest::Method::POST,
            "/deletedsecrets/doomed/recover",
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = kv.call(reqwest::Method::GET, "/secrets/doomed", None).await;
    assert_eq!((s, b["value"].clone()), (200, json!("v1")));
    let (s, _, _) = kv
        .call(reqwest::Method::DELETE, "/secrets/doomed", None)
        .await;
    assert_eq!(s, 200);
    let (s, _, _) = kv
        .call(reqwest::Method::DELETE, "/deletedsecrets/doomed", None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = kv.set("doomed", json!({"value": "v3"})).await;
    assert_eq!(s, 200, "{b}");
    emu.shutdown().await;
}

#[tokio::test]
async fn versions_page_by_next_link_and_latest_is_last_created() {
    let emu = start().await;
    let kv = Kv::new(&emu, ROTATOR, ROTATOR_SECRET).await;
    // Many versions in the same second: order must still be creation order.
    let mut ids = Vec::new();
    for i in 0..30 {
        let (s, b) = kv.set("many", json!({"value": format!("v{i}")})).await;
        assert_eq!(s, 200);
        ids.push(b["id"].as_str().expect("id").to_string());
    }
    let (_, _, latest) = kv.call(reqwest::Method::GET, "/secrets/many/", None).await;
    assert_eq!(latest["value"], "v29");
    // Default page size 25, then nextLink.
    let (s, _, page1) = kv
        .call(reqwest::Method::GET, "/secrets/many/versions", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(page1["value"].as_array().expect("value").len(), 25);
    assert!(
        page1["value"][0].get("value").is_none(),
        "no values in lists"
    );
    let next = page1["nextLink"].as_str().expect("nextLink").to_string();
    assert!(next.contains("$skiptoken="), "{next}");
    let r =
        kv.h.get(&next)
            .bearer_auth(&kv.token)
            .send()
            .await
            .expect("next page");
    let page2: Value = r.json().await.expect("json");
    assert_eq!(page2["value"].as_array().expect("value").len(), 5);
    assert!(page2["nextLink"].is_null());
    let listed: Vec<String> = page1["value"]
        .as_array()
        .into_iter()
        .chain(page2["value"].as_array())
        .flatten()
        .map(|v| v["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(listed, ids);
    for bad in ["0", "26", "x"] {
        let (s, _, b) = kv
            .call(
                reqwest::Method::GET,
                &format!("/secrets/many/versions?maxresults={bad}"),
                None,
            )
            .await;
        assert_kv_error(s, &b, 400, "BadParameter", None);
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn update_disable_and_tokens() {
    let emu = start().await;
    let kv = Kv::new(&emu, ROTATOR, ROTATOR_SECRET).await;
    let (_, b) = kv
        .set(
            "upd",
            json!({"value": "v", "tags": {"keyturn-state": "pending"}}),
        )
        .await;
    let version = b["id"]
        .as_str()
        .and_then(|i| i.rsplit('/').next())
        .expect("version")
        .to_string();
    let (s, _, b) = kv
        .call(
            reqwest::Method::PATCH,
            &format!("/secrets/upd/{version}"),
            Some(json!({"attributes": {"enabled": false}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["tags"]["keyturn-state"], "pending",
        "tags kept when absent"
    );
    let (s, _, b) = kv.call(reqwest::Method::GET, "/secrets/upd/", None).await;
    assert_kv_error(s, &b, 403, "Forbidden", None);
    // A Graph token, a forged token, an expired token: 401 with the challenge.
    let gt = app_token(&kv.h, &emu, ROTATOR, ROTATOR_SECRET, GRAPH_SCOPE).await;
    for t in [gt, unsigned_jwt(&json!({"aud": "https://vault.azure.net"}))] {
        let r =
            kv.h.get(format!("{}/secrets/svc-coreview-1/", kv.base))
                .bearer_auth(t)
                .send()
                .await
                .expect("request");
        assert_eq!(r.status().as_u16(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
    }
    emu.control()
        .advance_clock(std::time::Duration::from_secs(3600));
    let (s, hd, b) = kv
        .call(reqwest::Method::GET, "/secrets/svc-coreview-1/", None)
        .await;
    assert_kv_error(s, &b, 401, "Unauthorized", None);
    assert!(hd.contains_key("www-authenticate"));
    emu.shutdown().await;
}

#[tokio::test]
async fn forbidden_by_rbac_for_readers_and_strangers() {
    let emu = start().await;
    let reader = Kv::new(&emu, READER, READER_SECRET).await;
    let (s, _, _) = reader
        .call(reqwest::Method::GET, "/secrets/svc-coreview-1/", None)
        .await;
    assert_eq!(s, 200);
    let (s, b) = reader.set("svc-coreview-1", json!({"value": "x"})).await;
    assert_kv_error(s, &b, 403, "Forbidden", Some("ForbiddenByRbac"));
    let stranger = Kv::new(&emu, HELPDESK, HELPDESK_SECRET).await;
    let (s, _, b) = stranger
        .call(reqwest::Method::GET, "/secrets/svc-coreview-1/", None)
        .await;
    assert_kv_error(s, &b, 403, "Forbidden", Some("ForbiddenByRbac"));
    emu.shutdown().await;
}

#[tokio::test]
async fn throttling_per_vault_with_retry_after() {
    let mut sc = scenario();
    sc.limits = Some(Limits {
        kv_set_limit: 3,
        kv_other_limit: 5,
        kv_window_ms: 10_000,
        ..Limits::default()
    });
    let emu = start_with(sc).await;
    let kv = Kv::new(&emu, ROTATOR, ROTATOR_SECRET).await;
    for i in 0..3 {
        let (s, _) = kv.set("t", json!({"value": format!("{i}")})).await;
        assert_eq!(s, 200);
    }
    let (s, hd, b) = kv
        .call(
            reqwest::Method::PUT,
            "/secrets/t",
            Some(json!({"value": "x"})),
        )
        .await;
    assert_kv_error(s, &b, 429, "Throttled", None);
    let retry: u64 = hd
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=10).contains(&retry));
    // Reads have their own budget.
    for _ in 0..5 {
        let (s, _, _) = kv.call(reqwest::Method::GET, "/secrets/t/", None).await;
        assert_eq!(s, 200);
    }
    let (s, _, _) = kv.call(reqwest::Method::GET, "/secrets/t/", None).await;
    assert_eq!(s, 429);
    let c = emu.control().counters();
    assert_eq!(c.throttled.get("kv.set"), Some(&1));
    assert_eq!(c.throttled.get("kv.get"), Some(&1));
    emu.control()
        .advance_clock(std::time::Duration::from_secs(retry));
    let (s, _) = kv.set("t", json!({"value": "after"})).await;
    assert_eq!(s, 200);
    emu.shutdown().await;
}
