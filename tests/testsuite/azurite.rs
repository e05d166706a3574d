//! Azurite, Microsoft's Storage emulator, for the `[ha]` tests: installed with `npm ci` from
//! the committed `tests/azurite/package.json` and `package-lock.json` into
//! `<target>/azurite/` (again only when one of those files changes), and started per test on
//! a free port with HTTPS (a throwaway CA from `keyturn_emulator::testkit::tls_files`) and
//! `--oauth basic`, so the whole path is real: `azure_identity` → the emulator's token (issuer
//! `https://sts.windows.net/{tenant}/`, audience `https://storage.azure.com`, which Azurite's
//! basic OAuth checks; it does not check the signature) → Azurite's lease.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The host name keyturn uses for Azurite's built-in account, `devstoreaccount1` (resolved to 127.0.0.1 by `[network.resolve]`, as
/// Azure's own name would be resolved by DNS); Azurite reads the account from it.
pub const HOST: &str = "devstoreaccount1.blob.core.windows.net";
/// The container the tests create for the lease blob.
pub const CONTAINER: &str = "keyturn";

/// `<target>/azurite` with a `node_modules` matching the lock file, or why not.
fn prepare() -> Result<PathBuf, String> {
    if !keyturn_emulator::testkit::node_and_npm() {
        return Err(
            "`node` and `npm` must both be on PATH (Node 20 or later) to run Azurite".into(),
        );
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/azurite");
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let cache = tmp.parent().unwrap_or(tmp).join("azurite");
    keyturn_emulator::testkit::npm_ci_cached(
        "azurite",
        &src,
        &cache,
        &["package.json", "package-lock.json"],
    )?;
    Ok(cache)
}

/// The cache, prepared once per test process (tests in parallel share one `npm ci`).
fn cache() -> Result<PathBuf, String> {
    static CACHE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CACHE.get_or_init(prepare).clone()
}

/// A running Azurite (blob service only), killed when dropped.
pub struct Azurite {
    child: Child,
    pub port: u16,
    /// The CA its certificate is signed by.
    pub ca_pem: String,
    pub dir: tempfile::TempDir,
}

impl Azurite {
    /// Starts Azurite, or returns why it cannot run here (the test then prints SKIPPED).
    pub async fn start() -> Result<Azurite, String> {
        let cache = tokio::task::spawn_blocking(cache)
            .await
            .expect("prepare azurite")?;
        let dir = tempfile::tempdir().unwrap();
        let ca_pem =
            keyturn_emulator::testkit::tls_files(dir.path(), &[HOST, "localhost", "127.0.0.1"]);
        let port = free_port();
        let child = Command::new(cache.join("node_modules/.bin/azurite-blob"))
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(port.to_string())
            .arg("--cert")
            .arg(dir.path().join("cert.pem"))
            .arg("--key")
            .arg(dir.path().join("key.pem"))
            .args([
                "--oauth",
                "basic",
                "--inMemoryPersistence",
                "--disableTelemetry",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("azurite.stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("azurite.stderr")).unwrap())
            .spawn()
            .expect("start azurite-blob");
        let a = Azurite {
            child,
            port,
            ca_pem,
            dir,
        };
        let up = wait_for(Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        assert!(up, "Azurite did not listen on {port}:\n{}", a.output());
        Ok(a)
    }

    /// What Azurite printed.
    pub fn output(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("azurite.stdout"), read("azurite.stderr"))
    }

    /// The lease blob's URL through `port` (Azurite's, or a proxy's in front of it).
    pub fn lease_url(port: u16, blob: &str) -> String {
        format!("https://{HOST}:{port}/{CONTAINER}/{blob}")
    }

    /// The container's URL.
    pub fn container_url(&self) -> String {
        format!("https://{HOST}:{}/{CONTAINER}", self.port)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prints why a test is skipped: Azurite cannot run without Node.
pub fn skipped(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}
