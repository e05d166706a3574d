//! keyturn as a real child process against the emulator (in this test process): SIGKILL in
//! the middle of rotations and recovery at restart, catch-up at start-up, signals, the CLI's
//! exit codes, and a search of everything it printed for every password Key Vault holds.

mod common;

use common::*;
use keyturn_emulator::{FaultKind, FaultRule};
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_rotations_is_recovered_at_restart() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &emu,
        dir.path(),
        &Opts {
            verify: false,
            unclean_delay: "2s",
            ..Opts::default()
        },
    );
    // Every PATCH takes 1.5 s: the kill lands while the emulator is applying them.
    emu.control()
        .add_fault(FaultRule {
            route: "graph.patch".into(),
            kind: FaultKind::Latency,
            latency_ms: Some(1500),
            count: Some(3),
            ..rule()
        })
        .unwrap();
    let d = Daemon::start(&config, dir.path(), "first");
    d.ready().await;
    d.signal(Signal::SIGUSR1);
    assert!(
        wait_for(Duration::from_secs(20), || count(
            dir.path(),
            "rotation.staged",
            None
        ) == 3)
        .await,
        "three rotations staged"
    );
    d.signal(Signal::SIGKILL);
    let status = d.wait().await;
    assert!(!status.success());
    for (name, ..) in USERS {
        assert!(
            invariant(&emu, name).holds,
            "{name}: invariant broken right after SIGKILL"
        );
    }
    // Whether the emulator applied a PATCH whose client died is up to chance (hyper may drop
    // the request); either way the staged password is pending and the invariant holds.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    for (name, ..) in USERS {
        let report = invariant(&emu, name);
        assert!(report.holds, "{name}: {report:?}");
        assert_eq!(
            report.pending_tag.as_deref(),
            Some("pending"),
            "{name}: {report:?}"
        );
    }

    // Restart: after an unclean stop keyturn first lets stale requests settle, then recovery
    // completes all three before anything is scheduled.
    let restarted = std::time::Instant::now();
    let d = Daemon::start(&config, dir.path(), "second");
    d.ready().await;
    assert!(d.stderr().contains("stopped uncleanly"), "{}", d.stderr());
    assert!(restarted.elapsed() >= Duration::from_secs(2));
    for (name, ..) in USERS {
        let report = invariant(&emu, name);
        assert!(report.latest_matches, "{name}: {report:?}");
        assert_eq!(report.pending_tag.as_deref(), Some("committed"), "{name}");
        assert_eq!(
            count(dir.path(), "rotation.resumed", Some(name)),
            1,
            "{name}"
        );
    }
    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success(), "SIGTERM exits 0");
    assert!(count(dir.path(), "daemon.stopping", None) >= 1);
    // After a clean stop, no delay.
    let d = Daemon::start(&config, dir.path(), "third");
    d.ready().await;
    assert!(!d.stderr().contains("stopped uncleanly"));
    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_accounts_catch_up_at_start_up() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    // Every 5 s. The secrets were created (adopted) just now; once the next 5-second mark
    // has passed, every account is overdue when keyturn starts.
    let config = write_config(
        &emu,
        dir.path(),
        &Opts {
            verify: false,
            schedule: "*/5 * * * * *",
            ..Opts::default()
        },
    );
    let now = time::OffsetDateTime::now_utc();
    let to_mark = 5.0 - (now.second() % 5) as f64 - now.nanosecond() as f64 / 1e9;
    tokio::time::sleep(Duration::from_secs_f64(to_mark + 0.2)).await;

    let d = Daemon::start(&config, dir.path(), "run");
    d.ready().await;
    assert!(
        wait_for(Duration::from_secs(20), || USERS.iter().all(|u| count(
            dir.path(),
            "rotation.completed",
            Some(u.0)
        ) >= 1))
        .await,
        "every overdue account is rotated"
    );
    for (name, ..) in USERS {
        let first = audit_records(dir.path())
            .into_iter()
            .find(|r| r["event"] == "rotation.completed" && r["account"] == name)
            .unwrap();
        assert_eq!(first["trigger"], "catch-up", "{name}");
        assert!(invariant(&emu, name).latest_matches);
    }
    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_appears_in_anything_keyturn_prints_or_records() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &emu,
        dir.path(),
        &Opts {
            schedule: "*/2 * * * * *",
            audit_stdout: "json",
            ..Opts::default()
        },
    );
    for (route, kind, status, p) in [
        ("graph.patch", FaultKind::CommitThenFail, Some(500), 0.3),
        ("graph.patch", FaultKind::Status, Some(503), 0.2),
        ("kv.update", FaultKind::Status, Some(500), 0.2),
        ("token", FaultKind::Status, Some(500), 0.1),
    ] {
        emu.control()
            .add_fault(FaultRule {
                route: route.into(),
                kind,
                status,
                probability: Some(p),
                ..rule()
            })
            .unwrap();
    }
    let d = Daemon::start(&config, dir.path(), "run");
    d.ready().await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        d.signal(Signal::SIGUSR1);
    }
    // Enough rotations, under faults, however loaded the machine is.
    assert!(
        wait_for(Duration::from_secs(60), || count(
            dir.path(),
            "rotation.completed",
            None
        ) >= 6)
        .await,
        "fewer than 6 rotations completed in a minute"
    );
    emu.control().clear_faults();
    d.signal(Signal::SIGTERM);
    let (stdout, stderr) = (d.stdout.clone(), d.stderr.clone());
    assert!(d.wait().await.success());

    let loaded = load(&config);
    let values = all_values(&reader(&emu, &loaded), &["svc-1", "svc-2", "svc-ca"]).await;
    let output = [
        std::fs::read_to_string(stdout).unwrap(),
        std::fs::read_to_string(stderr).unwrap(),
        std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap(),
    ]
    .concat();
    let completed = count(dir.path(), "rotation.completed", None);
    assert!(completed >= 6, "only {completed} rotations completed");
    assert!(
        values.len() > completed,
        "{} values read back",
        values.len()
    );
    assert!(
        output.len() > 10_000,
        "debug logs were captured ({} bytes)",
        output.len()
    );
    let hits: Vec<_> = values
        .iter()
        .filter(|v| output.contains(v.as_str()))
        .collect();
    assert!(
        hits.is_empty(),
        "{} of {} passwords appear in the output",
        hits.len(),
        values.len()
    );
    for (name, ..) in USERS {
        assert!(invariant(&emu, name).holds, "{name}");
    }
    eprintln!(
        "searched {} bytes of output for {} passwords from {completed} rotations: 0 hits",
        output.len(),
        values.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_rotates_offline_and_refuses_while_the_daemon_runs() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &emu,
        dir.path(),
        &Opts {
            verify: false,
            ..Opts::default()
        },
    );
    let out = tokio::task::spawn_blocking({
        let config = config.clone();
        move || {
            Command::new(BIN)
                .args([
                    "rotate",
                    "svc-2",
                    "--offline",
                    "--reason",
                    "test",
                    "--ticket",
                    "CHG-1",
                    "--config",
                ])
                .arg(&config)
                .env("KEYTURN_ALLOW_ROOT", "1")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rotated svc-2"));
    assert!(invariant(&emu, "svc-2").latest_matches);
    let rec = audit_records(dir.path())
        .into_iter()
        .find(|r| r["event"] == "rotation.completed")
        .unwrap();
    assert_eq!(rec["trigger"], "cli");
    assert_eq!(rec["ticket"], "CHG-1");
    assert_eq!(rec["actor"]["kind"], "user");

    let d = Daemon::start(&config, dir.path(), "run");
    d.ready().await;
    let out = tokio::task::spawn_blocking({
        let config = config.clone();
        move || {
            Command::new(BIN)
                .args(["rotate", "svc-2", "--offline", "--config"])
                .arg(&config)
                .env("KEYTURN_ALLOW_ROOT", "1")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another keyturn holds the lock"), "{err}");
    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());
}

#[test]
fn check_config_exits_64_and_names_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[defaults]\nschedule = 'sometimes'\n[[accounts]]\nname = 'a'\nuser = 'u'\nidentity = 'ghost'\nvault = 'http://kv'\nsecret = 's'\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "defaults.schedule",
        "accounts[0].identity",
        "accounts[0].vault",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&bad)
        .env("KEYTURN_ALLOW_ROOT", "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "run refuses a bad config before doing anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_rotates_every_account_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let d = dir.path().to_path_buf();
        move || {
            Command::new(BIN)
                .args(["demo", "--for", "4s", "--every", "1", "--dir"])
                .arg(&d)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for account in ["coreview-1", "coreview-2", "coreview-ca"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("rotation.completed")
                    && l.contains(&format!("account={account} "))),
            "{account} never completed:\n{stdout}"
        );
        assert!(
            stdout.contains(&format!(
                "{account:<12} Entra's password is the latest version"
            )),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("AADSTS53003"),
        "the CA-blocked account warns:\n{stdout}"
    );
    // The demo's files are real and valid: its config passes check-config.
    let check = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(dir.path().join("keyturn.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    for initial in ["Initial-Pass-1!", "Initial-Pass-2!", "Initial-Pass-3!"] {
        assert!(!stdout.contains(initial) && !audit.contains(initial));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_does_not_make_the_next_start_look_like_a_crash() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &emu,
        dir.path(),
        &Opts {
            verify: false,
            unclean_delay: "10s",
            ..Opts::default()
        },
    );
    // The metrics port is taken: keyturn fails after it took the instance lock.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let status = Daemon::start(&config, dir.path(), "first").wait().await;
    assert!(!status.success());
    let err = std::fs::read_to_string(dir.path().join("first.stderr")).unwrap();
    assert!(err.contains("metrics.listen"), "{err}");

    // Fixed: the next start is not delayed and does not warn of a crash (it waited
    // unclean_start_delay and said "the previous keyturn stopped uncleanly").
    std::fs::write(&config, &text).unwrap();
    let started = std::time::Instant::now();
    let d = Daemon::start(&config, dir.path(), "second");
    d.ready().await;
    assert!(!d.stderr().contains("uncleanly"), "{}", d.stderr());
    assert!(started.elapsed() < Duration::from_secs(10));
    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());
    drop(taken);
}

#[test]
fn run_and_offline_rotate_refuse_root_unless_allowed() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: not running as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keyturn.toml");
    let run = |args: &[&str], allow: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(args).arg("--config").arg(&config);
        c.env_remove("KEYTURN_ALLOW_ROOT");
        if let Some(a) = allow {
            c.env("KEYTURN_ALLOW_ROOT", a);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (args, what) in [
        (&["run"][..], "keyturn run"),
        (
            &["rotate", "svc-1", "--offline"][..],
            "keyturn rotate --offline",
        ),
    ] {
        for allow in [None, Some("0")] {
            let (code, err) = run(args, allow);
            assert_eq!(code, Some(64), "{args:?}: {err}");
            assert!(
                err.contains(&format!("refusing to run `{what}` as root"))
                    && err.contains("--allow-root"),
                "{err}"
            );
        }
        // Allowed: it goes on (and stops at the missing configuration).
        for (extra, allow) in [(Some("--allow-root"), None), (None, Some("1"))] {
            let mut a = args.to_vec();
            a.extend(extra);
            let (code, err) = run(&a, allow);
            assert_eq!(code, Some(64), "{err}");
            assert!(err.contains("invalid configuration"), "{err}");
            assert!(!err.contains("refusing"), "{err}");
        }
    }
    assert!(!dir.path().join("state").exists(), "nothing was written");
    // Commands that only read or talk to the socket are not concerned.
    let (code, err) = run(&["audit", "verify"], None);
    assert!(!err.contains("refusing"), "{code:?} {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_links_at_the_lock_and_audit_log_are_refused_and_their_targets_untouched() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &emu,
        dir.path(),
        &Opts {
            verify: false,
            ..Opts::default()
        },
    );
    let victim = dir.path().join("root-owned");
    std::fs::write(&victim, "do not overwrite\n").unwrap();
    let rotate = || {
        let out = Command::new(BIN)
            .args(["rotate", "svc-2", "--offline", "--config"])
            .arg(&config)
            .env("KEYTURN_ALLOW_ROOT", "1")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let lock = state.join("keyturn.lock");
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    let (code, err) = rotate();
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "do not overwrite\n",
        "the lock's link target is untouched"
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("keyturn.lock: it is a symbolic link"), "{err}");

    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("audit.jsonl")).unwrap();
    let (code, err) = rotate();
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "do not overwrite\n",
        "the audit log's link target is untouched"
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("audit.jsonl: it is a symbolic link"), "{err}");
    assert!(invariant(&emu, "svc-2").holds);
}
