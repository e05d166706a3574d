//! Shared by the emulator's integration tests: their scenario and its entities. Starting an
//! emulator and the clients that reach it over real TLS come from the harness keyturn's tests
//! share, `keyturn_emulator::testkit`.
#![allow(dead_code)]

pub use keyturn_emulator::testkit::{
    client_options, http, http_with_ca, now, start_with, token_request, transport_options,
    unsigned_jwt, GRAPH_SCOPE, VAULT_SCOPE,
};
use keyturn_emulator::{testkit, Emulator, Scenario};

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

/// [`start`], then `extra` (a scenario fragment: more apps, users, policies) seeded on top.
pub async fn start_seeded(extra: &str) -> Emulator {
    let emu = start().await;
    emu.control()
        .seed(&Scenario::from_toml_str(extra).expect("extra scenario"))
        .expect("seeded");
    emu
}

/// A client-credentials token in [`TENANT`] for `scope` (e.g. [`GRAPH_SCOPE`]).
pub async fn app_token(
    http: &reqwest::Client,
    emu: &Emulator,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> String {
    testkit::app_token(http, emu, TENANT, client_id, secret, scope).await
}
