//! `keyturn provision`: the wiring of [`crate::provision`] (the instance lock and the audit
//! log, as `rotate --offline` takes them; Key Vault and Graph through each account's
//! `provision_identity`), then doctor's checks of each provisioned account, and the output.

use super::{audit_sinks, ServiceError};
use crate::audit::{Actor, AuditSink, MemorySink};
use crate::azure::graph::{graph_scope, GraphEntra};
use crate::azure::keyvault::KeyVaultStore;
use crate::azure::SetupError;
use crate::clock::SystemClock;
use crate::config::{Loaded, ResolvedAccount, EXIT_CONFIG};
use crate::daemon::InstanceLock;
use crate::doctor::{AccountReport, Status};
use crate::provision::{self, AccountOutcome, Options, Provisioner, Target};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// What `keyturn provision` was asked.
#[derive(Debug, Clone)]
pub struct ProvisionArgs {
    /// The accounts named (empty with `all`).
    pub accounts: Vec<String>,
    /// Every account that declares a `provision_identity`.
    pub all: bool,
    /// Why (required).
    pub reason: String,
    /// The ticket.
    pub ticket: Option<String>,
    /// Print the plan, change nothing.
    pub dry_run: bool,
    /// Remove roles the declaration does not list.
    pub prune_roles: bool,
    /// Print JSON.
    pub json: bool,
}

/// One account in the output: what provisioning did, then doctor's checks.
#[derive(Serialize)]
struct Out<'a> {
    #[serde(flatten)]
    outcome: &'a AccountOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    doctor: Option<&'a AccountReport>,
}

/// Runs `keyturn provision`; returns the exit code: 0 done (or nothing to do), 1 a step
/// failed or a doctor check of a provisioned account fails, 64 bad arguments or
/// configuration, 69 Azure unavailable, 75 a create left pending (rerun).
pub(crate) async fn provision(loaded: Loaded, args: ProvisionArgs) -> Result<i32, ServiceError> {
    let selected = match select(&loaded, &args) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("keyturn: {message}");
            return Ok(EXIT_CONFIG);
        }
    };
    for (key, message) in crate::config::provision_warnings(&loaded.config) {
        if selected
            .iter()
            .any(|a| message.starts_with(&format!("account {:?} ", a.name)))
        {
            eprintln!("keyturn: warning: {key}: {message}");
        }
    }
    // A dry run writes nothing: no lock, no audit record.
    let (lock, audit): (Option<InstanceLock>, Arc<dyn AuditSink>) = if args.dry_run {
        (None, Arc::new(MemorySink::default()))
    } else {
        let lock = InstanceLock::acquire(&loaded.config.daemon.state_dir)?;
        (Some(lock), audit_sinks(&loaded)?)
    };
    if lock.as_ref().is_some_and(|l| l.unclean) {
        let delay = loaded.config.daemon.unclean_start_delay;
        eprintln!("keyturn: the previous keyturn stopped uncleanly; waiting {} for its in-flight requests to settle", humantime::format_duration(delay));
        tokio::time::sleep(delay).await;
    }
    let http = crate::azure::http_client(
        &loaded.config.tls,
        &loaded.config.network,
        crate::observe::unobserved(),
    )?;
    let options = Options {
        dry_run: args.dry_run,
        prune_roles: args.prune_roles,
        actor: Actor::current_user(),
        reason: Some(args.reason.clone()),
        ticket: args.ticket.clone(),
    };
    let mut credentials = HashMap::new();
    let mut outcomes = Vec::new();
    for a in &selected {
        let name = a.provision_identity.clone().unwrap_or_default();
        let id = &loaded.config.identities[&name];
        let cred = match credentials.get(&name) {
            Some(c) => Arc::clone(c),
            None => {
                let c = crate::azure::credential(&name, id, &http, &loaded.config.network)?;
                credentials.insert(name.clone(), c.clone());
                c
            }
        };
        let store = Arc::new(
            KeyVaultStore::new(&a.vault, cred.clone(), &http, &loaded.config.network)
                .map_err(|e| SetupError::identity(&name, e.to_string(), e))?,
        );
        let base = id
            .graph_base
            .clone()
            .unwrap_or_else(|| crate::app::DEFAULT_GRAPH.into());
        let scope = id.graph_scope.clone().unwrap_or_else(|| graph_scope(&base));
        let entra = Arc::new(GraphEntra::new(http.clone(), cred, &base, scope));
        let p = Provisioner::new(
            audit.clone(),
            Arc::new(SystemClock),
            store,
            entra,
            provision::Tuning {
                // The daemon's first retry delay, at most the default's 2 s.
                delay: loaded
                    .config
                    .daemon
                    .retry_base_delay
                    .min(provision::Tuning::default().delay),
                ..Default::default()
            },
        );
        outcomes.push(p.provision(&target(a), &options).await);
    }
    if let Some(lock) = lock {
        lock.release();
    }
    // Doctor's checks of each account provisioning left in place (not on a dry run: the
    // plan has not happened).
    let mut reports: Vec<Option<AccountReport>> = Vec::new();
    for o in &outcomes {
        if args.dry_run || o.exit != 0 {
            reports.push(None);
            continue;
        }
        match crate::doctor::doctor(
            &loaded,
            Some(&o.account),
            false,
            time::OffsetDateTime::now_utc(),
        )
        .await
        {
            Ok(r) => reports.push(r.accounts.into_iter().next()),
            Err(e) => {
                eprintln!("keyturn: doctor could not check {}: {e}", o.account);
                reports.push(None);
            }
        }
    }
    let code = exit_code(&outcomes, &reports);
    if args.json {
        let out: Vec<Out<'_>> = outcomes
            .iter()
            .zip(&reports)
            .map(|(o, d)| Out {
                outcome: o,
                doctor: d.as_ref(),
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"dry_run": args.dry_run, "accounts": out, "exit": code})
        );
    } else {
        print!("{}", human(&outcomes, &reports, args.dry_run));
    }
    Ok(code)
}

/// The accounts to provision: those named, or with `all` every one with a
/// `provision_identity`; a name that is no account, or an account without one, is refused.
fn select<'a>(
    loaded: &'a Loaded,
    args: &ProvisionArgs,
) -> Result<Vec<&'a ResolvedAccount>, String> {
    if args.all != args.accounts.is_empty() {
        return Err("name the accounts to provision, or give --all (not both)".into());
    }
    if args.all {
        let out: Vec<&ResolvedAccount> = loaded
            .accounts
            .iter()
            .filter(|a| a.provision_identity.is_some())
            .collect();
        if out.is_empty() {
            return Err(format!("no account in {} has a provision_identity: set [defaults] provision_identity (or the account's) to the identity that creates users and assigns roles (docs/configuration.md, \"Roles and provisioning\")", loaded.path.display()));
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for name in &args.accounts {
        let Some(a) = loaded.accounts.iter().find(|a| &a.name == name) else {
            return Err(format!(
                "no account named {name:?} in {}; `keyturn check-config` lists them",
                loaded.path.display()
            ));
        };
        if a.provision_identity.is_none() {
            return Err(format!("account {name:?} has no provision_identity: set it (or [defaults] provision_identity) to the identity that creates users and assigns roles, e.g. an azure_cli identity (docs/configuration.md, \"Roles and provisioning\")"));
        }
        if !out.iter().any(|o: &&ResolvedAccount| o.name == a.name) {
            out.push(a);
        }
    }
    Ok(out)
}

fn target(a: &ResolvedAccount) -> Target {
    Target {
        name: a.name.clone(),
        user: a.user.clone(),
        display_name: a.display_name.clone(),
        roles: a.roles.clone(),
        secret: a.secret.clone(),
        policy: a.policy.clone(),
        expiry: Some(a.expiry),
    }
}

/// 64 before 75 before 69 before 1: the most pressing thing to do first.
fn exit_code(outcomes: &[AccountOutcome], reports: &[Option<AccountReport>]) -> i32 {
    let codes: Vec<i32> = outcomes.iter().map(|o| o.exit).collect();
    for c in [
        EXIT_CONFIG,
        provision::EXIT_PENDING,
        provision::EXIT_UNAVAILABLE,
        1,
    ] {
        if codes.contains(&c) {
            return c;
        }
    }
    let doctor_failed = reports
        .iter()
        .flatten()
        .flat_map(|r| &r.checks)
        .any(|c| c.status == Status::Fail);
    i32::from(doctor_failed)
}

fn human(outcomes: &[AccountOutcome], reports: &[Option<AccountReport>], dry_run: bool) -> String {
    let mut s = String::new();
    if dry_run {
        s.push_str("keyturn provision --dry-run (nothing was changed)\n");
    }
    for (o, d) in outcomes.iter().zip(reports) {
        let summary = match o.result {
            "unchanged" => "Entra matches the declaration; nothing to change",
            "changed" => "Entra now matches the declaration",
            "planned" => "would change:",
            "pending" => "left pending: rerun to complete",
            _ => "failed",
        };
        s.push_str(&format!(
            "\naccount {} ({}): {summary}\n",
            o.account, o.user
        ));
        for a in &o.actions {
            s.push_str(&format!(
                "  {:<8} {:<16} {}\n",
                a.status, a.action, a.target
            ));
        }
        for n in &o.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
        if let Some(e) = &o.error {
            s.push_str(&format!("  error: {e}\n"));
        }
        if let Some(d) = d {
            s.push_str("  doctor:\n");
            for c in &d.checks {
                s.push_str(&format!(
                    "    {:<5} {:<18} {}\n",
                    match c.status {
                        Status::Pass => "pass",
                        Status::Warn => "warn",
                        Status::Fail => "fail",
                    },
                    c.check,
                    c.detail
                ));
                if !c.fix.is_empty() {
                    s.push_str(&format!("          fix: {}\n", c.fix));
                }
            }
        }
    }
    s
}
