//! `keyturn plan`: what `keyturn run` would do to each account at start-up, read from Key
//! Vault without writing anything (no Key Vault writes, no Graph requests, no audit record,
//! no lock, no state file). It decides each account as the daemon's start-up does
//! (`daemon::first_due_at`) and reads the pause file the daemon would apply.
//!
//! Like the daemon's start-up (`daemon/listing.rs`), it lists each vault once (25 secrets a
//! request, tags and attributes, no values) instead of reading two secrets per account: the
//! listing shows whether `<secret>-pending` is tagged `pending` (with its rotation id) and when
//! `<secret>` was rotated. An account whose vault cannot be listed, or whose latest version is
//! disabled in the listing, is read as before.

use crate::azure::SetupError;
use crate::config::Loaded;
use crate::daemon::{first_due_at, FirstDue, Managed, PauseFile, PauseFileError};
use crate::store::{tag, Listing};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Vaults listed, or accounts read (two Key Vault reads each), at once: well inside Key
/// Vault's limits.
const CONCURRENCY: usize = 8;

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The HTTP client or a credential cannot be built (as `keyturn run` would fail).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The pause file cannot be read (as `keyturn run` would fail).
    #[error(transparent)]
    Pauses(#[from] PauseFileError),
}

impl PlanError {
    /// The exit code: what `keyturn run` would exit with for the same problem.
    pub fn exit_code(&self) -> i32 {
        match self {
            PlanError::Setup(e) => match e {
                SetupError::Identity { .. } | SetupError::Ca { .. } => crate::config::EXIT_CONFIG,
                SetupError::Http(..) => 1,
            },
            PlanError::Pauses(_) => crate::config::EXIT_CONFIG,
        }
    }
}

/// What start-up would do to one account.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Planned {
    /// The account's name.
    pub account: String,
    /// `complete_pending`, `rotate_now`, `next_rotation`, `awaiting_adoption`, `retired`, `disabled`,
    /// `paused`, or `error` (Key Vault could not be read).
    pub action: &'static str,
    /// When (`next_rotation`: the due time; `rotate_now`: when it fell due, if it had a secret).
    #[serde(with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
    /// Why, and what to do about it.
    pub detail: String,
}

/// The plan for every account, in the configuration's order.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The configuration file.
    pub config: PathBuf,
    /// When the plan was made (due times are judged against it).
    #[serde(with = "time::serde::rfc3339")]
    pub now: OffsetDateTime,
    /// Each account.
    pub accounts: Vec<Planned>,
}

impl Plan {
    /// True when an account's Key Vault could not be read.
    pub fn has_errors(&self) -> bool {
        self.accounts.iter().any(|a| a.action == "error")
    }

    /// The plan for a person.
    pub fn human(&self) -> String {
        let mut out = format!(
            "keyturn plan for {}: what `keyturn run` would do at start-up (read-only: nothing was changed)\n\n{:<20} {:<18} {}\n",
            self.config.display(),
            "ACCOUNT",
            "ACTION",
            "WHEN"
        );
        for a in &self.accounts {
            let when = a.at.and_then(|t| t.format(&Rfc3339).ok());
            out.push_str(&format!(
                "{:<20} {:<18} {}\n",
                a.account,
                a.action,
                when.as_deref().unwrap_or("-")
            ));
            out.push_str(&format!("    {}\n", a.detail));
        }
        out
    }
}

/// Reads what start-up needs from Key Vault for every account and says what it would do.
pub async fn plan(loaded: &Loaded, now: OffsetDateTime) -> Result<Plan, PlanError> {
    let paused = PauseFile::in_dir(&loaded.config.daemon.state_dir).load()?;
    let http = crate::azure::http_client(
        &loaded.config.tls,
        &loaded.config.network,
        crate::observe::unobserved(),
    )?;
    let accounts = crate::app::accounts(loaded, &http)?;
    let listings = crate::store::list_vaults(
        accounts
            .iter()
            .filter(|m| m.enabled)
            .map(|m| m.account.store.clone()),
        CONCURRENCY,
    )
    .await;
    let paused = &paused;
    let accounts = futures::stream::iter(accounts.iter())
        .map(|m| {
            let listing = listings
                .get(m.account.store.vault())
                .and_then(Option::as_ref);
            plan_one(m, paused, now, listing)
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    Ok(Plan {
        config: loaded.path.clone(),
        now,
        accounts,
    })
}

/// What start-up would find of the account in its vault: the `keyturn retire` marker, a
/// pending rotation (its id, and whether `keyturn provision` staged it), or its current
/// version's rotation time (`None`: no secret).
enum Found {
    Retired(crate::store::Tags),
    Pending { rotation: String, provision: bool },
    Current(Option<OffsetDateTime>),
}

/// The [`Found`] of a pending staging version.
fn pending(tags: &crate::store::Tags) -> Found {
    let get = |k: &str| tags.get(k).map(String::as_str);
    Found::Pending {
        rotation: get(tag::ROTATION_ID).unwrap_or("?").to_owned(),
        provision: get(tag::TRIGGER) == Some(crate::audit::Trigger::Provision.as_str()),
    }
}

/// What a vault's listing shows of an account: a [`Found`], or no secret at all, when only a
/// read of the deleted secret tells whether `keyturn retire` removed it (as start-up reads
/// it); `None` when the account must be read instead (a disabled latest version, which a
/// read reports).
enum Listed {
    Found(Found),
    Missing,
}

fn found_in(listing: &Listing, secret: &str, staging: &str) -> Option<Listed> {
    let current = listing.get(secret);
    let staged = listing.get(staging);
    if current.is_some_and(|c| !c.enabled) || staged.is_some_and(|s| !s.enabled) {
        return None;
    }
    if let Some(c) = current.filter(|c| c.tag(tag::RETIRED).is_some()) {
        return Some(Listed::Found(Found::Retired(c.tags.clone())));
    }
    if let Some(s) = staged.filter(|s| s.tag(tag::STATE) == Some(tag::PENDING)) {
        return Some(Listed::Found(pending(&s.tags)));
    }
    Some(match current {
        Some(c) => Listed::Found(Found::Current(Some(
            crate::protocol::rotated_at_of(&c.tags, c.created)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        ))),
        None => Listed::Missing,
    })
}

/// An account the listing shows without a secret: retired (its deleted secret carries the
/// marker), or never there.
async fn missing(account: &crate::protocol::Account) -> Result<Found, crate::store::StoreError> {
    Ok(match crate::daemon::retired_deleted(account).await? {
        Some(tags) => Found::Retired(tags),
        None => Found::Current(None),
    })
}

/// [`Found`] from reads, as start-up makes them without a listing: the staging secret, then
/// the current one, whose tags (or, when it is gone, the deleted secret's) carry the retire
/// marker. (`keyturn retire` refuses an account with a rotation pending, so a pending
/// staging version is never a retired account's.)
async fn found_by_reads(
    account: &crate::protocol::Account,
) -> Result<Found, (String, crate::store::StoreError)> {
    let staged = account
        .store
        .latest(&account.staging())
        .await
        .map_err(|e| (account.staging(), e))?;
    if let Some(s) =
        staged.filter(|s| s.tag(tag::STATE) == Some(tag::PENDING) && s.tag(tag::RETIRED).is_none())
    {
        return Ok(pending(&s.tags));
    }
    let current = account
        .store
        .latest(&account.secret)
        .await
        .map_err(|e| (account.secret.clone(), e))?;
    match current {
        Some(c) if c.tag(tag::RETIRED).is_some() => Ok(Found::Retired(c.tags)),
        Some(c) => Ok(Found::Current(Some(
            crate::protocol::rotated_at(&c).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        ))),
        None => missing(account)
            .await
            .map_err(|e| (account.secret.clone(), e)),
    }
}

async fn plan_one(
    m: &Managed,
    paused: &BTreeSet<String>,
    now: OffsetDateTime,
    listing: Option<&Listing>,
) -> Planned {
    let account = &m.account;
    let planned = |action, at, detail: String| Planned {
        account: account.name.clone(),
        action,
        at,
        detail,
    };
    if !m.enabled {
        return planned(
            "disabled",
            None,
            "enabled = false: left alone (no Azure calls); set enabled = true and reload to manage it".into(),
        );
    }
    let read_error = |what: &str, e: crate::store::StoreError| {
        planned(
            "error",
            None,
            format!(
                "cannot read {what} in {}: {e}; start-up would retry it with backoff",
                account.store.vault()
            ),
        )
    };
    let found = match listing.and_then(|l| found_in(l, &account.secret, &account.staging())) {
        Some(Listed::Found(found)) => found,
        Some(Listed::Missing) => match missing(account).await {
            Ok(found) => found,
            Err(e) => return read_error(&account.secret, e),
        },
        None => match found_by_reads(account).await {
            Ok(found) => found,
            Err((what, e)) => return read_error(&what, e),
        },
    };
    let rotated = match found {
        Found::Retired(tags) => {
            return planned(
                "retired",
                None,
                format!(
                    "{}: never rotated or re-created; remove it from the configuration",
                    crate::store::retired_detail(&tags)
                ),
            )
        }
        Found::Pending {
            rotation,
            provision: true,
        } => {
            return planned(
                "complete_pending",
                None,
                format!(
                    "`keyturn provision` left the new user's password pending in {} (provisioning {rotation}): start-up leaves it to `keyturn provision {}`; run that to complete it",
                    account.staging(),
                    account.name
                ),
            );
        }
        Found::Pending {
            rotation,
            provision: false,
        } => {
            return planned(
                "complete_pending",
                None,
                format!(
                    "rotation {rotation} was left pending in {}: recovery completes it (or abandons it if Entra never took it) before anything else{}",
                    account.staging(),
                    if paused.contains(&account.name) { "; the account stays paused after" } else { "" }
                ),
            );
        }
        Found::Current(rotated) => rotated,
    };
    let then = match first_due_at(m, rotated, now) {
        FirstDue::At(due, _, rotated) if due <= now => (
            "rotate_now",
            Some(due),
            format!(
                "overdue: due since {} (password set {})",
                rfc(due),
                rfc(rotated)
            ),
        ),
        FirstDue::At(due, _, rotated) => (
            "next_rotation",
            Some(due),
            format!(
                "on schedule {:?} (password set {})",
                m.schedule.pattern(),
                rfc(rotated)
            ),
        ),
        FirstDue::Missing => (
            "awaiting_adoption",
            None,
            format!(
                "no secret {:?} in {}: left alone until `keyturn adopt {} --reason R` (or store the current password in it, or set on_missing_secret = \"rotate\")",
                account.secret,
                account.store.vault(),
                account.name
            ),
        ),
        FirstDue::RotateMissing => (
            "rotate_now",
            None,
            format!(
                "no secret {:?} in {}: on_missing_secret = \"rotate\", so a first rotation creates it at once",
                account.secret,
                account.store.vault()
            ),
        ),
    };
    if paused.contains(&account.name) {
        return planned(
            "paused",
            None,
            format!(
                "paused (kept in {}): nothing is rotated until `keyturn resume {}`; then: {} {}",
                crate::daemon::PAUSE_FILE,
                account.name,
                then.0,
                then.2
            ),
        );
    }
    planned(then.0, then.1, then.2)
}

fn rfc(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::OnMissingSecret;
    use crate::memory::{MemoryDirectory, MemoryVault};
    use crate::password::PasswordPolicy;
    use crate::protocol::Account;
    use crate::schedule::Schedule;
    use crate::store::Tags;
    use std::sync::Arc;
    use time::macros::datetime;

    #[tokio::test]
    async fn each_account_gets_the_action_start_up_would_take() {
        let now = datetime!(2026-11-20 10:00 UTC);
        let clock = Arc::new(ManualClock::new(now));
        let vault = Arc::new(MemoryVault::new(
            "https://kv.vault.azure.net/",
            clock.clone(),
        ));
        let dir = Arc::new(MemoryDirectory::new(clock.clone()));
        let password = || PasswordPolicy::default().generate().unwrap();
        let rotated = |t: OffsetDateTime| -> Tags {
            [(tag::ROTATED_AT.to_owned(), t.format(&Rfc3339).unwrap())].into()
        };
        // Rotated yesterday: next Monday 03:00. Rotated a month ago: overdue.
        vault.seed("fresh", &password(), rotated(now - time::Duration::days(1)));
        vault.seed(
            "stale",
            &password(),
            rotated(now - time::Duration::days(30)),
        );
        vault.seed(
            "paused",
            &password(),
            rotated(now - time::Duration::days(1)),
        );
        vault.seed(
            "staged",
            &password(),
            rotated(now - time::Duration::days(1)),
        );
        vault.seed(
            "staged-pending",
            &password(),
            [
                (tag::STATE.to_owned(), tag::PENDING.to_owned()),
                (tag::ROTATION_ID.to_owned(), "r-1".to_owned()),
            ]
            .into(),
        );
        let managed = |name: &str, enabled, on_missing| Managed {
            account: Account {
                name: name.into(),
                user: format!("{name}@contoso.onmicrosoft.com"),
                secret: name.into(),
                policy: PasswordPolicy::default(),
                verify: false,
                expiry: None,
                store: vault.clone(),
                directory: dir.clone(),
            },
            schedule: Schedule::new("0 3 * * MON", "UTC", std::time::Duration::ZERO).unwrap(),
            enabled,
            on_missing_secret: on_missing,
        };
        let paused: BTreeSet<String> = ["paused".to_owned()].into();
        let cases = [
            (
                managed("fresh", true, OnMissingSecret::Wait),
                "next_rotation",
            ),
            (managed("stale", true, OnMissingSecret::Wait), "rotate_now"),
            (managed("paused", true, OnMissingSecret::Wait), "paused"),
            (
                managed("staged", true, OnMissingSecret::Wait),
                "complete_pending",
            ),
            (
                managed("new", true, OnMissingSecret::Wait),
                "awaiting_adoption",
            ),
            (managed("new", true, OnMissingSecret::Rotate), "rotate_now"),
            (managed("off", false, OnMissingSecret::Wait), "disabled"),
        ];
        for (m, action) in cases {
            let p = plan_one(&m, &paused, now, None).await;
            assert_eq!(p.action, action, "{}: {p:?}", m.account.name);
            match action {
                "next_rotation" => {
                    assert_eq!(p.at, Some(datetime!(2026-11-23 03:00 UTC)));
                }
                "awaiting_adoption" => {
                    assert!(p.detail.contains("keyturn adopt new --reason R"), "{p:?}");
                }
                "paused" => assert!(p.detail.contains("keyturn resume paused"), "{p:?}"),
                "complete_pending" => assert!(p.detail.contains("rotation r-1"), "{p:?}"),
                _ => {}
            }
        }
        // Nothing was written: only the seeded versions are there.
        assert!(vault.peek("new").is_none());
        assert_eq!(vault.versions("stale").len(), 1);
    }
}
