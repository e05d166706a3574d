//! The official ManagedIdentityCredential (App Service shape, from IDENTITY_ENDPOINT and
//! IDENTITY_HEADER) against the emulator. The credential reads only the process environment,
//! and the other tests share this process: the test runs its body in a child process of this
//! test binary, the only test there, where setting the environment disturbs no one.

use crate::common::*;
use azure_core::credentials::TokenCredential;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};

/// Set in the child that runs [`in_its_own_process`].
const CHILD: &str = "KEYTURN_EMULATOR_TEST_MSI_CHILD";

#[test]
fn managed_identity_credential_reads_a_secret_and_unknown_identity_fails() {
    let name = "msi::in_its_own_process";
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("the test binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // It ran, and only it (a renamed test would otherwise pass by running nothing).
    assert!(text.contains("1 passed"), "{text}");
}

/// The test itself, run by the one above in a child process (it sets the environment).
#[tokio::test]
#[ignore = "run in its own process by managed_identity_credential_reads_a_secret_and_unknown_identity_fails"]
async fn in_its_own_process() {
    assert!(
        std::env::var_os(CHILD).is_some(),
        "sets the process environment: run only in a child process of its own"
    );
    let emu = start().await;
    std::env::set_var("IDENTITY_ENDPOINT", emu.identity_endpoint());
    std::env::set_var("IDENTITY_HEADER", emu.identity_header());

    // System-assigned identity: acts as keyturn-rotator.
    let cred = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        client_options: transport_options(http(&emu)),
        ..Default::default()
    }))
    .expect("credential");
    let token = cred.get_token(&[VAULT_SCOPE], None).await.expect("token");
    let remaining = token.expires_on.unix_timestamp() - now();
    assert!(
        (3000..=3600).contains(&remaining),
        "expires_on parsed from a string: {remaining}"
    );
    let client = SecretClient::new(
        &emu.vault_url(VAULT),
        cred,
        Some(SecretClientOptions {
            client_options: transport_options(http(&emu)),
            ..Default::default()
        }),
    )
    .expect("client");
    let s = client
        .get_secret("svc-coreview-1", None)
        .await
        .expect("get")
        .into_model()
        .expect("model");
    assert_eq!(s.value.as_deref(), Some(SVC1_PASSWORD));

    // A user-assigned client id that does not exist: 400, which the SDK reports as unassigned.
    let mut options = transport_options(http(&emu));
    options.retry = azure_core::http::RetryOptions::none();
    let cred = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: Some(UserAssignedId::ClientId(
            "99999999-9999-9999-9999-999999999999".into(),
        )),
        client_options: options,
    }))
    .expect("credential");
    let err = cred
        .get_token(&[VAULT_SCOPE], None)
        .await
        .expect_err("unknown identity");
    assert!(
        err.to_string()
            .contains("has not been assigned to this resource"),
        "{err}"
    );

    // The wrong x-identity-header is refused.
    let r = http(&emu)
        .get(format!(
            "{}?api-version=2019-08-01&resource=https://vault.azure.net",
            emu.identity_endpoint()
        ))
        .header("x-identity-header", "wrong")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);
    emu.shutdown().await;
}
