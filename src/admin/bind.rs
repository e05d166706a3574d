//! Binding the socket: a stale socket file replaced, a live one refused, then mode 0660,
//! the configured group and a POSIX ACL entry per allowed group.

use crate::config::AdminConfig;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use tokio::net::UnixListener;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin socket {path}: {detail}{}", .source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Bind {
        path: PathBuf,
        /// What failed, and what to do when no io error says more.
        detail: String,
        /// The io error, when one caused it.
        #[source]
        source: Option<std::io::Error>,
    },
    #[error(
        "admin group {group:?} does not exist; create it or fix admin.group / admin.allowed_groups"
    )]
    NoGroup { group: String },
    #[error("admin socket {path}: cannot let admin.allowed_groups connect through a POSIX ACL: {source}; put the socket on a file system with ACLs (tmpfs and ext4 have them), or use admin.group alone")]
    Acl {
        path: PathBuf,
        /// Why the ACL could not be set.
        #[source]
        source: std::io::Error,
    },
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
pub(super) fn admin_gids(cfg: &AdminConfig) -> Result<Vec<u32>, AdminError> {
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
    let err = |detail: &str| AdminError::Bind {
        path: path.clone(),
        detail: detail.to_owned(),
        source: None,
    };
    let io = |detail: String| {
        move |e: std::io::Error| AdminError::Bind {
            path: path.clone(),
            detail,
            source: Some(e),
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(err(
                "exists and is not a socket; remove it or choose another admin.socket",
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(
                "another process is listening on it (is keyturn already running?)",
            ));
        }
        std::fs::remove_file(path).map_err(io("cannot remove the stale socket".into()))?;
    }
    let listener = UnixListener::bind(path).map_err(io("cannot bind".into()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(io("cannot chmod 0660".into()))?;
    if !cfg.group.is_empty() {
        let gid = gid_of(&cfg.group)?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io(format!(
            "cannot give the socket to group {:?}",
            cfg.group
        )))?;
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
            source: std::io::Error::from(e),
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_socket_that_cannot_be_bound_keeps_the_io_error_as_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let cfg = AdminConfig {
            socket: file.join("run").join("admin.sock"),
            ..AdminConfig::default()
        };
        let err = bind(&cfg).expect_err("a file as a directory is refused");
        let source = std::error::Error::source(&err).expect("the io error is kept");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotADirectory);
        assert_eq!(
            err.to_string(),
            format!(
                "admin socket {}: cannot create {}: {io}",
                cfg.socket.display(),
                file.join("run").display()
            )
        );
    }
}
