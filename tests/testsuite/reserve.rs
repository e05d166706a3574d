//! The share of each budget reserved for the vaults' other clients (`limits.reserve`) and the
//! urgent rotation that may use it.

use crate::common::*;
use keyturn::admin::client;
use keyturn::admin::proto::{Request, Target};

/// `rotate --all --urgent` is recorded as urgent, with its reason and ticket, and rotates
/// every account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_rotate_all_is_audited_as_urgent() {
    let w = World::new(Opts {
        verify: false,
        ..Default::default()
    })
    .await;
    let service = w.service().await;
    let answer = client::send(
        &service.socket,
        &Request::Rotate {
            target: Target::All,
            reason: Some("suspected compromise".into()),
            ticket: Some("INC-77".into()),
            wait: true,
            urgent: true,
        },
    )
    .await
    .unwrap();
    assert!(answer.ok, "{answer:?}");
    let accepted: Vec<_> = w
        .records()
        .into_iter()
        .filter(|r| r["event"] == "admin.command_accepted")
        .collect();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    let record = &accepted[0];
    assert!(
        record["detail"]
            .as_str()
            .unwrap()
            .contains("rotate all urgently"),
        "{record}"
    );
    assert_eq!(record["reason"], "suspected compromise");
    assert_eq!(record["ticket"], "INC-77");
    for (account, ..) in USERS {
        assert_eq!(w.count("rotation.completed", Some(account)), 1, "{account}");
        assert!(invariant(&w.emu, account).holds, "{account}");
    }
    // Without a reason, or for one account, it is refused before anything is recorded.
    for request in [
        r#"{"v":1,"cmd":"rotate","all":true,"urgent":true}"#,
        r#"{"v":1,"cmd":"rotate","account":"svc-1","reason":"r","urgent":true}"#,
    ] {
        let answer = raw(&service.socket, request);
        assert_eq!(answer["ok"], false, "{answer}");
        assert_eq!(answer["error"]["code"], "bad_request", "{answer}");
    }
    assert_eq!(service.stop().await, 0);
}

/// One raw exchange on the admin socket: a request line, its answer.
fn raw(socket: &std::path::Path, request: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    tokio::task::block_in_place(|| {
        let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    })
}

/// A 429 keyturn's own pacing did not predict (here: one injected on the start-up listing,
/// which the SDK's retry gets past) halves keyturn's rate for that vault's budget, and the
/// metrics show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpredicted_429_slows_keyturn_down_and_shows_in_the_metrics() {
    let port = free_port();
    let extra = format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let w = World::new(Opts {
        admin: Box::leak(extra.into_boxed_str()),
        verify: false,
        ..Opts::default()
    })
    .await;
    w.emu
        .control()
        .add_fault(keyturn_emulator::FaultRule {
            route: "kv.list".into(),
            kind: keyturn_emulator::FaultKind::Status,
            status: Some(429),
            retry_after: Some(0),
            count: Some(1),
            ..rule()
        })
        .unwrap();
    let service = w.service().await;
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let vault = w.emu.vault_url(VAULT);
    let line = |name: &str| {
        let prefix = format!(
            "keyturn_{name}{{service=\"keyvault\",vault=\"{vault}\",budget=\"keyvault_other\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(line("unpredicted_throttles_total"), Some(1.0), "{text}");
    assert_eq!(line("pacing_rate_factor"), Some(0.5), "{text}");
    assert_eq!(service.stop().await, 0);
}
