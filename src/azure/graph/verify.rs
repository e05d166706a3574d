//! The verify sign-in: the ROPC password grant at the tenant's Entra token endpoint, run as
//! the account's identity or its `verify_identity` ([`RopcClient`]), and what its answer
//! means ([`Verified`]).

use super::{read_capped, GraphDirectory, Timed};
use crate::directory::{DirectoryError, Verified};
use crate::password::Password;
use serde::Deserialize;
use std::sync::Arc;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// The delegated permissions of Microsoft Graph the verify sign-in (ROPC) asks: `openid`
/// signs the user in, `User.Read` (the user's own profile) names Graph as the token's
/// resource. Entra issues the token only if the app holds consent for both, tenant-wide or
/// for the user (Microsoft's "OAuth 2.0 Resource Owner Password Credentials" page; without it
/// AADSTS65001 `consent_required`); `deploy/azure/setup.sh` grants them. Whether `openid`
/// alone would do is *unconfirmed*; both are low-privilege permissions a user may consent to.
pub const VERIFY_SCOPE: &str = "openid User.Read";

/// The app the verify sign-in (ROPC) runs as: the account's identity, or its
/// `verify_identity`. A confidential client must authenticate the password grant as its kind
/// allows (a secret or a certificate's assertion; without either Entra answers AADSTS7000218).
pub struct RopcClient {
    /// Entra's authority host of that identity, e.g. `https://login.microsoftonline.com`.
    pub authority_host: String,
    /// The users' tenant (the sign-in goes to the tenant's own endpoint).
    pub tenant_id: String,
    /// Its client id.
    pub client_id: String,
    /// Its client authentication.
    pub auth: RopcAuth,
}

/// How the verify sign-in authenticates its app.
pub enum RopcAuth {
    /// None (a public client; `check-config` refuses verify for kinds that have no secret or
    /// certificate, so a confidential client never gets here).
    None,
    /// The app's client secret.
    Secret(Zeroizing<String>),
    /// An assertion signed with the app's certificate.
    Certificate(Arc<crate::azure::assertion::CertificateSigner>),
}

#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u32>,
}

impl GraphDirectory {
    /// [`Directory::verify`](crate::directory::Directory::verify): signs `user` in with
    /// `password`.
    pub(super) async fn sign_in(
        &self,
        user: &str,
        password: &Password,
    ) -> Result<Verified, DirectoryError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "password"),
            ("client_id", &self.verify.client_id),
            ("scope", VERIFY_SCOPE),
            ("username", user),
            ("password", password.expose()),
        ];
        let assertion;
        match &self.verify.auth {
            RopcAuth::None => {}
            RopcAuth::Secret(s) => form.push(("client_secret", s.as_str())),
            RopcAuth::Certificate(signer) => {
                let now = OffsetDateTime::now_utc().unix_timestamp();
                assertion = signer
                    .assertion(&self.verify.client_id, &self.token_url, now)
                    .map_err(|detail| DirectoryError::NotSent {
                        user: user.to_owned(),
                        detail,
                    })?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ));
                form.push(("client_assertion", assertion.as_str()));
            }
        }
        // The form carries the password (and the client secret): built in memory that is
        // wiped once reqwest has sent it.
        let body = crate::azure::zeroizing_bytes(|w| {
            for (i, (k, v)) in form.iter().enumerate() {
                if i > 0 {
                    w.write_all(b"&")?;
                }
                w.write_all(k.as_bytes())?;
                w.write_all(b"=")?;
                for part in url::form_urlencoded::byte_serialize(v.as_bytes()) {
                    w.write_all(part.as_bytes())?;
                }
            }
            Ok::<(), std::io::Error>(())
        })
        .map_err(|e| DirectoryError::NotSent {
            user: user.to_owned(),
            detail: format!("cannot build the request: {e}"),
        })?;
        let resp = self
            .http
            .client
            .post(&self.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .timed(&self.http)
            .await
            .map_err(|e| Self::transport_error(user, &e))?;
        let status = resp.status().as_u16();
        let body = read_capped(resp).await.unwrap_or_default();
        if status == 200 {
            return Ok(Verified::SignedIn);
        }
        let err: TokenError =
            serde_json::from_slice(&body).map_err(|_| DirectoryError::Unknown {
                user: user.to_owned(),
                status: Some(status),
                detail: "the token endpoint's answer has no OAuth error body".into(),
                request_id: None,
                retry_after: None,
            })?;
        let aadsts = err.error_codes.first().copied().unwrap_or(0);
        // Only the first sentences: Entra appends trace and correlation ids and a time.
        let first = err.error_description.lines().next().unwrap_or_default();
        let message = crate::azure::bounded(
            first.split(" Trace ID:").next().unwrap_or_default(),
            Some(password.expose()),
            crate::azure::MAX_MESSAGE_CHARS,
        );
        match aadsts {
            50076 | 50079 | 53003 | 530035 => Ok(Verified::BlockedByPolicy { aadsts, message }),
            65001 => Ok(Verified::ConsentMissing {
                client_id: self.verify.client_id.clone(),
                scope: VERIFY_SCOPE.to_owned(),
                message,
            }),
            0 => Err(DirectoryError::Unknown {
                user: user.to_owned(),
                status: Some(status),
                detail: format!("sign-in failed: {} {message}", err.error),
                request_id: None,
                retry_after: None,
            }),
            _ => Err(DirectoryError::SignIn {
                user: user.to_owned(),
                aadsts,
                message,
            }),
        }
    }
}
