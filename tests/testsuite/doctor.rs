//! `keyturn doctor`: each check's failure against the emulator, the all-pass case, the exit
//! codes and the `--json` shape, and that it never prints a password or a token.

use crate::common::*;
use keyturn::password::PasswordPolicy;
use keyturn::store::{tag, NewVersion, Step};
use serde_json::Value;
use std::path::Path;

/// Runs `keyturn doctor`: (exit code, stdout, stderr).
pub(crate) fn doctor(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(["doctor", "--config"])
        .arg(config)
        .args(args)
        .env_remove("KEYTURN_SOCKET")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    // Never a password, a client secret or a token (JWTs start with `eyJ`).
    for text in [&stdout, &stderr] {
        for leak in [
            "Initial-Pass-",
            "rotator-secret",
            "weak-secret",
            "eyJ",
            "Bearer",
        ] {
            assert!(!text.contains(leak), "doctor printed {leak:?}: {text}");
        }
    }
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// The rotator's Graph permissions in `SCENARIO`, before and after the deployment's grant of
/// `RoleManagement.Read.Directory` (`deploy/azure/setup.sh`), which lets doctor read the
/// accounts' directory roles.
const ROTATOR_PERMISSIONS: &str = "graph_permissions = [\"User.Read.All\", \"User-PasswordProfile.ReadWrite.All\", \"Policy.Read.ConditionalAccess\"]\ndirectory_roles = [\"Privileged";
const ROTATOR_PERMISSIONS_DEPLOYED: &str = "graph_permissions = [\"User.Read.All\", \"User-PasswordProfile.ReadWrite.All\", \"Policy.Read.ConditionalAccess\", \"RoleManagement.Read.Directory\"]\ndirectory_roles = [\"Privileged";

/// The rotator's `SCENARIO` permissions in another order, which [`world`] leaves alone:
/// without the deployment's `RoleManagement.Read.Directory`.
const ROTATOR_PERMISSIONS_UNDEPLOYED: &str = "graph_permissions = [\"User-PasswordProfile.ReadWrite.All\", \"User.Read.All\", \"Policy.Read.ConditionalAccess\"]\ndirectory_roles = [\"Privileged";

/// An emulator with `SCENARIO` changed by `edit` (then given the deployment's
/// `RoleManagement.Read.Directory` for the rotator, unless `edit` changed its permissions),
/// and a configuration for `accounts` with the rotator identity.
pub(crate) async fn world(
    edit: impl Fn(String) -> String,
    accounts: &[&'static str],
) -> (
    keyturn_emulator::Emulator,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let with: Vec<(&'static str, &'static str)> =
        accounts.iter().map(|a| (*a, "rotator")).collect();
    world_as(edit, &with).await
}

/// As [`world`], with (account, identity) pairs.
async fn world_as(
    edit: impl Fn(String) -> String,
    accounts: &[(&'static str, &'static str)],
) -> (
    keyturn_emulator::Emulator,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let scenario =
        edit(SCENARIO.to_owned()).replacen(ROTATOR_PERMISSIONS, ROTATOR_PERMISSIONS_DEPLOYED, 1);
    let emu = keyturn_emulator::testkit::start_toml(&scenario).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &emu,
        dir.path(),
        &Opts {
            accounts: accounts.to_vec(),
            ..Opts::default()
        },
    );
    (emu, dir, config)
}

/// The report as JSON: exit code and the document.
pub(crate) fn json(config: &Path, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = doctor(config, &all);
    let v = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    (code, v)
}

/// The check named `check` of `section` ("identities"/"accounts") entry `name`.
pub(crate) fn find<'a>(v: &'a Value, section: &str, name: &str, check: &str) -> &'a Value {
    let key = if section == "identities" {
        "identity"
    } else {
        "account"
    };
    let entry = v[section]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e[key] == name)
        .unwrap_or_else(|| panic!("no {name} in {v}"));
    entry["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no check {check} for {name} in {v}"))
}

/// A check's `field` ("detail" or "fix") as text.
fn field_text<'a>(c: &'a Value, field: &str) -> &'a str {
    c[field].as_str().unwrap()
}

/// The checks that did not pass: (check, status).
fn not_passed(v: &Value) -> Vec<(String, String)> {
    ["identities", "accounts"]
        .iter()
        .flat_map(|s| v[*s].as_array().unwrap().iter())
        .flat_map(|e| e["checks"].as_array().unwrap().iter())
        .filter(|c| c["status"] != "pass")
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_passes_with_exit_0_in_the_documented_json_shape() {
    let (_emu, _dir, config) = world(|s| s, &["svc-1", "svc-2"]).await;
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 0, "{v}");
    // Everything passes but write access, which doctor cannot confirm without writing.
    let warn = ("vault_write".to_owned(), "warn".to_owned());
    assert_eq!(not_passed(&v), vec![warn.clone(), warn], "{v}");
    // Exactly the documented keys.
    let top: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(top, ["accounts", "identities"]);
    assert_eq!(v["identities"][0]["identity"], "rotator");
    let mut keys: Vec<&String> = v["identities"][0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["checks", "identity"]);
    let mut keys: Vec<&String> = v["accounts"][0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["account", "checks"]);
    assert_eq!(v["accounts"][0]["account"], "svc-1");
    assert_eq!(v["accounts"][1]["account"], "svc-2");
    for c in v["accounts"][0]["checks"].as_array().unwrap() {
        let mut keys: Vec<&String> = c.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["check", "detail", "fix", "status"], "{c}");
    }
    for check in [
        "graph_token",
        "vault_token",
        "graph_permission",
        "app_directory_roles",
        "clock_skew",
    ] {
        assert_eq!(find(&v, "identities", "rotator", check)["status"], "pass");
    }
    for check in [
        "user_exists",
        "user_enabled",
        "user_cloud_only",
        "user_roles",
        "reset_rights",
        "secret_readable",
        "nothing_pending",
        "secret_age",
        "sign_in_readiness",
    ] {
        assert_eq!(find(&v, "accounts", "svc-2", check)["status"], "pass");
    }
    // The roles are named: the app's from its token, the account's from Graph.
    let c = find(&v, "identities", "rotator", "app_directory_roles");
    assert!(
        field_text(c, "detail").contains("Privileged Authentication Administrator"),
        "{c}"
    );
    let c = find(&v, "accounts", "svc-1", "user_roles");
    for role in [
        "Exchange Administrator",
        "User Administrator",
        "Global Reader",
    ] {
        assert!(field_text(c, "detail").contains(role), "{c}");
    }
    let c = find(&v, "accounts", "svc-1", "vault_write");
    assert!(
        field_text(c, "detail").contains("cannot confirm write access without writing"),
        "{c}"
    );
    assert!(field_text(c, "fix").contains("--write-probe"), "{c}");

    // The text form says the same, and --account narrows it to one account.
    let (code, text, _) = doctor(&config, &["--account", "svc-2"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("identity rotator"), "{text}");
    assert!(text.contains("account svc-2"), "{text}");
    assert!(!text.contains("account svc-1"), "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_client_secret_is_named_by_its_aadsts_code_and_exits_69() {
    let (_emu, _dir, config) = world(
        |s| {
            s.replacen(
                "secrets = [\"rotator-secret\"]",
                "expired_secrets = [\"rotator-secret\"]",
                1,
            )
        },
        &["svc-1"],
    )
    .await;
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 69, "no identity can get a token: {v}");
    let c = find(&v, "identities", "rotator", "graph_token");
    assert_eq!(c["status"], "fail");
    assert!(field_text(c, "detail").contains("AADSTS7000222"), "{c}");
    assert!(field_text(c, "fix").contains("expired"), "{c}");
    assert_eq!(
        find(&v, "identities", "rotator", "vault_token")["status"],
        "fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_graph_permission_fails_naming_the_permission_to_add() {
    let (_emu, _dir, config) = world(
        |s| {
            s.replacen(
                ROTATOR_PERMISSIONS,
                "graph_permissions = [\"User.Read.All\"]\ndirectory_roles = [\"Privileged",
                1,
            )
        },
        &["svc-1"],
    )
    .await;
    let (code, text, _) = doctor(&config, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("fail  graph_permission   the Graph token's roles lack User-PasswordProfile.ReadWrite.All"),
        "{text}"
    );
    assert!(
        text.contains("fix: add the Microsoft Graph application permission User-PasswordProfile.ReadWrite.All"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_user_fails() {
    let (_emu, _dir, config) = world(
        |s| {
            s.replacen(
                "password = \"Initial-Pass-2!\"\n",
                "password = \"Initial-Pass-2!\"\ndisabled = true\n",
                1,
            )
        },
        &["svc-1", "svc-2"],
    )
    .await;
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 1, "{v}");
    let c = find(&v, "accounts", "svc-2", "user_enabled");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        field_text(c, "detail").contains("accountEnabled = false"),
        "{c}"
    );
    assert_eq!(
        find(&v, "accounts", "svc-1", "user_enabled")["status"],
        "pass"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_synced_from_on_premises_fails() {
    let (_emu, _dir, config) = world(
        |s| {
            s.replacen(
                "password = \"Initial-Pass-2!\"\n",
                "password = \"Initial-Pass-2!\"\non_premises_sync_enabled = true\n",
                1,
            )
        },
        &["svc-2"],
    )
    .await;
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 1, "{v}");
    let c = find(&v, "accounts", "svc-2", "user_cloud_only");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        field_text(c, "detail").contains("onPremisesSyncEnabled"),
        "{c}"
    );
    assert!(
        field_text(c, "detail").contains("next sync overwrites"),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_that_does_not_exist_fails() {
    let (_emu, _dir, config) = world(|s| s, &["svc-2"]).await;
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("svc-2@contoso", "nobody@contoso");
    std::fs::write(&config, text).unwrap();
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 1, "{v}");
    let c = find(&v, "accounts", "svc-2", "user_exists");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        field_text(c, "detail").contains("no user \"nobody@contoso.onmicrosoft.com\""),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_the_identity_cannot_read_fails_and_a_missing_secret_awaits_adoption() {
    let (_emu, _dir, config) = world(
        |s| {
            s.replacen(
                "  { client_id = \"11111111-1111-1111-1111-111111111111\", role = \"Key Vault Secrets Officer\" },\n",
                "",
                1,
            )
        },
        &["svc-1"],
    )
    .await;
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 1, "{v}");
    let c = find(&v, "accounts", "svc-1", "secret_readable");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        field_text(c, "fix").contains("Key Vault Secrets Officer"),
        "{c}"
    );

    // A secret that is not there yet: a warning (awaiting adoption), exit 0.
    let (_emu, _dir, config) = world(|s| s, &["svc-1"]).await;
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("secret = \"svc-1\"", "secret = \"svc-new\"");
    std::fs::write(&config, text).unwrap();
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 0, "{v}");
    let c = find(&v, "accounts", "svc-1", "secret_readable");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(field_text(c, "detail").contains("awaiting adoption"), "{c}");
    assert!(field_text(c, "fix").contains("keyturn adopt svc-1"), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_left_pending_and_an_old_secret_are_warnings() {
    let (_emu, _dir, config) = world(|s| s, &["svc-1", "svc-2"]).await;
    let loaded = load(&config);
    let http = keyturn::azure::http_client(
        &loaded.config.tls,
        &loaded.config.network,
        keyturn::observe::unobserved(),
    )
    .unwrap();
    let accounts = keyturn::app::accounts(&loaded, &http).unwrap();
    let value = PasswordPolicy::default().generate().unwrap();
    let store = &accounts[0].account.store;
    store
        .set(
            "svc-1-pending",
            NewVersion {
                value: &value,
                tags: [
                    (tag::STATE.to_owned(), tag::PENDING.to_owned()),
                    (tag::ROTATION_ID.to_owned(), "r-42".to_owned()),
                ]
                .into(),
                expires: None,
                step: Step::Stage,
            },
        )
        .await
        .unwrap();
    store
        .set(
            "svc-2",
            NewVersion {
                value: &value,
                tags: [(
                    tag::ROTATED_AT.to_owned(),
                    "2020-01-06T03:00:00Z".to_owned(),
                )]
                .into(),
                expires: None,
                step: Step::Commit,
            },
        )
        .await
        .unwrap();
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 0, "warnings only: {v}");
    let c = find(&v, "accounts", "svc-1", "nothing_pending");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(field_text(c, "detail").contains("rotation r-42"), "{c}");
    assert_eq!(
        find(&v, "accounts", "svc-2", "nothing_pending")["status"],
        "pass"
    );
    let c = find(&v, "accounts", "svc-2", "secret_age");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(
        field_text(c, "detail").contains("2020-01-06T03:00:00Z"),
        "{c}"
    );
    assert_eq!(
        find(&v, "accounts", "svc-1", "secret_age")["status"],
        "pass"
    );
    // The generated password is not printed either.
    assert!(!v.to_string().contains(value.expose()), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_minutes_off_the_services_is_a_warning() {
    let (emu, _dir, config) = world(|s| s, &["svc-1"]).await;
    // The services' `Date` is 10 minutes ahead of this host's clock.
    emu.control()
        .advance_clock(std::time::Duration::from_secs(600));
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 0, "a warning only: {v}");
    let c = find(&v, "identities", "rotator", "clock_skew");
    assert_eq!(c["status"], "warn", "{c}");
    let detail = field_text(c, "detail");
    assert!(detail.contains("behind"), "{c}");
    let secs: i64 = detail
        .split_whitespace()
        .find_map(|w| w.strip_suffix('s').and_then(|n| n.parse().ok()))
        .unwrap();
    assert!((595..=605).contains(&secs), "{c}");
    assert!(
        field_text(c, "fix").contains("synchronise the clock"),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_or_an_unknown_account_exits_64() {
    let (_emu, dir, config) = world(|s| s, &["svc-1"]).await;
    let (code, _, stderr) = doctor(&config, &["--account", "nope"]);
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("no account \"nope\" in the configuration"),
        "{stderr}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[daemon]\nmax_concurrent_rotations = \"many\"\n").unwrap();
    let (code, _, stderr) = doctor(&bad, &[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("invalid configuration"), "{stderr}");
}

/// svc-2 without directory roles: an ordinary user.
fn svc2_without_roles(s: String) -> String {
    s.replacen(
        "directory_roles = [\"Teams Administrator\", \"Reports Reader\"]",
        "directory_roles = []",
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_without_privileged_authentication_administrator_cannot_reset_a_privileged_account()
{
    // The weak app holds User Administrator: enough for an ordinary user (svc-2 without roles),
    // not for svc-1 (Exchange Administrator, User Administrator, Global Reader).
    let (emu, _dir, config) = world_as(
        |s| {
            svc2_without_roles(s).replacen(
                "graph_permissions = [\"User.Read.All\", \"User-PasswordProfile.ReadWrite.All\"]\ndirectory_roles = [\"User Administrator\"]",
                "graph_permissions = [\"User.Read.All\", \"User-PasswordProfile.ReadWrite.All\", \"RoleManagement.Read.Directory\"]\ndirectory_roles = [\"User Administrator\"]",
                1,
            )
        },
        &[("svc-1", "weak"), ("svc-2", "weak")],
    )
    .await;
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 1, "{v}");
    let c = find(&v, "identities", "weak", "app_directory_roles");
    assert_eq!(c["status"], "pass", "{c}");
    assert!(
        field_text(c, "detail").contains("User Administrator"),
        "{c}"
    );
    let c = find(&v, "accounts", "svc-1", "reset_rights");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        field_text(c, "detail").contains("Exchange Administrator"),
        "{c}"
    );
    assert!(
        field_text(c, "fix").contains("Privileged Authentication Administrator"),
        "{c}"
    );
    let c = find(&v, "accounts", "svc-2", "reset_rights");
    assert_eq!(c["status"], "pass", "{c}");
    assert!(
        find(&v, "accounts", "svc-2", "user_roles")["detail"]
            .as_str()
            .unwrap()
            .contains("no directory role"),
        "{v}"
    );

    // Doctor's verdicts are what the reset does: Graph refuses svc-1, accepts svc-2.
    let loaded = load(&config);
    let http = keyturn::azure::http_client(
        &loaded.config.tls,
        &loaded.config.network,
        keyturn::observe::unobserved(),
    )
    .unwrap();
    let accounts = keyturn::app::accounts(&loaded, &http).unwrap();
    let password = PasswordPolicy::default().generate().unwrap();
    let refused = accounts[0]
        .account
        .directory
        .reset_password(&accounts[0].account.user, &password)
        .await;
    assert!(refused.is_err(), "svc-1's reset must be refused");
    accounts[1]
        .account
        .directory
        .reset_password(&accounts[1].account.user, &password)
        .await
        .expect("svc-2's reset succeeds");
    drop(emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_role_read_permissions_the_role_checks_warn_naming_the_permission() {
    // The rotator keeps its SCENARIO permissions (no RoleManagement.Read.Directory): its own
    // roles come from its token's wids, the account's cannot be read.
    let (_emu, _dir, config) = world(
        |s| s.replacen(ROTATOR_PERMISSIONS, ROTATOR_PERMISSIONS_UNDEPLOYED, 1),
        &["svc-1"],
    )
    .await;
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 0, "warnings only: {v}");
    let c = find(&v, "accounts", "svc-1", "user_roles");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(field_text(c, "detail").contains("403"), "{c}");
    assert!(
        field_text(c, "fix").contains("RoleManagement.Read.Directory"),
        "{c}"
    );
    // Privileged Authentication Administrator resets anyone: no need to know the roles.
    assert_eq!(
        find(&v, "accounts", "svc-1", "reset_rights")["status"],
        "pass"
    );

    // An app without directory roles has no wids: doctor asks Graph, which refuses.
    let (_emu, _dir, config) = world(
        |s| {
            s.replacen(ROTATOR_PERMISSIONS, ROTATOR_PERMISSIONS_UNDEPLOYED, 1)
                .replacen(
                    "directory_roles = [\"Privileged Authentication Administrator\"]",
                    "directory_roles = []",
                    1,
                )
        },
        &["svc-1"],
    )
    .await;
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 0, "warnings only: {v}");
    let c = find(&v, "identities", "rotator", "app_directory_roles");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(
        field_text(c, "fix").contains("RoleManagement.Read.Directory"),
        "{c}"
    );
    let c = find(&v, "accounts", "svc-1", "reset_rights");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(field_text(c, "detail").contains("cannot tell"), "{c}");

    // With the permission, Graph answers: the app holds no role that may reset passwords.
    let (_emu, _dir, config) = world(
        |s| {
            s.replacen(ROTATOR_PERMISSIONS, ROTATOR_PERMISSIONS_DEPLOYED, 1)
                .replacen(
                    "directory_roles = [\"Privileged Authentication Administrator\"]",
                    "directory_roles = []",
                    1,
                )
        },
        &["svc-1"],
    )
    .await;
    let (code, v) = json(&config, &[]);
    let c = find(&v, "identities", "rotator", "app_directory_roles");
    assert_eq!(code, 1, "{v}");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        field_text(c, "detail").contains("Graph's role assignments"),
        "{c}"
    );
    assert!(
        field_text(c, "fix").contains("Privileged Authentication Administrator"),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_the_identity_only_reads_cannot_be_confirmed_and_fails_the_write_probe() {
    let (emu, _dir, config) = world(
        |s| {
            s.replacen(
                "{ client_id = \"11111111-1111-1111-1111-111111111111\", role = \"Key Vault Secrets Officer\" }",
                "{ client_id = \"11111111-1111-1111-1111-111111111111\", role = \"Key Vault Secrets User\" }",
                1,
            )
        },
        &["svc-1", "svc-2"],
    )
    .await;
    // Without the probe: reading works, writing cannot be confirmed.
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        find(&v, "accounts", "svc-1", "secret_readable")["status"],
        "pass"
    );
    let c = find(&v, "accounts", "svc-1", "vault_write");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(
        field_text(c, "detail").contains("cannot confirm write access without writing"),
        "{c}"
    );
    // With it: the probe is refused, naming the role and the command that grants it.
    let (code, v) = json(&config, &["--write-probe"]);
    assert_eq!(code, 1, "{v}");
    for account in ["svc-1", "svc-2"] {
        let c = find(&v, "accounts", account, "vault_write");
        assert_eq!(c["status"], "fail", "{c}");
        assert!(field_text(c, "detail").contains("403"), "{c}");
        let fix = field_text(c, "fix");
        assert!(fix.contains("Key Vault Secrets Officer"), "{c}");
        assert!(fix.contains("az role assignment create"), "{c}");
    }
    // One probe per vault and identity: both accounts share the one answer.
    let counters = emu.control().counters();
    assert_eq!(
        counters.responses.get("kv.set 403"),
        Some(&1),
        "{counters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_probe_sets_and_deletes_a_probe_secret_and_leaves_none_active() {
    use futures::TryStreamExt;
    let (_emu, _dir, config) = world(|s| s, &["svc-1"]).await;
    let (code, v) = json(&config, &["--write-probe"]);
    assert_eq!(code, 0, "{v}");
    let c = find(&v, "accounts", "svc-1", "vault_write");
    assert_eq!(c["status"], "pass", "{c}");
    assert!(field_text(c, "detail").contains("soft-deleted"), "{c}");
    let loaded = load(&config);
    let client = reader(&_emu, &loaded);
    let active: Vec<String> = client
        .list_secret_properties(None)
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|p| p.id)
        .collect();
    assert!(
        !active.iter().any(|id| id.contains("keyturn-doctor-probe-")),
        "{active:?}"
    );
    assert!(active.iter().any(|id| id.contains("/svc-1")), "{active:?}");
    let deleted: Vec<String> = client
        .list_deleted_secret_properties(None)
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|p| p.id)
        .collect();
    assert!(
        deleted
            .iter()
            .any(|id| id.contains("keyturn-doctor-probe-")),
        "the probe stays soft-deleted: {deleted:?}"
    );

    // An account secret with the probe's prefix is refused by the configuration.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("secret = \"svc-1\"", "secret = \"Keyturn-Doctor-Probe-1\"");
    std::fs::write(&config, text).unwrap();
    let (code, _, stderr) = doctor(&config, &[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("keyturn-doctor-probe-"), "{stderr}");
}

/// Gives `account` the line `roles = [...]` in the configuration at `config`.
pub(crate) fn declare_roles(config: &Path, account: &str, roles: &[&str]) {
    let text = std::fs::read_to_string(config).unwrap();
    let list: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
    let at = format!("name = {account:?}\n");
    assert!(text.contains(&at), "{text}");
    let text = text.replacen(&at, &format!("{at}roles = [{}]\n", list.join(", ")), 1);
    std::fs::write(config, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_roles_missing_fail_and_roles_not_declared_warn_naming_them() {
    let (_emu, _dir, config) = world(|s| s, &["svc-1", "svc-2"]).await;
    // svc-1 holds Exchange Administrator, User Administrator and Global Reader; svc-2 Teams
    // Administrator and Reports Reader (SCENARIO).
    declare_roles(&config, "svc-1", &["User Administrator", "Global Reader"]);
    declare_roles(&config, "svc-2", &["preset:coreview"]);
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 1, "{v}");
    let c = find(&v, "accounts", "svc-1", "user_roles");
    assert_eq!(c["status"], "warn", "{c}");
    let detail = field_text(c, "detail");
    assert!(
        detail.contains("Exchange Administrator not declared"),
        "{c}"
    );
    assert!(
        field_text(c, "fix").contains("keyturn provision svc-1 --prune-roles --reason R"),
        "{c}"
    );
    let c = find(&v, "accounts", "svc-2", "user_roles");
    assert_eq!(c["status"], "fail", "{c}");
    let detail = field_text(c, "detail");
    let missing = detail
        .split("lacks the declared role(s) ")
        .nth(1)
        .unwrap_or_else(|| panic!("{c}"));
    for role in [
        "Authentication Administrator",
        "Exchange Administrator",
        "SharePoint Administrator",
        "User Administrator",
        "Global Reader",
    ] {
        assert!(missing.contains(role), "{role}: {c}");
    }
    assert!(
        field_text(c, "fix").contains("keyturn provision svc-2 --reason R"),
        "{c}"
    );
    // The other checks judge the roles held, as before.
    assert_eq!(
        find(&v, "accounts", "svc-2", "reset_rights")["status"],
        "pass"
    );

    // Declared as held: pass; the text form says so.
    let (_emu2, _dir2, config) = world(|s| s, &["svc-2"]).await;
    declare_roles(&config, "svc-2", &["Reports Reader", "Teams Administrator"]);
    let (code, text, _) = doctor(&config, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("as declared"), "{text}");
}
