//! The `keyturn-emulator` binary as a user runs it: --help, the ready line, a request through
//! the printed CA, SIGTERM, and exit code 64 for a bad scenario.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_keyturn-emulator");
const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo-scenario.toml");

#[test]
fn help_documents_every_option() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--listen",
        "--scenario",
        "--ca-out",
        "--cert",
        "--key",
        "--ca",
        "--state-file",
        "--log",
        "KEYTURN_EMULATOR_READY",
    ] {
        assert!(text.contains(opt), "{opt} missing from --help:\n{text}");
    }
}

#[test]
fn invalid_scenario_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[vaults]]\nname = \"x\"\n").expect("write");
    let out = Command::new(BIN)
        .arg("--scenario")
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml"));
}

#[tokio::test]
async fn ready_line_then_serves_then_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    let mut child = Command::new(BIN)
        .args(["--scenario", DEMO, "--log", "warn", "--ca-out"])
        .arg(&ca)
        .arg("--state-file")
        .arg(dir.path().join("state.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("read ready line");
    let json = line
        .strip_prefix("KEYTURN_EMULATOR_READY ")
        .expect("ready prefix");
    let ready: serde_json::Value = serde_json::from_str(json.trim()).expect("ready JSON");
    assert_eq!(ready["ca_pem"], ca.display().to_string());
    let addr: std::net::SocketAddr = ready["addr"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("socket addr");
    let vault_url = ready["vaults"]["keyturn-demo"].as_str().expect("vault url");
    assert_eq!(
        vault_url,
        format!("https://keyturn-demo.vault.azure.net:{}/", addr.port())
    );

    let pem = std::fs::read(&ca).expect("CA written");
    let http = reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(&pem).expect("pem")])
        .resolve("localhost", addr)
        .build()
        .expect("client");
    let r = http
        .post(format!(
            "{}/contoso/oauth2/v2.0/token",
            ready["authority_host"].as_str().expect("authority")
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "11111111-1111-1111-1111-111111111111"),
            ("client_secret", "demo-client-secret"),
            ("scope", "https://vault.azure.net/.default"),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(r.status().as_u16(), 200);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(waited < Duration::from_secs(10), "did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    };
    assert!(status.success(), "{status:?}");
    assert!(dir.path().join("state.json").exists(), "state persisted");
}

#[test]
fn logs_on_a_pipe_or_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("stderr");
    let mut child = Command::new(BIN)
        .args(["--scenario", DEMO, "--log", "info"])
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    let read = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    read.expect("ready line");
    let text = std::fs::read_to_string(&log).expect("read log");
    assert!(text.contains("keyturn-emulator listening"), "{text}");
    assert!(
        !text.contains("\x1b["),
        "colour codes in a log file:\n{text:?}"
    );
}
