//! The real adapters: Key Vault through the official `azure_security_keyvault_secrets`
//! SDK, Graph through `reqwest`, tokens through `azure_identity`. One `reqwest` client
//! (0.13, rustls) is shared by every Azure client, as `azure_core` 1.1 expects; it comes
//! as an [`Http`] with the [`Observer`] the wiring hands in, told of every request (the
//! SDK's through the transport it is handed, Graph's by the adapter).

pub mod assertion;
pub(crate) mod blob;
pub mod graph;
pub mod keyvault;

use crate::config::{IdentityConfig, IdentityKind, NetworkConfig, TlsConfig};
use crate::observe::Observer;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{AsyncRawResponse, ClientOptions, HttpClient, Request, Transport};
use std::path::PathBuf;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Why the Azure clients could not be built. Each `detail` is the text users see; the error
/// behind it, where there is one, is kept as the `source`.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read the CA file {path}: {detail}; check tls.extra_ca_files")]
    Ca {
        path: PathBuf,
        detail: String,
        #[source]
        source: Option<Cause>,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    #[error("identity {identity}: {detail}")]
    Identity {
        identity: String,
        detail: String,
        #[source]
        source: Option<Cause>,
    },
}

/// The error behind a [`SetupError`].
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync>;

impl SetupError {
    /// Identity `identity` cannot be used: `detail`, caused by `source` (its text, which
    /// `detail` should show, stays the same; the error itself is kept).
    pub fn identity(
        identity: &str,
        detail: String,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        SetupError::Identity {
            identity: identity.to_owned(),
            detail,
            source: Some(Box::new(source)),
        }
    }
}

/// The one HTTP client every Azure call goes through, and the observer it reports each
/// request to (the service's metrics, handed in by the wiring).
#[derive(Clone)]
pub struct Http {
    /// The shared `reqwest` client (its connection pool serves every account).
    pub client: reqwest::Client,
    /// Told the service, status and duration of every request.
    pub(crate) observer: Arc<dyn Observer>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Which Azure service a URL belongs to: `keyvault`, `graph`, `entra` or `other`.
pub(crate) fn service_of(url: &url::Url) -> &'static str {
    let path = url.path();
    if path.contains("/oauth2/")
        || path.starts_with("/msi/")
        || url.host_str() == Some("169.254.169.254")
    {
        "entra"
    } else if path.starts_with("/v1.0/") || path.starts_with("/beta/") {
        "graph"
    } else if path.starts_with("/secrets") || path.starts_with("/deletedsecrets") {
        "keyvault"
    } else {
        "other"
    }
}

/// The shared client as the SDK's transport, telling the observer of every request.
#[derive(Debug, Clone)]
struct Instrumented(Http);

#[async_trait::async_trait]
impl HttpClient for Instrumented {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let started = std::time::Instant::now();
        let result = self.0.client.execute_request(request).await;
        let status = result.as_ref().ok().map(|r| u16::from(r.status()));
        let service = service_of(request.url());
        self.0.observer.request(service, status, started.elapsed());
        if status == Some(429) {
            crate::observe::note_throttled();
        }
        result
    }
}

/// Builds the one HTTP client every Azure call goes through; each request is told to
/// `observer`.
pub fn http_client(
    tls: &TlsConfig,
    net: &NetworkConfig,
    observer: Arc<dyn Observer>,
) -> Result<Http, SetupError> {
    let mut extra = Vec::new();
    for path in &tls.extra_ca_files {
        let ca = |e: Cause| SetupError::Ca {
            path: path.clone(),
            detail: e.to_string(),
            source: Some(e),
        };
        let pem = std::fs::read(path).map_err(|e| ca(e.into()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca(e.into()))?;
        if certs.is_empty() {
            return Err(SetupError::Ca {
                path: path.clone(),
                detail: "no PEM certificate in the file".into(),
                source: None,
            });
        }
        extra.extend(certs);
    }
    http_client_with(extra, net, observer)
}

/// Like [`http_client`], with certificates already parsed.
pub(crate) fn http_client_with(
    extra_roots: Vec<reqwest::Certificate>,
    net: &NetworkConfig,
    observer: Arc<dyn Observer>,
) -> Result<Http, SetupError> {
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
    let client = builder.build().map_err(SetupError::Http)?;
    Ok(Http { client, observer })
}

/// Like [`client_options`], with the SDK's retry budget from `[network]`.
pub(crate) fn client_options_for(
    http: &Http,
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

/// `azure_core` client options that send through `http` (telling its observer of every
/// request) and use `authority_host`.
pub fn client_options(http: &Http, authority_host: Option<&str>) -> ClientOptions {
    let mut options = ClientOptions {
        transport: Some(Transport::new(Arc::new(Instrumented(http.clone())))),
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
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
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

/// Longest text keyturn keeps from a service's error answer, in characters.
pub(crate) const MAX_MESSAGE_CHARS: usize = 256;

/// Longest error code or request id keyturn keeps from an answer, in characters.
pub(crate) const MAX_CODE_CHARS: usize = 64;

/// Longest error chain (the SDK's message and its causes) keyturn keeps, in characters.
pub(crate) const MAX_DETAIL_CHARS: usize = 512;

/// A service's error text made fit for the audit log, the journal and admin replies: every
/// occurrence of `secret` (the password the request carried) replaced by `<redacted>`,
/// control characters and runs of white space folded into one space, and cut after `max`
/// characters (on a character boundary) with `…` appended.
pub fn bounded(text: &str, secret: Option<&str>, max: usize) -> String {
    let scrubbed;
    let text = match secret {
        Some(s) if !s.is_empty() && text.contains(s) => {
            scrubbed = text.replace(s, "<redacted>");
            scrubbed.as_str()
        }
        _ => text,
    };
    let mut out = String::new();
    let mut kept = 0;
    let mut gap = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            gap = kept > 0;
            continue;
        }
        if kept + usize::from(gap) >= max {
            out.push('…');
            break;
        }
        if gap {
            out.push(' ');
            kept += 1;
            gap = false;
        }
        out.push(c);
        kept += 1;
    }
    out
}

/// A request body that carries a password or a client secret: `write` is run twice, once to
/// measure and once into a buffer of exactly that size (so it never reallocates and leaves
/// an unwiped copy in freed memory). The buffer is wiped when the last reference to the
/// returned bytes is dropped (by the HTTP client, after sending; by a retry policy, after
/// its last try).
pub(crate) fn zeroizing_bytes<E>(
    write: impl Fn(&mut dyn std::io::Write) -> Result<(), E>,
) -> Result<hyper::body::Bytes, E> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    write(&mut count)?;
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(count.0));
    write(&mut *buf)?;
    Ok(hyper::body::Bytes::from_owner(buf))
}

/// Reads a client secret from where the identity says it is, into memory that is wiped when
/// it is dropped (the file's text too).
pub(crate) fn read_client_secret(
    name: &str,
    id: &IdentityConfig,
) -> Result<Zeroizing<String>, SetupError> {
    let err = |detail: String| SetupError::Identity {
        identity: name.to_owned(),
        detail,
        source: None,
    };
    let value = if let Some(v) = &id.client_secret {
        Zeroizing::new(v.expose().to_owned())
    } else if let Some(f) = &id.client_secret_file {
        Zeroizing::new(std::fs::read_to_string(f).map_err(|e| {
            let detail = format!("cannot read client_secret_file {}: {e}", f.display());
            SetupError::identity(name, detail, e)
        })?)
    } else if let Some(c) = &id.client_secret_credential {
        let path = credential_path("client_secret_credential", c).map_err(err)?;
        Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
            let detail = format!("cannot read credential {}: {e}", path.display());
            SetupError::identity(name, detail, e)
        })?)
    } else if let Some(var) = &id.client_secret_env {
        // Not kept as a source: `VarError::NotUnicode` holds the variable's value, the secret.
        Zeroizing::new(
            std::env::var(var)
                .map_err(|_| err(format!("environment variable {var} is not set")))?,
        )
    } else {
        return Err(err("no client secret source is configured".into()));
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(err("the client secret is empty".into()));
    }
    Ok(Zeroizing::new(value.to_owned()))
}

/// Reads a `client_certificate` identity's PKCS#12 file (`certificate_file`, or the systemd
/// credential `certificate_credential`) into memory that is wiped when it is dropped.
pub fn read_certificate(name: &str, id: &IdentityConfig) -> Result<Zeroizing<Vec<u8>>, SetupError> {
    let err = |detail: String| SetupError::Identity {
        identity: name.to_owned(),
        detail,
        source: None,
    };
    let (what, path) = match (&id.certificate_credential, &id.certificate_file) {
        (Some(c), _) => (
            "credential",
            credential_path("certificate_credential", c).map_err(err)?,
        ),
        (None, f) => ("certificate_file", f.clone().unwrap_or_default()),
    };
    std::fs::read(&path).map(Zeroizing::new).map_err(|e| {
        SetupError::identity(
            name,
            format!("cannot read {what} {}: {e}", path.display()),
            e,
        )
    })
}

/// The app the verify sign-in (ROPC) of an account runs as: the identity `name` (the
/// account's, or its `verify_identity`), authenticated as its kind allows: its client secret,
/// or an assertion signed with its certificate (kinds without either get no client
/// authentication; `check-config` keeps them from verifying).
pub fn ropc_client(
    name: &str,
    id: &IdentityConfig,
    authority_host: String,
    tenant_id: String,
) -> Result<graph::RopcClient, SetupError> {
    let auth = match id.kind() {
        Some(IdentityKind::ClientSecret) => graph::RopcAuth::Secret(read_client_secret(name, id)?),
        Some(IdentityKind::ClientCertificate) => {
            let bytes = read_certificate(name, id)?;
            let signer = assertion::CertificateSigner::from_pkcs12(&bytes).map_err(|detail| {
                SetupError::Identity {
                    identity: name.to_owned(),
                    detail: format!(
                        "cannot use the certificate to sign the verify sign-in in: {detail}"
                    ),
                    source: None,
                }
            })?;
            graph::RopcAuth::Certificate(Arc::new(signer))
        }
        _ => graph::RopcAuth::None,
    };
    Ok(graph::RopcClient {
        authority_host,
        tenant_id: id.tenant_id.clone().unwrap_or(tenant_id),
        client_id: id.client_id.clone().unwrap_or_default(),
        auth,
    })
}

/// Where systemd put the credential `name` (`LoadCredential=name:…`).
fn credential_path(key: &str, name: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
        format!(
            "{key} {name:?} needs $CREDENTIALS_DIRECTORY (systemd LoadCredential=); it is not set"
        )
    })?;
    Ok(PathBuf::from(dir).join(name))
}

/// Builds the `azure_identity` credential for an identity. Build one per identity and
/// share it: it caches tokens.
pub fn credential(
    name: &str,
    id: &IdentityConfig,
    http: &Http,
    net: &NetworkConfig,
) -> Result<Arc<dyn TokenCredential>, SetupError> {
    let err = |detail: String| SetupError::Identity {
        identity: name.to_owned(),
        detail,
        source: None,
    };
    let sdk = |e: azure_core::Error| SetupError::identity(name, e.to_string(), e);
    let options = client_options_for(http, id.authority_host.as_deref(), net);
    let tenant = id.tenant_id.clone().unwrap_or_default();
    let client_id = id.client_id.clone().unwrap_or_default();
    let cred: Arc<dyn TokenCredential> = match id.kind.as_str() {
        "client_secret" => azure_identity::ClientSecretCredential::new(
            &tenant,
            client_id,
            // The SDK keeps its own copy (a plain `Cow<str>` it never wipes); ours is wiped
            // when this call returns.
            Secret::new(read_client_secret(name, id)?.as_str().to_owned()),
            Some(azure_identity::ClientSecretCredentialOptions {
                client_options: options,
            }),
        )
        .map_err(sdk)?,
        "client_certificate" => {
            // Moved into the SDK's `SecretBytes`, which keeps it for the credential's life.
            let bytes = read_certificate(name, id)?;
            azure_identity::ClientCertificateCredential::new(
                tenant,
                client_id,
                bytes.to_vec().into(),
                Some(azure_identity::ClientCertificateCredentialOptions {
                    client_options: options,
                    ..Default::default()
                }),
            )
            .map_err(sdk)?
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
        .map_err(sdk)?,
        "managed_identity" => azure_identity::ManagedIdentityCredential::new(Some(
            azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: id
                    .client_id
                    .clone()
                    .map(azure_identity::UserAssignedId::ClientId),
                client_options: options,
            },
        ))
        .map_err(sdk)?,
        "azure_cli" => azure_identity::AzureCliCredential::new(Some(
            azure_identity::AzureCliCredentialOptions {
                tenant_id: id.tenant_id.clone(),
                ..Default::default()
            },
        ))
        .map_err(sdk)?,
        other => return Err(err(format!("unknown kind {other:?}"))),
    };
    Ok(cred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_on_a_character_boundary_and_folds_white_space() {
        assert_eq!(bounded("a\n\t b\u{1b}[31mc", None, 100), "a b [31mc");
        assert_eq!(bounded("  lead", None, 100), "lead");
        let long = "é".repeat(1000);
        let cut = bounded(&long, None, 256);
        assert_eq!(cut.chars().count(), 257);
        assert!(cut.ends_with('…'));
        assert_eq!(
            bounded("say pw123 twice: pw123", Some("pw123"), 100),
            "say <redacted> twice: <redacted>"
        );
        assert_eq!(bounded("abc", Some(""), 100), "abc");
    }

    #[test]
    fn a_setup_error_keeps_its_cause_and_its_text() {
        let id = IdentityConfig {
            client_secret_file: Some("/nonexistent/keyturn-secret".into()),
            ..Default::default()
        };
        let e = read_client_secret("rotator", &id).unwrap_err();
        assert_eq!(
            e.to_string(),
            "identity rotator: cannot read client_secret_file /nonexistent/keyturn-secret: No such file or directory (os error 2)"
        );
        let source = std::error::Error::source(&e).expect("the io error is kept");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);

        let tls = TlsConfig {
            extra_ca_files: vec!["/nonexistent/ca.pem".into()],
        };
        let e = http_client(
            &tls,
            &NetworkConfig::default(),
            crate::observe::unobserved(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read the CA file /nonexistent/ca.pem: No such file or directory (os error 2); check tls.extra_ca_files"
        );
        assert!(std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()));
    }

    #[test]
    fn zeroizing_bytes_holds_exactly_what_was_written() {
        let b =
            zeroizing_bytes(|w| serde_json::to_writer(w, &serde_json::json!({"a": "b"}))).unwrap();
        assert_eq!(&b[..], br#"{"a":"b"}"#);
    }
}
