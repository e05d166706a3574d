//! [`SecretStore`] on the official Key Vault SDK (`azure_security_keyvault_secrets`).

use crate::password::Password;
use crate::store::{
    ListPage, ListedSecret, NewVersion, SecretRecord, SecretStore, StoreError, Tags, Written,
    CONTENT_TYPE,
};
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::headers::{HeaderName, Headers};
use azure_core::http::pager::{PagerContinuation, PagerOptions};
use azure_security_keyvault_secrets::models::{
    Secret, SecretAttributes, SecretClientListSecretPropertiesOptions, SecretProperties,
    SetSecretParameters, UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{
    models::SecretClientUpdateSecretPropertiesOptions, ResourceExt, SecretClient,
    SecretClientOptions,
};
use futures::StreamExt as _;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroize;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");

/// One vault.
pub(crate) struct KeyVaultStore {
    client: SecretClient,
    vault: String,
}

impl KeyVaultStore {
    /// A store for the vault at `url`, authenticated by `credential`, sending through `http`.
    pub fn new(
        url: &str,
        credential: Arc<dyn TokenCredential>,
        http: &super::Http,
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
        map_error(&self.vault, e, None)
    }

    /// The secret bundle of an answer (what `into_model` does), then the answer's body is
    /// wiped: it holds the secret's value. The SDK's and the HTTP stack's own transient
    /// buffers (reqwest's chunks, TLS records) are out of reach.
    fn bundle(&self, response: azure_core::http::Response<Secret>) -> Result<Secret, StoreError> {
        let body: azure_core::Bytes = response.into_body().into();
        let secret = serde_json::from_slice::<Secret>(&body).map_err(|e| StoreError::BadAnswer {
            vault: self.vault.clone(),
            detail: unreadable_bundle(&e),
        });
        // Unique unless the SDK kept a reference; then it frees it unwiped.
        if let Ok(mut owned) = body.try_into_mut() {
            owned.as_mut().zeroize();
        }
        secret
    }
}

/// Why a secret bundle did not parse, without serde's own text: that quotes the offending
/// token (`invalid type: string "…"`), which in a bundle may be the secret's value or part
/// of it. The error's category and position are enough to find the fault in a capture.
fn unreadable_bundle(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "an I/O error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "JSON of the wrong shape",
        serde_json::error::Category::Eof => "JSON cut short",
    };
    format!(
        "the secret bundle cannot be read: {kind} at line {} column {}",
        e.line(),
        e.column()
    )
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

/// Maps an SDK error to what the protocol must do. Never includes a request body, and of
/// an answer's body only a Key Vault JSON error's code and message, bounded: an HTML page
/// from a proxy or WAF may echo the request (with the password being written), and may be
/// megabytes long. `secret` is the password the request carried, redacted wherever it
/// appears.
pub(crate) fn map_error(vault: &str, e: azure_core::Error, secret: Option<&str>) -> StoreError {
    use super::{bounded, MAX_CODE_CHARS, MAX_DETAIL_CHARS, MAX_MESSAGE_CHARS};
    let vault = vault.to_owned();
    match e.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let status = u16::from(*status);
            let headers = raw_response.as_ref().map(|r| r.headers().clone());
            let request_id = headers
                .as_ref()
                .and_then(request_id)
                .map(|id| bounded(&id, secret, MAX_CODE_CHARS));
            let raw_body: &[u8] = raw_response.as_ref().map_or(&[], |r| r.body().as_ref());
            // Only a JSON object with an `error` object is Key Vault's own error answer.
            let body: Option<serde_json::Value> = serde_json::from_slice(raw_body)
                .ok()
                .filter(|b: &serde_json::Value| b["error"].is_object());
            // azure_core falls back to the status number when the body has no code.
            let code = error_code
                .clone()
                .filter(|c| c.parse::<u16>().is_err())
                .or_else(|| {
                    body.as_ref()
                        .and_then(|b| b["error"]["code"].as_str().map(String::from))
                })
                .map(|c| bounded(&c, secret, MAX_CODE_CHARS))
                .unwrap_or_else(|| format!("HTTP{status}"));
            let inner = body.as_ref().and_then(|b| {
                b["error"]["innererror"]["code"]
                    .as_str()
                    .map(|c| bounded(c, secret, MAX_CODE_CHARS))
            });
            let service_message = match &body {
                Some(b) => b["error"]["message"]
                    .as_str()
                    .map(|m| bounded(m, secret, MAX_MESSAGE_CHARS))
                    .unwrap_or_else(|| "no message".into()),
                // Not Key Vault's answer: its body is never recorded, only its size and type.
                None => {
                    let content_type = headers
                        .as_ref()
                        .and_then(|h| {
                            h.get_optional_str(&HeaderName::from_static("content-type"))
                                .map(|t| bounded(t, secret, MAX_CODE_CHARS))
                        })
                        .unwrap_or_else(|| "no content type".into());
                    format!(
                        "the answer is not a Key Vault error: {} bytes of {content_type}, not recorded",
                        raw_body.len()
                    )
                }
            };
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
        kind => {
            // The SDK's own messages; an identity error may hold a token endpoint's answer.
            let message = bounded(&super::error_chain(&e), secret, MAX_DETAIL_CHARS);
            match kind {
                ErrorKind::Credential => StoreError::Auth {
                    vault,
                    detail: message,
                },
                ErrorKind::DataConversion => StoreError::BadAnswer {
                    vault,
                    detail: message,
                },
                _ => StoreError::Unavailable {
                    vault,
                    detail: message,
                    request_id: None,
                },
            }
        }
    }
}

/// `value` as a JSON request body held in memory that is wiped when the last reference to it
/// is dropped. The buffer is reserved at its worst-case size first, so that serializing
/// never reallocates (which would leave an unwiped copy behind in freed memory).
fn zeroizing_json<T: serde::Serialize>(
    value: &T,
) -> Result<azure_core::http::RequestContent<T>, serde_json::Error> {
    super::zeroizing_bytes(|buf| serde_json::to_writer(buf, value)).map(Into::into)
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
                let secret = self.bundle(response)?;
                record(&self.vault, secret).map(Some)
            }
            Err(e) => match self.map_err(e) {
                StoreError::Rejected { status: 404, .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn set(&self, name: &str, new: NewVersion<'_>) -> Result<Written, StoreError> {
        let password = new.value.expose();
        let mut parameters = SetSecretParameters {
            value: Some(password.to_owned()),
            content_type: Some(CONTENT_TYPE.to_owned()),
            tags: Some(new.tags.into_iter().collect()),
            secret_attributes: Some(SecretAttributes {
                enabled: Some(true),
                expires: new.expires,
                ..Default::default()
            }),
        };
        let body = zeroizing_json(&parameters).map_err(|e| StoreError::BadAnswer {
            vault: self.vault.clone(),
            detail: format!("cannot build the request: {e}"),
        });
        // The model's copy of the password is wiped now; the body is wiped when the SDK
        // drops its last reference to it.
        if let Some(v) = parameters.value.as_mut() {
            v.zeroize();
        }
        let response = self
            .client
            .set_secret(name, body?, None)
            .await
            .map_err(|e| {
                let mut err = map_error(&self.vault, e, Some(password));
                if let StoreError::Deleted { name: n, .. } = &mut err {
                    *n = name.to_owned();
                }
                err
            })?;
        let request_id = request_id(response.headers());
        // Key Vault answers with the secret bundle, value included: wipe that copy too.
        let mut secret = self.bundle(response)?;
        if let Some(v) = secret.value.as_mut() {
            v.zeroize();
        }
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

    /// `DELETE /secrets/{name}` through the SDK: a soft delete (the vault keeps the secret
    /// recoverable for its retention period). Key Vault answers with the deleted bundle,
    /// value included; its body is wiped unread.
    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        match self.client.delete_secret(name, None).await {
            Ok(response) => {
                let body: azure_core::Bytes = response.into_body().into();
                if let Ok(mut owned) = body.try_into_mut() {
                    owned.as_mut().zeroize();
                }
                Ok(true)
            }
            Err(e) => match self.map_err(e) {
                StoreError::Rejected { status: 404, .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    /// `GET /deletedsecrets/{name}` through the SDK; only the tags are read from the answer
    /// (which may hold the value: its body is wiped).
    async fn deleted_tags(&self, name: &str) -> Result<Option<Tags>, StoreError> {
        #[derive(serde::Deserialize)]
        struct TagsOnly {
            #[serde(default)]
            tags: Option<std::collections::HashMap<String, String>>,
        }
        match self.client.get_deleted_secret(name, None).await {
            Ok(response) => {
                let body: azure_core::Bytes = response.into_body().into();
                let parsed =
                    serde_json::from_slice::<TagsOnly>(&body).map_err(|e| StoreError::BadAnswer {
                        vault: self.vault.clone(),
                        detail: unreadable_bundle(&e),
                    });
                if let Ok(mut owned) = body.try_into_mut() {
                    owned.as_mut().zeroize();
                }
                Ok(Some(parsed?.tags.unwrap_or_default().into_iter().collect()))
            }
            Err(e) => match self.map_err(e) {
                StoreError::Rejected { status: 404, .. } => Ok(None),
                other => Err(other),
            },
        }
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

    /// One page of `GET /secrets` through the SDK's pager (`list_secret_properties`),
    /// resumed at `next` (the previous page's `nextLink`, which the pager gives back as
    /// its continuation). Key Vault sends up to 25 secrets a page (its default and its
    /// maximum for `maxresults`), each with tags and attributes and no value.
    async fn list_page(&self, next: Option<&str>) -> Result<ListPage, StoreError> {
        let continuation = match next {
            Some(link) => Some(PagerContinuation::Link(link.parse().map_err(|_| {
                StoreError::BadAnswer {
                    vault: self.vault.clone(),
                    detail: "the listing's nextLink is not a URL".into(),
                }
            })?)),
            None => None,
        };
        let options = SecretClientListSecretPropertiesOptions {
            method_options: PagerOptions {
                continuation,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut pages = self
            .client
            .list_secret_properties(Some(options))
            .map_err(|e| self.map_err(e))?
            .into_pages();
        let Some(page) = pages.next().await else {
            return Ok(ListPage::default());
        };
        let result = page
            .map_err(|e| self.map_err(e))?
            .into_model()
            .map_err(|e| self.map_err(e))?;
        let items = result
            .value
            .into_iter()
            .map(|p| listed(&self.vault, p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ListPage {
            items,
            next: pages.continuation().map(|c| c.to_string()),
        })
    }

    fn vault(&self) -> &str {
        &self.vault
    }
}

/// One item of a listing.
fn listed(vault: &str, p: SecretProperties) -> Result<ListedSecret, StoreError> {
    let name = p
        .resource_id()
        .map_err(|_| StoreError::BadAnswer {
            vault: vault.to_owned(),
            detail: "a listed secret has no readable id".into(),
        })?
        .name;
    let attributes = p.attributes.unwrap_or_default();
    Ok(ListedSecret {
        name,
        tags: p.tags.unwrap_or_default().into_iter().collect(),
        created: attributes.created,
        enabled: attributes.enabled.unwrap_or(true),
    })
}

/// Why a write probe failed: the set (no write access) or the delete after it (the probe was
/// written and stays).
#[derive(Debug)]
pub(crate) enum ProbeError {
    /// Setting the probe secret failed.
    Set(StoreError),
    /// The probe secret was set; deleting it failed.
    Delete(StoreError),
}

/// `keyturn doctor --write-probe`: sets the secret `name` in the vault at `url` to a value that
/// is not a password (content type `text/plain`), then deletes it. Key Vault keeps a deleted
/// secret (soft delete) until it is purged or its retention ends; the probe is not purged.
pub(crate) async fn write_probe(
    url: &str,
    credential: Arc<dyn TokenCredential>,
    http: &super::Http,
    net: &crate::config::NetworkConfig,
    name: &str,
) -> Result<(), ProbeError> {
    let store = KeyVaultStore::new(url, credential, http, net).map_err(ProbeError::Set)?;
    let parameters = SetSecretParameters {
        value: Some("keyturn doctor write probe (not a password)".to_owned()),
        content_type: Some("text/plain".to_owned()),
        tags: Some(
            [("keyturn-doctor-probe".to_owned(), "true".to_owned())]
                .into_iter()
                .collect(),
        ),
        secret_attributes: None,
    };
    let body = parameters
        .try_into()
        .map_err(|e| ProbeError::Set(store.map_err(e)))?;
    store
        .client
        .set_secret(name, body, None)
        .await
        .map_err(|e| ProbeError::Set(store.map_err(e)))?;
    store
        .client
        .delete_secret(name, None)
        .await
        .map_err(|e| ProbeError::Delete(store.map_err(e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::{RawResponse, StatusCode};

    /// The error the SDK makes of a non-JSON answer: its message is the whole body.
    fn sdk_error(status: u16, content_type: &str, body: &str) -> azure_core::Error {
        let mut headers = Headers::new();
        headers.insert("content-type", content_type.to_owned());
        headers.insert("x-ms-request-id", "rid-1".to_owned());
        let status = StatusCode::from(status);
        let raw = RawResponse::from_bytes(status, headers, body.as_bytes().to_vec());
        azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status,
                error_code: Some(u16::from(status).to_string()),
                raw_response: Some(Box::new(raw)),
            },
            format!("{status}: {body}"),
        )
    }

    #[test]
    fn an_html_page_echoing_the_password_is_not_recorded() {
        let password = "Pw-1234567890-secret!";
        let page = format!(
            "<html><body><h1>400 Bad Request</h1><pre>{{\"value\":\"{password}\"}}</pre></body></html>"
        );
        let err = map_error(
            "https://kv1.vault.azure.net/",
            sdk_error(400, "text/html", &page),
            Some(password),
        );
        let text = err.to_string();
        assert!(!text.contains(password), "{text}");
        assert!(!text.contains("<html>"), "{text}");
        assert!(text.contains("HTTP 400"), "{text}");
        assert!(text.contains("rid-1"), "{text}");
        assert!(text.contains("bytes of text/html, not recorded"), "{text}");
    }

    #[test]
    fn a_huge_body_gives_a_short_error() {
        let body = "x".repeat(4 * 1024 * 1024);
        for status in [400, 401, 404, 409, 500, 503] {
            let err = map_error(
                "https://kv1.vault.azure.net/",
                sdk_error(status, "text/plain", &body),
                None,
            );
            let text = err.to_string();
            assert!(text.len() < 600, "HTTP {status}: {} bytes", text.len());
        }
    }

    #[test]
    fn a_json_message_is_bounded_and_redacted() {
        let password = "Pw-abcdefghij-123!";
        let message = format!("the value {password} is bad; {}", "é".repeat(5000));
        let body = serde_json::json!({"error": {"code": "BadParameter", "message": message}});
        let mut headers = Headers::new();
        headers.insert("x-ms-request-id", "rid-2".to_owned());
        let raw = RawResponse::from_bytes(
            StatusCode::BadRequest,
            headers,
            serde_json::to_vec(&body).unwrap(),
        );
        let e = azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status: StatusCode::BadRequest,
                error_code: Some("BadParameter".into()),
                raw_response: Some(Box::new(raw)),
            },
            message.clone(),
        );
        let text = map_error("https://kv1.vault.azure.net/", e, Some(password)).to_string();
        assert!(!text.contains(password), "{text}");
        assert!(text.contains("BadParameter"), "{text}");
        assert!(text.contains("the value <redacted> is bad"), "{text}");
        assert!(text.chars().count() < 600, "{} chars", text.chars().count());
    }

    /// A bundle that does not parse is described by where and how, never by serde's text,
    /// which quotes the token it choked on: here the value itself.
    #[test]
    fn an_unreadable_bundle_does_not_quote_its_value() {
        // A value where a flag belongs: serde's text quotes it.
        let quoted =
            r#"{"value": "hunter2-Secret!", "attributes": {"enabled": "hunter2-Secret!"}}"#;
        let e = serde_json::from_str::<Secret>(quoted).unwrap_err();
        assert!(e.to_string().contains("hunter2"), "serde quotes it: {e}");
        for body in [
            quoted,
            r#"{"value": ["hunter2-Secret!"]}"#,
            r#"{"value": "hunter2-Secret!"#,
        ] {
            let e = serde_json::from_str::<Secret>(body).unwrap_err();
            let detail = unreadable_bundle(&e);
            assert!(!detail.contains("hunter2"), "{detail}");
            assert!(
                detail.starts_with("the secret bundle cannot be read: "),
                "{detail}"
            );
        }
    }
}
