//! Operating keyturn: the admin socket and its CLI clients, reload by socket and SIGHUP,
//! peer-credential checks with a second uid, hostile clients, sd_notify messages and
//! SIGTERM during a rotation, against the emulator. Signals, sd_notify, a second uid and the
//! metrics listener's counters need a daemon process; the socket's commands and its hostile
//! clients run the service in-process (`common::Service`).

use crate::common::*;
use keyturn_emulator::FaultKind;
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// Runs the CLI against `socket`. The service under test may run in this process, on this
/// runtime: the wait moves off the worker (`block_in_place`) so the service's tasks go on.
fn cli(args: &[&str], socket: &Path) -> Output {
    tokio::task::block_in_place(|| {
        Command::new(BIN)
            .args(args)
            .arg("--socket")
            .arg(socket)
            .output()
            .unwrap()
    })
}

async fn cli_async(args: Vec<String>, socket: std::path::PathBuf) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .arg("--socket")
            .arg(&socket)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// One raw exchange: send `bytes`, read one line back (or None if the daemon closed).
fn raw(socket: &Path, bytes: &[u8]) -> Option<serde_json::Value> {
    tokio::task::block_in_place(|| {
        let mut s = UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(bytes);
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        serde_json::from_str(&line).ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_call_commands_through_the_socket() {
    let w = World::new(Opts {
        verify: false,
        ..Opts::default()
    })
    .await;
    let (emu, sock) = (&w.emu, w.socket());
    let service = w.service().await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o660
    );

    let out = cli(&["status"], &sock);
    assert!(out.status.success(), "{}", text(&out));
    let s = text(&out);
    assert!(
        s.contains("ready") && s.contains("svc-1") && s.contains("svc-ca"),
        "{s}"
    );
    let out = cli(&["status", "--json"], &sock);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["result"]["accounts"].as_array().unwrap().len(), 3);
    assert!(v["result"]["accounts"][0]["next_due"].is_string());
    assert_eq!(v["result"]["audit"]["writable"], true, "{v}");
    assert!(v["result"]["audit"]["next_seq"].as_u64().unwrap() > 0);

    let out = cli(
        &[
            "rotate",
            "svc-1",
            "--reason",
            "suspected leak",
            "--ticket",
            "INC-7",
        ],
        &sock,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("svc-1: rotated (rotation"),
        "{}",
        text(&out)
    );
    assert!(invariant(emu, "svc-1").latest_matches);
    let records = w.records();
    let accepted = records
        .iter()
        .find(|r| r["event"] == "admin.command_accepted")
        .unwrap();
    assert_eq!(accepted["actor"]["uid"], 0);
    assert!(accepted["actor"]["pid"].is_number());
    assert_eq!(accepted["reason"], "suspected leak");
    assert_eq!(accepted["ticket"], "INC-7");
    let done = records
        .iter()
        .find(|r| r["event"] == "rotation.completed")
        .unwrap();
    assert_eq!(done["trigger"], "socket");
    assert_eq!(done["ticket"], "INC-7");

    let out = cli(&["rotate", "--all", "--no-wait", "--json"], &sock);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<String> = v["result"]["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rotation"]["rotation_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(
        wait_for(Duration::from_secs(20), || {
            let recs = w.records();
            ids.iter().all(|id| {
                recs.iter()
                    .any(|r| r["event"] == "rotation.completed" && r["rotation_id"] == id.as_str())
            })
        })
        .await,
        "the rotations started with --no-wait completed under the ids returned"
    );

    let out = cli(&["pause", "svc-2"], &sock);
    assert!(
        out.status.success() && text(&out).contains("svc-2: paused"),
        "{}",
        text(&out)
    );
    let out = cli(&["rotate", "svc-2"], &sock);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("paused"), "{}", text(&out));
    let out = cli(&["status", "--json"], &sock);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let svc2 = v["result"]["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "svc-2")
        .unwrap()
        .clone();
    assert_eq!(svc2["paused"], true);
    assert!(cli(&["resume", "svc-2"], &sock).status.success());
    assert!(cli(&["rotate", "svc-2"], &sock).status.success());

    let out = cli(&["reconcile"], &sock);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out).matches("consistent").count(),
        3,
        "{}",
        text(&out)
    );

    let out = cli(&["rotate", "nobody"], &sock);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no account named \"nobody\""));

    assert_eq!(service.stop().await, 0);
    assert!(!sock.exists(), "the socket is removed at exit");
    let out = cli(&["status"], &sock);
    assert_eq!(out.status.code(), Some(69), "no daemon: EX_UNAVAILABLE");
    assert!(
        text(&out).contains("is `keyturn run` running"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_good_configs_and_keeps_the_old_one_on_bad_ones() {
    let w = World::new(Opts {
        verify: false,
        ..Opts::default()
    })
    .await;
    let (emu, dir, config) = (&w.emu, &w.dir, w.config.clone());
    let sock = dir.path().join("admin.sock");
    let good3 = std::fs::read_to_string(&config).unwrap();
    let d = w.daemon().await;
    let accounts = |sock: &Path| -> usize {
        let out = cli(&["status", "--json"], sock);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["result"]["accounts"].as_array().unwrap().len()
    };

    // Two accounts only.
    write_config(
        emu,
        dir.path(),
        &Opts {
            verify: false,
            accounts: vec![("svc-1", "rotator"), ("svc-2", "rotator")],
            ..Opts::default()
        },
    );
    let out = cli(&["reload"], &sock);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("2 account(s) kept, 0 added, 1 removed"),
        "{}",
        text(&out)
    );
    assert_eq!(accounts(&sock), 2);

    // A bad file is rejected with its problems; the two accounts stay.
    std::fs::write(
        &config,
        good3.replace("schedule = \"0 3 * * MON\"", "schedule = \"every monday\""),
    )
    .unwrap();
    let out = cli(&["reload"], &sock);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("defaults.schedule"), "{}", text(&out));
    assert_eq!(accounts(&sock), 2);

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
    assert_eq!(accounts(&sock), 2, "the old configuration stays in force");
    std::fs::write(&config, &good3).unwrap();
    d.signal(Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || count(
            dir.path(),
            "config.loaded",
            None
        ) == 2)
        .await
    );
    assert_eq!(accounts(&sock), 3);
    let rejected = audit_records(dir.path())
        .into_iter()
        .find(|r| r["event"] == "config.rejected")
        .unwrap();
    assert!(rejected["detail"]
        .as_str()
        .unwrap()
        .contains("defaults.schedule"));
    // The re-added account works once its start-up reconcile is done.
    let idle = || {
        let out = cli(&["status", "--json"], &sock);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["result"]["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["busy"] == false)
    };
    assert!(wait_for(Duration::from_secs(10), idle).await);
    let out = cli(&["rotate", "svc-ca"], &sock);
    assert!(out.status.success(), "{}", text(&out));
    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_slow_clients_do_not_disturb_the_daemon() {
    let w = World::new(Opts {
        verify: false,
        admin: "request_timeout = \"1s\"\nmax_connections = 80",
        ..Opts::default()
    })
    .await;
    let (emu, sock) = (&w.emu, w.socket());
    let service = w.service().await;

    let r = raw(&sock, b"this is not json\n").unwrap();
    assert_eq!(r["error"]["code"], "bad_request");
    let r = raw(&sock, b"{\"v\":1,\"cmd\":\"explode\"}\n").unwrap();
    assert_eq!(r["error"]["code"], "unknown_command");
    let r = raw(&sock, b"{\"v\":9,\"cmd\":\"status\"}\n").unwrap();
    assert_eq!(r["error"]["code"], "unsupported_version");
    let r = raw(&sock, b"\xff\xfe\xfd garbage\n").unwrap();
    assert_eq!(r["error"]["code"], "bad_request");
    let mut big = vec![b'x'; 200_000];
    big.push(b'\n');
    let r = raw(&sock, &big).unwrap();
    assert_eq!(r["error"]["code"], "too_large");

    // A silent client and a half-open one are closed after the request timeout.
    let silent = UnixStream::connect(&sock).unwrap();
    let half = UnixStream::connect(&sock).unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = String::new();
    let n = tokio::task::block_in_place(|| BufReader::new(&silent).read_line(&mut buf).unwrap());
    assert_eq!(n, 0, "closed without an answer");
    assert!(started.elapsed() < Duration::from_secs(4));

    // 50 clients at once while a slow rotation runs.
    emu.control()
        .add_fault(keyturn_emulator::FaultRule {
            route: "graph.patch".into(),
            kind: FaultKind::Latency,
            latency_ms: Some(1500),
            count: Some(1),
            ..rule()
        })
        .unwrap();
    let out = cli(&["rotate", "svc-1", "--no-wait"], &sock);
    assert!(out.status.success());
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(cli_async(
                vec!["status".into(), "--json".into()],
                sock.clone(),
            ))
        })
        .collect();
    let mut ok = 0;
    for c in clients {
        let out = c.await.unwrap();
        if out.status.success() {
            ok += 1;
        }
    }
    assert_eq!(ok, 50, "every concurrent client was answered");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        wait_for(Duration::from_secs(10), || w
            .count("rotation.completed", Some("svc-1"))
            == 1)
        .await
    );
    assert!(invariant(emu, "svc-1").latest_matches);
    drop(half);
    assert_eq!(service.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_are_refused_unless_in_an_admin_group() {
    if !nix::unistd::getuid().is_root() || which("setpriv").is_none() {
        eprintln!("SKIPPED: needs root and setpriv to run a client as a second uid");
        return;
    }
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A copy of the binary that uid 65534 can execute wherever the build tree lives.
    let bin = dir.path().join("keyturn");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = write_config(
        &emu,
        dir.path(),
        &Opts {
            verify: false,
            admin: "group = \"users\"",
            ..Opts::default()
        },
    );
    let sock = dir.path().join("admin.sock");
    let d = Daemon::start(&config, dir.path(), "run");
    d.ready().await;
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().gid(),
        100,
        "the socket belongs to the admin group"
    );
    let as_nobody = |groups: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534"])
            .args(if groups.is_empty() {
                vec!["--clear-groups".to_owned()]
            } else {
                vec![format!("--groups={groups}")]
            })
            .arg(&bin)
            .args(["status", "--socket"])
            .arg(&sock)
            .output()
            .unwrap()
    };
    // A member of the admin group (as a supplementary group) is allowed.
    let out = as_nobody("100");
    assert!(out.status.success(), "{}", text(&out));
    // Anyone else cannot even open the socket (mode 0660)…
    let out = as_nobody("");
    assert_eq!(out.status.code(), Some(69), "{}", text(&out));
    // …and if the mode were loosened, the peer-credential check still refuses and audits.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody("");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("permission denied"), "{}", text(&out));
    let refused = audit_records(dir.path())
        .into_iter()
        .find(|r| r["event"] == "admin.command_refused")
        .unwrap();
    assert_eq!(refused["actor"]["uid"], 65534);
    assert!(refused["detail"].as_str().unwrap().contains("gid 65534"));
    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notifications_and_sigterm_during_a_rotation() {
    let w = World::new(Opts {
        verify: false,
        ..Opts::default()
    })
    .await;
    let (emu, dir, config) = (&w.emu, &w.dir, w.config.clone());
    let sock = dir.path().join("admin.sock");
    let notify = dir.path().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let collector = {
        let messages = messages.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let end = std::time::Instant::now() + Duration::from_secs(40);
            while std::time::Instant::now() < end {
                if let Ok(n) = listener.recv(&mut buf) {
                    messages
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
                        break;
                    }
                }
            }
        })
    };
    let stdout = dir.path().join("out");
    let stderr = dir.path().join("err");
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("KEYTURN_ALLOW_ROOT", "1")
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "400000")
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let d = Daemon {
        child,
        stdout,
        stderr,
    };
    d.ready().await;
    let has = |m: &str| messages.lock().unwrap().iter().any(|x| x.contains(m));
    assert!(
        wait_for(Duration::from_secs(5), || has("READY=1")).await,
        "{:?}",
        messages.lock().unwrap()
    );
    assert!(has("STATUS=managing 3 account(s)"));
    assert!(
        wait_for(Duration::from_secs(5), || has("WATCHDOG=1")).await,
        "watchdog pings"
    );
    d.signal(Signal::SIGHUP);
    assert!(wait_for(Duration::from_secs(5), || has("RELOADING=1")).await);

    // SIGTERM while a rotation waits on a slow Graph: it finishes within the grace period.
    emu.control()
        .add_fault(keyturn_emulator::FaultRule {
            route: "graph.patch".into(),
            kind: FaultKind::Latency,
            latency_ms: Some(2000),
            count: Some(1),
            ..rule()
        })
        .unwrap();
    assert!(cli(&["rotate", "svc-2", "--no-wait"], &sock)
        .status
        .success());
    assert!(
        wait_for(Duration::from_secs(10), || count(
            dir.path(),
            "rotation.staged",
            Some("svc-2")
        ) == 1)
        .await
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());
    collector.join().unwrap();
    assert!(has("STOPPING=1"));
    let report = invariant(emu, "svc-2");
    assert!(report.latest_matches, "{report:?}");
    assert_eq!(report.pending_tag.as_deref(), Some("committed"));
    let kinds: Vec<String> = audit_records(dir.path())
        .iter()
        .map(|r| r["event"].as_str().unwrap().to_owned())
        .collect();
    let stop = kinds.iter().position(|k| k == "daemon.stopping").unwrap();
    let done = kinds
        .iter()
        .rposition(|k| k == "rotation.completed")
        .unwrap();
    assert!(
        done > stop,
        "the rotation completed after the stop began: {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints() {
    let w = World::new(Opts {
        verify: false,
        ..Opts::default()
    })
    .await;
    let (dir, config) = (&w.dir, w.config.clone());
    let port = free_port();
    let mut text_cfg = std::fs::read_to_string(&config).unwrap();
    text_cfg.push_str(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&config, text_cfg).unwrap();
    let sock = dir.path().join("admin.sock");
    let d = w.daemon().await;
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let http = http.clone();
        let url = format!("http://127.0.0.1:{port}{path}");
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/readyz").await.0, 200);
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/nope").await.0, 404);
    assert!(cli(&["rotate", "svc-1"], &sock).status.success());

    let (status, body) = get("/metrics").await;
    assert_eq!(status, 200);
    let lines: Vec<_> = body.lines().map(|l| Ok(l.to_owned())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("valid Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(
        value(
            "keyturn_rotations_total",
            &[("account", "svc-1"), ("outcome", "success")]
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(value("keyturn_pending", &[("account", "svc-1")]), Some(0.0));
    assert_eq!(value("keyturn_ready", &[]), Some(1.0));
    assert_eq!(value("keyturn_audit_writable", &[]), Some(1.0), "{body}");
    assert!(
        value(
            "keyturn_azure_requests_total",
            &[("service", "keyvault"), ("status", "200")]
        )
        .unwrap_or(0.0)
            >= 3.0,
        "{body}"
    );
    assert!(
        value(
            "keyturn_azure_requests_total",
            &[("service", "graph"), ("status", "204")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{body}"
    );
    assert!(
        value(
            "keyturn_azure_requests_total",
            &[("service", "entra"), ("status", "200")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{body}"
    );
    let next = value(
        "keyturn_next_rotation_timestamp_seconds",
        &[("account", "svc-2")],
    )
    .unwrap();
    assert!(next > time::OffsetDateTime::now_utc().unix_timestamp() as f64);
    assert!(value("keyturn_secret_age_seconds", &[("account", "svc-1")]).unwrap() < 60.0);
    assert!(body.contains("keyturn_azure_request_duration_seconds_bucket"));
    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_do_not_stop_rotations() {
    let w = World::new(Opts {
        verify: false,
        schedule: "*/2 * * * * *",
        admin: "request_timeout = \"2s\"",
        ..Opts::default()
    })
    .await;
    let (dir, config) = (&w.dir, w.config.clone());
    let sock = dir.path().join("admin.sock");
    let d = Daemon::start_with_log(&config, dir.path(), "run", "info");
    d.ready().await;
    let before = count(dir.path(), "rotation.completed", None);
    // 3,000 connections at once, most silent, some sending garbage.
    let mut held = Vec::new();
    for i in 0..3000 {
        match UnixStream::connect(&sock) {
            Ok(mut s) => {
                if i % 10 == 0 {
                    let _ = s.write_all(b"\x00\x01garbage\n");
                }
                held.push(s);
            }
            Err(e) => panic!("connection {i} refused: {e}"),
        }
    }
    // Rotations go on meanwhile (every 2 s).
    assert!(
        wait_for(Duration::from_secs(15), || count(
            dir.path(),
            "rotation.completed",
            None
        ) >= before + 3)
        .await,
        "rotations stalled under the connection flood"
    );
    drop(held);
    // Once the flood is gone, clients are served again.
    assert!(
        wait_for(Duration::from_secs(10), || cli(&["status"], &sock)
            .status
            .success())
        .await,
        "the socket answers again"
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());
}

/// Which socket a client command tries, as a user sees it when no daemon runs: `--socket`
/// first, then `admin.socket` from the configuration file with its `KEYTURN__ADMIN__SOCKET`
/// override (the rest of the file unvalidated), then the default. Each attempt fails with
/// exit 69 and names the socket it tried.
#[test]
fn client_commands_find_the_socket_from_flag_environment_file_or_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keyturn.toml");
    // Not a valid configuration (an unknown key, no accounts): a client needs only the socket.
    let from_file = dir.path().join("from-file.sock");
    std::fs::write(
        &config,
        format!(
            "not_a_key = 1\n[admin]\nsocket = \"{}\"\n",
            from_file.display()
        ),
    )
    .unwrap();
    let from_env = dir.path().join("from-env.sock");
    let from_flag = dir.path().join("from-flag.sock");
    let status = |config: &Path, env: Option<&Path>, flag: Option<&Path>| {
        let mut c = Command::new(BIN);
        c.args(["status", "--config"])
            .arg(config)
            .env_remove("KEYTURN_SOCKET")
            .env_remove("KEYTURN__ADMIN__SOCKET");
        if let Some(e) = env {
            c.env("KEYTURN__ADMIN__SOCKET", e);
        }
        if let Some(f) = flag {
            c.arg("--socket").arg(f);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(69), "{}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let tried = status(&config, None, None);
    assert!(tried.contains(&from_file.display().to_string()), "{tried}");
    let tried = status(&config, Some(&from_env), None);
    assert!(tried.contains(&from_env.display().to_string()), "{tried}");
    let tried = status(&config, Some(&from_env), Some(&from_flag));
    assert!(tried.contains(&from_flag.display().to_string()), "{tried}");
    // No configuration file: the default.
    let missing = dir.path().join("missing.toml");
    let tried = status(&missing, None, None);
    assert!(tried.contains("/run/keyturn/admin.sock"), "{tried}");
}
