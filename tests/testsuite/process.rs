//! keyturn as a real child process against the emulator (in this test process): SIGKILL in
//! the middle of rotations and recovery at restart, signals, the CLI's exit codes, and a
//! search of everything it printed for every password Key Vault holds. What needs no process
//! of its own (catch-up at start-up; the daemon whose lock `rotate --offline` meets) runs the
//! service in-process (`common::Service`).

use crate::common::*;
use keyturn_emulator::{FaultKind, FaultRule};
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_rotations_is_recovered_at_restart() {
    let w = World::new(Opts {
        verify: false,
        unclean_delay: "2s",
        ..Opts::default()
    })
    .await;
    let (emu, dir, config) = (&w.emu, &w.dir, w.config.clone());
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
            invariant(emu, name).holds,
            "{name}: invariant broken right after SIGKILL"
        );
    }
    // Whether the emulator applied a PATCH whose client died is up to chance (hyper may drop
    // the request); either way the staged password is pending and the invariant holds.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    for (name, ..) in USERS {
        let report = invariant(emu, name);
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
        let report = invariant(emu, name);
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
    // Every 5 s. The secrets were created (adopted) just now; once the next 5-second mark
    // has passed, every account is overdue when keyturn starts.
    let w = World::new(Opts {
        verify: false,
        schedule: "*/5 * * * * *",
        ..Opts::default()
    })
    .await;
    let now = time::OffsetDateTime::now_utc();
    let to_mark = 5.0 - (now.second() % 5) as f64 - now.nanosecond() as f64 / 1e9;
    tokio::time::sleep(Duration::from_secs_f64(to_mark + 0.2)).await;

    let service = w.service().await;
    assert!(
        wait_for(Duration::from_secs(20), || USERS
            .iter()
            .all(|u| w.count("rotation.completed", Some(u.0)) >= 1))
        .await,
        "every overdue account is rotated"
    );
    for (name, ..) in USERS {
        let first = w
            .records()
            .into_iter()
            .find(|r| r["event"] == "rotation.completed" && r["account"] == name)
            .unwrap();
        assert_eq!(first["trigger"], "catch-up", "{name}");
        assert!(invariant(&w.emu, name).latest_matches);
    }
    assert_eq!(service.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_appears_in_anything_keyturn_prints_or_records() {
    let w = World::new(Opts {
        schedule: "*/2 * * * * *",
        audit_stdout: "json",
        ..Opts::default()
    })
    .await;
    let (emu, dir, config) = (&w.emu, &w.dir, w.config.clone());
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
    let d = w.daemon().await;
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
    let values = all_values(&reader(emu, &loaded), &["svc-1", "svc-2", "svc-ca"]).await;
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
        assert!(invariant(emu, name).holds, "{name}");
    }
    eprintln!(
        "searched {} bytes of output for {} passwords from {completed} rotations: 0 hits",
        output.len(),
        values.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_rotates_offline_and_refuses_while_the_daemon_runs() {
    let w = World::new(Opts {
        verify: false,
        ..Opts::default()
    })
    .await;
    let (emu, dir, config) = (&w.emu, &w.dir, w.config.clone());
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
    assert!(invariant(emu, "svc-2").latest_matches);
    let rec = audit_records(dir.path())
        .into_iter()
        .find(|r| r["event"] == "rotation.completed")
        .unwrap();
    assert_eq!(rec["trigger"], "cli");
    assert_eq!(rec["ticket"], "CHG-1");
    assert_eq!(rec["actor"]["kind"], "user");

    // The daemon (in-process: what counts is that it holds the lock).
    let service = Service::start(load(&config)).await;
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
    assert_eq!(service.stop().await, 0);
}

/// A `rotate --offline` that cannot start still leaves a record of who tried, with the
/// reason and ticket given (issue 19, item 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_offline_rotation_records_who_tried() {
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
                    "svc-typo",
                    "--offline",
                    "--reason",
                    "incident",
                    "--ticket",
                    "CHG-9",
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("no account named \"svc-typo\""), "{err}");
    let records = audit_records(dir.path());
    let rec = records
        .iter()
        .find(|r| r["event"] == "rotation.failed")
        .unwrap_or_else(|| panic!("no rotation.failed record in {records:#?}"));
    assert_eq!(rec["account"], "svc-typo");
    assert_eq!(rec["trigger"], "cli");
    assert_eq!(rec["actor"]["kind"], "user");
    assert!(rec["actor"]["uid"].is_u64(), "{rec}");
    assert_eq!(rec["reason"], "incident");
    assert_eq!(rec["ticket"], "CHG-9");
    assert_eq!(rec["outcome"], "failure");
    assert_eq!(rec["error"]["kind"], "not_started");
}

/// `status`, `pause`, `resume` and `reload` have no `--offline`, so their help mentions it
/// only as `rotate --offline` (the global `--allow-root`); `rotate`'s offers it.
#[test]
fn only_rotate_offers_offline_in_its_help() {
    for cmd in ["status", "pause", "resume", "reload"] {
        let out = Command::new(BIN).args([cmd, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd} --help");
        let stray: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("offline") && !l.contains("rotate --offline"))
            .collect();
        assert!(
            stray.is_empty(),
            "{cmd} --help offers an --offline: {stray:?}"
        );
    }
    let out = Command::new(BIN)
        .args(["rotate", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--offline"));
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

#[cfg(feature = "demo")]
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
    // Before the first rotation, doctor's report names the policies: the block that fails
    // coreview-ca's verify, and the report-only MFA policy the administrators fall under.
    let report = stdout
        .split("keyturn doctor (read-only")
        .nth(1)
        .unwrap_or_else(|| panic!("no doctor report:\n{stdout}"));
    let ca = report
        .split("account coreview-ca")
        .nth(1)
        .unwrap_or_default();
    assert!(
        ca.contains("fail  sign_in_readiness")
            && ca.contains(
                "\"Block svc-coreview-ca outside the office\" (block) blocks it (AADSTS53003)"
            ),
        "{report}"
    );
    let one = report
        .split("account coreview-1")
        .nth(1)
        .unwrap_or_default();
    assert!(
        one.contains("warn  sign_in_readiness  report-only Conditional Access: \"Require MFA for administrators (report-only)\""),
        "{report}"
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

/// keyturn makes itself non-dumpable (no core dump with passwords in it, no ptrace by
/// processes of the same user). The kernel shows a non-dumpable process's /proc/<pid>/status
/// as root's; run as another user (which needs root here), keyturn's must be root's while it
/// waits on an admin socket that never answers.
#[test]
fn the_process_is_not_dumpable() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to run keyturn as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut child = Command::new(BIN)
        .args(["status", "--socket"])
        .arg(&sock)
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Once it has connected, keyturn is past main()'s start.
    let (_conn, _) = listener.accept().unwrap();
    let owner = std::fs::metadata(format!("/proc/{}/status", child.id()))
        .unwrap()
        .uid();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        owner, 0,
        "keyturn running as uid 65534 is dumpable: /proc/<pid>/status belongs to uid {owner}"
    );
}

/// The lines the demo prints for a second terminal, once they are all out.
#[cfg(feature = "demo")]
fn demo_commands(stdout: &str) -> Option<Vec<String>> {
    let block = stdout.split("From a second terminal").nth(1)?;
    let lines: Vec<String> = block
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .collect();
    lines
        .iter()
        .any(|l| l.starts_with("curl "))
        .then_some(lines)
}

/// Runs one printed command line as a user would paste it into a shell.
#[cfg(feature = "demo")]
fn shell(line: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", line])
        .env_remove("KEYTURN_CONFIG")
        .env_remove("KEYTURN_SOCKET")
        .output()
        .unwrap()
}

#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_on_call_commands_that_work_from_a_second_terminal() {
    use std::io::{BufRead, BufReader};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    // Scheduled rotations every 30 s stay out of the way of the one asked for below; `--for`
    // only bounds a demo this test fails to stop.
    let mut child = Command::new(BIN)
        .args(["demo", "--for", "120s", "--every", "30", "--dir"])
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("demo.stderr")).unwrap())
        .spawn()
        .unwrap();
    let printed = Arc::new(Mutex::new(String::new()));
    let reader = {
        let printed = printed.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut p = printed.lock().unwrap();
                p.push_str(&line);
                p.push('\n');
            }
        })
    };
    let out = || printed.lock().unwrap().clone();
    assert!(
        wait_for(Duration::from_secs(30), || demo_commands(&out()).is_some()).await,
        "the demo printed no commands to try:\n{}",
        out()
    );
    let commands = demo_commands(&out()).unwrap();
    let find = |what: &str| {
        commands
            .iter()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no `{what}` command among {commands:#?}"))
            .clone()
    };
    let (status, rotate, show, curl) = (
        find(" status "),
        find(" rotate coreview-1 "),
        find(" audit show "),
        find("curl "),
    );
    assert!(rotate.contains("--reason ") && rotate.contains("--ticket DEMO-1"));

    // status: the daemon answers on the printed socket and lists every account.
    let mut answer = shell(&status);
    for _ in 0..100 {
        if answer.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = shell(&status);
    }
    let text = String::from_utf8_lossy(&answer.stdout);
    assert!(
        answer.status.success(),
        "{status}\n{text}{}",
        String::from_utf8_lossy(&answer.stderr)
    );
    for account in ["coreview-1", "coreview-2", "coreview-ca"] {
        assert!(
            text.contains(account),
            "{account} missing from status:\n{text}"
        );
    }

    // rotate: through the socket, with the printed reason and ticket (a rotation that
    // happens to run at that moment is waited out, as a user would).
    let mut answer = shell(&rotate);
    for _ in 0..20 {
        if !String::from_utf8_lossy(&answer.stdout).contains("already running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer = shell(&rotate);
    }
    let text = String::from_utf8_lossy(&answer.stdout);
    assert!(
        answer.status.success() && text.contains("coreview-1: rotated"),
        "{rotate}\n{text}{}",
        String::from_utf8_lossy(&answer.stderr)
    );

    // audit show: the rotation, who asked, the reason and the ticket.
    let answer = shell(&show);
    let text = String::from_utf8_lossy(&answer.stdout);
    assert!(answer.status.success(), "{show}\n{text}");
    assert!(
        text.lines().any(|l| l.contains("rotation.completed")
            && l.contains("ticket DEMO-1")
            && l.contains("reason \"tried from the demo\"")),
        "{show}\n{text}"
    );

    // metrics: the printed URL answers with keyturn's metrics.
    let body = if Command::new("curl").arg("--version").output().is_ok() {
        let answer = shell(&curl);
        assert!(answer.status.success(), "{curl}");
        String::from_utf8_lossy(&answer.stdout).into_owned()
    } else {
        // No curl on this machine: the same GET by hand.
        use std::io::{Read, Write};
        let url = curl.split_whitespace().last().unwrap();
        let rest = url.strip_prefix("http://").unwrap();
        let (addr, path) = rest.split_at(rest.find('/').unwrap());
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    assert!(
        body.contains("keyturn_rotations_total{account=\"coreview-1\",outcome=\"success\"}"),
        "{curl}\n{body}"
    );

    // Ctrl-C: the demo stops cleanly, removes its socket and reports.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    reader.join().unwrap();
    assert!(status.success(), "{}", out());
    assert!(out().contains("coreview-1   Entra's password is the latest version"));
    assert!(!dir.path().join("admin.sock").exists());
}

/// A valid configuration whose check logs a warning (the metrics listener off loopback).
fn config_that_warns(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("warns.toml");
    std::fs::write(
        &path,
        r#"
[metrics]
listen = "0.0.0.0:9464"

[identities.rotator]
kind = "client_secret"
tenant_id = "contoso.onmicrosoft.com"
client_id = "6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a"
client_secret = "s3cret"
allow_inline_secret = true

[[accounts]]
name = "a"
user = "svc-a@contoso.onmicrosoft.com"
identity = "rotator"
vault = "https://kv.vault.azure.net/"
secret = "svc-a"
"#,
    )
    .unwrap();
    path
}

const ESC: &str = "\x1b[";

#[test]
fn logs_on_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_that_warns(dir.path());
    for no_color in [None, Some(""), Some("1")] {
        let mut cmd = Command::new(BIN);
        cmd.args(["check-config", "--config"]).arg(&config);
        match no_color {
            Some(v) => cmd.env("NO_COLOR", v),
            None => cmd.env_remove("NO_COLOR"),
        };
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("not on loopback"), "no warning logged:\n{err}");
        assert!(
            !err.contains(ESC),
            "NO_COLOR={no_color:?}: colour codes on a pipe:\n{err:?}"
        );
    }
}

#[test]
fn logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    // `script` (util-linux) gives the child a pseudo-terminal as its stderr.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` command on this machine to give keyturn a terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config_that_warns(dir.path());
    let line = format!("'{BIN}' check-config --config '{}'", config.display());
    let on_a_terminal = |no_color: Option<&str>| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"]);
        match no_color {
            Some(v) => cmd.env("NO_COLOR", v),
            None => cmd.env_remove("NO_COLOR"),
        };
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("not on loopback"),
            "no warning logged:\n{text}"
        );
        text
    };
    assert!(on_a_terminal(None).contains(ESC), "no colour on a terminal");
    assert!(
        on_a_terminal(Some("")).contains(ESC),
        "an empty NO_COLOR does not turn colour off (no-color.org)"
    );
    let text = on_a_terminal(Some("1"));
    assert!(!text.contains(ESC), "NO_COLOR=1 on a terminal:\n{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_does_not_make_the_next_start_look_like_a_crash() {
    let w = World::new(Opts {
        verify: false,
        unclean_delay: "10s",
        ..Opts::default()
    })
    .await;
    let (dir, config) = (&w.dir, w.config.clone());
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
    // Not a configuration problem: exit 1, so systemd restarts it.
    assert_eq!(status.code(), Some(1));
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

/// A credential that cannot be built at start exits 64 (`EX_CONFIG`), which the unit's
/// `RestartPreventExitStatus=64` does not restart, instead of 1 every five seconds.
#[test]
fn a_credential_that_cannot_be_built_at_start_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keyturn.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[daemon]
state_dir = {state:?}
audit_log = {audit:?}

[identities.rotator]
kind = "client_certificate"
tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
client_id = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
certificate_credential = "keyturn-cert"

[[accounts]]
name = "a"
user = "svc-a@contoso.onmicrosoft.com"
identity = "rotator"
vault = "https://kv.vault.azure.net/"
secret = "svc-a"
"#,
            state = dir.path().join("state"),
            audit = dir.path().join("audit.jsonl"),
        ),
    )
    .unwrap();
    for args in [&["run"][..], &["rotate", "a", "--offline"]] {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("KEYTURN_ALLOW_ROOT", "1")
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(
            err.contains("rotator") && err.contains("CREDENTIALS_DIRECTORY"),
            "{args:?}: {err}"
        );
    }
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
    let w = World::new(Opts {
        verify: false,
        ..Opts::default()
    })
    .await;
    let (emu, dir, config) = (&w.emu, &w.dir, w.config.clone());
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
    assert!(invariant(emu, "svc-2").holds);
}
