//! `keyturn demo`: keyturn's main job against the embedded Azure emulator, on a fresh
//! machine with no Azure account.
//!
//! It starts `keyturn-emulator` in-process with `config/demo-scenario.toml` (a tenant with
//! three management accounts, one behind a Conditional Access policy), writes a keyturn
//! configuration for it (a real file, loaded and validated like any other), runs the daemon
//! ([`crate::service::run`], what `keyturn run` runs, with its admin socket in the demo's
//! folder and a metrics port on loopback) on a fast schedule, prints what `keyturn doctor`
//! says about each account, the commands to try from a second terminal, and the audit
//! events as they happen.

use crate::config;
use anyhow::Context;
use keyturn_emulator::{Emulator, EmulatorConfig, InvariantQuery, Scenario, TlsSource};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The scenario the demo seeds the emulator with.
pub const SCENARIO: &str = include_str!("../config/demo-scenario.toml");

/// The demo's accounts: (account name, user, secret, verify).
const ACCOUNTS: [(&str, &str, &str); 3] = [
    (
        "coreview-1",
        "svc-coreview-1@contoso.onmicrosoft.com",
        "svc-coreview-1",
    ),
    (
        "coreview-2",
        "svc-coreview-2@contoso.onmicrosoft.com",
        "svc-coreview-2",
    ),
    (
        "coreview-ca",
        "svc-coreview-ca@contoso.onmicrosoft.com",
        "svc-coreview-ca",
    ),
];

/// Writes the keyturn configuration that points at a running emulator, with the admin socket
/// in `dir` (`dir` must be absolute) and the metrics listener on `metrics`.
pub fn write_config(
    emu: &Emulator,
    dir: &Path,
    every_secs: u32,
    metrics: SocketAddr,
) -> anyhow::Result<PathBuf> {
    let ca = dir.join("emulator-ca.pem");
    std::fs::write(&ca, emu.ca_pem()).with_context(|| format!("cannot write {}", ca.display()))?;
    let mut text = format!(
        r#"# Written by `keyturn demo` for the embedded emulator at {addr}.
[daemon]
state_dir = {state:?}
audit_log = {audit:?}
audit_stdout = "human"
drift_check_interval = "30s"
retry_base_delay = "2s"
retry_max_delay = "20s"
shutdown_grace = "10s"
unclean_start_delay = "2s"

# The admin socket's group is left empty: the demo's own user (and root) may use it, with no
# keyturn-admin group needed on this machine.
[admin]
socket = {socket:?}

[metrics]
listen = "{metrics}"

[tls]
extra_ca_files = [{ca:?}]

[network.resolve]
"#,
        addr = emu.addr(),
        state = dir.display().to_string(),
        audit = dir.join("audit.jsonl").display().to_string(),
        ca = ca.display().to_string(),
        socket = dir.join("admin.sock").display().to_string(),
    );
    for host in emu.resolve_hosts() {
        text.push_str(&format!("{host:?} = {:?}\n", emu.addr().ip().to_string()));
    }
    text.push_str(&format!(
        r#"
[defaults]
schedule = "*/{every_secs} * * * * *"
window = "0s"
verify = true
# Where the password sign-ins come from as Entra (here the emulator) sees them, for
# `keyturn doctor`'s Conditional Access check: the loopback address.
signin_ip = {signin_ip:?}

[identities.rotator]
kind = "client_secret"
tenant_id = "contoso"
client_id = "11111111-1111-1111-1111-111111111111"
client_secret = "demo-client-secret"
allow_inline_secret = true          # a demo value for the local emulator only
authority_host = {authority:?}
graph_base = {graph:?}
"#,
        authority = emu.authority_host(),
        graph = emu.graph_base(),
        signin_ip = emu.addr().ip().to_string(),
    ));
    for (name, user, secret) in ACCOUNTS {
        text.push_str(&format!(
            "\n[[accounts]]\nname = {name:?}\nuser = {user:?}\nidentity = \"rotator\"\nvault = {vault:?}\nsecret = {secret:?}\n",
            vault = emu.vault_url("keyturn-demo"),
        ));
    }
    let path = dir.join("keyturn.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    // It holds the (emulator's) client secret inline: only its owner reads it, as keyturn
    // warns about an inline secret in a file others can read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    Ok(path)
}

/// Runs the demo for `duration` (or until Ctrl-C).
pub async fn run(
    duration: Option<Duration>,
    every: u32,
    dir: Option<PathBuf>,
) -> anyhow::Result<i32> {
    anyhow::ensure!(
        (1..=59).contains(&every) && 60 % every == 0,
        "--every must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)"
    );
    let (dir, _temp) = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            // The configuration wants absolute paths (admin.socket) and the printed commands
            // must work from any folder.
            let d = std::path::absolute(&d)
                .with_context(|| format!("cannot resolve {}", d.display()))?;
            (d, None)
        }
        None => {
            let t = tempdir()?;
            (t.clone(), Some(TempDir(t)))
        }
    };
    let scenario = Scenario::from_toml_str(SCENARIO).context("the demo scenario does not parse")?;
    let emu = Emulator::start(EmulatorConfig {
        scenario: Some(scenario),
        tls: TlsSource::Generate { ca_out: None },
        ..Default::default()
    })
    .await
    .context("cannot start the embedded emulator")?;
    let metrics = free_loopback_port()?;
    let path = write_config(&emu, &dir, every, metrics)?;
    let loaded = config::load_with_env(&path, false)?;

    println!("keyturn demo: an Entra ID tenant, Key Vault and Microsoft Graph emulated at https://{} (TLS)", emu.addr());
    println!("  config     {}", path.display());
    println!("  audit log  {}", loaded.config.daemon.audit_log.display());
    println!("  accounts   {} (coreview-ca is behind a Conditional Access policy: verify warns with AADSTS53003)", ACCOUNTS.len());
    println!(
        "  schedule   every {every} s; Ctrl-C stops{}",
        duration
            .map(|d| format!(" (or after {})", humantime::format_duration(d)))
            .unwrap_or_default()
    );
    println!();
    // What `keyturn doctor` says, before anything changes: the Conditional Access policies
    // of the demo tenant show in each account's sign_in_readiness.
    match crate::doctor::doctor(&loaded, None, false, time::OffsetDateTime::now_utc()).await {
        Ok(report) => print!("{}", report.human()),
        Err(e) => println!("keyturn doctor could not run: {e}"),
    }
    println!();
    print!("{}", try_these(&path, metrics));
    println!();

    crate::service::run(loaded, async move {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    })
    .await?;

    println!();
    println!("What the emulator says now (it compares without revealing any password):");
    let control = emu.control();
    let mut all = true;
    for (name, user, secret) in ACCOUNTS {
        let report = control.invariant(&InvariantQuery {
            tenant: "contoso".into(),
            user: user.into(),
            vault: "keyturn-demo".into(),
            secret: secret.into(),
            staging_secret: None,
        })?;
        all &= report.holds;
        println!(
            "  {name:<12} Entra's password is {}",
            if report.latest_matches {
                format!("the latest version of {secret} in Key Vault")
            } else if report.holds {
                format!("in {secret}-pending (a rotation is pending; recovery completes it)")
            } else {
                "NOT in Key Vault: the invariant is broken".to_owned()
            }
        );
    }
    emu.shutdown().await;
    Ok(if all { 0 } else { 1 })
}

/// The on-call commands to try against the running demo, one per line, each runnable as
/// printed (the tests run them).
pub(crate) fn try_these(config: &Path, metrics: SocketAddr) -> String {
    // The binary that runs now: `cargo run` leaves no `keyturn` on the PATH.
    let exe = std::env::current_exe()
        .map(|p| quote(&p.display().to_string()))
        .unwrap_or_else(|_| "keyturn".to_owned());
    let config = quote(&config.display().to_string());
    format!(
        "From a second terminal, try what on-call would do:\n\
         \x20 {exe} status --config {config}\n\
         \x20 {exe} rotate coreview-1 --reason \"tried from the demo\" --ticket DEMO-1 --config {config}\n\
         \x20 {exe} audit show --account coreview-1 --since 1h --config {config}\n\
         \x20 curl -s http://{metrics}/metrics\n"
    )
}

/// `s` as one shell word: as is when it is plain, else single-quoted.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@,%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A free port on 127.0.0.1 for the metrics listener: the system picks one, which is freed
/// for the daemon to bind a moment later.
fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot find a free port on 127.0.0.1 for the metrics listener")?;
    Ok(probe.local_addr()?)
}

/// A temporary folder removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let p = std::env::temp_dir().join(format!("keyturn-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_paths_are_one_shell_word_each() {
        assert_eq!(
            quote("/tmp/keyturn-demo-1/keyturn.toml"),
            "/tmp/keyturn-demo-1/keyturn.toml"
        );
        assert_eq!(quote("/home/a b/it's"), r"'/home/a b/it'\''s'");
        assert_eq!(quote(""), "''");
        let printed = try_these(
            Path::new("/d/keyturn.toml"),
            "127.0.0.1:9464".parse().unwrap(),
        );
        assert!(
            printed.contains(" status --config /d/keyturn.toml\n"),
            "{printed}"
        );
        assert!(
            printed.contains("curl -s http://127.0.0.1:9464/metrics\n"),
            "{printed}"
        );
    }
}
