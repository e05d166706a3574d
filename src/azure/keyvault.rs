//! [`SecretStore`] on the official Key Vault SDK (`azure_security_keyvault_secrets`).

use crate::password::Password;
use crate::store::{
    NewVersion, SecretRecord, SecretStore, StoreError, Tags, Written, CONTENT_TYPE,
};
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::headers::{HeaderName, Headers};
use azure_security_keyvault_secrets::models::{
    Secret, SecretAttributes, SetSecretParameters, UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{
    models::SecretClientUpdateSecretPropertiesOptions, ResourceExt, SecretClient,
    SecretClientOptions,
};
use std::sync::Arc;
use std::time::Duration;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");

/// One vault.
pub struct KeyVaultStore {
    client: SecretClient,
    vault: String,
}

impl KeyVaultStore {
    /// A store for the vault at `url`, authenticated by `credential`, sending through `http`.
    pub fn new(
        url: &str,
        credential: Arc<dyn TokenCredential>,
        http: &reqwest::Client,
        net: &crate::config::NetworkConfig,
    ) -> Result<Self, StoreError> {
        let options = SecretClientOptions {
            client_options: super::client_options_for(http, None, net),
            ..Default::default()
        };
        let client = SecretClient::new(url, credential, Some(options)).map_err(|e| {
            StoreError::Rejected {
                vault: url.to_owned(),
                status: 0,
                code: "InvalidVaultUrl".into(),
                message: e.to_string(),
                request_id: None,
            }
        })?;
        Ok(KeyVaultStore {
            client,
            vault: url.to_owned(),
        })
    }

    fn map_err(&self, e: azure_core::Error) -> StoreError {
        map_error(&self.vault, e)
    }
}

fn request_id(headers: &Headers) -> Option<String> {
    headers.get_optional_string(&REQUEST_ID)
}

fn retry_after(headers: &Headers) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = headers
            .get_optional_str(&HeaderName::from_static(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    headers
        .get_optional_str(&HeaderName::from_static("retry-after"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Maps an SDK error to what the protocol must do. Never includes a request body.
pub(crate) fn map_error(vault: &str, e: azure_core::Error) -> StoreError {
    let vault = vault.to_owned();
    let message = super::error_chain(&e);
    match e.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let status = u16::from(*status);
            let headers = raw_response.as_ref().map(|r| r.headers().clone());
            let request_id = headers.as_ref().and_then(request_id);
            let body: Option<serde_json::Value> = raw_response
                .as_ref()
                .and_then(|r| serde_json::from_slice(r.body()).ok());
            // azure_core falls back to the status number when the body has no code.
            let code = error_code
                .clone()
                .filter(|c| c.parse::<u16>().is_err())
                .or_else(|| {
                    body.as_ref()
                        .and_then(|b| b["error"]["code"].as_str().map(String::from))
                })
                .unwrap_or_else(|| format!("HTTP{status}"));
            let inner = body
                .as_ref()
                .and_then(|b| b["error"]["innererror"]["code"].as_str().map(String::from));
            let service_message = body
                .as_ref()
                .and_then(|b| b["error"]["message"].as_str().map(String::from))
                .unwrap_or(message);
            match status {
                429 => StoreError::Throttled {
                    vault,
                    retry_after: headers.as_ref().and_then(retry_after),
                    request_id,
                },
                401 => StoreError::Auth {
                    vault,
                    detail: format!(
                        "HTTP 401 {code}: {service_message} (request id {})",
                        request_id.as_deref().unwrap_or("none")
                    ),
                },
                403 => StoreError::Forbidden {
                    vault,
                    status,
                    code: inner.map(|i| format!("{code}/{i}")).unwrap_or(code),
                    request_id,
                },
                409 if inner.as_deref() == Some("ObjectIsDeletedButRecoverable") => {
                    StoreError::Deleted {
                        vault,
                        name: String::new(),
                        request_id,
                    }
                }
                100..=399 => StoreError::BadAnswer {
                    vault,
                    detail: format!("unexpected HTTP {status} answer"),
                },
                408 | 500..=599 => StoreError::Unavailable {
                    vault,
                    detail: format!("HTTP {status} {code}"),
                    request_id,
                },
                _ => StoreError::Rejected {
                    vault,
                    status,
                    code,
                    message: service_message,
                    request_id,
                },
            }
        }
        ErrorKind::Credential => StoreError::Auth {
            vault,
            detail: message,
        },
        ErrorKind::DataConversion => StoreError::BadAnswer {
            vault,
            detail: message,
        },
        ErrorKind::Connection | ErrorKind::Io | ErrorKind::Other => StoreError::Unavailable {
            vault,
            detail: message,
            request_id: None,
        },
        #[allow(unreachable_patterns)]
        _ => StoreError::Unavailable {
            vault,
            detail: message,
            request_id: None,
        },
    }
}

fn record(vault: &str, secret: Secret) -> Result<SecretRecord, StoreError> {
    let bad = |detail: &str| StoreError::BadAnswer {
        vault: vault.to_owned(),
        detail: detail.to_owned(),
    };
    let version = secret
        .resource_id()
        .ok()
        .and_then(|id| id.version)
        .ok_or_else(|| bad("the secret bundle has no version in its id"))?;
    let attributes = secret.attributes.unwrap_or_default();
    Ok(SecretRecord {
        version,
        value: Password::new(
            secret
                .value
                .ok_or_else(|| bad("the secret bundle has no value"))?,
        ),
        tags: secret.tags.unwrap_or_default().into_iter().collect(),
        created: attributes.created,
        enabled: attributes.enabled.unwrap_or(true),
        expires: attributes.expires,
    })
}

#[async_trait]
impl SecretStore for KeyVaultStore {
    async fn latest(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        match self.client.get_secret(name, None).await {
            Ok(response) => {
                let secret = response.into_model().map_err(|e| self.map_err(e))?;
                record(&self.vault, secret).map(Some)
            }
            Err(e) => match self.map_err(e) {
                StoreError::Rejected { status: 404, .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn set(&self, name: &str, new: NewVersion<'_>) -> Result<Written, StoreError> {
        let parameters = SetSecretParameters {
            value: Some(new.value.expose().to_owned()),
            content_type: Some(CONTENT_TYPE.to_owned()),
            tags: Some(new.tags.into_iter().collect()),
            secret_attributes: Some(SecretAttributes {
                enabled: Some(true),
                expires: new.expires,
                ..Default::default()
            }),
        };
        let body = parameters.try_into().map_err(|e| self.map_err(e))?;
        let response = self
            .client
            .set_secret(name, body, None)
            .await
            .map_err(|e| {
                let mut err = self.map_err(e);
                if let StoreError::Deleted { name: n, .. } = &mut err {
                    *n = name.to_owned();
                }
                err
            })?;
        let request_id = request_id(response.headers());
        let secret = response.into_model().map_err(|e| self.map_err(e))?;
        let version = secret
            .resource_id()
            .ok()
            .and_then(|id| id.version)
            .ok_or_else(|| StoreError::BadAnswer {
                vault: self.vault.clone(),
                detail: "the answer to a set has no version in its id".into(),
            })?;
        Ok(Written {
            version,
            request_id,
        })
    }

    async fn update_tags(&self, name: &str, version: &str, tags: Tags) -> Result<(), StoreError> {
        let parameters = UpdateSecretPropertiesParameters {
            tags: Some(tags.into_iter().collect()),
            ..Default::default()
        };
        let body = parameters.try_into().map_err(|e| self.map_err(e))?;
        let options = SecretClientUpdateSecretPropertiesOptions {
            secret_version: Some(version.to_owned()),
            ..Default::default()
        };
        self.client
            .update_secret_properties(name, body, Some(options))
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(())
    }

    fn vault(&self) -> &str {
        &self.vault
    }
}
