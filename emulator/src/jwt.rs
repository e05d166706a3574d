//! Access tokens: RS256 JWTs signed with the emulator's RSA key (published as a JWK at the
//! `jwks_uri` of the OpenID configuration), and unsigned peeking at client assertions.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The emulator's token-signing key: an RSA 2048 key pair and its key id.
#[derive(Debug)]
pub(crate) struct Signer {
    key: KeyPair,
    /// `kid` (and `x5t`) of issued tokens: base64url of the first 20 bytes of the SHA-256 of
    /// the public key, 27 characters like Entra's key ids.
    pub kid: String,
}

impl Signer {
    /// A new random key; `None` only if the crypto library fails.
    pub(crate) fn generate() -> Option<Signer> {
        KeyPair::generate(KeySize::Rsa2048).ok().map(Signer::new)
    }

    /// From PKCS#8 DER (as kept, base64, in the state file).
    pub(crate) fn from_pkcs8(der: &[u8]) -> Option<Signer> {
        KeyPair::from_pkcs8(der).ok().map(Signer::new)
    }

    fn new(key: KeyPair) -> Signer {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..20]);
        Signer { key, kid }
    }

    /// PKCS#8 DER of the private key.
    pub(crate) fn pkcs8(&self) -> Vec<u8> {
        self.key
            .as_der()
            .map(|d| d.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// The public key as an RFC 8017 `RSAPublicKey` (what [`verify`] takes).
    pub(crate) fn public_der(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// The public key as a JWK, in the shape of Entra's `jwks_uri` entries (no `x5c`).
    pub(crate) fn jwk(&self, issuer: Option<&str>) -> serde_json::Value {
        let pk = self.key.public_key();
        let mut k = serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": URL_SAFE_NO_PAD.encode(pk.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(pk.exponent().big_endian_without_leading_zero()),
        });
        if let Some(i) = issuer {
            k["issuer"] = serde_json::json!(i);
        }
        k
    }

    /// Signs claims (any serialisable payload) as an RS256 JWT.
    pub(crate) fn sign_json<T: Serialize>(&self, claims: &T) -> String {
        let header =
            serde_json::json!({"typ": "JWT", "alg": "RS256", "x5t": self.kid, "kid": self.kid});
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let input = format!("{header}.{payload}");
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        if self
            .key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &rng,
                input.as_bytes(),
                &mut sig,
            )
            .is_err()
        {
            // Signing with a valid in-memory key does not fail; an unsigned token is refused
            // by every verifier, which is the safe outcome if it ever did.
            sig.clear();
        }
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig))
    }
}

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
    /// Directory role template ids of the principal (as Entra puts them in `wids`); left out
    /// when the principal holds no role (as Entra leaves the claim out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
pub(crate) fn sign(key: &Signer, claims: &Claims) -> String {
    key.sign_json(claims)
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

/// Verifies signature (RS256 with `key`, an RFC 8017 `RSAPublicKey`), lifetime and audience.
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
    let alg_ok = URL_SAFE_NO_PAD
        .decode(parts[0])
        .ok()
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .is_some_and(|h| h.get("alg").and_then(|a| a.as_str()) == Some("RS256"));
    let input = format!("{}.{}", parts[0], parts[1]);
    let k = UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key);
    if !alg_ok || k.verify(input.as_bytes(), &sig).is_err() {
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
