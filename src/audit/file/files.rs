//! Opening the files keyturn writes, the names of the rotated files, and reading a file's
//! first and last line.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub(super) fn open_append(path: &Path) -> io::Result<File> {
    open_owned(
        path,
        OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o640),
    )
}

/// Opens a file keyturn writes (the audit log, its seal, the instance lock) with `opts`,
/// refusing what a less privileged user could have planted at `path` to redirect the
/// write: a symbolic link (`O_NOFOLLOW`: the open fails, nothing is created or truncated
/// through it), anything but a regular file (a FIFO is opened with `O_NONBLOCK` so it
/// cannot hang the open, then refused), a file with more than one hard link (a link to
/// another file), and a file owned by anyone but this process's effective user or the
/// owner of the folder it is in (the service user when root runs `keyturn rotate --offline
/// --allow-root` on the service's files). Truncation (`opts.truncate`) must not be set:
/// the checks run after the open.
pub(crate) fn open_owned(path: &Path, opts: &mut OpenOptions) -> io::Result<File> {
    use std::os::unix::fs::MetadataExt;
    let refused = |why: String| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refusing to open {}: {why}", path.display()),
        )
    };
    let file = opts
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                refused("it is a symbolic link; keyturn never follows a link for a file it writes, as it could point at any file (remove the link)".into())
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(refused(
            "it is not a regular file (remove it; keyturn creates it)".into(),
        ));
    }
    if meta.nlink() > 1 {
        return Err(refused(format!(
            "it has {} hard links, so writing it would change another file too (remove it, or copy it to a file of its own)",
            meta.nlink()
        )));
    }
    let euid = nix::unistd::geteuid().as_raw();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir_owner = std::fs::metadata(dir)?.uid();
    if meta.uid() != euid && meta.uid() != dir_owner {
        return Err(refused(format!(
            "it is owned by uid {}, neither keyturn's user (uid {euid}) nor the owner of {} (uid {dir_owner}) (give it to the service user: chown)",
            meta.uid(),
            dir.display()
        )));
    }
    Ok(file)
}

pub(super) fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// `<path>.seal`.
pub fn seal_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".seal");
    PathBuf::from(s)
}

/// The name a live file gets when rotated: `<path>.<first seq, 12 digits>`.
pub(super) fn rotated_path(path: &Path, first_seq: u64) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{first_seq:012}"));
    PathBuf::from(s)
}

/// The rotated files of `path` with their first sequence numbers, oldest first.
pub fn rotated_files(path: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let prefix = format!("{name}.");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        if let Some(digits) = n.strip_prefix(&prefix) {
            if digits.len() >= 12 && digits.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(seq) = digits.parse::<u64>() {
                    out.push((seq, dir.join(n)));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The last complete line of `file` and the length up to and including its newline
/// (anything after it is an incomplete record).
pub(super) fn last_line(file: &File, len: u64) -> io::Result<(u64, Option<String>)> {
    let mut pos = len;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = pos.min(64 * 1024);
        if chunk == 0 {
            // No newline at all: nothing complete.
            return Ok((0, None));
        }
        pos -= chunk;
        let mut part = vec![0u8; chunk as usize];
        file.read_exact_at(&mut part, pos)?;
        part.extend_from_slice(&buf);
        buf = part;
        if let Some(last_nl) = buf.iter().rposition(|b| *b == b'\n') {
            let start = match buf[..last_nl].iter().rposition(|b| *b == b'\n') {
                Some(p) => Some(p + 1),
                None if pos == 0 => Some(0),
                None => None,
            };
            if let Some(start) = start {
                let line = String::from_utf8_lossy(&buf[start..last_nl]).into_owned();
                return Ok((pos + last_nl as u64 + 1, Some(line)));
            }
        }
    }
}

pub(super) fn first_line(file: &File) -> io::Result<Option<String>> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = file.read_at(&mut buf, 0)?;
    Ok(buf[..n]
        .iter()
        .position(|b| *b == b'\n')
        .map(|p| String::from_utf8_lossy(&buf[..p]).into_owned()))
}

pub(super) fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}
