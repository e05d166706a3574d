//! The real adapters: Key Vault through the official `azure_security_keyvault_secrets`
//! SDK, Graph through `reqwest`, tokens through `azure_identity`. One `reqwest` client
//! (0.13, rustls) is shared by every Azure client, as `azure_core` 1.1 expects.

pub mod graph;
pub mod keyvault;

use crate::config::{IdentityConfig, NetworkConfig, TlsConfig};
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use std::path::PathBuf;
use std::sync::Arc;

/// Why the Azure clients could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read the CA file {path}: {detail}; check tls.extra_ca_files")]
    Ca { path: PathBuf, detail: String },
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("identity {identity}: {detail}")]
    Identity { identity: String, detail: String },
}

/// Builds the one HTTP client every Azure call goes through.
pub fn http_client(tls: &TlsConfig, net: &NetworkConfig) -> Result<reqwest::Client, SetupError> {
    let mut extra = Vec::new();
    for path in &tls.extra_ca_files {
        let pem = std::fs::read(path).map_err(|e| SetupError::Ca {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SetupError::Ca {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        if certs.is_empty() {
            return Err(SetupError::Ca {
                path: path.clone(),
                detail: "no PEM certificate in the file".into(),
            });
        }
        extra.extend(certs);
    }
    http_client_with(extra, net)
}

/// Like [`http_client`], with certificates already parsed (the embedded demo).
pub fn http_client_with(
    extra_roots: Vec<reqwest::Certificate>,
    net: &NetworkConfig,
) -> Result<reqwest::Client, SetupError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(net.timeout)
        .connect_timeout(net.timeout.min(std::time::Duration::from_secs(10)))
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .user_agent(concat!("keyturn/", env!("CARGO_PKG_VERSION")));
    if !extra_roots.is_empty() {
        builder = builder.tls_certs_merge(extra_roots);
    }
    for (host, ip) in &net.resolve {
        // reqwest ignores this port: the URL's port is used.
        builder = builder.resolve(host, std::net::SocketAddr::new(*ip, 443));
    }
    builder.build().map_err(|e| SetupError::Http(e.to_string()))
}

/// Like [`client_options`], with the SDK's retry budget from `[network]`.
pub fn client_options_for(
    http: &reqwest::Client,
    authority_host: Option<&str>,
    net: &NetworkConfig,
) -> ClientOptions {
    let mut options = client_options(http, authority_host);
    options.retry =
        azure_core::http::RetryOptions::exponential(azure_core::http::ExponentialRetryOptions {
            max_retries: net.sdk_retries,
            max_total_elapsed: azure_core::time::Duration::try_from(net.sdk_retry_budget)
                .unwrap_or(azure_core::time::Duration::seconds(60)),
            ..Default::default()
        });
    options
}

/// `azure_core` client options that send through `http` and use `authority_host`.
pub fn client_options(http: &reqwest::Client, authority_host: Option<&str>) -> ClientOptions {
    let mut options = ClientOptions {
        transport: Some(Transport::new(Arc::new(crate::metrics::Instrumented(
            http.clone(),
        )))),
        ..Default::default()
    };
    if let Some(host) = authority_host {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = host.trim_end_matches('/').to_owned();
        options.cloud = Some(Arc::new(CloudConfiguration::Custom(custom)));
    }
    options
}

/// An error and its causes on one line (the SDK's and reqwest's `Display` hide the cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        cur = c.source();
    }
    s
}

/// Reads a client secret from where the identity says it is.
pub fn read_client_secret(name: &str, id: &IdentityConfig) -> Result<Secret, SetupError> {
    let err = |detail: String| SetupError::Identity {
        identity: name.to_owned(),
        detail,
    };
    let value = if let Some(v) = &id.client_secret {
        v.clone()
    } else if let Some(f) = &id.client_secret_file {
        std::fs::read_to_string(f).map_err(|e| {
            err(format!(
                "cannot read client_secret_file {}: {e}",
                f.display()
            ))
        })?
    } else if let Some(c) = &id.client_secret_credential {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
            err(format!("client_secret_credential {c:?} needs $CREDENTIALS_DIRECTORY (systemd LoadCredential=); it is not set"))
        })?;
        let path = PathBuf::from(dir).join(c);
        std::fs::read_to_string(&path)
            .map_err(|e| err(format!("cannot read credential {}: {e}", path.display())))?
    } else if let Some(var) = &id.client_secret_env {
        std::env::var(var).map_err(|_| err(format!("environment variable {var} is not set")))?
    } else {
        return Err(err("no client secret source is configured".into()));
    };
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(err("the client secret is empty".into()));
    }
    Ok(Secret::new(value))
}

/// Builds the `azure_identity` credential for an identity. Build one per identity and
/// share it: it caches tokens.
pub fn credential(
    name: &str,
    id: &IdentityConfig,
    http: &reqwest::Client,
    net: &NetworkConfig,
) -> Result<Arc<dyn TokenCredential>, SetupError> {
    let err = |detail: String| SetupError::Identity {
        identity: name.to_owned(),
        detail,
    };
    let options = client_options_for(http, id.authority_host.as_deref(), net);
    let tenant = id.tenant_id.clone().unwrap_or_default();
    let client_id = id.client_id.clone().unwrap_or_default();
    let cred: Arc<dyn TokenCredential> = match id.kind.as_str() {
        "client_secret" => azure_identity::ClientSecretCredential::new(
            &tenant,
            client_id,
            read_client_secret(name, id)?,
            Some(azure_identity::ClientSecretCredentialOptions {
                client_options: options,
            }),
        )
        .map_err(|e| err(e.to_string()))?,
        "client_certificate" => {
            let path = id.certificate_file.clone().unwrap_or_default();
            let bytes = std::fs::read(&path).map_err(|e| {
                err(format!(
                    "cannot read certificate_file {}: {e}",
                    path.display()
                ))
            })?;
            azure_identity::ClientCertificateCredential::new(
                tenant,
                client_id,
                bytes.into(),
                Some(azure_identity::ClientCertificateCredentialOptions {
                    client_options: options,
                    ..Default::default()
                }),
            )
            .map_err(|e| err(e.to_string()))?
        }
        "workload_identity" => azure_identity::WorkloadIdentityCredential::new(Some(
            azure_identity::WorkloadIdentityCredentialOptions {
                credential_options: azure_identity::ClientAssertionCredentialOptions {
                    client_options: options,
                },
                client_id: Some(client_id),
                tenant_id: Some(tenant),
                token_file_path: id.token_file.clone(),
            },
        ))
        .map_err(|e| err(e.to_string()))?,
        "managed_identity" => azure_identity::ManagedIdentityCredential::new(Some(
            azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: id
                    .client_id
                    .clone()
                    .map(azure_identity::UserAssignedId::ClientId),
                client_options: options,
            },
        ))
        .map_err(|e| err(e.to_string()))?,
        "azure_cli" => azure_identity::AzureCliCredential::new(Some(
            azure_identity::AzureCliCredentialOptions {
                tenant_id: id.tenant_id.clone(),
                ..Default::default()
            },
        ))
        .map_err(|e| err(e.to_string()))?,
        other => return Err(err(format!("unknown kind {other:?}"))),
    };
    Ok(cred)
}
