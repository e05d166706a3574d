//! `[[notify]]`: audit events as CloudEvents to a webhook (a local receiver in the test,
//! signed with HMAC-SHA256 as `docs/notifications.md` tells a receiver to check) and to an
//! Event Grid topic (the emulator's, with an Entra token); retries after a 500; a dead
//! receiver neither holds up nor fails a rotation, and its drops are counted and audited.

use crate::common::*;
use hmac::{Hmac, Mac};
use hyper::body::Bytes;
use keyturn::admin::client;
use keyturn::admin::proto::{Request, Target};
use keyturn_emulator::FaultKind;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The HMAC key of the test's webhooks.
const KEY: &str = "0123456789abcdef-test-hmac-key";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A webhook receiver on 127.0.0.1: answers each request with the next status of its script
/// (200 once the script is used up) and keeps what it got.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        use http_body_util::BodyExt;
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let script = Arc::new(Mutex::new(
            script.iter().copied().collect::<VecDeque<u16>>(),
        ));
        let task = tokio::spawn({
            let got = got.clone();
            async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let got = got.clone();
                    let script = script.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let got = got.clone();
                            let script = script.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.unwrap().to_bytes();
                                got.lock().unwrap().push(Got {
                                    headers: parts.headers,
                                    body,
                                });
                                let status = script.lock().unwrap().pop_front().unwrap_or(200);
                                let mut r =
                                    hyper::Response::new(http_body_util::Full::new(Bytes::new()));
                                *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(r)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            }
        });
        Receiver { port, got, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/keyturn", self.port)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The webhook key in a file (mode 0600), as `secret_file` takes it.
fn key_file(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("webhook.key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Appends a metrics listener and a webhook sink to `world`'s configuration; returns the
/// metrics port.
fn add_webhook(world: &World, url: &str, extra: &str) -> u16 {
    let port = free_port();
    let mut t = std::fs::read_to_string(&world.config).unwrap();
    // Quick retries unless `extra` says otherwise.
    let delays = match extra.contains("retry_base_delay") {
        true => "",
        false => "retry_base_delay = \"50ms\"\nretry_max_delay = \"200ms\"\n",
    };
    t.push_str(&format!(
        "\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl = {url:?}\nsecret_file = {:?}\n{delays}{extra}\n",
        key_file(world.path()).display().to_string()
    ));
    std::fs::write(&world.config, t).unwrap();
    port
}

/// The webhook signature check of `docs/notifications.md`: HMAC-SHA256 of
/// `TIMESTAMP.BODY` under the key, hex, after `sha256=`.
fn signature_ok(got: &Got, key: &str) -> bool {
    let ts = got.header("keyturn-timestamp");
    let Some(hex) = got.header("keyturn-signature").strip_prefix("sha256=") else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&got.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == hex
}

/// The value of the sample `name` (labels included, as `/metrics` writes them), if shown.
async fn metric(port: u16, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits up to 20 s for the sample `name` to be shown; its value.
async fn wait_metric(port: u16, name: &str) -> Option<f64> {
    for _ in 0..400 {
        if let Some(v) = metric(port, name).await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn rotate(socket: &Path, account: &str) -> keyturn::admin::proto::Response {
    client::send(
        socket,
        &Request::Rotate {
            target: Target::One(account.into()),
            reason: Some("incident 7".into()),
            ticket: Some("CHG-7".into()),
            wait: true,
            urgent: false,
        },
    )
    .await
    .unwrap()
}

fn one_account() -> Opts {
    Opts {
        accounts: vec![("svc-1", "rotator")],
        verify: false,
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_and_a_manual_rotation_arrive_as_signed_cloud_events_without_a_password() {
    let world = World::new(one_account()).await;
    let receiver = Receiver::start(&[]).await;
    add_webhook(&world, &receiver.url(), "");
    // Key Vault refuses the staging write: the rotation fails before anything changes.
    let fault = world
        .emu
        .control()
        .add_fault(keyturn_emulator::FaultRule {
            route: "kv.set".into(),
            kind: FaultKind::Status,
            status: Some(403),
            ..rule()
        })
        .unwrap();
    let svc = world.service().await;
    let r = rotate(&svc.socket, "svc-1").await;
    assert!(!r.ok, "{r:?}");
    assert!(
        wait_for(Duration::from_secs(20), || !receiver.got().is_empty()).await,
        "no event arrived"
    );
    world.emu.control().remove_fault(&fault);
    let r = rotate(&svc.socket, "svc-1").await;
    assert!(r.ok, "{r:?}");
    let completed = |g: &Got| g.json()["type"] == "io.keyturn.rotation.completed";
    assert!(
        wait_for(Duration::from_secs(20), || receiver
            .got()
            .iter()
            .any(completed))
        .await,
        "no rotation.completed event arrived: {:?}",
        receiver.got()
    );
    assert_eq!(svc.stop().await, 0);

    let got = receiver.got();
    let failed: Vec<&Got> = got
        .iter()
        .filter(|g| g.json()["type"] == "io.keyturn.rotation.failed")
        .collect();
    assert!(!failed.is_empty(), "{got:?}");
    // The default events only: no step of a rotation (started, staged, committed, ...).
    for g in &got {
        let t = g.json()["type"].as_str().unwrap().to_owned();
        assert!(
            [
                "io.keyturn.rotation.failed",
                "io.keyturn.rotation.completed"
            ]
            .contains(&t.as_str()),
            "{t}"
        );
    }
    let done: Vec<&Got> = got.iter().filter(|g| completed(g)).collect();
    assert_eq!(done.len(), 1, "{got:?}");
    for g in failed.iter().chain(&done) {
        let ev = g.json();
        assert_eq!(
            g.header("content-type"),
            "application/cloudevents+json; charset=utf-8"
        );
        assert!(signature_ok(g, KEY), "the signature does not verify: {g:?}");
        assert!(!signature_ok(g, "another-key-0123456789"), "{g:?}");
        assert_eq!(ev["specversion"], "1.0");
        assert!(
            ev["source"].as_str().unwrap().starts_with("keyturn://"),
            "{ev}"
        );
        assert_eq!(ev["subject"], "svc-1");
        assert_eq!(ev["datacontenttype"], "application/json");
        assert!(
            uuid::Uuid::parse_str(ev["id"].as_str().unwrap()).is_ok(),
            "{ev}"
        );
        assert!(ev["time"].as_str().unwrap().ends_with('Z'), "{ev}");
        assert_eq!(ev["data"]["account"], "svc-1");
        assert_eq!(ev["data"]["trigger"], "socket");
        assert_eq!(ev["data"]["reason"], "incident 7");
        assert_eq!(ev["data"]["ticket"], "CHG-7");
    }
    assert_eq!(failed[0].json()["data"]["outcome"], "failure");
    assert_eq!(failed[0].json()["data"]["error"]["http_status"], 403);
    assert_eq!(done[0].json()["data"]["outcome"], "success");
    // A tampered body fails the check.
    let mut tampered = done[0].clone();
    tampered.body = Bytes::from(String::from_utf8_lossy(&tampered.body).replace("svc-1", "svc-2"));
    assert!(!signature_ok(&tampered, KEY));
    // Never a password (the old, the new, any staged) nor the HMAC key in a body.
    let loaded = world.loaded();
    let mut secrets = all_values(&reader(&world.emu, &loaded), &["svc-1"]).await;
    secrets.push(USERS[0].3.to_owned());
    secrets.push(KEY.to_owned());
    assert!(secrets.len() >= 3, "{secrets:?}");
    for g in &got {
        let body = String::from_utf8_lossy(&g.body);
        for s in &secrets {
            assert!(!body.contains(s.as_str()), "a secret in {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_answered_500_is_delivered_once_after_a_retry() {
    let world = World::new(one_account()).await;
    let receiver = Receiver::start(&[500]).await;
    let port = add_webhook(&world, &receiver.url(), "events = [\"rotation.manual\"]");
    let svc = world.service().await;
    assert!(rotate(&svc.socket, "svc-1").await.ok);
    let delivered = "keyturn_notify_delivered_total{sink=\"ops\"}";
    assert_eq!(wait_metric(port, delivered).await, Some(1.0));
    let got = receiver.got();
    assert_eq!(got.len(), 2, "one refused, one taken: {got:?}");
    // The same event both times (a receiver can drop a repeat by its id), signed afresh.
    assert_eq!(got[0].json()["id"], got[1].json()["id"]);
    assert_eq!(got[0].json()["type"], "io.keyturn.rotation.completed");
    assert!(signature_ok(&got[1], KEY));
    assert_eq!(
        metric(
            port,
            "keyturn_notify_dropped_total{sink=\"ops\",reason=\"gave_up\"}"
        )
        .await,
        None
    );
    assert_eq!(svc.stop().await, 0);
    assert_eq!(receiver.got().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_neither_holds_up_nor_fails_a_rotation_and_its_drop_is_counted_and_audited()
{
    let world = World::new(one_account()).await;
    // A receiver that takes connections and never answers, until the test lets them go.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/hook",
        hole.local_addr().unwrap().port()
    );
    let held: Arc<Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
    let holder = tokio::spawn({
        let held = held.clone();
        async move {
            loop {
                let (s, _) = hole.accept().await.unwrap();
                held.lock().unwrap().push(s);
            }
        }
    });
    let port = add_webhook(
        &world,
        &url,
        "events = [\"rotation.manual\"]\nmax_attempts = 1\ntimeout = \"10m\"",
    );
    let svc = world.service().await;
    let r = rotate(&svc.socket, "svc-1").await;
    assert!(r.ok, "the rotation failed: {r:?}");
    assert_eq!(world.count("rotation.completed", Some("svc-1")), 1);
    // The rotation is done while its notification is still in flight (the receiver holds
    // it): nothing delivered, nothing dropped yet.
    assert!(
        wait_for(Duration::from_secs(20), || !held.lock().unwrap().is_empty()).await,
        "the notification never reached the receiver"
    );
    let dropped = "keyturn_notify_dropped_total{sink=\"ops\",reason=\"gave_up\"}";
    assert_eq!(metric(port, dropped).await, None);
    assert_eq!(
        metric(port, "keyturn_notify_delivered_total{sink=\"ops\"}").await,
        None
    );
    // The receiver dies: the one try fails, the event is dropped.
    holder.abort();
    held.lock().unwrap().clear();
    assert_eq!(wait_metric(port, dropped).await, Some(1.0));
    assert!(
        world
            .wait_count(Duration::from_secs(20), "notify.dropped", None, 1)
            .await,
        "no notify.dropped record"
    );
    assert_eq!(svc.stop().await, 0);
    let records = world.records();
    let drops: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "notify.dropped")
        .collect();
    assert_eq!(drops.len(), 1, "{drops:?}");
    let detail = drops[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"ops\"") && detail.contains("gave_up: 1"),
        "{detail}"
    );
    assert!(detail.contains("rotation.completed"), "{detail}");
    assert_eq!(drops[0]["outcome"], "warning");
    // The audit log's chain holds with the new kind in it.
    assert_eq!(world.count("rotation.completed", Some("svc-1")), 1);
}

const BASE: &str = r#"
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
"#;

/// The configuration `BASE` + `text`, loaded from a file as `keyturn check-config` does.
fn load_str(text: &str) -> Result<keyturn::config::Loaded, keyturn::config::ConfigError> {
    let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(f.path(), format!("{BASE}\n{text}")).unwrap();
    keyturn::config::load_with_env(f.path(), false)
}

fn problems(text: &str) -> Vec<String> {
    match load_str(text) {
        Ok(_) => vec![],
        Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn notify_sinks_are_validated_with_the_fix_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let webhook = |extra: &str| {
        format!(
            "[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nsecret_file = {:?}\n{extra}\n",
            key.display().to_string()
        )
    };
    // Good: https, http to loopback, Event Grid with an identity; the default events.
    for good in [
        webhook("url = \"https://hooks.example.com/keyturn\""),
        webhook("url = \"http://127.0.0.1:8080/keyturn\""),
        "[[notify]]\nname = \"grid\"\nkind = \"event_grid\"\nendpoint = \"https://keyturn.westeurope-1.eventgrid.azure.net/api/events\"\nidentity = \"rotator\"\nevents = [\"rotation.failed\", \"readiness.changed\"]\n".to_owned(),
    ] {
        assert_eq!(problems(&good), Vec::<String>::new(), "{good}");
    }
    let cfg = load_str(&webhook("url = \"https://h.example/\"")).unwrap();
    assert_eq!(
        cfg.config.notify[0].events,
        [
            "rotation.failed",
            "drift.detected",
            "rotation.manual",
            "readiness.changed",
            "config.rejected"
        ]
    );

    let cases: Vec<(String, &str, &str)> = vec![
        (
            webhook("url = \"http://hooks.example.com/k\""),
            "notify[0].url",
            "use https://",
        ),
        (
            webhook("url = \"https://h.example/\"\nevents = [\"rotation.exploded\"]"),
            "notify[0].events[0]",
            "use one of rotation.failed, ",
        ),
        (
            "[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"https://h.example/\"\n".into(),
            "notify[0].secret_file",
            "secret_file, secret_credential",
        ),
        (
            "[[notify]]\nname = \"ops\"\nkind = \"teams\"\n".into(),
            "notify[0].kind",
            "use one of webhook, event_grid",
        ),
        (
            "[[notify]]\nname = \"grid\"\nkind = \"event_grid\"\nendpoint = \"https://t.westeurope-1.eventgrid.azure.net/api/events\"\nidentity = \"nobody\"\n".into(),
            "notify[0].identity",
            "not defined under [identities]",
        ),
        (
            "[[notify]]\nname = \"grid\"\nkind = \"event_grid\"\nendpoint = \"http://t.westeurope-1.eventgrid.azure.net/api/events\"\nidentity = \"rotator\"\n".into(),
            "notify[0].endpoint",
            "https:// endpoint",
        ),
        (
            format!("{}{}", webhook("url = \"https://h.example/\""), webhook("url = \"https://h.example/\"")),
            "notify[1].name",
            "already named \"ops\"",
        ),
        (
            webhook("url = \"https://h.example/\"\nqueue = 0\nretry_base_delay = \"0s\""),
            "notify[0].queue",
            "from 1 to 100000",
        ),
    ];
    for (text, key, says) in cases {
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|p| p.starts_with(&format!("{key}: ")) && p.contains(says)),
            "{key} should say {says:?}: {p:#?}"
        );
    }
    // A key file others can read is refused, as a client secret file is.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = problems(&webhook("url = \"https://h.example/\""));
    assert!(
        p.iter()
            .any(|p| p.starts_with("notify[0].secret_file: ") && p.contains("chmod 600")),
        "{p:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_an_event_grid_topic_with_an_entra_token() {
    let world = World::new(one_account()).await;
    let endpoint = world.emu.event_grid_endpoint("keyturn-events");
    let host = url::Url::parse(&endpoint)
        .unwrap()
        .host_str()
        .unwrap()
        .to_owned();
    let port = free_port();
    let mut t = std::fs::read_to_string(&world.config).unwrap();
    t = t.replace(
        "[network.resolve]\n",
        &format!("[network.resolve]\n{host:?} = \"127.0.0.1\"\n"),
    );
    t.push_str(&format!(
        "\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[[notify]]\nname = \"grid\"\nkind = \"event_grid\"\nendpoint = {endpoint:?}\nidentity = \"rotator\"\nevents = [\"rotation.manual\", \"rotation.failed\"]\nsource = \"keyturn://test-host\"\n"
    ));
    std::fs::write(&world.config, t).unwrap();
    let svc = world.service().await;
    assert!(rotate(&svc.socket, "svc-1").await.ok);
    assert_eq!(
        wait_metric(port, "keyturn_notify_delivered_total{sink=\"grid\"}").await,
        Some(1.0)
    );
    assert_eq!(svc.stop().await, 0);
    let got = world.emu.control().event_grid_events("keyturn-events");
    assert_eq!(got.len(), 1, "{got:?}");
    // Published by the identity's app, with a token the topic took (its audience Event
    // Grid's), as a CloudEvents batch.
    assert_eq!(got[0].app_id, ROTATOR);
    assert_eq!(
        got[0].content_type,
        "application/cloudevents-batch+json; charset=utf-8"
    );
    let ev = &got[0].event;
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["type"], "io.keyturn.rotation.completed");
    assert_eq!(ev["source"], "keyturn://test-host");
    assert_eq!(ev["subject"], "svc-1");
    assert_eq!(ev["data"]["trigger"], "socket");
    let counters = world.emu.control().counters();
    assert!(
        counters
            .requests
            .keys()
            .any(|k| k.starts_with("eventgrid.publish")),
        "{:?}",
        counters.requests
    );
    let loaded = world.loaded();
    let body = ev.to_string();
    for s in all_values(&reader(&world.emu, &loaded), &["svc-1"]).await {
        assert!(!body.contains(&s), "a password in {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_offline_delivers_its_manual_rotation_before_it_exits() {
    let world = World::new(one_account()).await;
    let receiver = Receiver::start(&[503]).await;
    add_webhook(&world, &receiver.url(), "");
    let config = world.config.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyturn"))
            .args([
                "rotate",
                "svc-1",
                "--offline",
                "--reason",
                "by hand",
                "--config",
            ])
            .arg(&config)
            .env("KEYTURN_ALLOW_ROOT", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The process has exited: what it sent was taken before (a 503, then the retry).
    let got = receiver.got();
    assert_eq!(got.len(), 2, "{got:?}");
    let ev = got[1].json();
    assert_eq!(ev["type"], "io.keyturn.rotation.completed");
    assert_eq!(ev["data"]["trigger"], "cli");
    assert_eq!(ev["data"]["reason"], "by hand");
    assert!(signature_ok(&got[1], KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_delivers_what_is_still_being_retried() {
    let world = World::new(one_account()).await;
    let receiver = Receiver::start(&[503, 503]).await;
    // Retries at least half a second apart: the event is still being retried at the stop.
    add_webhook(
        &world,
        &receiver.url(),
        "events = [\"rotation.manual\"]\nretry_base_delay = \"1s\"\nretry_max_delay = \"1s\"",
    );
    let svc = world.service().await;
    assert!(rotate(&svc.socket, "svc-1").await.ok);
    assert_eq!(svc.stop().await, 0);
    let got = receiver.got();
    assert_eq!(got.len(), 3, "two refusals, then taken: {got:?}");
    assert_eq!(got[2].json()["type"], "io.keyturn.rotation.completed");
    assert_eq!(world.count("notify.dropped", None), 0);
}
