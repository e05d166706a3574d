//! Building and recording the engine's audit events, and the error details they carry.

use super::{Ctx, Engine, RotationError};
use crate::audit::{AuditEvent, ErrorInfo, EventKind, Outcome};
use crate::directory::DirectoryError;
use crate::store::StoreError;

impl Engine {
    pub(super) async fn record(&self, account: &str, ev: AuditEvent) -> Result<(), RotationError> {
        self.audit
            .record(&ev)
            .await
            .map_err(|source| RotationError::Audit {
                account: account.to_owned(),
                source,
            })
    }

    pub(super) fn event(&self, ctx: &Ctx<'_>, kind: EventKind) -> AuditEvent {
        let mut ev = AuditEvent::new(kind, self.clock.now());
        ev.account = Some(ctx.account.name.clone());
        ev.rotation_id = Some(ctx.rotation_id);
        ev.user = Some(ctx.account.user.clone());
        ev.vault = Some(ctx.account.store.vault().to_owned());
        ev.trigger = Some(ctx.request.trigger);
        ev.actor = Some(ctx.request.actor.clone());
        ev
    }

    pub(super) fn end_event(&self, ctx: &Ctx<'_>, kind: EventKind, outcome: Outcome) -> AuditEvent {
        let mut ev = self.event(ctx, kind);
        ev.outcome = Some(outcome);
        ev.reason = ctx.request.reason.clone();
        ev.ticket = ctx.request.ticket.clone();
        ev.duration_ms = Some(ctx.started.elapsed().as_millis() as u64);
        ev
    }
}

pub(super) fn store_error_info(e: &StoreError) -> ErrorInfo {
    ErrorInfo {
        kind: e.kind().into(),
        http_status: e.status(),
        code: e.code().map(String::from),
        request_id: e.request_id().map(String::from),
        message: e.to_string(),
    }
}

pub(super) fn directory_error_info(e: &DirectoryError) -> ErrorInfo {
    ErrorInfo {
        kind: e.kind().into(),
        http_status: e.status(),
        code: e.code(),
        request_id: e.request_id().map(String::from),
        message: e.to_string(),
    }
}
