//! Access tokens: HS256 JWTs signed with the emulator's key, and unsigned peeking at client
//! assertions.

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Claims of an issued access token (a subset of Entra's v1 access-token claims).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub tid: String,
    pub appid: String,
    pub oid: String,
    pub sub: String,
    /// `app` for client credentials and managed identity, `user` for the password grant.
    pub idtyp: String,
    /// App permissions (Graph application permissions).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Directory roles of the principal (names, where Entra puts template ids in `wids`).
    #[serde(default)]
    pub wids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    pub uti: String,
    pub ver: String,
}

/// Why a presented token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Not three base64url parts of JSON.
    Malformed,
    /// Not signed by this emulator.
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `aud` is not the service's.
    WrongAudience(String),
}

/// Signs claims with the emulator key.
pub(crate) fn sign(key: &[u8], claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256","kid":"keyturn-emulator"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let input = format!("{header}.{payload}");
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let sig = hmac::sign(&k, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// Decodes the payload of a JWT without checking anything.
pub(crate) fn peek(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let _header = parts.next()?;
    let payload = parts.next()?;
    parts.next()?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Normalises a resource or audience for comparison (no trailing slash, lower case).
pub(crate) fn norm_aud(a: &str) -> String {
    a.trim_end_matches('/').to_ascii_lowercase()
}

/// Verifies signature, lifetime and audience.
pub(crate) fn verify(
    key: &[u8],
    token: &str,
    expected_aud: &str,
    now: i64,
) -> Result<Claims, TokenError> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(TokenError::Malformed);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(parts[2])
        .map_err(|_| TokenError::Malformed)?;
    let payload = URL_SAFE_NO_PAD
        .decode(parts[1])
        .map_err(|_| TokenError::Malformed)?;
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let input = format!("{}.{}", parts[0], parts[1]);
    if hmac::verify(&k, input.as_bytes(), &sig).is_err() {
        // Distinguish garbage from a well-formed token signed by someone else.
        return if serde_json::from_slice::<serde_json::Value>(&payload).is_ok() {
            Err(TokenError::BadSignature)
        } else {
            Err(TokenError::Malformed)
        };
    }
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    if claims.nbf > now + 300 {
        return Err(TokenError::NotYetValid);
    }
    if norm_aud(&claims.aud) != norm_aud(expected_aud) {
        return Err(TokenError::WrongAudience(claims.aud));
    }
    Ok(claims)
}
