//! An audit record as a CloudEvent 1.0 (`cloudevents-sdk`), and which records a sink takes.

use crate::audit::{AuditEvent, EventKind, Trigger};
use cloudevents::{EventBuilder, EventBuilderV10};

/// The prefix of every event's `type`: `io.keyturn.rotation.failed`.
pub(crate) const TYPE_PREFIX: &str = "io.keyturn.";

/// Whether a sink configured with `events` takes `ev`: its kind is named, or
/// `rotation.manual` is and `ev` ends a rotation a person asked for.
pub(crate) fn selected(events: &[String], ev: &AuditEvent) -> bool {
    let kind = ev.event.as_str();
    events.iter().any(|e| {
        e == kind
            || (e == "rotation.manual"
                && matches!(
                    ev.event,
                    EventKind::RotationCompleted
                        | EventKind::RotationFailed
                        | EventKind::RotationAbandoned
                )
                && matches!(
                    ev.trigger,
                    Some(Trigger::Socket | Trigger::Cli | Trigger::Signal)
                ))
    })
}

/// The CloudEvent for `ev`: `id` a fresh UUID (the same for every try of it, so a receiver
/// can drop a repeat), `source` the keyturn instance, `type` `io.keyturn.` + the audit kind,
/// `subject` the account, `time` the record's, `data` the audit record itself (which never
/// holds a password, a token or a key: `docs/audit.md`).
pub(crate) fn cloud_event(
    ev: &AuditEvent,
    source: &str,
) -> Result<cloudevents::Event, cloudevents::event::EventBuilderError> {
    let data = serde_json::to_value(ev).unwrap_or(serde_json::Value::Null);
    let mut b = EventBuilderV10::new()
        .id(uuid::Uuid::new_v4().to_string())
        .source(source)
        .ty(format!("{TYPE_PREFIX}{}", ev.event.as_str()))
        .time(crate::audit::format_time(ev.time))
        .data("application/json", data);
    if let Some(a) = &ev.account {
        b = b.subject(a.as_str());
    }
    b.build()
}

/// The default `source`: `keyturn://HOSTNAME` (the kernel's host name; `localhost` when it
/// cannot be read).
pub(crate) fn default_source() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("keyturn://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Outcome;

    fn record(kind: EventKind, trigger: Option<Trigger>) -> AuditEvent {
        let mut ev = AuditEvent::new(kind, time::macros::datetime!(2026-11-30 10:00:00.5 UTC));
        ev.account = Some("svc-1".into());
        ev.trigger = trigger;
        ev.outcome = Some(Outcome::Failure);
        ev
    }

    #[test]
    fn manual_selects_the_end_of_a_rotation_a_person_asked_for() {
        let manual = vec!["rotation.manual".to_owned()];
        assert!(selected(
            &manual,
            &record(EventKind::RotationCompleted, Some(Trigger::Socket))
        ));
        assert!(selected(
            &manual,
            &record(EventKind::RotationFailed, Some(Trigger::Cli))
        ));
        assert!(!selected(
            &manual,
            &record(EventKind::RotationCompleted, Some(Trigger::Schedule))
        ));
        assert!(!selected(
            &manual,
            &record(EventKind::RotationStarted, Some(Trigger::Socket))
        ));
        let failed = vec!["rotation.failed".to_owned()];
        assert!(selected(
            &failed,
            &record(EventKind::RotationFailed, Some(Trigger::Schedule))
        ));
        assert!(!selected(&failed, &record(EventKind::DriftDetected, None)));
    }

    #[test]
    fn the_cloud_event_carries_the_record() {
        let ev = record(EventKind::RotationFailed, Some(Trigger::Schedule));
        let ce = cloud_event(&ev, "keyturn://host-1").unwrap();
        let json = serde_json::to_value(&ce).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "io.keyturn.rotation.failed");
        assert_eq!(json["source"], "keyturn://host-1");
        assert_eq!(json["subject"], "svc-1");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["time"], "2026-11-30T10:00:00.500Z");
        assert_eq!(json["data"]["event"], "rotation.failed");
        assert_eq!(json["data"]["account"], "svc-1");
        assert!(uuid::Uuid::parse_str(json["id"].as_str().unwrap()).is_ok());
    }
}
