//! Start-up and drift checks from vault listings: one `GET /secrets` listing per vault
//! (25 secrets a page, tags and attributes, no values) tells each account's due time and
//! whether its staging secret is tagged `pending`, so N accounts in a vault cost about
//! 2N/25 list requests instead of 2N value reads. Only an account whose staging secret is
//! pending (normally none), or whose drift check Graph suggests, is then read.
//!
//! An account the listing shows consistent and not yet due is scheduled from it at once,
//! with no job: its drift check (Graph's last password change, one user read) runs
//! afterwards in [`drift_reads`], which holds no account, so start-up is ready once the
//! listings are in and a command sent meanwhile is not refused as busy. Only an account
//! Graph suggests has drifted is then reconciled (read, confirmed, rotated).
//!
//! A vault whose listing fails (no list permission, throttling that outlasts the SDK's
//! retries, an unreadable answer) is not an error: its accounts are reconciled as before,
//! each with its own reads, and a warning names the vault and the cause.

use super::jobs::Listed;
use super::Daemon;
use crate::protocol::rotated_at_of;
use crate::store::{self, staging_name, tag, ListedSecret, SecretStore};
use std::collections::HashMap;
use std::sync::Arc;
use time::OffsetDateTime;

/// One account in a listing: what it was when the listing was planned.
pub(super) struct Entry {
    /// The account's name (indices change on reload).
    pub(super) name: String,
    /// Its vault (normalised) and secret, to tell a reload that moved it.
    vault: String,
    secret: String,
    /// The slot's job count then: a job that ended since has fresher facts than the list.
    pub(super) epoch: u64,
}

/// One vault to list and the accounts in it.
pub(super) struct VaultList {
    /// The first account's store (every store of the vault lists the same secrets).
    store: Arc<dyn SecretStore>,
    accounts: Vec<Entry>,
}

/// Each account with what the listing showed of it (`None`: read it instead).
pub(super) type Outcome = Vec<(Entry, Option<Listed>)>;

impl Daemon {
    /// The vaults of the accounts `idxs`, each with its accounts.
    pub(super) fn vault_lists(&self, idxs: &[usize]) -> Vec<VaultList> {
        let mut lists: Vec<VaultList> = Vec::new();
        let mut by_vault: HashMap<String, usize> = HashMap::new();
        for &idx in idxs {
            let slot = &self.slots[idx];
            let account = &slot.managed.account;
            let vault = crate::config::normalize_vault(account.store.vault());
            let entry = Entry {
                name: account.name.clone(),
                vault: vault.clone(),
                secret: account.secret.clone(),
                epoch: slot.epoch,
            };
            match by_vault.get(&vault) {
                Some(&i) => lists[i].accounts.push(entry),
                None => {
                    by_vault.insert(vault, lists.len());
                    lists.push(VaultList {
                        store: account.store.clone(),
                        accounts: vec![entry],
                    });
                }
            }
        }
        lists
    }

    /// Starts, for each listed account still as it was when listed (same vault and secret,
    /// no job ended since, not busy; not paused when `skip_paused`), a reconcile from its
    /// listing, or from its own reads when its vault could not be listed.
    pub(super) fn reconcile_listed(
        &mut self,
        outcome: Outcome,
        trigger: crate::audit::Trigger,
        skip_paused: bool,
    ) {
        let mut ask_graph = Vec::new();
        for (entry, listed) in outcome {
            let Some(&idx) = self.index.get(&entry.name) else {
                continue;
            };
            let slot = &self.slots[idx];
            if slot.busy
                || !slot.managed.enabled
                || (skip_paused && slot.paused)
                || !self.still_as_listed(idx, &entry)
            {
                continue;
            }
            // The common case: scheduled from the listing at once, its drift check asked of
            // Graph afterwards without holding the account.
            if let Some(rotated) = listed.and_then(|l| self.schedule_from_listing(idx, l)) {
                ask_graph.push(DriftRead {
                    managed: self.slots[idx].managed.clone(),
                    entry,
                    rotated,
                });
                continue;
            }
            let job = match listed {
                Some(listed) => super::jobs::Job::ReconcileListed(listed),
                None => super::jobs::Job::Reconcile,
            };
            self.spawn(
                idx,
                job,
                crate::protocol::Request::daemon(trigger),
                None,
                None,
            );
        }
        // Spawned with no account too, so that every round ends with its log line.
        let engine = self.engine.clone();
        let concurrency = self.settings.max_concurrent.max(1);
        self.drift_reads
            .spawn(drift_reads(engine, ask_graph, trigger, concurrency));
    }

    /// The drift reads are in: each account Graph suggests has drifted, and that is still
    /// as listed and free, is reconciled the reading way (which confirms the drift on a
    /// fresh read of its secret and rotates). One busy since is left to what it is doing (a
    /// rotation replaces the password anyway), and the next drift check comes back to it.
    pub(super) fn drift_read(&mut self, done: DriftReads) {
        let DriftReads {
            trigger,
            checked,
            failed,
            suspected,
        } = done;
        let mut reconciled = 0;
        for entry in &suspected {
            let Some(&idx) = self.index.get(&entry.name) else {
                continue;
            };
            let slot = &self.slots[idx];
            if slot.busy || !slot.managed.enabled || !self.still_as_listed(idx, entry) {
                continue;
            }
            self.spawn_reconcile(idx, trigger);
            reconciled += 1;
        }
        tracing::info!(
            checked,
            failed,
            suspected = suspected.len(),
            reconciled,
            ?trigger,
            "drift check: Graph's last password changes read"
        );
        if self.tasks.is_empty() {
            crate::idle::release();
        }
    }
}

/// One account whose drift check asks Graph: its entry as listed, the rotation time the
/// listing showed.
pub(super) struct DriftRead {
    managed: Arc<super::Managed>,
    entry: Entry,
    rotated: OffsetDateTime,
}

/// What the drift reads found.
pub(super) struct DriftReads {
    trigger: crate::audit::Trigger,
    /// Accounts whose user Graph answered for.
    checked: usize,
    /// Accounts whose user read failed (logged each; the next drift check tries again).
    failed: usize,
    /// Accounts whose Entra password changed after the listed rotation time.
    suspected: Vec<Entry>,
}

/// Reads each account's user from Graph (`concurrency` at a time; each read is paced by
/// its tenant's Graph allowance) and says which ones look drifted. Records nothing:
/// [`Daemon::drift_read`] confirms each suspicion before anything is done.
async fn drift_reads(
    engine: Arc<crate::protocol::Engine>,
    accounts: Vec<DriftRead>,
    trigger: crate::audit::Trigger,
    concurrency: usize,
) -> DriftReads {
    use futures::StreamExt;
    let mut out = DriftReads {
        trigger,
        checked: 0,
        failed: 0,
        suspected: Vec::new(),
    };
    let mut reads = futures::stream::iter(accounts)
        .map(|read| {
            let engine = engine.clone();
            async move {
                let r = engine
                    .drift_suspected(&read.managed.account, read.rotated)
                    .await;
                (read.entry, r)
            }
        })
        .buffer_unordered(concurrency);
    while let Some((entry, r)) = reads.next().await {
        match r {
            Ok(true) => {
                out.checked += 1;
                out.suspected.push(entry);
            }
            Ok(false) => out.checked += 1,
            Err(e) => {
                // Drift needs Graph's user read; its failure must not block scheduling.
                tracing::warn!(account = %entry.name, error = %e, "drift check skipped");
                out.failed += 1;
            }
        }
    }
    out
}

impl Daemon {
    /// The account at `idx` is still as it was when `entry` was listed: no job ended since,
    /// the same vault and secret.
    pub(super) fn still_as_listed(&self, idx: usize, entry: &Entry) -> bool {
        let slot = &self.slots[idx];
        let account = &slot.managed.account;
        slot.epoch == entry.epoch
            && account.secret == entry.secret
            && crate::config::normalize_vault(account.store.vault()) == entry.vault
    }
}

/// Lists every vault (at once; each vault's pages one after the other, paced by its
/// budget) and says, per account, what its listing showed.
pub(super) async fn run(lists: Vec<VaultList>) -> Outcome {
    let mut set = tokio::task::JoinSet::new();
    for list in lists {
        set.spawn(async move {
            let listed = store::list_all(list.store.as_ref()).await;
            if let Err(e) = &listed {
                tracing::warn!(
                    vault = %list.store.vault(),
                    accounts = list.accounts.len(),
                    error = %e,
                    "cannot list the vault's secrets; reading each account's secrets instead (two reads per account)"
                );
            }
            let listed = listed.ok();
            list.accounts
                .into_iter()
                .map(|entry| {
                    let of = listed.as_ref().and_then(|all| of_account(all, &entry.secret));
                    (entry, of)
                })
                .collect::<Outcome>()
        });
    }
    let mut out = Vec::new();
    while let Some(done) = set.join_next().await {
        match done {
            Ok(part) => out.extend(part),
            // A panic in a listing task is a bug; its accounts are not reconciled now (the
            // next drift check or their due time comes back to them).
            Err(e) => tracing::error!(error = %e, "a vault listing task failed"),
        }
    }
    out
}

/// What the listing `all` shows of the account whose secret is `secret`; `None` when it
/// must be read instead: a disabled latest version (whose read answers 403, which the
/// reading way reports as it always has).
fn of_account(all: &HashMap<String, ListedSecret>, secret: &str) -> Option<Listed> {
    let current = all.get(secret);
    let staged = all.get(&staging_name(secret));
    if current.is_some_and(|c| !c.enabled) || staged.is_some_and(|s| !s.enabled) {
        return None;
    }
    // Retired (`keyturn retire` tagged it before deleting it): the reading way says so.
    if current.is_some_and(|c| c.tag(tag::RETIRED).is_some()) {
        return None;
    }
    Some(Listed {
        pending: staged.is_some_and(|s| s.tag(tag::STATE) == Some(tag::PENDING)),
        rotated: current
            .map(|c| rotated_at_of(&c.tags, c.created).unwrap_or(OffsetDateTime::UNIX_EPOCH)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Tags;
    use time::macros::datetime;

    fn item(name: &str, tags: &[(&str, &str)], enabled: bool) -> (String, ListedSecret) {
        (
            name.to_owned(),
            ListedSecret {
                name: name.to_owned(),
                tags: tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Tags>(),
                created: Some(datetime!(2026-01-01 0:00 UTC)),
                enabled,
            },
        )
    }

    #[test]
    fn a_listing_tells_pending_and_rotation_time() {
        let all: HashMap<_, _> = [
            item("a", &[(tag::ROTATED_AT, "2026-03-01T00:00:00Z")], true),
            item("a-pending", &[(tag::STATE, tag::COMMITTED)], true),
            item("b", &[], true),
            item("b-pending", &[(tag::STATE, tag::PENDING)], true),
            item("c", &[], false),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            of_account(&all, "a"),
            Some(Listed {
                pending: false,
                rotated: Some(datetime!(2026-03-01 0:00 UTC))
            })
        );
        // No tag: an adopted secret's creation time.
        assert_eq!(
            of_account(&all, "b"),
            Some(Listed {
                pending: true,
                rotated: Some(datetime!(2026-01-01 0:00 UTC))
            })
        );
        assert_eq!(of_account(&all, "c"), None);
        assert_eq!(
            of_account(&all, "d"),
            Some(Listed {
                pending: false,
                rotated: None
            })
        );
    }
}
