//! The daemon's readiness watch (issue 14, "The watch"; `docs/doctor.md`): with a short
//! `daemon.readiness_check_interval`, a user disabled in Entra while the daemon runs is
//! audited (`readiness.changed`), shown not ready by `keyturn status` and exported as 0 by
//! `keyturn_account_ready`, and back when re-enabled; a Graph outage is `unknown`, not a
//! change; `0s` sends no watch requests; a reload changes the interval, watches added
//! accounts with every check and drops removed accounts' series. A Conditional Access policy
//! created through Graph (`sign_in_readiness`) and a directory role removed from the app
//! (`reset_rights`) while the daemon runs are audited, shown and exported the same way; a
//! throttled or failing Graph leaves them unknown. No password reaches the audit log or the
//! daemon's log.

use crate::common::*;
use keyturn_emulator::{FaultKind, UserFlags};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const UPN_1: &str = "svc-1@contoso.onmicrosoft.com";

/// The world's configuration with the watch every `interval`, a metrics listener on `port`
/// and `accounts`.
fn configure(w: &World, interval: &str, port: u16, accounts: Vec<(&'static str, &'static str)>) {
    configure_verify(w, false, interval, port, accounts)
}

/// As [`configure`], with the accounts' `verify`.
fn configure_verify(
    w: &World,
    verify: bool,
    interval: &str,
    port: u16,
    accounts: Vec<(&'static str, &'static str)>,
) {
    w.rewrite(&Opts {
        verify,
        accounts,
        ..Opts::default()
    });
    let text = std::fs::read_to_string(&w.config).unwrap().replacen(
        "[daemon]\n",
        &format!("[daemon]\nreadiness_check_interval = {interval:?}\n"),
        1,
    );
    std::fs::write(
        &w.config,
        format!("{text}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
}

fn status_json(socket: &Path) -> Value {
    let out = Command::new(BIN)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["result"].clone()
}

fn status_text(socket: &Path) -> String {
    let out = Command::new(BIN)
        .args(["status", "--socket"])
        .arg(socket)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The account's `readiness` in `keyturn status --json`.
fn readiness(socket: &Path, account: &str) -> Value {
    status_json(socket)["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == account)
        .map(|a| a["readiness"].clone())
        .unwrap_or(Value::Null)
}

/// The state of one check of the account at the watch's last look (`ready`, `not_ready`,
/// `unknown`), if it has one.
fn check_state(socket: &Path, account: &str, check: &str) -> Option<String> {
    readiness(socket, account)["checks"]
        .as_array()?
        .iter()
        .find(|c| c["check"] == check)
        .and_then(|c| c["state"].as_str().map(str::to_owned))
}

/// Waits up to `secs` seconds until the status shows `account`'s `check` in `state`.
async fn wait_check_state(
    socket: &Path,
    account: &str,
    check: &str,
    state: &str,
    secs: u64,
) -> bool {
    wait_for(Duration::from_secs(secs), || {
        check_state(socket, account, check).as_deref() == Some(state)
    })
    .await
}

async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn series(account: &str, check: &str) -> String {
    format!("keyturn_account_ready{{account=\"{account}\",check=\"{check}\"}}")
}

/// Waits until the metrics page holds `line` (or, with `present = false`, has no line
/// starting with it).
async fn wait_metrics(port: u16, line: &str, present: bool) -> bool {
    for _ in 0..300 {
        let text = metrics(port).await;
        if text.lines().any(|l| l.starts_with(line)) == present {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn changes(w: &World, account: &str, check: &str) -> Vec<Value> {
    w.records()
        .into_iter()
        .filter(|r| {
            r["event"] == "readiness.changed"
                && r["account"] == account
                && r["readiness"]["check"] == check
        })
        .collect()
}

/// Waits up to a minute until `account`'s `check` has a `readiness.changed` record.
async fn wait_change(w: &World, account: &str, check: &str) -> bool {
    wait_for(Duration::from_secs(60), || {
        !changes(w, account, check).is_empty()
    })
    .await
}

fn graph_gets(w: &World) -> u64 {
    w.emu
        .control()
        .counters()
        .requests
        .get("graph.get")
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_disabled_while_the_daemon_runs_is_audited_shown_and_exported_then_ready_again() {
    let w = World::new(Opts::default()).await;
    let port = free_port();
    configure(
        &w,
        "1s",
        port,
        vec![("svc-1", "rotator"), ("svc-2", "rotator")],
    );
    let d = w.daemon().await;
    let sock = w.socket();

    // The first pass: both accounts ready, nothing audited (a fleet of ready accounts
    // writes nothing).
    assert!(
        wait_for(Duration::from_secs(60), || {
            readiness(&sock, "svc-1")["ready"] == true && readiness(&sock, "svc-2")["ready"] == true
        })
        .await,
        "{:#}",
        status_json(&sock)
    );
    assert!(
        wait_metrics(
            port,
            &format!("{} 1", series("svc-1", "user_enabled")),
            true
        )
        .await
    );
    assert_eq!(w.count("readiness.changed", None), 0);

    // Disabled in Entra: audited, naming the account, the check and the user.
    w.emu
        .control()
        .set_user_flags(
            TENANT,
            UPN_1,
            &UserFlags {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        wait_change(&w, "svc-1", "user_enabled").await,
        "no readiness.changed for svc-1:\n{}",
        d.stderr()
    );
    let r = &changes(&w, "svc-1", "user_enabled")[0];
    assert_eq!(r["readiness"]["from"], "ready", "{r}");
    assert_eq!(r["readiness"]["to"], "not_ready", "{r}");
    assert_eq!(r["outcome"], "warning", "{r}");
    assert_eq!(r["user"], UPN_1, "{r}");
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("is disabled (accountEnabled = false)"),
        "{r}"
    );
    // svc-2 did not change.
    assert!(changes(&w, "svc-2", "user_enabled").is_empty());

    // Status: not ready, the failing check named; svc-2 still ready.
    assert!(
        wait_for(Duration::from_secs(10), || readiness(&sock, "svc-1")
            ["ready"]
            == false)
        .await
    );
    assert_eq!(
        check_state(&sock, "svc-1", "user_enabled").as_deref(),
        Some("not_ready")
    );
    assert_eq!(readiness(&sock, "svc-2")["ready"], true);
    let text = status_text(&sock);
    let column = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(column("svc-1"), "NO", "{text}");
    assert_eq!(column("svc-2"), "yes", "{text}");
    assert!(
        text.contains(
            "svc-1: not ready: user_enabled failed: svc-1@contoso.onmicrosoft.com is disabled"
        ),
        "{text}"
    );
    // The metric: 0 for that check, 1 for the others.
    assert!(
        wait_metrics(
            port,
            &format!("{} 0", series("svc-1", "user_enabled")),
            true
        )
        .await
    );
    let m = metrics(port).await;
    assert!(
        m.contains(&format!("{} 1", series("svc-1", "user_exists"))),
        "{m}"
    );
    assert!(
        m.contains(&format!("{} 1", series("svc-2", "user_enabled"))),
        "{m}"
    );

    // A Graph outage: unknown, not a change; the last known result stays.
    let before = w.count("readiness.changed", None);
    let fault = w
        .emu
        .control()
        .add_fault(keyturn_emulator::FaultRule {
            route: "graph.get".into(),
            kind: FaultKind::Status,
            status: Some(503),
            ..rule()
        })
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || {
            check_state(&sock, "svc-1", "user_enabled").as_deref() == Some("unknown")
                && check_state(&sock, "svc-2", "user_enabled").as_deref() == Some("unknown")
        })
        .await,
        "{:#}",
        status_json(&sock)
    );
    assert_eq!(w.count("readiness.changed", None), before);
    assert_eq!(readiness(&sock, "svc-1")["ready"], false);
    assert_eq!(readiness(&sock, "svc-2")["ready"], true);
    let m = metrics(port).await;
    assert!(
        m.contains(&format!("{} 0", series("svc-1", "user_enabled"))),
        "{m}"
    );
    assert!(
        m.contains(&format!("{} 1", series("svc-2", "user_enabled"))),
        "{m}"
    );
    assert!(
        status_text(&sock).contains("svc-2: user_enabled unknown (last known: ready)"),
        "{}",
        status_text(&sock)
    );
    assert!(w.emu.control().remove_fault(&fault));

    // Enabled again: audited back to ready, shown and exported.
    w.emu
        .control()
        .set_user_flags(
            TENANT,
            UPN_1,
            &UserFlags {
                disabled: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || changes(
            &w,
            "svc-1",
            "user_enabled"
        )
        .len()
            >= 2)
        .await,
        "{}",
        d.stderr()
    );
    let back = &changes(&w, "svc-1", "user_enabled")[1];
    assert_eq!(back["readiness"]["from"], "not_ready", "{back}");
    assert_eq!(back["readiness"]["to"], "ready", "{back}");
    assert_eq!(back["outcome"], "success", "{back}");
    assert!(
        wait_metrics(
            port,
            &format!("{} 1", series("svc-1", "user_enabled")),
            true
        )
        .await
    );
    assert!(
        wait_for(Duration::from_secs(10), || readiness(&sock, "svc-1")
            ["ready"]
            == true)
        .await
    );
    // Exactly the two changes: the outage wrote none.
    assert_eq!(w.count("readiness.changed", None), 2);

    d.signal(Signal::SIGTERM);
    let stderr = d.stderr();
    assert!(d.wait().await.success());
    // No password, initial or generated, in the audit log or the daemon's log.
    let loaded = w.loaded();
    let mut passwords = all_values(&reader(&w.emu, &loaded), &["svc-1", "svc-2"]).await;
    passwords.extend(USERS.iter().map(|u| u.3.to_owned()));
    let audit = std::fs::read_to_string(w.path().join("audit.jsonl")).unwrap();
    for p in &passwords {
        assert!(
            !audit.contains(p.as_str()),
            "a password is in the audit log"
        );
        assert!(
            !stderr.contains(p.as_str()),
            "a password is in the daemon's log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_off_sends_no_requests_and_a_reload_turns_it_on_and_drops_removed_accounts() {
    let w = World::new(Opts::default()).await;
    let port = free_port();
    configure(&w, "0s", port, vec![("svc-1", "rotator")]);
    let d = w.daemon().await;
    let sock = w.socket();

    // `0s`: no Graph read in a span where a 1s watch looks at both accounts several times.
    assert!(
        wait_for(Duration::from_secs(30), || {
            status_json(&sock)["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["busy"] == false)
        })
        .await
    );
    let gets = graph_gets(&w);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(graph_gets(&w), gets, "Graph was read with the watch off");
    assert_eq!(readiness(&sock, "svc-1"), Value::Null);
    assert!(!metrics(port).await.contains("keyturn_account_ready{"));
    assert!(status_text(&sock)
        .lines()
        .find(|l| l.starts_with("svc-1"))
        .is_some_and(|l| l.ends_with(" -")));

    // Reloaded with 1s and svc-2 added: the watch runs, every check for the added account
    // too (the reload hands the watch its identity).
    configure(
        &w,
        "1s",
        port,
        vec![("svc-1", "rotator"), ("svc-2", "rotator")],
    );
    d.signal(Signal::SIGHUP);
    assert!(
        wait_metrics(
            port,
            &format!("{} 1", series("svc-2", "user_enabled")),
            true
        )
        .await
    );
    assert!(
        wait_metrics(
            port,
            &format!("{} 1", series("svc-1", "user_enabled")),
            true
        )
        .await
    );
    assert!(graph_gets(&w) > gets);
    assert!(
        wait_metrics(
            port,
            &format!("{} 1", series("svc-2", "sign_in_readiness")),
            true
        )
        .await
    );

    // svc-2 removed: its series go, svc-1's stay.
    configure(&w, "1s", port, vec![("svc-1", "rotator")]);
    d.signal(Signal::SIGHUP);
    assert!(wait_metrics(port, "keyturn_account_ready{account=\"svc-2\"", false).await);
    assert!(metrics(port)
        .await
        .contains(&series("svc-1", "user_enabled")));

    // Off again: its series go and Graph is not read any more.
    configure(&w, "0s", port, vec![("svc-1", "rotator")]);
    d.signal(Signal::SIGHUP);
    assert!(wait_metrics(port, "keyturn_account_ready{", false).await);
    // A look already under way when the reload came may still land; then nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gets = graph_gets(&w);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        graph_gets(&w),
        gets,
        "Graph was read after the watch was turned off"
    );
    assert_eq!(w.count("readiness.changed", None), 0);

    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());
}

#[test]
fn a_readiness_interval_below_a_second_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyturn.toml");
    std::fs::write(
        &path,
        "[daemon]\nreadiness_check_interval = \"500ms\"\n\n[identities.rotator]\nkind = \"azure_cli\"\n\n[[accounts]]\nname = \"a\"\nuser = \"a@contoso.onmicrosoft.com\"\nidentity = \"rotator\"\nvault = \"https://kv1.vault.azure.net/\"\nsecret = \"a\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(
        text.contains("daemon.readiness_check_interval") && text.contains("at least 1s"),
        "{text}"
    );
}

/// May create Conditional Access policies and manage directory roles.
const CA_ADMIN: &str = "66666666-6666-6666-6666-666666666666";
const CA_ADMIN_SECRET: &str = "ca-admin-secret";
/// User Administrator (svc-1 holds it, svc-2 does not) and Privileged Authentication
/// Administrator (the rotator holds it).
const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";
const PAA: &str = "7be44c8a-adaf-4e2a-84d6-ab2649e08a13";

/// A Graph call as the CA administrator app: (status, answer).
async fn graph(
    emu: &keyturn_emulator::Emulator,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let http = keyturn_emulator::testkit::http(emu);
    let token = keyturn_emulator::testkit::app_token(
        &http,
        emu,
        TENANT,
        CA_ADMIN,
        CA_ADMIN_SECRET,
        keyturn_emulator::testkit::GRAPH_SCOPE,
    )
    .await;
    let mut r = http
        .request(method, format!("{}/v1.0/{path}", emu.graph_base()))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// A world whose rotator may read role assignments too, as deployed
/// (deploy/azure/setup.sh), with the CA administrator app that [`graph`] signs in as: its
/// `ca_admin` lines (permissions, roles) added to the app's declaration.
async fn world_with_ca_admin(ca_admin: &str) -> World {
    let scenario = SCENARIO.replacen(
        "\"Policy.Read.ConditionalAccess\"]\ndirectory_roles = [\"Privileged",
        "\"Policy.Read.ConditionalAccess\", \"RoleManagement.Read.Directory\"]\ndirectory_roles = [\"Privileged",
        1,
    );
    assert_ne!(scenario, SCENARIO);
    let scenario = format!(
        "{scenario}
[[apps]]
tenant = \"contoso\"
name = \"ca-admin\"
client_id = \"{CA_ADMIN}\"
secrets = [\"{CA_ADMIN_SECRET}\"]
{ca_admin}
"
    );
    let emu = keyturn_emulator::testkit::start_toml(&scenario).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), &Opts::default());
    World { emu, dir, config }
}

/// Deletes through Graph (as the CA administrator) the assignment of the directory role
/// `role` (its definition id; `role_name` for the failure message) to `principal`.
async fn remove_role_assignment(
    emu: &keyturn_emulator::Emulator,
    principal: &str,
    role: &str,
    role_name: &str,
) {
    let (s, v) = graph(
        emu,
        reqwest::Method::GET,
        &format!("roleManagement/directory/roleAssignments?$filter=principalId eq '{principal}'"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let assignment = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["roleDefinitionId"] == role)
        .and_then(|a| a["id"].as_str())
        .unwrap_or_else(|| panic!("no {role_name} assignment: {v}"))
        .to_owned();
    let (s, v) = graph(
        emu,
        reqwest::Method::DELETE,
        &format!("roleManagement/directory/roleAssignments/{assignment}"),
        None,
    )
    .await;
    assert_eq!(s, 204, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_access_policy_or_a_lost_role_while_the_daemon_runs_is_audited_shown_and_exported(
) {
    let w = world_with_ca_admin(
        "graph_permissions = [\"Policy.ReadWrite.ConditionalAccess\", \"RoleManagement.ReadWrite.Directory\", \"Application.Read.All\"]",
    )
    .await;
    let port = free_port();
    // verify = true: a policy demanding MFA of a password sign-in fails the account (with
    // verify = false, doctor and the watch only warn: ready).
    configure_verify(
        &w,
        true,
        "1s",
        port,
        vec![("svc-1", "rotator"), ("svc-2", "rotator")],
    );
    let d = w.daemon().await;
    let sock = w.socket();

    // The first look: every check ready, the new ones included; nothing audited.
    assert!(
        wait_for(Duration::from_secs(60), || {
            ["svc-1", "svc-2"].iter().all(|a| {
                ["user_roles", "reset_rights", "sign_in_readiness"]
                    .iter()
                    .all(|c| check_state(&sock, a, c).as_deref() == Some("ready"))
            })
        })
        .await,
        "{:#}\n{}",
        status_json(&sock),
        d.stderr()
    );
    assert!(
        wait_metrics(
            port,
            &format!("{} 1", series("svc-1", "sign_in_readiness")),
            true
        )
        .await
    );
    assert_eq!(w.count("readiness.changed", None), 0, "{}", d.stderr());

    // An enforced policy requiring MFA of User Administrators, created through Graph while
    // the daemon runs: svc-1 (a User Administrator) is not ready.
    let (s, v) = graph(
        &w.emu,
        reqwest::Method::POST,
        "identity/conditionalAccess/policies",
        Some(serde_json::json!({
            "displayName": "Require MFA for user admins",
            "state": "enabled",
            "conditions": {
                "clientAppTypes": ["all"],
                "users": {"includeRoles": [USER_ADMIN]},
                "applications": {"includeApplications": ["All"]},
            },
            "grantControls": {"operator": "OR", "builtInControls": ["mfa"]},
        })),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(
        wait_change(&w, "svc-1", "sign_in_readiness").await,
        "no readiness.changed for sign_in_readiness:\n{}",
        d.stderr()
    );
    let r = &changes(&w, "svc-1", "sign_in_readiness")[0];
    assert_eq!(r["readiness"]["from"], "ready", "{r}");
    assert_eq!(r["readiness"]["to"], "not_ready", "{r}");
    let detail = r["detail"].as_str().unwrap();
    assert!(detail.contains("Require MFA for user admins"), "{r}");
    assert!(detail.contains("mfa"), "{r}");
    assert!(
        wait_for(Duration::from_secs(10), || readiness(&sock, "svc-1")
            ["ready"]
            == false)
        .await
    );
    assert_eq!(
        check_state(&sock, "svc-1", "sign_in_readiness").as_deref(),
        Some("not_ready")
    );
    assert!(
        status_text(&sock).contains("svc-1: not ready: sign_in_readiness failed"),
        "{}",
        status_text(&sock)
    );
    assert!(
        wait_metrics(
            port,
            &format!("{} 0", series("svc-1", "sign_in_readiness")),
            true
        )
        .await
    );
    // svc-2 holds no User Administrator role: untouched.
    assert!(changes(&w, "svc-2", "sign_in_readiness").is_empty());
    assert_eq!(readiness(&sock, "svc-2")["ready"], true);

    // Privileged Authentication Administrator removed from the app through Graph: the app
    // may reset neither account.
    let (s, v) = graph(
        &w.emu,
        reqwest::Method::GET,
        &format!("servicePrincipals?$filter=appId eq '{ROTATOR}'"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let sp = v["value"][0]["id"].as_str().unwrap().to_owned();
    remove_role_assignment(&w.emu, &sp, PAA, "PAA").await;
    assert!(
        wait_change(&w, "svc-2", "reset_rights").await,
        "no readiness.changed for reset_rights:\n{}",
        d.stderr()
    );
    let r = &changes(&w, "svc-2", "reset_rights")[0];
    assert_eq!(r["readiness"]["to"], "not_ready", "{r}");
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("may not reset a user holding"),
        "{r}"
    );
    assert!(wait_check_state(&sock, "svc-2", "reset_rights", "not_ready", 10).await);
    assert_eq!(readiness(&sock, "svc-2")["ready"], false);
    assert!(
        wait_metrics(
            port,
            &format!("{} 0", series("svc-2", "reset_rights")),
            true
        )
        .await
    );

    // Conditional Access throttled (429) and the role reads failing (503): unknown, not a
    // change; the last known results stay.
    assert!(wait_change(&w, "svc-1", "reset_rights").await);
    let before = w.count("readiness.changed", None);
    for (route, status) in [("graph.ca", 429), ("graph.roles", 503)] {
        w.emu
            .control()
            .add_fault(keyturn_emulator::FaultRule {
                route: route.into(),
                kind: FaultKind::Status,
                status: Some(status),
                ..rule()
            })
            .unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(60), || {
            ["sign_in_readiness", "user_roles", "reset_rights"]
                .iter()
                .all(|c| check_state(&sock, "svc-1", c).as_deref() == Some("unknown"))
        })
        .await,
        "{:#}",
        status_json(&sock)
    );
    assert_eq!(w.count("readiness.changed", None), before);
    let m = metrics(port).await;
    assert!(
        m.contains(&format!("{} 0", series("svc-1", "sign_in_readiness"))),
        "{m}"
    );
    assert!(
        m.contains(&format!("{} 1", series("svc-2", "sign_in_readiness"))),
        "{m}"
    );

    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());
}

/// Global Reader, which svc-1 holds (SCENARIO).
const GLOBAL_READER: &str = "f2ef992c-3afb-46b9-b7cf-a126ee74c451";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_role_removed_while_the_daemon_runs_is_a_readiness_change_naming_it() {
    let w = world_with_ca_admin(
        "graph_permissions = [\"User.Read.All\", \"RoleManagement.ReadWrite.Directory\"]\ndirectory_roles = [\"Privileged Role Administrator\"]",
    )
    .await;
    let port = free_port();
    configure(&w, "1s", port, vec![("svc-1", "rotator")]);
    crate::doctor::declare_roles(
        &w.config,
        "svc-1",
        &[
            "Exchange Administrator",
            "User Administrator",
            "Global Reader",
        ],
    );
    let d = w.daemon().await;
    let sock = w.socket();

    // The first look: svc-1 holds what it declares.
    assert!(
        wait_check_state(&sock, "svc-1", "user_roles", "ready", 60).await,
        "{:#}\n{}",
        status_json(&sock),
        d.stderr()
    );
    assert!(changes(&w, "svc-1", "user_roles").is_empty());

    // Global Reader's assignment deleted through Graph while the daemon runs.
    let (s, v) = graph(
        &w.emu,
        reqwest::Method::GET,
        &format!("users/{UPN_1}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let user_id = v["id"].as_str().unwrap().to_owned();
    remove_role_assignment(&w.emu, &user_id, GLOBAL_READER, "Global Reader").await;
    assert!(
        wait_change(&w, "svc-1", "user_roles").await,
        "no readiness.changed for user_roles:\n{}",
        d.stderr()
    );
    let r = &changes(&w, "svc-1", "user_roles")[0];
    assert_eq!(r["readiness"]["from"], "ready", "{r}");
    assert_eq!(r["readiness"]["to"], "not_ready", "{r}");
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("lacks the declared role(s) Global Reader"),
        "{r}"
    );
    assert!(wait_check_state(&sock, "svc-1", "user_roles", "not_ready", 10).await);
    assert!(
        status_text(&sock).contains("svc-1: not ready: user_roles failed"),
        "{}",
        status_text(&sock)
    );
    assert!(wait_metrics(port, &format!("{} 0", series("svc-1", "user_roles")), true).await);
    // The other role check judges what is held: the rotator may still reset svc-1.
    assert_eq!(
        check_state(&sock, "svc-1", "reset_rights").as_deref(),
        Some("ready")
    );
}
