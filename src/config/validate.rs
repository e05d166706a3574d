//! Everything serde cannot check, one function per section; each reports its problems,
//! with their keys, through the same collector.

use super::accounts::validate_accounts;
use super::identities::validate_identities;
use super::model::{Config, LimitsConfig, Problem, ResolvedAccount};
use std::time::Duration;

impl LimitsConfig {
    /// Every problem, as `(key, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (k, v) in [
            ("limits.vault_writes_per_10s", self.vault_writes_per_10s),
            ("limits.vault_other_per_10s", self.vault_other_per_10s),
            (
                "limits.vault_subscription_per_10s",
                self.vault_subscription_per_10s,
            ),
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
        if !(0.0..1.0).contains(&self.reserve) || self.reserve.is_nan() {
            out.push((
                "limits.reserve".to_owned(),
                "must be a fraction from 0 to below 1, e.g. 0.25 to keep a quarter of each budget for the vault's other clients".to_owned(),
            ));
        } else if (0.0..=0.9).contains(&self.headroom) {
            // keyturn's share must still allow one request per window of every budget.
            let share = (1.0 - self.reserve) * (1.0 - self.headroom);
            for (k, v) in [
                ("limits.vault_writes_per_10s", self.vault_writes_per_10s),
                ("limits.vault_other_per_10s", self.vault_other_per_10s),
                (
                    "limits.vault_subscription_per_10s",
                    self.vault_subscription_per_10s,
                ),
                ("limits.graph_writes_per_150s", self.graph_writes_per_150s),
            ] {
                if v > 0 && (f64::from(v) * share) < 1.0 {
                    out.push((
                        "limits.reserve".to_owned(),
                        format!("with limits.headroom = {} it leaves keyturn less than one request per window of {k} ({v}): lower the reserve or the headroom", self.headroom),
                    ));
                }
            }
        }
        out
    }
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86400);
/// The shortest readiness watch interval other than 0s (off).
const MIN_READINESS_INTERVAL: Duration = Duration::from_secs(1);
/// humantime's year (365.25 days), so that the maximum prints as "1year".
const YEAR: Duration = Duration::from_secs(31_557_600);

/// The longest value each duration key accepts (docs/configuration.md lists them): long
/// enough for any sensible use, short enough that no time computed from it can overflow.
pub const DURATION_MAXIMUMS: &[(&str, Duration)] = &[
    (
        "daemon.drift_check_interval",
        Duration::from_secs(30 * 86400),
    ),
    (
        "daemon.readiness_check_interval",
        Duration::from_secs(30 * 86400),
    ),
    ("daemon.shutdown_grace", HOUR),
    ("daemon.retry_base_delay", DAY),
    ("daemon.retry_max_delay", Duration::from_secs(7 * 86400)),
    ("daemon.unclean_start_delay", HOUR),
    (
        "daemon.audit_retention",
        Duration::from_secs(10 * 31_557_600),
    ),
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
        (
            "daemon.readiness_check_interval",
            d.readiness_check_interval,
        ),
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
    if let Some(r) = d.audit_retention {
        out.push((
            "daemon.audit_retention".to_owned(),
            r,
            max_of("daemon.audit_retention"),
        ));
    }
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

/// Checks everything that serde cannot; returns the resolved accounts. Sections report in
/// this order, which is the order `keyturn check-config` lists problems in: daemon, limits,
/// retries and durations, admin, metrics, tls and network, identities, ha, accounts, notify.
pub fn validate(config: &Config, problems: &mut Vec<Problem>) -> Vec<ResolvedAccount> {
    let mut p = |key: String, message: String| problems.push(Problem { key, message });
    validate_daemon(config, &mut p);
    validate_limits(&config.limits, &mut p);
    validate_retries_and_durations(config, &mut p);
    validate_admin(config, &mut p);
    validate_metrics(config, &mut p);
    validate_tls_network(config, &mut p);
    validate_identities(config, &mut p);
    validate_ha(config, &mut p);
    validate_audit_blob(config, &mut p);
    let resolved = validate_accounts(config, &mut p);
    super::notify::validate_notify(config, &mut p);
    problems.dedup();
    resolved
}

/// `[daemon]`: the concurrency bounds (its retries and durations are checked by
/// [`validate_retries_and_durations`]).
fn validate_daemon(config: &Config, p: &mut impl FnMut(String, String)) {
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
    if !d.readiness_check_interval.is_zero() && d.readiness_check_interval < MIN_READINESS_INTERVAL
    {
        p(
            "daemon.readiness_check_interval".into(),
            "must be 0s (the watch off) or at least 1s (e.g. \"6h\", the default): a shorter one would send Graph a read per account many times a second".into(),
        );
    }
    if d.audit_retention.is_some_and(|r| r < DAY) {
        p(
            "daemon.audit_retention".into(),
            "must be at least 1day (e.g. \"400days\"); leave it out to keep every audit file"
                .into(),
        );
    }
}

/// `[limits]`.
fn validate_limits(limits: &LimitsConfig, p: &mut impl FnMut(String, String)) {
    for (key, message) in limits.problems() {
        p(key, message);
    }
}

/// `daemon.apply_attempts`, every duration against its maximum ([`DURATION_MAXIMUMS`]),
/// and the retry delays' order (in this order, as `check-config` has always listed them).
fn validate_retries_and_durations(config: &Config, p: &mut impl FnMut(String, String)) {
    let d = &config.daemon;
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
}

/// `[admin]`: the socket path, the connection bound, and that its groups exist.
fn validate_admin(config: &Config, p: &mut impl FnMut(String, String)) {
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
}

/// `[metrics]`: the connection bound; a listener off loopback is warned about.
fn validate_metrics(config: &Config, p: &mut impl FnMut(String, String)) {
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
}

/// The shortest and longest `ha.lease_duration` (Azure's bounds for a finite lease).
pub const LEASE_DURATION_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(15), Duration::from_secs(60));

/// `[ha]`: the lease blob's URL, the identity, the lease's duration.
fn validate_ha(config: &Config, p: &mut impl FnMut(String, String)) {
    let Some(ha) = &config.ha else {
        return;
    };
    if let Err(message) = lease_url_problem(&ha.lease_url) {
        p("ha.lease_url".into(), message);
    }
    storage_identity(config, "ha.identity", &ha.identity, p);
    let (min, max) = LEASE_DURATION_BOUNDS;
    let d = ha.lease_duration;
    if d < min || d > max || d.subsec_nanos() != 0 {
        p(
            "ha.lease_duration".into(),
            format!(
                "{} is not allowed: Azure leases last 15 to 60 whole seconds, e.g. \"30s\"",
                humantime::format_duration(d)
            ),
        );
    }
}

/// `[daemon.audit_blob]`: the append blob's URL and the identity.
fn validate_audit_blob(config: &Config, p: &mut impl FnMut(String, String)) {
    let Some(b) = &config.daemon.audit_blob else {
        return;
    };
    if let Err(message) = blob_url_problem(&b.url, "daemon.audit_blob.identity") {
        p("daemon.audit_blob.url".into(), message);
    }
    storage_identity(config, "daemon.audit_blob.identity", &b.identity, p);
}

/// The identity at `key` whose token Blob Storage accepts (`[ha]`, `[daemon.audit_blob]`):
/// named, and defined under `[identities]`.
fn storage_identity(
    config: &Config,
    key: &str,
    identity: &str,
    p: &mut impl FnMut(String, String),
) {
    if identity.is_empty() {
        p(
            key.into(),
            "is missing: name the [identities.NAME] whose token Blob Storage accepts".into(),
        );
    } else if !config.identities.contains_key(identity) {
        p(
            key.into(),
            format!(
                "{identity:?} is not an identity; define [identities.{identity}] or name one of: {}",
                config
                    .identities
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
}

/// Why `url` is not a blob's URL (`https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB`).
pub(crate) fn lease_url_problem(url: &str) -> Result<url::Url, String> {
    blob_url_problem(url, "ha.identity")
}

/// Why `url` is not a blob's URL; `identity_key` is the key naming the identity keyturn
/// signs in with (for the SAS-token hint).
pub(crate) fn blob_url_problem(url: &str, identity_key: &str) -> Result<url::Url, String> {
    const FORM: &str = "https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB";
    if url.is_empty() {
        return Err(format!("is missing: the blob's URL, {FORM}"));
    }
    let parsed =
        url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL ({e}); use {FORM}"))?;
    if parsed.scheme() != "https" {
        return Err(format!(
            "{url:?} must use https (the identity's token is sent with each request); use {FORM}"
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host; use {FORM}"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{url:?} has a query or fragment (a SAS token?): keyturn signs in with {identity_key}; use {FORM}"));
    }
    let segments: Vec<&str> = parsed
        .path_segments()
        .map(|s| s.collect())
        .unwrap_or_default();
    if segments.len() < 2 || segments.iter().any(|s| s.is_empty()) {
        return Err(format!(
            "{url:?} does not name a container and a blob; use {FORM}"
        ));
    }
    Ok(parsed)
}

/// `[tls]` and `[network]`.
fn validate_tls_network(config: &Config, p: &mut impl FnMut(String, String)) {
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
}
