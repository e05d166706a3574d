//! Deployment artefacts: the systemd unit verifies and scores below 2.0 on
//! `systemd-analyze security` (when systemd-analyze is on the machine), the Kubernetes
//! manifests parse and hold what the docs promise, and the configuration they embed passes
//! keyturn's own validation.

use std::path::Path;
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn systemd_analyze() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The unit with ExecStart pointing at the binary built for this test (verify checks it exists).
fn unit_for_test(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(Path::new(ROOT).join("systemd/keyturn.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/keyturn run"),
        "the unit runs keyturn run"
    );
    let path = dir.join("keyturn.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/keyturn", env!("CARGO_BIN_EXE_keyturn")),
    )
    .unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies() {
    if !systemd_analyze() {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit_for_test(dir.path()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_systemd_unit_exposure_is_below_2() {
    if !systemd_analyze() {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit_for_test(dir.path()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.contains("Overall exposure level")) else {
        eprintln!("SKIPPED: this systemd-analyze has no --offline security review\n{text}");
        return;
    };
    let score: f64 = line
        .split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("{line}");
    assert!(score < 2.0, "{line}");
}

#[test]
fn the_unit_keeps_what_the_daemon_needs() {
    let unit = std::fs::read_to_string(Path::new(ROOT).join("systemd/keyturn.service")).unwrap();
    for needed in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RuntimeDirectory=keyturn",
        "StateDirectory=keyturn",
        "LogsDirectory=keyturn",
        "LoadCredential=keyturn-client-secret:",
        "WatchdogSec=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ] {
        assert!(unit.contains(needed), "{needed} missing");
    }
    // PrivateUsers= would unmap the admin group and the callers' uids (SO_PEERCRED).
    assert!(!unit
        .lines()
        .any(|l| l.trim_start().starts_with("PrivateUsers=yes")));
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stop > 60,
        "TimeoutStopSec must exceed the default shutdown grace (60 s)"
    );
}

fn k8s() -> Vec<Yaml> {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/kubernetes/keyturn.yaml")).unwrap();
    YamlLoader::load_from_str(&text).expect("the manifests are valid YAML")
}

#[test]
fn the_kubernetes_manifests_hold_what_the_docs_promise() {
    let docs = k8s();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in ["Namespace", "ServiceAccount", "ConfigMap", "Deployment"] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    let sa = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ServiceAccount"))
        .unwrap();
    assert!(
        sa["metadata"]["annotations"]["azure.workload.identity/client-id"]
            .as_str()
            .is_some()
    );
    let dep = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .unwrap();
    assert_eq!(
        dep["spec"]["replicas"].as_i64(),
        Some(1),
        "one keyturn at a time"
    );
    assert_eq!(dep["spec"]["strategy"]["type"].as_str(), Some("Recreate"));
    let pod = &dep["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["azure.workload.identity/use"].as_str(),
        Some("true")
    );
    assert_eq!(
        pod["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    let c = &pod["spec"]["containers"][0];
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert!(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap()
            > 60
    );
}

#[test]
fn the_configmap_config_passes_check_config() {
    let docs = k8s();
    let cm = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ConfigMap"))
        .unwrap();
    let toml = cm["data"]["keyturn.toml"].as_str().unwrap();
    let loaded = keyturn::config::load_str(toml, Path::new("configmap/keyturn.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded.config.identities["rotator"].kind,
        "workload_identity"
    );
    assert!(
        loaded.config.metrics.listen.is_some(),
        "the probes need the metrics listener"
    );
    let port = loaded.config.metrics.listen.unwrap().port();
    let dep = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .unwrap();
    let container_port = dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]
        ["containerPort"]
        .as_i64()
        .unwrap();
    assert_eq!(
        container_port, port as i64,
        "probes and metrics.listen agree"
    );
}

#[test]
fn the_azure_setup_script_is_valid_bash() {
    let out = Command::new("bash")
        .args(["-n"])
        .arg(Path::new(ROOT).join("deploy/azure/setup.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
