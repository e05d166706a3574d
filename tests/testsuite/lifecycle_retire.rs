//! `keyturn retire`: the user disabled (or deleted into Entra's deleted items) with the
//! account's `provision_identity`, its secrets tagged `keyturn-retired` and soft-deleted, the
//! `account.retired` record, the daemon's `retired` state (at once, and after a restart with
//! `on_missing_secret = "rotate"`), `--dry-run`, and a refusal naming what is missing.

use crate::common::*;
use keyturn::admin::{client, proto};
use keyturn_emulator::Scenario;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// The provisioning app: creates, disables and deletes users, Privileged Authentication
/// Administrator.
const PROVISIONER: &str = "77777777-7777-7777-7777-777777777777";
const PROVISIONER_SECRET: &str = "provisioner-secret";

/// The world with the provisioning app seeded and every account's `provision_identity`
/// set to `identity` (`provisioner`, or `weak`: User Administrator only).
async fn world(identity: &str) -> World {
    let w = World::new(Opts::default()).await;
    w.emu
        .control()
        .seed(
            &Scenario::from_toml_str(&format!(
                r#"
[[apps]]
tenant = "contoso"
name = "provisioner"
client_id = "{PROVISIONER}"
secrets = ["{PROVISIONER_SECRET}"]
graph_permissions = ["User.ReadWrite.All", "RoleManagement.ReadWrite.Directory"]
directory_roles = ["Privileged Authentication Administrator"]
"#
            ))
            .expect("scenario"),
        )
        .expect("seeded");
    set_config(&w, identity, false);
    w
}

/// Rewrites the configuration: `provision_identity = identity` for every account, and
/// `on_missing_secret = "rotate"` when asked.
fn set_config(w: &World, identity: &str, rotate_missing: bool) {
    w.rewrite(&Opts::default());
    let mut text = std::fs::read_to_string(&w.config).expect("config");
    let mut defaults = format!("[defaults]\nprovision_identity = {identity:?}\n");
    if rotate_missing {
        defaults.push_str("on_missing_secret = \"rotate\"\n");
    }
    text = text.replacen("[defaults]\n", &defaults, 1);
    text.push_str(&format!(
        "\n[identities.provisioner]\nkind = \"client_secret\"\ntenant_id = \"contoso\"\nclient_id = {PROVISIONER:?}\nclient_secret = {PROVISIONER_SECRET:?}\nallow_inline_secret = true\nauthority_host = {:?}\ngraph_base = {:?}\n",
        w.emu.authority_host(),
        w.emu.graph_base()
    ));
    std::fs::write(&w.config, text).expect("config written");
}

/// `keyturn retire …` as a process (off the runtime's worker: an in-process daemon may have
/// to answer it).
fn retire(w: &World, args: &[&str]) -> Output {
    let config = w.config.clone();
    tokio::task::block_in_place(|| {
        Command::new(BIN)
            .arg("retire")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("keyturn retire runs")
    })
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// No initial password of any account in `out`.
fn no_password(out: &str) {
    for (_, _, _, password) in USERS {
        assert!(!out.contains(password), "a password was printed:\n{out}");
    }
}

async fn status_of(socket: &Path, account: &str) -> serde_json::Value {
    let r = client::send(socket, &proto::Request::Status)
        .await
        .expect("status");
    r.result.expect("status result")["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["name"] == account)
        .cloned()
        .expect("the account in status")
}

/// The deleted secret's tags, as the account's own identity reads them.
async fn deleted_tags(w: &World, name: &str) -> Option<std::collections::HashMap<String, String>> {
    let kv = vault_client_as(
        &w.emu,
        &w.loaded(),
        ROTATOR,
        "rotator-secret",
        keyturn::observe::unobserved(),
    );
    let d = kv.get_deleted_secret(name, None).await.ok()?;
    d.into_model().ok()?.tags
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retired_account_is_disabled_deleted_from_the_vault_and_never_rotated_again() {
    let w = world("provisioner").await;
    let service = w.service().await;
    let before = w.emu.control().user(TENANT, USERS[0].1).expect("svc-1");

    let out = retire(
        &w,
        &["svc-1", "--reason", "customer left", "--ticket", "OPS-9"],
    );
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert!(printed.contains("svc-1: retired"), "{printed}");
    no_password(&printed);

    // Entra: disabled (svc-1 holds admin roles: the provisioner's PAA role was needed).
    let user = w.emu.control().user(TENANT, USERS[0].1).expect("svc-1");
    assert_eq!(user.flags.disabled, Some(true));
    // Key Vault: both gone from the live secrets, the secret's deleted copy tagged.
    let kv = reader(&w.emu, &w.loaded());
    assert!(kv.get_secret("svc-1", None).await.is_err(), "soft-deleted");
    let tags = deleted_tags(&w, "svc-1").await.expect("a deleted svc-1");
    assert!(tags.contains_key("keyturn-retired"), "{tags:?}");
    assert_eq!(
        tags.get("keyturn-retired-reason").map(String::as_str),
        Some("customer left")
    );
    assert_eq!(
        tags.get("keyturn-retired-user").map(String::as_str),
        Some("disabled")
    );

    // The running daemon knew at once: retired in status, recorded with who and why.
    assert!(
        w.wait_count(Duration::from_secs(10), "account.retired", Some("svc-1"), 1)
            .await,
        "no account.retired record"
    );
    let rec = w
        .records()
        .into_iter()
        .find(|r| r["event"] == "account.retired")
        .expect("record");
    assert_eq!(rec["reason"], "customer left");
    assert_eq!(rec["ticket"], "OPS-9");
    assert!(rec["actor"]["uid"].is_u64(), "{rec}");
    assert!(
        rec["detail"]
            .as_str()
            .unwrap_or("")
            .contains("user disabled"),
        "{rec}"
    );
    no_password(&rec.to_string());
    let s = status_of(&service.socket, "svc-1").await;
    assert_eq!(s["state"], "retired", "{s}");
    // Asked to rotate, the daemon refuses.
    let r = client::send(
        &service.socket,
        &proto::Request::Rotate {
            target: proto::Target::One("svc-1".into()),
            reason: Some("try".into()),
            ticket: None,
            wait: true,
            urgent: false,
        },
    )
    .await
    .expect("answer");
    assert!(!r.ok, "{}", r.encode());
    assert!(r.encode().contains("retired"), "{}", r.encode());

    // A second retire changes nothing and says so.
    let again = retire(&w, &["svc-1", "--reason", "again"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(text(&again).contains("retired already"), "{}", text(&again));
    assert_eq!(service.stop().await, 0);

    // A restart with on_missing_secret = "rotate", without the pause `retire` left in the
    // state folder (as another replica would start): the marker alone keeps it retired,
    // nothing rotated or made.
    let pauses = w.path().join("state").join("paused.json");
    assert!(
        pauses.exists(),
        "retire paused the account on the daemon first"
    );
    std::fs::remove_file(&pauses).expect("pause file removed");
    set_config(&w, "provisioner", true);
    let kv_sets = |w: &World| w.emu.control().counters().requests.get("kv.set").copied();
    let sets = kv_sets(&w);
    let service = w.service().await;
    let s = status_of(&service.socket, "svc-1").await;
    assert_eq!(s["state"], "retired", "{s}");
    assert_eq!(s["paused"], false, "{s}");
    // On-call reconciles it after the restart: it is found retired, not retired again.
    let r = client::send(
        &service.socket,
        &proto::Request::Reconcile(proto::Target::One("svc-1".into())),
    )
    .await
    .expect("answer");
    assert!(r.encode().contains("retired"), "{}", r.encode());
    assert_eq!(service.stop().await, 0);
    assert_eq!(kv_sets(&w), sets, "nothing was written to Key Vault");
    let after = w.emu.control().user(TENANT, USERS[0].1).expect("svc-1");
    assert_eq!(after.last_password_change, before.last_password_change);
    assert_eq!(w.count("rotation.started", Some("svc-1")), 0);
    assert_eq!(
        w.count("account.retired", Some("svc-1")),
        1,
        "recorded once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retire_delete_without_a_daemon_moves_the_user_to_deleted_items_and_records_it() {
    let w = world("provisioner").await;
    let id = w.emu.control().user(TENANT, USERS[1].1).expect("svc-2").id;
    let out = retire(
        &w,
        &["svc-2", "--reason", "offboarded", "--delete", "--json"],
    );
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    no_password(&printed);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(report[0]["account"], "svc-2");
    assert_eq!(report[0]["result"], "retired");
    assert!(
        report[0]["steps"].to_string().contains("30 days"),
        "{report}"
    );

    // Gone from Entra's users, in its deleted items.
    assert!(w.emu.control().user(TENANT, USERS[1].1).is_err());
    let http = keyturn_emulator::testkit::http(&w.emu);
    let token = keyturn_emulator::testkit::app_token(
        &http,
        &w.emu,
        TENANT,
        PROVISIONER,
        PROVISIONER_SECRET,
        keyturn_emulator::testkit::GRAPH_SCOPE,
    )
    .await;
    let item = http
        .get(format!(
            "{}/v1.0/directory/deletedItems/{id}",
            w.emu.graph_base()
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("deletedItems");
    assert_eq!(item.status().as_u16(), 200);
    let tags = deleted_tags(&w, "svc-2").await.expect("a deleted svc-2");
    assert_eq!(
        tags.get("keyturn-retired-user").map(String::as_str),
        Some("deleted")
    );

    // No daemon answered: the command wrote the record itself.
    let rec = w
        .records()
        .into_iter()
        .find(|r| r["event"] == "account.retired")
        .expect("the command's own account.retired record");
    assert_eq!(rec["account"], "svc-2");
    assert_eq!(rec["reason"], "offboarded");
    assert_eq!(rec["trigger"], "cli");
    assert!(
        rec["detail"]
            .as_str()
            .unwrap_or("")
            .contains("user deleted"),
        "{rec}"
    );

    // `keyturn plan` says what start-up would do with it: nothing, it is retired.
    let config = w.config.clone();
    let plan = tokio::task::block_in_place(|| {
        Command::new(BIN)
            .args(["plan", "--json", "--config"])
            .arg(&config)
            .output()
            .expect("keyturn plan runs")
    });
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan JSON");
    let svc2 = plan["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["account"] == "svc-2")
        .cloned()
        .expect("svc-2 planned");
    assert_eq!(svc2["action"], "retired", "{svc2}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_prints_the_plan_and_changes_nothing() {
    let w = world("provisioner").await;
    let writes = |w: &World| {
        let c = w.emu.control().counters();
        [
            "graph.patch",
            "graph.delete",
            "kv.update",
            "kv.delete",
            "kv.set",
        ]
        .map(|r| c.requests.get(r).copied().unwrap_or(0))
    };
    let before = writes(&w);
    let out = retire(
        &w,
        &["svc-1", "svc-2", "--reason", "r", "--delete", "--dry-run"],
    );
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert!(printed.contains("svc-1: would be retired"), "{printed}");
    assert!(
        printed.contains("delete user svc-2@contoso.onmicrosoft.com"),
        "{printed}"
    );
    assert!(printed.contains("soft-delete"), "{printed}");
    assert_eq!(writes(&w), before, "no write request");
    assert_eq!(
        w.emu
            .control()
            .user(TENANT, USERS[0].1)
            .expect("svc-1")
            .flags
            .disabled,
        Some(false)
    );
    assert!(w.records().is_empty(), "nothing recorded");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_rights_retire_names_what_is_missing_and_changes_nothing() {
    // `weak` holds User Administrator only: svc-1's admin roles need more.
    let w = world("weak").await;
    let out = retire(&w, &["svc-1", "--reason", "r"]);
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(printed.contains("svc-1: NOT retired"), "{printed}");
    assert!(
        printed.contains("Privileged Authentication Administrator")
            && printed.contains("User.ReadWrite.All")
            && printed.contains("Authorization_RequestDenied"),
        "{printed}"
    );
    no_password(&printed);
    assert_eq!(
        w.emu
            .control()
            .user(TENANT, USERS[0].1)
            .expect("svc-1")
            .flags
            .disabled,
        Some(false)
    );
    let kv = reader(&w.emu, &w.loaded());
    assert!(kv.get_secret("svc-1", None).await.is_ok(), "secret kept");
    assert_eq!(w.count("account.retired", None), 0);

    // No provision identity at all: a configuration error naming the key.
    w.rewrite(&Opts::default());
    let out = retire(&w, &["svc-1", "--reason", "r"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(text(&out).contains("provision_identity"), "{}", text(&out));
}
