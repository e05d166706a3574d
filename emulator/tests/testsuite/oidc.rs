//! Entra discovery: OpenID configuration (v2.0 and v1, by tenant id and domain), instance
//! discovery, user realm, and RS256 tokens whose `kid` is published at `jwks_uri`.

use crate::common::*;
use aws_lc_rs::signature::{RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keyturn_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;

async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = http.get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON"))
}

fn part(token: &str, i: usize) -> Value {
    let p = token.split('.').nth(i).expect("JWT part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("JSON")
}

/// Checks the token's RS256 signature with the key of `jwks` named by its `kid`.
fn verify_with_jwks(token: &str, jwks: &Value) {
    let header = part(token, 0);
    assert_eq!(header["alg"], "RS256", "{header}");
    let kid = header["kid"].as_str().expect("kid");
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("kid {kid} not in {jwks}"));
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    let b = |k: &str| URL_SAFE_NO_PAD.decode(key[k].as_str().expect(k)).expect(k);
    let pk = RsaPublicKeyComponents {
        n: b("n"),
        e: b("e"),
    };
    let (input, sig) = token.rsplit_once('.').expect("signature");
    pk.verify(
        &RSA_PKCS1_2048_8192_SHA256,
        input.as_bytes(),
        &URL_SAFE_NO_PAD.decode(sig).expect("sig"),
    )
    .expect("signature verifies with the published key");
}

#[tokio::test]
async fn openid_configuration_v2_and_v1_for_tenant_id_and_domain() {
    let emu = start().await;
    let http = http(&emu);
    let base = emu.authority_host();
    for t in [
        "contoso",
        "contoso.onmicrosoft.com",
        "CONTOSO.onmicrosoft.com",
    ] {
        let (s, v2) = get(
            &http,
            &format!("{base}/{t}/v2.0/.well-known/openid-configuration"),
        )
        .await;
        assert_eq!(s, 200, "{v2}");
        assert_eq!(v2["issuer"], format!("{base}/contoso/v2.0"));
        assert_eq!(
            v2["token_endpoint"],
            format!("{base}/contoso/oauth2/v2.0/token")
        );
        assert_eq!(
            v2["authorization_endpoint"],
            format!("{base}/contoso/oauth2/v2.0/authorize")
        );
        assert_eq!(
            v2["device_authorization_endpoint"],
            format!("{base}/contoso/oauth2/v2.0/devicecode")
        );
        assert_eq!(
            v2["jwks_uri"],
            format!("{base}/contoso/discovery/v2.0/keys")
        );
        assert_eq!(v2["id_token_signing_alg_values_supported"][0], "RS256");
        let (s, v1) = get(
            &http,
            &format!("{base}/{t}/.well-known/openid-configuration"),
        )
        .await;
        assert_eq!(s, 200, "{v1}");
        assert_eq!(v1["issuer"], "https://sts.windows.net/contoso/");
        assert_eq!(v1["token_endpoint"], format!("{base}/contoso/oauth2/token"));
        assert_eq!(v1["jwks_uri"], format!("{base}/common/discovery/keys"));
    }
    let (s, e) = get(
        &http,
        &format!("{base}/nowhere/v2.0/.well-known/openid-configuration"),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"], "invalid_tenant");
    assert_eq!(e["error_codes"][0], 90002);
}

#[tokio::test]
async fn instance_and_user_realm_discovery() {
    let emu = start().await;
    let http = http(&emu);
    let base = emu.authority_host();
    let (s, d) = get(
        &http,
        &format!("{base}/common/discovery/instance?api-version=1.1&authorization_endpoint=https://login.microsoftonline.com/contoso/oauth2/v2.0/authorize"),
    )
    .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(
        d["tenant_discovery_endpoint"],
        "https://login.microsoftonline.com/contoso/v2.0/.well-known/openid-configuration"
    );
    assert!(d["metadata"][0]["aliases"]
        .as_array()
        .expect("aliases")
        .iter()
        .any(|a| a == "login.microsoftonline.com"));
    // An authority on the emulator's own host:port points back at it.
    let port = emu.addr().port();
    let (_, d) = get(
        &http,
        &format!("{base}/common/discovery/instance?api-version=1.0&authorization_endpoint=https://localhost:{port}/contoso.onmicrosoft.com/oauth2/v2.0/authorize"),
    )
    .await;
    assert_eq!(
        d["tenant_discovery_endpoint"],
        format!("{base}/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration")
    );
    assert_eq!(d["metadata"][1]["aliases"][0], format!("localhost:{port}"));
    let (s, e) = get(
        &http,
        &format!("{base}/common/discovery/instance?api-version=1.1&authorization_endpoint=https://login.example.org/contoso/oauth2/v2.0/authorize"),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"], "invalid_instance");
    assert_eq!(e["error_codes"][0], 50049);
    let (s, r) = get(
        &http,
        &format!("{base}/common/userrealm/{SVC1}?api-version=1.0"),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["account_type"], "Managed");
    assert_eq!(r["domain_name"], "contoso.onmicrosoft.com");
    let (_, r) = get(
        &http,
        &format!("{base}/common/userrealm/a@example.org?api-version=1.0"),
    )
    .await;
    assert_eq!(r["account_type"], "Unknown");
}

#[tokio::test]
async fn tokens_are_rs256_with_a_published_kid_and_role_template_ids() {
    let emu = start().await;
    let http = http(&emu);
    let base = emu.authority_host();
    let (_, cfg) = get(
        &http,
        &format!("{base}/contoso/v2.0/.well-known/openid-configuration"),
    )
    .await;
    let (s, jwks) = get(&http, cfg["jwks_uri"].as_str().expect("jwks_uri")).await;
    assert_eq!(s, 200, "{jwks}");
    let (_, jwks_v1) = get(&http, &format!("{base}/common/discovery/keys")).await;
    assert_eq!(jwks["keys"][0]["kid"], jwks_v1["keys"][0]["kid"]);

    // App token (helpdesk holds User Administrator).
    let tok = app_token(&http, &emu, HELPDESK, HELPDESK_SECRET, GRAPH_SCOPE).await;
    verify_with_jwks(&tok, &jwks);
    let c = part(&tok, 1);
    assert_eq!(c["iss"], "https://sts.windows.net/contoso/");
    assert_eq!(
        c["wids"],
        serde_json::json!(["fe930be7-5e62-47db-91af-98c3a49a38b1"])
    );

    // User token and v2.0 id_token (svc1 holds seven roles, Global Reader among them).
    let (s, body) = token_request(
        &http,
        &emu,
        TENANT,
        &[
            ("grant_type", "password"),
            ("client_id", ROTATOR),
            ("client_secret", ROTATOR_SECRET),
            ("scope", "openid profile"),
            ("username", SVC1),
            ("password", SVC1_PASSWORD),
            ("client_info", "1"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let at = body["access_token"].as_str().expect("access_token");
    verify_with_jwks(at, &jwks);
    let wids = part(at, 1)["wids"].clone();
    assert!(
        wids.as_array()
            .expect("wids")
            .iter()
            .any(|w| w == "f2ef992c-3afb-46b9-b7cf-a126ee74c451"),
        "{wids}"
    );
    let id = body["id_token"].as_str().expect("id_token");
    verify_with_jwks(id, &jwks);
    let idc = part(id, 1);
    assert_eq!(idc["iss"], cfg["issuer"]);
    assert_eq!(idc["aud"], ROTATOR);
    assert_eq!(idc["ver"], "2.0");
    assert_eq!(idc["preferred_username"], SVC1);
    let ci: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(body["client_info"].as_str().expect("client_info"))
            .expect("base64url"),
    )
    .expect("JSON");
    assert_eq!(ci["uid"], SVC1_ID);
    assert_eq!(ci["utid"], "contoso");

    // Still accepted by Graph (whose role checks map template ids back).
    let r = http
        .get(format!("{}/v1.0/users/{SVC1}", emu.graph_base()))
        .bearer_auth(&tok)
        .send()
        .await
        .expect("graph");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_signing_key_survives_a_restart_with_the_state_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let start = || async {
        Emulator::start(EmulatorConfig {
            scenario: Some(scenario()),
            state_file: Some(state.clone()),
            ..EmulatorConfig::default()
        })
        .await
        .expect("starts")
    };
    let kid = |emu: Emulator| async move {
        let http = http(&emu);
        let (_, jwks) = get(
            &http,
            &format!("{}/contoso/discovery/v2.0/keys", emu.authority_host()),
        )
        .await;
        let tok = app_token(&http, &emu, READER, READER_SECRET, VAULT_SCOPE).await;
        verify_with_jwks(&tok, &jwks);
        emu.shutdown().await;
        jwks["keys"][0]["kid"].as_str().expect("kid").to_string()
    };
    let first = kid(start().await).await;
    let second = kid(start().await).await;
    assert_eq!(first, second);
    let text = std::fs::read_to_string(&state).expect("state file");
    assert!(text.contains("token_signing_key"));
}

#[test]
fn scenarios_name_roles_by_name_or_template_id_and_unknown_ones_are_refused() {
    let ok = keyturn_emulator::Scenario::from_toml_str(
        r#"
[[tenants]]
id = "t1"
[[users]]
tenant = "t1"
upn = "a@t1.example"
password = "Some-Pass-1!"
directory_roles = ["User Administrator", "f2ef992c-3afb-46b9-b7cf-a126ee74c451"]
"#,
    )
    .expect("parses");
    ok.validate().expect("known roles by name and id");
    let bad = keyturn_emulator::Scenario::from_toml_str(
        r#"
[[tenants]]
id = "t1"
[[users]]
tenant = "t1"
upn = "a@t1.example"
password = "Some-Pass-1!"
directory_roles = ["Chief Coffee Officer"]
"#,
    );
    let e = match bad.and_then(|s| s.validate()) {
        Ok(()) => panic!("an unknown role was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("users[a@t1.example].directory_roles: unknown role \"Chief Coffee Officer\""),
        "{e}"
    );
}
