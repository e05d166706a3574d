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
    // 100 reads per 10 s: a burst of one, so a reconcile's reads queue (start-up, and a
    // reconcile of several accounts, list the vault in one request; `keyturn reconcile` of
    // one account reads its two secrets).
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
    for i in 0..600 {
        if i % 20 == 0 {
            keyturn::admin::client::send(
                &service.socket,
                &keyturn::admin::proto::Request::Reconcile(keyturn::daemon::Target::One(
                    "svc-1".into(),
                )),
            )
            .await
            .unwrap();
        }
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

/// Puts `loaded`'s metrics listener on a free loopback port; returns the port.
fn listen_for_metrics(loaded: &mut keyturn::config::Loaded) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    loaded.config.metrics.listen = Some(([127, 0, 0, 1], port).into());
    port
}

/// The value of the sample whose line starts `line_start` in the `/metrics` of the
/// listener on `port`: `None` when there is no such sample (or no answer yet).
async fn sample(port: u16, line_start: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits up to 30 s for the sample `line_start` of `port`'s `/metrics` to reach `at_least`.
async fn sample_reaches(port: u16, line_start: &str, at_least: f64) -> bool {
    for _ in 0..300 {
        if sample(port, line_start)
            .await
            .is_some_and(|v| v >= at_least)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Each service counts its own Azure requests: one started in the same process as another
/// (the demo, these tests) does not show the other's in its `/metrics`. The counters were
/// process-wide statics before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_in_one_process_count_only_their_own_azure_requests() {
    let password_resets = r#"keyturn_azure_requests_total{service="graph",status="204"}"#;
    let vault_requests = r#"keyturn_azure_requests_total{service="keyvault","#;
    let start = |dir: &std::path::Path, emu: &keyturn_emulator::Emulator, opts: Opts| {
        let mut loaded = load(&write_config(emu, dir, &opts));
        let port = listen_for_metrics(&mut loaded);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = tokio::spawn(keyturn::service::run(loaded, async {
            let _ = stopped.await;
        }));
        (port, stop, service)
    };

    // The first rotates an account every second: Graph answers its resets with 204.
    let (emu_a, dir_a) = (emulator().await, tempfile::tempdir().unwrap());
    let (port_a, stop_a, service_a) = start(
        dir_a.path(),
        &emu_a,
        Opts {
            schedule: "* * * * * *",
            accounts: vec![("svc-1", "rotator")],
            ..Opts::default()
        },
    );
    assert!(
        sample_reaches(port_a, password_resets, 1.0).await,
        "the first service's password reset was not counted"
    );

    // The second rotates nothing; it reads its vault at start-up.
    let (emu_b, dir_b) = (emulator().await, tempfile::tempdir().unwrap());
    let (port_b, stop_b, service_b) = start(
        dir_b.path(),
        &emu_b,
        Opts {
            accounts: vec![("svc-2", "rotator")],
            ..Opts::default()
        },
    );
    assert!(
        sample_reaches(port_b, vault_requests, 1.0).await,
        "the second service's vault requests were not counted"
    );
    assert_eq!(count(dir_b.path(), "rotation.started", None), 0);
    assert_eq!(
        sample(port_b, password_resets).await,
        None,
        "the second service shows the first one's password resets"
    );

    for (stop, service) in [(stop_a, service_a), (stop_b, service_b)] {
        stop.send(()).unwrap();
        let code = tokio::time::timeout(Duration::from_secs(30), service)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(code, 0);
    }
}

/// An identity's Graph tokens are asked for its `graph_scope` (issue 19, item 7; by default
/// derived from `graph_base`, for sovereign clouds): Graph refuses a token for another
/// cloud's Graph, as the emulator's Graph does, so a scope that reached the token request is
/// seen in Graph's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_tokens_are_asked_for_the_identitys_graph_scope() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&emu, dir.path(), &Opts::default());
    let read_user = |path: &std::path::Path| {
        let loaded = load(path);
        async move {
            let http = keyturn::azure::http_client(
                &loaded.config.tls,
                &loaded.config.network,
                keyturn::observe::unobserved(),
            )
            .unwrap();
            let managed = keyturn::app::accounts(&loaded, &http).unwrap();
            let account = &managed[0].account;
            account.directory.user(&account.user).await
        }
    };
    // The emulator's Graph is not one of Microsoft's hosts: the global Graph's scope.
    read_user(&path)
        .await
        .expect("a token for https://graph.microsoft.com");
    let text = std::fs::read_to_string(&path).unwrap();
    let graph_base = format!("graph_base = {:?}\n", emu.graph_base());
    assert!(text.contains(&graph_base));
    std::fs::write(
        &path,
        text.replace(
            &graph_base,
            &format!("{graph_base}graph_scope = \"https://graph.microsoft.us/.default\"\n"),
        ),
    )
    .unwrap();
    let err = read_user(&path)
        .await
        .expect_err("Graph refuses a token for the US Government cloud's Graph");
    assert!(err.to_string().contains("audience"), "{err}");
}
