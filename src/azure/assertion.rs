//! A certificate's client assertion, for the verify sign-in of a `client_certificate`
//! identity.
//!
//! The Azure SDK's `ClientCertificateCredential` signs its own assertions but only for the
//! client-credentials grant; the password grant (ROPC) needs one of its own. Its form is
//! Microsoft's "Microsoft identity platform application authentication certificate
//! credentials": a JWT signed RS256 by the certificate's key, header `x5t` = the base64url
//! SHA-1 thumbprint of the certificate, claims `aud` = the token endpoint, `iss` = `sub` = the
//! app's client id, `jti`, `nbf`, `exp` (the same as the SDK builds).

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use zeroize::Zeroizing;

/// How long an assertion is valid (the SDK uses 10 minutes too).
const LIFETIME_S: i64 = 600;

/// The key and thumbprint of an app's certificate.
pub struct CertificateSigner {
    key: PKey<Private>,
    /// Base64url SHA-1 thumbprint of the certificate (`x5t`).
    x5t: String,
}

impl std::fmt::Debug for CertificateSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateSigner")
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

/// Base64url without padding, as JWTs are written.
fn b64url(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

impl CertificateSigner {
    /// Opens a PKCS#12 file without a password (as `check-config` and the SDK do). The error
    /// says what is wrong with the file, never its content.
    pub fn from_pkcs12(der: &[u8]) -> Result<Self, String> {
        let parsed = openssl::pkcs12::Pkcs12::from_der(der)
            .and_then(|p| p.parse2(""))
            .map_err(|_| "not a PKCS#12 file that opens without a password".to_string())?;
        let (Some(key), Some(cert)) = (parsed.pkey, parsed.cert) else {
            return Err("the PKCS#12 file lacks the certificate or its private key".into());
        };
        if key.id() != openssl::pkey::Id::RSA {
            return Err("the certificate's key is not RSA".into());
        }
        let thumb = cert
            .digest(MessageDigest::sha1())
            .map_err(|e| format!("cannot hash the certificate: {e}"))?;
        Ok(CertificateSigner {
            key,
            x5t: b64url(&thumb),
        })
    }

    /// A signed assertion for `client_id` at the token endpoint `audience`, valid from `now`
    /// (Unix seconds) for ten minutes.
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: i64,
    ) -> Result<Zeroizing<String>, String> {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t});
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + LIFETIME_S,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), &self.key)
            .map_err(|e| format!("cannot sign the client assertion: {e}"))?;
        signer
            .update(signing_input.as_bytes())
            .map_err(|e| format!("cannot sign the client assertion: {e}"))?;
        let sig = signer
            .sign_to_vec()
            .map_err(|e| format!("cannot sign the client assertion: {e}"))?;
        Ok(Zeroizing::new(format!("{signing_input}.{}", b64url(&sig))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p12() -> Vec<u8> {
        use openssl::asn1::Asn1Time;
        use openssl::rsa::Rsa;
        use openssl::x509::{X509Name, X509};
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509Name::builder().unwrap();
        name.append_entry_by_text("CN", "keyturn-test").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        openssl::pkcs12::Pkcs12::builder()
            .name("keyturn")
            .pkey(&key)
            .cert(&cert)
            .build2("")
            .unwrap()
            .to_der()
            .unwrap()
    }

    fn decode(part: &str) -> serde_json::Value {
        let std = part.replace('-', "+").replace('_', "/");
        let padded = format!("{std}{}", "=".repeat((4 - std.len() % 4) % 4));
        serde_json::from_slice(&openssl::base64::decode_block(&padded).unwrap()).unwrap()
    }

    #[test]
    fn the_assertion_is_an_rs256_jwt_for_the_app_at_the_token_endpoint() {
        let signer = CertificateSigner::from_pkcs12(&p12()).unwrap();
        let aud = "https://login.microsoftonline.com/contoso/oauth2/v2.0/token";
        let jwt = signer.assertion("app-id", aud, 1_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode(parts[0]);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["x5t"].as_str().unwrap().len(), 27, "{header}");
        let claims = decode(parts[1]);
        assert_eq!(claims["aud"], aud);
        assert_eq!(claims["iss"], "app-id");
        assert_eq!(claims["sub"], "app-id");
        assert_eq!(claims["nbf"], 1_000);
        assert_eq!(claims["exp"], 1_600);
        assert!(!parts[2].is_empty());
    }

    #[test]
    fn a_file_that_is_not_pkcs12_is_refused_without_its_content() {
        let e = CertificateSigner::from_pkcs12(b"secret-looking bytes").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }
}
