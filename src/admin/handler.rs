//! One request: the policy checks, the audit record of who sent it, the command sent to
//! the daemon, and its answer (failures mapped to wire codes by [`CommandError`]).

use super::access::Peer;
use super::proto::{Request, Response, Target};
use super::{CommandError, Reply};
use crate::audit::{AuditEvent, AuditSink, EventKind, Outcome, Trigger};
use crate::clock::Clock;
use crate::daemon::{AccountFailure, Command, StatusBoard};
use crate::reload::Reload;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the server needs from the daemon.
pub(crate) struct Handler {
    /// The daemon's command channel.
    pub commands: mpsc::Sender<Command>,
    /// The daemon's status.
    pub board: StatusBoard,
    /// Where commands are recorded.
    pub audit: Arc<dyn AuditSink>,
    /// Time source for audit records.
    pub clock: Arc<dyn Clock>,
    /// Configuration reload.
    pub reload: Option<Arc<dyn Reload>>,
    /// Refuse `rotate` without a reason.
    pub(crate) require_reason: bool,
    /// Refuse `rotate` without a ticket.
    pub(crate) require_ticket: bool,
}

async fn audit_command(handler: &Handler, peer: &Peer, req: &Request) -> Result<(), Response> {
    let mut ev = AuditEvent::new(EventKind::AdminCommandAccepted, handler.clock.now());
    ev.actor = Some(peer.actor());
    ev.outcome = Some(Outcome::Success);
    ev.trigger = Some(Trigger::Socket);
    ev.detail = Some(match req {
        Request::Rotate {
            target: t,
            wait,
            urgent,
            ..
        } => format!(
            "rotate {}{}{}",
            t,
            if *urgent {
                " urgently (may use the budget reserved for the vaults' other clients)"
            } else {
                ""
            },
            if *wait { "" } else { " (no wait)" }
        ),
        Request::Pause(t) | Request::Resume(t) | Request::Reconcile(t) => {
            format!("{} {}", req.name(), t)
        }
        Request::Status | Request::Reload => req.name().to_owned(),
        Request::Adopt { account, force, .. } => {
            format!("adopt {account}{}", if *force { " (force)" } else { "" })
        }
    });
    if let Request::Rotate {
        target: Target::One(a),
        reason,
        ticket,
        ..
    } = req
    {
        ev.account = Some(a.clone());
        ev.reason = reason.clone();
        ev.ticket = ticket.clone();
    } else if let Request::Rotate { reason, ticket, .. } = req {
        ev.reason = reason.clone();
        ev.ticket = ticket.clone();
    } else if let Request::Adopt {
        account,
        reason,
        ticket,
        ..
    } = req
    {
        ev.account = Some(account.clone());
        ev.reason = reason.clone();
        ev.ticket = ticket.clone();
    }
    handler
        .audit
        .record(&ev)
        .await
        .map_err(|source| Response::error(&CommandError::AuditUnavailable { source }))
}

pub(super) async fn handle(req: Request, peer: &Peer, handler: &Handler) -> Response {
    if let Request::Rotate { reason, ticket, .. } = &req {
        if handler.require_reason && reason.is_none() {
            return Response::error(&CommandError::ReasonRequired);
        }
        if handler.require_ticket && ticket.is_none() {
            return Response::error(&CommandError::TicketRequired);
        }
    }
    if let Request::Adopt { reason, ticket, .. } = &req {
        if reason.is_none() {
            return Response::error(&CommandError::AdoptReasonRequired);
        }
        if handler.require_ticket && ticket.is_none() {
            return Response::error(&CommandError::TicketRequired);
        }
    }
    if !matches!(req, Request::Status) {
        let standby = handler
            .board
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .standby()
            .map(|h| h.leader.clone());
        if let Some(leader) = standby {
            return Response::error(&CommandError::NotLeader { leader });
        }
        if let Err(r) = audit_command(handler, peer, &req).await {
            return r;
        }
    }
    let gone = || Response::error(&CommandError::Stopping);
    match req {
        Request::Status => {
            let mut status = handler
                .board
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            status.audit = handler.audit.health();
            Response::ok(serde_json::to_value(status).unwrap_or_default())
        }
        Request::Rotate {
            target,
            reason,
            ticket,
            wait,
            urgent,
        } => {
            let (tx, rx) = oneshot::channel();
            let request = crate::protocol::Request {
                trigger: Trigger::Socket,
                actor: peer.actor(),
                reason,
                ticket,
                rotation_id: None,
                urgent,
                adopt: false,
            };
            let cmd = Command::Rotate {
                target,
                request,
                wait,
                reply: Some(tx),
            };
            if handler.commands.send(cmd).await.is_err() {
                return gone();
            }
            match rx.await {
                Ok(results) => per_account(Reply::Rotate, "rotation", results),
                Err(_) => gone(),
            }
        }
        Request::Adopt {
            account,
            reason,
            ticket,
            force,
        } => {
            let (tx, rx) = oneshot::channel();
            let request = crate::protocol::Request {
                trigger: Trigger::Socket,
                actor: peer.actor(),
                reason,
                ticket,
                rotation_id: None,
                urgent: false,
                adopt: false,
            };
            let cmd = Command::Adopt {
                account,
                request,
                force,
                reply: Some(tx),
            };
            if handler.commands.send(cmd).await.is_err() {
                return gone();
            }
            match rx.await {
                Ok(results) => per_account(Reply::Rotate, "rotation", results),
                Err(_) => gone(),
            }
        }
        Request::Pause(t) => pause(handler, t, true).await,
        Request::Resume(t) => pause(handler, t, false).await,
        Request::Reload => match &handler.reload {
            Some(r) => match r.reload(peer.actor()).await {
                Ok(summary) => Response::ok(serde_json::json!({ "summary": summary })),
                Err(e) => Response::error(&CommandError::Reload(e)),
            },
            None => Response::error(&CommandError::ReloadUnsupported),
        },
        Request::Reconcile(t) => {
            let (tx, rx) = oneshot::channel();
            let request = crate::protocol::Request {
                trigger: Trigger::Recovery,
                actor: peer.actor(),
                reason: None,
                ticket: None,
                rotation_id: None,
                urgent: false,
                adopt: false,
            };
            if handler
                .commands
                .send(Command::Reconcile {
                    target: t,
                    request,
                    reply: Some(tx),
                })
                .await
                .is_err()
            {
                return gone();
            }
            acks(rx.await.ok())
        }
    }
}

async fn pause(handler: &Handler, target: Target, paused: bool) -> Response {
    let (tx, rx) = oneshot::channel();
    let cmd = Command::Pause {
        target,
        paused,
        reply: Some(tx),
    };
    if handler.commands.send(cmd).await.is_err() {
        return Response::error(&CommandError::Stopping);
    }
    acks(rx.await.ok())
}

fn acks(results: Option<Vec<crate::daemon::AccountAck>>) -> Response {
    match results {
        Some(results) => per_account(Reply::Ack, "result", results),
        None => Response::error(&CommandError::Stopping),
    }
}

/// The answer listing each account's result: its value under `key`, or its failure's text
/// under `error`; an error response (with the same list) when one failed, its code chosen
/// by [`CommandError::for_account`].
fn per_account<T: serde::Serialize>(
    reply: Reply,
    key: &str,
    results: Vec<(String, Result<T, AccountFailure>)>,
) -> Response {
    let mut failed = None;
    let list: Vec<_> = results
        .into_iter()
        .map(|(name, r)| match r {
            Ok(v) => serde_json::json!({"account": name, "ok": true, key: v}),
            Err(e) => {
                failed.get_or_insert_with(|| CommandError::for_account(reply, &e));
                serde_json::json!({"account": name, "ok": false, "error": e.to_string()})
            }
        })
        .collect();
    match failed {
        None => Response::ok(serde_json::json!({ "accounts": list })),
        Some(e) => {
            let mut r = Response::error(&e);
            r.result = Some(serde_json::json!({ "accounts": list }));
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{AccountError, RotationSummary};

    #[test]
    fn per_account_answers_encode_as_before() {
        let acks: Vec<(String, Result<String, AccountFailure>)> = vec![
            ("a".into(), Ok("paused".into())),
            (
                "b".into(),
                Err(AccountError::NoSuchAccount { name: "b".into() }.into()),
            ),
        ];
        assert_eq!(
            per_account(Reply::Ack, "result", acks).encode(),
            r#"{"v":1,"ok":false,"result":{"accounts":[{"account":"a","ok":true,"result":"paused"},{"account":"b","error":"no account named \"b\" is configured","ok":false}]},"error":{"code":"failed","message":"the command failed for one or more accounts; see each account"}}"#
        );
        let rotations: Vec<(String, Result<RotationSummary, AccountFailure>)> = vec![
            (
                "a".into(),
                Ok(RotationSummary {
                    rotation_id: uuid::Uuid::nil(),
                    version: None,
                    resumed: false,
                    warnings: Vec::new(),
                    completed: false,
                }),
            ),
            ("b".into(), Err(AccountError::Paused.into())),
        ];
        assert_eq!(
            per_account(Reply::Rotate, "rotation", rotations).encode(),
            r#"{"v":1,"ok":false,"result":{"accounts":[{"account":"a","ok":true,"rotation":{"completed":false,"resumed":false,"rotation_id":"00000000-0000-0000-0000-000000000000","warnings":[]}},{"account":"b","error":"the account is paused; resume it first","ok":false}]},"error":{"code":"rotation_failed","message":"one or more rotations did not complete; see each account"}}"#
        );
        let ok: Vec<(String, Result<String, AccountFailure>)> =
            vec![("a".into(), Ok("resumed".into()))];
        assert_eq!(
            per_account(Reply::Ack, "result", ok).encode(),
            r#"{"v":1,"ok":true,"result":{"accounts":[{"account":"a","ok":true,"result":"resumed"}]}}"#
        );
    }
}
