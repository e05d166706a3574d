//! [`Entra`] on Microsoft Graph v1.0 (`reqwest`): what `keyturn provision` asks, through the
//! provisioning identity: `GET /users/{id|upn}`, `POST /users`,
//! `GET|POST /roleManagement/directory/roleAssignments`, `DELETE …/roleAssignments/{id}`.
//!
//! Wire facts (Graph's "Create user" and "Create unifiedRoleAssignment" pages): `POST /users`
//! needs `accountEnabled`, `displayName`, `mailNickname`, `userPrincipalName` and
//! `passwordProfile`, answers 201 with the user; a role assignment takes `principalId`,
//! `roleDefinitionId` (a built-in role's template id) and `directoryScopeId` (`/`), answers
//! 201. A refusal is definite only with Graph's own error body (as for the password reset).
//! **Unsure** (`docs/lifecycle.md`, "Unconfirmed"): how long a new user takes to be readable
//! (replication) and the status of a duplicate assignment; the provisioning logic does not
//! depend on either (it reads again, or is rerun).

use super::{error_chain, read_capped, GraphErrorBody, Timed};
use crate::azure::{bounded, Http, MAX_CODE_CHARS, MAX_MESSAGE_CHARS};
use crate::provision::entra::{Assignment, Entra, EntraError, EntraUser, NewUser, Op};
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use serde::Deserialize;
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One tenant's Graph through the provisioning identity.
pub(crate) struct GraphEntra {
    http: Http,
    credential: Arc<dyn TokenCredential>,
    /// e.g. `https://graph.microsoft.com` (no trailing slash, no `/v1.0`).
    base: String,
    scope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphUser {
    id: String,
    #[serde(default)]
    user_principal_name: String,
    created_date_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphAssignment {
    id: String,
    role_definition_id: String,
    #[serde(default)]
    directory_scope_id: String,
}

#[derive(Deserialize)]
struct Listing<T> {
    value: Vec<T>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody<'a> {
    account_enabled: bool,
    display_name: &'a str,
    mail_nickname: &'a str,
    user_principal_name: &'a str,
    password_profile: ProfileBody<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ProfileBody<'a> {
    password: &'a str,
    force_change_password_next_sign_in: bool,
}

impl GraphEntra {
    /// Graph at `base` with tokens for `scope` from `credential`.
    pub(crate) fn new(
        http: Http,
        credential: Arc<dyn TokenCredential>,
        base: &str,
        scope: String,
    ) -> Self {
        GraphEntra {
            http,
            credential,
            base: base.trim().trim_end_matches('/').to_owned(),
            scope,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1.0/{path}", self.base)
    }

    async fn token(&self, op: Op) -> Result<String, EntraError> {
        self.credential
            .get_token(&[self.scope.as_str()], None)
            .await
            .map(|t| t.token.secret().to_owned())
            .map_err(|e| EntraError::NotSent {
                op,
                detail: format!(
                    "no Graph token for the provisioning identity: {}",
                    error_chain(&e)
                ),
            })
    }

    /// Sends `req`, reads the answer; `Ok((status, body))` for a success status.
    async fn send(
        &self,
        op: Op,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), EntraError> {
        let resp = req.send().timed(&self.http).await.map_err(|e| {
            if e.is_connect() {
                EntraError::NotSent {
                    op,
                    detail: format!("cannot connect: {}", error_chain(&e)),
                }
            } else {
                EntraError::Unknown {
                    op,
                    status: None,
                    detail: if e.is_timeout() {
                        "timed out".into()
                    } else {
                        format!("connection lost: {}", error_chain(&e))
                    },
                    request_id: None,
                }
            }
        })?;
        let status = resp.status().as_u16();
        let header_id = resp
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| bounded(v, None, MAX_CODE_CHARS));
        let body = read_capped(resp)
            .await
            .map_err(|detail| EntraError::Unknown {
                op,
                status: Some(status),
                detail,
                request_id: header_id.clone(),
            })?;
        if (200..300).contains(&status) {
            return Ok((status, body));
        }
        let parsed: Option<GraphErrorBody> = serde_json::from_slice(&body)
            .ok()
            .filter(|b: &GraphErrorBody| !b.error.code.is_empty());
        Err(match parsed {
            Some(b) if matches!(status, 400 | 403 | 404 | 409) => EntraError::Refused {
                op,
                status,
                code: bounded(&b.error.code, None, MAX_CODE_CHARS),
                message: bounded(&b.error.message, None, MAX_MESSAGE_CHARS),
                request_id: b
                    .error
                    .inner
                    .and_then(|i| i.request_id)
                    .map(|id| bounded(&id, None, MAX_CODE_CHARS))
                    .or(header_id),
            },
            Some(b) if status == 401 => EntraError::NotSent {
                op,
                detail: format!(
                    "Graph refused the provisioning identity's token (HTTP 401 {}: {})",
                    bounded(&b.error.code, None, MAX_CODE_CHARS),
                    bounded(&b.error.message, None, MAX_MESSAGE_CHARS)
                ),
            },
            b => EntraError::Unknown {
                op,
                status: Some(status),
                detail: match b {
                    Some(b) => format!(
                        "HTTP {status} {}: {}",
                        bounded(&b.error.code, None, MAX_CODE_CHARS),
                        bounded(&b.error.message, None, MAX_MESSAGE_CHARS)
                    ),
                    None => format!("HTTP {status} without a Graph error body"),
                },
                request_id: header_id,
            },
        })
    }

    fn parse<T: serde::de::DeserializeOwned>(
        op: Op,
        status: u16,
        body: &[u8],
    ) -> Result<T, EntraError> {
        serde_json::from_slice(body).map_err(|e| EntraError::Unknown {
            op,
            status: Some(status),
            detail: format!("Graph's answer cannot be read: {e}"),
            request_id: None,
        })
    }

    fn user_of(op: Op, status: u16, u: GraphUser) -> Result<EntraUser, EntraError> {
        let created = match u.created_date_time {
            Some(s) => {
                Some(
                    OffsetDateTime::parse(&s, &Rfc3339).map_err(|e| EntraError::Unknown {
                        op,
                        status: Some(status),
                        detail: format!("createdDateTime {s:?} is not RFC 3339: {e}"),
                        request_id: None,
                    })?,
                )
            }
            None => None,
        };
        Ok(EntraUser {
            id: u.id,
            user_principal_name: u.user_principal_name,
            created,
        })
    }
}

/// `'` doubled, for an OData string literal.
fn odata(s: &str) -> String {
    s.replace('\'', "''")
}

#[async_trait]
impl Entra for GraphEntra {
    async fn find_user(&self, user: &str) -> Result<Option<EntraUser>, EntraError> {
        let op = Op::ReadUser;
        let token = self.token(op).await?;
        let encoded: String = url::form_urlencoded::byte_serialize(user.as_bytes()).collect();
        let req = self
            .http
            .client
            .get(self.url(&format!("users/{}", encoded.replace('+', "%20"))))
            .query(&[("$select", "id,userPrincipalName,createdDateTime")])
            .bearer_auth(token);
        match self.send(op, req).await {
            Ok((status, body)) => {
                let u: GraphUser = Self::parse(op, status, &body)?;
                Self::user_of(op, status, u).map(Some)
            }
            Err(EntraError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create_user(&self, new: &NewUser<'_>) -> Result<EntraUser, EntraError> {
        let op = Op::CreateUser;
        let token = self.token(op).await?;
        // Built in memory that is wiped once reqwest has sent it.
        let body = crate::azure::zeroizing_bytes(|w| {
            serde_json::to_writer(
                w,
                &CreateBody {
                    account_enabled: true,
                    display_name: new.display_name,
                    mail_nickname: new.mail_nickname,
                    user_principal_name: new.user_principal_name,
                    password_profile: ProfileBody {
                        password: new.password.expose(),
                        force_change_password_next_sign_in: false,
                    },
                },
            )
        })
        .map_err(|e| EntraError::NotSent {
            op,
            detail: format!("cannot build the request: {e}"),
        })?;
        let req = self
            .http
            .client
            .post(self.url("users"))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let (status, body) = self.send(op, req).await?;
        let u: GraphUser = Self::parse(op, status, &body)?;
        Self::user_of(op, status, u)
    }

    async fn role_assignments(&self, principal: &str) -> Result<Vec<Assignment>, EntraError> {
        let op = Op::ListRoles;
        let token = self.token(op).await?;
        let req = self
            .http
            .client
            .get(self.url("roleManagement/directory/roleAssignments"))
            .query(&[("$filter", format!("principalId eq '{}'", odata(principal)))])
            .bearer_auth(token);
        let (status, body) = self.send(op, req).await?;
        let list: Listing<GraphAssignment> = Self::parse(op, status, &body)?;
        Ok(list
            .value
            .into_iter()
            .map(|a| Assignment {
                id: a.id,
                role_id: a.role_definition_id.to_ascii_lowercase(),
                scope: a.directory_scope_id,
            })
            .collect())
    }

    async fn assign_role(&self, principal: &str, role_id: &str) -> Result<Assignment, EntraError> {
        let op = Op::AssignRole;
        let token = self.token(op).await?;
        let req = self
            .http
            .client
            .post(self.url("roleManagement/directory/roleAssignments"))
            .bearer_auth(token)
            .json(&serde_json::json!({
                "principalId": principal,
                "roleDefinitionId": role_id,
                "directoryScopeId": "/",
            }));
        let (status, body) = self.send(op, req).await?;
        let a: GraphAssignment = Self::parse(op, status, &body)?;
        Ok(Assignment {
            id: a.id,
            role_id: a.role_definition_id.to_ascii_lowercase(),
            scope: a.directory_scope_id,
        })
    }

    async fn remove_assignment(&self, id: &str) -> Result<(), EntraError> {
        let op = Op::RemoveRole;
        let token = self.token(op).await?;
        let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let req = self
            .http
            .client
            .delete(self.url(&format!(
                "roleManagement/directory/roleAssignments/{}",
                encoded.replace('+', "%20")
            )))
            .bearer_auth(token);
        self.send(op, req).await.map(|_| ())
    }
}
