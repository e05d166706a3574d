//! [`Directory`] on Microsoft Graph (`reqwest`) and the Entra token endpoint (ROPC verify).
//!
//! This file holds [`GraphDirectory`], the password reset and the user read; `verify` the
//! verify sign-in (ROPC) and the app it runs as ([`RopcClient`]); `provision` what
//! `keyturn provision` asks Graph (users, role assignments) as [`GraphEntra`]; `lifecycle`
//! what `keyturn retire` asks (disable, delete).

mod lifecycle;
mod provision;
mod verify;

pub(crate) use provision::GraphEntra;

pub use verify::{RopcAuth, RopcClient, VERIFY_SCOPE};

use crate::directory::{Applied, Directory, DirectoryError, UserInfo, Verified};
use crate::password::Password;
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Largest answer body keyturn reads from Graph or Entra (a bigger one is an error).
const MAX_BODY: usize = 256 * 1024;

/// The default Graph scope (the global cloud's Graph).
pub(crate) const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

pub use crate::directory::GRAPH_APP_ID;

/// Microsoft Graph's own hosts: the global cloud and the national clouds (US Government L4
/// and L5 (DoD), China operated by 21Vianet). Each accepts tokens for its own resource only.
pub(crate) const GRAPH_HOSTS: &[&str] = &[
    "graph.microsoft.com",
    "graph.microsoft.us",
    "dod-graph.microsoft.us",
    "microsoftgraph.chinacloudapi.cn",
];

/// The scope of Graph tokens for the Graph at `base`: `https://<host>/.default` when `base`
/// is one of Microsoft's Graph endpoints ([`GRAPH_HOSTS`]), so that a sovereign cloud's
/// `graph_base` brings its own scope; [`GRAPH_SCOPE`] for any other host (the emulator, a
/// proxy in front of the global Graph). An identity's `graph_scope` overrides both.
pub fn graph_scope(base: &str) -> String {
    url::Url::parse(base.trim())
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.trim_end_matches('.').to_ascii_lowercase();
            GRAPH_HOSTS
                .contains(&host.as_str())
                .then(|| format!("https://{host}/.default"))
        })
        .unwrap_or_else(|| GRAPH_SCOPE.to_owned())
}

/// One tenant's Graph, through one app identity.
pub(crate) struct GraphDirectory {
    /// The shared client, and the observer each request is told to.
    http: super::Http,
    credential: Arc<dyn TokenCredential>,
    /// e.g. `https://graph.microsoft.com` (no trailing slash, no `/v1.0`).
    base: String,
    scope: String,
    /// For ROPC verify: `{authority}/{tenant}/oauth2/v2.0/token`.
    token_url: String,
    /// The app that signs the user in (ROPC) and how it authenticates.
    verify: RopcClient,
    /// The tenant, for per-tenant concurrency.
    tenant_id: String,
}

/// Settings for [`GraphDirectory::new`].
pub(crate) struct GraphSettings {
    /// Graph base URL, default `https://graph.microsoft.com`.
    pub base: String,
    /// Scope for Graph tokens, default [`GRAPH_SCOPE`].
    pub scope: String,
    /// The user's tenant.
    pub tenant_id: String,
    /// The app the verify sign-in runs as.
    pub verify: RopcClient,
}

/// The body of a password reset (`PATCH /users/{id}`).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PasswordPatch<'a> {
    password_profile: PasswordProfile<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PasswordProfile<'a> {
    password: &'a str,
    force_change_password_next_sign_in: bool,
    force_change_password_next_sign_in_with_mfa: bool,
}

#[derive(Deserialize)]
struct GraphErrorBody {
    error: GraphError,
}

#[derive(Deserialize)]
struct GraphError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default, rename = "innerError")]
    inner: Option<GraphInner>,
}

#[derive(Deserialize)]
struct GraphInner {
    #[serde(rename = "request-id")]
    request_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphUser {
    id: String,
    #[serde(default)]
    user_principal_name: String,
    account_enabled: Option<bool>,
    #[serde(default)]
    on_premises_sync_enabled: Option<bool>,
    last_password_change_date_time: Option<String>,
}

impl GraphDirectory {
    /// Sends a write on `user` that Graph answers with 204 No Content (a PATCH, a DELETE):
    /// the answer's headers on 204; otherwise the error its status and body say (any other
    /// status, 2xx included, is not Graph's answer to a write).
    pub(super) async fn send_write(
        &self,
        user: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::header::HeaderMap, DirectoryError> {
        let resp = request
            .send()
            .timed(&self.http)
            .await
            .map_err(|e| Self::transport_error(user, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if status == 204 {
            return Ok(headers);
        }
        let body = read_capped(resp).await.unwrap_or_default();
        Err(Self::answer_error(user, status, &headers, &body, true))
    }

    /// A directory for one tenant.
    pub fn new(http: super::Http, credential: Arc<dyn TokenCredential>, s: GraphSettings) -> Self {
        GraphDirectory {
            http,
            credential,
            base: s.base.trim_end_matches('/').to_owned(),
            scope: s.scope,
            token_url: format!(
                "{}/{}/oauth2/v2.0/token",
                s.verify.authority_host.trim_end_matches('/'),
                s.verify.tenant_id
            ),
            verify: s.verify,
            tenant_id: s.tenant_id,
        }
    }

    fn user_url(&self, user: &str) -> String {
        let encoded: String = url::form_urlencoded::byte_serialize(user.as_bytes()).collect();
        format!("{}/v1.0/users/{}", self.base, encoded.replace('+', "%20"))
    }

    async fn token(&self, user: &str) -> Result<String, DirectoryError> {
        self.credential
            .get_token(&[self.scope.as_str()], None)
            .await
            .map(|t| t.token.secret().to_owned())
            .map_err(|e| DirectoryError::NotSent {
                user: user.to_owned(),
                detail: format!("no Graph token: {}", super::error_chain(&e)),
            })
    }

    /// Turns a non-success Graph answer into a directory error.
    fn answer_error(
        user: &str,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
        write: bool,
    ) -> DirectoryError {
        let header_id = headers
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| super::bounded(v, None, super::MAX_CODE_CHARS));
        let parsed: Option<GraphErrorBody> = serde_json::from_slice(body)
            .ok()
            .filter(|b: &GraphErrorBody| !b.error.code.is_empty());
        // A refusal is definite only when Graph itself says so, with its error body; the same
        // status from something in between (an HTML page) leaves the outcome unknown.
        let from_graph = parsed.is_some();
        let (code, message, request_id) = match parsed {
            // Graph's own error answer: its code and message, bounded.
            Some(b) => (
                super::bounded(&b.error.code, None, super::MAX_CODE_CHARS),
                super::bounded(&b.error.message, None, super::MAX_MESSAGE_CHARS),
                b.error
                    .inner
                    .and_then(|i| i.request_id)
                    .map(|id| super::bounded(&id, None, super::MAX_CODE_CHARS))
                    .or(header_id),
            ),
            None => (
                format!("HTTP{status}"),
                "the answer had no Graph error body".into(),
                header_id,
            ),
        };
        let retry_after = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        match status {
            400 | 403 | 404 if from_graph => DirectoryError::Rejected {
                user: user.to_owned(),
                status,
                code,
                message,
                request_id,
            },
            401 if write => DirectoryError::NotSent {
                user: user.to_owned(),
                detail: format!(
                    "Graph refused the token (HTTP 401 {code}: {message}); check the identity"
                ),
            },
            _ => DirectoryError::Unknown {
                user: user.to_owned(),
                status: Some(status),
                detail: format!("HTTP {status} {code}: {message}"),
                request_id,
                retry_after,
            },
        }
    }

    fn transport_error(user: &str, e: &reqwest::Error) -> DirectoryError {
        if e.is_connect() {
            DirectoryError::NotSent {
                user: user.to_owned(),
                detail: format!("cannot connect: {}", error_chain(e)),
            }
        } else {
            DirectoryError::Unknown {
                user: user.to_owned(),
                status: None,
                detail: if e.is_timeout() {
                    "timed out".into()
                } else {
                    format!("connection lost: {}", error_chain(e))
                },
                request_id: None,
                retry_after: None,
            }
        }
    }
}

/// The error and its causes, one line (reqwest's Display alone hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Tells the client's observer of a request.
trait Timed {
    async fn timed(self, http: &super::Http) -> Result<reqwest::Response, reqwest::Error>;
}

impl<F: std::future::Future<Output = Result<reqwest::Response, reqwest::Error>>> Timed for F {
    async fn timed(self, http: &super::Http) -> Result<reqwest::Response, reqwest::Error> {
        let started = std::time::Instant::now();
        let r = self.await;
        let (service, status) = match &r {
            Ok(resp) => (super::service_of(resp.url()), Some(resp.status().as_u16())),
            Err(e) => (e.url().map(super::service_of).unwrap_or("other"), None),
        };
        http.observer.request(service, status, started.elapsed());
        if status == Some(429) {
            crate::observe::note_throttled();
        }
        r
    }
}

/// Reads at most [`MAX_BODY`] bytes of an answer.
async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(format!("the answer is larger than {MAX_BODY} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(error_chain(&e)),
        }
    }
}

#[async_trait]
impl Directory for GraphDirectory {
    async fn reset_password(
        &self,
        user: &str,
        password: &Password,
    ) -> Result<Applied, DirectoryError> {
        let token = self.token(user).await?;
        // Built in memory that is wiped once reqwest has sent it (not in a `serde_json::Value`,
        // whose strings would be freed unwiped).
        let body = super::zeroizing_bytes(|w| {
            serde_json::to_writer(
                w,
                &PasswordPatch {
                    password_profile: PasswordProfile {
                        password: password.expose(),
                        force_change_password_next_sign_in: false,
                        force_change_password_next_sign_in_with_mfa: false,
                    },
                },
            )
        })
        .map_err(|e| DirectoryError::NotSent {
            user: user.to_owned(),
            detail: format!("cannot build the request: {e}"),
        })?;
        // Only 204 is Graph's answer to a password PATCH. Any other 2xx (a proxy's page, a
        // captive portal) proves nothing: the outcome is unknown, and the same password is
        // sent again.
        let headers = self
            .send_write(
                user,
                self.http
                    .client
                    .patch(self.user_url(user))
                    .bearer_auth(token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body),
            )
            .await?;
        Ok(Applied {
            request_id: headers
                .get("request-id")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
        })
    }

    async fn user(&self, user: &str) -> Result<UserInfo, DirectoryError> {
        let token = self.token(user).await?;
        let resp = self
            .http
            .client
            .get(self.user_url(user))
            .query(&[(
                "$select",
                "id,userPrincipalName,accountEnabled,onPremisesSyncEnabled,lastPasswordChangeDateTime",
            )])
            .bearer_auth(token)
            .send()
            .timed(&self.http)
            .await
            .map_err(|e| Self::transport_error(user, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_capped(resp)
            .await
            .map_err(|detail| DirectoryError::Unknown {
                user: user.to_owned(),
                status: Some(status),
                detail,
                request_id: None,
                retry_after: None,
            })?;
        if status != 200 {
            return Err(Self::answer_error(user, status, &headers, &body, false));
        }
        let u: GraphUser = serde_json::from_slice(&body).map_err(|e| DirectoryError::Unknown {
            user: user.to_owned(),
            status: Some(status),
            detail: format!("Graph's user answer cannot be read: {e}"),
            request_id: None,
            retry_after: None,
        })?;
        let last =
            match u.last_password_change_date_time {
                Some(s) => Some(OffsetDateTime::parse(&s, &Rfc3339).map_err(|e| {
                    DirectoryError::Unknown {
                        user: user.to_owned(),
                        status: Some(status),
                        detail: format!("lastPasswordChangeDateTime {s:?} is not RFC 3339: {e}"),
                        request_id: None,
                        retry_after: None,
                    }
                })?),
                None => None,
            };
        Ok(UserInfo {
            id: u.id,
            user_principal_name: u.user_principal_name,
            account_enabled: u.account_enabled,
            on_premises_sync_enabled: u.on_premises_sync_enabled,
            last_password_change: last,
        })
    }

    async fn verify(&self, user: &str, password: &Password) -> Result<Verified, DirectoryError> {
        self.sign_in(user, password).await
    }

    fn tenant(&self) -> Option<&str> {
        Some(&self.tenant_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graph_scope_follows_a_sovereign_graph_base() {
        for (base, scope) in [
            ("https://graph.microsoft.com", GRAPH_SCOPE),
            (
                "https://graph.microsoft.us",
                "https://graph.microsoft.us/.default",
            ),
            (
                "https://Graph.Microsoft.US/",
                "https://graph.microsoft.us/.default",
            ),
            (
                "https://dod-graph.microsoft.us",
                "https://dod-graph.microsoft.us/.default",
            ),
            (
                "https://microsoftgraph.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn/.default",
            ),
            // Not Microsoft's Graph (the emulator, a proxy): the global Graph's scope.
            ("https://localhost:8443", GRAPH_SCOPE),
            ("not a url", GRAPH_SCOPE),
        ] {
            assert_eq!(graph_scope(base), scope, "{base}");
        }
    }
}
