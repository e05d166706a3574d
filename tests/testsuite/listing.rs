//! Start-up and drift checks from vault listings (`src/daemon/listing.rs`): N accounts in a
//! vault cost about 2N/25 list requests and no value read unless something is pending;
//! a vault that cannot be listed falls back to each account's own reads.

use crate::common::*;
use azure_security_keyvault_secrets::models::SetSecretParameters;
use keyturn_emulator::{testkit, Emulator, FaultKind};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// Accounts in the one vault.
const N: usize = 60;

pub(crate) fn upn(i: usize) -> String {
    format!("svc-{i:02}@contoso.onmicrosoft.com")
}

/// [`SCENARIO`]'s tenant and apps, with `N` users, each with its secret `svc-NN` holding its
/// password.
fn scenario() -> String {
    scenario_of(N, "")
}

/// [`scenario`] with `n` accounts and `extra` TOML (e.g. a `[limits]` table) appended.
pub(crate) fn scenario_of(n: usize, extra: &str) -> String {
    let head = SCENARIO.split("[[users]]").next().unwrap();
    let mut s = head.to_string();
    for i in 0..n {
        s.push_str(&format!(
            "[[users]]\ntenant = \"contoso\"\nupn = \"{}\"\npassword = \"Initial-Pass-{i}!\"\n\n",
            upn(i)
        ));
    }
    s.push_str(&format!(
        "[[vaults]]\nname = \"kv1\"\ntenant = \"contoso\"\naccess = [\n  {{ client_id = \"{ROTATOR}\", role = \"Key Vault Secrets Officer\" }},\n  {{ client_id = \"{READER}\", role = \"Key Vault Secrets User\" }},\n]\nsecrets = [\n"
    ));
    for i in 0..n {
        s.push_str(&format!(
            "  {{ name = \"svc-{i:02}\", from_user = \"contoso/{}\" }},\n",
            upn(i)
        ));
    }
    s.push_str("]\n");
    s.push_str(extra);
    s
}

/// The emulator, a folder and a configuration of the `N` accounts.
async fn world(drift: &'static str) -> (Emulator, tempfile::TempDir, std::path::PathBuf) {
    let emu = testkit::start_toml(&scenario()).await;
    let (dir, config) = config_of(&emu, N, drift, "");
    (emu, dir, config)
}

/// A folder and a configuration of `n` accounts for `emu` ([`scenario_of`]), with `extra`
/// TOML (e.g. a `[limits]` table) appended.
pub(crate) fn config_of(
    emu: &Emulator,
    n: usize,
    drift: &'static str,
    extra: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        emu,
        dir.path(),
        &Opts {
            accounts: vec![],
            verify: false,
            drift,
            ..Default::default()
        },
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(extra);
    for i in 0..n {
        text.push_str(&format!(
            "\n[[accounts]]\nname = \"svc-{i:02}\"\nuser = \"{}\"\nidentity = \"rotator\"\nvault = {:?}\nsecret = \"svc-{i:02}\"\n",
            upn(i),
            emu.vault_url(VAULT)
        ));
    }
    std::fs::write(&config, text).unwrap();
    (dir, config)
}

/// Requests of `route` the emulator served, less the SDK's first request of each client,
/// which carries no token and is answered with the 401 challenge.
fn requests(emu: &Emulator, route: &str) -> u64 {
    emu.control()
        .counters()
        .responses
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix(route)
                .and_then(|s| s.strip_prefix(' '))
                .is_some_and(|status| status != "401")
        })
        .map(|(_, n)| n)
        .sum()
}

/// Writes `<secret>-pending` tagged pending, as a rotation that stopped after its stage.
async fn stage_pending(emu: &Emulator, config: &Path, account: &str, password: &str) {
    let loaded = load(config);
    let writer = writer(emu, &loaded);
    let parameters = SetSecretParameters {
        value: Some(password.into()),
        content_type: Some("password".into()),
        tags: Some(HashMap::from([
            ("keyturn-state".to_string(), "pending".to_string()),
            (
                "keyturn-rotation-id".to_string(),
                "0b0e6a4e-7c59-4d3e-9f53-3a1f6f0c2d11".to_string(),
            ),
            ("keyturn-account".to_string(), account.to_string()),
            ("keyturn-trigger".to_string(), "schedule".to_string()),
        ])),
        ..Default::default()
    };
    writer
        .set_secret(
            &format!("{account}-pending"),
            parameters.try_into().unwrap(),
            None,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn start_up_and_drift_checks_list_the_vault_instead_of_reading_each_secret() {
    let (emu, dir, config) = world("2s").await;
    let service = Service::start(load(&config)).await;
    // 60 secrets (no staging secret yet): 3 pages. The goal: at most ceil(2N/25).
    let lists = requests(&emu, "kv.list");
    assert!(lists >= 1, "start-up listed the vault");
    assert!(
        lists <= (2 * N as u64).div_ceil(25),
        "{lists} list requests for {N} accounts"
    );
    assert_eq!(lists, 3, "60 secrets, 25 a page");
    assert_eq!(
        requests(&emu, "kv.get"),
        0,
        "nothing pending: no value read"
    );
    // Every account is scheduled from the listing.
    let status =
        keyturn::admin::client::send(&service.socket, &keyturn::admin::proto::Request::Status)
            .await
            .unwrap();
    let accounts = status.result.unwrap()["accounts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(accounts.len(), N);
    assert!(
        accounts.iter().all(|a| !a["next_due"].is_null()),
        "{accounts:?}"
    );
    // A drift check (every 2 s here) lists again and reads Graph, not the secrets.
    let graph_before = requests(&emu, "graph.get");
    assert!(
        wait_for(Duration::from_secs(30), || requests(&emu, "kv.list") >= 6
            && requests(&emu, "graph.get") >= graph_before + N as u64)
        .await,
        "a drift check ran: {:?}",
        emu.control().counters().requests
    );
    assert_eq!(requests(&emu, "kv.get"), 0, "a drift check reads no value");
    assert_eq!(count(dir.path(), "rotation.started", None), 0);
    assert_eq!(service.stop().await, 0);
}

#[tokio::test]
async fn a_pending_account_is_read_and_recovered_and_only_it() {
    let (emu, dir, config) = world("0s").await;
    stage_pending(&emu, &config, "svc-07", "Pending-Pass-7-xyz!").await;
    let service = Service::start(load(&config)).await;
    // 61 secrets: 3 pages; then recovery of svc-07 reads its staging secret and its secret.
    assert_eq!(requests(&emu, "kv.list"), 3);
    assert_eq!(
        requests(&emu, "kv.get"),
        2,
        "only the pending account's two reads"
    );
    assert_eq!(count(dir.path(), "rotation.resumed", None), 1);
    assert_eq!(count(dir.path(), "rotation.resumed", Some("svc-07")), 1);
    assert_eq!(count(dir.path(), "rotation.completed", Some("svc-07")), 1);
    let report = emu
        .control()
        .invariant(&keyturn_emulator::InvariantQuery {
            tenant: TENANT.into(),
            user: upn(7),
            vault: VAULT.into(),
            secret: "svc-07".into(),
            staging_secret: None,
        })
        .unwrap();
    assert!(report.holds, "{report:?}");
    assert_eq!(service.stop().await, 0);
}

#[tokio::test]
async fn a_vault_that_cannot_be_listed_falls_back_to_reading_each_account() {
    let (emu, dir, config) = world("0s").await;
    stage_pending(&emu, &config, "svc-03", "Pending-Pass-3-xyz!").await;
    emu.control()
        .add_fault(keyturn_emulator::FaultRule {
            route: "kv.list".into(),
            kind: FaultKind::Status,
            status: Some(403),
            ..rule()
        })
        .unwrap();
    let service = Service::start(load(&config)).await;
    // Each account reads its staging secret and its secret, as before listings.
    assert_eq!(requests(&emu, "kv.list"), 1, "one refused listing");
    assert_eq!(requests(&emu, "kv.get"), 2 * N as u64);
    // The pending rotation is recovered all the same.
    assert_eq!(count(dir.path(), "rotation.completed", Some("svc-03")), 1);
    assert_eq!(service.stop().await, 0);
}

/// A Key Vault client signed in as keyturn's app (to stage a pending version by hand).
fn writer(
    emu: &Emulator,
    loaded: &keyturn::config::Loaded,
) -> azure_security_keyvault_secrets::SecretClient {
    vault_client_as(
        emu,
        loaded,
        ROTATOR,
        "rotator-secret",
        keyturn::observe::unobserved(),
    )
}

/// `keyturn plan` lists the vault as start-up does: N accounts cost a few list requests and
/// no value read, and a pending rotation is seen from its tags alone; a vault it cannot list
/// is read account by account, with the same plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_lists_the_vault_instead_of_reading_each_secret() {
    let (emu, _dir, config) = world("0s").await;
    stage_pending(&emu, &config, "svc-05", "Pending-Pass-5-xyz!").await;
    let (lists, gets) = (requests(&emu, "kv.list"), requests(&emu, "kv.get"));
    let loaded = load(&config);
    let now = time::OffsetDateTime::now_utc();
    let listed = keyturn::plan::plan(&loaded, now).await.unwrap();
    // 61 secrets: 3 pages, and nothing read.
    assert_eq!(requests(&emu, "kv.list") - lists, 3);
    assert_eq!(requests(&emu, "kv.get") - gets, 0, "no value read");
    let action = |p: &keyturn::plan::Plan, name: &str| {
        p.accounts
            .iter()
            .find(|a| a.account == name)
            .map(|a| (a.action, a.detail.clone()))
            .unwrap()
    };
    let (pending, detail) = action(&listed, "svc-05");
    assert_eq!(pending, "complete_pending");
    assert!(
        detail.contains("rotation 0b0e6a4e-7c59-4d3e-9f53-3a1f6f0c2d11"),
        "{detail}"
    );
    assert_eq!(action(&listed, "svc-06").0, "next_rotation");

    // Listing refused: each account read, the same plan.
    emu.control()
        .add_fault(keyturn_emulator::FaultRule {
            route: "kv.list".into(),
            kind: FaultKind::Status,
            status: Some(403),
            ..rule()
        })
        .unwrap();
    let gets = requests(&emu, "kv.get");
    let read = keyturn::plan::plan(&loaded, now).await.unwrap();
    // Each account reads its staging secret, and its secret unless the staging one is pending.
    assert_eq!(requests(&emu, "kv.get") - gets, 2 * N as u64 - 1);
    assert_eq!(read.accounts, listed.accounts);
}

/// `keyturn doctor`'s secret checks list the vault: each account's own secret is read (is it
/// readable is the question), its staging secret is not, and a pending rotation is named from
/// the listing's tags; one account (`--account`) is read as before, without a listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_lists_the_vault_for_the_staging_secrets() {
    let (emu, _dir, config) = world("0s").await;
    stage_pending(&emu, &config, "svc-04", "Pending-Pass-4-xyz!").await;
    let loaded = load(&config);
    let now = time::OffsetDateTime::now_utc();
    let (lists, gets) = (requests(&emu, "kv.list"), requests(&emu, "kv.get"));
    let report = keyturn::doctor::doctor(&loaded, None, false, now)
        .await
        .unwrap();
    assert_eq!(requests(&emu, "kv.list") - lists, 3, "61 secrets: 3 pages");
    assert_eq!(
        requests(&emu, "kv.get") - gets,
        N as u64,
        "one read per account: its secret, not its staging secret"
    );
    let check = |account: &str, name: &str| {
        let a = report
            .accounts
            .iter()
            .find(|a| a.account == account)
            .unwrap();
        let c = a.checks.iter().find(|c| c.check == name).unwrap();
        (c.status, c.detail.clone())
    };
    let (status, detail) = check("svc-04", "nothing_pending");
    assert_eq!(status, keyturn::doctor::Status::Warn, "{detail}");
    assert!(
        detail.contains("rotation 0b0e6a4e-7c59-4d3e-9f53-3a1f6f0c2d11"),
        "{detail}"
    );
    assert_eq!(
        check("svc-05", "nothing_pending").0,
        keyturn::doctor::Status::Pass
    );
    assert_eq!(
        check("svc-05", "secret_readable").0,
        keyturn::doctor::Status::Pass
    );
    assert_eq!(
        check("svc-05", "secret_age").0,
        keyturn::doctor::Status::Pass
    );

    // One account: its two secrets read, no listing of the whole vault.
    let (lists, gets) = (requests(&emu, "kv.list"), requests(&emu, "kv.get"));
    let one = keyturn::doctor::doctor(&loaded, Some("svc-04"), false, now)
        .await
        .unwrap();
    assert_eq!(requests(&emu, "kv.list") - lists, 0);
    assert_eq!(requests(&emu, "kv.get") - gets, 2);
    let pending = one.accounts[0]
        .checks
        .iter()
        .find(|c| c.check == "nothing_pending")
        .unwrap();
    assert_eq!(pending.detail, detail, "the same finding read or listed");
}

/// `keyturn reconcile --all` lists the vault as start-up does: every account reconciled from
/// the listing, no value read (Graph's drift reads only); one account is read as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_of_several_accounts_lists_the_vault() {
    use keyturn::admin::proto::{Request, Target};
    let (emu, _dir, config) = world("0s").await;
    let service = Service::start(load(&config)).await;
    let (lists, gets) = (requests(&emu, "kv.list"), requests(&emu, "kv.get"));
    let r = keyturn::admin::client::send(&service.socket, &Request::Reconcile(Target::All))
        .await
        .unwrap();
    assert!(r.ok, "{r:?}");
    let answered = r.result.as_ref().map(|v| v.to_string()).unwrap_or_default();
    for i in [0, 29, N - 1] {
        assert!(answered.contains(&format!("svc-{i:02}")), "{answered}");
    }
    assert_eq!(requests(&emu, "kv.list") - lists, 3, "60 secrets: 3 pages");
    assert_eq!(requests(&emu, "kv.get") - gets, 0, "no value read");

    // One account: its two reads, no listing.
    let (lists, gets) = (requests(&emu, "kv.list"), requests(&emu, "kv.get"));
    let r = keyturn::admin::client::send(
        &service.socket,
        &Request::Reconcile(Target::One("svc-03".into())),
    )
    .await
    .unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(requests(&emu, "kv.list") - lists, 0);
    assert_eq!(requests(&emu, "kv.get") - gets, 2);
    assert_eq!(service.stop().await, 0);
}

/// Start-up is ready once the listing is in: the drift check's Graph reads run afterwards
/// without holding the accounts, so a command sent meanwhile is served, and a drift they
/// find is still confirmed, recorded and rotated away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_is_ready_before_the_drift_reads_and_they_still_find_a_drift() {
    use keyturn::admin::{client, proto::Request, proto::Target};
    let (emu, dir, config) = world("0s").await;
    // An admin resets svc-05's password in the portal ten minutes after keyturn set it.
    emu.control().advance_clock(Duration::from_secs(600));
    emu.control()
        .set_password(TENANT, &upn(5), "Portal-Reset-99!")
        .unwrap();
    // Graph's user reads are slow (5 s each); Key Vault is not.
    emu.control()
        .add_fault(keyturn_emulator::FaultRule {
            route: "graph.get".into(),
            kind: FaultKind::Latency,
            latency_ms: Some(5000),
            ..rule()
        })
        .unwrap();
    let service = Service::start(load(&config)).await;
    assert_eq!(
        requests(&emu, "graph.get"),
        0,
        "ready before any drift read was answered"
    );
    // A command meanwhile is not refused as busy.
    let answer = client::send(
        &service.socket,
        &Request::Rotate {
            target: Target::One("svc-01".into()),
            reason: Some("on-call".into()),
            ticket: None,
            wait: false,
            urgent: false,
        },
    )
    .await
    .unwrap();
    assert!(answer.ok, "{answer:?}");
    // The drift reads come in: svc-05 is confirmed on a fresh read, recorded, rotated.
    assert!(
        wait_for(Duration::from_secs(60), || count(
            dir.path(),
            "rotation.completed",
            Some("svc-05")
        ) == 1)
        .await,
        "svc-05's drift was rotated away: {:?}",
        emu.control().counters().requests
    );
    assert_eq!(count(dir.path(), "drift.detected", None), 1);
    assert_eq!(count(dir.path(), "drift.detected", Some("svc-05")), 1);
    let rotated: Vec<_> = audit_records(dir.path())
        .into_iter()
        .filter(|r| r["event"] == "rotation.started")
        .map(|r| (r["account"].clone(), r["trigger"].clone()))
        .collect();
    assert!(
        rotated.contains(&("svc-05".into(), "drift".into())),
        "{rotated:?}"
    );
    assert!(
        rotated.contains(&("svc-01".into(), "socket".into())),
        "{rotated:?}"
    );
    assert_eq!(rotated.len(), 2, "{rotated:?}");
    assert!(
        wait_for(Duration::from_secs(30), || requests(&emu, "graph.get")
            >= N as u64)
        .await,
        "every account's user was read"
    );
    assert_eq!(service.stop().await, 0);
}
