//! The whole service in-process through `keyturn::service::run`, stopped by the shutdown
//! future it is given (no process, no signal): what `keyturn run` and `keyturn demo` start.

use crate::common::*;
use keyturn::daemon::InstanceLock;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_run_becomes_ready_rotates_and_stops_when_its_shutdown_future_completes() {
    let w = World::new(Opts {
        // Every second: a scheduled rotation comes soon after start-up.
        schedule: "* * * * * *",
        accounts: vec![("svc-1", "rotator")],
        ..Opts::default()
    })
    .await;
    let state_dir = w.loaded().config.daemon.state_dir;
    // Ready: the admin socket answers and says so.
    let service = w.service().await;
    // The instance lock is held while it runs.
    assert!(
        InstanceLock::acquire(&state_dir).is_err(),
        "a second instance could take the lock of a running service"
    );

    // The schedule rotates the account, and the password is where it should be.
    assert!(
        w.wait_count(
            Duration::from_secs(30),
            "rotation.completed",
            Some("svc-1"),
            1
        )
        .await,
        "no scheduled rotation completed: {:#?}",
        w.records()
    );

    // Completing the shutdown future stops it like SIGTERM: exit code 0, the socket removed,
    // the lock released cleanly (the next start is not taken for one after a crash).
    assert_eq!(service.stop().await, 0);
    assert!(!w.socket().exists(), "the admin socket was left behind");
    assert_eq!(w.count("daemon.stopping", None), 1);
    let next = InstanceLock::acquire(&state_dir).expect("the lock was not released");
    assert!(!next.unclean, "a clean stop left the lock marked unclean");
    assert!(invariant(&w.emu, "svc-1").holds);
}

/// The metrics are handed to the rate limits by the wiring (no longer reached for by
/// `limits` itself): a request the service paces is counted in its `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_run_hands_its_metrics_to_the_rate_limits() {
    let port = free_port();
    // 100 reads per 10 s: a burst of one, so start-up recovery's reads queue.
    let extra = format!(
        "\n[limits]\nvault_other_per_10s = 100\nheadroom = 0.0\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let w = World::new(Opts {
        admin: Box::leak(extra.into_boxed_str()),
        ..Opts::default()
    })
    .await;
    let service = w.service().await;
    // Read from this service's own endpoint, as Prometheus would (the test binary runs other
    // services beside it).
    let http = reqwest::Client::new();
    let mut paced = 0.0;
    for _ in 0..600 {
        let text = match http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        paced = text
            .lines()
            .find(|l| l.starts_with("keyturn_paced_requests_total{budget=\"keyvault_other\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        if paced >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(paced >= 1.0, "no paced request was counted");
    assert_eq!(service.stop().await, 0);
}
