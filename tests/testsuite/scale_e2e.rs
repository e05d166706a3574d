//! A small fleet end to end: 50 accounts over 5 tenants and 2 vaults, keyturn as a real
//! process, the emulator enforcing lowered limits that keyturn is configured to respect.
//! Every account is rotated at once: no 429, every invariant holds, one token per identity.

use crate::common::{count, wait_for, Daemon, BIN};
use keyturn_bench::{EmulatorLimits, Fleet, KeyturnOpts};
use keyturn_emulator::{Emulator, EmulatorConfig, InvariantQuery, Scenario};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_rotates_within_the_limits_with_one_token_per_identity() {
    let fleet = Fleet {
        accounts: 50,
        tenants: 5,
        vaults: 2,
    };
    let limits = EmulatorLimits {
        kv_set: 60,
        ..EmulatorLimits::azure()
    };
    let emu = Emulator::start(EmulatorConfig {
        scenario: Some(Scenario::from_toml_str(&fleet.scenario(limits)).unwrap()),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keyturn.toml");
    let opts = KeyturnOpts {
        budgets: Some((60, 4_000, 3_000)),
        max_concurrent: 16,
        drift: "0s".into(),
        ..Default::default()
    };
    std::fs::write(&config, fleet.config(&emu, dir.path(), &opts)).unwrap();
    let daemon = Daemon::start(&config, dir.path(), "fleet");
    daemon.ready().await;

    let started = Instant::now();
    let out = std::process::Command::new(BIN)
        .args([
            "rotate",
            "--all",
            "--no-wait",
            "--reason",
            "scale test",
            "--socket",
        ])
        .arg(dir.path().join("admin.sock"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_for(Duration::from_secs(90), || count(
            dir.path(),
            "rotation.completed",
            None
        ) == 50)
        .await,
        "rotations did not complete:\n{}",
        daemon.stderr()
    );
    let took = started.elapsed();
    // 25 accounts per vault, 2 sets each, 58 sets per 10 s: about 8.6 s at least.
    assert!(
        took >= Duration::from_secs(7),
        "too fast for the budget: {took:?}"
    );

    let ctl = emu.control();
    let counters = ctl.counters();
    assert_eq!(
        counters.throttled.values().sum::<u64>(),
        0,
        "throttled: {:?}",
        counters.throttled
    );
    // One Graph token per tenant identity, one Key Vault token for the operator.
    assert_eq!(
        counters.requests.get("token"),
        Some(&6),
        "{:?}",
        counters.requests
    );
    for i in 0..fleet.accounts {
        let (_, upn, secret) = fleet.account(i);
        let report = ctl
            .invariant(&InvariantQuery {
                tenant: Fleet::tenant_id(fleet.tenant_of(i)),
                user: upn,
                vault: Fleet::vault_name(fleet.vault_of(i)),
                secret,
                staging_secret: None,
            })
            .unwrap();
        assert!(
            report.holds && report.latest_matches,
            "account {i}: {report:?}"
        );
    }
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait().await.success());
}
