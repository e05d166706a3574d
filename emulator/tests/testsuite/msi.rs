//! The official ManagedIdentityCredential (App Service shape, from IDENTITY_ENDPOINT and
//! IDENTITY_HEADER) against the emulator. Its own test binary: it sets process environment.


use azure_core::credentials::TokenCredential;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use crate::common::*;

#[tokio::test]
async fn managed_identity_credential_reads_a_secret_and_unknown_identity_fails() {
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
