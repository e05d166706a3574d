//! An MSP's daemon (issue 19, item 6; `docs/msp.md`): included tenant files read at start-up
//! and at each reload (a bad one keeps the old configuration), and commands by tenant.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn cli(args: &[&str], socket: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn account_names(sock: &Path) -> Vec<String> {
    let out = cli(&["status", "--json"], sock);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<String> = v["result"]["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// The emulator's configuration with svc-1 in the main file and `include` in front.
fn main_with_include(emu: &keyturn_emulator::Emulator, dir: &Path) -> std::path::PathBuf {
    let config = write_config(
        emu,
        dir,
        &Opts {
            verify: false,
            accounts: vec![("svc-1", "rotator")],
            ..Opts::default()
        },
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("include = [\"tenants.d/*.toml\"]\n{text}")).unwrap();
    std::fs::create_dir_all(dir.join("tenants.d")).unwrap();
    config
}

/// A tenant file with one account of the emulator's users, through the main file's identity.
fn tenant_account(emu: &keyturn_emulator::Emulator, name: &str) -> String {
    let (_, upn, secret, _) = USERS.iter().find(|u| u.0 == name).unwrap();
    format!(
        "[[accounts]]\nname = {name:?}\nuser = {upn:?}\nidentity = \"rotator\"\nvault = {:?}\nsecret = {secret:?}\n",
        emu.vault_url(VAULT)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn included_files_are_read_at_start_and_at_reload_and_a_bad_one_keeps_the_old() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = main_with_include(&emu, dir.path());
    let tenants = dir.path().join("tenants.d");
    std::fs::write(tenants.join("a.toml"), tenant_account(&emu, "svc-2")).unwrap();
    let sock = dir.path().join("admin.sock");
    let d = Daemon::start(&config, dir.path(), "run");
    d.ready().await;
    assert_eq!(account_names(&sock), ["svc-1", "svc-2"]);

    // A new tenant file with a mistake: rejected, named by its path; the old stays.
    let bad = tenants.join("b.toml");
    std::fs::write(
        &bad,
        tenant_account(&emu, "svc-ca").replace("identity = \"rotator\"", "identity = \"nobody\""),
    )
    .unwrap();
    let out = cli(&["reload"], &sock);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{}: accounts[0].identity", bad.display())),
        "{}",
        text(&out)
    );
    assert_eq!(account_names(&sock), ["svc-1", "svc-2"]);
    // The same by SIGHUP.
    d.signal(Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || count(
            dir.path(),
            "config.rejected",
            None
        ) == 2)
        .await
    );
    assert_eq!(account_names(&sock), ["svc-1", "svc-2"]);

    // Fixed: the reload adds the new tenant's account.
    std::fs::write(&bad, tenant_account(&emu, "svc-ca")).unwrap();
    let out = cli(&["reload"], &sock);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(account_names(&sock), ["svc-1", "svc-2", "svc-ca"]);

    // Offboarding: the tenant's file removed, its account goes at the next reload.
    std::fs::remove_file(tenants.join("a.toml")).unwrap();
    let out = cli(&["reload"], &sock);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(account_names(&sock), ["svc-1", "svc-ca"]);
    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());
}
