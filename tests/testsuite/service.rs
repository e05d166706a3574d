//! The whole service in-process through `keyturn::service::run`, stopped by the shutdown
//! future it is given (no process, no signal): what `keyturn run` and `keyturn demo` start.


use crate::common::*;
use keyturn::admin::{client, proto::Request};
use keyturn::daemon::InstanceLock;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_run_becomes_ready_rotates_and_stops_when_its_shutdown_future_completes() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &emu,
        dir.path(),
        &Opts {
            // Every second: a scheduled rotation comes soon after start-up.
            schedule: "* * * * * *",
            accounts: vec![("svc-1", "rotator")],
            ..Opts::default()
        },
    );
    let loaded = load(&path);
    let socket = loaded.config.admin.socket.clone();
    let state_dir = loaded.config.daemon.state_dir.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(keyturn::service::run(loaded, async {
        let _ = stopped.await;
    }));

    // Ready: the admin socket answers and says so.
    let ready = wait_for(Duration::from_secs(30), || socket.exists()).await
        && async {
            for _ in 0..600 {
                if let Ok(r) = client::send(&socket, &Request::Status).await {
                    if r.result.as_ref().is_some_and(|v| v["ready"] == true) {
                        return true;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
        .await;
    assert!(
        ready,
        "the service never reported ready on its admin socket"
    );
    // The instance lock is held while it runs.
    assert!(
        InstanceLock::acquire(&state_dir).is_err(),
        "a second instance could take the lock of a running service"
    );

    // The schedule rotates the account, and the password is where it should be.
    assert!(
        wait_for(Duration::from_secs(30), || count(
            dir.path(),
            "rotation.completed",
            Some("svc-1")
        ) >= 1)
        .await,
        "no scheduled rotation completed: {:#?}",
        audit_records(dir.path())
    );

    // Completing the shutdown future stops it like SIGTERM: exit code 0, the socket removed,
    // the lock released cleanly (the next start is not taken for one after a crash).
    stop.send(()).unwrap();
    let code = tokio::time::timeout(Duration::from_secs(30), service)
        .await
        .expect("the service did not stop after its shutdown future completed")
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
    assert!(!socket.exists(), "the admin socket was left behind");
    assert_eq!(count(dir.path(), "daemon.stopping", None), 1);
    let next = InstanceLock::acquire(&state_dir).expect("the lock was not released");
    assert!(!next.unclean, "a clean stop left the lock marked unclean");
    assert!(invariant(&emu, "svc-1").holds);
}

/// The metrics are handed to the rate limits by the wiring (no longer reached for by
/// `limits` itself): a request the service paces is counted in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_run_hands_its_metrics_to_the_rate_limits() {
    let paced = || -> f64 {
        let status = keyturn::daemon::DaemonStatus::default();
        keyturn::metrics::render(&status, time::OffsetDateTime::UNIX_EPOCH)
            .lines()
            .find(|l| l.starts_with("keyturn_paced_requests_total{budget=\"keyvault_other\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &emu,
        dir.path(),
        &Opts {
            // 100 reads per 10 s: a burst of one, so start-up recovery's reads queue.
            admin: "\n[limits]\nvault_other_per_10s = 100\nheadroom = 0.0\n",
            ..Opts::default()
        },
    );
    let loaded = load(&path);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(keyturn::service::run(loaded, async {
        let _ = stopped.await;
    }));
    assert!(
        wait_for(Duration::from_secs(30), || paced() >= 1.0).await,
        "no paced request was counted"
    );
    stop.send(()).unwrap();
    let code = tokio::time::timeout(Duration::from_secs(30), service)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
}
