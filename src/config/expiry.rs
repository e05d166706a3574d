//! The app credential's own expiry, as far as it can be known offline: a client
//! certificate's `notAfter` (read from the PKCS#12 file), and for a client secret the date
//! the configuration declares (`secret_expires`): Entra keeps a secret's end date on the
//! app registration, which keyturn cannot read without a further Graph permission
//! (`Application.Read.All`), so the operator writes it down when creating the secret.

use super::model::{Config, IdentityConfig, IdentityKind};
use std::collections::BTreeMap;
use std::path::PathBuf;
use time::OffsetDateTime;

/// A credential that expires sooner than this is warned about (start-up, `check-config`).
pub const EXPIRY_WARNING: time::Duration = time::Duration::days(30);

/// A `secret_expires` value: a date (`2027-06-01`, midnight UTC that day) or an RFC 3339
/// time; `None` when it is neither.
pub(super) fn parse_expiry(text: &str) -> Option<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t);
    }
    let date = time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()?;
    Some(date.midnight().assume_utc())
}

/// The PKCS#12 file a `client_certificate` identity names (`certificate_file`, or the
/// systemd credential in `$CREDENTIALS_DIRECTORY`).
fn certificate_path(id: &IdentityConfig) -> Option<PathBuf> {
    id.certificate_file.clone().or_else(|| {
        let name = id.certificate_credential.as_ref()?;
        Some(PathBuf::from(std::env::var_os("CREDENTIALS_DIRECTORY")?).join(name))
    })
}

/// The certificate's `notAfter` in a PKCS#12 file without a password (as the Azure SDK
/// reads it); `None` when it cannot be read (validation reports why).
fn certificate_not_after(path: &std::path::Path) -> Option<OffsetDateTime> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).ok()?);
    let parsed = openssl::pkcs12::Pkcs12::from_der(&bytes)
        .ok()?
        .parse2("")
        .ok()?;
    let cert = parsed.cert?;
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(cert.not_after()).ok()?;
    OffsetDateTime::from_unix_timestamp(i64::from(diff.days) * 86_400 + i64::from(diff.secs)).ok()
}

/// When each identity's own credential expires, where that is known offline: a client
/// certificate's `notAfter`, a client secret's declared `secret_expires`. Identities
/// without a known expiry (managed and workload identities, the Azure CLI, a secret whose
/// date is not declared) are left out.
pub fn credential_expiries(config: &Config) -> BTreeMap<String, OffsetDateTime> {
    let mut out = BTreeMap::new();
    for (name, id) in &config.identities {
        let expiry = match id.kind() {
            Some(IdentityKind::ClientCertificate) => {
                certificate_path(id).and_then(|p| certificate_not_after(&p))
            }
            Some(IdentityKind::ClientSecret) => id.secret_expires.as_deref().and_then(parse_expiry),
            _ => None,
        };
        if let Some(t) = expiry {
            out.insert(name.clone(), t);
        }
    }
    out
}

/// A warning, as `(key, message)`, for each identity whose credential has expired or
/// expires within [`EXPIRY_WARNING`] of `now`.
pub fn expiry_warnings(config: &Config, now: OffsetDateTime) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, at) in credential_expiries(config) {
        let Some(id) = config.identities.get(&name) else {
            continue;
        };
        let (key, what, renew) = if id.kind() == Some(IdentityKind::ClientCertificate) {
            (
                if id.certificate_file.is_some() { "certificate_file" } else { "certificate_credential" },
                "client certificate",
                "upload a new certificate to the app registration (`az ad app credential reset --id <app> --cert @new.pem --append`), point keyturn at the new .p12 and reload",
            )
        } else {
            (
                "secret_expires",
                "client secret",
                "add a new secret (`az ad app credential reset --id <app> --append --years 1`), put it where keyturn reads it, set secret_expires to its end date and reload; then remove the old one",
            )
        };
        let date = at.date();
        let left = at - now;
        let message = if left.is_negative() {
            format!("the {what} of identity {name:?} expired on {date}: keyturn cannot sign in with it; {renew}")
        } else if left < EXPIRY_WARNING {
            format!(
                "the {what} of identity {name:?} expires on {date}, in {} day(s): {renew}",
                left.whole_days()
            )
        } else {
            continue;
        };
        out.push((format!("identities.{name}.{key}"), message));
    }
    out
}
