//! Configuration: a TOML file plus `KEYTURN__SECTION__KEY` environment overrides, read with
//! the `config` crate into serde structs, then validated as a whole so that
//! `keyturn check-config` reports every problem with its key path.

use crate::password::PasswordPolicy;
use crate::schedule::Schedule;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit code for a bad configuration (`EX_USAGE` in sysexits.h, as linkerd2-proxy uses).
pub const EXIT_CONFIG: i32 = 64;

/// The whole configuration, as read.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    /// How the daemon runs.
    pub daemon: DaemonConfig,
    /// Extra trust for TLS.
    pub tls: TlsConfig,
    /// HTTP settings shared by every Azure client.
    pub network: NetworkConfig,
    /// The admin Unix socket.
    pub admin: AdminConfig,
    /// The optional metrics and health listener.
    pub metrics: MetricsConfig,
    /// Client-side rate limits per vault and per Graph app and tenant.
    pub limits: LimitsConfig,
    /// What every account inherits.
    pub defaults: Defaults,
    /// Named Entra credentials.
    pub identities: BTreeMap<String, IdentityConfig>,
    /// The managed accounts.
    pub accounts: Vec<AccountConfig>,
}

/// The `[limits]` table: client-side rate limits ([`crate::limits`] builds the budgets).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct LimitsConfig {
    /// Pace requests at all (off: only Azure's 429s and `Retry-After` slow keyturn down).
    pub enabled: bool,
    /// Secret sets per vault per 10 s (Azure: 300).
    pub vault_writes_per_10s: u32,
    /// Other secret operations (get, update, list) per vault per 10 s (Azure: 4,000).
    pub vault_other_per_10s: u32,
    /// Graph writes per app and tenant per 150 s (Azure: 3,000).
    pub graph_writes_per_150s: u32,
    /// Fraction of each budget keyturn leaves unused, for other clients of the same vault or
    /// app (consumers reading secrets, the portal) and for network jitter between keyturn's
    /// pacing and Azure's windows. From 0 to 0.9.
    pub headroom: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            enabled: true,
            vault_writes_per_10s: 300,
            vault_other_per_10s: 4_000,
            graph_writes_per_150s: 3_000,
            headroom: 0.02,
        }
    }
}

impl LimitsConfig {
    /// Every problem, as `(key, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (k, v) in [
            ("limits.vault_writes_per_10s", self.vault_writes_per_10s),
            ("limits.vault_other_per_10s", self.vault_other_per_10s),
            ("limits.graph_writes_per_150s", self.graph_writes_per_150s),
        ] {
            if v == 0 {
                out.push((
                    k.to_owned(),
                    "must be at least 1 (set limits.enabled = false to turn pacing off)".to_owned(),
                ));
            }
        }
        if !(0.0..=0.9).contains(&self.headroom) || self.headroom.is_nan() {
            out.push((
                "limits.headroom".to_owned(),
                "must be a fraction from 0 to 0.9, e.g. 0.1 to leave 10 % of each budget to other clients".to_owned(),
            ));
        }
        out
    }
}

/// How the daemon runs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct DaemonConfig {
    /// Holds the single-instance lock file.
    pub state_dir: PathBuf,
    /// The audit log (JSON lines); the record of truth.
    pub audit_log: PathBuf,
    /// Copy audit records to stdout: `off`, `json` or `human`.
    pub audit_stdout: AuditStdout,
    /// How often to compare Graph's last password change with Key Vault (drift); 0 = never.
    #[serde(with = "humantime_serde")]
    pub drift_check_interval: Duration,
    /// At most this many rotations at once.
    pub max_concurrent_rotations: usize,
    /// At most this many rotations at once in one tenant.
    pub max_concurrent_per_tenant: usize,
    /// How long SIGTERM waits for in-flight rotations.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// First delay before retrying a failed account (doubles up to `retry_max_delay`).
    #[serde(with = "humantime_serde")]
    pub retry_base_delay: Duration,
    /// Longest delay before retrying a failed account.
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Graph PATCH attempts with one password before leaving it pending.
    pub apply_attempts: u32,
    /// After an unclean stop (SIGKILL, crash), wait this long before recovery so that
    /// requests the dead process left in flight land or die first.
    #[serde(with = "humantime_serde")]
    pub unclean_start_delay: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            state_dir: PathBuf::from("/var/lib/keyturn"),
            audit_log: PathBuf::from("/var/log/keyturn/audit.jsonl"),
            audit_stdout: AuditStdout::Off,
            drift_check_interval: Duration::from_secs(3600),
            max_concurrent_rotations: 8,
            max_concurrent_per_tenant: 4,
            shutdown_grace: Duration::from_secs(60),
            retry_base_delay: Duration::from_secs(30),
            retry_max_delay: Duration::from_secs(3600),
            apply_attempts: 5,
            unclean_start_delay: Duration::from_secs(30),
        }
    }
}

/// The admin Unix socket (`docs/admin-protocol.md`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct AdminConfig {
    /// Socket path; an empty string turns the socket off.
    pub socket: PathBuf,
    /// Group that owns the socket (mode 0660); its members may use it. Empty: the daemon's group.
    pub group: String,
    /// Further groups whose members may use it (supplementary groups count).
    pub allowed_groups: Vec<String>,
    /// Refuse `rotate` without a reason.
    pub require_reason: bool,
    /// Refuse `rotate` without a ticket.
    pub require_ticket: bool,
    /// Connections served at once; more are refused with `busy`.
    pub max_connections: usize,
    /// How long a client may take to send a request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            socket: PathBuf::from("/run/keyturn/admin.sock"),
            group: String::new(),
            allowed_groups: Vec::new(),
            require_reason: false,
            require_ticket: false,
            max_connections: 64,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The metrics and health listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct MetricsConfig {
    /// Address to listen on, e.g. "127.0.0.1:9464"; absent: off.
    pub listen: Option<std::net::SocketAddr>,
    /// Connections held at once; a new one beyond that closes the oldest.
    pub max_connections: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            max_connections: 32,
        }
    }
}

/// Where audit copies go on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditStdout {
    #[default]
    Off,
    Json,
    Human,
}

/// Extra trust for TLS.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM files of extra CA certificates (the emulator's, a corporate TLS inspection CA).
    pub extra_ca_files: Vec<PathBuf>,
}

/// HTTP settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NetworkConfig {
    /// Host names to send to fixed addresses instead of DNS, like curl's `--resolve`
    /// (the emulator's `*.vault.azure.net` names; split-horizon private endpoints).
    pub resolve: BTreeMap<String, std::net::IpAddr>,
    /// Timeout of one HTTP request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of the Azure SDK's own retry policy (Key Vault and token requests).
    pub sdk_retries: u32,
    /// Longest time the SDK keeps retrying one call.
    #[serde(with = "humantime_serde")]
    pub sdk_retry_budget: Duration,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            resolve: BTreeMap::new(),
            timeout: Duration::from_secs(30),
            sdk_retries: 8,
            sdk_retry_budget: Duration::from_secs(60),
        }
    }
}

/// What every account inherits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Defaults {
    /// Cron expression (5 or 6 fields): weekly, Mondays 03:00, by default.
    pub schedule: String,
    /// IANA time zone of the schedule.
    pub timezone: String,
    /// Each account fires at a stable pseudo-random offset inside this window.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Added to the period for `<secret>`'s `exp`, so Key Vault warns when rotations stall.
    #[serde(with = "humantime_serde")]
    pub expiry_grace: Duration,
    /// Sign in with each new password.
    pub verify: bool,
    /// The password policy.
    pub policy: PasswordPolicy,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            schedule: "0 3 * * MON".into(),
            timezone: "UTC".into(),
            window: Duration::from_secs(4 * 3600),
            expiry_grace: Duration::from_secs(2 * 86400),
            verify: false,
            policy: PasswordPolicy::default(),
        }
    }
}

/// A client secret written inline in the configuration (demos and tests only): wiped from
/// memory when the configuration is dropped, and never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct InlineSecret(zeroize::Zeroizing<String>);

impl InlineSecret {
    /// The secret, to build a credential with.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for InlineSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineSecret(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for InlineSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| InlineSecret(zeroize::Zeroizing::new(s)))
    }
}

/// A named Entra credential.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct IdentityConfig {
    /// `client_secret`, `client_certificate`, `managed_identity`, `workload_identity`, `azure_cli`.
    pub kind: String,
    /// The tenant the app lives in (not needed for managed identity).
    pub tenant_id: Option<String>,
    /// The app's client id (for managed identity: a user-assigned identity's client id).
    pub client_id: Option<String>,
    /// `client_secret`: a file that holds the secret (mode 0600 or 0400, owned by the service
    /// user or root).
    pub client_secret_file: Option<PathBuf>,
    /// `client_secret`: a systemd credential name, read from `$CREDENTIALS_DIRECTORY`.
    pub client_secret_credential: Option<String>,
    /// `client_secret`: an environment variable that holds the secret.
    pub client_secret_env: Option<String>,
    /// `client_secret`: the secret itself; refused unless `allow_inline_secret = true`.
    pub client_secret: Option<InlineSecret>,
    /// Allows `client_secret` inline (demos and tests only).
    pub allow_inline_secret: bool,
    /// `client_certificate`: PKCS#12 file with the certificate and its RSA key (mode 0600 or
    /// 0400, owned by the service user or root).
    pub certificate_file: Option<PathBuf>,
    /// `client_certificate`: a systemd credential name, read from `$CREDENTIALS_DIRECTORY`.
    pub certificate_credential: Option<String>,
    /// `workload_identity`: the federated token file (default `$AZURE_FEDERATED_TOKEN_FILE`).
    pub token_file: Option<PathBuf>,
    /// Entra's authority host (sovereign clouds, the emulator).
    pub authority_host: Option<String>,
    /// Graph's base URL (sovereign clouds, the emulator).
    pub graph_base: Option<String>,
}

/// A managed account.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct AccountConfig {
    /// A unique name (audit records, the admin socket, tags).
    pub name: String,
    /// The Entra user: object id or UPN.
    pub user: String,
    /// The identity used for Graph (the user's tenant).
    pub identity: String,
    /// The vault's URL, `https://NAME.vault.azure.net/`.
    pub vault: String,
    /// The secret's name (1-119 of `0-9 a-z A-Z -`); the staging secret is `<secret>-pending`.
    /// Neither may be another account's secret or staging secret in the same vault.
    pub secret: String,
    /// The identity used for Key Vault (defaults to `identity`).
    pub vault_identity: Option<String>,
    /// Overrides `defaults.schedule`.
    pub schedule: Option<String>,
    /// Overrides `defaults.timezone`.
    pub timezone: Option<String>,
    /// Overrides `defaults.window`.
    #[serde(with = "humantime_serde::option")]
    pub window: Option<Duration>,
    /// Overrides `defaults.verify`.
    pub verify: Option<bool>,
    /// Overrides `defaults.policy`.
    pub policy: Option<PasswordPolicy>,
}

/// An account after defaults were applied and everything was checked.
#[derive(Debug, Clone)]
pub struct ResolvedAccount {
    pub name: String,
    pub user: String,
    pub identity: String,
    pub vault_identity: String,
    pub vault: String,
    pub secret: String,
    pub schedule: Schedule,
    pub verify: bool,
    pub policy: PasswordPolicy,
    /// Period + grace, for `exp`.
    pub expiry: time::Duration,
}

/// One problem, at one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `accounts[2].schedule`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("{} problem(s) in {path}:\n{}", .problems.len(), .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem found (one for an unreadable file).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Read { detail, .. } => vec![Problem {
                key: "(file)".into(),
                message: detail.clone(),
            }],
            ConfigError::Invalid { problems, .. } => problems.clone(),
        }
    }
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// As read.
    pub config: Config,
    /// Accounts with defaults applied, in file order.
    pub accounts: Vec<ResolvedAccount>,
    /// The file it came from.
    pub path: PathBuf,
}

/// Reads `path` (TOML) with `KEYTURN__…` environment overrides, and validates it.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    load_with_env(path, true)
}

/// Like [`load`]; `env = false` ignores the environment (tests).
pub fn load_with_env(path: &Path, env: bool) -> Result<Loaded, ConfigError> {
    if !path.exists() {
        return Err(ConfigError::Read {
            path: path.to_owned(),
            detail: "no such file; pass --config or create it (see config/example.toml)".into(),
        });
    }
    let source = ::config::File::from(path).format(::config::FileFormat::Toml);
    let loaded = load_source(source, path, env)?;
    warn_inline_secrets(&loaded.config, path);
    Ok(loaded)
}

/// An inline client secret (`allow_inline_secret = true`, meant for demos and tests) in a
/// file its group or other users can read is readable by them too (the packaged
/// `/etc/keyturn/keyturn.toml` is 0640 for the on-call group): warned, not refused, so that
/// demos and tests keep working with emulator secrets.
fn warn_inline_secrets(config: &Config, path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(mode) = std::fs::metadata(path).map(|m| m.mode() & 0o777) else {
        return;
    };
    if mode & 0o077 == 0 {
        return;
    }
    for (name, id) in &config.identities {
        if id.client_secret.is_some() {
            tracing::warn!(
                identity = %name,
                file = %path.display(),
                mode = %format!("{mode:04o}"),
                "identities.{name}.client_secret is inline in a configuration file that its group or other users can read: they can read the credential too; for a real credential use client_secret_credential (systemd LoadCredential=) or a client_secret_file at mode 0600"
            );
        }
    }
}

/// Loads and validates configuration text (the fuzz target; `origin` names it in errors).
pub fn load_str(text: &str, origin: &Path) -> Result<Loaded, ConfigError> {
    load_source(
        ::config::File::from_str(text, ::config::FileFormat::Toml),
        origin,
        false,
    )
}

fn load_source<S>(source: S, path: &Path, env: bool) -> Result<Loaded, ConfigError>
where
    S: ::config::Source + Send + Sync + 'static,
{
    let mut builder = ::config::Config::builder().add_source(source);
    if env {
        builder = builder.add_source(
            ::config::Environment::with_prefix("KEYTURN")
                .prefix_separator("__")
                .separator("__"),
        );
    }
    let raw = builder.build().map_err(|e| ConfigError::Read {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    let mut problems = Vec::new();
    let config: Config = match serde_ignored::deserialize(raw, |p| {
        let key = p.to_string();
        problems.push(Problem {
            // An empty key (`"" = 1`) is a key too; name it visibly.
            key: if key.is_empty() { "\"\"".into() } else { key },
            message: "unknown key: check its spelling against docs/configuration.md".into(),
        })
    }) {
        Ok(c) => c,
        Err(e) => {
            // The config crate names the key at the end of its message: "… for key `a.b`".
            let text = e.to_string();
            let key = text
                .rsplit_once("for key `")
                .and_then(|(_, rest)| rest.split_once('`'))
                .map(|(k, _)| k.to_owned())
                .unwrap_or_else(|| "(structure)".into());
            problems.push(Problem {
                key,
                message: format!("{text}: fix this first; further checks need a readable file"),
            });
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
    };
    let accounts = validate(&config, &mut problems);
    if problems.is_empty() {
        Ok(Loaded {
            config,
            accounts,
            path: path.to_owned(),
        })
    } else {
        Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86400);
/// humantime's year (365.25 days), so that the maximum prints as "1year".
const YEAR: Duration = Duration::from_secs(31_557_600);

/// The longest value each duration key accepts (docs/configuration.md lists them): long
/// enough for any sensible use, short enough that no time computed from it can overflow.
pub const DURATION_MAXIMUMS: &[(&str, Duration)] = &[
    (
        "daemon.drift_check_interval",
        Duration::from_secs(30 * 86400),
    ),
    ("daemon.shutdown_grace", HOUR),
    ("daemon.retry_base_delay", DAY),
    ("daemon.retry_max_delay", Duration::from_secs(7 * 86400)),
    ("daemon.unclean_start_delay", HOUR),
    ("admin.request_timeout", Duration::from_secs(10 * 60)),
    ("network.timeout", Duration::from_secs(10 * 60)),
    ("network.sdk_retry_budget", HOUR),
    ("defaults.window", Duration::from_secs(30 * 86400)),
    ("accounts[].window", Duration::from_secs(30 * 86400)),
    ("defaults.expiry_grace", YEAR),
];

/// The maximum of `key` in [`DURATION_MAXIMUMS`].
fn max_of(key: &str) -> Duration {
    DURATION_MAXIMUMS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, max)| *max)
        // Every key asked for is in the table (a unit test checks); a minute is the safe side.
        .unwrap_or(MINUTE)
}

/// Every duration in the configuration, with its key and maximum.
fn duration_bounds(config: &Config) -> Vec<(String, Duration, Duration)> {
    let d = &config.daemon;
    let mut out: Vec<(String, Duration, Duration)> = [
        ("daemon.drift_check_interval", d.drift_check_interval),
        ("daemon.shutdown_grace", d.shutdown_grace),
        ("daemon.retry_base_delay", d.retry_base_delay),
        ("daemon.retry_max_delay", d.retry_max_delay),
        ("daemon.unclean_start_delay", d.unclean_start_delay),
        ("admin.request_timeout", config.admin.request_timeout),
        ("network.timeout", config.network.timeout),
        ("network.sdk_retry_budget", config.network.sdk_retry_budget),
        ("defaults.window", config.defaults.window),
        ("defaults.expiry_grace", config.defaults.expiry_grace),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v, max_of(k)))
    .collect();
    for (i, a) in config.accounts.iter().enumerate() {
        if let Some(w) = a.window {
            out.push((
                format!("accounts[{i}].window"),
                w,
                max_of("accounts[].window"),
            ));
        }
    }
    out
}

const KINDS: &[&str] = &[
    "client_secret",
    "client_certificate",
    "managed_identity",
    "workload_identity",
    "azure_cli",
];

/// Checks everything that serde cannot; returns the resolved accounts.
pub fn validate(config: &Config, problems: &mut Vec<Problem>) -> Vec<ResolvedAccount> {
    let mut p = |key: String, message: String| problems.push(Problem { key, message });

    let d = &config.daemon;
    if d.max_concurrent_rotations == 0 {
        p(
            "daemon.max_concurrent_rotations".into(),
            "must be at least 1".into(),
        );
    }
    if d.max_concurrent_per_tenant == 0 {
        p(
            "daemon.max_concurrent_per_tenant".into(),
            "must be at least 1".into(),
        );
    }
    for (key, message) in config.limits.problems() {
        p(key, message);
    }
    if d.apply_attempts == 0 || d.apply_attempts > 20 {
        p(
            "daemon.apply_attempts".into(),
            "must be from 1 to 20".into(),
        );
    }
    for (key, value, max) in duration_bounds(config) {
        if value > max {
            p(
                key.to_owned(),
                format!(
                    "{} is longer than the maximum; use at most {} (docs/configuration.md lists every duration's maximum)",
                    humantime::format_duration(value),
                    humantime::format_duration(max),
                ),
            );
        }
    }
    if d.retry_base_delay.is_zero() || d.retry_base_delay > d.retry_max_delay {
        p(
            "daemon.retry_base_delay".into(),
            "must be above zero and at most daemon.retry_max_delay".into(),
        );
    }
    let admin = &config.admin;
    if !admin.socket.as_os_str().is_empty() && !admin.socket.is_absolute() {
        p(
            "admin.socket".into(),
            "must be an absolute path, or \"\" to turn the socket off".into(),
        );
    }
    if admin.max_connections == 0 {
        p("admin.max_connections".into(), "must be at least 1".into());
    }
    for (k, g) in std::iter::once(("admin.group".to_owned(), &admin.group)).chain(
        admin
            .allowed_groups
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("admin.allowed_groups[{i}]"), g)),
    ) {
        if !g.is_empty() && matches!(nix::unistd::Group::from_name(g), Ok(None)) {
            p(k, format!("no group named {g:?} exists on this host; create it (groupadd) or fix the name"));
        }
    }
    if !(1..=1000).contains(&config.metrics.max_connections) {
        p(
            "metrics.max_connections".into(),
            "must be from 1 to 1000 (each connection holds an open file)".into(),
        );
    }
    if let Some(addr) = config.metrics.listen {
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the metrics listener is not on loopback; it has no authentication");
        }
    }
    for (i, f) in config.tls.extra_ca_files.iter().enumerate() {
        if !f.is_file() {
            p(
                format!("tls.extra_ca_files[{i}]"),
                format!("{} is not a readable file", f.display()),
            );
        }
    }
    if config.network.timeout.is_zero() {
        p(
            "network.timeout".into(),
            "must be above zero, e.g. \"30s\"".into(),
        );
    }

    for (name, id) in &config.identities {
        let key = |k: &str| format!("identities.{name}.{k}");
        if !KINDS.contains(&id.kind.as_str()) {
            p(
                key("kind"),
                format!(
                    "{:?} is not a kind; use one of {}",
                    id.kind,
                    KINDS.join(", ")
                ),
            );
            continue;
        }
        let needs_app = matches!(
            id.kind.as_str(),
            "client_secret" | "client_certificate" | "workload_identity"
        );
        if needs_app {
            for (k, v) in [("tenant_id", &id.tenant_id), ("client_id", &id.client_id)] {
                if v.as_deref().is_none_or(str::is_empty) {
                    p(key(k), format!("is required for kind {:?}", id.kind));
                }
            }
        }
        if id.kind == "client_secret" {
            let sources = [
                id.client_secret_file.is_some(),
                id.client_secret_credential.is_some(),
                id.client_secret_env.is_some(),
                id.client_secret.is_some(),
            ];
            match sources.iter().filter(|s| **s).count() {
                0 => p(key("client_secret_file"), "a client_secret identity needs one of client_secret_file, client_secret_credential (systemd LoadCredential=), client_secret_env".into()),
                1 => {}
                _ => p(key("client_secret_file"), "give only one of client_secret_file, client_secret_credential, client_secret_env, client_secret".into()),
            }
            if id.client_secret.is_some() && !id.allow_inline_secret {
                p(key("client_secret"), "a secret inline in the config file is refused: put it in a file (client_secret_file) or a systemd credential, or set allow_inline_secret = true for a demo".into());
            }
            if let Some(f) = &id.client_secret_file {
                check_secret_file(f, &key("client_secret_file"), &mut p);
            }
            if let Some(var) = &id.client_secret_env {
                if std::env::var_os(var).is_none() {
                    p(
                        key("client_secret_env"),
                        format!("environment variable {var} is not set"),
                    );
                }
            }
        }
        if id.kind == "client_certificate" {
            match (&id.certificate_file, &id.certificate_credential) {
                (None, None) => p(
                    key("certificate_file"),
                    "kind \"client_certificate\" needs certificate_file or certificate_credential (systemd LoadCredential=)".into(),
                ),
                (Some(_), Some(_)) => p(
                    key("certificate_file"),
                    "give only one of certificate_file, certificate_credential".into(),
                ),
                (Some(f), None) => check_secret_file(f, &key("certificate_file"), &mut p),
                (None, Some(_)) => {}
            }
        }
        for (k, v) in [
            ("authority_host", &id.authority_host),
            ("graph_base", &id.graph_base),
        ] {
            if let Some(v) = v {
                check_https(v, &key(k), &mut p);
            }
        }
    }

    let mut seen_names = HashSet::new();
    // Every Key Vault name an account writes (`<secret>` and `<secret>-pending`), by
    // normalised vault and lowercased name (Key Vault's names are case-insensitive): which
    // account, and whether it is that account's staging secret.
    let mut secret_names: HashMap<(String, String), (usize, bool)> = HashMap::new();
    // Accounts with the same schedule share one parsed cron expression.
    let mut schedules: HashMap<(String, String, std::time::Duration), Schedule> = HashMap::new();
    let mut resolved = Vec::new();
    if config.accounts.is_empty() {
        p(
            "accounts".into(),
            "no account is configured; add an [[accounts]] table".into(),
        );
    }
    for (i, a) in config.accounts.iter().enumerate() {
        let key = |k: &str| format!("accounts[{i}].{k}");
        let mut ok = true;
        let mut bad = |k: String, m: String, ok: &mut bool| {
            *ok = false;
            p(k, m)
        };
        if a.name.is_empty() {
            bad(key("name"), "is required".into(), &mut ok);
        } else if !seen_names.insert(a.name.clone()) {
            bad(
                key("name"),
                format!(
                    "account {:?} is configured twice; names must be unique",
                    a.name
                ),
                &mut ok,
            );
        }
        if a.user.is_empty() {
            bad(
                key("user"),
                "is required: the user's object id or user principal name".into(),
                &mut ok,
            );
        }
        if !check_secret_name(&a.secret) {
            bad(key("secret"), format!("{:?} is not a Key Vault secret name: 1-119 characters of 0-9 a-z A-Z and '-' (119 leaves room for the '-pending' suffix)", a.secret), &mut ok);
        }
        if !a.secret.is_empty() && !a.vault.is_empty() {
            let vault = normalize_vault(&a.vault);
            // Both of this account's names first, then the clashes with earlier accounts.
            let names = [
                (a.secret.clone(), false),
                (crate::protocol::staging_name(&a.secret), true),
            ];
            for (name, staging) in names {
                let entry = (vault.clone(), name.to_ascii_lowercase());
                match secret_names.get(&entry) {
                    Some(&(j, other_staging)) if j != i => {
                        let other = &config.accounts[j];
                        bad(
                            key("secret"),
                            secret_clash(
                                (i, &a.name, &a.secret, staging),
                                (j, &other.name, &other.secret, other_staging),
                                &vault,
                            ),
                            &mut ok,
                        );
                        break;
                    }
                    Some(_) => {}
                    None => {
                        secret_names.insert(entry, (i, staging));
                    }
                }
            }
        }
        if a.vault.is_empty() {
            bad(
                key("vault"),
                "is required, e.g. \"https://myvault.vault.azure.net/\"".into(),
                &mut ok,
            );
        } else if !check_https_ok(&a.vault) {
            bad(
                key("vault"),
                format!(
                    "{:?} must be an https:// URL, e.g. \"https://myvault.vault.azure.net/\"",
                    a.vault
                ),
                &mut ok,
            );
        } else if !check_vault_base(&a.vault) {
            bad(
                key("vault"),
                format!(
                    "{:?} must be the vault's URL alone, with no path, query or user, e.g. \"https://myvault.vault.azure.net/\"",
                    a.vault
                ),
                &mut ok,
            );
        }
        if !config.identities.contains_key(&a.identity) {
            bad(
                key("identity"),
                format!("{:?} is not defined under [identities]", a.identity),
                &mut ok,
            );
        }
        let vault_identity = a
            .vault_identity
            .clone()
            .unwrap_or_else(|| a.identity.clone());
        if a.vault_identity.is_some() && !config.identities.contains_key(&vault_identity) {
            bad(
                key("vault_identity"),
                format!("{vault_identity:?} is not defined under [identities]"),
                &mut ok,
            );
        }
        let policy = a
            .policy
            .clone()
            .unwrap_or_else(|| config.defaults.policy.clone());
        if let Err(e) = policy.validate() {
            let k = if a.policy.is_some() {
                key("policy")
            } else {
                "defaults.policy".into()
            };
            bad(k, e.to_string(), &mut ok);
        }
        let pattern = a
            .schedule
            .clone()
            .unwrap_or_else(|| config.defaults.schedule.clone());
        let tz = a
            .timezone
            .clone()
            .unwrap_or_else(|| config.defaults.timezone.clone());
        let window = a.window.unwrap_or(config.defaults.window);
        let parsed = match schedules.get(&(pattern.clone(), tz.clone(), window)) {
            Some(s) => Ok(s.clone()),
            None => Schedule::new(&pattern, &tz, window).inspect(|s| {
                schedules.insert((pattern.clone(), tz.clone(), window), s.clone());
            }),
        };
        let schedule = match parsed {
            Ok(s) => Some(s),
            Err(e) => {
                let k = match e {
                    crate::schedule::ScheduleError::TimeZone(..) => {
                        if a.timezone.is_some() {
                            key("timezone")
                        } else {
                            "defaults.timezone".into()
                        }
                    }
                    crate::schedule::ScheduleError::Window(..) => {
                        if a.window.is_some() {
                            key("window")
                        } else {
                            "defaults.window".into()
                        }
                    }
                    _ => {
                        if a.schedule.is_some() {
                            key("schedule")
                        } else {
                            "defaults.schedule".into()
                        }
                    }
                };
                bad(k, e.to_string(), &mut ok);
                None
            }
        };
        if let (true, Some(schedule)) = (ok, schedule) {
            let period = schedule.period_hint();
            resolved.push(ResolvedAccount {
                name: a.name.clone(),
                user: a.user.clone(),
                identity: a.identity.clone(),
                vault_identity,
                vault: a.vault.clone(),
                secret: a.secret.clone(),
                verify: a.verify.unwrap_or(config.defaults.verify),
                policy,
                // Both terms are bounded (the grace by validation, the period by the cron
                // expression); saturating, so that nothing here can panic regardless.
                expiry: time::Duration::try_from(
                    period.saturating_add(config.defaults.expiry_grace),
                )
                .unwrap_or(time::Duration::days(9)),
                schedule,
            });
        }
    }
    problems.dedup();
    resolved
}

/// A vault URL in the one form used wherever vaults are compared or keyed (duplicate
/// secrets, stores, rate-limit buckets): lowercase scheme and host, no default port, no
/// trailing slash or dot, e.g. `https://kv.vault.azure.net`. A string that is not a URL is
/// only lowercased and stripped of trailing slashes (validation refuses it anyway).
pub fn normalize_vault(url: &str) -> String {
    let trimmed = url.trim();
    match url::Url::parse(trimmed) {
        Ok(u) if u.host_str().is_some() => {
            let host = u.host_str().unwrap_or_default().trim_end_matches('.');
            let mut out = format!("{}://{host}", u.scheme());
            if let Some(port) = u.port() {
                out.push_str(&format!(":{port}"));
            }
            out.push_str(u.path().trim_end_matches('/'));
            out
        }
        _ => trimmed.trim_end_matches('/').to_ascii_lowercase(),
    }
}

/// The problem of two accounts whose Key Vault names are the same secret: each side is
/// (index, account name, `secret`, whether the clashing name is its staging secret).
fn secret_clash(
    mine: (usize, &str, &str, bool),
    theirs: (usize, &str, &str, bool),
    vault: &str,
) -> String {
    let side = |(i, name, secret, staging): (usize, &str, &str, bool)| {
        if staging {
            format!(
                "account {name:?} writes its staging secret {:?} (accounts[{i}].secret = {secret:?} + {STAGING:?})",
                crate::protocol::staging_name(secret)
            )
        } else {
            format!("account {name:?} keeps its password in {secret:?} (accounts[{i}].secret)")
        }
    };
    format!(
        "{} and {} in {vault}: Key Vault compares secret names case-insensitively, so these are one secret and each account's rotation would overwrite the other's password; rename one so that neither account's secret is the other's, or the other's + {STAGING:?}",
        side(mine),
        side(theirs),
    )
}

const STAGING: &str = crate::protocol::STAGING_SUFFIX;

fn check_secret_name(s: &str) -> bool {
    (1..=119).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn check_https_ok(v: &str) -> bool {
    url::Url::parse(v).is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some())
}

/// A vault URL names the vault only: Key Vault's paths (`/secrets/…`) are the client's.
fn check_vault_base(v: &str) -> bool {
    url::Url::parse(v.trim()).is_ok_and(|u| {
        matches!(u.path(), "" | "/")
            && u.query().is_none()
            && u.fragment().is_none()
            && u.username().is_empty()
            && u.password().is_none()
    })
}

fn check_https(v: &str, key: &str, p: &mut impl FnMut(String, String)) {
    if !check_https_ok(v) {
        p(
            key.into(),
            format!(
                "{v:?} must be an https:// URL (Azure clients refuse plain http for bearer tokens)"
            ),
        );
    }
}

/// A client secret or certificate file must be a regular file that only its owner can read
/// or write, owned by the user keyturn runs as or by root: anyone else who can read it (the
/// on-call group, say) holds a credential that resets privileged users' passwords.
/// systemd credentials (`LoadCredential=`) are not checked here: systemd makes them
/// readable by the service's user only.
fn check_secret_file(f: &Path, key: &str, p: &mut impl FnMut(String, String)) {
    use std::os::unix::fs::MetadataExt;
    let m = match std::fs::metadata(f) {
        Err(e) => return p(key.into(), format!("cannot read {}: {e}", f.display())),
        Ok(m) => m,
    };
    if !m.is_file() {
        return p(key.into(), format!("{} is not a regular file", f.display()));
    }
    let mode = m.mode() & 0o7777;
    let euid = nix::unistd::geteuid().as_raw();
    let name = |uid: u32| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(
                || format!("uid {uid}"),
                |u| format!("{} (uid {uid})", u.name),
            )
    };
    let fix = "or, under systemd, deliver it with LoadCredential= instead (client_secret_credential, certificate_credential; docs/deploy.md)";
    if m.uid() != euid && m.uid() != 0 {
        p(
            key.into(),
            format!(
                "{} is owned by {}, neither the user keyturn runs as ({}) nor root, who alone may own a credential: chown root (or the service user) and chmod 600 it, {fix}",
                f.display(),
                name(m.uid()),
                name(euid)
            ),
        );
    }
    if mode & 0o077 != 0 {
        let who = match (mode & 0o070 != 0, mode & 0o007 != 0) {
            (true, true) => "its group and every user",
            (true, false) => "its group",
            _ => "every user",
        };
        p(
            key.into(),
            format!(
                "{} has mode {mode:04o} (owner {}, group gid {}): {who} can reach the credential; chmod 600 it (0400 or 0600 are accepted), {fix}",
                f.display(),
                name(m.uid()),
                m.gid()
            ),
        );
    }
}
