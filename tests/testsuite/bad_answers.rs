//! Bad answers from Azure, as a table: malformed JSON, wrong content types, huge bodies,
//! missing fields, a 200 with an error body or from something that is not Graph, an answer
//! that never comes. Each gives a clear error in bounded time, loses no password (the
//! invariant holds), and the account rotates once the service behaves.

use crate::common::*;
use keyturn::audit::{MemorySink, Trigger};
use keyturn::clock::SystemClock;
use keyturn::protocol::{Engine, Request, Tuning};
use keyturn_emulator::{FaultKind, FaultRule};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Case {
    what: &'static str,
    route: &'static str,
    status: u16,
    content_type: Option<&'static str>,
    body: &'static str,
    body_bytes: Option<u64>,
    /// Text the error must contain; None when the rotation is expected to complete anyway.
    error: Option<&'static str>,
}

const HTML: Option<&str> = Some("text/html");
const JSON: Option<&str> = Some("application/json");

fn cases() -> Vec<Case> {
    let c = |what, route, status, content_type, body, error| Case {
        what,
        route,
        status,
        content_type,
        body,
        body_bytes: None,
        error,
    };
    vec![
        c("vault read: HTML page", "kv.get", 200, HTML, "<html>maintenance</html>", Some("nothing was changed")),
        c("vault read: malformed JSON", "kv.get", 200, JSON, "{\"value\": \"x\",", Some("nothing was changed")),
        c("vault read: no value", "kv.get", 200, JSON, "{\"id\":\"https://kv1.vault.azure.net/secrets/svc-1/0123456789abcdef0123456789abcdef\"}", Some("no value")),
        c("vault read: 200 with an error body", "kv.get", 200, JSON, "{\"error\":{\"code\":\"Oops\",\"message\":\"no\"}}", Some("nothing was changed")),
        c("vault read: wrong content type", "kv.get", 200, Some("application/octet-stream"), "\u{1}\u{2}\u{3}", Some("nothing was changed")),
        c("vault read: 500 with HTML", "kv.get", 500, HTML, "<h1>Bad gateway</h1>", Some("nothing was changed")),
        c("stage: 200 without an id", "kv.set", 200, JSON, "{}", Some("could not stage")),
        c("stage: 201 with text", "kv.set", 201, Some("text/plain"), "created", Some("could not stage")),
        c("graph reset: 200 from a proxy", "graph.patch", 200, HTML, "<html>Welcome to the hotel wifi</html>", Some("left pending")),
        c("graph reset: 200 with an error body", "graph.patch", 200, JSON, "{\"error\":{\"code\":\"generalException\",\"message\":\"x\"}}", Some("left pending")),
        c("graph reset: 400 HTML from a proxy", "graph.patch", 400, HTML, "<html>Bad Request</html>", Some("left pending")),
        c("graph reset: 403 without a body", "graph.patch", 403, None, "", Some("left pending")),
        c("graph reset: 500 malformed JSON", "graph.patch", 500, JSON, "{{{{", Some("left pending")),
        c("token: 200 without a token", "token", 200, JSON, "{\"token_type\":\"Bearer\"}", Some("")),
        c("token: HTML", "token", 200, HTML, "<html>login</html>", Some("")),
        c("token: 400 garbage", "token", 400, Some("text/plain"), "nope", Some("")),
    ]
}

async fn engine(
    emu: &keyturn_emulator::Emulator,
    dir: &std::path::Path,
    timeout: &str,
) -> (Arc<Engine>, Vec<keyturn::daemon::Managed>) {
    let path = write_config(
        emu,
        dir,
        &Opts {
            verify: false,
            ..Opts::default()
        },
    );
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "timeout = \"10s\"",
        &format!("timeout = {timeout:?}\nsdk_retries = 2\nsdk_retry_budget = \"5s\""),
    );
    std::fs::write(&path, text).unwrap();
    let loaded = load(&path);
    let http = keyturn::azure::http_client(
        &loaded.config.tls,
        &loaded.config.network,
        keyturn::observe::unobserved(),
    )
    .unwrap();
    let accounts = keyturn::app::accounts(&loaded, &http).unwrap();
    let tuning = Tuning {
        apply_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
        ..Tuning::default()
    };
    (
        Arc::new(Engine::new(
            Arc::new(MemorySink::default()),
            Arc::new(SystemClock),
            tuning,
        )),
        accounts,
    )
}

fn answer(case: &Case) -> FaultRule {
    FaultRule {
        route: case.route.into(),
        kind: FaultKind::Answer,
        status: Some(case.status),
        content_type: case.content_type.map(String::from),
        body: Some(case.body.into()),
        body_bytes: case.body_bytes,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_give_clear_errors_and_lose_nothing() {
    let mut failures = Vec::new();
    for case in cases() {
        let emu = emulator().await;
        let dir = tempfile::tempdir().unwrap();
        let (engine, accounts) = engine(&emu, dir.path(), "3s").await;
        let account = &accounts[0].account;
        emu.control().add_fault(answer(&case)).unwrap();
        let started = Instant::now();
        let result = engine
            .rotate(account, &Request::daemon(Trigger::Schedule))
            .await;
        let took = started.elapsed();
        let report = invariant(&emu, "svc-1");
        let fired = emu
            .control()
            .counters()
            .faults_by_kind
            .get("answer")
            .copied()
            .unwrap_or(0);
        match (&result, case.error) {
            (Err(e), Some(text)) if e.to_string().contains(text) => {}
            (Ok(_), None) => {}
            (r, _) => failures.push(format!(
                "{}: unexpected {:?}",
                case.what,
                r.as_ref().map(|_| "completed").map_err(|e| e.to_string())
            )),
        }
        if let Err(e) = &result {
            // Errors are for people: no raw body dumps.
            if e.to_string().len() > 2000 {
                failures.push(format!(
                    "{}: error of {} bytes",
                    case.what,
                    e.to_string().len()
                ));
            }
        }
        if !report.holds {
            failures.push(format!("{}: invariant broken: {report:?}", case.what));
        }
        if fired == 0 {
            failures.push(format!("{}: the fault never fired", case.what));
        }
        if took > Duration::from_secs(30) {
            failures.push(format!("{}: took {took:?}", case.what));
        }
        // The service behaves again: the account rotates (completing any pending password).
        emu.control().clear_faults();
        if let Err(e) = engine
            .rotate(account, &Request::daemon(Trigger::Schedule))
            .await
        {
            failures.push(format!("{}: no recovery: {e}", case.what));
        }
        let report = invariant(&emu, "svc-1");
        if !report.latest_matches {
            failures.push(format!("{}: not converged: {report:?}", case.what));
        }
        eprintln!(
            "{:<40} {:>6.1?}  {}",
            case.what,
            took,
            result
                .err()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "completed".into())
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_graph_answer_is_refused_without_reading_it_all() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (engine, accounts) = engine(&emu, dir.path(), "5s").await;
    let case = Case {
        what: "graph reset: 20 MB error",
        route: "graph.patch",
        status: 500,
        content_type: JSON,
        body: "{\"error\":",
        body_bytes: Some(20 * 1024 * 1024),
        error: None,
    };
    emu.control()
        .add_fault(FaultRule {
            count: Some(3),
            ..answer(&case)
        })
        .unwrap();
    let err = engine
        .rotate(&accounts[0].account, &Request::daemon(Trigger::Schedule))
        .await
        .unwrap_err();
    assert!(err.is_pending(), "{err}");
    assert!(invariant(&emu, "svc-1").holds);
    engine
        .rotate(&accounts[0].account, &Request::daemon(Trigger::Schedule))
        .await
        .unwrap();
    assert!(invariant(&emu, "svc-1").latest_matches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_never_answers_is_timed_out() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (engine, accounts) = engine(&emu, dir.path(), "1s").await;
    emu.control()
        .add_fault(FaultRule {
            route: "token".into(),
            kind: FaultKind::Latency,
            latency_ms: Some(600_000),
            ..Default::default()
        })
        .unwrap();
    let started = Instant::now();
    let err = engine
        .rotate(&accounts[0].account, &Request::daemon(Trigger::Schedule))
        .await
        .unwrap_err();
    let took = started.elapsed();
    eprintln!("token hang: {took:?}: {err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    assert!(invariant(&emu, "svc-1").latest_matches);
    emu.control().clear_faults();
    engine
        .rotate(&accounts[0].account, &Request::daemon(Trigger::Schedule))
        .await
        .unwrap();
    assert!(invariant(&emu, "svc-1").latest_matches);
}

/// A proxy's 400 page that echoes the refused Key Vault write (with the password being
/// committed), small and 4 MB: the daemon's audit log, its journal (stderr) and the admin
/// reply keep a short record of it, and no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoing_error_page_leaves_no_password_and_a_short_record() {
    let w = World::new(Opts {
        verify: false,
        accounts: vec![("svc-1", "rotator")],
        ..Opts::default()
    })
    .await;
    let (emu, dir, config) = (&w.emu, &w.dir, w.config.clone());
    // No `"` or `\` in passwords: the echo and the logs would JSON-escape them, and the
    // search below looks for the passwords as they are.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "verify = false\n",
        "verify = false\n[defaults.policy]\nexclude = '\"\\'\n",
    );
    std::fs::write(&config, text).unwrap();
    let sock = dir.path().join("admin.sock");
    let d = w.daemon().await;
    let rotate = |sock: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(BIN)
                .args(["rotate", "svc-1", "--reason", "leak test", "--socket"])
                .arg(&sock)
                .output()
                .unwrap()
        })
    };
    let mut replies = String::new();
    for body_bytes in [None, Some(4 * 1024 * 1024)] {
        // Hold the Graph reset until the fault on the commit is in place (the stage, the
        // first write, must go through).
        let patches = || {
            emu.control()
                .counters()
                .requests
                .get("graph.patch")
                .copied()
                .unwrap_or(0)
        };
        let before = patches();
        emu.control()
            .add_fault(keyturn_emulator::FaultRule {
                route: "graph.patch".into(),
                kind: FaultKind::Latency,
                latency_ms: Some(2000),
                count: Some(1),
                ..Default::default()
            })
            .unwrap();
        let first = rotate(sock.clone());
        assert!(wait_for(Duration::from_secs(20), || patches() > before).await);
        emu.control()
            .add_fault(FaultRule {
                route: "kv.set".into(),
                kind: FaultKind::Answer,
                status: Some(400),
                content_type: Some("text/html".into()),
                body: Some(
                    "<html><body><h1>400 Bad Request</h1><p>Request blocked:</p><pre>{request}</pre></body></html>"
                        .into(),
                ),
                body_bytes,
                echo_request: Some(true),
                ..Default::default()
            })
            .unwrap();
        let out = first.await.unwrap();
        let reply = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "the commit was refused: {reply}");
        assert!(reply.len() < 4000, "a reply of {} bytes", reply.len());
        replies.push_str(&reply);
        // The service behaves again: the pending password is committed.
        emu.control().clear_faults();
        let out = rotate(sock.clone()).await.unwrap();
        replies.push_str(&String::from_utf8_lossy(&out.stdout));
        replies.push_str(&String::from_utf8_lossy(&out.stderr));
        assert!(invariant(emu, "svc-1").holds);
    }
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let stderr = d.stderr();
    d.wait().await;

    let loaded = load(&config);
    let passwords = all_values(&reader(emu, &loaded), &["svc-1"]).await;
    assert!(passwords.len() >= 3, "{passwords:?}");
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    for (what, text) in [
        ("audit log", &audit),
        ("stderr", &stderr),
        ("admin replies", &replies),
    ] {
        for p in &passwords {
            assert!(!text.contains(p.as_str()), "a password is in the {what}");
        }
        assert!(
            !text.contains("Request blocked"),
            "the page is in the {what}"
        );
    }
    assert!(
        replies.contains("bytes of text/html, not recorded"),
        "the admin reply names the refusal: {replies}"
    );
    let longest = audit.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "an audit record of {longest} bytes");
    assert!(
        audit.contains("bytes of text/html, not recorded"),
        "the audit log records the refusal"
    );
}
