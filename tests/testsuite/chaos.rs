//! The chaos run (`docs/reliability.md`): many accounts across tenants and two vaults,
//! faults on every route, keyturn as a real child process killed at random moments
//! (mostly SIGKILL, sometimes SIGTERM) and restarted, rotations also forced by SIGUSR1 and
//! the admin socket, and an independent checker asking the emulator, continuously and
//! after every kill, whether each account's invariant holds. At the end, with faults off,
//! every account must converge, and no password may appear in anything keyturn wrote.
//!
//! CI runs a short version. The long one:
//! `KEYTURN_CHAOS_ACCOUNTS=200 KEYTURN_CHAOS_TENANTS=8 KEYTURN_CHAOS_ROUNDS=300 cargo test --release --test testsuite chaos:: -- --nocapture`

use crate::common::{chance, chance_status, count, wait_for, Daemon, InvariantChecker, BIN};
use keyturn_emulator::{
    Emulator, EmulatorConfig, FaultKind, FaultRule, InvariantQuery, Scenario, TlsSource,
};
use nix::sys::signal::Signal;
use rand::Rng;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Shape {
    accounts: usize,
    tenants: usize,
}

fn tenant(t: usize) -> String {
    format!("tenant-{t}")
}

fn app(t: usize) -> String {
    format!("{:08x}-0000-0000-0000-{:012x}", 0xa000 + t, t)
}

const OPERATOR: &str = "0000000f-0000-0000-0000-00000000000f";
const VAULTS: [&str; 2] = ["kv-chaos-a", "kv-chaos-b"];

fn account(i: usize, shape: &Shape) -> (String, String, String, usize, &'static str) {
    let t = i % shape.tenants;
    (
        format!("acct-{i}"),
        format!("svc-{i}@{}.onmicrosoft.com", tenant(t)),
        format!("svc-{i}"),
        t,
        VAULTS[i % 2],
    )
}

fn scenario(shape: &Shape) -> String {
    let mut s = String::new();
    for t in 0..shape.tenants {
        s.push_str(&format!(
            "[[tenants]]\nid = {:?}\ndomain = \"{}.onmicrosoft.com\"\n\n",
            tenant(t),
            tenant(t)
        ));
        s.push_str(&format!(
            "[[apps]]\ntenant = {:?}\nname = \"rotator-{t}\"\nclient_id = {:?}\nsecrets = [\"secret-{t}\"]\ngraph_permissions = [\"User.Read.All\", \"User-PasswordProfile.ReadWrite.All\"]\ndirectory_roles = [\"Privileged Authentication Administrator\"]\n\n[[oauth2_permission_grants]]\napp = {:?}\nscope = \"openid User.Read\"\n\n",
            tenant(t),
            app(t),
            app(t)
        ));
    }
    // The operator's app, in tenant 0, holds the vaults.
    s.push_str(&format!("[[apps]]\ntenant = \"tenant-0\"\nname = \"operator\"\nclient_id = {OPERATOR:?}\nsecrets = [\"operator-secret\"]\n\n"));
    for i in 0..shape.accounts {
        let (_, upn, _, t, _) = account(i, shape);
        s.push_str(&format!(
            "[[users]]\ntenant = {:?}\nupn = {upn:?}\npassword = \"Chaos-Initial-{i}!\"\ndirectory_roles = [\"Exchange Administrator\", \"Global Reader\"]\n\n",
            tenant(t)
        ));
    }
    for v in VAULTS {
        s.push_str(&format!(
            "[[vaults]]\nname = {v:?}\ntenant = \"tenant-0\"\naccess = [{{ client_id = {OPERATOR:?}, role = \"Key Vault Secrets Officer\" }}]\nsecrets = [\n"
        ));
        for i in 0..shape.accounts {
            let (_, upn, secret, t, vault) = account(i, shape);
            if vault == v {
                s.push_str(&format!(
                    "  {{ name = {secret:?}, from_user = \"{}/{upn}\" }},\n",
                    tenant(t)
                ));
            }
        }
        s.push_str("]\n\n");
    }
    s
}

fn config(emu: &Emulator, dir: &Path, shape: &Shape) -> std::path::PathBuf {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, emu.ca_pem()).unwrap();
    let mut c = format!(
        "[daemon]\nstate_dir = {:?}\naudit_log = {:?}\ndrift_check_interval = \"5s\"\nretry_base_delay = \"500ms\"\nretry_max_delay = \"3s\"\nshutdown_grace = \"5s\"\nunclean_start_delay = \"0s\"\nmax_concurrent_rotations = 8\n\n[admin]\nsocket = {:?}\n\n[tls]\nextra_ca_files = [{:?}]\n\n[network]\ntimeout = \"5s\"\n[network.resolve]\n",
        dir.join("state").display().to_string(),
        dir.join("audit.jsonl").display().to_string(),
        dir.join("admin.sock").display().to_string(),
        ca.display().to_string()
    );
    for h in emu.resolve_hosts() {
        c.push_str(&format!("{h:?} = \"127.0.0.1\"\n"));
    }
    c.push_str("\n[defaults]\nschedule = \"*/3 * * * * *\"\nwindow = \"0s\"\nverify = true\n");
    let authority = emu.authority_host();
    let graph = emu.graph_base();
    c.push_str(&format!(
        "\n[identities.operator]\nkind = \"client_secret\"\ntenant_id = \"tenant-0\"\nclient_id = {OPERATOR:?}\nclient_secret = \"operator-secret\"\nallow_inline_secret = true\nauthority_host = {authority:?}\n"
    ));
    for t in 0..shape.tenants {
        c.push_str(&format!(
            "\n[identities.t{t}]\nkind = \"client_secret\"\ntenant_id = {:?}\nclient_id = {:?}\nclient_secret = \"secret-{t}\"\nallow_inline_secret = true\nauthority_host = {authority:?}\ngraph_base = {graph:?}\n",
            tenant(t),
            app(t)
        ));
    }
    for i in 0..shape.accounts {
        let (name, upn, secret, t, vault) = account(i, shape);
        c.push_str(&format!(
            "\n[[accounts]]\nname = {name:?}\nuser = {upn:?}\nidentity = \"t{t}\"\nvault_identity = \"operator\"\nvault = {:?}\nsecret = {secret:?}\n",
            emu.vault_url(vault)
        ));
    }
    let path = dir.join("keyturn.toml");
    std::fs::write(&path, c).unwrap();
    path
}

fn faults() -> Vec<FaultRule> {
    vec![
        chance_status("kv.set", 503, 0.05),
        chance_status("kv.get", 500, 0.03),
        chance_status("kv.update", 503, 0.05),
        chance_status("graph.patch", 500, 0.05),
        chance_status("graph.get", 503, 0.05),
        chance_status("token", 500, 0.03),
        FaultRule {
            retry_after: Some(1),
            ..chance_status("graph.patch", 429, 0.04)
        },
        FaultRule {
            retry_after: Some(1),
            ..chance_status("kv.set", 429, 0.03)
        },
        FaultRule {
            status: Some(500),
            ..chance("kv.set", FaultKind::CommitThenFail, 0.05)
        },
        FaultRule {
            then: Some("drop".into()),
            ..chance("graph.patch", FaultKind::CommitThenFail, 0.06)
        },
        FaultRule {
            status: Some(500),
            ..chance("graph.patch", FaultKind::CommitThenFail, 0.04)
        },
        FaultRule {
            then: Some("drop".into()),
            ..chance("kv.update", FaultKind::CommitThenFail, 0.04)
        },
        chance("kv.*", FaultKind::Drop, 0.02),
        chance("graph.patch", FaultKind::Drop, 0.03),
        FaultRule {
            latency_ms: Some(250),
            ..chance("*", FaultKind::Latency, 0.15)
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_never_breaks_the_invariant() {
    let shape = Shape {
        accounts: env("KEYTURN_CHAOS_ACCOUNTS", 24),
        tenants: env("KEYTURN_CHAOS_TENANTS", 3),
    };
    let rounds = env("KEYTURN_CHAOS_ROUNDS", 12);
    let started = Instant::now();
    let emu = Emulator::start(EmulatorConfig {
        scenario: Some(Scenario::from_toml_str(&scenario(&shape)).unwrap()),
        tls: TlsSource::Generate { ca_out: None },
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&emu, dir.path(), &shape);
    let control = emu.control();
    let queries: Vec<(String, InvariantQuery)> = (0..shape.accounts)
        .map(|i| {
            let (name, upn, secret, t, vault) = account(i, &shape);
            (
                name,
                InvariantQuery {
                    tenant: tenant(t),
                    user: upn,
                    vault: vault.into(),
                    secret,
                    staging_secret: None,
                },
            )
        })
        .collect();
    for (name, q) in &queries {
        assert!(
            control.invariant(q).unwrap().latest_matches,
            "{name} seeded"
        );
    }

    // The independent checker.
    let checker = InvariantChecker::start(control.clone(), queries.clone());

    for f in faults() {
        control.add_fault(f).unwrap();
    }
    let sock = dir.path().join("admin.sock");
    let (mut sigkills, mut sigterms, mut usr1, mut socket_rotations) = (0, 0, 0, 0);
    for round in 0..rounds {
        let d = Daemon::start_with_log(&cfg, dir.path(), &format!("round-{round}"), "info");
        let life = Duration::from_millis(rand::rng().random_range(500..4000));
        let born = Instant::now();
        while born.elapsed() < life {
            tokio::time::sleep(Duration::from_millis(300)).await;
            match rand::rng().random_range(0..10) {
                0 => {
                    d.signal(Signal::SIGUSR1);
                    usr1 += 1;
                }
                1 => {
                    let sock = sock.clone();
                    let ok = tokio::task::spawn_blocking(move || {
                        std::process::Command::new(BIN)
                            .args([
                                "rotate",
                                "--all",
                                "--no-wait",
                                "--reason",
                                "chaos",
                                "--socket",
                            ])
                            .arg(&sock)
                            .output()
                            .map(|o| o.status.code() != Some(69))
                            .unwrap_or(false)
                    })
                    .await
                    .unwrap();
                    socket_rotations += ok as u32;
                }
                _ => {}
            }
        }
        if rand::rng().random_range(0..5) == 0 {
            d.signal(Signal::SIGTERM);
            sigterms += 1;
        } else {
            d.signal(Signal::SIGKILL);
            sigkills += 1;
        }
        d.wait().await;
        for (name, q) in &queries {
            checker.check(name, q, &format!("after kill {round}: "));
        }
    }

    // Faults off: everything converges.
    let faults_fired = control.counters().faults_by_kind.clone();
    control.clear_faults();
    let converge_start = Instant::now();
    let d = Daemon::start_with_log(&cfg, dir.path(), "final", "info");
    d.ready().await;
    let converged = wait_for(Duration::from_secs(60), || {
        queries.iter().all(|(_, q)| {
            let r = control.invariant(q).unwrap();
            r.latest_matches && r.pending_tag.as_deref() != Some("pending")
        })
    })
    .await;
    let converge_time = converge_start.elapsed();
    d.signal(Signal::SIGTERM);
    assert!(
        d.wait().await.success(),
        "the final daemon exits 0 on SIGTERM"
    );
    let (checks, violations) = checker.stop().await;

    // Every staged rotation ended once everything converged: completed or abandoned, or at
    // least committed (a kill after the commit and the finish, before the `completed`
    // record, leaves nothing to recover: the password is already the latest `<secret>`).
    let records = crate::common::audit_records(dir.path());
    let mut staged = HashSet::new();
    let mut ended = HashSet::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        let kind = r["event"].as_str().unwrap_or("?").to_owned();
        *kinds.entry(kind.clone()).or_default() += 1;
        let id = r["rotation_id"].as_str().map(String::from);
        match (kind.as_str(), id) {
            ("rotation.staged" | "rotation.resumed", Some(id)) => {
                staged.insert(id);
            }
            ("rotation.completed" | "rotation.abandoned" | "rotation.committed", Some(id)) => {
                ended.insert(id);
            }
            _ => {}
        }
    }
    let unfinished: Vec<_> = staged.difference(&ended).collect();

    // No password in anything keyturn wrote.
    let mut output = String::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.extension()
            .is_some_and(|e| e == "stdout" || e == "stderr" || e == "jsonl")
        {
            output.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    let verify = std::process::Command::new(BIN)
        .args(["audit", "verify", "--file"])
        .arg(dir.path().join("audit.jsonl"))
        .output()
        .unwrap();
    let chain = String::from_utf8_lossy(&verify.stdout).trim().to_owned();
    let passwords = all_passwords(&emu, &cfg).await;
    let leaks = passwords
        .iter()
        .filter(|p| output.contains(p.as_str()))
        .count();

    let summary = format!(
        "chaos: {} accounts, {} tenants, 2 vaults, {rounds} rounds in {:.0?}\n  kills: {sigkills} SIGKILL, {sigterms} SIGTERM; forced: {usr1} SIGUSR1, {socket_rotations} socket rotate-all\n  rotations: {} started, {} completed, {} abandoned, {} left pending, {} resumed\n  faults fired: {:?}\n  invariant checks: {}, violations: {}\n  converged with faults off in {:.1?}: {converged}\n  staged rotations without an end: {}\n  output searched: {} bytes for {} passwords: {leaks} hits\n  audit chain: {chain}",
        shape.accounts,
        shape.tenants,
        started.elapsed(),
        kinds.get("rotation.started").unwrap_or(&0),
        kinds.get("rotation.completed").unwrap_or(&0),
        kinds.get("rotation.abandoned").unwrap_or(&0),
        kinds.get("rotation.left_pending").unwrap_or(&0),
        kinds.get("rotation.resumed").unwrap_or(&0),
        faults_fired,
        checks,
        violations.len(),
        converge_time,
        unfinished.len(),
        output.len(),
        passwords.len(),
    );
    eprintln!("{summary}");
    assert!(
        violations.is_empty(),
        "invariant violations:\n{}\n{summary}",
        violations.join("\n")
    );
    assert!(converged, "not converged\n{summary}");
    let story = |id: &str| -> Vec<String> {
        records
            .iter()
            .filter(|r| r["rotation_id"] == id)
            .map(|r| format!("{} {} {}", r["time"], r["event"], r["detail"]))
            .collect()
    };
    assert!(
        unfinished.is_empty(),
        "{}\n{summary}",
        unfinished
            .iter()
            .map(|id| format!("{id}:\n  {}", story(id).join("\n  ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(leaks, 0, "{summary}");
    assert!(
        verify.status.success(),
        "the audit chain must verify after all the kills\n{summary}\n{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        count(dir.path(), "rotation.completed", None) >= shape.accounts,
        "{summary}"
    );
    assert!(
        faults_fired.values().sum::<u64>() > 20,
        "faults actually fired\n{summary}"
    );
}

/// Every value of every version of every secret (through the operator's credential).
async fn all_passwords(emu: &Emulator, cfg: &Path) -> Vec<String> {
    use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
    use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
    use futures::TryStreamExt;
    let loaded = keyturn::config::load_with_env(cfg, false).unwrap();
    let http = keyturn::azure::http_client(
        &loaded.config.tls,
        &loaded.config.network,
        keyturn::observe::unobserved(),
    )
    .unwrap();
    let cred = keyturn::azure::credential(
        "operator",
        &loaded.config.identities["operator"],
        &http,
        &loaded.config.network,
    )
    .unwrap();
    let mut out = Vec::new();
    for v in VAULTS {
        let client = SecretClient::new(
            &emu.vault_url(v),
            cred.clone(),
            Some(SecretClientOptions {
                client_options: keyturn::azure::client_options(&http, None),
                ..Default::default()
            }),
        )
        .unwrap();
        let names: Vec<String> = client
            .list_secret_properties(None)
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.resource_id().unwrap().name)
            .collect();
        for name in names {
            let versions: Vec<_> = client
                .list_secret_properties_versions(&name, None)
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            for props in versions {
                let version = props.resource_id().unwrap().version;
                let s = client
                    .get_secret(
                        &name,
                        Some(SecretClientGetSecretOptions {
                            secret_version: version,
                            ..Default::default()
                        }),
                    )
                    .await
                    .unwrap()
                    .into_model()
                    .unwrap();
                out.extend(s.value);
            }
        }
    }
    out
}

/// The chaos harness extended to provisioning: `keyturn provision` killed (SIGKILL) while
/// each of its steps is in flight (the step's route held by latency: the stage, the create,
/// the commit, the finish, the role assignments), then run again: it converges, and the
/// password is never lost (the emulator's invariant after the kill; the Key Vault password
/// signs in at the end). Nothing it printed or recorded holds a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_killed_at_each_step_converges_without_losing_the_password() {
    use crate::provision::{
        key_vault_password_signs_in, new_invariant, new_passwords, provision, setup, NEW_UPN,
    };
    for (route, after) in [
        ("kv.set", "provision.started"),
        ("graph.create", "provision.staged"),
        ("kv.set", "provision.user_created"),
        ("kv.update", "provision.committed"),
        ("graph.roles", "provision.committed"),
    ] {
        let (emu, dir, config) = setup("provisioner").await;
        let control = emu.control();
        control
            .add_fault(FaultRule {
                route: route.into(),
                kind: FaultKind::Latency,
                latency_ms: Some(3000),
                ..Default::default()
            })
            .unwrap();
        let out = dir.path().join("killed.stdout");
        let err = dir.path().join("killed.stderr");
        let mut child = std::process::Command::new(BIN)
            .args(["provision", "svc-new", "--reason", "chaos", "--config"])
            .arg(&config)
            .env("KEYTURN_ALLOW_ROOT", "1")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        assert!(
            wait_for(Duration::from_secs(20), || count(dir.path(), after, None)
                >= 1)
            .await,
            "{route}: never reached {after}: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        // The held request is in flight now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            Signal::SIGKILL,
        )
        .unwrap();
        let _ = child.wait();
        if control.user("contoso", NEW_UPN).is_ok() {
            assert!(
                new_invariant(&emu).holds,
                "{route} after {after}: the kill lost the password"
            );
        }
        control.clear_faults();
        let (code, stdout, stderr) = provision(&config, &["svc-new", "--reason", "rerun"]).await;
        assert_eq!(code, 0, "{route} after {after}: {stdout}\n{stderr}");
        let inv = new_invariant(&emu);
        assert!(
            inv.latest_matches && inv.pending_tag.as_deref() != Some("pending"),
            "{route} after {after}: {inv:?}"
        );
        assert!(key_vault_password_signs_in(&emu, &config).await);
        assert_eq!(
            control
                .user("contoso", NEW_UPN)
                .unwrap()
                .directory_roles
                .len(),
            7,
            "{route} after {after}: every role"
        );
        let verify = std::process::Command::new(BIN)
            .args(["audit", "verify", "--file"])
            .arg(dir.path().join("audit.jsonl"))
            .output()
            .unwrap();
        assert!(verify.status.success(), "{route}: the audit chain verifies");
        let mut written = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        for f in [&out, &err] {
            written.push_str(&std::fs::read_to_string(f).unwrap_or_default());
        }
        written.push_str(&stdout);
        written.push_str(&stderr);
        for p in new_passwords(&emu, &config).await {
            assert!(
                !written.contains(&p),
                "{route}: a password was printed or recorded"
            );
        }
    }
}
