//! Microsoft's JavaScript SDKs (`@azure/identity`, `@azure/keyvault-secrets`) against the
//! emulator: `tests/sdk_js/keyvault.test.mjs` under `node --test`, with the vault's real URL
//! (`https://keyturn-demo.vault.azure.net/`) and the challenge-resource check on.
//!
//! The packages are installed with `npm ci` from the committed `package.json` and
//! `package-lock.json` into `<target>/sdk-js/`, and installed again only when one of those two
//! files changes. Skipped, with the reason printed, only when `node` or `npm` is missing.

use crate::common::*;
use keyturn_emulator::testkit;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const FILES: [&str; 4] = [
    "package.json",
    "package-lock.json",
    "resolver.cjs",
    "keyvault.test.mjs",
];

/// `<target>/sdk-js` with the test files and a `node_modules` matching the lock file.
fn prepare() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk_js");
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let cache = tmp.parent().unwrap_or(tmp).join("sdk-js");
    if let Err(e) = testkit::npm_ci_cached("sdk_js", &src, &cache, &FILES) {
        panic!("{e}");
    }
    cache
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_sdks_work_against_the_emulator() {
    if !testkit::node_and_npm() {
        eprintln!("SKIPPED sdk_js: `node` and `npm` must both be on PATH (Node 20 or later) to run Microsoft's JavaScript SDKs against the emulator");
        return;
    }
    let dir = tokio::task::spawn_blocking(prepare)
        .await
        .expect("prepare the JavaScript packages");
    let emu = start().await;
    let ca = dir.join("emulator-ca.pem");
    std::fs::write(&ca, emu.ca_pem()).expect("write the CA");
    let port = emu.addr().port();
    let mut cmd = Command::new("node");
    cmd.args(["--require", "./resolver.cjs", "--test", "keyvault.test.mjs"])
        .current_dir(&dir)
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .env("KEYTURN_EMULATOR_PORT", port.to_string())
        .env("KT_TENANT", TENANT)
        .env("KT_AUTHORITY_HOST", format!("https://localhost:{port}"))
        .env("KT_VAULT_URL", format!("https://{VAULT}.vault.azure.net/"))
        .env("KT_CLIENT_ID", ROTATOR)
        .env("KT_CLIENT_SECRET", ROTATOR_SECRET)
        .env_remove("AZURE_AUTHORITY_HOST")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy");
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join node")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "sdk_js: node --test took {:.1}s\n{stdout}{}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the JavaScript SDK tests failed (output above)"
    );
    assert!(stdout.contains("# fail 0"), "node --test reported failures");
    emu.shutdown().await;
}
