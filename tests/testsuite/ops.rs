//! What ops teams plug in (issue 18): the Prometheus alert rules pass `promtool test rules`
//! (a firing and a quiet case for every alert) and link a runbook section of
//! `docs/operations.md` that exists; the rules and the Grafana dashboard name only metrics a
//! running keyturn exports.
//!
//! promtool (Debian package `prometheus`) is installed by `.ci/run`: under `CI=true` a missing
//! tool fails the test; elsewhere the test says SKIPPED and passes.

use crate::common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Metrics the rules and the dashboard use that the scrape below cannot show, each with the
/// reason. If the scrape ever shows one, `every_metric_the_rules_and_dashboard_use_is_exported`
/// fails until its entry here is removed, so the list cannot go stale.
const NOT_YET_EXPORTED: &[(&str, &str)] = &[
    // keyturn_leader (1 on the replica that holds the lease) is exported only with `[ha]`,
    // which this scrape does not configure: tests/testsuite/ha.rs reads it.
    ("keyturn_leader", "[ha] only (tests/testsuite/ha.rs)"),
    // The append-blob copy's lag, only with `[daemon.audit_blob]` (tests/testsuite/ha.rs).
    (
        "keyturn_audit_copy_lag_seconds",
        "[daemon.audit_blob] only (tests/testsuite/ha.rs)",
    ),
];

pub(crate) fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Whether `name` runs. Missing: under `CI=true` (where `.ci/run` installs it from Debian's
/// `package`) the test fails; elsewhere it is skipped, loudly.
pub(crate) fn required_tool(name: &str, package: &str) -> bool {
    let runs = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{name} is not installed: .ci/run installs it (apt-get install {package})"
    );
    eprintln!("SKIPPED: {name} is not installed (apt-get install {package}; .ci/run does)");
    false
}

fn rules() -> Yaml {
    YamlLoader::load_from_str(&read("deploy/prometheus/keyturn-rules.yaml"))
        .expect("keyturn-rules.yaml is YAML")
        .remove(0)
}

/// Every alerting rule of keyturn-rules.yaml.
fn alerts() -> Vec<Yaml> {
    let rules = rules();
    let alerts: Vec<Yaml> = rules["groups"]
        .as_vec()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_vec().expect("rules").clone())
        .filter(|r| r["alert"].as_str().is_some())
        .collect();
    assert!(alerts.len() >= 10, "{} alerts", alerts.len());
    alerts
}

#[test]
fn the_alert_rules_pass_promtool() {
    if !required_tool("promtool", "prometheus") {
        return;
    }
    let dir = Path::new(ROOT).join("deploy/prometheus");
    for args in [
        &["check", "rules", "keyturn-rules.yaml"][..],
        &["test", "rules", "keyturn-rules.test.yaml"][..],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// promtool passes a test file that tests nothing: each alert must have a case where it fires
/// and one where it must not.
#[test]
fn every_alert_has_a_firing_and_a_quiet_case() {
    let tests = YamlLoader::load_from_str(&read("deploy/prometheus/keyturn-rules.test.yaml"))
        .expect("keyturn-rules.test.yaml is YAML")
        .remove(0);
    let cases: Vec<&Yaml> = tests["tests"]
        .as_vec()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_vec().into_iter().flatten())
        .collect();
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        let of_it: Vec<&&Yaml> = cases
            .iter()
            .filter(|c| c["alertname"].as_str() == Some(name))
            .collect();
        let fires = |c: &&&Yaml| c["exp_alerts"].as_vec().is_some_and(|v| !v.is_empty());
        assert!(of_it.iter().any(fires), "{name}: no case where it fires");
        assert!(
            of_it.iter().any(|c| !fires(c)),
            "{name}: no case where it stays quiet"
        );
    }
}

/// GitHub's anchor of a Markdown heading: lower case, spaces to `-`, other punctuation gone.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_links_a_runbook_section_that_exists() {
    let ops = read("docs/operations.md");
    let anchors: BTreeSet<String> = ops
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        let severity = alert["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity {severity:?}"
        );
        assert!(
            alert["annotations"]["summary"].as_str().is_some(),
            "{name}: no summary"
        );
        let url = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no runbook_url"));
        let section = url
            .strip_prefix("docs/operations.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} is not in docs/operations.md"));
        assert_eq!(section, name.to_lowercase(), "{name}: its own section");
        assert!(
            anchors.contains(section),
            "{name}: docs/operations.md has no heading for #{section}"
        );
    }
}

/// The metric names a running keyturn exports: the `# TYPE` lines of its `/metrics`, as the
/// series names PromQL sees (`_total` of a counter, `_bucket` of a histogram). A family
/// appears only once it has a sample, so the daemon is made to produce one of each: a
/// rotation, a throttled answer, a paced request, a declared credential expiry. That no
/// family registered in src/metrics.rs is missing is checked, so the list is complete.
fn exported() -> &'static BTreeSet<String> {
    static NAMES: OnceLock<BTreeSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(scrape())
    })
}

async fn scrape() -> BTreeSet<String> {
    let port = free_port();
    // 100 reads per 10 s with a burst of one: start-up recovery's reads wait (paced).
    let extra = format!(
        "\n[limits]\nvault_other_per_10s = 100\nheadroom = 0.0\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let w = World::new(Opts {
        verify: false,
        admin: Box::leak(extra.into_boxed_str()),
        ..Opts::default()
    })
    .await;
    // A declared client secret expiry (keyturn_identity_credential_expiry_timestamp_seconds).
    let text = std::fs::read_to_string(&w.config)
        .unwrap()
        .replacen(
            "allow_inline_secret = true\n",
            "allow_inline_secret = true\nsecret_expires = \"2099-01-01\"\n",
            1,
        )
        // The readiness watch at once (keyturn_account_ready has series only once it has looked).
        .replacen(
            "[daemon]\n",
            "[daemon]\nreadiness_check_interval = \"1s\"\n",
            1,
        );
    std::fs::write(&w.config, text).unwrap();
    // One 429 from Graph (keyturn_azure_throttled_total), honoured and retried.
    w.emu
        .control()
        .add_fault(keyturn_emulator::FaultRule {
            route: "graph.patch".into(),
            kind: keyturn_emulator::FaultKind::Status,
            status: Some(429),
            retry_after: Some(0),
            count: Some(1),
            ..Default::default()
        })
        .unwrap();
    let d = w.daemon().await;
    let rotate = Command::new(BIN)
        .args(["rotate", "svc-1", "--reason", "metrics", "--socket"])
        .arg(w.socket())
        .output()
        .unwrap();
    assert!(
        rotate.status.success(),
        "{}",
        String::from_utf8_lossy(&rotate.stderr)
    );
    // Scraped until the watch's first look is in (within its 1 s interval; 30 s at most).
    let mut body = String::new();
    for _ in 0..60 {
        body = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if body.contains("keyturn_account_ready{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait().await.success());
    let mut families = BTreeSet::new();
    let mut names = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut f = rest.split_whitespace();
            let (Some(name), Some(kind)) = (f.next(), f.next()) else {
                panic!("a TYPE line without a type: {line}")
            };
            families.insert(name.to_owned());
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{s}"));
                    }
                }
                _ => {
                    names.insert(name.to_owned());
                }
            }
        }
    }
    // Every family src/metrics.rs registers (`reg.register(\n "name",`) is in the scrape.
    let source = read("src/metrics.rs");
    let registered: Vec<String> = source
        .split("reg.register(")
        .skip(1)
        .filter_map(|r| r.trim_start().strip_prefix('"')?.split('"').next())
        .map(|n| format!("keyturn_{n}"))
        .collect();
    assert!(registered.len() >= 15, "{registered:?}");
    for name in &registered {
        // Series only with `[ha]` or `[daemon.audit_blob]` (tests/testsuite/ha.rs) or a
        // `[[notify]]` sink that delivered or dropped something (tests/testsuite/notify.rs).
        if NOT_YET_EXPORTED.iter().any(|(n, _)| n == name)
            || name.starts_with("keyturn_notify_")
            || name.starts_with("keyturn_audit_copy_")
        {
            continue;
        }
        assert!(
            families.contains(name),
            "{name} is registered in src/metrics.rs but not in the scrape:\n{body}"
        );
    }
    names
}

/// The `keyturn_…` identifiers in a PromQL expression (string literals left out).
pub(crate) fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == '\\' {
                chars.next();
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if word.starts_with("keyturn_") {
            out.insert(std::mem::take(&mut word));
        }
        word.clear();
        if matches!(c, '"' | '\'' | '`') {
            quote = Some(c);
        }
    }
    if word.starts_with("keyturn_") {
        out.insert(word);
    }
    out
}

#[test]
fn metric_names_skips_strings_and_functions() {
    assert_eq!(
        metric_names(
            r#"sum by (service) (rate(keyturn_a_total{job="keyturn_b"}[5m])) > keyturn_c"#
        ),
        ["keyturn_a_total", "keyturn_c"]
            .map(str::to_owned)
            .into_iter()
            .collect()
    );
}

/// Every PromQL expression of the dashboard: panel targets and templating queries.
pub(crate) fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut panels: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    while let Some(p) = panels.pop() {
        // Rows hold their own panels when collapsed.
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push(e.to_owned());
            }
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let q = match &v["query"] {
            serde_json::Value::String(s) => Some(s.as_str()),
            o => o["query"].as_str(),
        };
        if v["type"] == "query" {
            out.extend(q.map(str::to_owned));
        }
    }
    out
}

#[test]
fn every_metric_the_rules_and_dashboard_use_is_exported() {
    let exported = exported();
    let pending: BTreeSet<&str> = NOT_YET_EXPORTED.iter().map(|(n, _)| *n).collect();
    for (name, work) in NOT_YET_EXPORTED {
        assert!(
            !exported.contains(*name),
            "keyturn now exports {name} ({work}): remove it from NOT_YET_EXPORTED in tests/testsuite/ops.rs"
        );
    }
    let mut sources: Vec<(String, String)> = alerts()
        .iter()
        .map(|a| {
            (
                format!("alert {}", a["alert"].as_str().unwrap()),
                a["expr"].as_str().expect("expr").to_owned(),
            )
        })
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/keyturn.json")).expect("valid JSON");
    sources.extend(
        dashboard_queries(&dashboard)
            .into_iter()
            .map(|q| ("the dashboard".to_owned(), q)),
    );
    let mut used = BTreeSet::new();
    for (source, expr) in &sources {
        let names = metric_names(expr);
        // `up` is Prometheus's own series for each scrape (KeyturnDown).
        assert!(
            !names.is_empty() || expr.contains("up{job=\"keyturn\"}"),
            "{source}: no keyturn metric in {expr}"
        );
        for name in names {
            assert!(
                exported.contains(&name) || pending.contains(name.as_str()),
                "{source} uses {name}, which keyturn does not export; it exports:\n{exported:#?}"
            );
            used.insert(name);
        }
    }
    for (name, _) in NOT_YET_EXPORTED {
        assert!(used.contains(*name), "{name} is listed but unused");
    }
}

/// The dashboard as Grafana imports it: a titled dashboard with a `uid`, a Prometheus
/// data source variable that every panel and query goes through, panels laid out on the grid
/// with unique ids, each with PromQL targets; and the views issue 18 asks for.
#[test]
fn the_dashboard_has_grafanas_shape() {
    let d: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/keyturn.json")).expect("valid JSON");
    assert!(d["title"].is_string() && d["uid"].is_string(), "title, uid");
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(ds["query"], "prometheus", "{ds}");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().unwrap());
    let uses_ds = |o: &serde_json::Value| o["datasource"]["uid"] == ds_ref.as_str();
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert!(uses_ds(v), "variable {} not on {ds_ref}", v["name"]);
    }
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for p in panels {
        let title = p["title"].as_str().expect("a panel title");
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "{title}: id taken"
        );
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        let w = p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap();
        assert!(w <= 24, "{title}: wider than the grid");
        if p["type"] == "row" {
            continue;
        }
        titles.push(title);
        assert!(uses_ds(p), "{title}: not on {ds_ref}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no target");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(uses_ds(t), "{title}: a target not on {ds_ref}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
            assert!(refs.insert(t["refId"].as_str().expect("refId")), "{title}");
        }
    }
    assert!(titles.len() >= 10, "{titles:?}");
    let all: BTreeSet<String> = dashboard_queries(&d)
        .iter()
        .flat_map(|q| metric_names(q))
        .collect();
    for (what, metric) in [
        ("rotations by outcome", "keyturn_rotations_total"),
        ("next due", "keyturn_next_rotation_timestamp_seconds"),
        ("oldest secret", "keyturn_secret_age_seconds"),
        ("pending", "keyturn_pending"),
        ("failures", "keyturn_consecutive_failures"),
        ("Azure requests", "keyturn_azure_requests_total"),
        (
            "Azure latency",
            "keyturn_azure_request_duration_seconds_bucket",
        ),
        ("429 by service", "keyturn_azure_throttled_total"),
        ("pacing", "keyturn_paced_requests_total"),
        ("pacing", "keyturn_paced_wait_seconds_total"),
    ] {
        assert!(all.contains(metric), "no {what} panel ({metric})");
    }
}

/// A stand-in for the az CLI: each call's arguments go to `$AZ_LOG` (one per line, then a
/// blank line); `az keyvault show` answers the vault's resource id.
const STUB_AZ: &str = r#"#!/usr/bin/env bash
printf '%s\n' "$@" >> "$AZ_LOG"
printf '\n' >> "$AZ_LOG"
if [[ "$1 $2" == "keyvault show" ]]; then
    echo "/subscriptions/s1/resourceGroups/$4/providers/Microsoft.KeyVault/vaults/$6"
fi
"#;

/// deploy/azure/secret-expired-subscription.sh against the stub az: exit code, stderr and
/// the calls (each a list of arguments).
fn run_expired_subscription(
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, Vec<Vec<String>>) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let az = dir.path().join("az");
    std::fs::write(&az, STUB_AZ).unwrap();
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("az.log");
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(ROOT).join("deploy/azure/secret-expired-subscription.sh"))
        .args(args)
        .env(
            "PATH",
            format!(
                "{}:{}",
                dir.path().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("AZ_LOG", &log)
        .env_remove("KEYTURN_ENDPOINT_TYPE")
        .env_remove("KEYTURN_SUBSCRIPTION_NAME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let calls = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .split("\n\n")
        .filter(|c| !c.is_empty())
        .map(|c| c.lines().map(str::to_owned).collect())
        .collect();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        calls,
    )
}

/// The value after `flag` in one call.
fn flag_value<'a>(call: &'a [String], flag: &str) -> Option<&'a str> {
    let i = call.iter().position(|a| a == flag)?;
    call.get(i + 1).map(String::as_str)
}

/// The dead-man switch (issue 18): an Event Grid subscription on the vault for
/// `SecretExpired` only (never `SecretNearExpiry`, which Key Vault sends 30 days before
/// `exp`, at every rotation), to the given endpoint, narrowed to keyturn's secrets when named.
#[test]
fn the_secret_expired_subscription_script_subscribes_to_secret_expired_only() {
    let (code, err, calls) = run_expired_subscription(
        &[
            "rg1",
            "kv1",
            "https://hook.example/keyturn",
            "coreview-1",
            "coreview-2",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(calls[0][..2], ["keyvault", "show"]);
    let create = &calls[1];
    assert_eq!(
        create[..3],
        ["eventgrid", "event-subscription", "create"],
        "{create:?}"
    );
    assert_eq!(
        flag_value(create, "--source-resource-id"),
        Some("/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv1")
    );
    assert_eq!(
        flag_value(create, "--included-event-types"),
        Some("Microsoft.KeyVault.SecretExpired")
    );
    assert!(
        !create.iter().any(|a| a.contains("NearExpiry")),
        "{create:?}"
    );
    assert_eq!(flag_value(create, "--endpoint-type"), Some("webhook"));
    assert_eq!(
        flag_value(create, "--endpoint"),
        Some("https://hook.example/keyturn")
    );
    assert_eq!(flag_value(create, "--name"), Some("keyturn-secret-expired"));
    let i = create
        .iter()
        .position(|a| a == "--advanced-filter")
        .unwrap();
    assert_eq!(
        create[i + 1..i + 5],
        ["subject", "StringIn", "coreview-1", "coreview-2"]
    );

    // Every secret of the vault, to a storage queue.
    let queue = "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/st/queueServices/default/queues/q";
    let (code, err, calls) = run_expired_subscription(
        &["rg1", "kv1", queue],
        &[("KEYTURN_ENDPOINT_TYPE", "storagequeue")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        flag_value(&calls[1], "--endpoint-type"),
        Some("storagequeue")
    );
    assert!(!calls[1].iter().any(|a| a == "--advanced-filter"));

    // Bad usage: exit 64 and no az call.
    for (args, env, says) in [
        (&["rg1", "kv1"][..], &[][..], "Usage:"),
        (
            &["rg1", "kv1", "http://hook.example/"][..],
            &[][..],
            "https://",
        ),
        (
            &["rg1", "kv1", queue][..],
            &[("KEYTURN_ENDPOINT_TYPE", "email")][..],
            "KEYTURN_ENDPOINT_TYPE must be",
        ),
    ] {
        let (code, err, calls) = run_expired_subscription(args, env);
        assert_eq!(code, 64, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(calls.is_empty(), "{calls:#?}");
    }
}

#[test]
fn the_secret_expired_subscription_script_is_shellcheck_clean() {
    if !required_tool("shellcheck", "shellcheck") {
        return;
    }
    let out = Command::new("shellcheck")
        .arg(Path::new(ROOT).join("deploy/azure/secret-expired-subscription.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
