//! System calls that keyturn needs and that no maintained crate wraps safely, each behind
//! a safe function, so that the `keyturn` crate keeps `#![forbid(unsafe_code)]`.
//!
//! - [`peer_groups`]: `getsockopt(SO_PEERGROUPS)`, the supplementary groups of a Unix
//!   socket's peer as the kernel recorded them at `connect` (neither `nix` 0.30 nor
//!   `rustix` 1 offers it; `nix`'s generic getters assume a fixed-size answer).
//!   Drop this crate once one of them does.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::os::fd::AsFd;

/// Most supplementary groups a Linux process can have (`NGROUPS_MAX`).
const NGROUPS_MAX: usize = 65536;

/// The supplementary groups of the peer of the connected Unix socket `fd`, as they were
/// when the peer called `connect` (or `socketpair`), sorted as the kernel keeps them.
///
/// Unlike `/proc/<pid>/status`, this cannot describe another process that later got the
/// peer's pid, nor groups the peer gained or dropped after connecting.
#[cfg(target_os = "linux")]
pub fn peer_groups(fd: impl AsFd) -> io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    let fd = fd.as_fd();
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    // A buffer that is too small gets ERANGE and the size needed; the peer's credentials
    // were fixed at connect, so the second try fits. The third is only a bound.
    for _ in 0..3 {
        let mut len = (groups.len() * GID) as libc::socklen_t;
        // SAFETY: `groups` is an initialised, writable buffer of exactly `len` bytes that
        // outlives the call; `fd` is an open descriptor borrowed for the call. The kernel
        // writes at most `len` bytes into the buffer and the length it wrote (or, with
        // ERANGE, the length it needs) into `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let len = len as usize;
        if rc == 0 {
            groups.truncate(len.min(groups.len() * GID) / GID);
            return Ok(groups);
        }
        let error = io::Error::last_os_error();
        let needed = len.div_ceil(GID);
        if error.raw_os_error() != Some(libc::ERANGE)
            || needed <= groups.len()
            || needed > NGROUPS_MAX
        {
            return Err(error);
        }
        groups.resize(needed, 0);
    }
    Err(io::Error::other(
        "SO_PEERGROUPS kept asking for a larger buffer",
    ))
}

/// Not available on this system.
#[cfg(not(target_os = "linux"))]
pub fn peer_groups(_fd: impl AsFd) -> io::Result<Vec<u32>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_PEERGROUPS is Linux-only",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    fn own_groups() -> Vec<u32> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
        let mut g: Vec<u32> = line["Groups:".len()..]
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        g.sort_unstable();
        g
    }

    #[test]
    fn a_socket_pair_reports_this_process_groups() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut got = peer_groups(&a).unwrap();
        got.sort_unstable();
        assert_eq!(got, own_groups());
    }

    #[test]
    fn an_accepted_connection_reports_the_client_groups() {
        let dir = std::env::temp_dir().join(format!("keyturn-sys-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let _client = UnixStream::connect(&path).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut got = peer_groups(&server).unwrap();
        got.sort_unstable();
        assert_eq!(got, own_groups());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_socket_that_is_not_unix_is_an_error_not_a_panic() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert!(peer_groups(&c).is_err());
    }
}
