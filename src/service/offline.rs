//! `keyturn rotate --offline`: one rotation wired without a daemon, and the audit record of
//! an attempt that stopped before the engine recorded anything.

use super::{audit_sinks, ServiceError};
use crate::audit::{AuditSink, Trigger};
use crate::clock::SystemClock;
use crate::config::{Loaded, EXIT_CONFIG};
use crate::daemon::InstanceLock;
use crate::protocol::{Engine, Request};
use std::sync::Arc;

/// `keyturn rotate --offline ACCOUNT`: one rotation in the foreground, under the daemon's
/// lock, with the result printed for the command line; returns the exit code. The
/// `[[notify]]` sinks get its events too: they are delivered (for a bounded time) before it
/// returns.
pub(crate) async fn rotate_offline(
    loaded: Loaded,
    account: &str,
    reason: Option<String>,
    ticket: Option<String>,
) -> Result<i32, ServiceError> {
    // With `[ha]`, the local lock says nothing about the replicas on other machines: one of
    // them may lead and act on this very account.
    if loaded.config.ha.is_some() {
        eprintln!("keyturn: with [ha], an offline rotation could run while another replica leads; rotate through the leader instead (keyturn rotate {account} --reason ...), or stop every replica and remove [ha] first (docs/ha.md)");
        return Ok(EXIT_CONFIG);
    }
    // Released when dropped on an early return (kept unclean if it inherited a crash it has
    // not waited out yet); `release` below once it has.
    let lock = InstanceLock::acquire(&loaded.config.daemon.state_dir)?;
    let file_audit = audit_sinks(&loaded)?;
    // No listener reports on one rotation's requests.
    let http = crate::azure::http_client(
        &loaded.config.tls,
        &loaded.config.network,
        crate::observe::unobserved(),
    )?;
    let notifier = crate::notifications::Notifier::start(
        &loaded.config,
        &http,
        crate::observe::unobserved(),
        file_audit.clone(),
    )
    .map_err(super::notify_error)?;
    let audit: Arc<dyn AuditSink> = match &notifier {
        Some(n) => Arc::new(crate::audit::Tee(vec![file_audit, n.sink()])),
        None => file_audit,
    };
    let drain = super::NOTIFY_DRAIN.min(loaded.config.daemon.shutdown_grace);
    let code = rotate_one(loaded, account, reason, ticket, lock, audit, http).await;
    if let Some(n) = notifier {
        n.stop(drain).await;
    }
    code
}

/// The rotation of [`rotate_offline`], its lock taken and its sinks and client built.
async fn rotate_one(
    loaded: Loaded,
    account: &str,
    reason: Option<String>,
    ticket: Option<String>,
    lock: InstanceLock,
    audit: Arc<dyn AuditSink>,
    http: crate::azure::Http,
) -> Result<i32, ServiceError> {
    let request = Request {
        trigger: Trigger::Cli,
        actor: crate::audit::Actor::current_user(),
        reason,
        ticket,
        rotation_id: None,
        urgent: false,
        adopt: false,
    };
    let accounts = match crate::app::accounts(&loaded, &http) {
        Ok(a) => a,
        Err(e) => {
            offline_not_started(&*audit, account, &request, e.to_string()).await;
            return Err(e.into());
        }
    };
    if lock.unclean {
        let delay = loaded.config.daemon.unclean_start_delay;
        eprintln!("keyturn: the previous keyturn stopped uncleanly; waiting {} for its in-flight requests to settle", humantime::format_duration(delay));
        tokio::time::sleep(delay).await;
    }
    let Some(managed) = accounts.into_iter().find(|m| m.account.name == account) else {
        let missing = format!("no account named {account:?} in {}", loaded.path.display());
        offline_not_started(&*audit, account, &request, missing.clone()).await;
        lock.release();
        eprintln!("keyturn: {missing}");
        return Ok(EXIT_CONFIG);
    };
    if !managed.enabled {
        let disabled = format!(
            "account {account:?} is disabled (enabled = false in {}): keyturn leaves it alone; set enabled = true to rotate it",
            loaded.path.display()
        );
        offline_not_started(&*audit, account, &request, disabled.clone()).await;
        lock.release();
        eprintln!("keyturn: {disabled}");
        return Ok(EXIT_CONFIG);
    }
    let engine = Engine::new(
        audit.clone(),
        Arc::new(SystemClock),
        crate::app::tuning(&loaded),
    );
    let result = engine.rotate(&managed.account, &request).await;
    // A first read of Key Vault that failed stops the engine before its first record.
    if let Err(e @ crate::protocol::RotationError::Read { .. }) = &result {
        offline_not_started(&*audit, account, &request, e.to_string()).await;
    }
    lock.release();
    match result {
        Ok(r) => {
            println!(
                "rotated {account}: rotation {} version {}{}",
                r.rotation_id,
                r.version,
                if r.resumed {
                    " (completed a pending rotation)"
                } else {
                    ""
                }
            );
            for w in r.warnings {
                println!("warning: {w}");
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            Ok(if e.is_pending() { 75 } else { 1 })
        }
    }
}

/// Records who tried `keyturn rotate --offline` on `account` when it stopped before the
/// engine recorded anything (credentials, an unknown account, Key Vault unreadable): a
/// `rotation.failed` with the actor, reason and ticket. A record that cannot be written is
/// logged; the command fails anyway.
async fn offline_not_started(
    audit: &dyn AuditSink,
    account: &str,
    request: &Request,
    message: String,
) {
    let mut ev = crate::audit::AuditEvent::new(
        crate::audit::EventKind::RotationFailed,
        time::OffsetDateTime::now_utc(),
    );
    ev.account = Some(account.to_owned());
    ev.trigger = Some(request.trigger);
    ev.actor = Some(request.actor.clone());
    ev.reason = request.reason.clone();
    ev.ticket = request.ticket.clone();
    ev.outcome = Some(crate::audit::Outcome::Failure);
    ev.error = Some(crate::audit::ErrorInfo {
        kind: "not_started".into(),
        message: crate::azure::bounded(&message, None, crate::azure::MAX_DETAIL_CHARS),
        ..Default::default()
    });
    ev.detail = Some("keyturn rotate --offline could not start; nothing was changed".into());
    if let Err(e) = audit.record(&ev).await {
        tracing::error!(error = %e, "cannot record the failed rotate --offline in the audit log");
    }
}
