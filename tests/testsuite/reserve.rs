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

/// Counts the 429s a consumer's requests meet (its SDK's retries included).
#[derive(Default)]
struct Consumer429s(std::sync::atomic::AtomicU64);

impl keyturn::observe::Observer for Consumer429s {
    fn request(&self, _: &'static str, status: Option<u16>, _: std::time::Duration) {
        if status == Some(429) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn paced(&self, _: &'static str, _: std::time::Duration) {}
}

/// A consumer reading one password once a second through the official SDK, at its reserved
/// share, while keyturn starts, rotates every account and runs drift checks against an
/// emulator enforcing lowered limits that keyturn is configured with: the consumer meets no
/// 429, and neither does keyturn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_at_its_reserved_share_meets_no_429() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    const ACCOUNTS: usize = 40;
    // 60 reads (and 300 sets) per vault per 10 s, on both sides, so that a rotate-all is
    // bound by the reads the consumer shares; keyturn keeps a quarter of each budget for
    // others and uses 60 × 0.75 × 0.98 = 44 reads per 10 s; the consumer reads 10.
    // (With `reserve = 0` keyturn uses 58 and the consumer meets 429s.)
    let emu = keyturn_emulator::testkit::start_toml(&crate::listing::scenario_of(
        ACCOUNTS,
        "\n[limits]\nkv_window_ms = 10000\nkv_set_limit = 300\nkv_other_limit = 60\n",
    ))
    .await;
    let (dir, config) = crate::listing::config_of(
        &emu,
        ACCOUNTS,
        "5s",
        "\n[limits]\nvault_writes_per_10s = 300\nvault_other_per_10s = 60\nreserve = 0.25\nheadroom = 0.02\n",
    );
    let loaded = load(&config);
    let seen = Arc::new(Consumer429s::default());
    let client = vault_client_as(&emu, &loaded, READER, "reader-secret", seen.clone());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (reads, failures) = (
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
    );
    let consumer = {
        let (stop, reads, failures) = (stop.clone(), reads.clone(), failures.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            // A late read is not made up for by a burst: the consumer keeps to its rate.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                match client.get_secret("svc-00", None).await {
                    Ok(_) => reads.fetch_add(1, Ordering::SeqCst),
                    Err(_) => failures.fetch_add(1, Ordering::SeqCst),
                };
            }
        })
    };
    let service = Service::start(loaded).await;
    let answer = client::send(
        &service.socket,
        &Request::Rotate {
            target: Target::All,
            reason: Some("the consumer test".into()),
            ticket: None,
            wait: true,
            urgent: false,
        },
    )
    .await
    .unwrap();
    assert!(answer.ok, "{answer:?}");
    assert_eq!(
        count(dir.path(), "rotation.completed", None),
        ACCOUNTS,
        "every account rotated"
    );
    // Two drift checks (every 5 s).
    tokio::time::sleep(Duration::from_secs(11)).await;
    stop.store(true, Ordering::SeqCst);
    consumer.await.unwrap();
    assert_eq!(service.stop().await, 0);
    assert!(reads.load(Ordering::SeqCst) >= 10, "the consumer read");
    assert_eq!(failures.load(Ordering::SeqCst), 0, "a consumer read failed");
    assert_eq!(seen.0.load(Ordering::SeqCst), 0, "429s to the consumer");
    let throttled = emu.control().counters().throttled;
    assert!(
        throttled.is_empty(),
        "429s from the emulator: {throttled:?}"
    );
}
