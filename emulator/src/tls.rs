//! TLS: a throwaway CA and server certificate, or a given certificate and key; the rustls
//! server configuration (aws-lc-rs provider, HTTP/1.1 over ALPN).

use crate::Error;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;

/// Host names the generated server certificate covers.
pub const SERVER_NAMES: [&str; 6] = [
    "localhost",
    "127.0.0.1",
    "*.vault.azure.net",
    "*.westeurope-1.eventgrid.azure.net",
    "login.microsoftonline.com",
    "graph.microsoft.com",
];

/// What the listener needs.
pub(crate) struct TlsMaterial {
    pub config: Arc<ServerConfig>,
    /// PEM of the CA clients must trust.
    pub ca_pem: String,
}

fn tls_err(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |e| Error::Tls(format!("{what}: {e}"))
}

/// A throwaway CA and a server certificate for `names` signed by it, as PEM: (the CA, the
/// server certificate followed by the CA, the server's PKCS#8 key).
pub(crate) fn issue(names: &[&str]) -> Result<(String, String, String), Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(tls_err("CA parameters"))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "keyturn-emulator throwaway CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(tls_err("CA key"))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(tls_err("CA certificate"))?;

    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut leaf =
        CertificateParams::new(names).map_err(tls_err("server certificate parameters"))?;
    leaf.distinguished_name
        .push(DnType::CommonName, "keyturn-emulator");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let leaf_key = KeyPair::generate().map_err(tls_err("server key"))?;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .map_err(tls_err("server certificate"))?;
    Ok((
        ca_cert.pem(),
        format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
        leaf_key.serialize_pem(),
    ))
}

/// Generates a CA and a server certificate signed by it.
pub(crate) fn generate() -> Result<TlsMaterial, Error> {
    let (ca_pem, chain, key) = issue(&SERVER_NAMES)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(format!("server certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| Error::Tls(format!("server key: {e}")))?;
    Ok(TlsMaterial {
        config: server_config(chain, key)?,
        ca_pem,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a PEM certificate chain and key; the CA is `ca` or, without it, the certificate file.
pub(crate) fn from_files(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<TlsMaterial, Error> {
    let cert_pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(Error::Tls(format!(
            "{}: no PEM certificate found",
            cert.display()
        )));
    }
    let key_pem = read(key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            Error::Tls(format!("{}: no PEM private key found", key.display()))
        }
        e => Error::Tls(format!("{}: {e}", key.display())),
    })?;
    let ca_pem = match ca {
        Some(p) => String::from_utf8_lossy(&read(p)?).into_owned(),
        None => String::from_utf8_lossy(&cert_pem).into_owned(),
    };
    Ok(TlsMaterial {
        config: server_config(chain, key)?,
        ca_pem,
    })
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Tls(format!("certificate and key do not fit: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn load(cert: &str, key: &str) -> Result<TlsMaterial, Error> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&c, cert).expect("write");
        std::fs::write(&k, key).expect("write");
        from_files(&c, &k, None)
    }

    fn message(r: Result<TlsMaterial, Error>) -> String {
        match r {
            Ok(_) => panic!("loaded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn loads_a_pem_chain_and_key_in_any_order_of_sections() {
        let (cert, key) = pair();
        let m = load(&cert, &format!("{cert}{key}")).expect("loads");
        assert_eq!(m.ca_pem, cert);
    }

    #[test]
    fn names_the_file_without_a_certificate_or_key() {
        let (cert, key) = pair();
        let e = message(load(&key, &key));
        assert!(e.contains("cert.pem: no PEM certificate found"), "{e}");
        let e = message(load(&cert, &cert));
        assert!(e.contains("key.pem: no PEM private key found"), "{e}");
    }

    #[test]
    fn names_the_file_with_a_broken_section() {
        let (cert, key) = pair();
        let cut = &cert[..cert.len() / 2];
        let e = message(load(cut, &key));
        assert!(e.contains("cert.pem: "), "{e}");
        let e = message(load(
            &cert,
            "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
        ));
        assert!(e.contains("key.pem: "), "{e}");
    }
}
