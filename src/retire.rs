//! `keyturn retire ACCOUNT… --reason R [--ticket T] [--delete] [--dry-run] [--json]`: take
//! accounts out of management for good (`docs/lifecycle.md`, "Retire").
//!
//! It runs in the command's own process, like `doctor`, from the configuration: Graph with
//! the account's `provision_identity` (the daemon's everyday identity usually may not
//! disable or delete a user holding admin roles), Key Vault with the account's own vault
//! identity. For each account, in this order: the user is disabled (`--delete`: deleted;
//! Entra keeps it 30 days in its deleted items), the latest versions of `<secret>` and
//! `<secret>-pending` are tagged `keyturn-retired` (with who, why, the ticket and what was
//! done to the user), and both secrets are soft-deleted. The tag is the durable marker: the
//! daemon reads it (on the secret, or on the deleted secret through `GET
//! /deletedsecrets/{name}`) before anything else, so a retired account is never rotated or
//! re-created, after a restart and on every `[ha]` replica, `on_missing_secret = "rotate"`
//! included.
//!
//! The record: when a daemon answers on the admin socket, it is asked to reconcile the
//! account (so it stops it at once and says `retired` in `status`) and records
//! `account.retired` with the caller as actor; when none answers, this command takes the
//! daemon's lock and records it in the audit log itself. A second retire finds the marker and
//! says the account is retired already.

use crate::admin;
use crate::audit::{Actor, AuditEvent, AuditSink, EventKind, Outcome, Trigger};
use crate::azure::graph::{GraphDirectory, GraphSettings};
use crate::azure::keyvault::KeyVaultStore;
use crate::config::{Loaded, ResolvedAccount, EXIT_CONFIG};
use crate::directory::{Directory, DirectoryError};
use crate::store::{retired_detail, staging_name, tag, SecretStore, StoreError, Tags};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

use crate::admin::client::EXIT_BUSY;

/// Exit code when the daemon stops answering (`EX_UNAVAILABLE`, as the socket commands).
const EXIT_UNAVAILABLE: i32 = 69;
/// Key Vault's longest tag value.
const MAX_TAG: usize = 256;

/// What `keyturn retire` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub accounts: Vec<String>,
    pub reason: String,
    pub ticket: Option<String>,
    pub delete: bool,
    pub dry_run: bool,
    pub json: bool,
    /// The admin socket (`--socket`); else the configuration's.
    pub socket: Option<PathBuf>,
}

/// One account's outcome, as printed (`--json`: this, one per account).
#[derive(Debug, Clone, Serialize)]
struct Report {
    account: String,
    /// `retired`, `already_retired`, `planned` (dry run) or `failed`.
    result: &'static str,
    /// What was done (or, for a dry run, would be), in order.
    steps: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The tags set on the secrets (for the record).
    #[serde(skip)]
    marker: Tags,
}

/// What Key Vault and Graph show of one account before anything is done.
struct Found {
    /// The latest version of `<secret>`: its version and tags; `None`: no live secret.
    secret: Option<(String, Tags)>,
    /// The same for `<secret>-pending`.
    staging: Option<(String, Tags)>,
    /// The deleted `<secret>`'s tags when it is retired.
    deleted_retired: Option<Tags>,
    /// The user's `accountEnabled` (`None`: not said); the outer `None`: no such user.
    user: Option<Option<bool>>,
}

fn actor_name() -> String {
    match Actor::current_user() {
        Actor::User { uid, name, .. } => name.unwrap_or_else(|| format!("uid {uid}")),
        Actor::Daemon => "keyturn".into(),
    }
}

fn bounded(s: &str) -> String {
    s.chars().take(MAX_TAG).collect()
}

/// The text for a Graph refusal: what the provision identity lacks.
fn graph_refusal(e: &DirectoryError, identity: &str, delete: bool) -> String {
    let what = if delete { "delete" } else { "disable" };
    match e {
        DirectoryError::Rejected {
            status: 403,
            code,
            message,
            ..
        } => format!(
            "Graph refused to {what} the user with the provision identity {identity:?} (HTTP 403 {code}: {message}): it needs the Graph application permission User.ReadWrite.All{} and, for a user holding admin roles, the directory role Privileged Authentication Administrator (Microsoft's \"Who can perform sensitive actions\"); a signed-in identity (azure_cli) needs that role itself",
            if delete {
                ""
            } else {
                " (or User.EnableDisableAccount.All)"
            }
        ),
        other => format!("could not {what} the user with the provision identity {identity:?}: {other}"),
    }
}

/// `keyturn retire`: returns the exit code.
pub async fn run(loaded: Loaded, opts: Options) -> i32 {
    // The accounts and their provision identities first: a usage error changes nothing.
    let mut targets: Vec<(ResolvedAccount, String)> = Vec::new();
    for name in &opts.accounts {
        let Some(a) = loaded.accounts.iter().find(|a| &a.name == name) else {
            eprintln!("keyturn: no account named {name:?} is configured");
            return EXIT_CONFIG;
        };
        let Some(pi) = a.provision_identity.clone() else {
            eprintln!("keyturn: account {name:?} has no provision_identity: retire disables or deletes its user with that identity (the daemon's everyday identity usually may not). Set accounts[].provision_identity or defaults.provision_identity to an identity with the Graph permission User.ReadWrite.All and the role Privileged Authentication Administrator (docs/lifecycle.md)");
            return EXIT_CONFIG;
        };
        targets.push((a.clone(), pi));
    }
    let http = match crate::azure::http_client(
        &loaded.config.tls,
        &loaded.config.network,
        crate::observe::unobserved(),
    ) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("keyturn: {e}");
            return EXIT_CONFIG;
        }
    };
    let credentials = match crate::app::credentials(&loaded, &http) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keyturn: {e}");
            return EXIT_CONFIG;
        }
    };

    // Where the record goes: a daemon that answers, or the audit log under its lock.
    let socket = opts
        .socket
        .clone()
        .unwrap_or_else(|| loaded.config.admin.socket.clone());
    let daemon = if opts.dry_run {
        None
    } else {
        admin::client::send(&socket, &admin::proto::Request::Status)
            .await
            .ok()
    };
    if daemon.is_some() {
        // Paused first, so that the schedule starts no rotation while the secrets change
        // (the pause goes with the account when it leaves the configuration); then any
        // rotation already running is waited for, up to a minute.
        let names: Vec<String> = targets.iter().map(|(a, _)| a.name.clone()).collect();
        for name in &names {
            let req = admin::proto::Request::Pause(admin::proto::Target::One(name.clone()));
            match admin::client::send(&socket, &req).await {
                Ok(r) if r.ok => {}
                Ok(r) => {
                    eprintln!(
                        "keyturn: the daemon did not pause {name:?} ({}); nothing was changed",
                        r.encode()
                    );
                    return admin::client::exit_code(&r).max(1);
                }
                Err(e) => {
                    eprintln!("keyturn: the daemon did not answer the pause of {name:?} ({e}); nothing was changed");
                    return EXIT_UNAVAILABLE;
                }
            }
        }
        let mut busy = Vec::new();
        for _ in 0..120 {
            busy = busy_accounts(&socket, &names).await;
            if busy.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        if !busy.is_empty() {
            eprintln!(
                "keyturn: the daemon is still rotating {} after a minute; it is paused now, retire it again when that ends (nothing else was changed)",
                busy.join(", ")
            );
            return EXIT_BUSY;
        }
    }
    let mut offline: Option<(crate::daemon::InstanceLock, Arc<dyn AuditSink>)> = None;
    if daemon.is_none() && !opts.dry_run {
        let lock = match crate::daemon::InstanceLock::acquire(&loaded.config.daemon.state_dir) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("keyturn: no daemon answers on {} and its lock cannot be taken to write the audit log ({e}); run retire as the service user (sudo -u keyturn …) or while the daemon runs", socket.display());
                return EXIT_CONFIG;
            }
        };
        match crate::service::audit_sinks(&loaded) {
            Ok(sink) => offline = Some((lock, sink)),
            Err(e) => {
                eprintln!("keyturn: cannot open the audit log: {e}");
                return e.exit_code();
            }
        }
    }

    let mut reports = Vec::new();
    let mut code = 0;
    for (a, pi) in &targets {
        let report = match retire_one(&loaded, a, pi, &opts, &http, &credentials).await {
            Ok(r) => r,
            Err(r) => {
                code = 1;
                r
            }
        };
        if report.result == "retired" {
            let recorded = record(
                a,
                &opts,
                &report.marker,
                &socket,
                daemon.is_some(),
                offline.as_ref(),
            )
            .await;
            code = code.max(recorded);
        }
        reports.push(report);
    }
    if let Some((lock, _)) = offline {
        lock.release();
    }
    if opts.json {
        println!("{}", serde_json::to_string(&reports).unwrap_or_default());
    } else {
        for r in &reports {
            print!("{}", human(r, opts.dry_run));
        }
    }
    code
}

/// Which of `names` the daemon reports busy (a rotation or reconcile runs).
async fn busy_accounts(socket: &std::path::Path, names: &[String]) -> Vec<String> {
    let Ok(status) = admin::client::send(socket, &admin::proto::Request::Status).await else {
        return Vec::new();
    };
    let accounts = status
        .result
        .as_ref()
        .and_then(|r| r.get("accounts"))
        .and_then(|a| a.as_array())
        .cloned()
        .unwrap_or_default();
    names
        .iter()
        .filter(|n| {
            accounts.iter().any(|s| {
                s.get("name").and_then(|x| x.as_str()) == Some(n.as_str())
                    && s.get("busy").and_then(|b| b.as_bool()) == Some(true)
            })
        })
        .cloned()
        .collect()
}

fn human(r: &Report, dry_run: bool) -> String {
    let head = match r.result {
        "planned" => "would be retired (dry run: nothing was changed)",
        "retired" => "retired",
        "already_retired" => "is retired already; nothing to do",
        _ => "NOT retired",
    };
    let mut out = format!("{}: {head}\n", r.account);
    for s in &r.steps {
        out.push_str(&format!("  - {s}\n"));
    }
    if let Some(e) = &r.error {
        out.push_str(&format!("  error: {e}\n"));
    }
    if r.result == "retired" && !dry_run {
        out.push_str("  keyturn never rotates it again; remove it from the configuration.\n");
    }
    out
}

/// The daemon learns of it (a reconcile, which finds the marker and records
/// `account.retired`), or the record is written here.
async fn record(
    a: &ResolvedAccount,
    opts: &Options,
    marker: &Tags,
    socket: &std::path::Path,
    daemon: bool,
    offline: Option<&(crate::daemon::InstanceLock, Arc<dyn AuditSink>)>,
) -> i32 {
    if daemon {
        let req = admin::proto::Request::Reconcile(admin::proto::Target::One(a.name.clone()));
        return match admin::client::send(socket, &req).await {
            Ok(r) if r.ok => 0,
            Ok(r) => {
                eprintln!("keyturn: {:?} is retired, but the daemon did not take the reconcile that records it ({}); `keyturn reconcile {}` on the daemon that leads records it", a.name, r.encode(), a.name);
                1
            }
            Err(e) => {
                eprintln!("keyturn: {:?} is retired, but the daemon could not be told ({e}); it finds the account retired at its next reconcile or start", a.name);
                0
            }
        };
    }
    let Some((_, sink)) = offline else {
        return 0;
    };
    let mut ev = AuditEvent::new(EventKind::AccountRetired, time::OffsetDateTime::now_utc());
    ev.account = Some(a.name.clone());
    ev.user = Some(a.user.clone());
    ev.vault = Some(a.vault.clone());
    ev.secret = Some(a.secret.clone());
    ev.actor = Some(Actor::current_user());
    ev.trigger = Some(Trigger::Cli);
    ev.outcome = Some(Outcome::Success);
    ev.reason = Some(opts.reason.clone());
    ev.ticket = opts.ticket.clone();
    ev.detail = Some(retired_detail(marker));
    match sink.record(&ev).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "keyturn: {:?} is retired, but the audit record could not be written: {e}",
                a.name
            );
            1
        }
    }
}

/// The tags that mark a retirement (the user action, as recorded).
fn marker(opts: &Options, now: &str) -> Tags {
    let mut t = Tags::new();
    t.insert(tag::RETIRED.into(), now.to_owned());
    t.insert(tag::RETIRED_BY.into(), bounded(&actor_name()));
    t.insert(tag::RETIRED_REASON.into(), bounded(&opts.reason));
    if let Some(ticket) = &opts.ticket {
        t.insert(tag::RETIRED_TICKET.into(), bounded(ticket));
    }
    t.insert(
        tag::RETIRED_USER.into(),
        if opts.delete { "deleted" } else { "disabled" }.into(),
    );
    t
}

async fn latest_tags(
    store: &dyn SecretStore,
    name: &str,
) -> Result<Option<(String, Tags)>, StoreError> {
    Ok(store.latest(name).await?.map(|r| (r.version, r.tags)))
}

async fn retire_one(
    loaded: &Loaded,
    a: &ResolvedAccount,
    pi: &str,
    opts: &Options,
    http: &crate::azure::Http,
    credentials: &crate::app::Credentials,
) -> Result<Report, Report> {
    let mut report = Report {
        account: a.name.clone(),
        result: "failed",
        steps: Vec::new(),
        error: None,
        marker: Tags::new(),
    };
    let fail = |mut r: Report, e: String| {
        r.error = Some(e);
        r
    };
    let config = &loaded.config;
    let store = match KeyVaultStore::new(
        &a.vault,
        credentials[a.vault_identity.as_str()].clone(),
        http,
        &config.network,
    ) {
        Ok(s) => s,
        Err(e) => return Err(fail(report, e.to_string())),
    };
    let graph = match graph_for(loaded, pi, http, credentials) {
        Ok(g) => g,
        Err(e) => return Err(fail(report, e)),
    };
    let staging = staging_name(&a.secret);
    // What is there.
    let found = async {
        let secret = latest_tags(&store, &a.secret).await?;
        let staging_found = latest_tags(&store, &staging).await?;
        let deleted_retired = match secret {
            None => store
                .deleted_tags(&a.secret)
                .await?
                .filter(|t| t.contains_key(tag::RETIRED)),
            Some(_) => None,
        };
        Ok::<_, StoreError>((secret, staging_found, deleted_retired))
    }
    .await;
    let (secret, staging_found, deleted_retired) = match found {
        Ok(f) => f,
        Err(e) => return Err(fail(report, e.to_string())),
    };
    let user = match graph.user(&a.user).await {
        Ok(u) => Some(u.account_enabled),
        Err(DirectoryError::Rejected { status: 404, .. }) => None,
        Err(e) => {
            return Err(fail(
                report,
                format!("could not read the user with the provision identity {pi:?}: {e}"),
            ))
        }
    };
    let found = Found {
        secret,
        staging: staging_found,
        deleted_retired,
        user,
    };
    if let Some(tags) = &found.deleted_retired {
        report.result = "already_retired";
        report.steps.push(retired_detail(tags));
        return Ok(report);
    }
    if let Some((_, t)) = &found.staging {
        if t.get(tag::STATE).map(String::as_str) == Some(tag::PENDING)
            && !t.contains_key(tag::RETIRED)
        {
            return Err(fail(report, format!("a rotation is left pending in {staging}: let the daemon recover it first (keyturn reconcile {}), then retire the account", a.name)));
        }
    }
    if found.secret.is_none() && found.staging.is_none() {
        return Err(fail(report, format!("the account has no secret {:?} in {} (never adopted, or deleted outside keyturn): nothing marks it retired for the daemon; remove it from the configuration (and disable its user yourself)", a.secret, a.vault)));
    }

    // The plan.
    let mut steps = Vec::new();
    let user_step = match (found.user, opts.delete) {
        (None, _) => {
            steps.push(format!("user {} not found in Entra: left alone", a.user));
            None
        }
        (Some(_), true) => {
            steps.push(format!("delete user {} with {pi:?} (Entra keeps it 30 days in its deleted items: Graph's directory/deletedItems)", a.user));
            Some(true)
        }
        (Some(Some(false)), false) => {
            steps.push(format!("user {} is disabled already", a.user));
            None
        }
        (Some(_), false) => {
            steps.push(format!("disable user {} with {pi:?}", a.user));
            Some(false)
        }
    };
    for (name, f) in [(&a.secret, &found.secret), (&staging, &found.staging)] {
        if f.is_some() {
            steps.push(format!(
                "tag secret {name} keyturn-retired, then soft-delete it (recoverable for the vault's retention period)"
            ));
        }
    }
    steps.push("record account.retired in the audit log".into());
    report.steps = steps;
    if opts.dry_run {
        report.result = "planned";
        return Ok(report);
    }

    // 1. The user (a refusal here changes nothing).
    match user_step {
        Some(true) => {
            if let Err(e) = graph.delete_user(&a.user).await {
                return Err(fail(report, graph_refusal(&e, pi, true)));
            }
        }
        Some(false) => {
            if let Err(e) = graph.set_account_enabled(&a.user, false).await {
                return Err(fail(report, graph_refusal(&e, pi, false)));
            }
        }
        None => {}
    }
    // 2. The marker, then 3. the soft deletes.
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut marker = marker(opts, &now);
    if found.user.is_none() {
        marker.insert(tag::RETIRED_USER.into(), "missing".into());
    } else if user_step.is_none() {
        marker.insert(tag::RETIRED_USER.into(), "disabled".into());
    }
    for (name, f) in [(&a.secret, &found.secret), (&staging, &found.staging)] {
        if let Some((version, tags)) = f {
            let mut tags = tags.clone();
            tags.extend(marker.clone());
            if let Err(e) = store.update_tags(name, version, tags).await {
                return Err(fail(report, format!("the user step is done, but tagging secret {name} failed: {e}; run retire again to finish")));
            }
        }
    }
    for (name, f) in [(&staging, &found.staging), (&a.secret, &found.secret)] {
        if f.is_some() {
            if let Err(e) = store.delete(name).await {
                return Err(fail(report, format!("the user step is done and the secrets are marked retired, but deleting secret {name} failed: {e}; run retire again to finish")));
            }
        }
    }
    report.result = "retired";
    report.marker = marker;
    Ok(report)
}

/// A Graph client acting as the provision identity.
fn graph_for(
    loaded: &Loaded,
    name: &str,
    http: &crate::azure::Http,
    credentials: &crate::app::Credentials,
) -> Result<GraphDirectory, String> {
    let id = loaded
        .config
        .identities
        .get(name)
        .ok_or_else(|| format!("provision_identity {name:?} is not a configured identity"))?;
    let credential = credentials
        .get(name)
        .cloned()
        .ok_or_else(|| format!("provision_identity {name:?} has no credential"))?;
    let tenant_id = id
        .tenant_id
        .clone()
        .unwrap_or_else(|| "organizations".into());
    let authority = id
        .authority_host
        .clone()
        .or_else(|| std::env::var("AZURE_AUTHORITY_HOST").ok())
        .unwrap_or_else(|| crate::app::DEFAULT_AUTHORITY.into());
    let verify = crate::azure::ropc_client(name, id, authority, tenant_id.clone())
        .map_err(|e| e.to_string())?;
    let base = id
        .graph_base
        .clone()
        .unwrap_or_else(|| crate::app::DEFAULT_GRAPH.into());
    Ok(GraphDirectory::new(
        http.clone(),
        credential,
        GraphSettings {
            scope: id
                .graph_scope
                .clone()
                .unwrap_or_else(|| crate::azure::graph::graph_scope(&base)),
            base,
            tenant_id,
            verify,
        },
    ))
}
