//! Bad and dangerous configurations, as a table, through the real `keyturn check-config`:
//! each exits 64 and names the key (and, where there is one, the fix). SIGHUP with a bad
//! file keeping the old configuration is tested in tests/testsuite/admin.rs.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_keyturn");

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

/// (what, config text, text the report must contain)
fn cases(dir: &Path) -> Vec<(&'static str, String, String)> {
    let add = |extra: &str| format!("{extra}\n{GOOD}");
    let swap = |from: &str, to: &str| {
        assert!(GOOD.contains(from), "{from}");
        GOOD.replace(from, to)
    };
    let open_file = dir.join("open-secret");
    std::fs::write(&open_file, "s").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret_file_line = format!("client_secret_file = {:?}", open_file.display().to_string());
    let second_account = "\n[[accounts]]\nname = \"b\"\nuser = \"svc-b@contoso.onmicrosoft.com\"\nidentity = \"rotator\"\nvault = \"https://kv.vault.azure.net/\"\nsecret = \"svc-b\"\n";
    let v = |a: &'static str, t: String, k: &str| (a, t, k.to_owned());
    vec![
        v("unknown section", add("[deamon]\nstate_dir = '/x'"), "deamon"),
        v("ha without lease_url", add("[ha]\nidentity = 'rotator'"), "ha.lease_url: is missing"),
        v("ha lease_url over http", add("[ha]\nlease_url = 'http://a.blob.core.windows.net/c/b'\nidentity = 'rotator'"), "must use https"),
        v("ha lease_url without a blob", add("[ha]\nlease_url = 'https://a.blob.core.windows.net/c'\nidentity = 'rotator'"), "does not name a container and a blob"),
        v("ha lease_url with a SAS", add("[ha]\nlease_url = 'https://a.blob.core.windows.net/c/b?sv=2024&sig=x'\nidentity = 'rotator'"), "SAS"),
        v("audit blob without url", add("[daemon.audit_blob]\nidentity = 'rotator'"), "daemon.audit_blob.url: is missing"),
        v("audit blob url with a SAS", add("[daemon.audit_blob]\nurl = 'https://a.blob.core.windows.net/c/b?sig=x'\nidentity = 'rotator'"), "keyturn signs in with daemon.audit_blob.identity"),
        v("audit blob identity unknown", add("[daemon.audit_blob]\nurl = 'https://a.blob.core.windows.net/c/b'\nidentity = 'nobody'"), "daemon.audit_blob.identity: \"nobody\" is not an identity"),
        v("audit blob unknown key", add("[daemon.audit_blob]\nurl = 'https://a.blob.core.windows.net/c/b'\nidentity = 'rotator'\ncontainer = 'x'"), "container"),
        v("ha identity unknown", add("[ha]\nlease_url = 'https://a.blob.core.windows.net/c/b'\nidentity = 'nobody'"), "ha.identity: \"nobody\" is not an identity"),
        v("ha lease too short", add("[ha]\nlease_url = 'https://a.blob.core.windows.net/c/b'\nidentity = 'rotator'\nlease_duration = '10s'"), "ha.lease_duration: 10s is not allowed"),
        v("ha lease too long", add("[ha]\nlease_url = 'https://a.blob.core.windows.net/c/b'\nidentity = 'rotator'\nlease_duration = '90s'"), "15 to 60 whole seconds"),
        v("unknown daemon key", add("[daemon]\nstate_dri = '/x'"), "daemon.state_dri"),
        v("unknown account key", swap("secret = \"svc-a\"", "secret = \"svc-a\"\ncolour = \"blue\""), "accounts.0.colour"),
        v("unknown policy key", add("[defaults.policy]\nlenght = 20"), "defaults.policy.lenght"),
        v("cron is prose", add("[defaults]\nschedule = 'every monday'"), "defaults.schedule"),
        v("cron out of range", add("[defaults]\nschedule = '61 * * * *'"), "defaults.schedule"),
        v("unknown time zone", add("[defaults]\ntimezone = 'Mars/Olympus'"), "defaults.timezone"),
        v("window as long as the period", add("[defaults]\nschedule = '0 * * * *'\nwindow = '1h'"), "defaults.window"),
        v("password too short", add("[defaults.policy]\nlength = 6"), "length 6"),
        v("password too long", add("[defaults.policy]\nlength = 300"), "length 300"),
        v("policy excludes every digit", add("[defaults.policy]\nexclude = '0123456789'"), "digit"),
        v("policy excludes a character Entra never uses", add("[defaults.policy]\nexclude = 'é'"), "exclude"),
        v(
            "policy allows fewer than 3 classes",
            add(&format!(
                "[defaults.policy]\nexclude = {:?}\nrequire_digit = false\nrequire_symbol = false",
                [keyturn::password::DIGITS, keyturn::password::SYMBOLS].concat()
            )),
            "3 of the 4",
        ),
        v("secret inline without consent", swap("allow_inline_secret = true", ""), "identities.rotator.client_secret"),
        v("world-readable secret file", swap("client_secret = \"s3cret\"\nallow_inline_secret = true", &secret_file_line), "chmod 600"),
        v("missing secret file", swap("client_secret = \"s3cret\"\nallow_inline_secret = true", "client_secret_file = \"/nonexistent/secret\""), "cannot read /nonexistent/secret"),
        v("two secret sources", swap("allow_inline_secret = true", "allow_inline_secret = true\nclient_secret_env = \"HOME\""), "only one"),
        v("no secret source", swap("client_secret = \"s3cret\"\nallow_inline_secret = true", ""), "needs one of"),
        v("secret env var unset", swap("client_secret = \"s3cret\"\nallow_inline_secret = true", "client_secret_env = \"KEYTURN_SURELY_UNSET_FOR_TESTS\""), "KEYTURN_SURELY_UNSET_FOR_TESTS is not set"),
        v("unknown identity kind", swap("kind = \"client_secret\"", "kind = \"password\""), "identities.rotator.kind"),
        v("missing tenant", swap("tenant_id = \"contoso.onmicrosoft.com\"\n", ""), "identities.rotator.tenant_id"),
        v("missing client id", swap("client_id = \"6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a\"\n", ""), "identities.rotator.client_id"),
        v("certificate kind without a file", swap("kind = \"client_secret\"\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = \"6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a\"\nclient_secret = \"s3cret\"\nallow_inline_secret = true", "kind = \"client_certificate\"\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = \"6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a\""), "certificate_file"),
        v("http authority", swap("allow_inline_secret = true", "allow_inline_secret = true\nauthority_host = \"http://login.example\""), "identities.rotator.authority_host"),
        v("http vault", swap("https://kv.vault.azure.net/", "http://kv.vault.azure.net/"), "accounts[0].vault"),
        v("vault is not a URL", swap("https://kv.vault.azure.net/", "kv"), "accounts[0].vault"),
        v("secret name with bad characters", swap("secret = \"svc-a\"", "secret = \"svc_a!\""), "accounts[0].secret"),
        v("secret name too long", swap("secret = \"svc-a\"", &format!("secret = {:?}", "s".repeat(125))), "accounts[0].secret"),
        v("empty user", swap("user = \"svc-a@contoso.onmicrosoft.com\"", "user = \"\""), "accounts[0].user"),
        v("unknown identity", swap("identity = \"rotator\"", "identity = \"ghost\""), "accounts[0].identity"),
        v("unknown vault identity", swap("identity = \"rotator\"", "identity = \"rotator\"\nvault_identity = \"ghost\""), "accounts[0].vault_identity"),
        v("duplicate account", format!("{GOOD}{}", second_account.replace("name = \"b\"", "name = \"a\"")), "configured twice"),
        v("two accounts, one secret", format!("{GOOD}{}", second_account.replace("secret = \"svc-b\"", "secret = \"svc-a\"")), "these are one secret"),
        v("a secret that is another account's staging secret", format!("{GOOD}{}", second_account.replace("secret = \"svc-b\"", "secret = \"svc-a-pending\"")), "accounts[1].secret"),
        v("vault URL with a path", swap("https://kv.vault.azure.net/", "https://kv.vault.azure.net/secrets/"), "accounts[0].vault"),
        v("huge expiry grace", add("[defaults]\nexpiry_grace = '18446744073709551615s'"), "defaults.expiry_grace"),
        v("expiry grace above a year", add("[defaults]\nexpiry_grace = '400d'"), "at most 1year"),
        v("retry delays of ten thousand years", add("[daemon]\nretry_base_delay = '10000y'\nretry_max_delay = '10000y'"), "daemon.retry_base_delay"),
        v("retry max delay above a week", add("[daemon]\nretry_max_delay = '8d'"), "daemon.retry_max_delay"),
        v("drift interval above 30 days", add("[daemon]\ndrift_check_interval = '31d'"), "daemon.drift_check_interval"),
        v("shutdown grace above an hour", add("[daemon]\nshutdown_grace = '2h'"), "daemon.shutdown_grace"),
        v("unclean start delay above an hour", add("[daemon]\nunclean_start_delay = '2h'"), "daemon.unclean_start_delay"),
        v("admin request timeout above 10 minutes", add("[admin]\nrequest_timeout = '11m'"), "admin.request_timeout"),
        v("network timeout above 10 minutes", add("[network]\ntimeout = '1h'"), "network.timeout"),
        v("SDK retry budget above an hour", add("[network]\nsdk_retry_budget = '2h'"), "network.sdk_retry_budget"),
        v("default window above 30 days", add("[defaults]\nschedule = '0 3 1 1 *'\nwindow = '40d'"), "defaults.window"),
        v("account window above 30 days", add("[defaults]\nschedule = '0 3 1 1 *'").replace("secret = \"svc-a\"", "secret = \"svc-a\"\nwindow = '40d'"), "accounts[0].window"),
        v("no account", GOOD[..GOOD.find("[[accounts]]").unwrap()].to_owned(), "no account is configured"),
        v("zero concurrency", add("[daemon]\nmax_concurrent_rotations = 0"), "daemon.max_concurrent_rotations"),
        v("zero apply attempts", add("[daemon]\napply_attempts = 0"), "daemon.apply_attempts"),
        v("retry base above max", add("[daemon]\nretry_base_delay = '2h'\nretry_max_delay = '1h'"), "daemon.retry_base_delay"),
        v("duration in prose", add("[daemon]\nshutdown_grace = 'a while'"), "shutdown_grace"),
        v("number as text", add("[daemon]\nmax_concurrent_rotations = 'eight'"), "max_concurrent_rotations"),
        v("bad audit_stdout", add("[daemon]\naudit_stdout = 'loud'"), "audit_stdout"),
        v("missing CA file", add("[tls]\nextra_ca_files = ['/nonexistent/ca.pem']"), "tls.extra_ca_files[0]"),
        v("zero timeout", add("[network]\ntimeout = '0s'"), "network.timeout"),
        v("resolve to a non-address", add("[network.resolve]\n'kv.vault.azure.net' = 'localhost'"), "resolve"),
        v("relative admin socket", add("[admin]\nsocket = 'admin.sock'"), "admin.socket"),
        v("admin group that does not exist", add("[admin]\ngroup = 'keyturn-no-such-group'"), "admin.group"),
        v("no metrics connections", add("[metrics]\nmax_connections = 0"), "metrics.max_connections: must be from 1 to 1000"),
        v("more metrics connections than files", add("[metrics]\nmax_connections = 100000"), "metrics.max_connections: must be from 1 to 1000"),
        v("not TOML at all", "this is = = not toml [".to_owned(), "keyturn.toml"),
        // Issue 19, item 2: one Entra user, two accounts.
        v("two accounts for one UPN", format!("{GOOD}{}", second_account.replace("svc-b@contoso.onmicrosoft.com", "SVC-A@Contoso.onmicrosoft.com")), "accounts[1].user: account \"b\" manages the Entra user \"SVC-A@Contoso.onmicrosoft.com\", and so does account \"a\" (accounts[0].user"),
        v("two accounts for one object id", format!("{}{}", swap("svc-a@contoso.onmicrosoft.com", "0b5c3a1e-2f4d-4e6a-8b7c-9d0e1f2a3b4c"), second_account.replace("svc-b@contoso.onmicrosoft.com", "0B5C3A1E-2F4D-4E6A-8B7C-9D0E1F2A3B4C")), "and so does account \"a\""),
        // Issue 19, item 3: what cannot run.
        v("placeholder tenant", swap("tenant_id = \"contoso.onmicrosoft.com\"", "tenant_id = \"00000000-0000-0000-0000-000000000000\""), "identities.rotator.tenant_id: \"00000000-0000-0000-0000-000000000000\" is the example's placeholder: replace the placeholder"),
        v("placeholder client id", swap("6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a", "11111111-1111-1111-1111-111111111111"), "identities.rotator.client_id: \"11111111-1111-1111-1111-111111111111\" is the example's placeholder: replace the placeholder"),
        v("client id not a GUID", swap("6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a", "keyturn-rotator"), "identities.rotator.client_id: \"keyturn-rotator\" is not a GUID"),
        v("tenant neither GUID nor domain", swap("tenant_id = \"contoso.onmicrosoft.com\"", "tenant_id = \"contoso\""), "identities.rotator.tenant_id: \"contoso\" is neither a tenant id"),
        v("tenant is the multi-tenant alias", swap("tenant_id = \"contoso.onmicrosoft.com\"", "tenant_id = \"organizations\""), "multi-tenant alias"),
        v("workload identity without a token file", swap("kind = \"client_secret\"", "kind = \"workload_identity\"").replace("client_secret = \"s3cret\"\nallow_inline_secret = true", ""), "identities.rotator.token_file: kind \"workload_identity\" needs the federated token file"),
        v("workload identity with a missing token file", swap("kind = \"client_secret\"", "kind = \"workload_identity\"").replace("client_secret = \"s3cret\"\nallow_inline_secret = true", "token_file = \"/nonexistent/token\""), "identities.rotator.token_file: cannot read the federated token file /nonexistent/token"),
        v("systemd credential without CREDENTIALS_DIRECTORY", swap("client_secret = \"s3cret\"\nallow_inline_secret = true", "client_secret_credential = \"keyturn-client-secret\""), "identities.rotator.client_secret_credential: the systemd credential \"keyturn-client-secret\" is read from $CREDENTIALS_DIRECTORY, which is not set"),
        v("certificate credential without CREDENTIALS_DIRECTORY", swap("kind = \"client_secret\"", "kind = \"client_certificate\"").replace("client_secret = \"s3cret\"\nallow_inline_secret = true", "certificate_credential = \"keyturn-certificate\""), "identities.rotator.certificate_credential: the systemd credential"),
        v("password-protected certificate", certificate_config(&private_file(dir, "protected.p12", &p12("hunter2"))), "cannot be opened without a password"),
        v("PEM certificate", certificate_config(&private_file(dir, "cert.pem", &pem())), "is PEM"),
        v("certificate that is not a certificate", certificate_config(&private_file(dir, "junk.p12", b"not a certificate")), "is not a PKCS#12"),
    ]
}

/// [`GOOD`] with a `client_certificate` identity reading `file`.
fn certificate_config(file: &Path) -> String {
    GOOD.replace("kind = \"client_secret\"", "kind = \"client_certificate\"")
        .replace(
            "client_secret = \"s3cret\"\nallow_inline_secret = true",
            &format!("certificate_file = {:?}", file.display().to_string()),
        )
}

/// `bytes` in `dir/name` at mode 0600.
fn private_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A self-signed certificate and its RSA key.
fn certificate() -> (
    openssl::pkey::PKey<openssl::pkey::Private>,
    openssl::x509::X509,
) {
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
    (key, b.build())
}

/// The certificate and its key as PKCS#12, protected by `password` ("" for none).
fn p12(password: &str) -> Vec<u8> {
    let (key, cert) = certificate();
    openssl::pkcs12::Pkcs12::builder()
        .name("keyturn")
        .pkey(&key)
        .cert(&cert)
        .build2(password)
        .unwrap()
        .to_der()
        .unwrap()
}

/// The certificate and its key as PEM.
fn pem() -> Vec<u8> {
    let (key, cert) = certificate();
    [
        cert.to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    ]
    .concat()
}

/// A PKCS#12 file without a password, as the Azure SDK reads it, is accepted.
#[test]
fn a_certificate_the_sdk_can_open_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let file = private_file(dir.path(), "keyturn.p12", &p12(""));
    let (code, err) = check_config(dir.path(), &certificate_config(&file));
    assert_eq!(code, Some(0), "{err}");
    // And through systemd's credential folder.
    let text = certificate_config(&file).replace(
        &format!("certificate_file = {:?}", file.display().to_string()),
        "certificate_credential = \"keyturn.p12\"",
    );
    let path = dir.path().join("keyturn.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("KEYTURN_CONFIG")
        .env("CREDENTIALS_DIRECTORY", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same user under two spellings that only Graph can tie together (a UPN and an object
/// id), or the same UPN in two tenants, is not refused offline.
#[test]
fn one_user_per_account_is_judged_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let other_tenant = format!(
        "{GOOD}\n[identities.fabrikam]\nkind = \"client_secret\"\ntenant_id = \"fabrikam.onmicrosoft.com\"\nclient_id = \"6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a\"\nclient_secret = \"s3cret\"\nallow_inline_secret = true\n\n[[accounts]]\nname = \"b\"\nuser = \"svc-a@contoso.onmicrosoft.com\"\nidentity = \"fabrikam\"\nvault = \"https://kv.vault.azure.net/\"\nsecret = \"svc-b\"\n"
    );
    let (code, err) = check_config(dir.path(), &other_tenant);
    assert_eq!(code, Some(0), "{err}");
    // The same tenant through a second identity is the same user.
    let same_tenant = other_tenant.replace("fabrikam.onmicrosoft.com", "Contoso.onmicrosoft.com");
    let (code, err) = check_config(dir.path(), &same_tenant);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("accounts[1].user") && err.contains("account \"a\""),
        "{err}"
    );
}

#[test]
fn every_bad_config_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases(dir.path());
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (what, text, expect) in &cases {
        let path = dir.path().join("keyturn.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .env_remove("KEYTURN_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .env_remove("AZURE_AUTHORITY_HOST")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(64) {
            failures.push(format!("{what}: exit {:?}\n{err}", out.status.code()));
        } else if !err.contains(expect.as_str()) {
            failures.push(format!("{what}: no {expect:?} in\n{err}"));
        }
    }
    // The good base passes, so every failure above is the case's own.
    let path = dir.path().join("keyturn.toml");
    std::fs::write(&path, GOOD).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// An inline client secret (`allow_inline_secret`, demos and tests) in a configuration file
/// its group or other users can read is accepted with a warning naming the risk and the fix;
/// at 0600 there is no warning.
#[test]
fn an_inline_secret_in_a_readable_config_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyturn.toml");
    std::fs::write(&path, GOOD).unwrap();
    let check = || {
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .env_remove("KEYTURN_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .env_remove("AZURE_AUTHORITY_HOST")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for mode in [0o640, 0o644] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = check();
        assert!(
            err.contains("identities.rotator.client_secret is inline")
                && err.contains("client_secret_credential"),
            "{mode:o}: {err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = check();
    assert!(!err.contains("is inline"), "{err}");
}

fn check_config(dir: &Path, text: &str) -> (Option<i32>, String) {
    let path = dir.join("keyturn.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("KEYTURN_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("AZURE_FEDERATED_TOKEN_FILE")
        .env_remove("AZURE_AUTHORITY_HOST")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Account "b" with `secret` in `vault`, after [`GOOD`]'s account "a" (secret "svc-a").
fn with_b(vault: &str, secret: &str) -> String {
    format!(
        "{GOOD}\n[[accounts]]\nname = \"b\"\nuser = \"svc-b@contoso.onmicrosoft.com\"\nidentity = \"rotator\"\nvault = {vault:?}\nsecret = {secret:?}\n"
    )
}

#[test]
fn accounts_whose_secrets_are_one_key_vault_secret_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    // b's live secret is a's staging secret, however the names and the vault URL are spelt
    // (Key Vault compares names case-insensitively; the URLs are one vault).
    for vault in [
        "https://kv.vault.azure.net/",
        "https://kv.vault.azure.net",
        "HTTPS://KV.Vault.Azure.Net:443/",
        "https://kv.vault.azure.net./",
    ] {
        for secret in ["svc-a-pending", "SVC-A-Pending"] {
            let (code, err) = check_config(dir.path(), &with_b(vault, secret));
            assert_eq!(code, Some(64), "{vault} {secret}: {err}");
            for needle in [
                "accounts[1].secret",
                "account \"b\"",
                "accounts[0].secret",
                "account \"a\"",
                "staging secret \"svc-a-pending\"",
            ] {
                assert!(
                    err.contains(needle),
                    "{vault} {secret}: no {needle:?} in\n{err}"
                );
            }
        }
    }
    // The other way round: a's live secret is b's staging secret.
    let text = with_b("https://kv.vault.azure.net/", "svc-b").replace("svc-a\"", "svc-b-PENDING\"");
    let (code, err) = check_config(dir.path(), &text);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("accounts[0].secret") && err.contains("accounts[1].secret"),
        "{err}"
    );
    // The same names in two vaults are two secrets.
    let (code, err) = check_config(
        dir.path(),
        &with_b("https://other.vault.azure.net/", "svc-a-pending"),
    );
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn keyturn_run_refuses_a_configuration_check_config_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyturn.toml");
    let text = format!(
        "[daemon]\nstate_dir = {:?}\naudit_log = {:?}\n[admin]\nsocket = \"\"\n{}",
        dir.path().join("state").display().to_string(),
        dir.path().join("audit.jsonl").display().to_string(),
        with_b("https://kv.vault.azure.net/", "svc-a-pending")
    );
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("KEYTURN_CONFIG")
        .env("KEYTURN_ALLOW_ROOT", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A daemon that accepted the file would run on: stop it rather than hang the suite.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keyturn run accepted the configuration and kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("accounts[1].secret") && err.contains("accounts[0].secret"),
        "{err}"
    );
}
