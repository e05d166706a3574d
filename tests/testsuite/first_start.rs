//! The first start must not surprise (issue 19, item 1): an account without a secret waits
//! for `keyturn adopt`, `enabled = false` leaves an account alone, pauses outlast a restart,
//! and `keyturn plan` says what start-up would do without changing anything.

use crate::common::*;
use keyturn::admin::client;
use keyturn::admin::proto::{Request, Response, Target};
use keyturn_emulator::InvariantQuery;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A running in-process service: its socket, and how to stop it.
struct Service {
    socket: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<i32, keyturn::service::ServiceError>>,
}

impl Service {
    async fn start(path: &Path) -> Service {
        let loaded = load(path);
        let socket = loaded.config.admin.socket.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(keyturn::service::run(loaded, async {
            let _ = stopped.await;
        }));
        let s = Service {
            socket,
            stop,
            handle,
        };
        for _ in 0..600 {
            if let Ok(r) = client::send(&s.socket, &Request::Status).await {
                if r.result.as_ref().is_some_and(|v| v["ready"] == true) {
                    return s;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the service never became ready");
    }

    async fn send(&self, req: Request) -> Response {
        client::send(&self.socket, &req).await.unwrap()
    }

    /// The account's entry in `status`.
    async fn account(&self, name: &str) -> serde_json::Value {
        let r = self.send(Request::Status).await;
        r.result.unwrap()["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
            .unwrap()
    }

    async fn stop(self) -> i32 {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }
}

fn code(r: &Response) -> &str {
    r.error.as_ref().map(|e| e.code.as_str()).unwrap_or("ok")
}

/// A configuration for `accounts` (svc-1, svc-2, svc-ca) with `edit` applied to its text.
fn config(
    emu: &keyturn_emulator::Emulator,
    dir: &Path,
    accounts: &[&'static str],
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let path = write_config(
        emu,
        dir,
        &Opts {
            verify: false,
            accounts: accounts.iter().map(|a| (*a, "rotator")).collect(),
            ..Opts::default()
        },
    );
    let text = edit(std::fs::read_to_string(&path).unwrap());
    std::fs::write(&path, text).unwrap();
    path
}

/// Points svc-2 at a secret that is not in the vault (as on a first deployment).
fn no_secret_for_svc_2(text: String) -> String {
    let edited = text.replace("secret = \"svc-2\"\n", "secret = \"svc-2-new\"\n");
    assert_ne!(edited, text);
    edited
}

fn requests(emu: &keyturn_emulator::Emulator, route: &str) -> u64 {
    emu.control()
        .counters()
        .requests
        .get(route)
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_a_secret_waits_for_adopt_which_takes_it_over_on_the_record() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(&emu, dir.path(), &["svc-1", "svc-2"], no_secret_for_svc_2);
    let svc = Service::start(&path).await;

    // Not taken over: no secret written, the password Entra holds untouched.
    let a = svc.account("svc-2").await;
    assert_eq!(a["state"], "awaiting_adoption", "{a}");
    assert_eq!(a["awaiting_adoption"], true);
    assert!(a["next_due"].is_null(), "{a}");
    assert_eq!(svc.account("svc-1").await["state"], "idle");
    assert_eq!(requests(&emu, "kv.set"), 0);
    assert_eq!(requests(&emu, "graph.patch"), 0);
    assert!(emu
        .control()
        .check_password(TENANT, "svc-2@contoso.onmicrosoft.com", "Initial-Pass-2!")
        .unwrap());
    // Reported once, with the fix.
    let reports: Vec<_> = audit_records(dir.path())
        .into_iter()
        .filter(|r| r["event"] == "account.awaiting_adoption")
        .collect();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert_eq!(reports[0]["account"], "svc-2");
    assert!(
        reports[0]["detail"]
            .as_str()
            .unwrap()
            .contains("keyturn adopt svc-2 --reason R"),
        "{}",
        reports[0]
    );
    // A later look (what the drift timer does) finds it still waiting: no second record.
    let r = svc
        .send(Request::Reconcile(Target::One("svc-2".into())))
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(count(dir.path(), "account.awaiting_adoption", None), 1);
    // The status a person reads names the way out.
    let human = client::human(&Request::Status, &svc.send(Request::Status).await);
    assert!(human.contains("left alone until adopted: svc-2"), "{human}");

    // `rotate` does not take it over either; `adopt` without a reason is refused.
    let r = svc
        .send(Request::Rotate {
            target: Target::One("svc-2".into()),
            reason: Some("try".into()),
            ticket: None,
            wait: true,
            urgent: false,
        })
        .await;
    assert_eq!(code(&r), "awaiting_adoption", "{r:?}");
    let adopt = |reason: Option<&str>, force| Request::Adopt {
        account: "svc-2".into(),
        reason: reason.map(String::from),
        ticket: Some("CHG-42".into()),
        force,
    };
    let r = svc.send(adopt(None, false)).await;
    assert_eq!(code(&r), "reason_required", "{r:?}");
    assert_eq!(requests(&emu, "kv.set"), 0);

    // `adopt` rotates it now, on the record, and it is managed from then on.
    let r = svc.send(adopt(Some("first deployment"), false)).await;
    assert!(r.ok, "{r:?}");
    let human = client::human(&adopt(Some("first deployment"), false), &r);
    assert!(
        human.starts_with("svc-2: adopted: rotated (rotation "),
        "{human}"
    );
    let report = emu
        .control()
        .invariant(&InvariantQuery {
            tenant: TENANT.into(),
            user: "svc-2@contoso.onmicrosoft.com".into(),
            vault: VAULT.into(),
            secret: "svc-2-new".into(),
            staging_secret: None,
        })
        .unwrap();
    assert!(report.latest_matches, "{report:?}");
    let asked = audit_records(dir.path())
        .into_iter()
        .find(|r| r["event"] == "admin.command_accepted" && r["detail"] == "adopt svc-2")
        .expect("the adopt command is recorded");
    assert_eq!(asked["account"], "svc-2");
    assert_eq!(asked["reason"], "first deployment");
    assert_eq!(asked["ticket"], "CHG-42");
    assert!(
        asked["actor"].is_object() || asked["actor"].is_string(),
        "{asked}"
    );
    assert_eq!(count(dir.path(), "rotation.completed", Some("svc-2")), 1);
    let a = svc.account("svc-2").await;
    assert_eq!(a["state"], "idle", "{a}");
    assert!(a["next_due"].is_string(), "{a}");

    // A second adopt is refused (it is managed already) unless forced.
    let r = svc.send(adopt(Some("again"), false)).await;
    assert_eq!(code(&r), "already_adopted", "{r:?}");
    assert_eq!(count(dir.path(), "rotation.completed", Some("svc-2")), 1);
    let r = svc.send(adopt(Some("again"), true)).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(count(dir.path(), "rotation.completed", Some("svc-2")), 2);
    assert_eq!(svc.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_missing_secret_rotate_takes_the_account_over_at_start_up() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(&emu, dir.path(), &["svc-2"], |t| {
        no_secret_for_svc_2(t).replace(
            "secret = \"svc-2-new\"\n",
            "secret = \"svc-2-new\"\non_missing_secret = \"rotate\"\n",
        )
    });
    let svc = Service::start(&path).await;
    assert!(
        wait_for(Duration::from_secs(30), || count(
            dir.path(),
            "rotation.completed",
            Some("svc-2")
        ) == 1)
        .await
    );
    assert_eq!(count(dir.path(), "account.awaiting_adoption", None), 0);
    assert_eq!(svc.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_account_gets_no_azure_call_and_commands_on_it_are_refused() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(&emu, dir.path(), &["svc-1"], |t| {
        t.replace(
            "secret = \"svc-1\"\n",
            "secret = \"svc-1\"\nenabled = false\n",
        )
    });
    let svc = Service::start(&path).await;
    let a = svc.account("svc-1").await;
    assert_eq!(a["state"], "disabled", "{a}");
    assert_eq!(a["enabled"], false);
    let one = || Target::One("svc-1".into());
    for req in [
        Request::Rotate {
            target: one(),
            reason: Some("r".into()),
            ticket: None,
            wait: true,
            urgent: false,
        },
        Request::Adopt {
            account: "svc-1".into(),
            reason: Some("r".into()),
            ticket: None,
            force: true,
        },
        Request::Pause(one()),
        Request::Resume(one()),
        Request::Reconcile(one()),
    ] {
        let r = svc.send(req.clone()).await;
        assert_eq!(code(&r), "account_disabled", "{req:?}: {r:?}");
        let text = r.result.unwrap()["accounts"][0]["error"].to_string();
        assert!(text.contains("enabled = false"), "{text}");
    }
    // `--all` leaves it out.
    let r = svc
        .send(Request::Rotate {
            target: Target::All,
            reason: None,
            ticket: None,
            wait: true,
            urgent: false,
        })
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.result.unwrap()["accounts"], serde_json::json!([]));
    assert_eq!(svc.stop().await, 0);
    // Not one request reached Azure (no token, no Key Vault, no Graph).
    let counters = emu.control().counters();
    assert!(counters.requests.is_empty(), "{:?}", counters.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_outlast_a_restart_and_a_removed_account_drops_its_pause() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(&emu, dir.path(), &["svc-1", "svc-2"], |t| t);
    let file = dir.path().join("state").join("paused.json");

    let svc = Service::start(&path).await;
    let r = svc.send(Request::Pause(Target::One("svc-1".into()))).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(svc.stop().await, 0);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Still paused after the restart, and still refused a manual rotation.
    let svc = Service::start(&path).await;
    let a = svc.account("svc-1").await;
    assert_eq!(a["state"], "paused", "{a}");
    assert_eq!(svc.account("svc-2").await["state"], "idle");
    let r = svc
        .send(Request::Rotate {
            target: Target::One("svc-1".into()),
            reason: None,
            ticket: None,
            wait: true,
            urgent: false,
        })
        .await;
    assert!(!r.ok, "{r:?}");
    assert!(r.result.unwrap()["accounts"][0]["error"]
        .as_str()
        .unwrap()
        .contains("paused"));

    // A reload that removes the account drops its pause from the file.
    let text = std::fs::read_to_string(&path).unwrap();
    let cut = text.find("[[accounts]]\nname = \"svc-1\"").unwrap();
    let end = text[cut..].find("\n\n").map_or(text.len(), |e| cut + e + 1);
    std::fs::write(&path, format!("{}{}", &text[..cut], &text[end..])).unwrap();
    let r = svc.send(Request::Reload).await;
    assert!(r.ok, "{r:?}");
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(kept["paused"], serde_json::json!([]), "{kept}");
    // A resume is kept too.
    let r = svc.send(Request::Pause(Target::One("svc-2".into()))).await;
    assert!(r.ok, "{r:?}");
    let r = svc.send(Request::Resume(Target::One("svc-2".into()))).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(svc.stop().await, 0);
    let svc = Service::start(&path).await;
    assert_eq!(svc.account("svc-2").await["state"], "idle");
    assert_eq!(svc.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_pause_file_stops_start_up_with_exit_64_naming_it() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(&emu, dir.path(), &["svc-1"], |t| t);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("paused.json");
    std::fs::write(&file, "{\"paused\": [\"svc-1\"").unwrap();
    let d = Daemon::start(&path, dir.path(), "corrupt");
    let status = d.wait().await;
    assert_eq!(status.code(), Some(64));
    let stderr = std::fs::read_to_string(dir.path().join("corrupt.stderr")).unwrap();
    assert!(
        stderr.contains(&format!("the pause file {} is not valid", file.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("or delete it, which resumes every account"),
        "{stderr}"
    );
    assert_eq!(
        requests(&emu, "kv.get"),
        0,
        "it stopped before any Azure call"
    );
}

fn plan(config: &Path, json: bool) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["plan", "--config"]).arg(config);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.env_remove("KEYTURN_SOCKET").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_says_what_start_up_would_do_and_changes_nothing() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(&emu, dir.path(), &["svc-1", "svc-2", "svc-ca"], |t| {
        no_secret_for_svc_2(t).replace(
            "secret = \"svc-ca\"\n",
            "secret = \"svc-ca\"\nenabled = false\n",
        )
    });
    let before = emu.control().counters().requests;
    let (code, out, err) = plan(&path, false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("read-only: nothing was changed"), "{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{out}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert_eq!(line("svc-1"), "next_rotation", "{out}");
    assert_eq!(line("svc-2"), "awaiting_adoption", "{out}");
    assert_eq!(line("svc-ca"), "disabled", "{out}");
    assert!(out.contains("keyturn adopt svc-2 --reason R"), "{out}");

    // Paused in the state folder: the plan says so, and still writes nothing there.
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("paused.json"),
        "{\"version\":1,\"paused\":[\"svc-1\"]}",
    )
    .unwrap();
    let (code, out, err) = plan(&path, true);
    assert_eq!(code, 0, "{out}{err}");
    let p: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let actions: Vec<(&str, &str)> = p["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["account"].as_str().unwrap(),
                a["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("svc-1", "paused"),
            ("svc-2", "awaiting_adoption"),
            ("svc-ca", "disabled")
        ]
    );

    // Nothing was written: Key Vault was listed, and read only for svc-2, whose secret is
    // missing (one read of its deleted secret, which would carry `keyturn retire`'s marker:
    // one per run of plan), Graph not asked at all, no audit log, no lock, the passwords
    // where they were.
    let after = emu.control().counters().requests;
    for (route, n) in &after {
        let was = before.get(route).copied().unwrap_or(0);
        if *n != was {
            assert!(
                ["token", "discovery", "kv.list", "kv.get"].contains(&route.as_str()),
                "plan sent {route} requests: {before:?} → {after:?}"
            );
        }
    }
    let gets = |c: &std::collections::BTreeMap<String, u64>| c.get("kv.get").copied().unwrap_or(0);
    assert_eq!(
        gets(&after) - gets(&before),
        2,
        "two plans, one deleted-secret read each: {after:?}"
    );
    assert!(after.get("kv.list").copied().unwrap_or(0) > 0, "{after:?}");
    assert!(!dir.path().join("audit.jsonl").exists());
    let entries: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["paused.json"]);
    assert!(invariant(&emu, "svc-1").latest_matches);
    assert!(emu
        .control()
        .check_password(TENANT, "svc-2@contoso.onmicrosoft.com", "Initial-Pass-2!")
        .unwrap());

    // A configuration that cannot run is refused as `keyturn run` would refuse it.
    std::fs::write(state.join("paused.json"), "not json").unwrap();
    let (code, _, err) = plan(&path, false);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("paused.json is not valid"), "{err}");
}

/// The code block after `marker` in a docs page.
fn doc_block(page: &str, marker: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(page)).unwrap();
    let after = &text[text.find(marker).unwrap()..];
    let start = after.find("```text\n").unwrap() + "```text\n".len();
    let len = after[start..].find("```").unwrap();
    after[start..start + len].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_deployment_page_plan_is_what_plan_prints() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    // The page's step 3: every account off in [defaults], the first one on; its secret not
    // stored yet.
    let path = config(&emu, dir.path(), &["svc-1", "svc-2"], |t| {
        t.replace("[defaults]\n", "[defaults]\nenabled = false\n")
            .replace("name = \"svc-1\"", "name = \"coreview-1\"")
            .replace(
                "secret = \"svc-1\"\n",
                "secret = \"coreview-1\"\nenabled = true\n",
            )
            .replace("name = \"svc-2\"", "name = \"coreview-2\"")
            .replace("secret = \"svc-2\"\n", "secret = \"coreview-2\"\n")
    });
    let (code, out, err) = plan(&path, false);
    assert_eq!(code, 0, "{out}{err}");
    let vault = load(&path).accounts[0].vault.clone();
    let shown = out
        .replace(&vault, "https://contoso-keyturn.vault.azure.net/")
        .replace(&path.display().to_string(), "/etc/keyturn/keyturn.toml");
    assert_eq!(
        shown,
        doc_block("docs/first-deployment.md", "<!-- plan-example"),
        "docs/first-deployment.md's plan example is not what keyturn plan prints"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_offline_refuses_a_disabled_account_with_exit_64() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(&emu, dir.path(), &["svc-1"], |t| {
        t.replace(
            "secret = \"svc-1\"\n",
            "secret = \"svc-1\"\nenabled = false\n",
        )
    });
    let out = std::process::Command::new(BIN)
        .args([
            "rotate",
            "svc-1",
            "--offline",
            "--reason",
            "test",
            "--config",
        ])
        .arg(&path)
        .env("KEYTURN_ALLOW_ROOT", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("account \"svc-1\" is disabled (enabled = false"),
        "{stderr}"
    );
    assert_eq!(requests(&emu, "kv.get"), 0);
    assert_eq!(requests(&emu, "graph.patch"), 0);
    // Who tried is on the record.
    let tried = audit_records(dir.path())
        .into_iter()
        .find(|r| r["event"] == "rotation.failed")
        .expect("the refused rotate --offline is recorded");
    assert_eq!(tried["reason"], "test");
}

/// Runs `keyturn adopt ARGS…` with the configuration at `config`: (exit code, stdout).
async fn adopt_cli(config: &Path, args: &[&str]) -> (i32, String) {
    let config = config.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .arg("adopt")
            .args(&args)
            .arg("--config")
            .arg(&config)
            .env_remove("KEYTURN_SOCKET")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for leak in ["Initial-Pass-", "rotator-secret", "eyJ"] {
        assert!(!stdout.contains(leak), "adopt printed {leak:?}: {stdout}");
    }
    (out.status.code().unwrap_or(-1), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_checks_the_declared_roles_and_tags_the_secret_adopted() {
    // The rotator as deployed: it may read role assignments (RoleManagement.Read.Directory).
    let scenario = SCENARIO.replacen(
        "\"Policy.Read.ConditionalAccess\"]\ndirectory_roles = [\"Privileged",
        "\"Policy.Read.ConditionalAccess\", \"RoleManagement.Read.Directory\"]\ndirectory_roles = [\"Privileged",
        1,
    );
    assert_ne!(scenario, SCENARIO);
    let emu = keyturn_emulator::testkit::start_toml(&scenario).await;
    let dir = tempfile::tempdir().unwrap();
    // svc-2 holds Teams Administrator and Reports Reader (SCENARIO): it lacks Global Reader
    // and holds Reports Reader undeclared.
    let path = config(&emu, dir.path(), &["svc-1", "svc-2"], |t| {
        let t = no_secret_for_svc_2(t);
        let edited = t.replacen(
            "name = \"svc-2\"\n",
            "name = \"svc-2\"\nroles = [\"Teams Administrator\", \"Global Reader\"]\n",
            1,
        );
        assert_ne!(edited, t);
        edited
    });
    let svc = Service::start(&path).await;
    assert_eq!(svc.account("svc-2").await["state"], "awaiting_adoption");

    let (code, out) = adopt_cli(&path, &["svc-2", "--reason", "first deployment", "--json"]).await;
    // Adopted: exit 0, whatever the roles.
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["ok"], true, "{v}");
    let roles = &v["roles"];
    assert_eq!(roles["check"], "user_roles", "{v}");
    assert_eq!(roles["status"], "fail", "{v}");
    assert_eq!(
        roles["missing"],
        serde_json::json!(["Global Reader"]),
        "{v}"
    );
    assert_eq!(roles["extra"], serde_json::json!(["Reports Reader"]), "{v}");
    assert!(
        roles["fix"]
            .as_str()
            .unwrap()
            .contains("keyturn provision svc-2 --reason R"),
        "{v}"
    );
    assert_eq!(count(dir.path(), "rotation.completed", Some("svc-2")), 1);

    // The adopted secret records the adoption; recovery and the schedule go on as before.
    let loaded = load(&path);
    let kv = vault_client_as(
        &emu,
        &loaded,
        ROTATOR,
        "rotator-secret",
        keyturn::observe::unobserved(),
    );
    let tags = |name: &'static str| {
        let kv = &kv;
        async move {
            kv.get_secret(name, None)
                .await
                .unwrap()
                .into_model()
                .unwrap()
                .tags
                .unwrap_or_default()
        }
    };
    let t = tags("svc-2-new").await;
    let adopted = t
        .get("keyturn-adopted")
        .unwrap_or_else(|| panic!("no keyturn-adopted tag: {t:?}"));
    assert!(
        time::OffsetDateTime::parse(adopted, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "{adopted}"
    );
    assert_eq!(t.get("keyturn-trigger").map(String::as_str), Some("socket"));
    let a = svc.account("svc-2").await;
    assert_eq!(a["state"], "idle", "{a}");
    assert!(a["next_due"].is_string(), "{a}");

    // A later rotation of the account is not an adoption: its version has no such tag.
    let r = svc
        .send(Request::Rotate {
            target: Target::One("svc-2".into()),
            reason: Some("routine".into()),
            ticket: None,
            wait: true,
            urgent: false,
        })
        .await;
    assert!(r.ok, "{r:?}");
    assert!(!tags("svc-2-new").await.contains_key("keyturn-adopted"));

    // Declared as held, the text form says so under the adoption.
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "roles = [\"Teams Administrator\", \"Global Reader\"]",
        "roles = [\"Teams Administrator\", \"Reports Reader\"]",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let (code, out) = adopt_cli(&path, &["svc-2", "--reason", "again", "--force"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("svc-2: adopted: rotated"), "{out}");
    assert!(
        out.contains("  roles: pass: svc-2@contoso.onmicrosoft.com holds Reports Reader, Teams Administrator as declared"),
        "{out}"
    );
    assert!(tags("svc-2-new").await.contains_key("keyturn-adopted"));
    assert_eq!(svc.stop().await, 0);
}

/// Points svc-1 and svc-2 at secrets that are not in the vault.
fn no_secrets_for_svc_1_and_2(text: String) -> String {
    let t = no_secret_for_svc_2(text);
    let edited = t.replace("secret = \"svc-1\"\n", "secret = \"svc-1-new\"\n");
    assert_ne!(edited, t);
    edited
}

/// The emulator's write requests (Key Vault and Graph), route by route.
fn writes(emu: &keyturn_emulator::Emulator) -> Vec<(String, u64)> {
    [
        "kv.set",
        "kv.update",
        "kv.delete",
        "kv.purge",
        "kv.recover",
        "graph.patch",
        "graph.create",
        "graph.delete",
    ]
    .into_iter()
    .map(|route| (route.to_owned(), requests(emu, route)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_takes_several_accounts_over_one_request_each_in_order() {
    let emu = keyturn_emulator::testkit::start_toml(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        &emu,
        dir.path(),
        &["svc-1", "svc-2"],
        no_secrets_for_svc_1_and_2,
    );
    let svc = Service::start(&path).await;
    for name in ["svc-1", "svc-2"] {
        assert_eq!(svc.account(name).await["state"], "awaiting_adoption");
    }

    let (code, out) = adopt_cli(&path, &["svc-2", "svc-1", "--reason", "first deployment"]).await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(": adopted: rotated (rotation "))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("svc-2: "), "{out}");
    assert!(lines[1].starts_with("svc-1: "), "{out}");

    // Both secrets exist now, both adoptions are on the record, one command each.
    let loaded = load(&path);
    let kv = vault_client_as(
        &emu,
        &loaded,
        ROTATOR,
        "rotator-secret",
        keyturn::observe::unobserved(),
    );
    for (name, secret) in [("svc-1", "svc-1-new"), ("svc-2", "svc-2-new")] {
        let s = kv
            .get_secret(secret, None)
            .await
            .unwrap()
            .into_model()
            .unwrap();
        assert!(s.value.is_some_and(|v| !v.is_empty()), "{secret}");
        assert_eq!(svc.account(name).await["state"], "idle");
        assert_eq!(count(dir.path(), "rotation.completed", Some(name)), 1);
    }
    let accepted: Vec<String> = audit_records(dir.path())
        .into_iter()
        .filter(|r| r["event"] == "admin.command_accepted")
        .filter_map(|r| r["detail"].as_str().map(str::to_owned))
        .filter(|d| d.starts_with("adopt "))
        .collect();
    assert_eq!(accepted, ["adopt svc-2", "adopt svc-1"]);

    // An account refused among others: the others are still adopted, the exit code is the
    // refusal's (JSON: one line per account).
    let (code, out) = adopt_cli(
        &path,
        &[
            "svc-1", "nope", "svc-2", "--reason", "again", "--force", "--json",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    let answers: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let oks: Vec<bool> = answers.iter().map(|v| v["ok"] == true).collect();
    assert_eq!(oks, [true, false, true], "{out}");
    assert_eq!(count(dir.path(), "rotation.completed", Some("svc-2")), 2);
    assert_eq!(svc.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_dry_run_changes_nothing_and_says_what_adopt_would_do() {
    let emu = keyturn_emulator::testkit::start_toml(SCENARIO).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(&emu, dir.path(), &["svc-1", "svc-2"], no_secret_for_svc_2);
    let svc = Service::start(&path).await;
    assert_eq!(svc.account("svc-2").await["state"], "awaiting_adoption");
    let before = writes(&emu);
    let records = audit_records(dir.path()).len();

    let (code, out) = adopt_cli(&path, &["svc-2", "--reason", "R", "--dry-run"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("svc-2 (awaiting_adoption): would rotate it now: its current password is replaced, tell its consumer first\n"),
        "{out}"
    );
    // The roles check, as after an adoption.
    assert!(out.contains("  roles: "), "{out}");
    assert!(
        out.ends_with("dry run: no adopt was sent, nothing was changed\n"),
        "{out}"
    );

    // svc-1's secret exists: refused without --force, replaced with it.
    let (code, out) = adopt_cli(
        &path,
        &[
            "svc-2",
            "svc-1",
            "nope",
            "--reason",
            "R",
            "--dry-run",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    let plans: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let would: Vec<(&str, &str)> = plans
        .iter()
        .map(|p| (p["account"].as_str().unwrap(), p["would"].as_str().unwrap()))
        .collect();
    assert_eq!(
        would,
        [("svc-2", "rotate"), ("svc-1", "refuse"), ("nope", "refuse")],
        "{out}"
    );
    assert_eq!(plans[0]["roles"]["check"], "user_roles", "{out}");
    assert!(
        plans[1]["detail"]
            .as_str()
            .unwrap()
            .starts_with("refused without --force (already adopted): "),
        "{out}"
    );
    assert_eq!(plans[2]["state"], "unknown", "{out}");
    let (code, out) = adopt_cli(&path, &["svc-1", "--reason", "R", "--dry-run", "--force"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("svc-1 (idle): would replace its password"),
        "{out}"
    );

    // Nothing changed: no write reached the emulator, nothing on the record, svc-2 waits.
    assert_eq!(writes(&emu), before);
    assert_eq!(audit_records(dir.path()).len(), records);
    assert_eq!(svc.account("svc-2").await["state"], "awaiting_adoption");
    // (The counters do see an adoption's writes.)
    let (code, out) = adopt_cli(&path, &["svc-2", "--reason", "R"]).await;
    assert_eq!(code, 0, "{out}");
    assert_ne!(writes(&emu), before);
    assert_eq!(svc.stop().await, 0);
}
