//! `keyturn doctor`: before anything changes, what will fail and why. Read-only against
//! Azure: for each identity the accounts use (tokens, Graph permissions, clock skew), then
//! for each account (the Entra user, its sign-in readiness under Conditional Access, the Key
//! Vault secret, its age), a list of checks with
//! `pass`, `warn` or `fail`, a one-line finding and the fix. It builds the accounts as
//! [`crate::app`] does (like [`crate::plan`]) and writes nothing: no Key Vault write, no
//! Graph write, no audit record, no lock (except, with `--write-probe`, one probe secret per
//! vault and vault identity, set and deleted: `vault`). Never prints a password or a token.
//! `docs/doctor.md` lists every check.
//!
//! `identity` and `account` hold the checks of each; `roles` the directory-role checks (also
//! called by the daemon's readiness watch); `vault` the write-access check.

mod account;
mod identity;
pub(crate) mod roles;
mod signin;
mod vault;
pub mod watch;

pub(crate) use signin::sign_in_readiness;

use crate::azure::SetupError;
use crate::config::Loaded;
use serde::Serialize;
use std::collections::HashMap;
use time::OffsetDateTime;

/// Exit code when no identity can get a token (`EX_UNAVAILABLE`).
pub const EXIT_NO_TOKEN: i32 = 69;

/// A check's verdict.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Pass,
    /// Works today, but look at it (exit 0).
    Warn,
    /// A rotation would fail (exit 1).
    Fail,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The check's name (`graph_token`, `user_enabled`, ... as `docs/doctor.md` lists them).
    pub check: &'static str,
    /// Its verdict.
    pub status: Status,
    /// The finding, one line.
    pub detail: String,
    /// What to do about it ("" on a pass).
    pub fix: String,
}

impl Check {
    fn pass(check: &'static str, detail: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Pass,
            detail: detail.into(),
            fix: String::new(),
        }
    }
    fn warn(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Warn,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
    fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Fail,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
}

/// A check and whether Graph answered the question behind it. Doctor prints the check
/// either way; the readiness watch (`watch`) takes [`Asked::NoAnswer`] (Graph did not
/// answer, throttled with 429, failed with 5xx, or sent an answer that cannot be read) as
/// unknown, not as a finding.
#[derive(Debug, Clone)]
pub(crate) enum Asked {
    /// Graph's answer, judged.
    Answered(Check),
    /// No usable answer; the check is doctor's warning about that.
    NoAnswer(Check),
}

impl Asked {
    /// The check doctor prints.
    pub(crate) fn check(self) -> Check {
        match self {
            Asked::Answered(c) | Asked::NoAnswer(c) => c,
        }
    }
}

/// The checks of one identity.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityReport {
    /// The identity's name in the configuration.
    pub identity: String,
    /// Its checks.
    pub checks: Vec<Check>,
    /// Whether it got any token (exit 69 when none did).
    #[serde(skip)]
    pub got_token: bool,
}

/// The checks of one account.
#[derive(Debug, Clone, Serialize)]
pub struct AccountReport {
    /// The account's name.
    pub account: String,
    /// Its checks.
    pub checks: Vec<Check>,
}

/// Everything doctor found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Each identity the checked accounts use, in the configuration's order.
    pub identities: Vec<IdentityReport>,
    /// Each checked account, in the configuration's order.
    pub accounts: Vec<AccountReport>,
}

impl Report {
    /// 0 when nothing fails (warnings allowed), 1 when a check fails, 69 when no identity
    /// could get a token.
    pub fn exit_code(&self) -> i32 {
        if !self.identities.is_empty() && self.identities.iter().all(|i| !i.got_token) {
            return EXIT_NO_TOKEN;
        }
        let failed = self
            .identities
            .iter()
            .flat_map(|i| &i.checks)
            .chain(self.accounts.iter().flat_map(|a| &a.checks))
            .any(|c| c.status == Status::Fail);
        i32::from(failed)
    }

    /// The report for a person.
    pub fn human(&self) -> String {
        let mut out = String::from("keyturn doctor (read-only: nothing was changed)\n");
        let mut section = |kind: &str, name: &str, checks: &[Check]| {
            out.push_str(&format!("\n{kind} {name}\n"));
            for c in checks {
                out.push_str(&format!(
                    "  {:<5} {:<18} {}\n",
                    c.status.word(),
                    c.check,
                    c.detail
                ));
                if !c.fix.is_empty() {
                    out.push_str(&format!("        fix: {}\n", c.fix));
                }
            }
        };
        for i in &self.identities {
            section("identity", &i.identity, &i.checks);
        }
        for a in &self.accounts {
            section("account", &a.account, &a.checks);
        }
        let count = |s: Status| {
            self.identities
                .iter()
                .flat_map(|i| &i.checks)
                .chain(self.accounts.iter().flat_map(|a| &a.checks))
                .filter(|c| c.status == s)
                .count()
        };
        out.push_str(&format!(
            "\n{} passed, {} warnings, {} failed\n",
            count(Status::Pass),
            count(Status::Warn),
            count(Status::Fail)
        ));
        out
    }
}

/// Why doctor could not run.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// The HTTP client or a credential cannot be built (as `keyturn run` would fail).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// `--account` names no account of the configuration.
    #[error("no account {0:?} in the configuration: `keyturn check-config` lists them; or leave out --account to check every account")]
    UnknownAccount(String),
}

impl DoctorError {
    /// The exit code: 64 for a configuration or usage problem, 1 for the rest.
    pub fn exit_code(&self) -> i32 {
        match self {
            DoctorError::Setup(e) => match e {
                SetupError::Identity { .. } | SetupError::Ca { .. } => crate::config::EXIT_CONFIG,
                SetupError::Http(..) => 1,
            },
            DoctorError::UnknownAccount(_) => crate::config::EXIT_CONFIG,
        }
    }
}

/// An account's roles as `keyturn adopt` reports them: doctor's `user_roles` check, the
/// roles the account declares (`roles`; display names, `None` when it declares none), the
/// declared ones it lacks and the ones it holds without declaring them (display names; empty
/// when nothing is declared or the roles could not be read).
#[derive(Debug, Clone, Serialize)]
pub struct RoleReport {
    #[serde(flatten)]
    pub check: Check,
    pub declared: Option<Vec<String>>,
    pub missing: Vec<String>,
    pub extra: Vec<String>,
}

impl RoleReport {
    /// The roles could not be checked at all (no configuration, say): why, as a warning.
    pub fn not_checked(why: impl std::fmt::Display, account: &str) -> RoleReport {
        RoleReport {
            check: Check::warn(
                "user_roles",
                format!("not checked: {why}"),
                format!("`keyturn doctor --account {account}` checks the account's roles"),
            ),
            declared: None,
            missing: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// The lines `keyturn adopt` prints under the account's result.
    pub fn human(&self) -> String {
        let mut out = format!(
            "  roles: {}: {}
",
            self.check.status.word(),
            self.check.detail
        );
        if !self.check.fix.is_empty() {
            out.push_str(&format!("    fix: {}\n", self.check.fix));
        }
        out
    }
}

/// `keyturn adopt`'s role check: only `user_roles` for the account `name`, read-only, as
/// doctor runs it (the account identity's Graph token, the user's object id, its role
/// assignments against its declared `roles`).
pub async fn account_roles(loaded: &Loaded, name: &str) -> Result<RoleReport, DoctorError> {
    let a = loaded
        .accounts
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| DoctorError::UnknownAccount(name.to_owned()))?;
    let http = crate::azure::http_client(
        &loaded.config.tls,
        &loaded.config.network,
        crate::observe::unobserved(),
    )?;
    let id = loaded
        .config
        .identities
        .get(&a.identity)
        .ok_or_else(|| DoctorError::UnknownAccount(name.to_owned()))?;
    Ok(account::roles_only(a, &a.identity, id, &http, &loaded.config.network).await?)
}

/// Runs every check for the accounts (`only`: that one) and the identities they use;
/// `write_probe`: confirm each vault identity's write access by setting and deleting a probe
/// secret (`--write-probe`).
pub async fn doctor(
    loaded: &Loaded,
    only: Option<&str>,
    write_probe: bool,
    now: OffsetDateTime,
) -> Result<Report, DoctorError> {
    if let Some(name) = only {
        if !loaded.accounts.iter().any(|a| a.name == name) {
            return Err(DoctorError::UnknownAccount(name.to_owned()));
        }
    }
    let http = crate::azure::http_client(
        &loaded.config.tls,
        &loaded.config.network,
        crate::observe::unobserved(),
    )?;
    let managed = crate::app::accounts(loaded, &http)?;
    let selected: Vec<usize> = (0..loaded.accounts.len())
        .filter(|&i| only.is_none_or(|n| loaded.accounts[i].name == n))
        .collect();
    // The identities the selected accounts use, in the configuration's order, with the
    // vault each is first asked about (for the clock-skew probe).
    let mut names: Vec<(&str, Option<&str>)> = Vec::new();
    for &i in &selected {
        let a = &loaded.accounts[i];
        for (name, vault) in [
            (a.identity.as_str(), None),
            (a.vault_identity.as_str(), Some(a.vault.as_str())),
        ] {
            match names.iter_mut().find(|(n, _)| *n == name) {
                Some(entry) => {
                    if entry.1.is_none() {
                        entry.1 = vault;
                    }
                }
                None => names.push((name, vault)),
            }
        }
    }
    let started = std::time::Instant::now();
    let mut identities = Vec::new();
    let mut graph_tokens = HashMap::new();
    let mut app_roles = HashMap::new();
    for (name, vault) in names {
        let Some(id) = loaded.config.identities.get(name) else {
            continue;
        };
        let checked =
            identity::check(name, id, vault, &http, &loaded.config.network, now, started).await?;
        if let Some(t) = checked.graph_token {
            graph_tokens.insert(name.to_owned(), t);
        }
        if let Some(r) = checked.app_roles {
            app_roles.insert(name.to_owned(), r);
        }
        identities.push(checked.report);
    }
    // The secret checks of every account at once: each vault listed once per vault identity
    // (25 secrets a request) instead of each account's staging secret read; one account
    // (`--account`) is read, as a listing of the whole vault would cost more.
    let mut listings: HashMap<&str, HashMap<String, Option<crate::store::Listing>>> =
        HashMap::new();
    if only.is_none() {
        let mut by_identity: HashMap<&str, Vec<_>> = HashMap::new();
        for &i in &selected {
            if loaded.accounts[i].enabled {
                by_identity
                    .entry(loaded.accounts[i].vault_identity.as_str())
                    .or_default()
                    .push(managed[i].account.store.clone());
            }
        }
        for (identity, stores) in by_identity {
            listings.insert(identity, crate::store::list_vaults(stores, 4).await);
        }
    }
    let mut accounts = Vec::new();
    // One write probe per vault and vault identity.
    let mut vault_writes: HashMap<(String, String), Check> = HashMap::new();
    for &i in &selected {
        let a = &loaded.accounts[i];
        let id = &loaded.config.identities[&a.identity];
        let key = (a.vault.clone(), a.vault_identity.clone());
        let vault_write = match (vault_writes.get(&key), write_probe) {
            (Some(c), _) => c.clone(),
            (None, false) => vault::unconfirmed(&a.vault_identity),
            (None, true) => match loaded.config.identities.get(&a.vault_identity) {
                Some(vid) => {
                    vault::probe(
                        &a.vault,
                        &a.vault_identity,
                        vid,
                        &http,
                        &loaded.config.network,
                        &vault::probe_name(),
                    )
                    .await
                }
                None => vault::unconfirmed(&a.vault_identity),
            },
        };
        vault_writes.insert(key, vault_write.clone());
        let from = account::FromIdentity {
            graph_token: graph_tokens.get(&a.identity),
            app_roles: app_roles.get(&a.identity).map(Vec::as_slice),
            vault_write,
        };
        let listing = listings
            .get(a.vault_identity.as_str())
            .and_then(|l| l.get(managed[i].account.store.vault()))
            .and_then(Option::as_ref);
        accounts.push(account::check(a, id, &managed[i], from, &http, now, listing).await);
    }
    Ok(Report {
        identities,
        accounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(got_token: bool, status: Status) -> IdentityReport {
        IdentityReport {
            identity: "id".into(),
            checks: vec![Check {
                check: "graph_token",
                status,
                detail: String::new(),
                fix: String::new(),
            }],
            got_token,
        }
    }

    #[test]
    fn the_exit_code_is_0_with_warnings_1_with_a_failure_69_without_any_token() {
        let report = |identities| Report {
            identities,
            accounts: vec![],
        };
        assert_eq!(report(vec![identity(true, Status::Warn)]).exit_code(), 0);
        assert_eq!(
            report(vec![
                identity(true, Status::Pass),
                identity(false, Status::Fail)
            ])
            .exit_code(),
            1
        );
        assert_eq!(
            report(vec![
                identity(false, Status::Fail),
                identity(false, Status::Fail)
            ])
            .exit_code(),
            EXIT_NO_TOKEN
        );
    }
}
