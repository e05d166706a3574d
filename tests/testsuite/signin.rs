//! `keyturn doctor`'s sign-in readiness check (Conditional Access What-If) against the
//! emulator's policies, and the password grant agreeing with its prediction.

use crate::common::*;
use crate::doctor::{doctor, find, json, world};
use serde_json::Value;
use std::path::Path;

/// User Administrator (svc-1 holds it) and Teams Administrator (svc-2).
const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";
const TEAMS_ADMIN: &str = "69091246-20e8-4a56-aa4d-066075b2a7a8";

/// A policy for the holders of `role`, demanding `control`, in `state`, with an optional
/// `locations` line.
fn policy(name: &str, state: &str, role: &str, control: &str, locations: &str) -> String {
    format!(
        r#"
[[conditional_access_policies]]
tenant = "contoso"
displayName = "{name}"
state = "{state}"
grantControls = {{ operator = "OR", builtInControls = ["{control}"] }}
[conditional_access_policies.conditions]
clientAppTypes = ["all"]
users = {{ includeRoles = ["{role}"] }}
applications = {{ includeApplications = ["All"] }}
{locations}
"#
    )
}

/// The loopback range (where the tests' sign-ins come from) as a named location.
const LOOPBACK: &str = r#"
[[named_locations]]
tenant = "contoso"
id = "10000000-0000-0000-0000-00000000000b"
displayName = "keyturn host"
ipRanges = [{ cidrAddress = "127.0.0.0/8" }, { cidrAddress = "::1/128" }]
"#;

/// keyturn's verify sign-in as a direct password grant: (status, answer).
async fn password_grant(
    emu: &keyturn_emulator::Emulator,
    upn: &str,
    password: &str,
) -> (u16, Value) {
    keyturn_emulator::testkit::token_request(
        &keyturn_emulator::testkit::http(emu),
        emu,
        TENANT,
        &[
            ("grant_type", "password"),
            ("client_id", ROTATOR),
            ("client_secret", "rotator-secret"),
            ("scope", "openid User.Read"),
            ("username", upn),
            ("password", password),
        ],
    )
    .await
}

fn text_of(c: &Value, k: &str) -> String {
    c[k].as_str().unwrap_or_default().to_owned()
}

/// The configuration with `line` added to its `[defaults]`.
fn with_default(config: &Path, line: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let edited = text.replacen("\n[defaults]\n", &format!("\n[defaults]\n{line}\n"), 1);
    assert_ne!(text, edited, "the configuration has a [defaults] table");
    std::fs::write(config, edited).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mfa_policy_for_a_role_the_account_holds_fails_it_and_the_password_grant_agrees() {
    let (emu, _dir, config) = world(
        |s| s + &policy("MFA for user admins", "enabled", USER_ADMIN, "mfa", ""),
        &["svc-1", "svc-2"],
    )
    .await;
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 1, "{v}");
    let c = find(&v, "accounts", "svc-1", "sign_in_readiness");
    assert_eq!(c["status"], "fail", "{c}");
    let detail = text_of(c, "detail");
    assert!(
        detail.contains("\"MFA for user admins\" (mfa) requires MFA (AADSTS50076)"),
        "{detail}"
    );
    assert!(detail.contains("Microsoft Graph"), "{detail}");
    assert!(text_of(c, "fix").contains("exclude the account"), "{c}");
    // svc-2 holds no User Administrator role: the policy does not apply to it.
    assert_eq!(
        find(&v, "accounts", "svc-2", "sign_in_readiness")["status"],
        "pass"
    );
    // The sign-in agrees with the prediction.
    let (status, answer) =
        password_grant(&emu, "svc-1@contoso.onmicrosoft.com", "Initial-Pass-1!").await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error_codes"],
        serde_json::json!([50076]),
        "{answer}"
    );
    let (status, answer) =
        password_grant(&emu, "svc-2@contoso.onmicrosoft.com", "Initial-Pass-2!").await;
    assert_eq!(status, 200, "{answer}");
    // The text form names it too.
    let (_, text, _) = doctor(&config, &["--account", "svc-1"]);
    assert!(text.contains("fail  sign_in_readiness"), "{text}");

    // An account that does not verify: the same finding is a warning (exit 0).
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replacen("verify = true", "verify = false", 1)).unwrap();
    let (code, v) = json(&config, &["--account", "svc-1"]);
    assert_eq!(code, 0, "{v}");
    let c = find(&v, "accounts", "svc-1", "sign_in_readiness");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(
        text_of(c, "detail").contains("keyturn does not verify"),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_policy_fails_naming_53003_and_the_password_grant_is_blocked() {
    let (emu, _dir, config) = world(
        |s| s + &policy("Block Teams admins", "enabled", TEAMS_ADMIN, "block", ""),
        &["svc-2"],
    )
    .await;
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 1, "{v}");
    let c = find(&v, "accounts", "svc-2", "sign_in_readiness");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        text_of(c, "detail").contains("\"Block Teams admins\" (block) blocks it (AADSTS53003)"),
        "{c}"
    );
    let (status, answer) =
        password_grant(&emu, "svc-2@contoso.onmicrosoft.com", "Initial-Pass-2!").await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error_codes"],
        serde_json::json!([53003]),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_excluding_the_sign_in_address_passes_once_signin_ip_says_where_from() {
    let excluded = r#"locations = { includeLocations = ["All"], excludeLocations = ["10000000-0000-0000-0000-00000000000b"] }"#;
    let (emu, _dir, config) = world(
        |s| {
            s + LOOPBACK
                + &policy(
                    "MFA for user admins off-site",
                    "enabled",
                    USER_ADMIN,
                    "mfa",
                    excluded,
                )
        },
        &["svc-1"],
    )
    .await;
    // Without signin_ip the location condition cannot be judged: a warning that says so.
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 0, "{v}");
    let c = find(&v, "accounts", "svc-1", "sign_in_readiness");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(
        text_of(c, "detail").contains("MFA for user admins off-site"),
        "{c}"
    );
    assert!(text_of(c, "fix").contains("signin_ip"), "{c}");
    // From the excluded range: pass, and the sign-in (from the loopback address) works.
    with_default(&config, "signin_ip = \"127.0.0.1\"");
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 0, "{v}");
    let c = find(&v, "accounts", "svc-1", "sign_in_readiness");
    assert_eq!(c["status"], "pass", "{c}");
    assert!(text_of(c, "detail").contains("from 127.0.0.1"), "{c}");
    let (status, answer) =
        password_grant(&emu, "svc-1@contoso.onmicrosoft.com", "Initial-Pass-1!").await;
    assert_eq!(status, 200, "{answer}");
    // From elsewhere the policy applies.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen(
            "signin_ip = \"127.0.0.1\"",
            "signin_ip = \"198.51.100.7\"",
            1,
        ),
    )
    .unwrap();
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_only_policy_warns_and_the_sign_in_still_works() {
    let (emu, _dir, config) = world(
        |s| {
            s + &policy(
                "MFA for user admins (report-only)",
                "enabledForReportingButNotEnforced",
                USER_ADMIN,
                "mfa",
                "",
            )
        },
        &["svc-1"],
    )
    .await;
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 0, "{v}");
    let c = find(&v, "accounts", "svc-1", "sign_in_readiness");
    assert_eq!(c["status"], "warn", "{c}");
    let detail = text_of(c, "detail");
    assert!(
        detail.starts_with("report-only Conditional Access"),
        "{detail}"
    );
    assert!(detail.contains("once it is turned on"), "{detail}");
    let (status, answer) =
        password_grant(&emu, "svc-1@contoso.onmicrosoft.com", "Initial-Pass-1!").await;
    assert_eq!(status, 200, "report-only is not enforced: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_policy_read_conditional_access_the_check_warns_naming_it() {
    let (_emu, _dir, config) = world(
        |s| {
            s.replacen(", \"Policy.Read.ConditionalAccess\"]", "]", 1)
                + &policy("MFA for user admins", "enabled", USER_ADMIN, "mfa", "")
        },
        &["svc-1"],
    )
    .await;
    let (code, v) = json(&config, &[]);
    assert_eq!(code, 0, "a warning only: {v}");
    let c = find(&v, "accounts", "svc-1", "sign_in_readiness");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(text_of(c, "detail").contains("403"), "{c}");
    assert!(
        text_of(c, "fix").contains(
            "add the Microsoft Graph application permission Policy.Read.ConditionalAccess"
        ),
        "{c}"
    );
}
