//! Who may use the socket: a client's credentials as the kernel recorded them at
//! `connect` (`SO_PEERCRED`, `SO_PEERGROUPS`), the check against root, keyturn's user and
//! the admin groups, and the user names audit records show.

use super::bind::{admin_gids, AdminError};
use crate::audit::Actor;
use crate::config::AdminConfig;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

/// Who may connect.
#[derive(Debug, Clone)]
pub struct Access {
    own_uid: u32,
    gids: Vec<u32>,
}

/// A connected client, from `SO_PEERCRED` and `SO_PEERGROUPS` (both recorded by the kernel
/// at `connect`: a pid reused since cannot change them).
#[derive(Debug, Clone)]
pub(crate) struct Peer {
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

impl Access {
    /// Root, this process's user, and the members of `group` (the daemon's own group when
    /// empty: the socket file belongs to it) and `allowed_groups`.
    pub(crate) fn from_config(cfg: &AdminConfig) -> Result<Self, AdminError> {
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
pub(crate) async fn peer_of(stream: &UnixStream, names: &Names) -> std::io::Result<Peer> {
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
    #[cfg(test)]
    fn lookups(&self) -> u64 {
        self.lookups.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
