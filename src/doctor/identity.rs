//! The identity checks: a token for Graph and for Key Vault, the Graph application
//! permissions in the Graph token's `roles`, the app's directory roles (`super::roles`), and
//! the clock against the services' `Date`.

use super::{Check, IdentityReport};
use crate::azure::graph::graph_scope;
use crate::azure::{Http, SetupError};
use crate::config::{IdentityConfig, NetworkConfig};
use azure_core::credentials::{Secret, TokenCredential};
use base64::Engine as _;
use std::sync::Arc;
use std::time::Instant;
use time::OffsetDateTime;

/// Key Vault's token scope in the public cloud (the SDK asks the same).
const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
/// Clock skew beyond this is a warning (Entra accepts tokens a few minutes either side).
const SKEW_WARN: time::Duration = time::Duration::minutes(2);

/// The Graph application permissions keyturn needs, each with the broader ones that also do.
const PERMISSIONS: [(&str, &str, &[&str]); 2] = [
    (
        "User-PasswordProfile.ReadWrite.All",
        "the password reset",
        &["User.ReadWrite.All", "Directory.ReadWrite.All"],
    ),
    (
        "User.Read.All",
        "reading users: the drift check, doctor",
        &[
            "User.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ],
    ),
];

pub(super) struct Checked {
    pub report: IdentityReport,
    /// The Graph token, for the account checks (never printed).
    pub graph_token: Option<Secret>,
    /// The app's directory roles (template ids), when they could be read.
    pub app_roles: Option<Vec<String>>,
}

pub(super) async fn check(
    name: &str,
    id: &IdentityConfig,
    vault: Option<&str>,
    http: &Http,
    network: &NetworkConfig,
    now: OffsetDateTime,
    started: Instant,
) -> Result<Checked, SetupError> {
    let credential: Arc<dyn TokenCredential> = crate::azure::credential(name, id, http, network)?;
    let base = graph_base(id);
    let scope = id.graph_scope.clone().unwrap_or_else(|| graph_scope(&base));
    let mut checks = Vec::new();
    let mut got_token = false;

    let graph_token = match credential.get_token(&[scope.as_str()], None).await {
        Ok(t) => {
            got_token = true;
            checks.push(Check::pass(
                "graph_token",
                format!("a token for Graph ({scope})"),
            ));
            Some(t.token)
        }
        Err(e) => {
            checks.push(token_failure("graph_token", "Graph", &scope, &e));
            None
        }
    };
    let mut app_roles = None;
    match &graph_token {
        Some(t) => {
            checks.extend(permissions(t));
            let (check, roles) = super::roles::app_directory_roles(http, &base, t).await;
            checks.push(check);
            app_roles = roles;
        }
        None => {
            checks.push(Check::warn(
                "graph_permission",
                "not checked: no Graph token",
                "fix graph_token first",
            ));
            checks.push(Check::warn(
                "app_directory_roles",
                "not checked: no Graph token",
                "fix graph_token first",
            ));
        }
    }
    if let Some(vault) = vault {
        let scope = vault_scope(vault);
        match credential.get_token(&[scope.as_str()], None).await {
            Ok(_) => {
                got_token = true;
                checks.push(Check::pass(
                    "vault_token",
                    format!("a token for Key Vault ({scope})"),
                ));
            }
            Err(e) => checks.push(token_failure("vault_token", "Key Vault", &scope, &e)),
        }
    }
    let mut probes = vec![("Graph", base.clone())];
    if let Some(v) = vault {
        probes.push(("Key Vault", v.to_owned()));
    }
    checks.push(clock_skew(http, &probes, now, started).await);
    Ok(Checked {
        report: IdentityReport {
            identity: name.to_owned(),
            checks,
            got_token,
        },
        graph_token,
        app_roles,
    })
}

/// The token scope of the cloud a vault is in: `https://vault.azure.cn/.default` for
/// `https://kv.vault.azure.cn/`; the public cloud's when the host is not `<name>.vault.…`.
fn vault_scope(vault: &str) -> String {
    url::Url::parse(vault.trim())
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.trim_end_matches('.').to_ascii_lowercase();
            let (_, cloud) = host.split_once('.')?;
            cloud
                .starts_with("vault.")
                .then(|| format!("https://{cloud}/.default"))
        })
        .unwrap_or_else(|| VAULT_SCOPE.to_owned())
}

pub(super) fn graph_base(id: &IdentityConfig) -> String {
    id.graph_base
        .clone()
        .unwrap_or_else(|| crate::app::DEFAULT_GRAPH.into())
        .trim_end_matches('/')
        .to_owned()
}

/// A failed token request: the AADSTS code named, with its fix.
fn token_failure(check: &'static str, service: &str, scope: &str, e: &azure_core::Error) -> Check {
    let text = crate::azure::bounded(&crate::azure::error_chain(e), None, 400);
    let code = aadsts(&text);
    let fix = match code.as_deref() {
        Some("7000222") => "the client secret has expired: add a new one to the app registration (Certificates & secrets), put it where the identity's client secret is read from, and `keyturn reload`",
        Some("7000215") => "the client secret is wrong: copy the secret's value (not its id) from the app registration into the identity's client secret",
        Some("700016") => "no such app in the tenant: check the identity's client_id and tenant_id (the app must be registered in that tenant)",
        Some("90002") | Some("900023") => "no such tenant: check the identity's tenant_id",
        Some("700027") | Some("700024") => "the client assertion was refused: check the certificate or token file is the one registered on the app, and the clock",
        Some(_) | None => "check the identity's tenant_id, client_id and credential (`keyturn check-config`), and that the authority is reachable",
    };
    let named = code.map(|c| format!("AADSTS{c}: ")).unwrap_or_default();
    Check::fail(
        check,
        format!("no token for {service} ({scope}): {named}{text}"),
        fix,
    )
}

/// The first `AADSTS<digits>` code in an error text, without its prefix.
fn aadsts(text: &str) -> Option<String> {
    let at = text.find("AADSTS")?;
    let digits: String = text[at + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then_some(digits)
}

/// The `roles` claim of an access token (its payload is read, its signature is not checked:
/// only Graph can, and doctor only reports what the token says).
fn roles(token: &Secret) -> Option<Vec<String>> {
    let payload = token.secret().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(
        claims
            .get("roles")
            .and_then(|r| r.as_array())
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

fn permissions(token: &Secret) -> Vec<Check> {
    let Some(held) = roles(token) else {
        return vec![Check::warn(
            "graph_permissions",
            "the Graph token is not a JWT doctor can read: its permissions are not checked",
            "check the app's API permissions in the portal (Microsoft Graph, Application)",
        )];
    };
    PERMISSIONS
        .iter()
        .map(|(needed, what, broader)| {
            let has = held
                .iter()
                .find(|h| h.as_str() == *needed || broader.contains(&h.as_str()));
            match has {
                Some(h) => Check::pass("graph_permission", format!("{h} (for {what})")),
                None => Check::fail(
                    "graph_permission",
                    format!("the Graph token's roles lack {needed}, needed for {what}"),
                    format!("add the Microsoft Graph application permission {needed} to the app and grant admin consent (docs/deploy.md)"),
                ),
            }
        })
        .collect()
}

/// The clock against each service's `Date` header.
/// `now` is the time doctor started at, `started` the same instant on the monotonic clock: the
/// host's time at each answer is `now` plus the time since.
async fn clock_skew(
    http: &Http,
    probes: &[(&str, String)],
    now: OffsetDateTime,
    started: Instant,
) -> Check {
    let mut worst: Option<(time::Duration, &str)> = None;
    for (service, url) in probes {
        let Ok(resp) = http.client.get(url.as_str()).send().await else {
            continue;
        };
        let Some(date) = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
        else {
            continue;
        };
        let Ok(theirs) = OffsetDateTime::from_unix_timestamp(date.timestamp()) else {
            continue;
        };
        let ours = now + started.elapsed();
        let skew = ours - theirs;
        if worst.is_none_or(|(w, _)| skew.abs() > w.abs()) {
            worst = Some((skew, service));
        }
    }
    match worst {
        None => Check::warn(
            "clock_skew",
            "no service answered with a Date header: the clock is not checked",
            "check the network path to Graph and Key Vault",
        ),
        Some((skew, service)) if skew.abs() > SKEW_WARN => Check::warn(
            "clock_skew",
            format!(
                "this host's clock is {}s {} {service}'s",
                skew.whole_seconds().abs(),
                if skew.is_positive() { "ahead of" } else { "behind" }
            ),
            "synchronise the clock (chrony or systemd-timesyncd): tokens and schedules depend on it",
        ),
        Some((skew, service)) => Check::pass(
            "clock_skew",
            format!("within {}s of {service}'s clock", skew.whole_seconds().abs().max(1)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aadsts_code_is_found_in_an_error_text() {
        assert_eq!(
            aadsts("invalid_client: AADSTS7000222: The provided client secret keys are expired.")
                .as_deref(),
            Some("7000222")
        );
        assert_eq!(aadsts("connection refused"), None);
    }

    #[test]
    fn the_vault_scope_follows_the_vault_s_cloud() {
        assert_eq!(
            vault_scope("https://kv1.vault.azure.net/"),
            "https://vault.azure.net/.default"
        );
        assert_eq!(
            vault_scope("https://kv1.vault.azure.cn:443/"),
            "https://vault.azure.cn/.default"
        );
        assert_eq!(
            vault_scope("https://kv1.vault.usgovcloudapi.net/"),
            "https://vault.usgovcloudapi.net/.default"
        );
        assert_eq!(vault_scope("not a url"), VAULT_SCOPE);
    }

    #[test]
    fn a_missing_permission_fails_naming_it() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"roles":["User.Read.All"]}"#);
        let token = Secret::new(format!("e30.{claims}.sig"));
        let checks = permissions(&token);
        assert_eq!(checks[0].status, super::super::Status::Fail);
        assert!(checks[0].fix.contains("User-PasswordProfile.ReadWrite.All"));
        assert_eq!(checks[1].status, super::super::Status::Pass);
    }
}
