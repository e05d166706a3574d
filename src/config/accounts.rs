//! The `[[accounts]]` section: each account checked and resolved with the defaults, and no
//! two accounts writing the same Key Vault secret.

use super::model::{Config, OnMissingSecret, ResolvedAccount};
use crate::schedule::Schedule;
use std::collections::{HashMap, HashSet};

/// `[[accounts]]`: each account checked and resolved with `[defaults]` (in file order; an
/// account with a problem is left out), including that no two accounts write the same Key
/// Vault secret.
pub(super) fn validate_accounts(
    config: &Config,
    p: &mut impl FnMut(String, String),
) -> Vec<ResolvedAccount> {
    let mut seen_names = HashSet::new();
    // Every Key Vault name an account writes (`<secret>` and `<secret>-pending`), by
    // normalised vault and lowercased name (Key Vault's names are case-insensitive): which
    // account, and whether it is that account's staging secret.
    let mut secret_names: HashMap<(String, String), (usize, bool)> = HashMap::new();
    // Every Entra user an account manages, by tenant and user ([`user_key`]): which account.
    let mut users: HashMap<(String, String), usize> = HashMap::new();
    // Accounts with the same schedule share one parsed cron expression.
    let mut schedules: HashMap<(String, String, std::time::Duration), Schedule> = HashMap::new();
    let mut resolved = Vec::new();
    let on_missing = |value: &str, key: String, p: &mut dyn FnMut(String, String)| {
        let parsed = OnMissingSecret::parse(value);
        if parsed.is_none() {
            p(
                key,
                format!("{value:?} is not one of \"wait\" (leave an account without a secret alone until `keyturn adopt`) or \"rotate\" (take it over with a first rotation at start-up)"),
            );
        }
        parsed
    };
    let default_on_missing = on_missing(
        &config.defaults.on_missing_secret,
        "defaults.on_missing_secret".into(),
        p,
    )
    .unwrap_or_default();
    if let Err(m) = check_signin_apps(&config.defaults.signin_apps) {
        p("defaults.signin_apps".into(), m);
    }
    let default_ip = match &config.defaults.signin_ip {
        None => None,
        Some(v) => parse_signin_ip(v).unwrap_or_else(|m| {
            p("defaults.signin_ip".into(), m);
            None
        }),
    };
    let default_roles = config.defaults.roles.as_ref().map(|entries| {
        let (roles, bad) = crate::entra_roles::resolve_all(entries);
        for (j, m) in bad {
            p(format!("defaults.roles[{j}]"), m);
        }
        roles
    });
    if let Some(id) = &config.defaults.provision_identity {
        if !config.identities.contains_key(id) {
            p(
                "defaults.provision_identity".into(),
                format!("{id:?} is not defined under [identities]; define [identities.{id}] (e.g. kind = \"azure_cli\") or name one of: {}", identity_names(config)),
            );
        }
    }
    if config.accounts.is_empty() {
        p(
            "accounts".into(),
            "no account is configured; add an [[accounts]] table".into(),
        );
    }
    for (i, a) in config.accounts.iter().enumerate() {
        let key = |k: &str| format!("accounts[{i}].{k}");
        let mut ok = true;
        let mut bad = |k: String, m: String, ok: &mut bool| {
            *ok = false;
            p(k, m)
        };
        if a.name.is_empty() {
            bad(key("name"), "is required".into(), &mut ok);
        } else if !seen_names.insert(a.name.clone()) {
            bad(
                key("name"),
                format!(
                    "account {:?} is configured twice; names must be unique",
                    a.name
                ),
                &mut ok,
            );
        }
        if a.user.is_empty() {
            bad(
                key("user"),
                "is required: the user's object id or user principal name".into(),
                &mut ok,
            );
        }
        if !a.user.is_empty() {
            let entry = (tenant_key(config, &a.identity), user_key(&a.user));
            match users.get(&entry) {
                Some(&j) => {
                    let other = &config.accounts[j];
                    bad(
                        key("user"),
                        format!(
                            "account {:?} manages the Entra user {:?}, and so does account {:?} (accounts[{j}].user = {:?}) in the same tenant: each rotation would overwrite the password the other account's secret holds; manage each user with one account only (remove one of them, or point it at another user)",
                            a.name, a.user, other.name, other.user
                        ),
                        &mut ok,
                    );
                }
                None => {
                    users.insert(entry, i);
                }
            }
        }
        if !check_secret_name(&a.secret) {
            bad(key("secret"), format!("{:?} is not a Key Vault secret name: 1-119 characters of 0-9 a-z A-Z and '-' (119 leaves room for the '-pending' suffix)", a.secret), &mut ok);
        }
        if a.secret
            .to_ascii_lowercase()
            .starts_with(crate::store::PROBE_PREFIX)
        {
            bad(key("secret"), format!("{:?} starts with {:?}, the prefix of the probe secrets `keyturn doctor --write-probe` sets and deletes: choose another name", a.secret, crate::store::PROBE_PREFIX), &mut ok);
        }
        if !a.secret.is_empty() && !a.vault.is_empty() {
            let vault = normalize_vault(&a.vault);
            // Both of this account's names first, then the clashes with earlier accounts.
            let names = [
                (a.secret.clone(), false),
                (crate::store::staging_name(&a.secret), true),
            ];
            for (name, staging) in names {
                let entry = (vault.clone(), name.to_ascii_lowercase());
                match secret_names.get(&entry) {
                    Some(&(j, other_staging)) if j != i => {
                        let other = &config.accounts[j];
                        bad(
                            key("secret"),
                            secret_clash(
                                (i, &a.name, &a.secret, staging),
                                (j, &other.name, &other.secret, other_staging),
                                &vault,
                            ),
                            &mut ok,
                        );
                        break;
                    }
                    Some(_) => {}
                    None => {
                        secret_names.insert(entry, (i, staging));
                    }
                }
            }
        }
        if a.vault.is_empty() {
            bad(
                key("vault"),
                "is required, e.g. \"https://myvault.vault.azure.net/\"".into(),
                &mut ok,
            );
        } else if !check_https_ok(&a.vault) {
            bad(
                key("vault"),
                format!(
                    "{:?} must be an https:// URL, e.g. \"https://myvault.vault.azure.net/\"",
                    a.vault
                ),
                &mut ok,
            );
        } else if !check_vault_base(&a.vault) {
            bad(
                key("vault"),
                format!(
                    "{:?} must be the vault's URL alone, with no path, query or user, e.g. \"https://myvault.vault.azure.net/\"",
                    a.vault
                ),
                &mut ok,
            );
        }
        if !config.identities.contains_key(&a.identity) {
            bad(
                key("identity"),
                format!("{:?} is not defined under [identities]", a.identity),
                &mut ok,
            );
        }
        let verify = a.verify.unwrap_or(config.defaults.verify);
        if let Some(id) = config.identities.get(&a.identity) {
            let kind = id.kind();
            if verify && id.verify_identity.is_none() && kind.is_some_and(|k| !k.signs_users_in()) {
                let k = if a.verify.is_some() {
                    key("verify")
                } else {
                    "defaults.verify".into()
                };
                bad(
                    k,
                    format!(
                        "account {:?} verifies its password by signing in, but its identity {:?} is kind {:?}, which cannot sign a user in (Entra's password grant needs an app with a client secret or certificate); set verify = false for it, or give [identities.{}] a verify_identity naming a client_secret or client_certificate identity of the same tenant",
                        a.name, a.identity, id.kind, a.identity
                    ),
                    &mut ok,
                );
            }
        }
        let vault_identity = a
            .vault_identity
            .clone()
            .unwrap_or_else(|| a.identity.clone());
        if a.vault_identity.is_some() && !config.identities.contains_key(&vault_identity) {
            bad(
                key("vault_identity"),
                format!("{vault_identity:?} is not defined under [identities]"),
                &mut ok,
            );
        }
        let policy = a
            .policy
            .clone()
            .unwrap_or_else(|| config.defaults.policy.clone());
        if let Err(e) = policy.validate() {
            let k = if a.policy.is_some() {
                key("policy")
            } else {
                "defaults.policy".into()
            };
            bad(k, e.to_string(), &mut ok);
        }
        let on_missing_secret = match &a.on_missing_secret {
            None => default_on_missing,
            Some(v) => {
                let mut flag = |k: String, m: String| bad(k, m, &mut ok);
                on_missing(v, key("on_missing_secret"), &mut flag).unwrap_or_default()
            }
        };
        let signin_apps = match &a.signin_apps {
            None => config.defaults.signin_apps.clone(),
            Some(v) => {
                if let Err(m) = check_signin_apps(v) {
                    bad(key("signin_apps"), m, &mut ok);
                }
                v.clone()
            }
        };
        let signin_ip = match &a.signin_ip {
            None => default_ip,
            Some(v) => parse_signin_ip(v).unwrap_or_else(|m| {
                bad(key("signin_ip"), m, &mut ok);
                None
            }),
        };
        let roles = match &a.roles {
            None => default_roles.clone(),
            Some(entries) => {
                let (roles, unknown) = crate::entra_roles::resolve_all(entries);
                for (j, m) in unknown {
                    bad(key(&format!("roles[{j}]")), m, &mut ok);
                }
                Some(roles)
            }
        };
        if let Some(id) = &a.provision_identity {
            if !config.identities.contains_key(id) {
                bad(
                    key("provision_identity"),
                    format!("{id:?} is not defined under [identities]; define [identities.{id}] (e.g. kind = \"azure_cli\") or name one of: {}", identity_names(config)),
                    &mut ok,
                );
            }
        }
        let provision_identity = a
            .provision_identity
            .clone()
            .or_else(|| config.defaults.provision_identity.clone());
        let display_name = match &a.display_name {
            Some(d) if d.trim().is_empty() || d.chars().count() > 256 => {
                bad(
                    key("display_name"),
                    "must be 1 to 256 characters (Entra's limit for displayName); leave it out to use the account's name".into(),
                    &mut ok,
                );
                String::new()
            }
            Some(d) => d.clone(),
            None => a.name.clone(),
        };
        let pattern = a
            .schedule
            .clone()
            .unwrap_or_else(|| config.defaults.schedule.clone());
        let tz = a
            .timezone
            .clone()
            .unwrap_or_else(|| config.defaults.timezone.clone());
        let window = a.window.unwrap_or(config.defaults.window);
        let parsed = match schedules.get(&(pattern.clone(), tz.clone(), window)) {
            Some(s) => Ok(s.clone()),
            None => Schedule::new(&pattern, &tz, window).inspect(|s| {
                schedules.insert((pattern.clone(), tz.clone(), window), s.clone());
            }),
        };
        let schedule = match parsed {
            Ok(s) => Some(s),
            Err(e) => {
                let k = match e {
                    crate::schedule::ScheduleError::TimeZone(..) => {
                        if a.timezone.is_some() {
                            key("timezone")
                        } else {
                            "defaults.timezone".into()
                        }
                    }
                    crate::schedule::ScheduleError::Window(..) => {
                        if a.window.is_some() {
                            key("window")
                        } else {
                            "defaults.window".into()
                        }
                    }
                    _ => {
                        if a.schedule.is_some() {
                            key("schedule")
                        } else {
                            "defaults.schedule".into()
                        }
                    }
                };
                bad(k, e.to_string(), &mut ok);
                None
            }
        };
        if let (true, Some(schedule)) = (ok, schedule) {
            let period = schedule.period_hint();
            resolved.push(ResolvedAccount {
                name: a.name.clone(),
                user: a.user.clone(),
                identity: a.identity.clone(),
                vault_identity,
                vault: a.vault.clone(),
                secret: a.secret.clone(),
                verify,
                enabled: a.enabled.unwrap_or(config.defaults.enabled),
                on_missing_secret,
                signin_apps,
                signin_ip,
                roles,
                display_name,
                provision_identity,
                policy,
                // Both terms are bounded (the grace by validation, the period by the cron
                // expression); saturating, so that nothing here can panic regardless.
                expiry: time::Duration::try_from(
                    period.saturating_add(config.defaults.expiry_grace),
                )
                .unwrap_or(time::Duration::days(9)),
                schedule,
            });
        }
    }
    resolved
}

/// The identities' names, for a message.
fn identity_names(config: &Config) -> String {
    config
        .identities
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A warning, as `(key, message)`, for each account whose `provision_identity` is its
/// everyday `identity` (or `vault_identity`): the daemon would then hold the rights to
/// create users and assign admin roles. Warned, not refused: an operator may choose it
/// (a small tenant, one app), and two identities with one client id would not be caught
/// anyway. `keyturn check-config` and `keyturn provision` print these.
pub fn provision_warnings(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, a) in config.accounts.iter().enumerate() {
        let Some(prov) = a
            .provision_identity
            .as_ref()
            .or(config.defaults.provision_identity.as_ref())
        else {
            continue;
        };
        let vault_identity = a.vault_identity.as_ref().unwrap_or(&a.identity);
        if prov == &a.identity || prov == vault_identity {
            let k = if a.provision_identity.is_some() {
                format!("accounts[{i}].provision_identity")
            } else {
                "defaults.provision_identity".into()
            };
            out.push((k, format!("account {:?} provisions with {prov:?}, the identity the daemon rotates it with: the daemon would hold the rights to create users and assign admin roles (User.ReadWrite.All, RoleManagement.ReadWrite.Directory); give provisioning its own identity (e.g. kind = \"azure_cli\", an operator's sign-in) and keep the daemon's app to User-PasswordProfile.ReadWrite.All", a.name)));
        }
    }
    out.dedup();
    out
}

/// The tenant an account's user lives in, as far as the configuration says: its identity's
/// `tenant_id` (lowercased), or the identity's name when it has none (managed identity).
/// Two spellings of one tenant (its id and a domain name) are not recognised here.
fn tenant_key(config: &Config, identity: &str) -> String {
    match config
        .identities
        .get(identity)
        .and_then(|id| id.tenant_id.as_deref())
        .filter(|t| !t.is_empty())
    {
        Some(t) => format!("tenant {}", t.to_lowercase()),
        None => format!("identity {identity}"),
    }
}

/// A user as Graph resolves it: an object id (a GUID, whatever its case or braces) or a
/// user principal name (compared case-insensitively, as Entra does). An object id and the
/// UPN of the same user are not recognised as one here (that needs Graph).
fn user_key(user: &str) -> String {
    match uuid::Uuid::parse_str(user.trim()) {
        Ok(id) => format!("id {id}"),
        Err(_) => format!("upn {}", user.trim().to_lowercase()),
    }
}

/// A vault URL in the one form used wherever vaults are compared or keyed (duplicate
/// secrets, stores, rate-limit buckets): lowercase scheme and host, no default port, no
/// trailing slash or dot, e.g. `https://kv.vault.azure.net`. A string that is not a URL is
/// only lowercased and stripped of trailing slashes (validation refuses it anyway).
pub fn normalize_vault(url: &str) -> String {
    let trimmed = url.trim();
    match url::Url::parse(trimmed) {
        Ok(u) if u.host_str().is_some() => {
            let host = u.host_str().unwrap_or_default().trim_end_matches('.');
            let mut out = format!("{}://{host}", u.scheme());
            if let Some(port) = u.port() {
                out.push_str(&format!(":{port}"));
            }
            out.push_str(u.path().trim_end_matches('/'));
            out
        }
        _ => trimmed.trim_end_matches('/').to_ascii_lowercase(),
    }
}

/// The problem of two accounts whose Key Vault names are the same secret: each side is
/// (index, account name, `secret`, whether the clashing name is its staging secret).
fn secret_clash(
    mine: (usize, &str, &str, bool),
    theirs: (usize, &str, &str, bool),
    vault: &str,
) -> String {
    let side = |(i, name, secret, staging): (usize, &str, &str, bool)| {
        if staging {
            format!(
                "account {name:?} writes its staging secret {:?} (accounts[{i}].secret = {secret:?} + {STAGING:?})",
                crate::store::staging_name(secret)
            )
        } else {
            format!("account {name:?} keeps its password in {secret:?} (accounts[{i}].secret)")
        }
    };
    format!(
        "{} and {} in {vault}: Key Vault compares secret names case-insensitively, so these are one secret and each account's rotation would overwrite the other's password; rename one so that neither account's secret is the other's, or the other's + {STAGING:?}",
        side(mine),
        side(theirs),
    )
}

const STAGING: &str = crate::store::STAGING_SUFFIX;

fn check_secret_name(s: &str) -> bool {
    (1..=119).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

pub(super) fn check_https_ok(v: &str) -> bool {
    url::Url::parse(v).is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some())
}

/// A vault URL names the vault only: Key Vault's paths (`/secrets/…`) are the client's.
fn check_vault_base(v: &str) -> bool {
    url::Url::parse(v.trim()).is_ok_and(|u| {
        matches!(u.path(), "" | "/")
            && u.query().is_none()
            && u.fragment().is_none()
            && u.username().is_empty()
            && u.password().is_none()
    })
}

/// `signin_apps`: at least one, each an app id (a GUID), as Conditional Access names its
/// target resources.
fn check_signin_apps(apps: &[String]) -> Result<(), String> {
    if apps.is_empty() {
        return Err(format!(
            "is empty: name at least one resource app id, e.g. \"{}\" (Microsoft Graph, what keyturn's verify signs in to)",
            super::model::GRAPH_APP_ID
        ));
    }
    for a in apps {
        if uuid::Uuid::parse_str(a).is_err() || a.len() != 36 {
            return Err(format!(
                "{a:?} is not an app id: give application (client) ids like \"{}\" (Microsoft Graph) or \"00000002-0000-0ff1-ce00-000000000000\" (Exchange Online)",
                super::model::GRAPH_APP_ID
            ));
        }
    }
    Ok(())
}

/// `signin_ip`: an IPv4 or IPv6 address.
fn parse_signin_ip(v: &str) -> Result<Option<std::net::IpAddr>, String> {
    v.trim().parse().map(Some).map_err(|_| {
        format!("{v:?} is not an IP address: give the public address (IPv4 or IPv6) Entra sees the sign-ins come from, e.g. \"203.0.113.10\"")
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{load_str, OnMissingSecret};
    use std::path::Path;

    const BASE: &str = r#"
[identities.rotator]
kind = "managed_identity"

[[accounts]]
name = "a"
user = "a@contoso.onmicrosoft.com"
identity = "rotator"
vault = "https://kv.vault.azure.net/"
secret = "a"

[[accounts]]
name = "b"
user = "b@contoso.onmicrosoft.com"
identity = "rotator"
vault = "https://kv.vault.azure.net/"
secret = "b"
"#;

    fn resolved(text: &str) -> Vec<(bool, OnMissingSecret)> {
        load_str(text, Path::new("t.toml"))
            .unwrap()
            .accounts
            .iter()
            .map(|a| (a.enabled, a.on_missing_secret))
            .collect()
    }

    #[test]
    fn accounts_are_enabled_and_wait_for_adoption_by_default() {
        assert_eq!(
            resolved(BASE),
            vec![(true, OnMissingSecret::Wait), (true, OnMissingSecret::Wait)]
        );
    }

    #[test]
    fn enabled_and_on_missing_secret_come_from_defaults_and_each_account() {
        let text = format!("[defaults]\nenabled = false\non_missing_secret = \"rotate\"\n{BASE}")
            .replacen(
                "secret = \"a\"\n",
                "secret = \"a\"\nenabled = true\non_missing_secret = \"wait\"\n",
                1,
            );
        assert_eq!(
            resolved(&text),
            vec![
                (true, OnMissingSecret::Wait),
                (false, OnMissingSecret::Rotate)
            ]
        );
        let bad = BASE.replacen(
            "secret = \"a\"\n",
            "secret = \"a\"\non_missing_secret = \"later\"\n",
            1,
        );
        let e = load_str(&bad, Path::new("t.toml")).unwrap_err().to_string();
        assert!(
            e.contains("accounts[0].on_missing_secret: \"later\" is not one of \"wait\""),
            "{e}"
        );
    }

    #[test]
    fn signin_apps_and_ip_default_to_graph_and_none_and_are_checked() {
        let loaded = load_str(BASE, Path::new("t.toml")).unwrap();
        assert_eq!(
            loaded.accounts[0].signin_apps,
            vec![crate::config::model::GRAPH_APP_ID.to_string()]
        );
        assert_eq!(loaded.accounts[0].signin_ip, None);
        let text = format!("[defaults]\nsignin_ip = \"203.0.113.10\"\n{BASE}").replacen(
            "secret = \"a\"\n",
            "secret = \"a\"\nsignin_apps = [\"00000002-0000-0ff1-ce00-000000000000\"]\nsignin_ip = \"2001:db8::1\"\n",
            1,
        );
        let loaded = load_str(&text, Path::new("t.toml")).unwrap();
        assert_eq!(
            loaded.accounts[0].signin_apps,
            vec!["00000002-0000-0ff1-ce00-000000000000".to_string()]
        );
        assert_eq!(
            loaded.accounts[0].signin_ip,
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            loaded.accounts[1].signin_ip,
            Some("203.0.113.10".parse().unwrap())
        );
        let bad = format!("[defaults]\nsignin_ip = \"office\"\n{BASE}").replacen(
            "secret = \"a\"\n",
            "secret = \"a\"\nsignin_apps = [\"Exchange\"]\n",
            1,
        );
        let e = load_str(&bad, Path::new("t.toml")).unwrap_err().to_string();
        assert!(
            e.contains("accounts[0].signin_apps: \"Exchange\" is not an app id"),
            "{e}"
        );
        assert!(
            e.contains("defaults.signin_ip: \"office\" is not an IP address"),
            "{e}"
        );
    }

    #[test]
    fn roles_resolve_with_presets_defaults_and_overrides() {
        let text = format!(
            "[defaults]\nroles = [\"preset:coreview\", \"User Administrator\"]\n{BASE}"
        )
        .replacen(
            "secret = \"b\"\n",
            "secret = \"b\"\nroles = [\"helpdesk administrator\"]\ndisplay_name = \"CoreView B\"\n",
            1,
        );
        let loaded = load_str(&text, Path::new("t.toml")).unwrap();
        let a = loaded.accounts[0].roles.as_ref().unwrap();
        assert_eq!(
            a.len(),
            7,
            "the preset's seven, User Administrator once: {a:?}"
        );
        assert_eq!(loaded.accounts[0].display_name, "a");
        let b = loaded.accounts[1].roles.as_ref().unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].name, "Helpdesk Administrator");
        assert_eq!(loaded.accounts[1].display_name, "CoreView B");
        assert!(load_str(BASE, Path::new("t.toml")).unwrap().accounts[0]
            .roles
            .is_none());
    }

    #[test]
    fn an_unknown_role_is_refused_at_its_key_with_close_matches() {
        let text = BASE.replacen(
            "secret = \"b\"\n",
            "secret = \"b\"\nroles = [\"Global Reader\", \"Exchange Admin\"]\n",
            1,
        );
        let e = load_str(&text, Path::new("t.toml")).unwrap_err();
        let problems = e.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "accounts[1].roles[1]");
        assert!(
            problems[0]
                .message
                .contains("did you mean \"Exchange Administrator\""),
            "{}",
            problems[0].message
        );
        let e = load_str(
            &format!("[defaults]\nroles = [\"preset:core\"]\n{BASE}"),
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("defaults.roles[0]: \"preset:core\" is not a preset"),
            "{e}"
        );
    }

    #[test]
    fn provision_identity_must_exist_and_is_warned_when_it_is_the_daemons() {
        let text = BASE.replacen(
            "secret = \"a\"\n",
            "secret = \"a\"\nprovision_identity = \"operator\"\n",
            1,
        );
        let e = load_str(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "accounts[0].provision_identity: \"operator\" is not defined under [identities]"
            ),
            "{e}"
        );
        let ok = format!("{text}\n[identities.operator]\nkind = \"azure_cli\"\n");
        let loaded = load_str(&ok, Path::new("t.toml")).unwrap();
        assert_eq!(
            loaded.accounts[0].provision_identity.as_deref(),
            Some("operator")
        );
        assert_eq!(loaded.accounts[1].provision_identity, None);
        assert!(crate::config::provision_warnings(&loaded.config).is_empty());
        let shared = format!("[defaults]\nprovision_identity = \"rotator\"\n{BASE}");
        let loaded = load_str(&shared, Path::new("t.toml")).unwrap();
        let w = crate::config::provision_warnings(&loaded.config);
        assert_eq!(w.len(), 2, "one warning per account: {w:?}");
        assert_eq!(w[0].0, "defaults.provision_identity");
        assert!(w[1].1.starts_with("account \"b\""), "{w:?}");
        assert!(
            w[0].1.contains("the identity the daemon rotates it with"),
            "{w:?}"
        );
    }
}
