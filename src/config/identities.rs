//! `[identities]`: each kind and what it needs, the credential files (owner and mode, the
//! certificate opened as the SDK opens it, `$CREDENTIALS_DIRECTORY`), the token file, the form
//! of Entra ids and `verify_identity`. Reports through `validate`'s collector.

use super::accounts::check_https_ok;
use super::model::{Config, IdentityConfig, IdentityKind};
use std::path::{Path, PathBuf};

/// `[identities]`: each one's kind and what that kind needs.
pub(super) fn validate_identities(config: &Config, p: &mut impl FnMut(String, String)) {
    for (name, id) in &config.identities {
        let key = |k: &str| format!("identities.{name}.{k}");
        let Some(kind) = id.kind() else {
            p(
                key("kind"),
                format!(
                    "{:?} is not a kind; use one of {}",
                    id.kind,
                    IdentityKind::NAMES.join(", ")
                ),
            );
            continue;
        };
        let needs_app = matches!(
            kind,
            IdentityKind::ClientSecret
                | IdentityKind::ClientCertificate
                | IdentityKind::WorkloadIdentity
        );
        if needs_app {
            for (k, v) in [("tenant_id", &id.tenant_id), ("client_id", &id.client_id)] {
                if v.as_deref().is_none_or(str::is_empty) {
                    p(key(k), format!("is required for kind {:?}", id.kind));
                }
            }
        }
        if signs_in_at_entra(id) {
            check_entra_ids(id, &key, p);
        }
        if kind == IdentityKind::WorkloadIdentity {
            check_token_file(id, &key("token_file"), p);
        }
        if kind == IdentityKind::ClientSecret {
            let sources = [
                id.client_secret_file.is_some(),
                id.client_secret_credential.is_some(),
                id.client_secret_env.is_some(),
                id.client_secret.is_some(),
            ];
            match sources.iter().filter(|s| **s).count() {
                0 => p(key("client_secret_file"), "a client_secret identity needs one of client_secret_file, client_secret_credential (systemd LoadCredential=), client_secret_env".into()),
                1 => {}
                _ => p(key("client_secret_file"), "give only one of client_secret_file, client_secret_credential, client_secret_env, client_secret".into()),
            }
            if id.client_secret.is_some() && !id.allow_inline_secret {
                p(key("client_secret"), "a secret inline in the config file is refused: put it in a file (client_secret_file) or a systemd credential, or set allow_inline_secret = true for a demo".into());
            }
            if let Some(f) = &id.client_secret_file {
                check_secret_file(f, &key("client_secret_file"), p);
            }
            if let Some(c) = &id.client_secret_credential {
                if let Some(path) = credential_file(c, &key("client_secret_credential"), p) {
                    if let Err(e) = std::fs::File::open(&path) {
                        p(
                            key("client_secret_credential"),
                            format!("cannot read the credential {}: {e}; check LoadCredential={c}:… in the unit", path.display()),
                        );
                    }
                }
            }
            if let Some(var) = &id.client_secret_env {
                if std::env::var_os(var).is_none() {
                    p(
                        key("client_secret_env"),
                        format!("environment variable {var} is not set"),
                    );
                }
            }
        }
        if kind == IdentityKind::ClientCertificate {
            match (&id.certificate_file, &id.certificate_credential) {
                (None, None) => p(
                    key("certificate_file"),
                    "kind \"client_certificate\" needs certificate_file or certificate_credential (systemd LoadCredential=)".into(),
                ),
                (Some(_), Some(_)) => p(
                    key("certificate_file"),
                    "give only one of certificate_file, certificate_credential".into(),
                ),
                (Some(f), None) => {
                    check_secret_file(f, &key("certificate_file"), p);
                    if f.is_file() {
                        check_certificate(f, &key("certificate_file"), p);
                    }
                }
                (None, Some(c)) => {
                    let k = key("certificate_credential");
                    if let Some(path) = credential_file(c, &k, p) {
                        check_certificate(&path, &k, p);
                    }
                }
            }
        }
        if let Some(text) = &id.secret_expires {
            if kind != IdentityKind::ClientSecret {
                p(
                    key("secret_expires"),
                    format!("is for kind \"client_secret\" only (this identity is {:?}); a certificate's expiry is read from the certificate", id.kind),
                );
            } else if super::expiry::parse_expiry(text).is_none() {
                p(
                    key("secret_expires"),
                    format!("{text:?} is not a date: write the secret's end date as the app registration shows it, e.g. \"2027-06-01\" (or an RFC 3339 time)"),
                );
            }
        }
        if let Some(scope) = &id.graph_scope {
            if !scope.ends_with("/.default") || !check_https_ok(scope) {
                p(
                    key("graph_scope"),
                    format!("{scope:?} must be Graph's resource with /.default, e.g. \"https://graph.microsoft.us/.default\" (an app's token asks for its granted permissions that way)"),
                );
            }
        }
        for (k, v) in [
            ("authority_host", &id.authority_host),
            ("graph_base", &id.graph_base),
        ] {
            if let Some(v) = v {
                check_https(v, &key(k), p);
            }
        }
        if let Some(v) = &id.verify_identity {
            check_verify_identity(config, name, id, v, &key("verify_identity"), p);
        }
    }
}

/// `identities.N.verify_identity`: another identity, of a kind that can sign a user in, in
/// the same tenant (the verify sign-in goes to the user's tenant as that identity's app).
fn check_verify_identity(
    config: &Config,
    name: &str,
    id: &IdentityConfig,
    v: &str,
    key: &str,
    p: &mut impl FnMut(String, String),
) {
    let Some(other) = config.identities.get(v) else {
        p(
            key.to_owned(),
            format!("{v:?} is not defined under [identities]"),
        );
        return;
    };
    if v == name {
        p(key.to_owned(), format!("names the identity {name:?} itself; leave it out (an identity verifies through itself by default)"));
        return;
    }
    if other.kind().is_some_and(|k| !k.signs_users_in()) {
        p(
            key.to_owned(),
            format!("identity {v:?} is kind {:?}, which cannot sign a user in either; name a client_secret or client_certificate identity", other.kind),
        );
    }
    let tenant = |i: &IdentityConfig| i.tenant_id.as_deref().map(str::to_ascii_lowercase);
    if let (Some(a), Some(b)) = (tenant(id), tenant(other)) {
        if a != b {
            p(
                key.to_owned(),
                format!("identity {v:?} is in tenant {b:?}, not this identity's {a:?}; the verify sign-in must go to the accounts' tenant"),
            );
        }
    }
}

/// The hosts of Entra's own authorities: the global cloud and the national clouds.
const ENTRA_AUTHORITIES: &[&str] = &[
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
];

/// Whether `id` signs in at Entra itself (no `authority_host`, or one of Entra's own), whose
/// tenant and client ids have a known form. Another authority (the emulator, a test) names
/// its tenants and apps as it likes, so their form is not checked.
fn signs_in_at_entra(id: &IdentityConfig) -> bool {
    let host = id
        .authority_host
        .clone()
        .or_else(|| std::env::var("AZURE_AUTHORITY_HOST").ok());
    match host {
        None => true,
        Some(h) => url::Url::parse(&h)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            })
            .is_some_and(|h| ENTRA_AUTHORITIES.contains(&h.as_str())),
    }
}

/// A GUID as Entra writes its ids: 8-4-4-4-12 hex digits.
fn is_guid(v: &str) -> bool {
    v.len() == 36 && uuid::Uuid::try_parse(v).is_ok()
}

/// A GUID whose digits are all the same (`00000000-0000-…`, `11111111-1111-…`): the
/// placeholders of `config/example.toml` and the Kubernetes ConfigMap, never a real id.
fn is_placeholder(v: &str) -> bool {
    let mut digits = v.chars().filter(|c| *c != '-');
    let first = digits.next();
    is_guid(v) && digits.all(|c| Some(c) == first)
}

/// A DNS name such as `contoso.onmicrosoft.com`: Entra takes a tenant's verified domain
/// wherever it takes the tenant's id.
fn is_domain(v: &str) -> bool {
    let labels: Vec<&str> = v.split('.').collect();
    labels.len() >= 2
        && v.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|l| l.len() >= 2 && l.chars().all(|c| c.is_ascii_alphabetic()))
}

/// `tenant_id` and `client_id` in the form Entra takes: the tenant a GUID or a domain name
/// (not a multi-tenant alias), the client a GUID; neither the examples' placeholders.
fn check_entra_ids(
    id: &IdentityConfig,
    key: &impl Fn(&str) -> String,
    p: &mut impl FnMut(String, String),
) {
    if let Some(t) = id.tenant_id.as_deref().filter(|t| !t.is_empty()) {
        let find = "the Directory (tenant) ID on the Entra admin center's Overview, or `az account show --query tenantId -o tsv`";
        if is_placeholder(t) {
            p(
                key("tenant_id"),
                format!("{t:?} is the example's placeholder: replace the placeholder with your tenant's id ({find})"),
            );
        } else if ["common", "organizations", "consumers"]
            .contains(&t.to_ascii_lowercase().as_str())
        {
            p(
                key("tenant_id"),
                format!("{t:?} is Entra's multi-tenant alias, not a tenant: an app signs in as itself in one tenant; use that tenant's id ({find}) or its domain, e.g. contoso.onmicrosoft.com"),
            );
        } else if !is_guid(t) && !is_domain(t) {
            p(
                key("tenant_id"),
                format!("{t:?} is neither a tenant id (a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47) nor a domain name such as contoso.onmicrosoft.com: use {find}"),
            );
        }
    }
    if let Some(c) = id.client_id.as_deref().filter(|c| !c.is_empty()) {
        let find = "the Application (client) ID on the app registration's Overview; deploy/azure/setup.sh prints it";
        let what = if id.kind() == Some(IdentityKind::ManagedIdentity) {
            "the user-assigned managed identity's client id"
        } else {
            "the app registration's client id"
        };
        if is_placeholder(c) {
            p(
                key("client_id"),
                format!("{c:?} is the example's placeholder: replace the placeholder with {what} ({find})"),
            );
        } else if !is_guid(c) {
            p(
                key("client_id"),
                format!("{c:?} is not a GUID: Entra names an app by its client id, a GUID such as 6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a; use {what} ({find})"),
            );
        }
    }
}

/// A systemd credential's file, `$CREDENTIALS_DIRECTORY/<name>`; `None` (and a problem
/// at `key`) when `$CREDENTIALS_DIRECTORY` is not set.
pub(super) fn credential_file(
    name: &str,
    key: &str,
    p: &mut impl FnMut(String, String),
) -> Option<PathBuf> {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => Some(PathBuf::from(dir).join(name)),
        None => {
            p(
                key.into(),
                format!("the systemd credential {name:?} is read from $CREDENTIALS_DIRECTORY, which is not set: systemd sets it for the service with LoadCredential={name}:/etc/keyturn/… (systemd/keyturn.service); to check this file from a shell, run `systemd-run --pipe --wait -p LoadCredential={name}:/etc/keyturn/… keyturn check-config --config …`, or set CREDENTIALS_DIRECTORY to a folder that holds a file named {name}"),
            );
            None
        }
    }
}

/// `workload_identity`: the federated token file (`token_file`, else
/// `$AZURE_FEDERATED_TOKEN_FILE`) exists and can be read.
fn check_token_file(id: &IdentityConfig, key: &str, p: &mut impl FnMut(String, String)) {
    let Some(path) = id
        .token_file
        .clone()
        .or_else(|| std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from))
    else {
        return p(
            key.into(),
            "kind \"workload_identity\" needs the federated token file, and neither token_file nor $AZURE_FEDERATED_TOKEN_FILE is set: in AKS, label the pod azure.workload.identity/use: \"true\" and annotate its ServiceAccount with azure.workload.identity/client-id (the webhook then sets it; deploy/kubernetes/keyturn.yaml); elsewhere set token_file".into(),
        );
    };
    if let Err(e) = std::fs::File::open(&path) {
        p(
            key.into(),
            format!(
                "cannot read the federated token file {}: {e}; check token_file or $AZURE_FEDERATED_TOKEN_FILE and the volume that holds it",
                path.display()
            ),
        );
    }
}

/// A client certificate as the Azure SDK reads it (`azure_identity`, through openssl): one
/// PKCS#12 file with no password holding the certificate and its RSA key.
fn check_certificate(path: &Path, key: &str, p: &mut impl FnMut(String, String)) {
    let bytes = match std::fs::read(path) {
        Ok(b) => zeroize::Zeroizing::new(b),
        Err(e) => return p(key.into(), format!("cannot read {}: {e}", path.display())),
    };
    let export =
        "openssl pkcs12 -export -in cert.pem -inkey key.pem -out keyturn.p12 -passout pass:";
    let problem = match openssl::pkcs12::Pkcs12::from_der(&bytes) {
        Err(_) if bytes.starts_with(b"-----BEGIN") => format!(
            "{} is PEM; keyturn (the Azure SDK) takes the certificate and its RSA key as one PKCS#12 (.p12/.pfx) file without a password: `{export}`",
            path.display()
        ),
        Err(_) => format!(
            "{} is not a PKCS#12 (.p12/.pfx) file; keyturn takes the certificate and its RSA key as one PKCS#12 file without a password: `{export}`",
            path.display()
        ),
        Ok(p12) => match p12.parse2("") {
            Err(_) => format!(
                "{} cannot be opened without a password (or is damaged); keyturn (the Azure SDK) reads a PKCS#12 file without one: export it again with an empty password, e.g. `openssl pkcs12 -in old.p12 -nodes | openssl pkcs12 -export -out keyturn.p12 -passout pass:`, and keep it private with its file mode or LoadCredential=",
                path.display()
            ),
            Ok(parsed) => match (parsed.pkey, parsed.cert) {
                (None, _) => format!("{} holds no private key; export the certificate with its RSA key: `{export}`", path.display()),
                (_, None) => format!("{} holds no certificate; export the certificate with its RSA key: `{export}`", path.display()),
                (Some(k), Some(_)) if k.id() != openssl::pkey::Id::RSA => format!(
                    "{} holds a {:?} key; the Azure SDK signs Entra client assertions with an RSA key only: create an RSA certificate for the app",
                    path.display(),
                    k.id()
                ),
                (Some(_), Some(_)) => return,
            },
        },
    };
    p(key.into(), problem);
}

fn check_https(v: &str, key: &str, p: &mut impl FnMut(String, String)) {
    if !check_https_ok(v) {
        p(
            key.into(),
            format!(
                "{v:?} must be an https:// URL (Azure clients refuse plain http for bearer tokens)"
            ),
        );
    }
}

/// A client secret or certificate file must be a regular file that only its owner can read
/// or write, owned by the user keyturn runs as or by root: anyone else who can read it (the
/// on-call group, say) holds a credential that resets privileged users' passwords.
/// systemd credentials (`LoadCredential=`) are not checked here: systemd makes them
/// readable by the service's user only.
pub(super) fn check_secret_file(f: &Path, key: &str, p: &mut impl FnMut(String, String)) {
    use std::os::unix::fs::MetadataExt;
    let m = match std::fs::metadata(f) {
        Err(e) => return p(key.into(), format!("cannot read {}: {e}", f.display())),
        Ok(m) => m,
    };
    if !m.is_file() {
        return p(key.into(), format!("{} is not a regular file", f.display()));
    }
    let mode = m.mode() & 0o7777;
    let euid = nix::unistd::geteuid().as_raw();
    let name = |uid: u32| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(
                || format!("uid {uid}"),
                |u| format!("{} (uid {uid})", u.name),
            )
    };
    let fix = "or, under systemd, deliver it with LoadCredential= instead (client_secret_credential, certificate_credential; docs/deploy.md)";
    if m.uid() != euid && m.uid() != 0 {
        p(
            key.into(),
            format!(
                "{} is owned by {}, neither the user keyturn runs as ({}) nor root, who alone may own a credential: chown root (or the service user) and chmod 600 it, {fix}",
                f.display(),
                name(m.uid()),
                name(euid)
            ),
        );
    }
    if mode & 0o077 != 0 {
        let who = match (mode & 0o070 != 0, mode & 0o007 != 0) {
            (true, true) => "its group and every user",
            (true, false) => "its group",
            _ => "every user",
        };
        p(
            key.into(),
            format!(
                "{} has mode {mode:04o} (owner {}, group gid {}): {who} can reach the credential; chmod 600 it (0400 or 0600 are accepted), {fix}",
                f.display(),
                name(m.uid()),
                m.gid()
            ),
        );
    }
}
