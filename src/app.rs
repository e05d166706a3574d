//! Wiring: turns a validated configuration into accounts backed by the real Azure
//! adapters, sharing one HTTP client, one credential per identity (token caches), one
//! store per vault and identity, and one directory per identity; stores and directories
//! are paced by one [`Limiter`] (buckets per vault and per Graph app and tenant), which a
//! reload keeps while `[limits]` is unchanged.

use crate::azure::graph::{graph_scope, GraphDirectory, GraphSettings};
use crate::azure::keyvault::KeyVaultStore;
use crate::azure::{self, SetupError};
use crate::config::Loaded;
use crate::daemon::{Managed, Settings};
use crate::directory::Directory;
use crate::limits::Limiter;
use crate::protocol::{Account, Tuning};
use crate::store::SecretStore;
use azure_core::credentials::TokenCredential;
use std::collections::HashMap;
use std::sync::Arc;

/// Default Entra authority.
pub(crate) const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Default Graph base URL.
pub(crate) const DEFAULT_GRAPH: &str = "https://graph.microsoft.com";

/// Builds every managed account from the configuration, with new rate-limit buckets that
/// report their waits to `http`'s observer.
pub fn accounts(loaded: &Loaded, http: &azure::Http) -> Result<Vec<Managed>, SetupError> {
    accounts_with(
        loaded,
        http,
        &Limiter::new(loaded.config.limits.clone(), http.observer.clone()),
        &credentials(loaded, http)?,
    )
}

/// One `azure_identity` credential per identity, by name: each keeps its own token cache, so
/// everything that signs in as an identity (its accounts, the readiness watch) shares one.
pub(crate) type Credentials = HashMap<String, Arc<dyn TokenCredential>>;

/// The credential of every identity in `loaded` (reading their credential files: may block).
pub(crate) fn credentials(loaded: &Loaded, http: &azure::Http) -> Result<Credentials, SetupError> {
    let config = &loaded.config;
    let mut out = Credentials::new();
    for (name, id) in &config.identities {
        out.insert(
            name.clone(),
            azure::credential(name, id, http, &config.network)?,
        );
    }
    Ok(out)
}

/// Builds every managed account, paced by `limiter`'s buckets (shared with the accounts
/// built before from the same limiter, so a reload does not hand out a fresh budget), with
/// the identities' `credentials` (from [`credentials`] for the same configuration).
pub(crate) fn accounts_with(
    loaded: &Loaded,
    http: &azure::Http,
    limiter: &Limiter,
    credentials: &Credentials,
) -> Result<Vec<Managed>, SetupError> {
    let config = &loaded.config;
    let mut stores: HashMap<(String, String), Arc<dyn SecretStore>> = HashMap::new();
    let mut directories: HashMap<String, Arc<dyn Directory>> = HashMap::new();
    let mut out = Vec::new();
    for a in &loaded.accounts {
        let key = (
            crate::config::normalize_vault(&a.vault),
            a.vault_identity.clone(),
        );
        let store = match stores.get(&key) {
            Some(s) => s.clone(),
            None => {
                let cred = credentials[a.vault_identity.as_str()].clone();
                let s: Arc<dyn SecretStore> = limiter.store(Arc::new(
                    KeyVaultStore::new(&a.vault, cred, http, &config.network)
                        .map_err(|e| SetupError::identity(&a.vault_identity, e.to_string(), e))?,
                ));
                stores.insert(key, s.clone());
                s
            }
        };
        let directory = match directories.get(&a.identity) {
            Some(d) => d.clone(),
            None => {
                let id = &config.identities[&a.identity];
                let authority_of = |id: &crate::config::IdentityConfig| {
                    id.authority_host
                        .clone()
                        .or_else(|| std::env::var("AZURE_AUTHORITY_HOST").ok())
                        .unwrap_or_else(|| DEFAULT_AUTHORITY.into())
                };
                // The verify sign-in runs as the identity's `verify_identity` when it names
                // one (validated: it exists, can sign a user in, same tenant).
                let (verify_name, verify_id) = match &id.verify_identity {
                    Some(v) => match config.identities.get(v) {
                        Some(vid) => (v.as_str(), vid),
                        None => (a.identity.as_str(), id),
                    },
                    None => (a.identity.as_str(), id),
                };
                let tenant_id = id
                    .tenant_id
                    .clone()
                    .unwrap_or_else(|| "organizations".into());
                let verify = azure::ropc_client(
                    verify_name,
                    verify_id,
                    authority_of(verify_id),
                    tenant_id.clone(),
                )?;
                let client_id = id.client_id.clone().unwrap_or_default();
                // Graph counts writes per app and tenant.
                let app = if client_id.is_empty() {
                    a.identity.as_str()
                } else {
                    client_id.as_str()
                };
                let budget_key = format!("{app}@{tenant_id}");
                let base = id
                    .graph_base
                    .clone()
                    .unwrap_or_else(|| DEFAULT_GRAPH.into());
                let graph = GraphDirectory::new(
                    http.clone(),
                    credentials[a.identity.as_str()].clone(),
                    GraphSettings {
                        scope: id.graph_scope.clone().unwrap_or_else(|| graph_scope(&base)),
                        base,
                        tenant_id,
                        verify,
                    },
                );
                let d = limiter.directory(&budget_key, Arc::new(graph));
                directories.insert(a.identity.clone(), d.clone());
                d
            }
        };
        out.push(Managed {
            account: Account {
                name: a.name.clone(),
                user: a.user.clone(),
                secret: a.secret.clone(),
                policy: a.policy.clone(),
                verify: a.verify,
                expiry: Some(a.expiry),
                store,
                directory,
            },
            schedule: a.schedule.clone(),
            enabled: a.enabled,
            on_missing_secret: a.on_missing_secret,
        });
    }
    Ok(out)
}

/// The daemon's settings from the configuration.
pub fn settings(loaded: &Loaded) -> Settings {
    let d = &loaded.config.daemon;
    Settings {
        max_concurrent: d.max_concurrent_rotations,
        max_per_tenant: d.max_concurrent_per_tenant,
        retry_base: d.retry_base_delay,
        retry_max: d.retry_max_delay,
        drift_interval: d.drift_check_interval,
        readiness_interval: d.readiness_check_interval,
        shutdown_grace: d.shutdown_grace,
        startup_delay: std::time::Duration::ZERO,
    }
}

/// The protocol's tuning from the configuration.
pub fn tuning(loaded: &Loaded) -> Tuning {
    Tuning {
        apply_attempts: loaded.config.daemon.apply_attempts,
        ..Tuning::default()
    }
}

/// The identities' own credentials: their expiry to `observer` (the metric
/// `keyturn_identity_credential_expiry_timestamp_seconds`), and a warning for each that has
/// expired or expires within 30 days. At start-up and at each reload.
pub fn report_credential_expiry(
    config: &crate::config::Config,
    observer: &dyn crate::observe::Observer,
) {
    let expiries = crate::config::credential_expiries(config)
        .into_iter()
        .map(|(name, at)| (name, at.unix_timestamp()))
        .collect();
    observer.credential_expiries(&expiries);
    for (key, message) in crate::config::expiry_warnings(config, time::OffsetDateTime::now_utc()) {
        tracing::warn!(key = %key, "{message}");
    }
}
