//! Shared set-up for the end-to-end tests: an emulator seeded with a test tenant, a keyturn
//! configuration pointing at it ([`World`]), keyturn running on it in-process ([`Service`]) or
//! as a process ([`Daemon`]), and ways to look at what Key Vault and Entra hold. What the
//! emulator's own tests need too (starting an emulator, clients that trust it, waiting) is in
//! the harness both share, `keyturn_emulator::testkit`.
#![allow(dead_code)]

use azure_core::credentials::Secret;
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
use futures::TryStreamExt;
use keyturn::config::Loaded;
pub use keyturn_emulator::testkit::wait_for;
use keyturn_emulator::{testkit, Emulator, FaultRule, InvariantQuery, InvariantReport};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const TENANT: &str = "contoso";
pub const ROTATOR: &str = "11111111-1111-1111-1111-111111111111";
pub const WEAK: &str = "44444444-4444-4444-4444-444444444444";
pub const READER: &str = "22222222-2222-2222-2222-222222222222";
pub const VAULT: &str = "kv1";

/// Users: (account name, upn, secret, initial password).
pub const USERS: [(&str, &str, &str, &str); 3] = [
    (
        "svc-1",
        "svc-1@contoso.onmicrosoft.com",
        "svc-1",
        "Initial-Pass-1!",
    ),
    (
        "svc-2",
        "svc-2@contoso.onmicrosoft.com",
        "svc-2",
        "Initial-Pass-2!",
    ),
    (
        "svc-ca",
        "svc-ca@contoso.onmicrosoft.com",
        "svc-ca",
        "Initial-Pass-3!",
    ),
];

pub const SCENARIO: &str = r#"
[[tenants]]
id = "contoso"
domain = "contoso.onmicrosoft.com"

[[apps]]
tenant = "contoso"
name = "keyturn-rotator"
client_id = "11111111-1111-1111-1111-111111111111"
secrets = ["rotator-secret"]
graph_permissions = ["User.Read.All", "User-PasswordProfile.ReadWrite.All", "Policy.Read.ConditionalAccess"]
directory_roles = ["Privileged Authentication Administrator"]

# Has the Graph permission but only User Administrator: cannot reset privileged users.
[[apps]]
tenant = "contoso"
name = "weak-rotator"
client_id = "44444444-4444-4444-4444-444444444444"
secrets = ["weak-secret"]
graph_permissions = ["User.Read.All", "User-PasswordProfile.ReadWrite.All"]
directory_roles = ["User Administrator"]

# Tenant-wide consent for the verify sign-in (keyturn asks Graph's "openid User.Read").
[[oauth2_permission_grants]]
app = "11111111-1111-1111-1111-111111111111"
scope = "openid User.Read"

[[oauth2_permission_grants]]
app = "44444444-4444-4444-4444-444444444444"
scope = "openid User.Read"

[[apps]]
tenant = "contoso"
name = "reader"
client_id = "22222222-2222-2222-2222-222222222222"
secrets = ["reader-secret"]

[[users]]
tenant = "contoso"
upn = "svc-1@contoso.onmicrosoft.com"
password = "Initial-Pass-1!"
directory_roles = ["Exchange Administrator", "User Administrator", "Global Reader"]

[[users]]
tenant = "contoso"
upn = "svc-2@contoso.onmicrosoft.com"
password = "Initial-Pass-2!"
directory_roles = ["Teams Administrator", "Reports Reader"]

[[users]]
tenant = "contoso"
upn = "svc-ca@contoso.onmicrosoft.com"
password = "Initial-Pass-3!"
directory_roles = ["Global Reader"]
ca_blocked = true

[[vaults]]
name = "kv1"
tenant = "contoso"
access = [
  { client_id = "11111111-1111-1111-1111-111111111111", role = "Key Vault Secrets Officer" },
  { client_id = "44444444-4444-4444-4444-444444444444", role = "Key Vault Secrets Officer" },
  { client_id = "22222222-2222-2222-2222-222222222222", role = "Key Vault Secrets User" },
]
secrets = [
  { name = "svc-1", from_user = "contoso/svc-1@contoso.onmicrosoft.com" },
  { name = "svc-2", from_user = "contoso/svc-2@contoso.onmicrosoft.com" },
  { name = "svc-ca", from_user = "contoso/svc-ca@contoso.onmicrosoft.com" },
]
"#;

/// An emulator seeded with [`SCENARIO`] (through the shared harness, `keyturn_emulator::testkit`).
pub async fn emulator() -> Emulator {
    testkit::start_toml(SCENARIO).await
}

/// Options for [`write_config`].
pub struct Opts {
    pub schedule: &'static str,
    pub verify: bool,
    /// (account name, identity) pairs; default: every user with `rotator`.
    pub accounts: Vec<(&'static str, &'static str)>,
    pub audit_stdout: &'static str,
    pub drift: &'static str,
    /// Extra TOML appended to the `[admin]` table.
    pub admin: &'static str,
    /// `daemon.unclean_start_delay`.
    pub unclean_delay: &'static str,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            schedule: "0 3 * * MON",
            verify: true,
            accounts: USERS.iter().map(|u| (u.0, "rotator")).collect(),
            audit_stdout: "off",
            drift: "0s",
            admin: "",
            unclean_delay: "0s",
        }
    }
}

/// Writes a keyturn configuration for the emulator into `dir`.
pub fn write_config(emu: &Emulator, dir: &Path, o: &Opts) -> PathBuf {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, emu.ca_pem()).unwrap();
    let mut t = format!(
        "[daemon]\nstate_dir = {:?}\naudit_log = {:?}\naudit_stdout = {:?}\ndrift_check_interval = {:?}\nretry_base_delay = \"1s\"\nretry_max_delay = \"2s\"\nshutdown_grace = \"20s\"\nunclean_start_delay = {:?}\n\n[tls]\nextra_ca_files = [{:?}]\n\n[network]\ntimeout = \"10s\"\n[network.resolve]\n",
        dir.join("state").display().to_string(),
        dir.join("audit.jsonl").display().to_string(),
        o.audit_stdout,
        o.drift,
        o.unclean_delay,
        ca.display().to_string()
    );
    for h in emu.resolve_hosts() {
        t.push_str(&format!("{h:?} = \"127.0.0.1\"\n"));
    }
    t.push_str(&format!(
        "\n[admin]\nsocket = {:?}\n{}\n",
        dir.join("admin.sock").display().to_string(),
        o.admin
    ));
    t.push_str(&format!(
        "\n[defaults]\nschedule = {:?}\nwindow = \"0s\"\nverify = {}\n",
        o.schedule, o.verify
    ));
    for (name, client_id, secret) in [
        ("rotator", ROTATOR, "rotator-secret"),
        ("weak", WEAK, "weak-secret"),
    ] {
        t.push_str(&format!(
            "\n[identities.{name}]\nkind = \"client_secret\"\ntenant_id = \"contoso\"\nclient_id = {client_id:?}\nclient_secret = {secret:?}\nallow_inline_secret = true\nauthority_host = {:?}\ngraph_base = {:?}\n",
            emu.authority_host(),
            emu.graph_base()
        ));
    }
    for (account, identity) in &o.accounts {
        let (_, upn, secret, _) = USERS.iter().find(|u| u.0 == *account).unwrap();
        t.push_str(&format!(
            "\n[[accounts]]\nname = {account:?}\nuser = {upn:?}\nidentity = {identity:?}\nvault = {:?}\nsecret = {secret:?}\n",
            emu.vault_url(VAULT)
        ));
    }
    let path = dir.join("keyturn.toml");
    std::fs::write(&path, t).unwrap();
    path
}

pub fn load(path: &Path) -> Loaded {
    keyturn::config::load_with_env(path, false).unwrap()
}

pub fn invariant(emu: &Emulator, account: &str) -> InvariantReport {
    let (_, upn, secret, _) = USERS.iter().find(|u| u.0 == account).unwrap();
    emu.control()
        .invariant(&InvariantQuery {
            tenant: TENANT.into(),
            user: (*upn).into(),
            vault: VAULT.into(),
            secret: (*secret).into(),
            staging_secret: None,
        })
        .unwrap()
}

/// The HTTP client keyturn builds from `loaded` (its CAs and resolved hosts), its requests
/// seen by `observer`.
pub fn http_for(
    loaded: &Loaded,
    observer: Arc<dyn keyturn::observe::Observer>,
) -> keyturn::azure::Http {
    keyturn::azure::http_client(&loaded.config.tls, &loaded.config.network, observer).unwrap()
}

/// An `azure_identity` credential of the emulator's app `app` (client secret `secret`),
/// through `http`.
pub fn app_credential(
    emu: &Emulator,
    http: &keyturn::azure::Http,
    app: &str,
    secret: &str,
) -> Arc<ClientSecretCredential> {
    ClientSecretCredential::new(
        TENANT,
        app.into(),
        Secret::new(secret.to_string()),
        Some(ClientSecretCredentialOptions {
            client_options: keyturn::azure::client_options(http, Some(&emu.authority_host())),
        }),
    )
    .unwrap()
}

/// A Key Vault client for `VAULT` signed in as the app `app` (client secret `secret`), its
/// requests seen by `observer`.
pub fn vault_client_as(
    emu: &Emulator,
    loaded: &Loaded,
    app: &str,
    secret: &str,
    observer: Arc<dyn keyturn::observe::Observer>,
) -> SecretClient {
    let http = http_for(loaded, observer);
    SecretClient::new(
        &emu.vault_url(VAULT),
        app_credential(emu, &http, app, secret),
        Some(SecretClientOptions {
            client_options: keyturn::azure::client_options(&http, None),
            ..Default::default()
        }),
    )
    .unwrap()
}

/// A Key Vault client signed in as the read-only app (as a consumer would be).
pub fn reader(emu: &Emulator, loaded: &Loaded) -> SecretClient {
    vault_client_as(
        emu,
        loaded,
        READER,
        "reader-secret",
        keyturn::observe::unobserved(),
    )
}

/// Every value of every version of `names` and their staging secrets.
pub async fn all_values(client: &SecretClient, names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for base in names {
        for name in [base.to_string(), format!("{base}-pending")] {
            let Ok(pager) = client.list_secret_properties_versions(&name, None) else {
                continue;
            };
            let items: Vec<_> = match pager.try_collect().await {
                Ok(v) => v,
                Err(_) => continue,
            };
            for props in items {
                let version = props.resource_id().unwrap().version.unwrap();
                let secret = client
                    .get_secret(
                        &name,
                        Some(SecretClientGetSecretOptions {
                            secret_version: Some(version),
                            ..Default::default()
                        }),
                    )
                    .await
                    .unwrap()
                    .into_model()
                    .unwrap();
                out.push(secret.value.unwrap());
            }
        }
    }
    out
}

/// The audit log's records as JSON values.
pub fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A TCP port free on 127.0.0.1 a moment ago (for a metrics listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn shared<T>(t: T) -> Arc<T> {
    Arc::new(t)
}

pub const BIN: &str = env!("CARGO_BIN_EXE_keyturn");

pub struct Daemon {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// A test that fails (panics) before it stops its daemon does not leave the process running.
impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Daemon {
    pub fn start(config: &Path, dir: &Path, tag: &str) -> Daemon {
        Self::start_with_log(config, dir, tag, "debug")
    }

    pub fn start_with_log(config: &Path, dir: &Path, tag: &str, log: &str) -> Daemon {
        let stdout = dir.join(format!("{tag}.stdout"));
        let stderr = dir.join(format!("{tag}.stderr"));
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            // Tests run as root in CI containers; keyturn refuses root unless told.
            .env("KEYTURN_ALLOW_ROOT", "1")
            .env("KEYTURN_LOG", log)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child,
            stdout,
            stderr,
        }
    }

    pub fn signal(&self, s: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), s).unwrap();
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub async fn ready(&self) {
        assert!(
            wait_for(Duration::from_secs(30), || self
                .stderr()
                .contains("keyturn is ready"))
            .await,
            "the daemon never became ready:\n{}",
            self.stderr()
        );
    }

    pub async fn wait(mut self) -> std::process::ExitStatus {
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        panic!("the daemon did not exit:\n{}", self.stderr());
    }
}

pub fn count(dir: &Path, event: &str, account: Option<&str>) -> usize {
    audit_records(dir)
        .iter()
        .filter(|r| r["event"] == event && account.is_none_or(|a| r["account"] == a))
        .count()
}

/// A fault on `route` that fires with probability `p` (the chaos tests).
pub fn chance(route: &str, kind: keyturn_emulator::FaultKind, p: f64) -> FaultRule {
    FaultRule {
        route: route.into(),
        kind,
        probability: Some(p),
        ..Default::default()
    }
}

/// [`chance`]: an HTTP status `code` on `route`.
pub fn chance_status(route: &str, code: u16, p: f64) -> FaultRule {
    FaultRule {
        status: Some(code),
        ..chance(route, keyturn_emulator::FaultKind::Status, p)
    }
}

pub fn rule() -> FaultRule {
    FaultRule::default()
}

/// The emulator seeded with [`SCENARIO`], a temporary folder and a keyturn configuration in
/// it (`keyturn.toml`, audit log `audit.jsonl`, admin socket `admin.sock`, `state/`): the
/// set-up most end-to-end tests start from.
pub struct World {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
    /// The configuration file.
    pub config: PathBuf,
}

impl World {
    pub async fn new(o: Opts) -> World {
        let emu = emulator().await;
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(&emu, dir.path(), &o);
        World { emu, dir, config }
    }

    /// The temporary folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The admin socket's path.
    pub fn socket(&self) -> PathBuf {
        self.path().join("admin.sock")
    }

    /// Writes the configuration again with other options.
    pub fn rewrite(&self, o: &Opts) {
        write_config(&self.emu, self.path(), o);
    }

    /// The configuration, loaded and validated.
    pub fn loaded(&self) -> Loaded {
        load(&self.config)
    }

    /// The audit log's records.
    pub fn records(&self) -> Vec<serde_json::Value> {
        audit_records(self.path())
    }

    /// How many `event` records (of `account`, if given) the audit log holds.
    pub fn count(&self, event: &str, account: Option<&str>) -> usize {
        count(self.path(), event, account)
    }

    /// Waits up to `timeout` until the audit log holds at least `n` `event` records (of
    /// `account`, if given); false if it never did.
    pub async fn wait_count(
        &self,
        timeout: Duration,
        event: &str,
        account: Option<&str>,
        n: usize,
    ) -> bool {
        wait_for(timeout, || self.count(event, account) >= n).await
    }

    /// keyturn in-process on this configuration, ready.
    pub async fn service(&self) -> Service {
        Service::start(self.loaded()).await
    }

    /// `keyturn run` as a process on this configuration (output in `run.stdout` and
    /// `run.stderr`), ready.
    pub async fn daemon(&self) -> Daemon {
        let d = Daemon::start(&self.config, self.path(), "run");
        d.ready().await;
        d
    }
}

/// keyturn's whole service in-process (`keyturn::service::run`), stopped by the shutdown
/// future it was given: what `keyturn run` starts, without a process. Tests that need a
/// process (signals, exit codes, what it prints) use [`Daemon`].
pub struct Service {
    task: tokio::task::JoinHandle<Result<i32, keyturn::service::ServiceError>>,
    stop: tokio::sync::oneshot::Sender<()>,
    /// The admin socket.
    pub socket: PathBuf,
}

impl Service {
    /// Starts the service and waits until its admin socket reports it ready.
    pub async fn start(loaded: Loaded) -> Service {
        let socket = loaded.config.admin.socket.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(keyturn::service::run(loaded, async {
            let _ = stopped.await;
        }));
        let s = Service { task, stop, socket };
        s.ready().await;
        s
    }

    async fn ready(&self) {
        use keyturn::admin::{client, proto::Request};
        for _ in 0..600 {
            if self.task.is_finished() {
                break;
            }
            if let Ok(r) = client::send(&self.socket, &Request::Status).await {
                if r.result.as_ref().is_some_and(|v| v["ready"] == true) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the service never reported ready on its admin socket");
    }

    /// Completes its shutdown future (as SIGTERM would) and returns its exit code.
    pub async fn stop(self) -> i32 {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the service did not stop after its shutdown future completed")
            .expect("the service task")
            .expect("the service ran")
    }
}

/// The chaos tests' independent checker: every 100 ms, the invariant of each account in
/// `queries` (named), from the emulator's own state, until stopped.
pub struct InvariantChecker {
    control: keyturn_emulator::Control,
    checks: std::sync::Arc<std::sync::atomic::AtomicU64>,
    violations: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl InvariantChecker {
    pub fn start(
        control: keyturn_emulator::Control,
        queries: Vec<(String, keyturn_emulator::InvariantQuery)>,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let checks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let violations = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = {
            let (control, checks, violations, stop) = (
                control.clone(),
                checks.clone(),
                violations.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for (name, q) in &queries {
                        check(&control, &checks, &violations, name, q, "");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        InvariantChecker {
            control,
            checks,
            violations,
            stop,
            task,
        }
    }

    /// One more check now (e.g. right after a kill), its violation prefixed with `when`.
    pub fn check(&self, name: &str, q: &keyturn_emulator::InvariantQuery, when: &str) {
        check(&self.control, &self.checks, &self.violations, name, q, when);
    }

    /// Stops it: the number of checks made and the violations found.
    pub async fn stop(self) -> (u64, Vec<String>) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let violations = self.violations.lock().unwrap().clone();
        (self.checks.load(Ordering::Relaxed), violations)
    }
}

fn check(
    control: &keyturn_emulator::Control,
    checks: &std::sync::atomic::AtomicU64,
    violations: &std::sync::Mutex<Vec<String>>,
    name: &str,
    q: &keyturn_emulator::InvariantQuery,
    when: &str,
) {
    let r = control.invariant(q).unwrap();
    checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !r.holds {
        violations
            .lock()
            .unwrap()
            .push(format!("{when}{name}: {r:?}"));
    }
}
