//! An MSP's daemon (issue 19, item 6; `docs/msp.md`): included tenant files read at start-up
//! and at each reload (a bad one keeps the old configuration), and commands by tenant.

use crate::common::*;
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

/// `rotate|pause|resume --tenant T`: the daemon resolves T (an identity's `tenant_id` as
/// written, any case) to that tenant's accounts; each is answered and audited on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_by_tenant_reach_that_tenants_accounts_only() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = main_with_include(&emu, dir.path());
    // svc-2 through the main file's identity (tenant "contoso"); svc-ca through an identity
    // that names the same emulated tenant by its domain, in its own file.
    std::fs::write(
        dir.path().join("tenants.d/a.toml"),
        tenant_account(&emu, "svc-2"),
    )
    .unwrap();
    let main = std::fs::read_to_string(&config).unwrap();
    let start = main.find("[identities.rotator]").unwrap();
    let end = start + main[start..].find("\n\n").unwrap();
    let by_domain = main[start..end]
        .replace("[identities.rotator]", "[identities.by_domain]")
        .replace(
            "tenant_id = \"contoso\"",
            "tenant_id = \"contoso.onmicrosoft.com\"",
        );
    std::fs::write(
        dir.path().join("tenants.d/b.toml"),
        format!(
            "{by_domain}\n\n{}",
            tenant_account(&emu, "svc-ca").replace("\"rotator\"", "\"by_domain\"")
        ),
    )
    .unwrap();
    let sock = dir.path().join("admin.sock");
    let d = Daemon::start(&config, dir.path(), "run");
    d.ready().await;
    let status = || -> serde_json::Value {
        let out = cli(&["status", "--json"], &sock);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let paused = |v: &serde_json::Value| -> Vec<String> {
        v["result"]["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["paused"] == true)
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let idle = || {
        status()["result"]["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["busy"] == false)
    };
    assert!(wait_for(Duration::from_secs(10), idle).await);

    // Pause by the domain, in another case: svc-ca only.
    let out = cli(&["pause", "--tenant", "Contoso.OnMicrosoft.com"], &sock);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("svc-ca"), "{}", text(&out));
    assert_eq!(paused(&status()), ["svc-ca"]);
    let out = cli(&["rotate", "--tenant", "contoso.onmicrosoft.com"], &sock);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("paused"), "{}", text(&out));
    let out = cli(&["resume", "--tenant", "contoso.onmicrosoft.com"], &sock);
    assert!(out.status.success(), "{}", text(&out));
    assert!(paused(&status()).is_empty());

    // Rotate by the id: svc-1 and svc-2, each audited; svc-ca untouched.
    let before = count(dir.path(), "rotation.completed", Some("svc-ca"));
    let out = cli(
        &[
            "rotate",
            "--tenant",
            "contoso",
            "--reason",
            "customer offboarding",
        ],
        &sock,
    );
    assert!(out.status.success(), "{}", text(&out));
    for name in ["svc-1", "svc-2"] {
        assert_eq!(count(dir.path(), "rotation.completed", Some(name)), 1);
        assert!(invariant(&emu, name).holds, "{name}");
    }
    assert_eq!(
        count(dir.path(), "rotation.completed", Some("svc-ca")),
        before
    );
    let accepted: Vec<String> = audit_records(dir.path())
        .into_iter()
        .filter(|r| r["event"] == "admin.command_accepted")
        .map(|r| r["detail"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        accepted.contains(&"rotate tenant contoso".to_owned()),
        "{accepted:?}"
    );
    assert!(
        accepted.contains(&"pause tenant Contoso.OnMicrosoft.com".to_owned()),
        "{accepted:?}"
    );

    // A tenant with no account: refused, and said so.
    let out = cli(&["pause", "--tenant", "fabrikam.com"], &sock);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no account is configured in tenant \"fabrikam.com\""),
        "{}",
        text(&out)
    );
    // --tenant and an account name together are a usage error.
    let out = cli(&["pause", "svc-1", "--tenant", "contoso"], &sock);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());
}
