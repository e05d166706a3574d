//! Shared by the emulator's integration tests: a scenario, an emulator on 127.0.0.1:0, and
//! clients that reach it over real TLS.
#![allow(dead_code)]

use keyturn_emulator::{Emulator, EmulatorConfig, Scenario};
use std::net::SocketAddr;
use std::sync::Arc;

pub const TENANT: &str = "contoso";
pub const VAULT: &str = "keyturn-demo";
/// keyturn-rotator: Secrets Officer, User-PasswordProfile.ReadWrite.All, PAA.
pub const ROTATOR: &str = "11111111-1111-1111-1111-111111111111";
pub const ROTATOR_SECRET: &str = "demo-client-secret";
/// coreview-reader: Secrets User only.
pub const READER: &str = "22222222-2222-2222-2222-222222222222";
pub const READER_SECRET: &str = "reader-client-secret";
/// helpdesk: User Administrator and the Graph permission, not PAA.
pub const HELPDESK: &str = "44444444-4444-4444-4444-444444444444";
pub const HELPDESK_SECRET: &str = "helpdesk-secret";
/// noperm: a role but no Graph permission.
pub const NOPERM: &str = "55555555-5555-5555-5555-555555555555";
pub const NOPERM_SECRET: &str = "noperm-secret";
pub const SVC1: &str = "svc-coreview-1@contoso.onmicrosoft.com";
pub const SVC1_ID: &str = "aaaaaaaa-0000-0000-0000-000000000001";
pub const SVC1_PASSWORD: &str = "Initial-Pass-1!";
pub const PLAIN: &str = "plain.user@contoso.onmicrosoft.com";
pub const PLAIN_PASSWORD: &str = "Plain-User-Pass1";

/// The demo scenario plus entities that exercise every error path.
pub fn scenario() -> Scenario {
    let demo = include_str!("../../../config/demo-scenario.toml");
    let extra = r#"
[[tenants]]
id = "fabrikam"

[[apps]]
tenant = "contoso"
name = "helpdesk"
client_id = "44444444-4444-4444-4444-444444444444"
secrets = ["helpdesk-secret"]
expired_secrets = ["helpdesk-old-secret"]
graph_permissions = ["User.Read.All", "User-PasswordProfile.ReadWrite.All"]
directory_roles = ["User Administrator"]

[[apps]]
tenant = "contoso"
name = "noperm"
client_id = "55555555-5555-5555-5555-555555555555"
secrets = ["noperm-secret"]
directory_roles = ["Privileged Authentication Administrator"]

[[users]]
tenant = "contoso"
upn = "plain.user@contoso.onmicrosoft.com"
password = "Plain-User-Pass1"

[[users]]
tenant = "contoso"
upn = "disabled@contoso.onmicrosoft.com"
password = "Disabled-Pass-1"
disabled = true

[[users]]
tenant = "contoso"
upn = "expired@contoso.onmicrosoft.com"
password = "Expired-Pass-1"
password_expired = true

[[users]]
tenant = "contoso"
upn = "mfa@contoso.onmicrosoft.com"
password = "Mfa-Pass-1!"
mfa_required = true

[[users]]
tenant = "contoso"
upn = "mfareg@contoso.onmicrosoft.com"
password = "MfaReg-Pass-1!"
mfa_registration_required = true

[[users]]
tenant = "contoso"
upn = "secdef@contoso.onmicrosoft.com"
password = "SecDef-Pass-1!"
security_defaults_blocked = true
"#;
    // Two TOML documents with the same arrays of tables concatenate into one.
    let text = format!(
        "{}\n{}",
        demo.split("[limits]").next().unwrap_or(demo),
        extra
    );
    Scenario::from_toml_str(&text).expect("test scenario parses")
}

pub async fn start() -> Emulator {
    start_with(scenario()).await
}

pub async fn start_with(sc: Scenario) -> Emulator {
    Emulator::start(EmulatorConfig {
        scenario: Some(sc),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts")
}

/// A reqwest 0.13 client that trusts `ca_pem` and resolves the emulator's host names.
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

/// POSTs to the token endpoint; returns (status, JSON body).
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

/// A client-credentials token for `scope` (e.g. `https://graph.microsoft.com/.default`).
pub async fn app_token(
    http: &reqwest::Client,
    emu: &Emulator,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> String {
    let (status, body) = token_request(
        http,
        emu,
        TENANT,
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

pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";

/// An unsigned JWT with the given claims (client assertions; the emulator does not check
/// assertion signatures).
pub fn unsigned_jwt(claims: &serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims"));
    format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(b"not-checked"))
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}
