//! `[[notify]]`: each sink's kind and what it needs (a webhook's URL and HMAC key, an Event
//! Grid topic's endpoint and identity), the event names, the queue and retry bounds. Reports
//! through `validate`'s collector; `crate::notifications` delivers.

use super::model::{Config, NotifyConfig};
use std::path::PathBuf;
use std::time::Duration;

/// The names `events = [...]` accepts: audit event kinds (`docs/audit.md`), plus
/// `rotation.manual` (the end of a rotation a person asked for: its `rotation.completed`,
/// `rotation.failed` or `rotation.abandoned` record with trigger `socket`, `cli` or
/// `signal`).
pub const NOTIFY_EVENTS: [&str; 18] = [
    "rotation.failed",
    "rotation.abandoned",
    "rotation.left_pending",
    "rotation.completed",
    "rotation.resumed",
    "rotation.manual",
    "drift.detected",
    "readiness.changed",
    "config.rejected",
    "config.loaded",
    "account.awaiting_adoption",
    "account.retired",
    "daemon.started",
    "daemon.stopping",
    "admin.command_refused",
    "audit.recovered",
    "audit.seal_mismatch",
    "audit.pruned",
];

/// The sink kinds, in the order messages list them.
pub const NOTIFY_KINDS: [&str; 2] = ["webhook", "event_grid"];

/// Whether `url` may carry events: `https://`, or `http://` to a loopback address (a relay on
/// the same host), whose traffic never leaves the machine.
pub fn notify_url_ok(url: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    if u.host_str().is_none() {
        return Err(format!("{url:?} names no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("{url:?} carries a user or password; the audit log and errors would show it: put the credential in the HMAC key instead"));
    }
    match u.scheme() {
        "https" => Ok(u),
        "http" if is_loopback(&u) => Ok(u),
        "http" => Err(format!("{url:?} is plain http to another host: events would cross the network unencrypted; use https:// (http:// is accepted to a loopback address only, e.g. a relay on this host)")),
        s => Err(format!("{url:?} has scheme {s:?}; use https://")),
    }
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The longest retry delay and request timeout a sink accepts.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// `[[notify]]`: each sink.
pub(super) fn validate_notify(config: &Config, p: &mut impl FnMut(String, String)) {
    let mut names: Vec<&str> = Vec::new();
    for (i, n) in config.notify.iter().enumerate() {
        let key = |k: &str| format!("notify[{i}].{k}");
        check_name(n, &names, &key("name"), p);
        names.push(&n.name);
        match n.kind.as_str() {
            "webhook" => check_webhook(n, &key, p),
            "event_grid" => check_event_grid(config, n, &key, p),
            other => p(
                key("kind"),
                format!(
                    "{other:?} is not a kind; use one of {}",
                    NOTIFY_KINDS.join(", ")
                ),
            ),
        }
        if n.events.is_empty() {
            p(key("events"), format!("is empty, so the sink would get nothing; leave it out for the default ({}) or name events", NotifyConfig::DEFAULT_EVENTS.join(", ")));
        }
        for (j, e) in n.events.iter().enumerate() {
            if !NOTIFY_EVENTS.contains(&e.as_str()) {
                p(
                    format!("notify[{i}].events[{j}]"),
                    format!(
                        "{e:?} is not an event keyturn notifies of; use one of {}",
                        NOTIFY_EVENTS.join(", ")
                    ),
                );
            }
        }
        if let Some(s) = &n.source {
            if s.is_empty() {
                p(key("source"), "must not be empty (CloudEvents requires a source); leave it out for keyturn://HOSTNAME".into());
            }
        }
        if !(1..=100_000).contains(&n.queue) {
            p(key("queue"), "must be from 1 to 100000 events".into());
        }
        if !(1..=100).contains(&n.max_attempts) {
            p(key("max_attempts"), "must be from 1 to 100".into());
        }
        for (k, v) in [
            ("retry_base_delay", n.retry_base_delay),
            ("retry_max_delay", n.retry_max_delay),
            ("timeout", n.timeout),
        ] {
            if v.is_zero() || v > MAX_DELAY {
                p(key(k), "must be above zero and at most 1h".into());
            }
        }
        if n.retry_base_delay > n.retry_max_delay {
            p(
                key("retry_base_delay"),
                format!("must be at most notify[{i}].retry_max_delay"),
            );
        }
    }
}

fn check_name(n: &NotifyConfig, seen: &[&str], key: &str, p: &mut impl FnMut(String, String)) {
    let ok = !n.name.is_empty()
        && n.name.len() <= 64
        && n.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        p(key.into(), format!("{:?} must be 1 to 64 of a-z A-Z 0-9 - _ . (it names the sink in metrics and audit records)", n.name));
    } else if seen.contains(&n.name.as_str()) {
        p(
            key.into(),
            format!("another [[notify]] sink is already named {:?}", n.name),
        );
    }
}

fn check_webhook(
    n: &NotifyConfig,
    key: &impl Fn(&str) -> String,
    p: &mut impl FnMut(String, String),
) {
    match &n.url {
        None => p(key("url"), "a webhook needs url = \"https://…\"".into()),
        Some(u) => {
            if let Err(e) = notify_url_ok(u) {
                p(key("url"), e);
            }
        }
    }
    for (k, v) in [
        ("endpoint", n.endpoint.is_some()),
        ("identity", n.identity.is_some()),
    ] {
        if v {
            p(key(k), "is for kind \"event_grid\"; a webhook takes url and secret_file, secret_credential or secret_env".into());
        }
    }
    let sources = [
        n.secret_file.is_some(),
        n.secret_credential.is_some(),
        n.secret_env.is_some(),
    ];
    match sources.iter().filter(|s| **s).count() {
        0 => p(key("secret_file"), "a webhook needs its HMAC key from one of secret_file, secret_credential (systemd LoadCredential=), secret_env: the receiver checks each body's signature with it (docs/notifications.md)".into()),
        1 => {}
        _ => p(key("secret_file"), "give only one of secret_file, secret_credential, secret_env".into()),
    }
    if let Some(f) = &n.secret_file {
        super::identities::check_secret_file(f, &key("secret_file"), p);
    }
    if let Some(c) = &n.secret_credential {
        let k = key("secret_credential");
        if let Some(path) = super::identities::credential_file(c, &k, p) {
            if let Err(e) = std::fs::File::open(&path) {
                p(k, format!("cannot read the credential {}: {e}; check LoadCredential={c}:… in the unit", path.display()));
            }
        }
    }
    if let Some(var) = &n.secret_env {
        if std::env::var_os(var).is_none() {
            p(
                key("secret_env"),
                format!("environment variable {var} is not set"),
            );
        }
    }
}

fn check_event_grid(
    config: &Config,
    n: &NotifyConfig,
    key: &impl Fn(&str) -> String,
    p: &mut impl FnMut(String, String),
) {
    match &n.endpoint {
        None => p(key("endpoint"), "an event_grid sink needs endpoint = \"https://TOPIC.REGION-1.eventgrid.azure.net/api/events\" (the topic's Overview in the portal, or `az eventgrid topic show --query endpoint`)".into()),
        Some(e) => match url::Url::parse(e) {
            Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {}
            _ => p(key("endpoint"), format!("{e:?} must be the topic's https:// endpoint, e.g. \"https://keyturn.westeurope-1.eventgrid.azure.net/api/events\"")),
        },
    }
    match &n.identity {
        None => p(key("identity"), "an event_grid sink needs identity = NAME, one of [identities], holding the EventGrid Data Sender role on the topic".into()),
        Some(id) if !config.identities.contains_key(id) => {
            p(key("identity"), format!("{id:?} is not defined under [identities]"))
        }
        Some(_) => {}
    }
    for (k, v) in [
        ("url", n.url.is_some()),
        ("secret_file", n.secret_file.is_some()),
        ("secret_credential", n.secret_credential.is_some()),
        ("secret_env", n.secret_env.is_some()),
    ] {
        if v {
            p(key(k), "is for kind \"webhook\"; an event_grid sink takes endpoint and identity (an Entra token, no key)".into());
        }
    }
}

/// Where a webhook's HMAC key is, as configured.
pub fn webhook_key_source(n: &NotifyConfig) -> Option<KeySource> {
    if let Some(f) = &n.secret_file {
        return Some(KeySource::File(f.clone()));
    }
    if let Some(c) = &n.secret_credential {
        return Some(KeySource::Credential(c.clone()));
    }
    n.secret_env.clone().map(KeySource::Env)
}

/// Where a webhook's HMAC key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `secret_file`.
    File(PathBuf),
    /// `secret_credential`: a file in `$CREDENTIALS_DIRECTORY`.
    Credential(String),
    /// `secret_env`.
    Env(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_notify_event_is_an_audit_kind_but_rotation_manual() {
        for name in NOTIFY_EVENTS {
            let kind: Result<crate::audit::EventKind, _> =
                serde_json::from_value(serde_json::json!(name));
            match name {
                "rotation.manual" => {}
                _ => assert!(kind.is_ok(), "{name} is no audit event kind"),
            }
        }
        for d in NotifyConfig::DEFAULT_EVENTS {
            assert!(NOTIFY_EVENTS.contains(&d), "{d}");
        }
    }

    #[test]
    fn plain_http_is_refused_except_to_loopback() {
        assert!(notify_url_ok("https://hooks.example.com/k").is_ok());
        assert!(notify_url_ok("http://127.0.0.1:8080/k").is_ok());
        assert!(notify_url_ok("http://[::1]:8080/k").is_ok());
        assert!(notify_url_ok("http://localhost/k").is_ok());
        let e = notify_url_ok("http://hooks.example.com/k").unwrap_err();
        assert!(e.contains("use https://"), "{e}");
        assert!(notify_url_ok("https://u:p@hooks.example.com/").is_err());
        assert!(notify_url_ok("ftp://hooks.example.com/").is_err());
    }
}
