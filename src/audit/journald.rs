//! A copy of each record in the systemd journal, with structured fields
//! (`KEYTURN_EVENT`, `KEYTURN_ACCOUNT`, …) so `journalctl KEYTURN_ACCOUNT=coreview` finds it.
//!
//! It speaks journald's native protocol (one datagram of `KEY=value` lines to
//! `/run/systemd/journal/socket`) directly: the protocol is a few lines, needs no unsafe
//! code, and keeps audit records out of the diagnostic `tracing` pipeline (a
//! `tracing-journald` layer would mix them). The socket is non-blocking and a failed send
//! is only logged: the copy never holds up or fails the file sink.

use super::{AuditError, AuditEvent, AuditSink, Outcome};
use async_trait::async_trait;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// journald's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Sends records to journald.
pub struct JournaldSink {
    socket: UnixDatagram,
    path: PathBuf,
}

impl JournaldSink {
    /// Connects to the system journal.
    pub fn connect() -> std::io::Result<Self> {
        Self::connect_to(Path::new(JOURNAL_SOCKET))
    }

    /// Connects to a journald-protocol socket at `path` (tests).
    pub fn connect_to(path: &Path) -> std::io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        socket.set_nonblocking(true)?;
        Ok(JournaldSink {
            socket,
            path: path.to_owned(),
        })
    }

    /// The datagram for `event`.
    pub fn payload(event: &AuditEvent) -> Vec<u8> {
        let mut out = Vec::new();
        let priority = match event.outcome {
            Some(Outcome::Failure) => "3",
            Some(Outcome::Warning) => "4",
            _ => "6",
        };
        field(&mut out, "MESSAGE", &event.human());
        field(&mut out, "PRIORITY", priority);
        field(&mut out, "SYSLOG_IDENTIFIER", "keyturn-audit");
        field(&mut out, "KEYTURN_EVENT", event.event.as_str());
        let opt = |v: &Option<String>| v.clone();
        let pairs: [(&str, Option<String>); 13] = [
            ("KEYTURN_ACCOUNT", opt(&event.account)),
            (
                "KEYTURN_ROTATION_ID",
                event.rotation_id.map(|u| u.to_string()),
            ),
            ("KEYTURN_USER", opt(&event.user)),
            ("KEYTURN_VAULT", opt(&event.vault)),
            ("KEYTURN_SECRET", opt(&event.secret)),
            ("KEYTURN_VERSION", opt(&event.version)),
            (
                "KEYTURN_TRIGGER",
                event.trigger.map(|t| t.as_str().to_owned()),
            ),
            (
                "KEYTURN_OUTCOME",
                event.outcome.and_then(|o| {
                    serde_json::to_value(o)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                }),
            ),
            ("KEYTURN_REASON", opt(&event.reason)),
            ("KEYTURN_TICKET", opt(&event.ticket)),
            ("KEYTURN_REQUEST_ID", opt(&event.request_id)),
            (
                "KEYTURN_ERROR_CODE",
                event.error.as_ref().and_then(|e| e.code.clone()),
            ),
            (
                "KEYTURN_DURATION_MS",
                event.duration_ms.map(|d| d.to_string()),
            ),
        ];
        for (k, v) in pairs {
            if let Some(v) = v {
                field(&mut out, k, &v);
            }
        }
        field(
            &mut out,
            "KEYTURN_RECORD",
            &serde_json::to_string(event).unwrap_or_default(),
        );
        out
    }
}

/// Appends one field; values holding a newline use the protocol's length-prefixed form.
fn field(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(key.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    } else {
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
    }
    out.push(b'\n');
}

#[async_trait]
impl AuditSink for JournaldSink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        if let Err(e) = self.socket.send(&Self::payload(event)) {
            tracing::warn!(socket = %self.path.display(), error = %e, "cannot copy an audit record to journald (the audit file has it)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::EventKind;
    use time::macros::datetime;

    #[tokio::test]
    async fn records_arrive_as_structured_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let sink = JournaldSink::connect_to(&path).unwrap();
        let mut ev = AuditEvent::new(EventKind::RotationFailed, datetime!(2026-11-22 10:00 UTC));
        ev.account = Some("coreview".into());
        ev.outcome = Some(Outcome::Failure);
        ev.detail = Some("two\nlines".into());
        sink.record(&ev).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let n = server.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.contains("KEYTURN_EVENT=rotation.failed\n"));
        assert!(text.contains("KEYTURN_ACCOUNT=coreview\n"));
        assert!(text.contains("PRIORITY=3\n"));
        assert!(text.contains("SYSLOG_IDENTIFIER=keyturn-audit\n"));
        // A closed socket does not fail the record.
        drop(server);
        sink.record(&ev).await.unwrap();
    }
}
