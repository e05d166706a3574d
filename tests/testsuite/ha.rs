//! `[ha]`: two `keyturn run` processes on one emulator and one Azurite (`azurite.rs`),
//! competing for one lease blob (`docs/ha.md`). Leases last 15 s (the minimum) and
//! `network.timeout` is 10 s, so a takeover after a SIGKILL takes up to 15 s + 10 s.
//! Skipped, with the reason printed, only when `node` or `npm` is missing.

use crate::azurite::{self, Azurite};
use crate::common::*;
use azure_core::credentials::TokenCredential;
use azure_core::http::{RequestContent, StatusCode, Url};
use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientBreakLeaseOptions,
    BlobClientGetPropertiesResultHeaders, LeaseState,
};
use azure_storage_blob::{
    BlobClient, BlobClientOptions, BlobContainerClient, BlobContainerClientOptions,
};
use keyturn::admin::{client, proto::Request};
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Writes a keyturn configuration into `dir` for the emulator, with `[ha]` on the lease blob
/// `blob` reached through `port` (Azurite's, or a proxy's).
pub(crate) fn ha_config(
    emu: &keyturn_emulator::Emulator,
    dir: &Path,
    az: &Azurite,
    port: u16,
    blob: &str,
) -> PathBuf {
    let path = write_config(
        emu,
        dir,
        &Opts {
            // Nothing is due on its own during a test: rotations are asked for.
            schedule: "0 3 1 1 *",
            ..Opts::default()
        },
    );
    // Trust Azurite's CA too.
    let ca = dir.join("ca.pem");
    let mut pem = std::fs::read_to_string(&ca).unwrap();
    pem.push_str(&az.ca_pem);
    std::fs::write(&ca, pem).unwrap();
    let mut t = std::fs::read_to_string(&path).unwrap();
    t = t.replacen(
        "[network.resolve]\n",
        &format!("[network.resolve]\n{:?} = \"127.0.0.1\"\n", azurite::HOST),
        1,
    );
    t.push_str(&format!(
        "\n[ha]\nlease_url = {:?}\nidentity = \"rotator\"\nlease_duration = \"15s\"\n\n[metrics]\nlisten = \"127.0.0.1:{}\"\n",
        Azurite::lease_url(port, blob),
        free_port()
    ));
    std::fs::write(&path, t).unwrap();
    path
}

/// An `azure_identity` credential of the rotator app on the emulator, and client options
/// that trust both CAs and resolve both hosts (from a keyturn configuration).
fn sdk(
    emu: &keyturn_emulator::Emulator,
    config: &Path,
) -> (Arc<dyn TokenCredential>, azure_core::http::ClientOptions) {
    let loaded = load(config);
    let http = http_for(&loaded, keyturn::observe::unobserved());
    let cred: Arc<dyn TokenCredential> = app_credential(emu, &http, ROTATOR, "rotator-secret");
    (cred, keyturn::azure::client_options(&http, None))
}

pub(crate) async fn create_container(
    emu: &keyturn_emulator::Emulator,
    config: &Path,
    az: &Azurite,
) {
    let (cred, options) = sdk(emu, config);
    let c = BlobContainerClient::new(
        Url::parse(&az.container_url()).unwrap(),
        Some(cred),
        Some(BlobContainerClientOptions {
            client_options: options,
            ..Default::default()
        }),
    )
    .unwrap();
    c.create(None).await.unwrap();
}

/// The `ha` part of a daemon's `status`, if it answers.
pub(crate) async fn ha_status(socket: &Path) -> Option<serde_json::Value> {
    let r = client::send(socket, &Request::Status).await.ok()?;
    r.result.map(|v| v["ha"].clone())
}

pub(crate) async fn role(socket: &Path) -> Option<String> {
    ha_status(socket).await?["role"].as_str().map(String::from)
}

/// Waits until the daemon behind `socket` says it leads.
async fn wait_leader(socket: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if role(socket).await.as_deref() == Some("leader") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// GET `path` on the metrics listener of the replica configured by `config`: (status, body).
async fn probe(config: &Path, path: &str) -> (u16, String) {
    let addr = load(config).config.metrics.listen.unwrap();
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Waits until the standby behind `socket` names `leader` (it has looked at the lease).
async fn names(socket: &Path, leader: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ha_status(socket)
            .await
            .is_some_and(|b| b["leader"] == leader)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Runs `keyturn ARGS --socket SOCKET`.
pub(crate) async fn cli(socket: &Path, args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let socket = socket.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(&args)
            .arg("--socket")
            .arg(&socket)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Two replicas on one emulator and one Azurite.
struct Pair {
    emu: keyturn_emulator::Emulator,
    az: Azurite,
    dirs: [tempfile::TempDir; 2],
    configs: [PathBuf; 2],
}

impl Pair {
    /// Replica 0's lease URL goes through `port0` if given (a proxy), replica 1's straight
    /// to Azurite.
    async fn new(az: Azurite, port0: Option<u16>) -> Pair {
        let emu = emulator().await;
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let configs = [
            ha_config(
                &emu,
                dirs[0].path(),
                &az,
                port0.unwrap_or(az.port),
                "leader",
            ),
            ha_config(&emu, dirs[1].path(), &az, az.port, "leader"),
        ];
        create_container(&emu, &configs[0], &az).await;
        Pair {
            emu,
            az,
            dirs,
            configs,
        }
    }

    fn start(&self, i: usize) -> Daemon {
        Daemon::start(&self.configs[i], self.dirs[i].path(), "run")
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.dirs[i].path().join("admin.sock")
    }

    fn dir(&self, i: usize) -> &Path {
        self.dirs[i].path()
    }
}

pub(crate) async fn azurite_or_skip(test: &str) -> Option<Azurite> {
    match Azurite::start().await {
        Ok(a) => Some(a),
        Err(why) => {
            azurite::skipped(test, &why);
            None
        }
    }
}

/// `keyturn rotate --offline` cannot know whether another replica leads: with `[ha]` it
/// refuses (exit 64) and sends nothing (no Azurite needed: it stops before any request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_rotation_is_refused_with_ha() {
    let w = World::new(Opts::default()).await;
    let mut t = std::fs::read_to_string(&w.config).unwrap();
    t.push_str("\n[ha]\nlease_url = \"https://devstoreaccount1.blob.core.windows.net:1/keyturn/leader\"\nidentity = \"rotator\"\nlease_duration = \"15s\"\n");
    std::fs::write(&w.config, t).unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "rotate",
            "svc-1",
            "--offline",
            "--reason",
            "test",
            "--config",
        ])
        .arg(&w.config)
        .env("KEYTURN_ALLOW_ROOT", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("rotate through the leader"), "{err}");
    assert_eq!(w.count("rotation.started", None), 0);
    assert!(invariant(&w.emu, "svc-1").holds);
}

/// The official SDK, with a token from the emulator, acquires, renews, releases and breaks
/// a lease on Azurite: what keyturn's elector relies on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blob_sdk_leases_a_blob_on_azurite_with_an_emulator_token() {
    let Some(az) =
        azurite_or_skip("ha::the_blob_sdk_leases_a_blob_on_azurite_with_an_emulator_token").await
    else {
        return;
    };
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ha_config(&emu, dir.path(), &az, az.port, "sdk");
    create_container(&emu, &config, &az).await;
    let (cred, options) = sdk(&emu, &config);
    let blob = BlobClient::new(
        Url::parse(&Azurite::lease_url(az.port, "sdk")).unwrap(),
        Some(cred),
        Some(BlobClientOptions {
            client_options: options,
            ..Default::default()
        }),
    )
    .unwrap();
    blob.upload(RequestContent::from(Vec::new()), None)
        .await
        .expect("upload an empty blob");
    let ours = "11111111-0000-0000-0000-000000000001".to_string();
    let theirs = "22222222-0000-0000-0000-000000000002".to_string();
    let acquire = |id: &String| BlobClientAcquireLeaseOptions {
        proposed_lease_id: Some(id.clone()),
        ..Default::default()
    };
    blob.acquire_lease(15, Some(acquire(&ours)))
        .await
        .expect("acquire");
    let err = blob
        .acquire_lease(15, Some(acquire(&theirs)))
        .await
        .expect_err("a second holder is refused");
    assert_eq!(err.http_status(), Some(StatusCode::Conflict), "{err}");
    blob.renew_lease(ours.clone(), None).await.expect("renew");
    let err = blob
        .renew_lease(theirs.clone(), None)
        .await
        .expect_err("renewing with another id is refused");
    assert_eq!(err.http_status(), Some(StatusCode::Conflict), "{err}");
    blob.release_lease(ours.clone(), None)
        .await
        .expect("release");
    let props = blob.get_properties(None).await.unwrap();
    assert_eq!(props.lease_state().unwrap(), Some(LeaseState::Available));
    blob.acquire_lease(15, Some(acquire(&theirs)))
        .await
        .expect("the other holder takes the released lease");
    blob.break_lease(Some(BlobClientBreakLeaseOptions {
        break_period: Some(0),
        ..Default::default()
    }))
    .await
    .expect("break");
    let props = blob.get_properties(None).await.unwrap();
    assert_eq!(props.lease_state().unwrap(), Some(LeaseState::Broken));
    emu.shutdown().await;
}

/// Two replicas: exactly one leads and both say who; the standby refuses `rotate` with
/// `not_leader` naming the leader; SIGKILL the leader and the standby takes over (after the
/// lease runs out and the takeover delay) and rotates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_replicas_leads_and_a_killed_leader_is_replaced() {
    let Some(az) =
        azurite_or_skip("ha::one_of_two_replicas_leads_and_a_killed_leader_is_replaced").await
    else {
        return;
    };
    let p = Pair::new(az, None).await;
    let first = p.start(0);
    first.ready().await;
    assert!(
        wait_leader(&p.socket(0), Duration::from_secs(30)).await,
        "the first replica never led:\n{}\n{}",
        first.stderr(),
        p.az.output()
    );
    let second = p.start(1);
    second.ready().await;
    let a = ha_status(&p.socket(0)).await.unwrap();
    let b = ha_status(&p.socket(1)).await.unwrap();
    assert_eq!(a["role"], "leader", "{a}");
    assert_eq!(b["role"], "standby", "{b}");
    let leader = a["me"].as_str().unwrap().to_owned();
    assert!(
        leader.contains(&format!("pid {}", first.child.id())),
        "{leader}"
    );
    // The standby reads the holder from the blob's metadata on its next look.
    assert!(
        names(&p.socket(1), &leader).await,
        "the standby never named the leader"
    );

    // The standby acts on nothing and says who does.
    let out = cli(&p.socket(1), &["rotate", "svc-1", "--reason", "ha test"]).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("not_leader"), "{text}");
    assert!(text.contains(&leader), "{text}");
    assert_eq!(count(p.dir(1), "rotation.started", None), 0);
    // `keyturn status` on the standby says so.
    let out = cli(&p.socket(1), &["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ha: standby"), "{text}");
    assert!(text.contains(&format!("leader: {leader}")), "{text}");

    // The leader rotates.
    let out = cli(&p.socket(0), &["rotate", "svc-1", "--reason", "ha test"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // SIGKILL the leader: the standby takes over.
    let killed = Instant::now();
    first.signal(Signal::SIGKILL);
    let _ = first.wait().await;
    assert!(
        wait_leader(&p.socket(1), Duration::from_secs(60)).await,
        "the standby never took over:\n{}",
        second.stderr()
    );
    let acquired = killed.elapsed();
    let out = cli(
        &p.socket(1),
        &["rotate", "svc-1", "--reason", "after the takeover"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        second.stderr()
    );
    assert!(
        second
            .stderr()
            .contains("taking over from another replica whose lease ran out"),
        "the new leader did not wait the takeover delay:\n{}",
        second.stderr()
    );
    eprintln!(
        "ha: SIGKILL to the standby leading: {:.1}s; to its rotation done: {:.1}s",
        acquired.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    let recs = audit_records(p.dir(1));
    let took = recs
        .iter()
        .find(|r| r["event"] == "ha.acquired")
        .expect("ha.acquired in the new leader's audit log");
    assert!(
        took["detail"].as_str().unwrap().contains("ran out"),
        "{took}"
    );
    assert_eq!(count(p.dir(1), "rotation.completed", Some("svc-1")), 1);
    assert!(
        invariant(&p.emu, "svc-1").holds,
        "{:?}",
        invariant(&p.emu, "svc-1")
    );
    second.signal(Signal::SIGTERM);
    assert!(second.wait().await.success());
}

/// SIGTERM to the leader: it releases the lease and the standby leads at once, with no
/// takeover delay (nothing of the old leader is in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_releases_the_lease_and_the_standby_leads_at_once() {
    let Some(az) =
        azurite_or_skip("ha::a_stopped_leader_releases_the_lease_and_the_standby_leads_at_once")
            .await
    else {
        return;
    };
    let p = Pair::new(az, None).await;
    let first = p.start(0);
    first.ready().await;
    assert!(
        wait_leader(&p.socket(0), Duration::from_secs(30)).await,
        "{}",
        first.stderr()
    );
    let second = p.start(1);
    second.ready().await;
    assert_eq!(role(&p.socket(1)).await.as_deref(), Some("standby"));
    let leader = ha_status(&p.socket(0)).await.unwrap()["me"]
        .as_str()
        .unwrap()
        .to_owned();
    // The standby has tried the lease at least once: the handover below is not its first try.
    assert!(names(&p.socket(1), &leader).await);
    // Both are ready for Kubernetes; `keyturn_leader` says which leads.
    for (i, leads) in [(0, 1), (1, 0)] {
        let (status, body) = probe(&p.configs[i], "/readyz").await;
        assert_eq!(status, 200, "replica {i}: {body}");
        let (_, body) = probe(&p.configs[i], "/metrics").await;
        assert!(
            body.lines().any(|l| l == format!("keyturn_leader {leads}")),
            "replica {i}:\n{body}"
        );
    }

    // SIGHUP on a standby is refused, as the socket's `reload` is: a warning, no reload.
    let loaded_before = count(p.dir(1), "config.loaded", None);
    second.signal(Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || second
            .stderr()
            .contains("SIGHUP ignored: this replica is an [ha] standby"))
        .await,
        "{}",
        second.stderr()
    );
    assert!(
        !second.stderr().contains("SIGHUP: reloading"),
        "{}",
        second.stderr()
    );
    assert_eq!(count(p.dir(1), "config.loaded", None), loaded_before);

    let stopped = Instant::now();
    first.signal(Signal::SIGTERM);
    assert!(first.wait().await.success());
    assert_eq!(count(p.dir(0), "ha.released", None), 1);
    assert!(
        wait_leader(&p.socket(1), Duration::from_secs(30)).await,
        "{}",
        second.stderr()
    );
    eprintln!(
        "ha: SIGTERM to the standby leading: {:.1}s",
        stopped.elapsed().as_secs_f64()
    );
    let recs = audit_records(p.dir(1));
    let took = recs
        .iter()
        .find(|r| r["event"] == "ha.acquired")
        .expect("ha.acquired");
    assert!(
        !took["detail"].as_str().unwrap().contains("ran out"),
        "a released lease needs no takeover delay: {took}"
    );
    // The new leader acts; it never waited a takeover delay.
    let out = cli(
        &p.socket(1),
        &["rotate", "svc-2", "--reason", "after the handover"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        second.stderr()
    );
    assert!(
        !second.stderr().contains("taking over from another replica"),
        "{}",
        second.stderr()
    );
    second.signal(Signal::SIGTERM);
    assert!(second.wait().await.success());
}

/// A TCP proxy in front of Azurite whose connections can all be cut at once.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    pub(crate) async fn start(to: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if *cut_rx.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Proxy { port, cut }
    }

    pub(crate) fn cut(&self) {
        let _ = self.cut.send(true);
    }

    /// Lets new connections through again.
    pub(crate) fn restore(&self) {
        let _ = self.cut.send(false);
    }
}

/// A partition: the leader loses Azurite. It stops acting (`ha.lost`, exit 75) before its
/// lease can run out, and the standby takes over only after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_storage_stops_before_the_standby_takes_over() {
    let Some(az) =
        azurite_or_skip("ha::a_leader_cut_off_from_storage_stops_before_the_standby_takes_over")
            .await
    else {
        return;
    };
    let proxy = Proxy::start(az.port).await;
    let p = Pair::new(az, Some(proxy.port)).await;
    let first = p.start(0);
    first.ready().await;
    assert!(
        wait_leader(&p.socket(0), Duration::from_secs(30)).await,
        "{}",
        first.stderr()
    );
    let second = p.start(1);
    second.ready().await;
    assert_eq!(role(&p.socket(1)).await.as_deref(), Some("standby"));

    let cut = Instant::now();
    proxy.cut();
    let status = first.wait().await;
    let exited = cut.elapsed();
    assert_eq!(
        status.code(),
        Some(75),
        "a leader that lost its lease exits 75"
    );
    assert!(
        wait_leader(&p.socket(1), Duration::from_secs(60)).await,
        "{}",
        second.stderr()
    );
    eprintln!(
        "ha: partition: the cut-off leader exited after {:.1}s, the standby led after {:.1}s",
        exited.as_secs_f64(),
        cut.elapsed().as_secs_f64()
    );
    let time = |dir: &Path, event: &str| -> time::OffsetDateTime {
        let r = audit_records(dir)
            .into_iter()
            .find(|r| r["event"] == event)
            .unwrap_or_else(|| panic!("no {event} in {}", dir.display()));
        time::OffsetDateTime::parse(
            r["time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let lost = time(p.dir(0), "ha.lost");
    let took = time(p.dir(1), "ha.acquired");
    assert!(
        lost < took,
        "the old leader stopped at {lost}, the new one led at {took}"
    );
    // Nothing but the stop after the loss.
    let after: Vec<String> = audit_records(p.dir(0))
        .into_iter()
        .skip_while(|r| r["event"] != "ha.lost")
        .skip(1)
        .map(|r| r["event"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(after.iter().all(|e| e == "daemon.stopping"), "{after:?}");
    second.signal(Signal::SIGTERM);
    assert!(second.wait().await.success());
}

/// Adds `[daemon.audit_blob]` to the configuration at `config`: the append blob `blob`
/// reached through `port` (Azurite's, or a proxy's).
pub(crate) fn with_audit_blob(config: &Path, port: u16, blob: &str) {
    let mut t = std::fs::read_to_string(config).unwrap();
    t.push_str(&format!(
        "\n[daemon.audit_blob]\nurl = {:?}\nidentity = \"rotator\"\n",
        Azurite::lease_url(port, blob)
    ));
    std::fs::write(config, t).unwrap();
}

/// `keyturn audit verify --blob --config CONFIG [URL]`: (exit code, stdout).
pub(crate) async fn verify_blob(config: &Path, url: Option<&str>) -> (Option<i32>, String) {
    let mut args = vec!["audit".to_string(), "verify".into(), "--config".into()];
    args.push(config.display().to_string());
    args.push("--blob".into());
    if let Some(u) = url {
        args.push(u.into());
    }
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The records in the append blob `blob` (every line parsed as JSON).
pub(crate) async fn blob_records(
    emu: &keyturn_emulator::Emulator,
    config: &Path,
    az: &Azurite,
    blob: &str,
) -> Vec<serde_json::Value> {
    let (cred, options) = sdk(emu, config);
    let client = BlobClient::new(
        Url::parse(&Azurite::lease_url(az.port, blob)).unwrap(),
        Some(cred),
        Some(BlobClientOptions {
            client_options: options,
            ..Default::default()
        }),
    )
    .unwrap();
    let Ok(r) = client.download(None).await else {
        return Vec::new();
    };
    let bytes = r.body.collect().await.unwrap();
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The copier's metric `name` on the replica configured by `config`.
async fn metric(config: &Path, name: &str) -> Option<f64> {
    let (_, body) = probe(config, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
}

/// Without `[ha]`: every audit record reaches the append blob, in one chain that
/// `keyturn audit verify --blob` checks; while Storage is unreachable, rotations go on, the
/// backlog and its lag show in the metrics, and the copy catches up when Storage answers.
/// A record changed in the blob is named by `verify --blob`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_copied_to_an_append_blob_and_catches_up_after_an_outage() {
    let Some(az) = azurite_or_skip(
        "ha::the_audit_log_is_copied_to_an_append_blob_and_catches_up_after_an_outage",
    )
    .await
    else {
        return;
    };
    let proxy = Proxy::start(az.port).await;
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ha_config(&emu, dir.path(), &az, az.port, "unused");
    // No [ha] here: the copy works on a single keyturn too.
    let t = std::fs::read_to_string(&config).unwrap();
    let ha_at = t.find("\n[ha]\n").unwrap();
    let metrics_at = t.find("[metrics]").unwrap();
    let t = format!("{}{}", &t[..ha_at], &t[metrics_at..]);
    std::fs::write(&config, t).unwrap();
    with_audit_blob(&config, proxy.port, "audit");
    create_container(&emu, &config, &az).await;
    let d = Daemon::start(&config, dir.path(), "run");
    d.ready().await;
    let socket = dir.path().join("admin.sock");
    let out = cli(&socket, &["rotate", "svc-1", "--reason", "copy test"]).await;
    assert!(out.status.success(), "{}", d.stderr());
    // Everything the file holds reaches the blob, byte for byte but seq, prev and hash.
    let copied = |recs: &[serde_json::Value]| {
        recs.iter()
            .filter(|r| r["event"] == "rotation.completed")
            .count()
    };
    let mut recs = Vec::new();
    for _ in 0..100 {
        recs = blob_records(&emu, &config, &az, "audit").await;
        if copied(&recs) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(copied(&recs), 1, "{}", d.stderr());
    let local = audit_records(dir.path());
    let strip = |r: &serde_json::Value| {
        let mut r = r.clone();
        for k in ["seq", "prev", "hash"] {
            r.as_object_mut().unwrap().remove(k);
        }
        r
    };
    assert_eq!(
        recs.iter().map(strip).collect::<Vec<_>>(),
        local[..recs.len()].iter().map(strip).collect::<Vec<_>>()
    );
    let (code, text) = verify_blob(&config, None).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with(&format!("intact: {} record(s)", recs.len())),
        "{text}"
    );

    // Storage unreachable: the rotation is not held up; the backlog waits.
    proxy.cut();
    let before = recs.len();
    let out = cli(
        &socket,
        &["rotate", "svc-2", "--reason", "during the outage"],
    )
    .await;
    assert!(out.status.success(), "{}", d.stderr());
    assert!(
        wait_for(Duration::from_secs(30), || d
            .stderr()
            .contains("audit copy: Storage did not take the copy"))
        .await,
        "{}",
        d.stderr()
    );
    let mut pending = 0.0;
    for _ in 0..100 {
        pending = metric(&config, "keyturn_audit_copy_pending_records")
            .await
            .unwrap_or(0.0);
        if pending > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pending > 0.0, "no backlog in the metrics");
    assert!(metric(&config, "keyturn_audit_copy_lag_seconds")
        .await
        .is_some());
    assert_eq!(
        blob_records(&emu, &config, &az, "audit").await.len(),
        before
    );

    // Storage back: the copy catches up, in order, in one chain.
    proxy.restore();
    let mut recs = Vec::new();
    for _ in 0..300 {
        recs = blob_records(&emu, &config, &az, "audit").await;
        if copied(&recs) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(copied(&recs), 2, "{}", d.stderr());
    let (code, text) = verify_blob(&config, None).await;
    assert_eq!(code, Some(0), "{text}");
    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());
    // The stop's own records were copied before the process ended.
    let recs = blob_records(&emu, &config, &az, "audit").await;
    assert_eq!(recs.last().unwrap()["event"], "daemon.stopping", "{recs:?}");
    let local = audit_records(dir.path());
    assert_eq!(
        recs.len(),
        local.len(),
        "every local record is in the blob once"
    );

    // A record appended by someone else, edited: verify names it.
    let (cred, options) = sdk(&emu, &config);
    let client = BlobClient::new(
        Url::parse(&Azurite::lease_url(az.port, "audit")).unwrap(),
        Some(cred),
        Some(BlobClientOptions {
            client_options: options,
            ..Default::default()
        }),
    )
    .unwrap();
    let mut forged = serde_json::to_string(recs.last().unwrap()).unwrap();
    forged = forged.replace("daemon.stopping", "daemon.started");
    forged.push('\n');
    let n = forged.len() as u64;
    client
        .append_blob_client()
        .append_block(RequestContent::from(forged.into_bytes()), n, None)
        .await
        .unwrap();
    let (code, text) = verify_blob(&config, None).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("line {}", recs.len() + 1)) && text.contains("/keyturn/audit"),
        "{text}"
    );
    emu.shutdown().await;
}

/// Two replicas with one append blob: the new leader continues the chain the old one
/// left (after a SIGKILL), so the blob holds one chain with both replicas' records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_write_one_chain_in_the_append_blob() {
    let Some(az) = azurite_or_skip("ha::two_replicas_write_one_chain_in_the_append_blob").await
    else {
        return;
    };
    let p = Pair::new(az, None).await;
    for c in &p.configs {
        with_audit_blob(c, p.az.port, "audit");
    }
    let first = p.start(0);
    first.ready().await;
    assert!(wait_leader(&p.socket(0), Duration::from_secs(30)).await);
    let second = p.start(1);
    second.ready().await;
    let out = cli(
        &p.socket(0),
        &["rotate", "svc-1", "--reason", "first leader"],
    )
    .await;
    assert!(out.status.success(), "{}", first.stderr());
    let completed = |recs: &[serde_json::Value]| {
        recs.iter()
            .filter(|r| r["event"] == "rotation.completed")
            .count()
    };
    let mut recs = Vec::new();
    for _ in 0..100 {
        recs = blob_records(&p.emu, &p.configs[0], &p.az, "audit").await;
        if completed(&recs) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(completed(&recs), 1, "{}", first.stderr());
    // The standby appended nothing.
    assert!(
        recs.iter().all(|r| r["event"] != "ha.acquired"
            || r["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("pid {}", first.child.id()))),
        "{recs:?}"
    );
    first.signal(Signal::SIGKILL);
    let _ = first.wait().await;
    assert!(
        wait_leader(&p.socket(1), Duration::from_secs(60)).await,
        "{}",
        second.stderr()
    );
    let out = cli(
        &p.socket(1),
        &["rotate", "svc-1", "--reason", "second leader"],
    )
    .await;
    assert!(out.status.success(), "{}", second.stderr());
    for _ in 0..100 {
        recs = blob_records(&p.emu, &p.configs[0], &p.az, "audit").await;
        if completed(&recs) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(completed(&recs), 2, "{}", second.stderr());
    let leaders: Vec<&str> = recs
        .iter()
        .filter(|r| r["event"] == "ha.acquired")
        .map(|r| r["detail"].as_str().unwrap())
        .collect();
    assert_eq!(leaders.len(), 2, "{leaders:?}");
    assert!(
        leaders[1].contains(&format!("pid {}", second.child.id())),
        "{leaders:?}"
    );
    // One chain: seq 0.. with each prev the hash before.
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["seq"], i as u64, "{r}");
        if i > 0 {
            assert_eq!(r["prev"], recs[i - 1]["hash"], "{r}");
        }
    }
    let (code, text) = verify_blob(&p.configs[1], None).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(invariant(&p.emu, "svc-1").holds);
    second.signal(Signal::SIGTERM);
    assert!(second.wait().await.success());
}
