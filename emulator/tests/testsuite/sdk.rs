//! The official Azure SDK clients against the emulator over real TLS: client-secret and
//! workload-identity credentials, SecretClient with `verify_challenge_resource` left on.

use crate::common::*;
use azure_core::credentials::TokenCredential;
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use azure_security_keyvault_secrets::models::{
    SecretClientGetSecretOptions, SecretClientListSecretPropertiesVersionsOptions,
    SetSecretParameters, UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
use futures::TryStreamExt;
use std::collections::HashMap;
use std::sync::Arc;

fn secret_credential(
    emu: &keyturn_emulator::Emulator,
    client_id: &str,
    secret: &str,
) -> Arc<ClientSecretCredential> {
    ClientSecretCredential::new(
        TENANT,
        client_id.to_string(),
        secret.to_string().into(),
        Some(ClientSecretCredentialOptions {
            client_options: client_options(emu, http(emu)),
        }),
    )
    .expect("credential")
}

fn secret_client(
    emu: &keyturn_emulator::Emulator,
    cred: Arc<dyn TokenCredential>,
    http: reqwest::Client,
) -> SecretClient {
    SecretClient::new(
        &emu.vault_url(VAULT),
        cred,
        Some(SecretClientOptions {
            client_options: transport_options(http),
            ..Default::default()
        }),
    )
    .expect("secret client")
}

#[tokio::test]
async fn client_secret_credential_and_secret_client_round_trip() {
    let emu = start().await;
    let cred = secret_credential(&emu, ROTATOR, ROTATOR_SECRET);
    let client = secret_client(&emu, cred, http(&emu));

    // The seeded secret is the user's initial password.
    let seeded = client
        .get_secret("svc-coreview-1", None)
        .await
        .expect("get seeded")
        .into_model()
        .expect("model");
    assert_eq!(seeded.value.as_deref(), Some(SVC1_PASSWORD));
    assert_eq!(seeded.content_type.as_deref(), Some("password"));

    // Set three versions with tags.
    let mut versions = Vec::new();
    for i in 0..3 {
        let params = SetSecretParameters {
            value: Some(format!("value-{i}")),
            content_type: Some("password".into()),
            tags: Some(HashMap::from([(
                "keyturn-state".to_string(),
                "pending".to_string(),
            )])),
            ..Default::default()
        };
        let s = client
            .set_secret(
                "svc-coreview-1-pending",
                params.try_into().expect("body"),
                None,
            )
            .await
            .expect("set")
            .into_model()
            .expect("model");
        let id = s.resource_id().expect("resource id");
        assert_eq!(id.name, "svc-coreview-1-pending");
        let version = id.version.expect("version");
        assert_eq!(version.len(), 32);
        assert!(version.chars().all(|c| c.is_ascii_hexdigit()));
        let created = s
            .attributes
            .as_ref()
            .and_then(|a| a.created)
            .expect("created");
        assert!(
            (created.unix_timestamp() - now()).abs() < 60,
            "created is now in Unix seconds"
        );
        versions.push(version);
    }

    // Latest is the last one set; a version by id works too.
    let latest = client
        .get_secret("svc-coreview-1-pending", None)
        .await
        .expect("get")
        .into_model()
        .expect("model");
    assert_eq!(latest.value.as_deref(), Some("value-2"));
    let first = client
        .get_secret(
            "svc-coreview-1-pending",
            Some(SecretClientGetSecretOptions {
                secret_version: Some(versions[0].clone()),
                ..Default::default()
            }),
        )
        .await
        .expect("get version")
        .into_model()
        .expect("model");
    assert_eq!(first.value.as_deref(), Some("value-0"));

    // List versions one per page: three pages, followed through nextLink.
    let before = emu
        .control()
        .counters()
        .requests
        .get("kv.list")
        .copied()
        .unwrap_or(0);
    let mut pager = client
        .list_secret_properties_versions(
            "svc-coreview-1-pending",
            Some(SecretClientListSecretPropertiesVersionsOptions {
                maxresults: Some(1),
                ..Default::default()
            }),
        )
        .expect("pager");
    let mut listed = Vec::new();
    while let Some(p) = pager.try_next().await.expect("page") {
        listed.push(p.resource_id().expect("id").version.expect("version"));
    }
    listed.sort();
    let mut expected = versions.clone();
    expected.sort();
    assert_eq!(listed, expected);
    let after = emu
        .control()
        .counters()
        .requests
        .get("kv.list")
        .copied()
        .unwrap_or(0);
    assert!(
        after - before >= 3,
        "three pages were fetched, got {}",
        after - before
    );

    // Update properties of the latest version (PATCH /secrets/{name}/).
    let update = UpdateSecretPropertiesParameters {
        tags: Some(HashMap::from([(
            "keyturn-state".to_string(),
            "committed".to_string(),
        )])),
        ..Default::default()
    };
    let updated = client
        .update_secret_properties(
            "svc-coreview-1-pending",
            update.try_into().expect("body"),
            None,
        )
        .await
        .expect("update")
        .into_model()
        .expect("model");
    assert_eq!(
        updated
            .tags
            .as_ref()
            .and_then(|t| t.get("keyturn-state"))
            .map(String::as_str),
        Some("committed")
    );
    assert_eq!(updated.value, None, "update answers without the value");
    let again = client
        .get_secret("svc-coreview-1-pending", None)
        .await
        .expect("get")
        .into_model()
        .expect("model");
    assert_eq!(
        again.value.as_deref(),
        Some("value-2"),
        "update does not create a version"
    );
    assert_eq!(
        again
            .tags
            .as_ref()
            .and_then(|t| t.get("keyturn-state"))
            .map(String::as_str),
        Some("committed")
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn reader_identity_gets_forbidden_by_rbac_on_set() {
    let emu = start().await;
    let client = secret_client(
        &emu,
        secret_credential(&emu, READER, READER_SECRET),
        http(&emu),
    );
    let got = client
        .get_secret("svc-coreview-2", None)
        .await
        .expect("reader can read")
        .into_model()
        .expect("model");
    assert_eq!(got.value.as_deref(), Some("Initial-Pass-2!"));
    let params = SetSecretParameters {
        value: Some("x".into()),
        ..Default::default()
    };
    let err = client
        .set_secret("svc-coreview-2", params.try_into().expect("body"), None)
        .await
        .expect_err("reader cannot write");
    assert_eq!(err.http_status().map(u16::from), Some(403), "{err}");
    // The real 403 message contains "\r\n"; azure_core borrows `error.message` as &str, cannot
    // for an escaped string, and falls back to the status as error code and the raw body as
    // message. So a client sees code "403" and the body, as it would with the real service.
    match err.kind() {
        azure_core::error::ErrorKind::HttpResponse { raw_response, .. } => {
            let body = raw_response
                .as_ref()
                .map(|r| String::from_utf8_lossy(r.body()).into_owned())
                .unwrap_or_default();
            assert!(
                body.contains("\"code\":\"Forbidden\"") && body.contains("ForbiddenByRbac"),
                "{body}"
            );
        }
        other => panic!("unexpected error kind {other:?}"),
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn wrong_ca_fails_cleanly() {
    let emu = start().await;
    let other = start().await; // another throwaway CA
    let cred = secret_credential(&emu, ROTATOR, ROTATOR_SECRET);
    // No retries: a TLS failure is a transport error, which the default policy retries for 60 s.
    let mut options = transport_options(http_with_ca(&emu, other.ca_pem()));
    options.retry = azure_core::http::RetryOptions::none();
    let client = SecretClient::new(
        &emu.vault_url(VAULT),
        cred,
        Some(SecretClientOptions {
            client_options: options,
            ..Default::default()
        }),
    )
    .expect("secret client");
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        client.get_secret("svc-coreview-1", None),
    )
    .await
    .expect("fails without hanging")
    .expect_err("untrusted certificate");
    assert_eq!(
        err.http_status(),
        None,
        "no HTTP answer was accepted: {err}"
    );
    let text = format!("{err:?}").to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("tls") || text.contains("connect"),
        "{text}"
    );
    emu.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn wrong_client_secret_is_aadsts7000215() {
    let emu = start().await;
    let cred = secret_credential(&emu, ROTATOR, "wrong");
    let err = cred
        .get_token(&[VAULT_SCOPE], None)
        .await
        .expect_err("bad secret");
    assert!(err.to_string().contains("AADSTS7000215"), "{err}");
    emu.shutdown().await;
}

#[tokio::test]
async fn workload_identity_credential_gets_a_vault_token() {
    let emu = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    let assertion = unsigned_jwt(&serde_json::json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:keyturn:keyturn",
        "aud": ["api://AzureADTokenExchange"],
        "exp": now() + 600,
        "iat": now(),
    }));
    std::fs::write(&token_file, assertion).expect("write token file");
    let cred = WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: client_options(&emu, http(&emu)),
        },
        client_id: Some(ROTATOR.to_string()),
        tenant_id: Some(TENANT.to_string()),
        token_file_path: Some(token_file.clone()),
    }))
    .expect("credential");
    let client = secret_client(&emu, cred, http(&emu));
    let s = client
        .get_secret("svc-coreview-1", None)
        .await
        .expect("get")
        .into_model()
        .expect("model");
    assert_eq!(s.value.as_deref(), Some(SVC1_PASSWORD));

    // An assertion with the wrong subject is refused with AADSTS700213.
    let bad = unsigned_jwt(&serde_json::json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:other:other",
        "aud": ["api://AzureADTokenExchange"],
        "exp": now() + 600,
    }));
    let bad_file = dir.path().join("bad");
    std::fs::write(&bad_file, bad).expect("write");
    let cred = WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: client_options(&emu, http(&emu)),
        },
        client_id: Some(ROTATOR.to_string()),
        tenant_id: Some(TENANT.to_string()),
        token_file_path: Some(bad_file),
    }))
    .expect("credential");
    let err = cred
        .get_token(&[VAULT_SCOPE], None)
        .await
        .expect_err("wrong subject");
    assert!(err.to_string().contains("AADSTS700213"), "{err}");
    emu.shutdown().await;
}

#[tokio::test]
async fn secret_client_soft_delete_conflict_recover_and_list() {
    let emu = start().await;
    let client = secret_client(
        &emu,
        secret_credential(&emu, ROTATOR, ROTATOR_SECRET),
        http(&emu),
    );
    let deleted = client
        .delete_secret("svc-coreview-2", None)
        .await
        .expect("delete")
        .into_model()
        .expect("model");
    assert!(deleted
        .recovery_id
        .as_deref()
        .is_some_and(|r| r.ends_with("/deletedsecrets/svc-coreview-2")));
    assert!(deleted.scheduled_purge_date.is_some() && deleted.deleted_date.is_some());
    let params = SetSecretParameters {
        value: Some("x".into()),
        ..Default::default()
    };
    let err = client
        .set_secret("svc-coreview-2", params.try_into().expect("body"), None)
        .await
        .expect_err("deleted but recoverable");
    assert_eq!(err.http_status().map(u16::from), Some(409), "{err}");
    match err.kind() {
        azure_core::error::ErrorKind::HttpResponse { error_code, .. } => {
            assert_eq!(error_code.as_deref(), Some("Conflict"))
        }
        other => panic!("unexpected error kind {other:?}"),
    }
    assert!(err.to_string().contains("deleted but recoverable"), "{err}");
    client
        .recover_deleted_secret("svc-coreview-2", None)
        .await
        .expect("recover");
    let s = client
        .get_secret("svc-coreview-2", None)
        .await
        .expect("get")
        .into_model()
        .expect("model");
    assert_eq!(s.value.as_deref(), Some("Initial-Pass-2!"));
    let mut names = Vec::new();
    let mut pager = client.list_secret_properties(None).expect("pager");
    while let Some(p) = pager.try_next().await.expect("page") {
        names.push(p.resource_id().expect("id").name);
    }
    names.sort();
    assert_eq!(
        names,
        ["svc-coreview-1", "svc-coreview-2", "svc-coreview-ca"]
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn sdk_retries_an_injected_503_and_honours_retry_after() {
    let emu = start().await;
    let client = secret_client(
        &emu,
        secret_credential(&emu, ROTATOR, ROTATOR_SECRET),
        http(&emu),
    );
    emu.control()
        .add_fault(keyturn_emulator::FaultRule {
            id: Some("kv-503".into()),
            route: "kv.get".into(),
            vault: Some(VAULT.into()),
            tenant: None,
            kind: keyturn_emulator::FaultKind::Status,
            status: Some(503),
            retry_after: Some(1),
            latency_ms: None,
            then: None,
            probability: None,
            count: Some(1),
            content_type: None,
            body: None,
            body_bytes: None,
            echo_request: None,
            fired: 0,
        })
        .expect("rule");
    let started = std::time::Instant::now();
    let s = client
        .get_secret("svc-coreview-1", None)
        .await
        .expect("get after retry")
        .into_model()
        .expect("model");
    assert_eq!(s.value.as_deref(), Some(SVC1_PASSWORD));
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "waited for Retry-After"
    );
    let c = emu.control().counters();
    assert_eq!(c.faults_by_rule.get("kv-503"), Some(&1));
    assert_eq!(c.responses.get("kv.get 503"), Some(&1));
    assert_eq!(c.responses.get("kv.get 200"), Some(&1));
    emu.shutdown().await;
}

/// `GET /secrets` as Key Vault's "Get Secrets" answers it: 25 secrets a page (the default
/// `maxresults`), each the latest version's `SecretItem` (the secret's id without a
/// version, `attributes`, `tags`, `contentType`; never a value), and a `nextLink` that
/// carries the `api-version` and a `$skiptoken`, which the SDK's pager follows.
#[tokio::test]
async fn the_secret_listing_pages_by_25_with_tags_and_no_values() {
    let emu = start().await;
    let client = secret_client(
        &emu,
        secret_credential(&emu, ROTATOR, ROTATOR_SECRET),
        http(&emu),
    );
    for i in 0..60 {
        let parameters = SetSecretParameters {
            value: Some(format!("listed-value-{i}")),
            content_type: Some("password".into()),
            tags: Some(HashMap::from([("n".to_string(), i.to_string())])),
            ..Default::default()
        };
        client
            .set_secret(
                &format!("listed-{i:02}"),
                parameters.try_into().unwrap(),
                None,
            )
            .await
            .expect("set");
    }
    let total = 60 + 3; // the scenario's three secrets
    let lists = || {
        emu.control()
            .counters()
            .requests
            .get("kv.list")
            .copied()
            .unwrap_or(0)
    };
    let before = lists();
    let mut pages = client
        .list_secret_properties(None)
        .expect("pager")
        .into_pages();
    let mut bodies = Vec::new();
    while let Some(page) = pages.try_next().await.expect("page") {
        let body: azure_core::Bytes = page.into_body().into();
        bodies.push(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
    }
    assert_eq!(
        lists() - before,
        3,
        "{total} secrets: pages of 25, 25 and 13"
    );
    let sizes: Vec<usize> = bodies
        .iter()
        .map(|b| b["value"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [25, 25, 13]);
    for (i, b) in bodies.iter().enumerate() {
        let next = b["nextLink"].as_str();
        if i < 2 {
            let next = next.expect("a nextLink on every page but the last");
            assert!(
                next.starts_with(&emu.vault_url(VAULT).trim_end_matches('/').to_string()),
                "{next}"
            );
            assert!(next.contains("api-version="), "{next}");
            assert!(next.contains("$skiptoken="), "{next}");
        } else {
            assert!(next.is_none(), "{b}");
        }
    }
    let text = serde_json::to_string(&bodies).unwrap();
    assert!(
        !text.contains("listed-value-"),
        "a listing carries no values"
    );
    let item = bodies
        .iter()
        .flat_map(|b| b["value"].as_array().unwrap().iter())
        .find(|i| i["id"].as_str().unwrap().ends_with("/secrets/listed-07"))
        .expect("listed-07 is listed, by its id without a version");
    assert_eq!(item["tags"]["n"], "7");
    assert_eq!(item["contentType"], "password");
    assert_eq!(item["attributes"]["enabled"], true);
    assert!(item["attributes"]["created"].is_i64());
    assert!(item["attributes"]["updated"].is_i64());
    assert!(item.get("value").is_none());
    emu.shutdown().await;
}
