//! The admin Unix socket: bound with mode 0660, the configured group and a POSIX ACL entry
//! per allowed group before readiness is reported, every connection's peer credentials
//! checked (root, the daemon's own user, members of the admin groups, supplementary groups
//! included, all as the kernel recorded them at `connect`), one request per line (`proto`),
//! each command audited with who sent it. A slow, silent or hostile client holds only its
//! own task: reads and writes have time limits (blank lines do not extend them), lines a
//! size limit, and connections a cap; refused connections are audited at most once a
//! minute per uid, with a count of the rest.

pub mod client;
mod error;
pub mod proto;

pub use error::{CommandError, ErrorCode};

use crate::audit::{Actor, AuditEvent, AuditSink, EventKind, Outcome, Trigger};
use crate::clock::Clock;
use crate::config::AdminConfig;
use crate::daemon::{Command, StatusBoard};
use futures::{SinkExt, StreamExt};
use proto::{Request, Response, Target, MAX_REQUEST};
use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    #[error("admin socket {path}: cannot let admin.allowed_groups connect through a POSIX ACL: {detail}; put the socket on a file system with ACLs (tmpfs and ext4 have them), or use admin.group alone")]
    Acl { path: PathBuf, detail: String },
}

/// Who may connect.
#[derive(Debug, Clone)]
pub struct Access {
    own_uid: u32,
    gids: Vec<u32>,
}

/// A connected client, from `SO_PEERCRED` and `SO_PEERGROUPS` (both recorded by the kernel
/// at `connect`: a pid reused since cannot change them).
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

/// The gids of `admin.group` (the daemon's own group when empty) and `admin.allowed_groups`.
fn admin_gids(cfg: &AdminConfig) -> Result<Vec<u32>, AdminError> {
    let mut gids = vec![if cfg.group.is_empty() {
        nix::unistd::getegid().as_raw()
    } else {
        gid_of(&cfg.group)?
    }];
    for g in cfg.allowed_groups.iter().filter(|g| !g.is_empty()) {
        gids.push(gid_of(g)?);
    }
    Ok(gids)
}

impl Access {
    /// Root, this process's user, and the members of `group` (the daemon's own group when
    /// empty: the socket file belongs to it) and `allowed_groups`.
    pub fn from_config(cfg: &AdminConfig) -> Result<Self, AdminError> {
        let gids = admin_gids(cfg)?;
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

/// Reads the peer's credentials: uid, gid and pid from `SO_PEERCRED`, supplementary
/// groups from `SO_PEERGROUPS` (no file is read), the user name from `names`.
pub async fn peer_of(stream: &UnixStream, names: &Names) -> std::io::Result<Peer> {
    let cred = stream.peer_cred()?;
    let groups = keyturn_sys::peer_groups(stream)?;
    Ok(Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
        groups,
        name: names.name(cred.uid()).await,
    })
}

/// How long a looked-up user name is reused.
const NAME_TTL: Duration = Duration::from_secs(300);
/// Most user names kept; the cache starts over when it is full.
const NAMES_KEPT: usize = 1024;

/// User names by uid, looked up through NSS (which may read files or ask LDAP/SSSD: it
/// blocks) on a blocking thread, and kept for five minutes.
#[derive(Debug, Default)]
pub struct Names {
    cache: Mutex<HashMap<u32, (Option<String>, Instant)>>,
    /// NSS look-ups made (for tests and the debug log).
    lookups: std::sync::atomic::AtomicU64,
}

impl Names {
    /// The name of `uid`, if it has one.
    pub async fn name(&self, uid: u32) -> Option<String> {
        if let Some((name, at)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&uid)
        {
            if at.elapsed() < NAME_TTL {
                return name.clone();
            }
        }
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = tokio::task::spawn_blocking(move || {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .await
        .ok()
        .flatten();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= NAMES_KEPT {
            cache.clear();
        }
        cache.insert(uid, (name.clone(), Instant::now()));
        name
    }

    /// NSS look-ups made so far.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// How often a uid's refused connections are audited one by one.
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Most uids tracked at once; beyond that, refusals are counted under one entry.
const REFUSERS_KEPT: usize = 1024;

/// Rate limit for auditing refused connections: the first refusal of a uid in a minute is
/// recorded with its details; the rest of that minute are counted and recorded as one
/// summary once the minute is over (2,000 refusals are two records, not 2,000 fsyncs).
#[derive(Debug, Default)]
pub struct Refusals {
    /// uid → (start of its window, refusals counted but not recorded in it).
    by_uid: HashMap<u32, (Instant, u64)>,
    /// Counts of windows that ended, not yet handed out by [`Refusals::summaries`].
    ended: Vec<(u32, u64)>,
}

/// The key under which refusals are counted once [`REFUSERS_KEPT`] uids are tracked.
pub const SEVERAL_USERS: u32 = u32::MAX;

impl Refusals {
    /// Notes a refusal of `uid` at `now`; true when it is to be recorded in full.
    pub fn note(&mut self, uid: u32, now: Instant) -> bool {
        let key = if self.by_uid.len() >= REFUSERS_KEPT && !self.by_uid.contains_key(&uid) {
            SEVERAL_USERS
        } else {
            uid
        };
        match self.by_uid.get_mut(&key) {
            Some((start, counted)) if now.duration_since(*start) < REFUSAL_WINDOW => {
                *counted += 1;
                false
            }
            Some((start, counted)) => {
                if *counted > 0 {
                    self.ended.push((key, *counted));
                }
                *start = now;
                *counted = u64::from(key != uid);
                key == uid
            }
            None => {
                self.by_uid.insert(key, (now, u64::from(key != uid)));
                key == uid
            }
        }
    }

    /// The refusals counted but not recorded, per uid, of every window that has ended by
    /// `now` (of every window with `all`); those windows are forgotten.
    pub fn summaries(&mut self, now: Instant, all: bool) -> Vec<(u32, u64)> {
        let mut out = std::mem::take(&mut self.ended);
        self.by_uid.retain(|uid, (start, counted)| {
            if all || now.duration_since(*start) >= REFUSAL_WINDOW {
                if *counted > 0 {
                    out.push((*uid, *counted));
                }
                false
            } else {
                true
            }
        });
        out.sort_unstable();
        out
    }
}

/// The `system.posix_acl_access` attribute (Linux's form of an access ACL) that lets the
/// owner, the owning group and the groups `gids` read and write, and nobody else. Connecting
/// to a Unix socket needs write permission on its file, and Linux checks the ACL for it.
fn acl_xattr(gids: &[u32]) -> Vec<u8> {
    const VERSION: u32 = 2;
    const USER_OBJ: u16 = 0x01;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const RW: u16 = 6;
    const NO_ID: u32 = u32::MAX;
    let mut gids = gids.to_vec();
    gids.sort_unstable();
    gids.dedup();
    let mut entries = vec![(USER_OBJ, RW, NO_ID), (GROUP_OBJ, RW, NO_ID)];
    entries.extend(gids.iter().map(|g| (GROUP, RW, *g)));
    entries.extend([(MASK, RW, NO_ID), (OTHER, 0, NO_ID)]);
    let mut out = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend(tag.to_le_bytes());
        out.extend(perm.to_le_bytes());
        out.extend(id.to_le_bytes());
    }
    out
}

/// Binds the socket at `path`: removes a stale socket file, refuses to take over a live
/// one, then sets mode 0660, the group, and an ACL entry for each of `allowed_groups`.
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
    if cfg.allowed_groups.iter().any(|g| !g.is_empty()) {
        // admin_gids' first entry is the owning group, covered by the mode.
        let gids = admin_gids(cfg)?;
        rustix::fs::lsetxattr(
            path,
            "system.posix_acl_access",
            &acl_xattr(&gids[1..]),
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| AdminError::Acl {
            path: path.clone(),
            detail: std::io::Error::from(e).to_string(),
        })?;
        // Connecting also needs search permission on the socket's directory.
        if let Some(dir) = path.parent() {
            let searchable_by_all = std::fs::metadata(dir)
                .map(|m| m.permissions().mode() & 0o001 != 0)
                .unwrap_or(true);
            let has_acl = rustix::fs::getxattr_query(dir, "system.posix_acl_access").is_ok();
            if !searchable_by_all && !has_acl {
                tracing::warn!(
                    directory = %dir.display(),
                    "members of admin.allowed_groups cannot reach the admin socket: its directory is not searchable by them; give it mode 0751 (o+x) or an ACL entry per group"
                );
            }
        }
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
    handler
        .audit
        .record(&ev)
        .await
        .map_err(|source| Response::error(&CommandError::AuditUnavailable { source }))
}

async fn handle(req: Request, peer: &Peer, handler: &Handler) -> Response {
    if let Request::Rotate { reason, ticket, .. } = &req {
        if handler.require_reason && reason.is_none() {
            return Response::error(&CommandError::ReasonRequired);
        }
        if handler.require_ticket && ticket.is_none() {
            return Response::error(&CommandError::TicketRequired);
        }
    }
    if !matches!(req, Request::Status) {
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
                        let mut r = Response::error(&CommandError::RotationFailed);
                        r.result = Some(serde_json::json!({ "accounts": list }));
                        r
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
                Err(problems) => Response::error(&CommandError::ReloadRejected { problems }),
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
        return Response::error(&CommandError::Stopping);
    }
    acks(rx.await.ok())
}

fn acks(results: Option<Vec<crate::daemon::AccountAck>>) -> Response {
    let Some(results) = results else {
        return Response::error(&CommandError::Stopping);
    };
    let all_ok = results.iter().all(|(_, r)| r.is_ok());
    let list: Vec<_> = results
        .into_iter()
        .map(|(name, r)| match r {
            Ok(m) => serde_json::json!({"account": name, "ok": true, "result": m}),
            Err(e) => serde_json::json!({"account": name, "ok": false, "error": e}),
        })
        .collect();
    if all_ok {
        Response::ok(serde_json::json!({ "accounts": list }))
    } else {
        let mut r = Response::error(&CommandError::Failed);
        r.result = Some(serde_json::json!({ "accounts": list }));
        r
    }
}

/// The socket path a client should use: `--socket`, else the config's, else the default.
pub fn socket_path(explicit: Option<&Path>, config: Option<&crate::config::Config>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| config.map(|c| c.admin.socket.clone()))
        .unwrap_or_else(|| AdminConfig::default().socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_recorded_once_a_minute_per_uid_and_summarised() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        assert!(r.note(1000, t0), "the first refusal of a uid is recorded");
        for i in 1..2000u64 {
            assert!(!r.note(1000, t0 + Duration::from_millis(i)));
        }
        assert!(r.note(1001, t0), "another uid has its own minute");
        assert!(r.summaries(t0 + Duration::from_secs(30), false).is_empty());
        assert_eq!(
            r.summaries(t0 + Duration::from_secs(61), false),
            vec![(1000, 1999)],
            "one summary for the rest of the minute; uid 1001 had nothing more"
        );
        assert!(r.note(1000, t0 + Duration::from_secs(62)), "a new minute");
        assert!(!r.note(1000, t0 + Duration::from_secs(63)));
        assert_eq!(
            r.summaries(t0 + Duration::from_secs(64), true),
            vec![(1000, 1)]
        );
    }

    #[test]
    fn refusals_from_many_uids_are_counted_together() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        for uid in 0..REFUSERS_KEPT as u32 {
            assert!(r.note(uid, t0));
        }
        assert!(!r.note(999_999, t0));
        assert!(!r.note(999_998, t0));
        assert!(!r.note(999_997, t0 + Duration::from_secs(61)));
        // Two in the first minute, one in the next: every refusal is counted.
        assert_eq!(
            r.summaries(t0 + Duration::from_secs(62), true),
            vec![(SEVERAL_USERS, 1), (SEVERAL_USERS, 2)]
        );
    }

    #[test]
    fn the_acl_lists_owner_group_each_allowed_group_mask_and_other() {
        let acl = acl_xattr(&[1002, 1001, 1002]);
        let words = |b: &[u8]| -> Vec<(u16, u16, u32)> {
            b.chunks(8)
                .map(|e| {
                    (
                        u16::from_le_bytes([e[0], e[1]]),
                        u16::from_le_bytes([e[2], e[3]]),
                        u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                    )
                })
                .collect()
        };
        assert_eq!(&acl[..4], &2u32.to_le_bytes());
        assert_eq!(
            words(&acl[4..]),
            vec![
                (0x01, 6, u32::MAX),
                (0x04, 6, u32::MAX),
                (0x08, 6, 1001),
                (0x08, 6, 1002),
                (0x10, 6, u32::MAX),
                (0x20, 0, u32::MAX),
            ]
        );
    }

    #[tokio::test]
    async fn user_names_are_looked_up_once_then_cached() {
        let names = Names::default();
        let me = nix::unistd::getuid().as_raw();
        let first = names.name(me).await;
        for _ in 0..5 {
            assert_eq!(names.name(me).await, first);
        }
        assert_eq!(names.lookups(), 1);
    }

    #[test]
    fn an_empty_admin_group_means_the_daemon_group() {
        let cfg = AdminConfig::default();
        assert!(cfg.group.is_empty());
        let access = Access::from_config(&cfg).unwrap();
        let member = Peer {
            uid: 4242,
            gid: 4242,
            pid: None,
            groups: vec![nix::unistd::getegid().as_raw()],
            name: None,
        };
        assert!(access.allows(&member), "a member of the daemon's group");
        let stranger = Peer {
            groups: vec![4243],
            ..member
        };
        assert!(!access.allows(&stranger));
    }

    /// The groups of a client are those it had when it connected: a process that later
    /// holds the client's pid (a reused pid), or the client itself after changing its
    /// groups, cannot change what is checked. Needs root (to change this process's
    /// groups); the change is undone before the test ends.
    #[tokio::test]
    async fn peer_groups_are_those_at_connect_time() {
        if !nix::unistd::getuid().is_root() {
            eprintln!("SKIPPED: needs root to change this process's groups");
            return;
        }
        let before = nix::unistd::getgroups().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let admin = nix::unistd::Gid::from_raw(4_000_042);
        nix::unistd::setgroups(&[admin]).unwrap();
        let peer = peer_of(&a, &Names::default()).await;
        nix::unistd::setgroups(&before).unwrap();
        let peer = peer.unwrap();
        assert!(
            !peer.groups.contains(&4_000_042),
            "a group the peer did not have at connect: {:?}",
            peer.groups
        );
        let mut want: Vec<u32> = before.iter().map(|g| g.as_raw()).collect();
        want.sort_unstable();
        let mut got = peer.groups.clone();
        got.sort_unstable();
        assert_eq!(got, want);
    }
}
