//! The app credential's own expiry (issue 19 item 6; `docs/msp.md`): a client certificate's
//! `notAfter` read offline, a client secret's declared `secret_expires`; a metric, and a
//! warning at `check-config` and start-up when fewer than 30 days are left.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use time::OffsetDateTime;

/// A PKCS#12 file (no password) whose certificate expires in `days` days.
fn p12(path: &Path, days: u32) {
    use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "keyturn-msp").unwrap();
    let name = name.build();
    let mut b = x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(days).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let der = openssl::pkcs12::Pkcs12::builder()
        .name("keyturn")
        .pkey(&key)
        .cert(&b.build())
        .build2("")
        .unwrap()
        .to_der()
        .unwrap();
    std::fs::write(path, der).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn date_in(days: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::days(days))
        .date()
        .to_string()
}

/// Two identities: a certificate expiring in `cert_days`, a secret declared to expire in
/// `secret_days`.
fn config(dir: &Path, cert_days: u32, secret_expires: &str) -> std::path::PathBuf {
    let cert = dir.join("app.p12");
    p12(&cert, cert_days);
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = dir.join("keyturn.toml");
    std::fs::write(
        &path,
        format!(
            "[identities.by_cert]\nkind = \"client_certificate\"\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = \"6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a\"\ncertificate_file = {:?}\n\n[identities.by_secret]\nkind = \"client_secret\"\ntenant_id = \"fabrikam.onmicrosoft.com\"\nclient_id = \"6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a\"\nclient_secret_file = {:?}\nsecret_expires = {secret_expires:?}\n\n[[accounts]]\nname = \"a\"\nuser = \"svc-a@contoso.onmicrosoft.com\"\nidentity = \"by_cert\"\nvault = \"https://kv.vault.azure.net/\"\nsecret = \"svc-a\"\n",
            cert.display().to_string(),
            secret.display().to_string()
        ),
    )
    .unwrap();
    path
}

fn check_config(path: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(path)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("AZURE_AUTHORITY_HOST")
        .output()
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

#[test]
fn check_config_warns_of_credentials_that_expire_within_30_days() {
    let dir = tempfile::tempdir().unwrap();
    let soon = config(dir.path(), 10, &date_in(12));
    let (code, out) = check_config(&soon);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning: identities.by_cert.certificate_file: the client certificate of identity \"by_cert\" expires on"),
        "{out}"
    );
    assert!(
        out.contains(&format!("warning: identities.by_secret.secret_expires: the client secret of identity \"by_secret\" expires on {}", date_in(12))),
        "{out}"
    );
    assert!(out.contains("--append"), "{out}");

    let later = config(dir.path(), 200, &date_in(200));
    let (code, out) = check_config(&later);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("warning"), "{out}");

    let expired = config(dir.path(), 200, &date_in(-3));
    let (_, out) = check_config(&expired);
    assert!(out.contains("expired on"), "{out}");

    // Not a date, or on a kind that has no secret: refused with the key.
    let bad = config(dir.path(), 200, "next june");
    let (code, out) = check_config(&bad);
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("identities.by_secret.secret_expires: \"next june\" is not a date"),
        "{out}"
    );
    let text = std::fs::read_to_string(&bad).unwrap().replace(
        "secret_expires = \"next june\"",
        "secret_expires = \"2027-06-01\"",
    );
    let text = text.replace(
        "certificate_file =",
        "secret_expires = \"2027-06-01\"\ncertificate_file =",
    );
    std::fs::write(&bad, text).unwrap();
    let (code, out) = check_config(&bad);
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("identities.by_cert.secret_expires: is for kind \"client_secret\" only"),
        "{out}"
    );
}

/// The metric, from a running daemon against the emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_shows_the_declared_secret_expiry_as_a_metric() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &emu,
        dir.path(),
        &Opts {
            verify: false,
            ..Opts::default()
        },
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let expires = date_in(20);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[identities.rotator]\n",
        &format!("[identities.rotator]\nsecret_expires = {expires:?}\n"),
        1,
    );
    std::fs::write(
        &config,
        format!("{text}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let d = Daemon::start(&config, dir.path(), "run");
    d.ready().await;
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = time::Date::parse(
        &expires,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .unwrap()
    .midnight()
    .assume_utc()
    .unix_timestamp();
    assert!(
        body.contains(&format!(
            "keyturn_identity_credential_expiry_timestamp_seconds{{identity=\"rotator\"}} {at}"
        )),
        "{body}"
    );
    assert!(
        !body.contains("keyturn_identity_credential_expiry_timestamp_seconds{identity=\"weak\"}"),
        "{body}"
    );
    // And the start-up warning in the log.
    assert!(
        wait_for(Duration::from_secs(5), || d.stderr().contains(
            "the client secret of identity \\\"rotator\\\" expires on"
        ) || d
            .stderr()
            .contains("the client secret of identity \"rotator\" expires on"))
        .await,
        "{}",
        d.stderr()
    );
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait().await.success());
}
