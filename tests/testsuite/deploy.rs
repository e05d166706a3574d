//! Deployment artefacts: the systemd unit verifies and scores below 2.0 on
//! `systemd-analyze security` (when systemd-analyze is on the machine), agrees with the
//! sysusers/tmpfiles files and with what the daemon does; the Kubernetes manifests parse and
//! hold what the docs promise, and the configuration they embed passes keyturn's own
//! validation; the Dockerfile and the az script keep their shape.

use keyturn::config::DaemonConfig;
use std::path::{Path, PathBuf};
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Values of `key=` in the unit, in order (a key may repeat).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

fn unit_value(unit: &str, key: &str) -> String {
    let v = unit_values(unit, key);
    assert_eq!(v.len(), 1, "{key}= must appear once in the unit: {v:?}");
    v[0].clone()
}

/// The unit with ExecStart pointing at the binary built for this test (verify checks it exists).
fn unit_for_test(dir: &Path) -> PathBuf {
    let unit = read("systemd/keyturn.service");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/keyturn run --config /etc/keyturn/keyturn.toml"),
        "the unit runs keyturn run with the documented config path"
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
    if !tool("systemd-analyze") {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit_for_test(dir.path()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // verify also succeeds with warnings (unknown keys, bad values): none may name our unit.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("keyturn.service"))
        .collect();
    assert!(
        ours.is_empty(),
        "warnings about the unit:\n{}",
        ours.join("\n")
    );
}

#[test]
fn the_systemd_unit_exposure_is_below_2() {
    if !tool("systemd-analyze") {
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
        eprintln!(
            "SKIPPED: this systemd-analyze has no --offline security review\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    };
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    eprintln!("{line}");
    assert!(score < 2.0, "{line}\n{text}");
}

#[test]
fn the_unit_keeps_what_the_daemon_needs() {
    let unit = read("systemd/keyturn.service");
    for (key, want) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "64"),
        ("StateDirectory", "keyturn"),
        ("ConfigurationDirectory", "keyturn"),
        ("User", "keyturn"),
        // The service's own group: on-call (keyturn-admin) must not read what the service
        // reads through its group (the configuration, a credential).
        ("Group", "keyturn"),
        ("SupplementaryGroups", "keyturn-admin"),
        ("ReadWritePaths", "/run/keyturn /var/log/keyturn"),
        // No core dump of a process that holds passwords and the app's credential, not even
        // when the watchdog fires (its default, SIGABRT, dumps core).
        ("LimitCORE", "0"),
        ("WatchdogSignal", "SIGKILL"),
        (
            "LoadCredential",
            "keyturn-client-secret:/etc/keyturn/client-secret",
        ),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("UMask", "0027"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(unit_value(&unit, key), want, "{key}=");
    }
    assert!(
        !unit_value(&unit, "WatchdogSec").is_empty(),
        "WatchdogSec= is set"
    );
    let nofile: u64 = unit_value(&unit, "LimitNOFILE").parse().unwrap();
    assert!(
        (1024..=65536).contains(&nofile),
        "LimitNOFILE={nofile}: a definite, moderate limit"
    );
    // systemd gives these to User:Group (keyturn:keyturn) at each start: on-call could no
    // longer reach the socket or the audit log. tmpfiles makes them instead.
    for key in ["RuntimeDirectory", "LogsDirectory"] {
        assert!(unit_values(&unit, key).is_empty(), "{key}= is set");
    }
    assert!(unit_values(&unit, "DynamicUser").is_empty());
    // PrivateUsers= would unmap every caller's uid (SO_PEERCRED sees the overflow uid).
    assert!(unit_values(&unit, "PrivateUsers").is_empty());

    // The directories the unit makes writable are the daemon's defaults.
    let d = DaemonConfig::default();
    assert_eq!(d.state_dir, Path::new("/var/lib/keyturn"));
    assert!(d.audit_log.starts_with("/var/log/keyturn"));
    assert_eq!(
        keyturn::config::AdminConfig::default().socket,
        Path::new("/run/keyturn/admin.sock")
    );

    // systemd must wait longer than the daemon's own shutdown grace.
    let stop: u64 = unit_value(&unit, "TimeoutStopSec").parse().unwrap();
    assert!(
        stop > d.shutdown_grace.as_secs() + 10,
        "TimeoutStopSec={stop} must exceed daemon.shutdown_grace ({:?}) with a margin",
        d.shutdown_grace
    );
    let start: u64 = unit_value(&unit, "TimeoutStartSec").parse().unwrap();
    assert!(
        start > d.unclean_start_delay.as_secs() + 60,
        "TimeoutStartSec={start} must leave room for unclean_start_delay and recovery"
    );
}

/// hidepid (ProtectProc=invisible|noaccess|ptraceable) hides other users' /proc/<pid>: a
/// daemon that reads a socket client's supplementary groups there would refuse on-call.
#[test]
fn protect_proc_matches_how_the_daemon_reads_peer_groups() {
    let unit = read("systemd/keyturn.service");
    let protect_proc = unit_value(&unit, "ProtectProc");
    let hides = matches!(
        protect_proc.as_str(),
        "invisible" | "noaccess" | "ptraceable"
    );
    let reads_proc = read("src/admin/access.rs").contains("/proc/{pid}/status");
    assert!(
        !(hides && reads_proc),
        "ProtectProc={protect_proc} hides /proc/<pid>/status of socket clients, which \
         src/admin/access.rs reads for their supplementary groups: use SO_PEERGROUPS there first"
    );
    if !hides && !reads_proc {
        eprintln!("note: the daemon no longer reads /proc for peer groups: ProtectProc=invisible can be set");
    }
}

#[test]
fn sysusers_and_tmpfiles_agree_with_the_unit() {
    let unit = read("systemd/keyturn.service");
    let sysusers = read("systemd/keyturn.sysusers");
    let tmpfiles = read("systemd/keyturn.tmpfiles");
    let user = unit_value(&unit, "User");
    let group = unit_value(&unit, "Group");
    let admin = unit_value(&unit, "SupplementaryGroups");
    assert_ne!(group, admin, "the service's group is not the on-call group");
    let lines: Vec<Vec<&str>> = sysusers
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    for g in [&group, &admin] {
        assert!(
            lines
                .iter()
                .any(|f| (f[0] == "g" && f[1] == *g) || (f[0] == "u" && f[1] == *g && f[2] == "-")),
            "sysusers creates group {g}"
        );
    }
    assert!(
        lines.iter().any(|f| f[0] == "u"
            && f[1] == user
            && (f[2].ends_with(&format!(":{group}")) || (f[2] == "-" && group == user))),
        "sysusers creates user {user} with primary group {group}"
    );
    // The service reads the configuration through its own group; on-call cannot.
    for line in [
        format!("d /etc/keyturn 0750 root {group} -"),
        format!("z /etc/keyturn/keyturn.toml 0640 root {group} -"),
        "z /etc/keyturn/client-secret 0600 root root -".to_owned(),
        "z /etc/keyturn/client-certificate.p12 0600 root root -".to_owned(),
        // What on-call shares: setgid folders, so the socket and audit files get the group.
        format!("d /run/keyturn 2750 {user} {admin} -"),
        format!("d /var/log/keyturn 2750 {user} {admin} -"),
    ] {
        assert!(
            tmpfiles.lines().any(|l| l == line),
            "tmpfiles lacks {line:?}"
        );
    }
    assert!(
        !tmpfiles.contains(&format!("/etc/keyturn 0750 root {admin}")),
        "on-call must not read /etc/keyturn"
    );

    // Apply them to an empty root when the tools are here: they must be accepted as written.
    if !tool("systemd-sysusers") || !tool("systemd-tmpfiles") {
        eprintln!("SKIPPED: systemd-sysusers/systemd-tmpfiles are not installed");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    // Both tools take config files by absolute path outside --root; names must end in .conf.
    let confs = tempfile::tempdir().unwrap();
    let su = confs.path().join("keyturn-sysusers.conf");
    let tf = confs.path().join("keyturn-tmpfiles.conf");
    std::fs::write(&su, &sysusers).unwrap();
    std::fs::write(&tf, &tmpfiles).unwrap();
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(&su)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let groups = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    let gid_of = |g: &str| {
        groups
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{g}:x:")))
            .and_then(|r| r.split(':').next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{g} not in /etc/group:\n{groups}"))
    };
    let gid = gid_of(&group);
    let admin_gid = gid_of(&admin);
    assert_ne!(gid, admin_gid);
    let entry = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap_or_else(|| panic!("{user} not in /etc/passwd:\n{passwd}"));
    let fields: Vec<&str> = entry.split(':').collect();
    assert_eq!(fields[3], gid, "{user}'s primary group is {group}: {entry}");
    assert_eq!(fields[5], "/var/lib/keyturn");
    let out = Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", root.path().display()))
        .arg("--create")
        .arg(&tf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::MetadataExt;
    let etc = std::fs::metadata(root.path().join("etc/keyturn")).unwrap();
    assert_eq!(etc.mode() & 0o7777, 0o750);
    if nix::unistd::geteuid().is_root() {
        assert_eq!(
            etc.gid().to_string(),
            gid,
            "/etc/keyturn belongs to {group}"
        );
    }
    assert!(
        !root.path().join("etc/keyturn/client-secret").exists(),
        "no empty client secret is created"
    );
    for dir in ["run/keyturn", "var/log/keyturn"] {
        let m = std::fs::metadata(root.path().join(dir)).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o2750, "{dir}");
        if nix::unistd::geteuid().is_root() {
            assert_eq!(m.gid().to_string(), admin_gid, "{dir} belongs to {admin}");
        }
    }
}

fn k8s() -> Vec<Yaml> {
    YamlLoader::load_from_str(&read("deploy/kubernetes/keyturn.yaml"))
        .expect("the manifests are valid YAML")
}

fn kind<'a>(docs: &'a [Yaml], k: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(k))
        .unwrap_or_else(|| panic!("no {k} in the manifests"))
}

fn configmap_toml(docs: &[Yaml]) -> &str {
    kind(docs, "ConfigMap")["data"]["keyturn.toml"]
        .as_str()
        .expect("the ConfigMap holds keyturn.toml")
}

/// The ConfigMap's keyturn.toml filled in as a user would (their tenant and client ids for
/// the placeholders), validated where the webhook has mounted the token file.
fn configmap_config(docs: &[Yaml]) -> keyturn::config::Loaded {
    let token = tempfile::NamedTempFile::new().unwrap();
    let toml = configmap_toml(docs)
        .replace(
            "00000000-0000-0000-0000-000000000000",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
        )
        .replace(
            "11111111-1111-1111-1111-111111111111",
            "6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a",
        )
        .replace(
            "kind = \"workload_identity\"",
            &format!(
                "kind = \"workload_identity\"\ntoken_file = {:?}",
                token.path().display().to_string()
            ),
        );
    keyturn::config::load_str(&toml, Path::new("configmap/keyturn.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_kubernetes_manifests_hold_what_the_docs_promise() {
    let docs = k8s();
    for d in &docs {
        assert!(d["apiVersion"].as_str().is_some(), "apiVersion: {d:?}");
        assert!(d["metadata"]["name"].as_str().is_some(), "name: {d:?}");
        if d["kind"].as_str() != Some("Namespace") {
            assert_eq!(d["metadata"]["namespace"].as_str(), Some("keyturn"));
        }
    }
    let sa = kind(&docs, "ServiceAccount");
    assert!(
        sa["metadata"]["annotations"]["azure.workload.identity/client-id"]
            .as_str()
            .is_some()
    );
    let sts = kind(&docs, "StatefulSet");
    assert!(
        docs.iter()
            .all(|d| d["kind"].as_str() != Some("Deployment")),
        "a Deployment starts a replacement before the old pod is gone"
    );
    assert_eq!(sts["spec"]["replicas"].as_i64(), Some(1), "one keyturn");
    let svc = kind(&docs, "Service");
    assert_eq!(sts["spec"]["serviceName"], svc["metadata"]["name"]);
    assert_eq!(svc["spec"]["clusterIP"].as_str(), Some("None"));
    let pod = &sts["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["azure.workload.identity/use"].as_str(),
        Some("true")
    );
    assert_eq!(
        pod["spec"]["serviceAccountName"], sa["metadata"]["name"],
        "the pod runs as the annotated ServiceAccount"
    );
    let psc = &pod["spec"]["securityContext"];
    assert_eq!(psc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        psc["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let c = &pod["spec"]["containers"][0];
    let csc = &c["securityContext"];
    assert_eq!(csc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(csc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(csc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert!(c["resources"]["requests"]["memory"].as_str().is_some());
    assert!(c["resources"]["limits"]["memory"].as_str().is_some());

    // Every path keyturn writes is a mounted volume (the root filesystem is read-only).
    let cfg = configmap_config(&docs);
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .filter(|m| m["readOnly"].as_bool() != Some(true))
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for (what, path) in [
        ("state_dir", cfg.config.daemon.state_dir.clone()),
        (
            "audit_log's folder",
            cfg.config.daemon.audit_log.parent().unwrap().to_owned(),
        ),
        (
            "admin.socket's folder",
            cfg.config.admin.socket.parent().unwrap().to_owned(),
        ),
    ] {
        assert!(
            mounts.iter().any(|m| path.starts_with(m)),
            "{what} {} is not on a writable volume: {mounts:?}",
            path.display()
        );
    }
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    assert!(
        grace as u64 > cfg.config.daemon.shutdown_grace.as_secs() + 10,
        "terminationGracePeriodSeconds must exceed daemon.shutdown_grace"
    );
}

#[test]
fn the_configmap_config_passes_check_config() {
    let docs = k8s();
    // As shipped it is a template: its placeholder ids are refused, naming the fix.
    let shipped = keyturn::config::load_str(configmap_toml(&docs), Path::new("keyturn.toml"))
        .expect_err("the placeholders are refused");
    let placeholders: Vec<String> = shipped
        .problems()
        .iter()
        .filter(|p| p.message.contains("replace the placeholder"))
        .map(|p| p.key.clone())
        .collect();
    assert_eq!(
        placeholders,
        [
            "identities.rotator.tenant_id",
            "identities.rotator.client_id"
        ],
        "{shipped}"
    );
    let loaded = configmap_config(&docs);
    assert_eq!(
        loaded.config.identities["rotator"].kind,
        "workload_identity"
    );
    assert!(!loaded.accounts.is_empty());
    let listen = loaded
        .config
        .metrics
        .listen
        .expect("the probes need the metrics listener");
    assert!(
        listen.ip().is_unspecified(),
        "the kubelet probes the pod IP: listen on 0.0.0.0, not {listen}"
    );
    let pod = &kind(&docs, "StatefulSet")["spec"]["template"]["spec"];
    let port = &pod["containers"][0]["ports"][0];
    assert_eq!(
        port["containerPort"].as_i64(),
        Some(i64::from(listen.port())),
        "containerPort and metrics.listen agree"
    );
    let np = kind(&docs, "NetworkPolicy");
    let admitted: Vec<i64> = np["spec"]["ingress"][0]["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(admitted, vec![i64::from(listen.port())]);
    // The metrics port admits the scraper only, not every pod: one `from` element with both
    // a namespace and a pod selector (pods of that kind in that namespace).
    let from = np["spec"]["ingress"][0]["from"]
        .as_vec()
        .expect("the metrics port has a `from` list");
    assert_eq!(from.len(), 1, "{from:?}");
    for selector in ["namespaceSelector", "podSelector"] {
        let labels = from[0][selector]["matchLabels"]
            .as_hash()
            .unwrap_or_else(|| panic!("{selector} has matchLabels: {from:?}"));
        assert!(!labels.is_empty(), "{selector}");
    }
    assert_eq!(
        np["spec"]["ingress"].as_vec().map(Vec::len),
        Some(1),
        "no other way in"
    );
}

#[test]
fn the_dockerfile_keeps_its_shape() {
    let d = read("deploy/Dockerfile");
    let from: Vec<&str> = d.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "a builder and a runtime stage: {from:?}");
    assert!(from[1].contains("distroless"), "{}", from[1]);
    // The production build: without the `demo` feature, so without the emulator.
    assert!(
        d.contains("cargo build --release --locked --no-default-features -p keyturn"),
        "the image builds keyturn without the demo and its emulator"
    );
    let user = d
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("USER is set");
    assert!(!user.contains(" 0") && !user.contains("root"), "{user}");
    assert!(d.contains(r#"ENTRYPOINT ["/usr/local/bin/keyturn", "run"]"#));
    // The Kubernetes manifest's args follow that ENTRYPOINT.
    let docs = k8s();
    let args = &kind(&docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_ne!(args[0].as_str(), Some("run"), "run is in the ENTRYPOINT");
    let ignore = read("deploy/Dockerfile.dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

#[test]
fn the_azure_setup_script_is_valid_bash_with_the_known_ids() {
    let out = Command::new("bash")
        .arg("-n")
        .arg(Path::new(ROOT).join("deploy/azure/setup.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = read("deploy/azure/setup.sh");
    for id in [
        "cc117bb9-00cf-4eb8-b580-ea2a878fe8f7", // User-PasswordProfile.ReadWrite.All
        "df021288-bdef-4463-88db-98f22de89214", // User.Read.All
        "37730810-e9ba-4e46-b07e-8ca78d182097", // Policy.Read.ConditionalAccess
        "483bed4a-2ad3-4361-a73b-c83ccdbdc53c", // RoleManagement.Read.Directory
        "7be44c8a-adaf-4e2a-84d6-ab2649e08a13", // Privileged Authentication Administrator
        "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", // Key Vault Secrets Officer
        "system:serviceaccount:keyturn:keyturn",
    ] {
        assert!(s.contains(id), "{id} missing");
    }
}

/// shellcheck finds nothing in deploy/azure/setup.sh. `.ci/run` installs shellcheck; on a
/// machine without it the check is skipped, saying so.
#[test]
fn the_azure_setup_script_is_shellcheck_clean() {
    if !tool("shellcheck") {
        eprintln!("SKIPPED: shellcheck is not installed (apt-get install shellcheck; .ci/run installs it)");
        return;
    }
    let out = Command::new("shellcheck")
        .arg(Path::new(ROOT).join("deploy/azure/setup.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A stand-in for the az CLI: every call is appended to `$AZ_LOG` (its arguments, one per
/// line, then a blank line), and it answers what a tenant with nothing of keyturn's yet
/// would. `$AZ_STATE` holds what was created; `$AZ_FAIL` names a call (a substring of its
/// arguments) that fails as az does, with a message on stderr.
const STUB_AZ: &str = r#"#!/usr/bin/env bash
set -u
args="$*"
printf '%s\n' "$@" >> "$AZ_LOG"
printf '\n' >> "$AZ_LOG"
if [ -n "${AZ_FAIL:-}" ] && [[ $args == *"$AZ_FAIL"* ]]; then
  echo "ERROR: stub az refuses: $AZ_FAIL" >&2
  exit 1
fi
case "$args" in
  "ad app list "*) cat "$AZ_STATE/apps" 2>/dev/null || true ;;
  "ad app create "*) echo 0a0a0a0a-1b1b-4c2c-8d3d-4e4e4e4e4e4e | tee "$AZ_STATE/apps" ;;
  "ad sp list "*) ;;
  "ad sp create "*) echo 5f5f5f5f-6a6a-4b7b-8c8c-9d9d9d9d9d9d ;;
  "ad sp show --id 00000003-0000-0000-c000-000000000000 --query id "*) echo 9e9e9e9e-8d8d-4c7c-8b6b-5a5a5a5a5a5a ;;
  *"appRoles[?value=='User-PasswordProfile.ReadWrite.All']"*) echo cc117bb9-00cf-4eb8-b580-ea2a878fe8f7 ;;
  *"appRoles[?value=='User.Read.All']"*) echo df021288-bdef-4463-88db-98f22de89214 ;;
  *"appRoles[?value=='Policy.Read.ConditionalAccess']"*) echo 37730810-e9ba-4e46-b07e-8ca78d182097 ;;
  *"appRoles[?value=='RoleManagement.Read.Directory']"*) echo 483bed4a-2ad3-4361-a73b-c83ccdbdc53c ;;
  *"oauth2PermissionScopes[?value=='openid']"*) echo 37f7f235-527c-4136-accd-4a02d197296e ;;
  *"oauth2PermissionScopes[?value=='User.Read']"*) echo e1fe6dd8-ba31-4d61-89e7-88639da4683d ;;
  "ad app show "*) echo 0 ;;
  "ad app permission add "*) echo "WARNING: Invoking az ad app permission grant is needed" >&2 ;;
  "ad app permission list-grants "*"].scope | [0]"*) cat "$AZ_STATE/grant-scope" 2>/dev/null || true ;;
  "ad app permission list-grants "*"].id | [0]"*) [ -f "$AZ_STATE/grant-scope" ] && echo grant-1 ;;
  "ad app permission grant "*) echo '{}' ;;
  "rest --method GET --url https://graph.microsoft.com/v1.0/servicePrincipals/"*) echo 0 ;;
  "rest --method GET --url https://graph.microsoft.com/v1.0/roleManagement/directory/roleDefinitions/"*) echo "Privileged Authentication Administrator" ;;
  "rest --method GET --url https://graph.microsoft.com/v1.0/roleManagement/directory/roleAssignments"*) echo 0 ;;
  "rest --method POST "*) echo '{}' ;;
  "rest --method PATCH "*) echo '{}' ;;
  "keyvault show --name kv1 --resource-group rg1") [ -f "$AZ_STATE/vault" ] || { echo "ERROR: (ResourceNotFound)" >&2; exit 3; } ;;
  "keyvault create "*) touch "$AZ_STATE/vault"; echo '{}' ;;
  *"--query properties.enableRbacAuthorization"*) echo true ;;
  "keyvault show --name kv1 --resource-group rg1 --query id -o tsv") echo /subscriptions/s1/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv1 ;;
  "role definition list --name b86a8fe4-44ce-4948-aee5-eccb2c155cd7 "*) echo "Key Vault Secrets Officer" ;;
  "role definition list --name 4633458b-17de-408a-b874-0445c86b69e6 "*) echo "Key Vault Secrets User" ;;
  "role assignment list "*) ;;
  "role assignment create "*) echo '{}' ;;
  "ad app federated-credential list "*) ;;
  "ad app federated-credential create "*) echo '{}' ;;
  "account show --query tenantId -o tsv") echo 72f988bf-86f1-41af-91ab-2d7cd011db47 ;;
  *) echo "stub az: unexpected call: $args" >&2; exit 2 ;;
esac
"#;

/// Runs deploy/azure/setup.sh with the stub az first on PATH: (exit code, stdout, stderr,
/// every az call as its list of arguments).
fn run_setup(
    args: &[&str],
    env: &[(&str, &str)],
    apps: Option<&str>,
) -> (Option<i32>, String, String, Vec<Vec<String>>) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    if let Some(apps) = apps {
        std::fs::write(state.join("apps"), apps).unwrap();
    }
    for (k, v) in env {
        if *k == "AZ_GRANT_SCOPE" {
            std::fs::write(state.join("grant-scope"), v).unwrap();
        }
    }
    let az = bin.join("az");
    std::fs::write(&az, STUB_AZ).unwrap();
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("az.log");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(ROOT).join("deploy/azure/setup.sh"))
        .args(args)
        .env("PATH", path)
        .env("AZ_LOG", &log)
        .env("AZ_STATE", &state)
        .env_remove("KEYTURN_APP_NAME")
        .env_remove("KEYTURN_CONSUMER")
        .env_remove("KEYTURN_CONSUMER_TYPE");
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
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        calls,
    )
}

/// The calls whose first arguments are `prefix`.
fn calls_to<'a>(calls: &'a [Vec<String>], prefix: &[&str]) -> Vec<&'a Vec<String>> {
    calls
        .iter()
        .filter(|c| c.len() >= prefix.len() && c.iter().zip(prefix).all(|(a, p)| a == p))
        .collect()
}

/// The value after `flag` in one call.
fn flag<'a>(call: &'a [String], flag: &str) -> Option<&'a str> {
    call.iter()
        .position(|a| a == flag)
        .and_then(|i| call.get(i + 1))
        .map(String::as_str)
}

/// setup.sh against a stub az in an empty tenant (issue 19, item 5): it looks the app up by
/// its exact name, declares and grants the Graph permissions, assigns the directory role,
/// creates the vault, grants keyturn and the consumer their Key Vault roles, and prints a
/// configuration whose kind matches the host and a secret renewal that keeps the old secret.
#[test]
fn the_azure_setup_script_does_each_step_against_a_stub_az() {
    // A host outside AKS, with a consumer.
    let (code, out, err, calls) = run_setup(
        &["rg1", "kv1"],
        &[("KEYTURN_CONSUMER", "c0c0c0c0-d1d1-4e2e-8f3f-a4a4a4a4a4a4")],
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    // The app by its exact name, never by a prefix.
    let list = calls_to(&calls, &["ad", "app", "list"]);
    assert_eq!(list.len(), 1, "{calls:#?}");
    assert_eq!(
        flag(list[0], "--filter"),
        Some("displayName eq 'keyturn-rotator'")
    );
    assert_eq!(
        flag(list[0], "--query"),
        Some("[?displayName=='keyturn-rotator'].appId")
    );
    assert!(!list[0].iter().any(|a| a == "--display-name"), "{list:?}");
    assert_eq!(calls_to(&calls, &["ad", "app", "create"]).len(), 1);
    // The Graph permissions declared and granted; the directory role assigned.
    let declared: Vec<_> = calls_to(&calls, &["ad", "app", "permission", "add"])
        .iter()
        .filter_map(|c| flag(c, "--api-permissions"))
        .collect();
    assert_eq!(
        declared,
        [
            "cc117bb9-00cf-4eb8-b580-ea2a878fe8f7=Role",
            "df021288-bdef-4463-88db-98f22de89214=Role",
            "37730810-e9ba-4e46-b07e-8ca78d182097=Role", // Policy.Read.ConditionalAccess
            "483bed4a-2ad3-4361-a73b-c83ccdbdc53c=Role", // RoleManagement.Read.Directory
            "37f7f235-527c-4136-accd-4a02d197296e=Scope", // openid
            "e1fe6dd8-ba31-4d61-89e7-88639da4683d=Scope", // User.Read
        ]
    );
    // The verify sign-in's consent (issue 19, item 4): Graph's delegated "openid User.Read"
    // granted for all users, as keyturn's AADSTS65001 warning asks.
    let grants = calls_to(&calls, &["ad", "app", "permission", "grant"]);
    assert_eq!(grants.len(), 1, "{calls:#?}");
    assert_eq!(
        flag(grants[0], "--id"),
        Some("0a0a0a0a-1b1b-4c2c-8d3d-4e4e4e4e4e4e")
    );
    assert_eq!(
        flag(grants[0], "--api"),
        Some("00000003-0000-0000-c000-000000000000")
    );
    assert_eq!(flag(grants[0], "--scope"), Some("openid User.Read"));
    let posts: Vec<_> = calls_to(&calls, &["rest", "--method", "POST"])
        .iter()
        .filter_map(|c| flag(c, "--body"))
        .collect();
    assert_eq!(posts.len(), 5, "{posts:#?}");
    assert!(posts[2].contains("\"appRoleId\":\"37730810-e9ba-4e46-b07e-8ca78d182097\""));
    assert!(posts[3].contains("\"appRoleId\":\"483bed4a-2ad3-4361-a73b-c83ccdbdc53c\""));
    assert!(posts[4].contains("\"roleDefinitionId\":\"7be44c8a-adaf-4e2a-84d6-ab2649e08a13\""));
    // The vault, keyturn's role on it, and the consumer's reader role on it.
    assert_eq!(calls_to(&calls, &["keyvault", "create"]).len(), 1);
    let vault_id = "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv1";
    let assigned: Vec<(Option<&str>, Option<&str>, Option<&str>)> =
        calls_to(&calls, &["role", "assignment", "create"])
            .iter()
            .map(|c| {
                (
                    flag(c, "--assignee-object-id"),
                    flag(c, "--role"),
                    flag(c, "--scope"),
                )
            })
            .collect();
    assert_eq!(
        assigned,
        [
            (
                Some("5f5f5f5f-6a6a-4b7b-8c8c-9d9d9d9d9d9d"),
                Some("b86a8fe4-44ce-4948-aee5-eccb2c155cd7"),
                Some(vault_id)
            ),
            (
                Some("c0c0c0c0-d1d1-4e2e-8f3f-a4a4a4a4a4a4"),
                Some("4633458b-17de-408a-b874-0445c86b69e6"),
                Some(vault_id)
            ),
        ]
    );
    // No AKS: no federated credential, and a client secret configuration whose renewal
    // command adds a secret instead of replacing the live one.
    assert!(calls_to(&calls, &["ad", "app", "federated-credential"]).is_empty());
    assert!(out.starts_with("Done."), "{out}");
    assert!(out.contains("kind = \"client_secret\""), "{out}");
    assert!(!out.contains("workload_identity"), "{out}");
    assert!(
        out.contains("client_id = \"0a0a0a0a-1b1b-4c2c-8d3d-4e4e4e4e4e4e\""),
        "{out}"
    );
    assert!(
        out.contains("tenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\""),
        "{out}"
    );
    assert!(
        out.contains(
            "az ad app credential reset --id 0a0a0a0a-1b1b-4c2c-8d3d-4e4e4e4e4e4e --append "
        ),
        "{out}"
    );
    assert!(
        out.contains("The consumer c0c0c0c0-d1d1-4e2e-8f3f-a4a4a4a4a4a4 reads"),
        "{out}"
    );

    // AKS: the federated credential for keyturn's ServiceAccount, and workload identity.
    let issuer = "https://oidc.example/tenant/cluster/";
    let (code, out, err, calls) = run_setup(&["rg1", "kv1", issuer], &[], None);
    assert_eq!(code, Some(0), "{err}");
    let fed = calls_to(&calls, &["ad", "app", "federated-credential", "create"]);
    assert_eq!(fed.len(), 1, "{calls:#?}");
    let params = flag(fed[0], "--parameters").unwrap();
    assert!(
        params.contains(&format!("\"issuer\":\"{issuer}\""))
            && params.contains("\"subject\":\"system:serviceaccount:keyturn:keyturn\""),
        "{params}"
    );
    assert!(out.contains("kind = \"workload_identity\""), "{out}");
    assert!(!out.contains("client_secret"), "{out}");
    // Without a consumer, the output says nobody can read the passwords yet.
    assert!(out.contains("KEYTURN_CONSUMER="), "{out}");
    assert_eq!(calls_to(&calls, &["role", "assignment", "create"]).len(), 1);
}

/// Re-run where the app already holds a narrower consent (issue 19, item 4): setup.sh widens
/// that grant to what the verify sign-in asks instead of adding a second one; where it holds
/// it all, it changes nothing.
#[test]
fn the_azure_setup_script_widens_an_existing_consent() {
    let (code, _, err, calls) = run_setup(&["rg1", "kv1"], &[("AZ_GRANT_SCOPE", "openid")], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        calls_to(&calls, &["ad", "app", "permission", "grant"]).is_empty(),
        "{calls:#?}"
    );
    let patch = calls_to(&calls, &["rest", "--method", "PATCH"]);
    assert_eq!(patch.len(), 1, "{calls:#?}");
    assert_eq!(
        flag(patch[0], "--url"),
        Some("https://graph.microsoft.com/v1.0/oauth2PermissionGrants/grant-1")
    );
    assert_eq!(
        flag(patch[0], "--body"),
        Some("{\"scope\":\"openid User.Read\"}")
    );

    let (code, _, err, calls) = run_setup(
        &["rg1", "kv1"],
        &[("AZ_GRANT_SCOPE", "User.Read openid profile")],
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(calls_to(&calls, &["ad", "app", "permission", "grant"]).is_empty());
    assert!(calls_to(&calls, &["rest", "--method", "PATCH"]).is_empty());
}

/// What must stop setup.sh, with a message and a non-zero exit, never "Done": two apps with
/// the exact name, a failed permission declaration (once hidden by `2>/dev/null` under
/// `set -e`), an empty AKS issuer, a failed federated credential.
#[test]
fn the_azure_setup_script_stops_loudly() {
    let two = "0a0a0a0a-1b1b-4c2c-8d3d-4e4e4e4e4e4e\n1b1b1b1b-1b1b-4c2c-8d3d-4e4e4e4e4e4e\n";
    let (code, out, err, calls) = run_setup(&["rg1", "kv1"], &[], Some(two));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("more than one app registration is named keyturn-rotator"),
        "{err}"
    );
    assert!(!out.contains("Done"), "{out}");
    assert!(calls_to(&calls, &["ad", "sp"]).is_empty(), "{calls:#?}");

    let (code, out, err, _) = run_setup(&["rg1", "kv1"], &[("AZ_FAIL", "permission add")], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot declare User-PasswordProfile.ReadWrite.All on the app")
            && err.contains("stub az refuses"),
        "{err}"
    );
    assert!(!out.contains("Done"), "{out}");

    let (code, out, err, calls) = run_setup(&["rg1", "kv1", ""], &[], None);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("the AKS OIDC issuer (third argument) is empty"),
        "{err}"
    );
    assert!(calls.is_empty() && !out.contains("Done"), "{calls:#?}");

    let (code, out, err, _) = run_setup(
        &["rg1", "kv1", "https://oidc.example/"],
        &[("AZ_FAIL", "federated-credential create")],
        None,
    );
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains("cannot create the federated credential keyturn-aks"),
        "{err}"
    );
    assert!(!out.contains("Done"), "{out}");
}

/// `deploy/kubernetes/keyturn-ha.yaml`: two replicas with `[ha]` (docs/ha.md), a
/// PodDisruptionBudget that never evicts both, standbys kept ready, and a configuration
/// keyturn's own validation accepts.
#[test]
fn the_two_replica_manifests_hold_what_docs_ha_promises() {
    let docs = YamlLoader::load_from_str(&read("deploy/kubernetes/keyturn-ha.yaml"))
        .expect("the manifests are valid YAML");
    for d in &docs {
        if d["kind"].as_str() != Some("Namespace") {
            assert_eq!(d["metadata"]["namespace"].as_str(), Some("keyturn"));
        }
    }
    let dep = kind(&docs, "Deployment");
    assert_eq!(dep["spec"]["replicas"].as_i64(), Some(2));
    let ru = &dep["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(
        ru["maxUnavailable"].as_i64(),
        Some(0),
        "a standby starts before a pod stops"
    );
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    let pdb = kind(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"].as_i64(), Some(1));
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_hash().unwrap() {
        assert_eq!(
            &labels[k.as_str().unwrap()],
            v,
            "the budget selects the pods"
        );
    }
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz"),
        "standbys answer 200 on /readyz"
    );
    let cfg = configmap_config(&docs);
    let ha = cfg.config.ha.as_ref().expect("the ConfigMap has [ha]");
    assert!(cfg.config.identities.contains_key(&ha.identity));
    assert!(ha.lease_url.starts_with("https://"));
    assert_eq!(
        pod["volumes"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str() == Some("config"))
            .unwrap()["configMap"]["name"],
        kind(&docs, "ConfigMap")["metadata"]["name"]
    );
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(grace as u64 > cfg.config.daemon.shutdown_grace.as_secs() + 10);
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .filter(|m| m["readOnly"].as_bool() != Some(true))
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for path in [
        cfg.config.daemon.state_dir.clone(),
        cfg.config.daemon.audit_log.parent().unwrap().to_owned(),
        cfg.config.admin.socket.parent().unwrap().to_owned(),
    ] {
        assert!(
            mounts.iter().any(|m| path.starts_with(m)),
            "{}",
            path.display()
        );
    }
}
