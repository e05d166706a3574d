//! The audit sinks the configuration asks for, and the `daemon.audit_retention` task.

use super::ServiceError;
use crate::audit::{AuditSink, Detached, FileSink, JournaldSink, StdoutFormat, StdoutSink, Tee};
use crate::clock::SystemClock;
use crate::config::{AuditStdout, Loaded};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

/// The audit sinks the configuration asks for: the file first (record of truth).
pub(crate) fn audit_sinks(loaded: &Loaded) -> Result<Arc<dyn AuditSink>, ServiceError> {
    let path = &loaded.config.daemon.audit_log;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ServiceError::AuditFolder {
            path: dir.to_owned(),
            source,
        })?;
    }
    let mut sinks: Vec<Arc<dyn AuditSink>> = vec![Arc::new(FileSink::open(path)?)];
    // Copies go through a queue so a slow stdout or journal never holds up a rotation.
    let stdout: Option<Arc<dyn AuditSink>> = match loaded.config.daemon.audit_stdout {
        AuditStdout::Off => None,
        AuditStdout::Json => Some(Arc::new(StdoutSink(StdoutFormat::Json))),
        AuditStdout::Human => Some(Arc::new(StdoutSink(StdoutFormat::Human))),
    };
    if let Some(s) = stdout {
        let copy =
            Detached::spawn("stdout", s, 4096).map_err(|source| ServiceError::AuditCopy {
                sink: "stdout",
                source,
            })?;
        sinks.push(Arc::new(copy));
    }
    // Under systemd, a structured copy in the journal.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match JournaldSink::connect() {
            Ok(j) => {
                let copy = Detached::spawn("journald", Arc::new(j), 4096).map_err(|source| {
                    ServiceError::AuditCopy {
                        sink: "journald",
                        source,
                    }
                })?;
                sinks.push(Arc::new(copy));
            }
            Err(e) => tracing::warn!(error = %e, "no audit copy in the journal"),
        }
    }
    Ok(Arc::new(Tee(sinks)))
}

/// How often the retention looks for rotated audit files to remove.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// `daemon.audit_retention`: at start-up and then hourly until `stopped`, removes the
/// oldest rotated audit files older than `retention` (`audit::file::plan_prune`), each
/// removal announced first by an `audit.pruned` record; nothing is removed when that record
/// cannot be written.
pub(super) async fn prune_audit_files(
    log: PathBuf,
    retention: std::time::Duration,
    audit: Arc<dyn AuditSink>,
    clock: Arc<SystemClock>,
    stopped: impl Future<Output = ()>,
) {
    use crate::audit::file::{plan_prune, pruned_detail};
    use crate::clock::Clock;
    // In days when whole days (humantime would say "1year 1month 4days 7h 26m 24s" for 400).
    let written = match retention.as_secs() {
        s if s % 86400 == 0 => format!("{}days", s / 86400),
        _ => humantime::format_duration(retention).to_string(),
    };
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stopped => return,
        }
        let now = clock.now();
        let path = log.clone();
        let plan = tokio::task::spawn_blocking(move || plan_prune(&path, retention, now)).await;
        let plan = match plan {
            Ok(Ok(Some(plan))) => plan,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => {
                tracing::warn!(log = %log.display(), error = %e, "audit retention: cannot look at the rotated audit files; none removed");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "audit retention: the task failed; this is a bug in keyturn");
                continue;
            }
        };
        let mut ev = crate::audit::AuditEvent::new(crate::audit::EventKind::AuditPruned, now);
        ev.outcome = Some(crate::audit::Outcome::Success);
        ev.detail = Some(pruned_detail(&plan, &written));
        if let Err(e) = audit.record(&ev).await {
            tracing::error!(error = %e, "audit retention: cannot record audit.pruned; no file removed");
            continue;
        }
        match tokio::task::spawn_blocking(move || plan.apply().map(|()| plan)).await {
            Ok(Ok(plan)) => tracing::info!(
                files = plan.files.len(),
                starts_at = plan.starts_at,
                "audit retention: removed the oldest rotated audit files"
            ),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "audit retention: a rotated audit file could not be removed; the next run tries again")
            }
            Err(e) => {
                tracing::error!(error = %e, "audit retention: the task failed; this is a bug in keyturn")
            }
        }
    }
}
