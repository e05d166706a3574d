//! The admin Unix socket: bound with mode 0660 and a configured group before readiness is
//! reported, every connection's peer credentials checked (root, the daemon's own user,
//! members of the admin groups, supplementary groups included), one request per line
//! (`proto`), each command audited with who sent it. A slow, silent or hostile client
//! holds only its own task: reads and writes have time limits, lines a size limit, and
//! connections a cap.

pub mod client;
pub mod proto;

use crate::audit::{Actor, AuditEvent, AuditSink, EventKind, Outcome, Trigger};
use crate::clock::Clock;
use crate::config::AdminConfig;
use crate::daemon::{Command, StatusBoard};
use futures::{SinkExt, StreamExt};
use proto::{Request, Response, Target, MAX_REQUEST};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin socket {path}: {detail}")]
    Bind { path: PathBuf, detail: String },
    #[error(
        "admin group {group:?} does not exist; create it or fix admin.group / admin.allowed_groups"
    )]
    NoGroup { group: String },
}

/// Who may connect.
#[derive(Debug, Clone)]
pub struct Access {
    own_uid: u32,
    gids: Vec<u32>,
}

/// A connected client, from `SO_PEERCRED` and `/proc/<pid>/status`.
#[derive(Debug, Clone)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups of the client process.
    pub groups: Vec<u32>,
    /// The user's name, when it has one.
    pub name: Option<String>,
}

impl Peer {
    /// The audit actor for this client.
    pub fn actor(&self) -> Actor {
        Actor::User {
            uid: self.uid,
            name: self.name.clone(),
            pid: self.pid,
        }
    }
}

fn gid_of(group: &str) -> Result<u32, AdminError> {
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(AdminError::NoGroup {
            group: group.to_owned(),
        }),
    }
}

impl Access {
    /// Root, this process's user, and the members of `group` and `allowed_groups`.
    pub fn from_config(cfg: &AdminConfig) -> Result<Self, AdminError> {
        let mut gids = Vec::new();
        for g in std::iter::once(&cfg.group).chain(cfg.allowed_groups.iter()) {
            if !g.is_empty() {
                gids.push(gid_of(g)?);
            }
        }
        Ok(Access {
            own_uid: nix::unistd::getuid().as_raw(),
            gids,
        })
    }

    /// True when `peer` may use the socket.
    pub fn allows(&self, peer: &Peer) -> bool {
        peer.uid == 0
            || peer.uid == self.own_uid
            || self.gids.contains(&peer.gid)
            || peer.groups.iter().any(|g| self.gids.contains(g))
    }
}

/// Reads the peer's credentials.
pub fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = stream.peer_cred()?;
    let pid = cred.pid();
    let groups = pid.map(supplementary_groups).unwrap_or_default();
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(cred.uid()))
        .ok()
        .flatten()
        .map(|u| u.name);
    Ok(Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid,
        groups,
        name,
    })
}

/// The supplementary groups of a process, from `/proc/<pid>/status`.
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Groups:")).map(|l| {
                l["Groups:".len()..]
                    .split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Binds the socket at `path`: removes a stale socket file, refuses to take over a live
/// one, then sets mode 0660 and the group.
pub fn bind(cfg: &AdminConfig) -> Result<UnixListener, AdminError> {
    let path = &cfg.socket;
    let err = |detail: String| AdminError::Bind {
        path: path.clone(),
        detail,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(err(
                "exists and is not a socket; remove it or choose another admin.socket".into(),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(
                "another process is listening on it (is keyturn already running?)".into(),
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err(format!("cannot bind: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| err(format!("cannot chmod 0660: {e}")))?;
    if !cfg.group.is_empty() {
        let gid = gid_of(&cfg.group)?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
            err(format!(
                "cannot give the socket to group {:?}: {e}",
                cfg.group
            ))
        })?;
    }
    Ok(listener)
}

/// Reloads the configuration (SIGHUP and the `reload` command share it).
#[async_trait::async_trait]
pub trait Reload: Send + Sync {
    /// Loads, validates and applies the configuration file; `Err` keeps the old one.
    async fn reload(&self, actor: Actor) -> Result<String, String>;
}

/// What the server needs from the daemon.
pub struct Handler {
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
    pub require_reason: bool,
    /// Refuse `rotate` without a ticket.
    pub require_ticket: bool,
}

/// Limits for [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a client may take to send a request (and to read a response).
    pub request_timeout: Duration,
}

/// Serves the socket until `shutdown` completes.
pub async fn serve(
    listener: UnixListener,
    access: Access,
    handler: Arc<Handler>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let access = Arc::new(access);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let access = access.clone();
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    connection(stream, &access, &handler, limits).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let mut framed =
                        Framed::new(stream, LinesCodec::new_with_max_length(MAX_REQUEST));
                    let busy =
                        Response::error("busy", "too many admin connections; try again shortly");
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), framed.send(busy.encode()))
                            .await;
                });
            }
        }
    }
}

async fn connection(stream: UnixStream, access: &Access, handler: &Handler, limits: Limits) {
    let peer = match peer_of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read an admin client's credentials; closing");
            return;
        }
    };
    let mut framed = Framed::new(stream, LinesCodec::new_with_max_length(MAX_REQUEST));
    if !access.allows(&peer) {
        let mut ev = AuditEvent::new(EventKind::AdminCommandRefused, handler.clock.now());
        ev.actor = Some(peer.actor());
        ev.outcome = Some(Outcome::Failure);
        ev.detail = Some(format!(
            "uid {} gid {} pid {} is not root, keyturn's user, nor in an admin group",
            peer.uid,
            peer.gid,
            peer.pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "?".into())
        ));
        let _ = handler.audit.record(&ev).await;
        tracing::warn!(uid = peer.uid, gid = peer.gid, pid = ?peer.pid, "admin connection refused");
        let _ = send(
            &mut framed,
            limits,
            Response::error(
                "forbidden",
                "permission denied: ask for membership of the keyturn admin group",
            ),
        )
        .await;
        return;
    }
    loop {
        let line = match tokio::time::timeout(limits.request_timeout, framed.next()).await {
            Err(_) => return, // silent client: close
            Ok(None) => return,
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(LinesCodecError::MaxLineLengthExceeded))) => {
                let _ = send(
                    &mut framed,
                    limits,
                    Response::error(
                        "too_large",
                        format!("requests are limited to {MAX_REQUEST} bytes"),
                    ),
                )
                .await;
                return;
            }
            Ok(Some(Err(LinesCodecError::Io(e)))) => {
                // Invalid UTF-8 shows up here too.
                let _ = send(
                    &mut framed,
                    limits,
                    Response::error("bad_request", format!("unreadable request: {e}")),
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
            Err(e) => Response::error(e.code, e.message),
        };
        if !matches!(send(&mut framed, limits, response).await, Ok(Ok(()))) {
            return;
        }
    }
}

async fn send(
    framed: &mut Framed<UnixStream, LinesCodec>,
    limits: Limits,
    r: Response,
) -> Result<Result<(), LinesCodecError>, tokio::time::error::Elapsed> {
    tokio::time::timeout(limits.request_timeout, framed.send(r.encode())).await
}

async fn audit_command(handler: &Handler, peer: &Peer, req: &Request) -> Result<(), Response> {
    let mut ev = AuditEvent::new(EventKind::AdminCommandAccepted, handler.clock.now());
    ev.actor = Some(peer.actor());
    ev.outcome = Some(Outcome::Success);
    ev.trigger = Some(Trigger::Socket);
    let target = |t: &Target| t.name().unwrap_or_else(|| "all".into());
    ev.detail = Some(match req {
        Request::Rotate {
            target: t, wait, ..
        } => format!(
            "rotate {}{}",
            target(t),
            if *wait { "" } else { " (no wait)" }
        ),
        Request::Pause(t) | Request::Resume(t) | Request::Reconcile(t) => {
            format!("{} {}", req.name(), target(t))
        }
        Request::Status | Request::Reload => req.name().to_owned(),
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
    }
    handler.audit.record(&ev).await.map_err(|e| {
        Response::error(
            "audit_unavailable",
            format!("the command was not run because it could not be recorded: {e}"),
        )
    })
}

async fn handle(req: Request, peer: &Peer, handler: &Handler) -> Response {
    if let Request::Rotate { reason, ticket, .. } = &req {
        if handler.require_reason && reason.is_none() {
            return Response::error(
                "reason_required",
                "this daemon requires a reason for manual rotations: add --reason",
            );
        }
        if handler.require_ticket && ticket.is_none() {
            return Response::error(
                "ticket_required",
                "this daemon requires a ticket for manual rotations: add --ticket",
            );
        }
    }
    if !matches!(req, Request::Status) {
        if let Err(r) = audit_command(handler, peer, &req).await {
            return r;
        }
    }
    let gone = || Response::error("stopping", "the daemon is stopping");
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
        } => {
            let (tx, rx) = oneshot::channel();
            let request = crate::protocol::Request {
                trigger: Trigger::Socket,
                actor: peer.actor(),
                reason,
                ticket,
                rotation_id: None,
            };
            let cmd = Command::Rotate {
                account: target.name(),
                request,
                wait,
                reply: Some(tx),
            };
            if handler.commands.send(cmd).await.is_err() {
                return gone();
            }
            match rx.await {
                Ok(results) => {
                    let all_ok = results.iter().all(|(_, r)| r.is_ok());
                    let list: Vec<_> = results
                        .into_iter()
                        .map(|(name, r)| match r {
                            Ok(s) => {
                                serde_json::json!({"account": name, "ok": true, "rotation": s})
                            }
                            Err(e) => serde_json::json!({"account": name, "ok": false, "error": e}),
                        })
                        .collect();
                    if all_ok {
                        Response::ok(serde_json::json!({ "accounts": list }))
                    } else {
                        Response {
                            v: proto::VERSION,
                            ok: false,
                            result: Some(serde_json::json!({ "accounts": list })),
                            error: Some(proto::ErrorBody {
                                code: "rotation_failed".into(),
                                message: "one or more rotations did not complete; see each account"
                                    .into(),
                            }),
                        }
                    }
                }
                Err(_) => gone(),
            }
        }
        Request::Pause(t) => pause(handler, t, true).await,
        Request::Resume(t) => pause(handler, t, false).await,
        Request::Reload => match &handler.reload {
            Some(r) => match r.reload(peer.actor()).await {
                Ok(summary) => Response::ok(serde_json::json!({ "summary": summary })),
                Err(e) => Response::error("invalid_config", e),
            },
            None => Response::error("unsupported", "reload is not available in this mode"),
        },
        Request::Reconcile(t) => {
            let (tx, rx) = oneshot::channel();
            let request = crate::protocol::Request {
                trigger: Trigger::Recovery,
                actor: peer.actor(),
                reason: None,
                ticket: None,
                rotation_id: None,
            };
            if handler
                .commands
                .send(Command::Reconcile {
                    account: t.name(),
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
        account: target.name(),
        paused,
        reply: Some(tx),
    };
    if handler.commands.send(cmd).await.is_err() {
        return Response::error("stopping", "the daemon is stopping");
    }
    acks(rx.await.ok())
}

fn acks(results: Option<Vec<crate::daemon::AccountAck>>) -> Response {
    let Some(results) = results else {
        return Response::error("stopping", "the daemon is stopping");
    };
    let all_ok = results.iter().all(|(_, r)| r.is_ok());
    let list: Vec<_> = results
        .into_iter()
        .map(|(name, r)| match r {
            Ok(m) => serde_json::json!({"account": name, "ok": true, "result": m}),
            Err(e) => serde_json::json!({"account": name, "ok": false, "error": e}),
        })
        .collect();
    let mut r = Response::ok(serde_json::json!({ "accounts": list }));
    if !all_ok {
        r.ok = false;
        r.error = Some(proto::ErrorBody {
            code: "failed".into(),
            message: "the command failed for one or more accounts; see each account".into(),
        });
    }
    r
}

/// The socket path a client should use: `--socket`, else the config's, else the default.
pub fn socket_path(explicit: Option<&Path>, config: Option<&crate::config::Config>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| config.map(|c| c.admin.socket.clone()))
        .unwrap_or_else(|| AdminConfig::default().socket)
}
