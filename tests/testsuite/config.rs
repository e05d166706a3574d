//! Configuration: every shipped file parses, and each kind of bad input gets a message
//! naming the key and the fix.

use keyturn::config::{load_with_env, ConfigError};
use std::io::Write;
use std::path::Path;

const GOOD: &str = r#"
[identities.rotator]
kind = "client_secret"
tenant_id = "contoso.onmicrosoft.com"
client_id = "6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a"
client_secret = "s3cret"
allow_inline_secret = true

[[accounts]]
name = "a"
user = "svc-a@contoso.onmicrosoft.com"
identity = "rotator"
vault = "https://kv.vault.azure.net/"
secret = "svc-a"
"#;

fn load_str(text: &str) -> Result<keyturn::config::Loaded, ConfigError> {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    load_with_env(f.path(), false)
}

fn problems(text: &str) -> Vec<String> {
    match load_str(text) {
        Ok(_) => vec![],
        Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
    }
}

/// `keyturn check-config` on `path`, with none of the environment that systemd, AKS or the
/// caller's shell may set; `env` adds to it. The exit code and every problem's line.
fn check_config(path: &Path, env: &[(&str, &Path)]) -> (Option<i32>, Vec<String>) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keyturn"));
    cmd.args(["check-config", "--config"])
        .arg(path)
        .env_remove("KEYTURN_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("AZURE_FEDERATED_TOKEN_FILE")
        .env_remove("AZURE_AUTHORITY_HOST");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let problems = err
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .map(str::to_owned)
        .collect();
    (out.status.code(), problems)
}

/// Every shipped configuration file parses. `config/example.toml` is a template: as shipped,
/// `check-config` refuses it naming its placeholders (and the systemd credential it reads
/// only under systemd); with the placeholders replaced and the credential where systemd puts
/// it, it passes. Any other file must pass as it is.
#[test]
fn every_shipped_config_file_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // Emulator scenarios are parsed by the emulator's own tests.
        if path.extension().is_none_or(|e| e != "toml") || name.contains("scenario") {
            continue;
        }
        n += 1;
        if name != "example.toml" {
            load_with_env(&path, false).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            continue;
        }
        let (code, problems) = check_config(&path, &[]);
        assert_eq!(code, Some(64), "{problems:#?}");
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split_once(": ").unwrap().0)
            .collect();
        assert_eq!(
            keys,
            [
                "identities.rotator.tenant_id",
                "identities.rotator.client_id",
                "identities.rotator.client_secret_credential",
            ],
            "{problems:#?}"
        );
        assert!(
            problems[..2]
                .iter()
                .all(|p| p.contains("replace the placeholder")),
            "{problems:#?}"
        );
        assert!(
            problems[2].contains("$CREDENTIALS_DIRECTORY, which is not set"),
            "{problems:#?}"
        );
        // Filled in as a new user would: their ids, the credential where systemd puts it.
        let tmp = tempfile::tempdir().unwrap();
        let filled = std::fs::read_to_string(&path)
            .unwrap()
            .replace(
                "00000000-0000-0000-0000-000000000000",
                "72f988bf-86f1-41af-91ab-2d7cd011db47",
            )
            .replace(
                "11111111-1111-1111-1111-111111111111",
                "6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a",
            );
        let config = tmp.path().join("keyturn.toml");
        std::fs::write(&config, filled).unwrap();
        let credentials = tmp.path().join("credentials");
        std::fs::create_dir(&credentials).unwrap();
        std::fs::write(credentials.join("keyturn-client-secret"), "s3cret").unwrap();
        let (code, problems) = check_config(&config, &[("CREDENTIALS_DIRECTORY", &credentials)]);
        assert_eq!(code, Some(0), "{problems:#?}");
    }
    assert!(n >= 1, "no config file found");
}

/// Two accounts that manage one Entra user in one tenant are refused, naming both: the
/// second's rotation would overwrite the password the first's secret holds (issue 19,
/// item 2). UPNs compare case-insensitively, object ids as ids.
#[test]
fn two_accounts_for_one_entra_user_are_refused() {
    let b = |user: &str| {
        format!(
            "{GOOD}\n[[accounts]]\nname = \"b\"\nuser = {user:?}\nidentity = \"rotator\"\nvault = \"https://kv.vault.azure.net/\"\nsecret = \"svc-b\"\n"
        )
    };
    let p = problems(&b("Svc-A@CONTOSO.onmicrosoft.com"));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].starts_with("accounts[1].user: account \"b\" manages the Entra user \"Svc-A@CONTOSO.onmicrosoft.com\", and so does account \"a\" (accounts[0].user = \"svc-a@contoso.onmicrosoft.com\") in the same tenant")
            && p[0].contains("manage each user with one account"),
        "{p:#?}"
    );
    let by_id = b("0B5C3A1E-2F4D-4E6A-8B7C-9D0E1F2A3B4C").replace(
        "user = \"svc-a@contoso.onmicrosoft.com\"",
        "user = \"0b5c3a1e-2f4d-4e6a-8b7c-9d0e1f2a3b4c\"",
    );
    let p = problems(&by_id);
    assert!(
        p.len() == 1 && p[0].starts_with("accounts[1].user: "),
        "{p:#?}"
    );
    assert!(problems(&b("svc-b@contoso.onmicrosoft.com")).is_empty());
}

#[test]
fn defaults_are_applied() {
    let loaded = load_str(GOOD).unwrap();
    let a = &loaded.accounts[0];
    assert_eq!(a.policy.length, 16);
    assert!(!a.verify);
    assert_eq!(a.schedule.pattern(), "0 3 * * MON");
    assert_eq!(a.vault_identity, "rotator");
    assert_eq!(a.expiry, time::Duration::days(9));
}

/// Each case: a change to the good config, and text its problem must contain.
#[test]
fn bad_configs_name_the_key_and_the_fix() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown top-level key",
            "[deamon]\nstate_dir='/x'\n",
            "deamon",
        ),
        (
            "bad cron",
            "[defaults]\nschedule = 'every monday'\n",
            "defaults.schedule",
        ),
        (
            "bad time zone",
            "[defaults]\ntimezone = 'Mars/Olympus'\n",
            "defaults.timezone",
        ),
        (
            "window too long",
            "[defaults]\nschedule = '0 * * * *'\nwindow = '2h'\n",
            "defaults.window",
        ),
        (
            "policy too short",
            "[defaults.policy]\nlength = 6\n",
            "defaults.policy",
        ),
        (
            "policy impossible",
            "[defaults.policy]\nexclude = '0123456789'\n",
            "digit",
        ),
        (
            "zero concurrency",
            "[daemon]\nmax_concurrent_rotations = 0\n",
            "daemon.max_concurrent_rotations",
        ),
        (
            "bad duration",
            "[daemon]\nshutdown_grace = 'a while'\n",
            "shutdown_grace",
        ),
        (
            "missing CA file",
            "[tls]\nextra_ca_files = ['/nonexistent/ca.pem']\n",
            "tls.extra_ca_files[0]",
        ),
        (
            "zero timeout",
            "[network]\ntimeout = '0s'\n",
            "network.timeout",
        ),
        (
            "bad resolve address",
            "[network.resolve]\n'kv.vault.azure.net' = 'not-an-ip'\n",
            "resolve",
        ),
        (
            "bad audit_stdout",
            "[daemon]\naudit_stdout = 'loud'\n",
            "audit_stdout",
        ),
    ];
    for (what, extra, expect) in cases {
        if expect.is_empty() {
            continue;
        }
        let text = format!("{extra}\n{GOOD}");
        let p = problems(&text);
        assert!(
            p.iter().any(|p| p.contains(expect)),
            "{what}: expected a problem mentioning {expect:?}, got {p:?}"
        );
    }
}

#[test]
fn account_and_identity_problems_are_all_reported_at_once() {
    let text = r#"
[identities.rotator]
kind = "client_secret"
tenant_id = "contoso.onmicrosoft.com"
client_secret = "inline"

[identities.weird]
kind = "password"

[identities.plain]
kind = "client_secret"
tenant_id = "contoso.onmicrosoft.com"
client_id = "6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a"
client_secret_env = "KEYTURN_TEST_SURELY_UNSET_VARIABLE"
authority_host = "http://login.example"

[[accounts]]
name = "a"
user = "u"
identity = "rotator"
vault = "http://kv.vault.azure.net/"
secret = "bad_name!"
colour = "blue"

[[accounts]]
name = "a"
user = ""
identity = "nobody"
vault_identity = "nothing"
vault = "https://kv.vault.azure.net/"
secret = "ok"
schedule = "61 * * * *"
[accounts.policy]
length = 300
"#;
    let p = problems(text);
    let expect = [
        "identities.rotator.client_id: is required",
        "identities.rotator.client_secret: a secret inline in the config file is refused",
        "identities.weird.kind",
        "identities.plain.client_secret_env: environment variable KEYTURN_TEST_SURELY_UNSET_VARIABLE is not set",
        "identities.plain.authority_host",
        "accounts[0].vault",
        "accounts[0].secret",
        "accounts.0.colour",
        "accounts[1].name: account \"a\" is configured twice",
        "accounts[1].user: is required",
        "accounts[1].identity: \"nobody\" is not defined",
        "accounts[1].vault_identity",
        "accounts[1].policy: length 300",
        "accounts[1].schedule",
    ];
    for e in expect {
        assert!(
            p.iter().any(|p| p.contains(e)),
            "missing problem {e:?} in {p:#?}"
        );
    }
}

#[test]
fn a_world_readable_secret_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = GOOD
        .replace(
            "client_secret = \"s3cret\"",
            &format!("client_secret_file = {:?}", secret.to_str().unwrap()),
        )
        .replace("allow_inline_secret = true", "");
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|p| p.contains("client_secret_file") && p.contains("chmod 600")),
        "{p:?}"
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(problems(&text).is_empty());
}

/// A client secret or certificate file that anyone but its owner can read or write, or that
/// belongs to another user, is refused (the on-call group could read the app's credential);
/// 0600 and 0400 owned by the user keyturn runs as (or root) are accepted.
#[test]
fn secret_and_certificate_files_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credential");
    // A certificate the Azure SDK can open (PKCS#12 without a password); as a client
    // secret file, any content will do.
    std::fs::write(&file, p12()).unwrap();
    let secret = GOOD
        .replace(
            "client_secret = \"s3cret\"",
            &format!("client_secret_file = {:?}", file.to_str().unwrap()),
        )
        .replace("allow_inline_secret = true", "");
    let certificate = GOOD
        .replace("kind = \"client_secret\"", "kind = \"client_certificate\"")
        .replace(
            "client_secret = \"s3cret\"",
            &format!("certificate_file = {:?}", file.to_str().unwrap()),
        )
        .replace("allow_inline_secret = true", "");
    for (key, text) in [
        ("client_secret_file", &secret),
        ("certificate_file", &certificate),
    ] {
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(
                problems(text).is_empty(),
                "{key} {mode:04o}: {:?}",
                problems(text)
            );
        }
        for mode in [0o640, 0o660, 0o662, 0o644, 0o604, 0o620, 0o606] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let p = problems(text);
            let want = format!("has mode {mode:04o}");
            assert!(
                p.iter().any(|p| p.contains(key)
                    && p.contains(&want)
                    && p.contains("chmod 600")
                    && p.contains("LoadCredential")),
                "{key} {mode:04o}: {p:?}"
            );
        }
        // Owned by another user (needs root to chown).
        if nix::unistd::geteuid().is_root() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
            let p = problems(text);
            assert!(
                p.iter()
                    .any(|p| p.contains(key) && p.contains("is owned by") && p.contains("65534")),
                "{key} owned by 65534: {p:?}"
            );
            std::os::unix::fs::chown(&file, Some(0), None).unwrap();
        }
    }
    // Both a file and a systemd credential: one only.
    let both = certificate.replace(
        "certificate_file",
        "certificate_credential = \"keyturn-certificate\"\ncertificate_file",
    );
    assert!(
        problems(&both).iter().any(|p| p.contains("only one")),
        "{:?}",
        problems(&both)
    );
    let credential_only = GOOD
        .replace("kind = \"client_secret\"", "kind = \"client_certificate\"")
        .replace(
            "client_secret = \"s3cret\"",
            "certificate_credential = \"keyturn-certificate\"",
        )
        .replace("allow_inline_secret = true", "");
    // Read from $CREDENTIALS_DIRECTORY, which only systemd sets (for the service).
    if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
        let p = problems(&credential_only);
        assert!(
            p.len() == 1
                && p[0].starts_with("identities.rotator.certificate_credential: ")
                && p[0].contains("$CREDENTIALS_DIRECTORY, which is not set"),
            "{p:?}"
        );
    }
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

#[test]
fn a_missing_file_says_how_to_fix_it() {
    let err = load_with_env(Path::new("/nonexistent/keyturn.toml"), false).unwrap_err();
    assert!(err.to_string().contains("--config"), "{err}");
}

#[test]
fn an_empty_key_is_named() {
    // Found by the config_load fuzz target: `'' = '…'` gave a problem with no key.
    let e = keyturn::config::load_str("'' = 'yyyy'", Path::new("x.toml")).unwrap_err();
    let p = e.problems();
    assert!(p.iter().all(|p| !p.key.is_empty()), "{p:?}");
    assert!(
        p.iter()
            .any(|p| p.key == "\"\"" && p.message.contains("unknown key")),
        "{p:?}"
    );
}

#[test]
fn vault_urls_are_normalised_one_way() {
    use keyturn::config::normalize_vault;
    for url in [
        "https://kv.vault.azure.net/",
        "https://kv.vault.azure.net",
        "HTTPS://KV.VAULT.AZURE.NET/",
        "https://kv.vault.azure.net:443/",
        "https://kv.vault.azure.net./",
        " https://kv.vault.azure.net/ ",
    ] {
        assert_eq!(normalize_vault(url), "https://kv.vault.azure.net", "{url}");
    }
    assert_eq!(
        normalize_vault("https://KV.vault.azure.net:8443/"),
        "https://kv.vault.azure.net:8443",
        "another port is another endpoint"
    );
    assert_ne!(
        normalize_vault("https://kv2.vault.azure.net/"),
        normalize_vault("https://kv.vault.azure.net/")
    );
}

#[test]
fn an_account_whose_secret_is_anothers_staging_secret_is_refused() {
    let b = |vault: &str, secret: &str| {
        format!(
            "{GOOD}\n[[accounts]]\nname = \"b\"\nuser = \"svc-b@contoso.onmicrosoft.com\"\nidentity = \"rotator\"\nvault = {vault:?}\nsecret = {secret:?}\n"
        )
    };
    let p = problems(&b("https://KV.vault.azure.net:443", "Svc-A-Pending"));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].starts_with("accounts[1].secret: ")
            && p[0].contains("account \"b\" keeps its password in \"Svc-A-Pending\" (accounts[1].secret)")
            && p[0].contains("account \"a\" writes its staging secret \"svc-a-pending\" (accounts[0].secret = \"svc-a\" + \"-pending\")")
            && p[0].contains("in https://kv.vault.azure.net:"),
        "{p:#?}"
    );
    // Names that only look alike, or the same name in another vault, are fine.
    assert!(problems(&b("https://kv.vault.azure.net/", "svc-a-pend")).is_empty());
    assert!(problems(&b("https://kv.vault.azure.net/", "svc-a-pending-pending")).is_empty());
    assert!(problems(&b("https://other.vault.azure.net/", "svc-a-pending")).is_empty());
}

#[test]
fn every_duration_is_bounded_and_the_bounds_are_documented() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    let mut at_max = String::from("[daemon]\n");
    let mut section = "daemon";
    for (key, max) in keyturn::config::DURATION_MAXIMUMS {
        let shown = humantime::format_duration(*max).to_string();
        let row = format!("| `{key}` | {shown} |");
        assert!(
            docs.contains(&row),
            "docs/configuration.md has no row {row:?}"
        );
        let (table, name) = key.split_once('.').unwrap();
        if table == "accounts[]" {
            continue;
        }
        if table != section {
            at_max.push_str(&format!("[{table}]\n"));
            section = table;
        }
        at_max.push_str(&format!("{name} = {shown:?}\n"));
    }
    // Each maximum itself is accepted (a yearly schedule leaves room for the longest window).
    let at_max = at_max.replace("[defaults]\n", "[defaults]\nschedule = \"0 3 1 1 *\"\n");
    assert_eq!(
        problems(&format!("{at_max}\n{GOOD}")),
        Vec::<String>::new(),
        "{at_max}"
    );
    // One second more is refused, naming the key.
    for (key, max) in keyturn::config::DURATION_MAXIMUMS {
        if key.starts_with("accounts") {
            continue;
        }
        let over = humantime::format_duration(*max + std::time::Duration::from_secs(1)).to_string();
        let name = key.split_once('.').unwrap().1;
        let text = at_max.replace(
            &format!(
                "\n{name} = {:?}\n",
                humantime::format_duration(*max).to_string()
            ),
            &format!("\n{name} = {over:?}\n"),
        );
        assert_ne!(text, at_max, "{key}");
        let p = problems(&format!("{text}\n{GOOD}"));
        assert!(
            p.iter().any(
                |p| p.starts_with(&format!("{key}: ")) && p.contains("longer than the maximum")
            ),
            "{key} = {over}: {p:#?}"
        );
    }
}

/// `keyturn check-config` lists every problem in one fixed order (section by section, as the
/// file is laid out in docs/configuration.md); a problem in every section at once keeps it.
#[test]
fn problems_in_every_section_are_listed_in_a_stable_order() {
    let text = r#"
[daemon]
max_concurrent_rotations = 0
max_concurrent_per_tenant = 0
apply_attempts = 0
shutdown_grace = "2h"
retry_base_delay = "2h"
retry_max_delay = "1h"

[limits]
vault_writes_per_10s = 0
headroom = 0.95

[admin]
socket = "relative.sock"
max_connections = 0

[metrics]
max_connections = 0

[tls]
extra_ca_files = ["/nonexistent/ca.pem"]

[network]
timeout = "0s"

[identities.bad]
kind = "password"

[identities.app]
kind = "client_secret"
authority_host = "http://login.example"

[[accounts]]
name = ""
user = ""
identity = "missing"
vault = "http://kv.vault.azure.net/"
secret = "a b"
"#;
    let keys: Vec<String> = problems(text)
        .iter()
        .map(|p| p.split_once(": ").unwrap().0.to_owned())
        .collect();
    assert_eq!(
        keys,
        [
            "daemon.max_concurrent_rotations",
            "daemon.max_concurrent_per_tenant",
            "limits.vault_writes_per_10s",
            "limits.headroom",
            "daemon.apply_attempts",
            "daemon.shutdown_grace",
            "daemon.retry_base_delay",
            "admin.socket",
            "admin.max_connections",
            "metrics.max_connections",
            "tls.extra_ca_files[0]",
            "network.timeout",
            "identities.app.tenant_id",
            "identities.app.client_id",
            "identities.app.client_secret_file",
            "identities.app.authority_host",
            "identities.bad.kind",
            "accounts[0].name",
            "accounts[0].user",
            "accounts[0].secret",
            "accounts[0].vault",
            "accounts[0].identity",
        ],
        "{:#?}",
        problems(text)
    );
}

#[test]
fn check_config_refuses_an_unknown_role_with_exit_64_naming_the_key_and_close_matches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyturn.toml");
    std::fs::write(
        &path,
        "[identities.rotator]\nkind = \"managed_identity\"\n\n[identities.operator]\nkind = \"azure_cli\"\n\n[[accounts]]\nname = \"a\"\nuser = \"a@contoso.onmicrosoft.com\"\nidentity = \"rotator\"\nvault = \"https://kv.vault.azure.net/\"\nsecret = \"a\"\nroles = [\"preset:coreview\", \"Privileged Role Admin\"]\nprovision_identity = \"operator\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyturn"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("accounts[0].roles[1]"), "{stderr}");
    assert!(
        stderr.contains("did you mean \"Privileged Role Administrator\""),
        "{stderr}"
    );
    // Fixed, it passes; provisioning with the daemon's own identity is warned about.
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("Privileged Role Admin\"", "Privileged Role Administrator\"")
            .replace(
                "provision_identity = \"operator\"",
                "provision_identity = \"rotator\"",
            ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyturn"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("warning: accounts[0].provision_identity"),
        "{stdout}"
    );
}
