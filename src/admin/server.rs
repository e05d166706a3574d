//! Serving the socket: the accept loop with its connection cap, each connection's peer
//! check, time limits and request lines, and the audit summaries of refused connections.

use super::access::{peer_of, Access, Names};
use super::handler::{handle, Handler};
use super::proto::{self, Response, MAX_REQUEST};
use super::refusals::{Refusals, SEVERAL_USERS};
use super::CommandError;
use crate::audit::{Actor, AuditEvent, EventKind, Outcome};
use futures::{SinkExt, StreamExt};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

/// Limits for [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a client may take to send a request (and to read a response).
    pub request_timeout: Duration,
}

/// Serves the socket until `shutdown` completes.
pub(crate) async fn serve(
    listener: UnixListener,
    access: Access,
    handler: Arc<Handler>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let access = Arc::new(access);
    let gate = Arc::new(Gate::default());
    let mut backoff = crate::accept::Backoff::new("admin socket");
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => {
                summarise_refusals(&gate, &handler, true).await;
                return;
            }
            _ = tick.tick() => {
                let (gate, handler) = (gate.clone(), handler.clone());
                tokio::spawn(async move { summarise_refusals(&gate, &handler, false).await });
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => {
                    backoff.succeeded();
                    s
                }
                Err(e) => {
                    backoff.failed(&e).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let access = access.clone();
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let gate = gate.clone();
                tokio::spawn(async move {
                    connection(stream, &access, &gate, &handler, limits).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let mut framed =
                        Framed::new(stream, LinesCodec::new_with_max_length(MAX_REQUEST));
                    let busy = Response::error(&CommandError::Busy);
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), framed.send(busy.encode()))
                            .await;
                });
            }
        }
    }
}

/// What the connections share: user names and the refusal rate limit.
#[derive(Debug, Default)]
struct Gate {
    names: Names,
    refusals: Mutex<Refusals>,
}

/// Records one summary per uid of the refused connections not recorded one by one.
async fn summarise_refusals(gate: &Gate, handler: &Handler, all: bool) {
    let summaries = gate
        .refusals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .summaries(Instant::now(), all);
    for (uid, n) in summaries {
        let mut ev = AuditEvent::new(EventKind::AdminCommandRefused, handler.clock.now());
        ev.outcome = Some(Outcome::Failure);
        ev.detail = Some(if uid == SEVERAL_USERS {
            format!("{n} more refused connections from further users were not recorded one by one")
        } else {
            ev.actor = Some(Actor::User {
                uid,
                name: gate.names.name(uid).await,
                pid: None,
            });
            format!("{n} more refused connections from uid {uid} in the minute after the one recorded were not recorded one by one")
        });
        let _ = handler.audit.record(&ev).await;
        tracing::warn!(uid, refused = n, "admin connections refused (summary)");
    }
}

async fn connection(
    stream: UnixStream,
    access: &Access,
    gate: &Gate,
    handler: &Handler,
    limits: Limits,
) {
    let peer = match peer_of(&stream, &gate.names).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read an admin client's credentials; closing");
            return;
        }
    };
    let mut framed = Framed::new(stream, LinesCodec::new_with_max_length(MAX_REQUEST));
    if !access.allows(&peer) {
        let record = gate
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(peer.uid, Instant::now());
        if record {
            let mut ev = AuditEvent::new(EventKind::AdminCommandRefused, handler.clock.now());
            ev.actor = Some(peer.actor());
            ev.outcome = Some(Outcome::Failure);
            ev.detail = Some(format!(
                "uid {} gid {} pid {} is not root, keyturn's user, nor in an admin group (further refusals of this uid in the next minute are counted, not recorded one by one)",
                peer.uid,
                peer.gid,
                peer.pid
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "?".into())
            ));
            let _ = handler.audit.record(&ev).await;
            tracing::warn!(uid = peer.uid, gid = peer.gid, pid = ?peer.pid, "admin connection refused");
        }
        let _ = send(
            &mut framed,
            limits,
            Response::error(&CommandError::Forbidden),
        )
        .await;
        return;
    }
    // The time a client has for its next request; blank lines do not extend it.
    let mut deadline = tokio::time::Instant::now() + limits.request_timeout;
    loop {
        let line = match tokio::time::timeout_at(deadline, framed.next()).await {
            Err(_) => return, // silent client: close
            Ok(None) => return,
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(LinesCodecError::MaxLineLengthExceeded))) => {
                let _ = send(
                    &mut framed,
                    limits,
                    Response::error(&CommandError::TooLarge),
                )
                .await;
                return;
            }
            Ok(Some(Err(LinesCodecError::Io(e)))) => {
                // Invalid UTF-8 shows up here too.
                let _ = send(
                    &mut framed,
                    limits,
                    Response::error(&CommandError::Unreadable { source: e }),
                )
                .await;
                return;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let response = match proto::decode(&line) {
            Ok(req) => handle(req, &peer, handler).await,
            Err(e) => Response::error(&CommandError::Decode(e)),
        };
        if !matches!(send(&mut framed, limits, response).await, Ok(Ok(()))) {
            return;
        }
        deadline = tokio::time::Instant::now() + limits.request_timeout;
    }
}

async fn send(
    framed: &mut Framed<UnixStream, LinesCodec>,
    limits: Limits,
    r: Response,
) -> Result<Result<(), LinesCodecError>, tokio::time::error::Elapsed> {
    tokio::time::timeout(limits.request_timeout, framed.send(r.encode())).await
}
