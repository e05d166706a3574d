//! The emulator alone: the request mix of one rotation per account (get `<secret>-pending`,
//! set it, Graph PATCH, set `<secret>`, tag the staging version), sent by `workers`
//! concurrent clients over kept-alive TLS connections, with tokens fetched once.

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use keyturn_bench::Fleet;
use keyturn_emulator::Emulator;
use std::sync::Arc;
use std::time::Instant;

async fn token(
    http: &reqwest::Client,
    emu: &Emulator,
    tenant: &str,
    client: &str,
    secret: &str,
    scope: &str,
) -> Result<String> {
    let v: serde_json::Value = http
        .post(format!(
            "{}/{tenant}/oauth2/v2.0/token",
            emu.authority_host()
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", secret),
            ("scope", scope),
        ])
        .send()
        .await?
        .json()
        .await?;
    v["access_token"]
        .as_str()
        .map(String::from)
        .context("no access token")
}

pub(crate) async fn run(emu: &Emulator, fleet: &Fleet, workers: usize) -> Result<f64> {
    let mut b = reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(emu.ca_pem().as_bytes())?]);
    for h in emu.resolve_hosts() {
        b = b.resolve(&h, emu.addr());
    }
    let http = b.build()?;
    let kv = token(
        &http,
        emu,
        keyturn_bench::OPERATOR_TENANT,
        keyturn_bench::OPERATOR_CLIENT,
        "operator-secret",
        "https://vault.azure.net/.default",
    )
    .await?;
    let mut graph = Vec::new();
    for j in 0..fleet.tenants {
        graph.push(
            token(
                &http,
                emu,
                &Fleet::tenant_id(j),
                &Fleet::client_id(j),
                &format!("secret-{j}"),
                "https://graph.microsoft.com/.default",
            )
            .await?,
        );
    }
    let graph = Arc::new(graph);
    let t = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..fleet.accounts)
        .map(|i| {
            let (http, kv, graph) = (http.clone(), kv.clone(), graph.clone());
            let fleet = *fleet;
            let vault = emu.vault_url(&Fleet::vault_name(fleet.vault_of(i)));
            let graph_base = emu.graph_base();
            async move {
                let (_, upn, secret) = fleet.account(i);
                let password = format!("Load-{i}-Pass!x");
                let pending = format!("{secret}-pending");
                let q = "api-version=2025-07-01";
                http.get(format!("{vault}secrets/{pending}/?{q}")).bearer_auth(&kv).send().await?;
                let staged: serde_json::Value = http
                    .put(format!("{vault}secrets/{pending}?{q}"))
                    .bearer_auth(&kv)
                    .json(&serde_json::json!({"value": password, "contentType": "password", "tags": {"keyturn-state": "pending"}}))
                    .send().await?.error_for_status()?.json().await?;
                let version = staged["id"].as_str().and_then(|s| s.rsplit('/').next()).unwrap_or("").to_owned();
                http.patch(format!("{graph_base}/v1.0/users/{upn}"))
                    .bearer_auth(&graph[fleet.tenant_of(i)])
                    .json(&serde_json::json!({"passwordProfile": {"password": password, "forceChangePasswordNextSignIn": false, "forceChangePasswordNextSignInWithMfa": false}}))
                    .send().await?.error_for_status()?;
                http.put(format!("{vault}secrets/{secret}?{q}"))
                    .bearer_auth(&kv)
                    .json(&serde_json::json!({"value": password, "contentType": "password", "tags": {"keyturn-rotated-at": "2026-01-01T00:00:00Z"}}))
                    .send().await?.error_for_status()?;
                http.patch(format!("{vault}secrets/{pending}/{version}?{q}"))
                    .bearer_auth(&kv)
                    .json(&serde_json::json!({"tags": {"keyturn-state": "committed"}}))
                    .send().await?.error_for_status()?;
                Ok(())
            }
        })
        .buffer_unordered(workers)
        .collect()
        .await;
    let took = t.elapsed();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        bail!("load request failed: {e}");
    }
    Ok(fleet.accounts as f64 / took.as_secs_f64())
}
