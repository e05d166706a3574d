//! The configuration as read: serde types and their defaults.

use crate::password::PasswordPolicy;
use crate::schedule::Schedule;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration, as read.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    /// Further files that hold `[identities.NAME]` and `[[accounts]]` (an MSP's one file per
    /// customer tenant): glob patterns, relative to the main file's folder, read in path
    /// order after the main file (`config::load`; `docs/configuration.md`, "Includes").
    pub include: Vec<String>,
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
    /// Two or more replicas, one leader (`[ha]`, `docs/ha.md`); absent: one process.
    pub ha: Option<HaConfig>,
    /// What every account inherits.
    pub defaults: Defaults,
    /// Named Entra credentials.
    pub identities: BTreeMap<String, IdentityConfig>,
    /// The managed accounts.
    pub accounts: Vec<AccountConfig>,
    /// Where chosen audit events are sent as CloudEvents (`[[notify]]`,
    /// `docs/notifications.md`).
    pub notify: Vec<NotifyConfig>,
}

/// One `[[notify]]` sink: a webhook or an Event Grid topic that receives chosen audit events
/// as CloudEvents 1.0 (`crate::notifications`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct NotifyConfig {
    /// A unique name: the `sink` label of the metrics, the audit records of drops.
    pub name: String,
    /// `webhook` or `event_grid`. A string, like an identity's `kind`, so that a bad kind is
    /// one listed problem.
    pub kind: String,
    /// `webhook`: where events are POSTed (`https://`; `http://` only to a loopback address).
    pub url: Option<String>,
    /// `webhook`: a file that holds the HMAC key (mode 0600 or 0400, as a client secret).
    pub secret_file: Option<PathBuf>,
    /// `webhook`: a systemd credential name that holds the HMAC key (`$CREDENTIALS_DIRECTORY`).
    pub secret_credential: Option<String>,
    /// `webhook`: an environment variable that holds the HMAC key.
    pub secret_env: Option<String>,
    /// `event_grid`: the topic endpoint, `https://TOPIC.REGION-1.eventgrid.azure.net/api/events`.
    pub endpoint: Option<String>,
    /// `event_grid`: the identity (`[identities.NAME]`) whose Entra token publishes.
    pub identity: Option<String>,
    /// The audit events sent (`docs/notifications.md` lists the names); default
    /// [`NotifyConfig::DEFAULT_EVENTS`].
    pub events: Vec<String>,
    /// The CloudEvents `source`; default `keyturn://HOSTNAME`.
    pub source: Option<String>,
    /// Events waiting for delivery at most; one more is dropped (and counted).
    pub queue: usize,
    /// Tries of one event before it is dropped (and counted).
    pub max_attempts: u32,
    /// First delay before a retry (doubled each time, with jitter, up to `retry_max_delay`).
    #[serde(with = "humantime_serde")]
    pub retry_base_delay: Duration,
    /// Longest delay before a retry, `Retry-After` included.
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Timeout of one delivery request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl NotifyConfig {
    /// The events a sink gets when `events` is not given.
    pub const DEFAULT_EVENTS: [&'static str; 5] = [
        "rotation.failed",
        "drift.detected",
        "rotation.manual",
        "readiness.changed",
        "config.rejected",
    ];
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            name: String::new(),
            kind: String::new(),
            url: None,
            secret_file: None,
            secret_credential: None,
            secret_env: None,
            endpoint: None,
            identity: None,
            events: NotifyConfig::DEFAULT_EVENTS.map(String::from).to_vec(),
            source: None,
            queue: 1000,
            max_attempts: 8,
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
        }
    }
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
    /// Secret operations of every kind across all vaults per 10 s: Key Vault's
    /// subscription-wide limit, 5 × the per-vault limit (Azure: 20,000). keyturn cannot tell
    /// which subscription a vault is in, so it counts all its vaults as one.
    pub vault_subscription_per_10s: u32,
    /// Graph writes per app and tenant per 150 s (Azure: 3,000).
    pub graph_writes_per_150s: u32,
    /// Fraction of each budget keyturn leaves unused, for other clients of the same vault or
    /// app (consumers reading secrets, the portal) and for network jitter between keyturn's
    /// pacing and Azure's windows. From 0 to 0.9.
    pub headroom: f64,
    /// Fraction of each budget (every vault's and Graph's) reserved for the vault's other
    /// clients, which keyturn never uses, before the headroom: keyturn paces to
    /// `budget × (1 − reserve) × (1 − headroom)`. A consumer reading the account's password
    /// while keyturn rotates every account then still has this share. Only an urgent
    /// rotation (`keyturn rotate --all --urgent`) may use it. From 0 to below 1.
    pub reserve: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            enabled: true,
            vault_writes_per_10s: 300,
            vault_other_per_10s: 4_000,
            vault_subscription_per_10s: 20_000,
            graph_writes_per_150s: 3_000,
            headroom: 0.02,
            reserve: 0.25,
        }
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
    /// Remove rotated audit files whose last record is older than this (absent: keep all);
    /// never the live file nor the newest rotated one (`docs/audit.md`, "Retention").
    #[serde(with = "humantime_serde::option")]
    pub audit_retention: Option<Duration>,
    /// A copy of the audit log in an Azure append blob (`[daemon.audit_blob]`,
    /// `docs/audit.md`, "The append-blob copy"); absent: none.
    pub audit_blob: Option<AuditBlobConfig>,
    /// How often to compare Graph's last password change with Key Vault (drift); 0 = never.
    #[serde(with = "humantime_serde")]
    pub drift_check_interval: Duration,
    /// How often the readiness watch runs the cheap, read-only doctor checks per account
    /// (`docs/doctor.md`, "The watch"); 0 = never.
    #[serde(with = "humantime_serde")]
    pub readiness_check_interval: Duration,
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
            audit_retention: None,
            audit_blob: None,
            drift_check_interval: Duration::from_secs(3600),
            readiness_check_interval: Duration::from_secs(6 * 3600),
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

/// The `[ha]` table: leader election on an Azure Blob Storage lease (`docs/ha.md`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct HaConfig {
    /// The blob whose lease the replicas compete for:
    /// `https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB` (the container must exist; the
    /// blob is created if missing).
    pub lease_url: String,
    /// The `[identities.NAME]` whose token Blob Storage accepts (role "Storage Blob Data
    /// Contributor" on the container).
    pub identity: String,
    /// The lease's duration, 15 to 60 s (Azure's bounds for a finite lease).
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
}

/// `[daemon.audit_blob]`: where the audit log is copied, one hash chain for every replica.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuditBlobConfig {
    /// The append blob: `https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB` (the container
    /// must exist; the blob is created if missing, and continued in `BLOB.1`, `BLOB.2`, …
    /// when full).
    pub url: String,
    /// The `[identities.NAME]` whose token Blob Storage accepts (role "Storage Blob Data
    /// Contributor" on the container).
    pub identity: String,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            lease_url: String::new(),
            identity: String::new(),
            lease_duration: Duration::from_secs(30),
        }
    }
}

impl HaConfig {
    /// How often the leader renews: a third of the lease.
    pub fn renew_every(&self) -> Duration {
        self.lease_duration / 3
    }

    /// How long the leader acts after its last successful renewal was sent: two thirds of
    /// the lease (client-go's 10 s of 15 s), leaving a third for the requests in flight,
    /// which the fence cuts off when the lease could expire.
    pub fn deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
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

/// Microsoft Graph's app id: the resource keyturn's verify sign-in asks a token for, and
/// the default of `signin_apps`.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

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
    /// Manage the accounts at all: `false` makes the daemon leave them alone (no Azure
    /// calls; `status` shows them disabled).
    pub enabled: bool,
    /// What start-up does with an account whose secret is not in Key Vault yet: `wait` for
    /// `keyturn adopt` (the default) or `rotate` it at once. A string in the file's model,
    /// like `kind`, so that a bad value is one listed problem with the accepted ones.
    pub on_missing_secret: String,
    /// The resources (app ids, Conditional Access's "target resources") each account signs
    /// in to with its password, which `keyturn doctor`'s sign-in readiness check asks
    /// Conditional Access's What-If about: Microsoft Graph (what keyturn's verify asks a
    /// token for) by default; add those the consumer uses (Exchange Online
    /// `00000002-0000-0ff1-ce00-000000000000`, ...).
    pub signin_apps: Vec<String>,
    /// The public address the accounts' password sign-ins come from, as Entra sees it: what
    /// Conditional Access's named locations are judged against. Unset: policies with a
    /// location condition cannot be judged and are reported as such.
    pub signin_ip: Option<String>,
    /// The directory roles every account should hold (`keyturn provision` assigns them):
    /// display names of Entra's built-in roles, role template ids or `"preset:coreview"`
    /// ([`crate::entra_roles`]). Absent: provisioning leaves roles alone.
    pub roles: Option<Vec<String>>,
    /// The identity (`[identities.NAME]`) `keyturn provision` creates users and assigns
    /// roles with: more privileged than the daemon's, typically `azure_cli` on an operator's
    /// machine. Absent: `keyturn provision` refuses.
    pub provision_identity: Option<String>,
}

/// What the daemon does with an account that has no secret in Key Vault (`on_missing_secret`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMissingSecret {
    /// Report it (status `awaiting_adoption`, an audit record, a metric) and wait for
    /// `keyturn adopt` or for the secret to be stored by hand.
    #[default]
    Wait,
    /// Take it over at once with a first rotation, which creates the secret.
    Rotate,
}

impl OnMissingSecret {
    /// The value as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            OnMissingSecret::Wait => "wait",
            OnMissingSecret::Rotate => "rotate",
        }
    }

    /// The value a string in the file names, exactly.
    pub fn parse(value: &str) -> Option<OnMissingSecret> {
        [OnMissingSecret::Wait, OnMissingSecret::Rotate]
            .into_iter()
            .find(|v| v.as_str() == value)
    }
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
            enabled: true,
            on_missing_secret: OnMissingSecret::Wait.as_str().into(),
            signin_apps: vec![GRAPH_APP_ID.into()],
            signin_ip: None,
            roles: None,
            provision_identity: None,
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
    /// `client_secret`: when the secret expires (`2027-06-01` or an RFC 3339 time), as set
    /// when it was created: Entra's end date is not readable offline. Shown as a metric and
    /// warned about 30 days before (`config::expiry_warnings`).
    pub secret_expires: Option<String>,
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
    /// The scope of Graph tokens; default: derived from `graph_base` for Microsoft's Graph
    /// hosts (`https://graph.microsoft.us` → `https://graph.microsoft.us/.default`), else
    /// `https://graph.microsoft.com/.default`.
    pub graph_scope: Option<String>,
    /// The identity whose app signs the accounts in when they verify (`verify = true`): a
    /// `client_secret` or `client_certificate` identity of the same tenant. Needed when this
    /// identity's kind cannot sign a user in (managed, workload identity, Azure CLI); default:
    /// this identity itself.
    pub verify_identity: Option<String>,
}

impl IdentityConfig {
    /// `kind` as an [`IdentityKind`]; `None` for a string that names no kind (validation
    /// reports it with the list of kinds).
    pub fn kind(&self) -> Option<IdentityKind> {
        IdentityKind::parse(&self.kind)
    }
}

/// The kinds of Entra credential. `IdentityConfig::kind` stays a string in the file's model
/// so that an unknown kind is one problem among all the others `keyturn check-config` lists
/// (a serde enum would stop at it), with the list of kinds in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    ClientSecret,
    ClientCertificate,
    ManagedIdentity,
    WorkloadIdentity,
    AzureCli,
}

impl IdentityKind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [IdentityKind; 5] = [
        IdentityKind::ClientSecret,
        IdentityKind::ClientCertificate,
        IdentityKind::ManagedIdentity,
        IdentityKind::WorkloadIdentity,
        IdentityKind::AzureCli,
    ];

    /// Every kind's name in the file, in the order of [`IdentityKind::ALL`].
    pub(crate) const NAMES: [&'static str; 5] = [
        "client_secret",
        "client_certificate",
        "managed_identity",
        "workload_identity",
        "azure_cli",
    ];

    /// The name in the file, e.g. `client_secret`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::ClientSecret => "client_secret",
            IdentityKind::ClientCertificate => "client_certificate",
            IdentityKind::ManagedIdentity => "managed_identity",
            IdentityKind::WorkloadIdentity => "workload_identity",
            IdentityKind::AzureCli => "azure_cli",
        }
    }

    /// Whether an app of this kind can sign a user in with the password grant (ROPC), which
    /// needs a confidential client's own authentication: a client secret or a certificate's
    /// client assertion. A managed identity, a workload identity's federated token and the
    /// Azure CLI's sign-in cannot authenticate that grant.
    pub fn signs_users_in(self) -> bool {
        matches!(
            self,
            IdentityKind::ClientSecret | IdentityKind::ClientCertificate
        )
    }

    /// The kind a name in the file names (exactly, as today's check compares).
    pub fn parse(name: &str) -> Option<IdentityKind> {
        IdentityKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
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
    /// Overrides `defaults.enabled`.
    pub enabled: Option<bool>,
    /// Overrides `defaults.on_missing_secret`.
    pub on_missing_secret: Option<String>,
    /// Overrides `defaults.signin_apps`.
    pub signin_apps: Option<Vec<String>>,
    /// Overrides `defaults.signin_ip`.
    pub signin_ip: Option<String>,
    /// Overrides `defaults.roles`: the directory roles the user should hold.
    pub roles: Option<Vec<String>>,
    /// The user's display name when `keyturn provision` creates it (default: `name`).
    pub display_name: Option<String>,
    /// Overrides `defaults.provision_identity`.
    pub provision_identity: Option<String>,
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
    /// The daemon manages it (`enabled`).
    pub enabled: bool,
    /// What start-up does when its secret does not exist.
    pub on_missing_secret: OnMissingSecret,
    /// The resource app ids its password sign-ins reach (`signin_apps`).
    pub signin_apps: Vec<String>,
    /// The address its sign-ins come from (`signin_ip`).
    pub signin_ip: Option<std::net::IpAddr>,
    /// The directory roles the user should hold (`roles`, resolved, sorted by id, no
    /// duplicates); `None` when the account declares none (provisioning leaves roles alone).
    pub roles: Option<Vec<crate::entra_roles::Role>>,
    /// The display name a created user gets (`display_name`, default the account's name).
    pub display_name: String,
    /// The identity `keyturn provision` acts with (`provision_identity`), if any.
    pub provision_identity: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::IdentityKind;

    #[test]
    fn identity_kind_names_round_trip() {
        for (kind, name) in IdentityKind::ALL.into_iter().zip(IdentityKind::NAMES) {
            assert_eq!(kind.as_str(), name);
            assert_eq!(IdentityKind::parse(name), Some(kind));
        }
        assert_eq!(IdentityKind::parse("password"), None);
        assert_eq!(IdentityKind::parse("Client_Secret"), None);
    }
}
