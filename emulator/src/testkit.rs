//! The test harness keyturn's and the emulator's integration tests share (cargo feature
//! `testkit`, which both enable only as a dev-dependency feature, so no production build links
//! it): an emulator started with a scenario, reqwest clients that trust its CA and resolve its
//! host names, Azure SDK client options pointed at it, token requests, and a polling wait.
//!
//! Test helpers: they panic with a message when something they set up fails.

use crate::{Emulator, EmulatorConfig, Scenario};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The scope of a Graph token (client credentials).
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The scope of a Key Vault token (client credentials).
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";

/// An emulator on `127.0.0.1:0` with a generated CA, seeded with `scenario`.
pub async fn start_with(scenario: Scenario) -> Emulator {
    Emulator::start(EmulatorConfig {
        scenario: Some(scenario),
        ..EmulatorConfig::default()
    })
    .await
    .expect("the emulator starts")
}

/// [`start_with`] a scenario written in TOML.
pub async fn start_toml(scenario: &str) -> Emulator {
    start_with(Scenario::from_toml_str(scenario).expect("the test scenario parses")).await
}

/// TLS files for another test server (Azurite, for keyturn's `[ha]` tests): a throwaway CA
/// and a certificate for `names` signed by it, written to `dir/cert.pem` (the certificate,
/// then the CA) and `dir/key.pem`; returns the CA's PEM, for the clients to trust.
pub fn tls_files(dir: &std::path::Path, names: &[&str]) -> String {
    let (ca, chain, key) = crate::tls::issue(names).expect("a certificate is issued");
    std::fs::write(dir.join("cert.pem"), chain).expect("write cert.pem");
    std::fs::write(dir.join("key.pem"), key).expect("write key.pem");
    ca
}

/// A reqwest client that trusts `ca_pem`, resolves the emulator's host names to it and
/// follows no redirects.
pub fn http_with_ca(emu: &Emulator, ca_pem: &str) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_merge([reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM")]);
    let addr: SocketAddr = emu.addr();
    for h in emu.resolve_hosts() {
        b = b.resolve(&h, addr);
    }
    b.build().expect("reqwest client")
}

/// [`http_with_ca`] with the emulator's own CA.
pub fn http(emu: &Emulator) -> reqwest::Client {
    http_with_ca(emu, emu.ca_pem())
}

/// `ClientOptions` for Azure SDK clients: transport over `http`, cloud = the emulator.
pub fn client_options(emu: &Emulator, http: reqwest::Client) -> azure_core::http::ClientOptions {
    let mut cloud = azure_core::cloud::CustomConfiguration::default();
    cloud.authority_host = emu.authority_host();
    azure_core::http::ClientOptions {
        transport: Some(azure_core::http::Transport::new(Arc::new(http))),
        cloud: Some(Arc::new(cloud.into())),
        ..Default::default()
    }
}

/// Same, without cloud (for the SecretClient, whose audience comes from the challenge).
pub fn transport_options(http: reqwest::Client) -> azure_core::http::ClientOptions {
    azure_core::http::ClientOptions {
        transport: Some(azure_core::http::Transport::new(Arc::new(http))),
        ..Default::default()
    }
}

/// POSTs `form` to `tenant`'s token endpoint; returns (status, JSON body).
pub async fn token_request(
    http: &reqwest::Client,
    emu: &Emulator,
    tenant: &str,
    form: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let r = http
        .post(format!(
            "{}/{tenant}/oauth2/v2.0/token",
            emu.authority_host()
        ))
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("token JSON"))
}

/// A client-credentials token in `tenant` for `scope` ([`GRAPH_SCOPE`], [`VAULT_SCOPE`]).
pub async fn app_token(
    http: &reqwest::Client,
    emu: &Emulator,
    tenant: &str,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> String {
    let (status, body) = token_request(
        http,
        emu,
        tenant,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "token: {body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// An unsigned JWT with the given claims (client assertions; the emulator does not check
/// assertion signatures).
pub fn unsigned_jwt(claims: &serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims"));
    format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(b"not-checked"))
}

/// The wall clock in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Polls `f` every 50 ms until it is true or `timeout` passes; returns its last answer.
pub async fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// Whether `node` and `npm` both run here (Microsoft's JavaScript SDKs and Azurite need them).
pub fn node_and_npm() -> bool {
    ["node", "npm"].iter().all(|tool| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// Copies `files` (the first two `package.json` and `package-lock.json`) from `src` into
/// `cache` and runs `npm ci` there, only when the two package files changed or
/// `node_modules` is missing: a test's npm packages installed once per build folder (`what`
/// names them in the timing line and the failure).
pub fn npm_ci_cached(
    what: &str,
    src: &std::path::Path,
    cache: &std::path::Path,
    files: &[&str],
) -> Result<(), String> {
    std::fs::create_dir_all(cache)
        .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let same = |f: &str| match (std::fs::read(src.join(f)), std::fs::read(cache.join(f))) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let fresh =
        same("package.json") && same("package-lock.json") && cache.join("node_modules").is_dir();
    for f in files {
        std::fs::copy(src.join(f), cache.join(f))
            .map_err(|e| format!("cannot copy {what}'s {f} into {}: {e}", cache.display()))?;
    }
    if fresh {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let out = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(cache)
        .output()
        .map_err(|e| format!("cannot run npm ci for {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm ci for {what} failed in {}:\n{}{}",
            cache.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    eprintln!(
        "{what}: npm ci took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
