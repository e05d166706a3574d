//! `verify = true` in a tenant as Entra runs it (issue 19, item 4): the verify sign-in needs
//! delegated consent (AADSTS65001 without it, and the warning says what to grant), a
//! certificate identity signs in with an assertion, and `check-config` refuses verify for
//! identity kinds that cannot sign a user in unless a `verify_identity` can.

use crate::common::*;
use keyturn::audit::{EventKind, MemorySink, Outcome, Trigger};
use keyturn::clock::SystemClock;
use keyturn::protocol::{Engine, Request, Rotated, RotationError, Tuning};
use keyturn_emulator::Scenario;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// An app with everything a rotation needs but no consent for the verify sign-in.
const NOCONSENT: &str = "99999999-9999-9999-9999-999999999999";
/// An app that authenticates with a certificate only.
const CERTAPP: &str = "88888888-8888-8888-8888-888888888888";

const EXTRA: &str = r#"
[[apps]]
tenant = "contoso"
name = "noconsent"
client_id = "99999999-9999-9999-9999-999999999999"
secrets = ["noconsent-secret"]
graph_permissions = ["User.Read.All", "User-PasswordProfile.ReadWrite.All"]
directory_roles = ["Privileged Authentication Administrator"]

[[apps]]
tenant = "contoso"
name = "certapp"
client_id = "88888888-8888-8888-8888-888888888888"
certificate_assertions = true
graph_permissions = ["User.Read.All", "User-PasswordProfile.ReadWrite.All"]
directory_roles = ["Privileged Authentication Administrator"]

[[oauth2_permission_grants]]
app = "88888888-8888-8888-8888-888888888888"
scope = "openid User.Read"
"#;

struct Rig {
    emu: keyturn_emulator::Emulator,
    _dir: tempfile::TempDir,
    accounts: Vec<keyturn::daemon::Managed>,
    audit: MemorySink,
    engine: Engine,
}

/// The emulator with [`EXTRA`], and `account` managed through the identity `identity`
/// (defined by `identity_toml`), its vault through `rotator`.
async fn rig(account: &'static str, identity: &'static str, identity_toml: &str) -> Rig {
    let emu = emulator().await;
    emu.control()
        .seed(&Scenario::from_toml_str(EXTRA).unwrap())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &emu,
        dir.path(),
        &Opts {
            accounts: vec![(account, identity)],
            ..Opts::default()
        },
    );
    let mut text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("identity = {identity:?}\n"),
        &format!("identity = {identity:?}\nvault_identity = \"rotator\"\n"),
    );
    text.push_str(
        &identity_toml
            .replace("{authority}", &emu.authority_host())
            .replace("{graph}", &emu.graph_base()),
    );
    std::fs::write(&path, text).unwrap();
    let loaded = load(&path);
    let http = keyturn::azure::http_client(
        &loaded.config.tls,
        &loaded.config.network,
        keyturn::observe::unobserved(),
    )
    .unwrap();
    let accounts = keyturn::app::accounts(&loaded, &http).unwrap();
    let audit = MemorySink::default();
    let engine = Engine::new(
        Arc::new(audit.clone()),
        Arc::new(SystemClock),
        Tuning {
            verify_delay: Duration::from_millis(100),
            ..Tuning::default()
        },
    );
    Rig {
        emu,
        _dir: dir,
        accounts,
        audit,
        engine,
    }
}

impl Rig {
    async fn rotate(&self, name: &str) -> Result<Rotated, RotationError> {
        let m = self
            .accounts
            .iter()
            .find(|m| m.account.name == name)
            .unwrap();
        self.engine
            .rotate(&m.account, &Request::daemon(Trigger::Cli))
            .await
    }
}

#[tokio::test]
async fn verify_without_consent_warns_with_the_exact_grant_and_a_grant_fixes_it() {
    let r = rig(
        "svc-2",
        "noconsent",
        "\n[identities.noconsent]\nkind = \"client_secret\"\ntenant_id = \"contoso\"\nclient_id = \"99999999-9999-9999-9999-999999999999\"\nclient_secret = \"noconsent-secret\"\nallow_inline_secret = true\nauthority_host = \"{authority}\"\ngraph_base = \"{graph}\"\n",
    )
    .await;
    let done = r.rotate("svc-2").await.unwrap();
    assert_eq!(done.warnings.len(), 1, "{:?}", done.warnings);
    let w = &done.warnings[0];
    for want in [
        "AADSTS65001",
        "app 99999999-9999-9999-9999-999999999999 holds no consent",
        "\"openid User.Read\"",
        "az ad app permission grant --id 99999999-9999-9999-9999-999999999999 --api 00000003-0000-0000-c000-000000000000 --scope \"openid User.Read\"",
        "deploy/azure/setup.sh",
    ] {
        assert!(w.contains(want), "{want:?} missing from: {w}");
    }
    assert!(
        invariant(&r.emu, "svc-2").latest_matches,
        "committed anyway"
    );
    let verified = r
        .audit
        .events()
        .into_iter()
        .find(|e| e.event == EventKind::RotationVerified)
        .unwrap();
    assert_eq!(verified.outcome, Some(Outcome::Warning));
    let error = verified.error.unwrap();
    assert_eq!(error.code.as_deref(), Some("AADSTS65001"));
    assert_eq!(error.kind, "consent_missing");

    // Grant what the warning names: the next rotation signs in.
    r.emu
        .control()
        .seed(
            &Scenario::from_toml_str(&format!(
                "[[oauth2_permission_grants]]\napp = \"{NOCONSENT}\"\nconsent_type = \"AllPrincipals\"\nscope = \"openid User.Read\"\n"
            ))
            .unwrap(),
        )
        .unwrap();
    let done = r.rotate("svc-2").await.unwrap();
    assert!(done.warnings.is_empty(), "{:?}", done.warnings);
}

#[tokio::test]
async fn a_certificate_identity_signs_the_account_in_with_an_assertion() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("certapp.p12");
    write_private(&cert, &p12());
    let identity = format!(
        "\n[identities.certapp]\nkind = \"client_certificate\"\ntenant_id = \"contoso\"\nclient_id = \"{CERTAPP}\"\ncertificate_file = {:?}\nauthority_host = \"{{authority}}\"\ngraph_base = \"{{graph}}\"\n",
        cert.display().to_string()
    );
    let r = rig("svc-1", "certapp", &identity).await;
    let done = r.rotate("svc-1").await.unwrap();
    assert!(done.warnings.is_empty(), "{:?}", done.warnings);
    let verified = r
        .audit
        .events()
        .into_iter()
        .find(|e| e.event == EventKind::RotationVerified)
        .unwrap();
    assert_eq!(verified.outcome, Some(Outcome::Success), "{verified:?}");
}

const MANAGED: &str = r#"
[identities.mi]
kind = "managed_identity"

[identities.verifier]
kind = "client_secret"
tenant_id = "contoso.onmicrosoft.com"
client_id = "6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a"
client_secret = "s3cret"
allow_inline_secret = true

[defaults]
verify = true

[[accounts]]
name = "a"
user = "svc-a@contoso.onmicrosoft.com"
identity = "mi"
vault = "https://kv.vault.azure.net/"
secret = "svc-a"
"#;

/// `keyturn check-config` on `text`: the exit code and its output.
fn check_config(text: &str) -> (Option<i32>, String) {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyturn"))
        .args(["check-config", "--config"])
        .arg(f.path())
        .env_remove("KEYTURN_CONFIG")
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
fn check_config_refuses_verify_for_an_identity_that_cannot_sign_a_user_in() {
    let (code, out) = check_config(MANAGED);
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("defaults.verify: account \"a\" verifies its password by signing in, but its identity \"mi\" is kind \"managed_identity\", which cannot sign a user in"),
        "{out}"
    );
    assert!(out.contains("verify_identity"), "{out}");
    // Off for the account: accepted.
    let (code, out) = check_config(&MANAGED.replace(
        "secret = \"svc-a\"\n",
        "secret = \"svc-a\"\nverify = false\n",
    ));
    assert_eq!(code, Some(0), "{out}");
    // Or verified through an identity that can sign users in: accepted.
    let with = MANAGED.replace(
        "kind = \"managed_identity\"\n",
        "kind = \"managed_identity\"\nverify_identity = \"verifier\"\n",
    );
    let (code, out) = check_config(&with);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn a_verify_identity_must_exist_sign_users_in_and_share_the_tenant() {
    for (verify_identity, extra, want) in [
        ("nobody", "", "identities.mi.verify_identity: \"nobody\" is not defined under [identities]"),
        ("other", "\n[identities.other]\nkind = \"azure_cli\"\n", "identities.mi.verify_identity: identity \"other\" is kind \"azure_cli\", which cannot sign a user in either"),
    ] {
        let text = MANAGED.replace(
            "kind = \"managed_identity\"\n",
            &format!("kind = \"managed_identity\"\nverify_identity = {verify_identity:?}\n"),
        ) + extra;
        let (code, out) = check_config(&text);
        assert_eq!(code, Some(64), "{out}");
        assert!(out.contains(want), "{want:?} in {out}");
    }
    // A workload identity in one tenant verifying through an app of another.
    let text = MANAGED
        .replace(
            "kind = \"managed_identity\"\n",
            "kind = \"workload_identity\"\ntenant_id = \"fabrikam.onmicrosoft.com\"\nclient_id = \"1f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a\"\ntoken_file = \"/dev/null\"\nverify_identity = \"verifier\"\n",
        );
    let (code, out) = check_config(&text);
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("identities.mi.verify_identity: identity \"verifier\" is in tenant \"contoso.onmicrosoft.com\", not this identity's \"fabrikam.onmicrosoft.com\""),
        "{out}"
    );
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// A self-signed certificate and its RSA key as PKCS#12 without a password.
fn p12() -> Vec<u8> {
    use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "keyturn-test").unwrap();
    let name = name.build();
    let mut b = x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    openssl::pkcs12::Pkcs12::builder()
        .name("keyturn")
        .pkey(&key)
        .cert(&b.build())
        .build2("")
        .unwrap()
        .to_der()
        .unwrap()
}
