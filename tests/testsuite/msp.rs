//! An MSP's configuration (issue 19, item 6; `docs/msp.md`): one included file per customer
//! tenant, loaded, validated, named in every problem, and reloaded.

use keyturn::config::{load_with_env, ConfigError};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The multi-tenant app's client id: one app, consented in every customer tenant.
const APP: &str = "6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a";

/// Customer `i`'s tenant id.
fn tenant_id(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i + 1, i + 1)
}

/// The main file: daemon settings and `include`, no identities or accounts.
fn main_file(dir: &Path, include: &str) -> PathBuf {
    let secret = dir.join("app-secret");
    std::fs::write(&secret, "s3cret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = dir.join("keyturn.toml");
    std::fs::write(
        &path,
        format!(
            "include = [{include:?}]\n\n[daemon]\nstate_dir = {:?}\naudit_log = {:?}\n\n[admin]\nsocket = \"\"\n",
            dir.join("state").display().to_string(),
            dir.join("audit.jsonl").display().to_string(),
        ),
    )
    .unwrap();
    path
}

/// Customer `i`'s file: its identity (the app in its tenant) and its one account.
fn tenant_file(dir: &Path, i: usize) -> String {
    format!(
        "[identities.t{i:04}]\nkind = \"client_secret\"\ntenant_id = {:?}\nclient_id = {APP:?}\nclient_secret_file = {:?}\n\n[[accounts]]\nname = \"t{i:04}-admin\"\nuser = \"svc-admin@t{i:04}.onmicrosoft.com\"\nidentity = \"t{i:04}\"\nvault = \"https://kv-msp.vault.azure.net/\"\nsecret = \"t{i:04}-admin\"\n",
        tenant_id(i),
        dir.join("app-secret").display().to_string(),
    )
}

fn write_tenants(dir: &Path, n: usize) {
    let d = dir.join("tenants.d");
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..n {
        std::fs::write(d.join(format!("t{i:04}.toml")), tenant_file(dir, i)).unwrap();
    }
}

fn problems(path: &Path) -> Vec<String> {
    match load_with_env(path, false) {
        Ok(_) => vec![],
        Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
    }
}

fn check_config(path: &Path) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyturn"))
        .args(["check-config", "--config"])
        .arg(path)
        .env_remove("KEYTURN_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("AZURE_AUTHORITY_HOST")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 1,000 customer tenants, one file each (one identity, one account): loaded and validated,
/// and `keyturn check-config` says so. The time it takes is printed (docs/benchmarks.md).
#[test]
fn a_thousand_tenant_files_load_and_validate() {
    let dir = tempfile::tempdir().unwrap();
    let main = main_file(dir.path(), "tenants.d/*.toml");
    write_tenants(dir.path(), 1000);

    let started = Instant::now();
    let loaded = load_with_env(&main, false).unwrap_or_else(|e| panic!("{e}"));
    let in_process = started.elapsed();
    assert_eq!(loaded.accounts.len(), 1000);
    assert_eq!(loaded.config.identities.len(), 1000);
    assert_eq!(loaded.includes.len(), 1000);
    // In path order, so the accounts come in the files' order.
    assert_eq!(loaded.accounts[0].name, "t0000-admin");
    assert_eq!(loaded.accounts[999].name, "t0999-admin");
    assert_eq!(
        loaded.config.identities["t0123"].tenant_id.as_deref(),
        Some(tenant_id(123).as_str())
    );

    let started = Instant::now();
    let (code, out, err) = check_config(&main);
    let process = started.elapsed();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with(&format!(
            "{}: OK, 1000 account(s), 1000 identity(ies), 1000 included file(s)",
            main.display()
        )),
        "{out}"
    );
    eprintln!(
        "1,000 tenant files: config::load {in_process:?}, `keyturn check-config` {process:?} ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}

/// A problem in an included file is named with that file's path and its key there, and
/// accounts other problems mention are named the same way.
#[test]
fn a_problem_in_an_included_file_names_the_file_and_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let main = main_file(dir.path(), "tenants.d/*.toml");
    write_tenants(dir.path(), 3);
    let d = dir.path().join("tenants.d");
    let bad = d.join("t0001.toml");
    let text = tenant_file(dir.path(), 1)
        .replace(
            &format!("client_id = {APP:?}"),
            "client_id = \"not-a-guid\"",
        )
        .replace(
            "secret = \"t0001-admin\"",
            "secret = \"t0001-admin\"\nschedule = \"every tuesday\"",
        );
    std::fs::write(&bad, text).unwrap();
    // t0002 manages t0000's user: the message names the other account by its file.
    let other = tenant_file(dir.path(), 2).replace(
        "user = \"svc-admin@t0002.onmicrosoft.com\"",
        "user = \"svc-admin@t0000.onmicrosoft.com\"",
    );
    let other = other.replace(&tenant_id(2), &tenant_id(0));
    std::fs::write(d.join("t0002.toml"), other).unwrap();

    // An editor's hidden lock file beside them is not read.
    std::fs::write(d.join(".#t0001.toml"), "not toml at all [").unwrap();
    let found = problems(&main);
    assert!(!found.iter().any(|p| p.contains(".#t0001")), "{found:#?}");
    let at = |file: &str, key: &str| format!("{}: {key}: ", d.join(file).display());
    assert!(
        found.iter().any(
            |p| p.starts_with(&at("t0001.toml", "identities.t0001.client_id"))
                && p.contains("is not a GUID")
        ),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with(&at("t0001.toml", "accounts[0].schedule"))),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|p| p.contains(&format!(
            "{}: accounts[0].user",
            d.join("t0000.toml").display()
        ))),
        "{found:#?}"
    );
    // Nothing is reported under the merged list's indices.
    assert!(
        !found.iter().any(|p| p.starts_with("accounts[")),
        "{found:#?}"
    );

    // The same through the command: exit 64, the lines name the file.
    let (code, _, err) = check_config(&main);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains(&at("t0001.toml", "identities.t0001.client_id")),
        "{err}"
    );
}

/// An included file holds identities and accounts only; a name defined twice is refused; a
/// file named without a pattern must exist.
#[test]
fn what_an_included_file_may_hold() {
    let dir = tempfile::tempdir().unwrap();
    let main = main_file(dir.path(), "tenants.d/*.toml");
    write_tenants(dir.path(), 2);
    let d = dir.path().join("tenants.d");
    let first = d.join("t0000.toml");
    let text = std::fs::read_to_string(&first).unwrap();
    std::fs::write(&first, format!("[daemon]\nstate_dir = \"/tmp\"\n\n{text}")).unwrap();
    std::fs::write(
        d.join("t0001.toml"),
        tenant_file(dir.path(), 1).replace("[identities.t0001]", "[identities.t0000]"),
    )
    .unwrap();
    let found = problems(&main);
    assert!(
        found.iter().any(|p| p.starts_with(&format!(
            "{}: daemon: an included file holds only",
            first.display()
        ))),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|p| p.starts_with(&format!(
            "{}: identities.t0000: the identity \"t0000\" is defined in {} too",
            d.join("t0001.toml").display(),
            first.display()
        ))),
        "{found:#?}"
    );

    let missing = main_file(dir.path(), "tenants.d/gone.toml");
    let found = problems(&missing);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("include[0]: ") && p.contains("gone.toml does not exist")),
        "{found:#?}"
    );

    // Text has no folder: an include there is refused, not read from the working folder.
    let e = keyturn::config::load_str("include = [\"*.toml\"]", Path::new("x.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Invalid { .. }));
    assert_eq!(e.problems()[0].key, "include");
}

/// The TOML block of `docs/msp.md` whose first line is `# {marker}`.
fn doc_block(doc: &str, marker: &str) -> String {
    let start = doc
        .find(&format!("```toml\n# {marker}\n"))
        .unwrap_or_else(|| panic!("docs/msp.md has no block {marker}"));
    let body = &doc[start + "```toml\n".len()..];
    body[..body.find("```").unwrap()].to_owned()
}

/// `docs/msp.md`'s layout, as written there: the main file and a customer's file load and
/// validate (with the certificate they name made in a folder of the test's own).
#[test]
fn the_msp_page_examples_load() {
    use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/msp.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = format!("{}/", dir.path().display());
    let main = doc_block(&doc, "msp-main").replace("/etc/keyturn/", &root);
    let tenant = doc_block(&doc, "msp-tenant").replace("/etc/keyturn/", &root);
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "keyturn-msp").unwrap();
    let name = name.build();
    let mut b = x509::X509Builder::new().unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(365).unwrap())
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
    let p12 = dir.path().join("msp-app.p12");
    std::fs::write(&p12, der).unwrap();
    std::fs::set_permissions(&p12, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = dir.path().join("keyturn.toml");
    std::fs::write(&path, main).unwrap();
    std::fs::create_dir(dir.path().join("tenants.d")).unwrap();
    std::fs::write(dir.path().join("tenants.d/contoso.toml"), tenant).unwrap();
    let loaded = load_with_env(&path, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.includes.len(), 1);
    assert_eq!(loaded.accounts.len(), 1);
    assert_eq!(loaded.accounts[0].vault_identity, "msp");
    assert_eq!(
        loaded.config.daemon.audit_retention,
        Some(std::time::Duration::from_secs(400 * 86400))
    );
}

/// `daemon.audit_retention` takes at least a day (a shorter one would remove audit evidence
/// within hours) and at most ten years.
#[test]
fn audit_retention_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let main = main_file(dir.path(), "tenants.d/*.toml");
    write_tenants(dir.path(), 1);
    let text = std::fs::read_to_string(&main).unwrap();
    for (value, ok) in [
        ("1h", false),
        ("1day", true),
        ("400days", true),
        ("11years", false),
    ] {
        std::fs::write(
            &main,
            text.replace(
                "[daemon]\n",
                &format!("[daemon]\naudit_retention = {value:?}\n"),
            ),
        )
        .unwrap();
        let found = problems(&main);
        assert_eq!(found.is_empty(), ok, "{value}: {found:#?}");
        if !ok {
            assert!(
                found[0].starts_with("daemon.audit_retention: "),
                "{found:#?}"
            );
        }
    }
}
