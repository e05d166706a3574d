//! Microsoft's Python SDKs (azure-identity, azure-keyvault-secrets, msal, msgraph-sdk) against
//! the emulator: runs the pytest suite in `tests/sdk_python/` and fails when it fails.
//!
//! The virtual environment lives under the target folder (`<target>/tmp/sdk-python/venv`) and is
//! rebuilt, from PyPI, only when `tests/sdk_python/requirements.txt` changes. Skipped, with the
//! reason printed, only when `python3` is missing. `KEYTURN_SDK_PYTEST_ARGS` adds pytest
//! arguments (e.g. `-k msal`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not start: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// The venv's python, (re)built when the requirements changed.
fn venv(python: &str, suite: &Path) -> PathBuf {
    let reqs_path = suite.join("requirements.txt");
    let reqs = std::fs::read_to_string(&reqs_path).expect("requirements.txt");
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sdk-python");
    let venv = root.join("venv");
    let py = venv.join("bin").join("python");
    let stamp = venv.join("keyturn-requirements.txt");
    if py.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(reqs.as_str()) {
        println!("sdk-python: reusing {}", venv.display());
        return py;
    }
    let t = Instant::now();
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::create_dir_all(&root).expect("create sdk-python folder");
    run(
        Command::new(python).args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    );
    run(
        Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&reqs_path),
        "pip install -r emulator/tests/sdk_python/requirements.txt",
    );
    std::fs::write(&stamp, &reqs).expect("write requirements stamp");
    println!(
        "sdk-python: built {} in {:.1} s",
        venv.display(),
        t.elapsed().as_secs_f64()
    );
    py
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsoft_python_sdks_pass_against_the_emulator() {
    let python = "python3";
    if Command::new(python).arg("--version").output().is_err() {
        println!("SKIPPED: python3 is not installed, so Microsoft's Python SDKs cannot be run");
        return;
    }
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk_python");
    let py = tokio::task::spawn_blocking({
        let suite = suite.clone();
        move || venv(python, &suite)
    })
    .await
    .expect("venv task");

    let emu = crate::common::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("emulator-ca.pem");
    std::fs::write(&ca, emu.ca_pem()).expect("write CA");
    let mut cmd = Command::new(&py);
    cmd.args(["-m", "pytest", "-v", "-p", "no:cacheprovider", "-rfE"])
        .arg(&suite)
        .args(
            std::env::var("KEYTURN_SDK_PYTEST_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .current_dir(dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("KEYTURN_EMU_PORT", emu.addr().port().to_string())
        .env("KEYTURN_EMU_CA", &ca)
        .env("KEYTURN_EMU_IDENTITY_HEADER", emu.identity_header())
        .env("KEYTURN_EMU_TMP", dir.path());
    // Nothing from the caller's Azure configuration may leak into the SDKs.
    for (k, _) in std::env::vars() {
        if k.starts_with("AZURE_") || k.starts_with("IDENTITY_") || k.starts_with("MSI_") {
            cmd.env_remove(k);
        }
    }
    let t = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("pytest task")
        .expect("start pytest");
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    println!("sdk-python: pytest ran in {secs:.1} s");
    assert!(
        out.status.success(),
        "pytest failed ({}); its output is above",
        out.status
    );
    emu.shutdown().await;
}
