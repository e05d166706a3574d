//! The file sink, the record of truth: one chained JSON record per line, appended and
//! `fsync`ed before [`AuditSink::record`] returns.
//!
//! - Appends are serialized by one lock, so concurrent rotations produce one valid chain.
//! - Group commit: records that arrive while a write is in progress are written together
//!   and made durable by one `fdatasync`, then each caller is answered. A caller still
//!   returns only once its record is on disk, but a thousand concurrent rotations no longer
//!   queue for a thousand syncs (one sync took 0.17 ms on the development machine and takes
//!   1–5 ms on network disks; a rotation writes about six records).
//! - On open, the chain continues from the last record of the file (or of the newest
//!   rotated file); an incomplete last line left by a crash is removed and noted.
//! - When the file reaches [`FileOptions::max_bytes`] it ends with an `audit.rotated`
//!   record, is renamed `<name>.<first seq, 12 digits>`, and a new file continues the chain.
//! - A seal file `<name>.seal` names the last record written (sequence number and hash);
//!   `keyturn audit verify` uses it to detect records cut off the end.
//! - A failed write (full or read-only disk) fails the call (the engine does not proceed),
//!   leaves no partial line in the chain (it is truncated away now, or before the next
//!   write), marks the sink unhealthy, and the first write that works again is preceded by
//!   an `audit.recovered` record saying how many records were refused and since when.

use super::chain::{self, GENESIS_PREV};
use super::{Actor, AuditError, AuditEvent, AuditSink, EventKind, Outcome};
use async_trait::async_trait;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// Default size at which the file is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Size of the seal file's single, fixed-length line.
const SEAL_LEN: usize = 200;

/// How the file sink behaves.
#[derive(Clone)]
pub struct FileOptions {
    /// Rotate the file once it holds this many bytes.
    pub max_bytes: u64,
    /// Keep `<name>.seal` up to date (detects records removed from the end).
    pub seal: bool,
    /// Simulated disk faults, for tests; `None` in production.
    pub faults: Option<Arc<FaultSwitch>>,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            max_bytes: DEFAULT_MAX_BYTES,
            seal: true,
            faults: None,
        }
    }
}

/// A simulated disk fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Writes work.
    None,
    /// Writes stop half-way with `ENOSPC`; truncating works (a full disk).
    Full,
    /// Writes stop half-way with `ENOSPC` and truncating fails too, so the partial line
    /// stays until the next write repairs it.
    FullStuck,
    /// Nothing can be written (`EROFS`).
    ReadOnly,
    /// Writes land in the page cache but `fdatasync` fails with `EIO` (a failing device):
    /// nothing written since the last good sync may be on disk.
    SyncFails,
}

/// Switches simulated faults on and off under a running [`FileSink`] (tests).
#[derive(Debug, Default)]
pub struct FaultSwitch(AtomicU8);

impl FaultSwitch {
    /// A switch with no fault.
    pub fn new() -> Arc<Self> {
        Arc::new(FaultSwitch::default())
    }

    /// Sets the fault every following write sees.
    pub fn set(&self, fault: Fault) {
        let v = match fault {
            Fault::None => 0,
            Fault::Full => 1,
            Fault::FullStuck => 2,
            Fault::ReadOnly => 3,
            Fault::SyncFails => 4,
        };
        self.0.store(v, Ordering::SeqCst);
    }

    fn get(&self) -> Fault {
        match self.0.load(Ordering::SeqCst) {
            1 => Fault::Full,
            2 => Fault::FullStuck,
            3 => Fault::ReadOnly,
            4 => Fault::SyncFails,
            _ => Fault::None,
        }
    }
}

/// The state of the audit file, for status answers and health checks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditHealth {
    /// The live file.
    pub path: PathBuf,
    /// False while records cannot be written: no rotation starts.
    pub writable: bool,
    /// The sequence number the next record gets.
    pub next_seq: u64,
    /// The hash of the last record written (the chain's head).
    pub head: String,
    /// When writing started failing.
    #[serde(with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    /// Records refused since then (their actions did not proceed).
    pub refused: u64,
    /// The last write error.
    pub last_error: Option<String>,
}

/// Appends chained JSON records to a file, mode 0640; a record is `fsync`ed before its
/// `record` call returns (together with the records written alongside it).
pub struct FileSink {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    health: Arc<Mutex<AuditHealth>>,
    queue: Arc<Mutex<Queue>>,
}

type Reply = tokio::sync::oneshot::Sender<Result<(), AuditError>>;

/// Records waiting for the writer, and whether a writer is running.
#[derive(Default)]
struct Queue {
    waiting: Vec<(AuditEvent, Reply)>,
    writing: bool,
}

/// Clears `writing` if the writer dies (a panic), so the next record starts a new one;
/// the callers of the batch it held see their reply channel closed, an error.
struct WriterGuard<'a>(&'a Mutex<Queue>);

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).writing = false;
        }
    }
}

struct Failing {
    since: OffsetDateTime,
    refused: u64,
    error: String,
}

struct State {
    path: PathBuf,
    /// The live file; `None` after a rotation could not create the new one.
    file: Option<File>,
    /// Bytes of complete records in the live file.
    len: u64,
    next_seq: u64,
    /// Hash of the last record.
    prev: String,
    /// Sequence number of the live file's first record (names it when rotated).
    first_seq: u64,
    /// The live file's last record ended it (`audit.rotated`): rename before writing.
    rotation_due: bool,
    /// A failed write may have left bytes after `len`.
    dirty: bool,
    /// Records were written since the last `fdatasync`.
    unsynced: bool,
    /// Successful syncs so far: a record written when this was `n` is durable once it is
    /// greater than `n`.
    syncs: u64,
    /// `len`, `next_seq` and `prev` at the last sync: what a failed sync falls back to.
    synced: (u64, u64, String),
    /// Time of the last record written and not yet sealed.
    unsealed: Option<OffsetDateTime>,
    opts: FileOptions,
    seal: Option<File>,
    failing: Option<Failing>,
    health: Arc<Mutex<AuditHealth>>,
}

fn open_append(path: &Path) -> io::Result<File> {
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
pub fn open_owned(path: &Path, opts: &mut OpenOptions) -> io::Result<File> {
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

fn sync_dir(path: &Path) {
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
pub fn rotated_path(path: &Path, first_seq: u64) -> PathBuf {
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
fn last_line(file: &File, len: u64) -> io::Result<(u64, Option<String>)> {
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

fn first_line(file: &File) -> io::Result<Option<String>> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = file.read_at(&mut buf, 0)?;
    Ok(buf[..n]
        .iter()
        .position(|b| *b == b'\n')
        .map(|p| String::from_utf8_lossy(&buf[..p]).into_owned()))
}

fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

/// What the seal file says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Seal {
    /// The last record written.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

/// Why a seal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The seal file exists but cannot be read (permissions, a directory, an I/O error).
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The seal file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The seal file holds something that is not a seal.
    #[error("{} is not a valid seal ({detail}); a seal is one line {{\"seq\":N,\"hash\":\"<64 hex digits>\",\"time\":\"…\"}}", path.display())]
    Malformed {
        /// The seal file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// Reads `<path>.seal`; `Ok(None)` when there is none (or it is empty: created, not yet
/// written). Anything else that is not one seal with a 64-hex-digit hash is
/// [`SealError::Malformed`]: a reader must not take a damaged seal for "no seal", or cutting
/// records off the end and garbling the seal would go unnoticed.
pub fn read_seal(path: &Path) -> Result<Option<Seal>, SealError> {
    use std::io::Read;
    let seal = seal_path(path);
    let malformed = |detail: String| SealError::Malformed {
        path: seal.clone(),
        detail,
    };
    let unreadable = |source| SealError::Unreadable {
        path: seal.clone(),
        source,
    };
    let file = match File::open(&seal) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    // A seal is SEAL_LEN bytes; read a little more to tell an oversized file.
    let mut bytes = Vec::with_capacity(SEAL_LEN);
    file.take(4 * SEAL_LEN as u64)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > 2 * SEAL_LEN {
        return Err(malformed(format!(
            "{} bytes or more, a seal has {SEAL_LEN}",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| malformed("not UTF-8".into()))?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let seal: Seal =
        serde_json::from_str(text).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    if !chain::is_hex64(&seal.hash) {
        return Err(malformed("its hash is not 64 lowercase hex digits".into()));
    }
    Ok(Some(seal))
}

/// The sequence number after `r`'s, or `Corrupt` for a record carrying the largest one
/// (a crafted record: no chain gets there).
fn next_after(r: &chain::Record, path: &Path) -> Result<u64, AuditError> {
    r.seq.checked_add(1).ok_or_else(|| AuditError::Corrupt {
        path: path.to_owned(),
        line: count_lines(path),
        detail: format!(
            "its last record has seq {}, after which no record can follow",
            r.seq
        ),
    })
}

fn daemon_note(
    kind: EventKind,
    time: OffsetDateTime,
    outcome: Outcome,
    detail: String,
) -> AuditEvent {
    let mut ev = AuditEvent::new(kind, time);
    ev.actor = Some(Actor::Daemon);
    ev.outcome = Some(outcome);
    ev.detail = Some(detail);
    ev
}

impl FileSink {
    /// Opens (creating if needed) the file for appending, continuing its chain.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Self::open_with(path, FileOptions::default())
    }

    /// Like [`FileSink::open`] with options.
    pub fn open_with(path: &Path, opts: FileOptions) -> Result<Self, AuditError> {
        let open_err = |source| AuditError::Open {
            path: path.to_owned(),
            source,
        };
        let now = OffsetDateTime::now_utc();
        let file = open_append(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        let (good, last) = last_line(&file, len).map_err(open_err)?;
        let mut notes = Vec::new();
        if good < len {
            // A write interrupted by a crash or a full disk: never acknowledged, so the
            // action it announced did not proceed. Remove it so the chain continues.
            file.set_len(good)
                .and_then(|_| file.sync_data())
                .map_err(open_err)?;
            tracing::warn!(path = %path.display(), bytes = len - good, "removed an incomplete audit record at the end of the log");
            notes.push(daemon_note(
                EventKind::AuditRecovered,
                now,
                Outcome::Warning,
                format!(
                    "removed {} byte(s) of an incomplete record at the end of {} (a write interrupted by a crash or a full disk; the action it announced did not proceed)",
                    len - good,
                    path.display()
                ),
            ));
        }
        let corrupt = |src: &Path, detail: String| AuditError::Corrupt {
            path: src.to_owned(),
            line: count_lines(src),
            detail,
        };
        // The record the chain continues from: the live file's last, or the newest
        // rotated file's last when the live file is empty.
        let (tail, first_seq) = match last {
            Some(line) => {
                let r = chain::parse_line(&line).map_err(|e| corrupt(path, e.to_string()))?;
                let first = first_line(&file)
                    .ok()
                    .flatten()
                    .and_then(|l| chain::parse_line(&l).ok())
                    .map(|f| f.seq)
                    .unwrap_or(r.seq);
                (Some(r), first)
            }
            None => match rotated_files(path).map_err(open_err)?.pop() {
                Some((_, older)) => {
                    let f = File::open(&older).map_err(open_err)?;
                    let l = f.metadata().map_err(open_err)?.len();
                    let (_, line) = last_line(&f, l).map_err(open_err)?;
                    let line = line.ok_or_else(|| corrupt(&older, "no complete record".into()))?;
                    let r = chain::parse_line(&line).map_err(|e| corrupt(&older, e.to_string()))?;
                    let next = next_after(&r, &older)?;
                    (Some(r), next)
                }
                None => (None, 0),
            },
        };
        match (read_seal(path), &tail) {
            (Ok(Some(seal)), Some(t))
                if seal.seq > t.seq || (seal.seq == t.seq && seal.hash != t.hash) =>
            {
                tracing::error!(path = %path.display(), sealed = seal.seq, last = t.seq, "the audit log ends before the record its seal names: records were removed");
                notes.push(daemon_note(
                    EventKind::AuditSealMismatch,
                    now,
                    Outcome::Failure,
                    format!(
                        "the seal names record {} ({}) but the log ends at record {} ({}): records were removed or rewritten while keyturn was not running",
                        seal.seq, seal.hash, t.seq, t.hash
                    ),
                ));
            }
            (Err(e @ SealError::Malformed { .. }), Some(t)) => {
                // Garbling the seal must not hide records cut off the end.
                tracing::error!(path = %path.display(), error = %e, "the audit seal is damaged: keyturn cannot tell whether records were removed");
                notes.push(daemon_note(
                    EventKind::AuditSealMismatch,
                    now,
                    Outcome::Failure,
                    format!(
                        "{e}; the log ends at record {} ({}): records may have been removed or rewritten while keyturn was not running",
                        t.seq, t.hash
                    ),
                ));
            }
            (Ok(Some(_)) | Err(SealError::Malformed { .. }), None) => {
                // A new chain beside the seal of an old one: the log was moved aside (as
                // `AuditError::Corrupt` advises), or removed. Noted, not a break.
                tracing::warn!(path = %path.display(), "a new audit chain starts beside the seal of an earlier one");
                notes.push(daemon_note(
                    EventKind::AuditRecovered,
                    now,
                    Outcome::Warning,
                    format!(
                        "{} names records of an earlier chain but the log is empty: a new chain starts (if the log was not moved aside on purpose, it was removed)",
                        seal_path(path).display()
                    ),
                ));
            }
            (Err(e @ SealError::Unreadable { .. }), _) => {
                return Err(open_err(io::Error::other(e.to_string())));
            }
            _ => {}
        }
        let rotation_due = good > 0
            && tail
                .as_ref()
                .is_some_and(|t| t.event() == EventKind::AuditRotated.as_str());
        let (next_seq, prev) = match &tail {
            Some(t) => (next_after(t, path)?, t.hash.clone()),
            None => {
                notes.insert(
                    0,
                    daemon_note(
                        EventKind::AuditGenesis,
                        now,
                        Outcome::Success,
                        format!("a new audit chain starts in {}", path.display()),
                    ),
                );
                (0, GENESIS_PREV.to_owned())
            }
        };
        let seal = if opts.seal {
            Some(
                open_owned(
                    &seal_path(path),
                    OpenOptions::new()
                        .create(true)
                        .write(true)
                        .truncate(false)
                        .mode(0o640),
                )
                .map_err(open_err)?,
            )
        } else {
            None
        };
        let health = Arc::new(Mutex::new(AuditHealth {
            path: path.to_owned(),
            writable: true,
            next_seq,
            head: prev.clone(),
            failing_since: None,
            refused: 0,
            last_error: None,
        }));
        let mut state = State {
            path: path.to_owned(),
            file: Some(file),
            len: good,
            next_seq,
            prev: prev.clone(),
            first_seq,
            rotation_due,
            dirty: false,
            unsynced: false,
            syncs: 0,
            synced: (good, next_seq, prev),
            unsealed: None,
            opts,
            seal,
            failing: None,
            health: health.clone(),
        };
        if state.rotation_due {
            state.finish_rotation()?;
        }
        for note in notes {
            state.write(&note)?;
        }
        state.flush()?;
        state.publish();
        Ok(FileSink {
            path: path.to_owned(),
            state: Arc::new(Mutex::new(state)),
            health,
            queue: Arc::default(),
        })
    }

    /// The live file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append_blocking(state: &Mutex<State>, event: &AuditEvent) -> Result<(), AuditError> {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.record_batch(std::slice::from_ref(event))
            .pop()
            .unwrap_or(Ok(()))
    }

    /// The writer: takes everything queued, writes it with one sync, answers, and repeats
    /// until the queue is empty.
    fn write_queued(state: &Mutex<State>, queue: &Mutex<Queue>) {
        let _guard = WriterGuard(queue);
        loop {
            let batch = {
                let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.waiting.is_empty() {
                    q.writing = false;
                    return;
                }
                std::mem::take(&mut q.waiting)
            };
            let (events, replies): (Vec<AuditEvent>, Vec<Reply>) = batch.into_iter().unzip();
            let results = state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record_batch(&events);
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
    }
}

impl State {
    fn err(&self, source: io::Error) -> AuditError {
        AuditError::Write {
            path: self.path.clone(),
            source,
        }
    }

    fn fault(&self) -> Fault {
        self.opts
            .faults
            .as_ref()
            .map(|f| f.get())
            .unwrap_or(Fault::None)
    }

    /// Records `events` in order (each preceded by a recovery note after failures, rotating
    /// first when the file is full), then syncs once. A record whose sync failed is taken
    /// back out of the chain and its result is an error, like a record that could not be
    /// written: its caller does not proceed.
    fn record_batch(&mut self, events: &[AuditEvent]) -> Vec<Result<(), AuditError>> {
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            let result = self.record_inner(event);
            if let Err(e) = &result {
                self.refused(event.time, e);
            }
            results.push((result, self.syncs));
        }
        if let Err(e) = self.flush() {
            let syncs = self.syncs;
            for ((result, written_at), event) in results.iter_mut().zip(events) {
                if result.is_ok() && *written_at == syncs {
                    *result = Err(copy_error(&e));
                    self.refused(event.time, &e);
                }
            }
        }
        self.publish();
        results.into_iter().map(|(r, _)| r).collect()
    }

    /// Counts a refused record and marks the sink failing.
    fn refused(&mut self, time: OffsetDateTime, e: &AuditError) {
        let failing = self.failing.get_or_insert_with(|| {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit log: keyturn starts no rotation until it can");
            Failing {
                since: time,
                refused: 0,
                error: String::new(),
            }
        });
        failing.refused += 1;
        failing.error = e.to_string();
    }

    /// Makes every record written so far durable (one `fdatasync`), then moves the seal to
    /// the last of them. If the sync fails, nothing written since the previous sync is known
    /// to be on disk: the chain falls back to that point and the file is cut there.
    fn flush(&mut self) -> Result<(), AuditError> {
        if !self.unsynced {
            return Ok(());
        }
        let result = match &self.file {
            Some(file) => self.sync(file),
            None => Err(io::Error::other("the audit file is not open")),
        };
        match result {
            Ok(()) => {
                self.mark_synced();
                Ok(())
            }
            Err(e) => {
                (self.len, self.next_seq, self.prev) = self.synced.clone();
                self.unsynced = false;
                self.unsealed = None;
                self.dirty = true;
                if let Err(r) = self.repair() {
                    tracing::warn!(error = %r, "cannot remove unsynced audit records yet; the next write does");
                }
                Err(self.err(e))
            }
        }
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        match self.fault() {
            Fault::SyncFails => Err(io::Error::from_raw_os_error(5)),
            _ => file.sync_data(),
        }
    }

    /// Everything up to `len` is on disk.
    fn mark_synced(&mut self) {
        self.unsynced = false;
        self.syncs += 1;
        self.synced = (self.len, self.next_seq, self.prev.clone());
        if let Some(time) = self.unsealed.take() {
            self.write_seal(time);
        }
    }

    fn record_inner(&mut self, event: &AuditEvent) -> Result<(), AuditError> {
        self.repair()?;
        if self.rotation_due || self.file.is_none() {
            self.finish_rotation()?;
        }
        if let Some(f) = self.failing.take() {
            let note = daemon_note(
                EventKind::AuditRecovered,
                event.time,
                Outcome::Warning,
                format!(
                    "the audit log could not be written from {} to {} ({}); {} record(s) were refused and the actions they announced did not proceed",
                    super::format_time(f.since),
                    super::format_time(event.time),
                    f.error,
                    f.refused
                ),
            );
            if let Err(e) = self.write(&note) {
                self.failing = Some(f);
                return Err(e);
            }
            tracing::info!(path = %self.path.display(), refused = f.refused, "the audit log is writable again");
        }
        if self.len >= self.opts.max_bytes {
            let note = daemon_note(
                EventKind::AuditRotated,
                event.time,
                Outcome::Success,
                format!(
                    "this file reached {} bytes (limit {}); the chain continues in a new {} from record {}",
                    self.len,
                    self.opts.max_bytes,
                    self.path.display(),
                    self.next_seq + 1
                ),
            );
            self.write(&note)?;
            self.rotation_due = true;
            self.finish_rotation()?;
        }
        self.write(event)
    }

    /// Truncates away what a failed write left after the last complete record.
    fn repair(&mut self) -> Result<(), AuditError> {
        if !self.dirty {
            return Ok(());
        }
        if matches!(self.fault(), Fault::FullStuck | Fault::ReadOnly) {
            return Err(self.err(io::Error::from_raw_os_error(30)));
        }
        let Some(file) = &self.file else {
            return Ok(());
        };
        file.set_len(self.len)
            .and_then(|_| self.sync(file))
            .map_err(|e| self.err(e))?;
        self.dirty = false;
        self.mark_synced();
        Ok(())
    }

    /// Renames the full live file and starts a new one.
    fn finish_rotation(&mut self) -> Result<(), AuditError> {
        if self.rotation_due {
            // The records of the full file are durable before it is renamed.
            self.flush()?;
            let target = rotated_path(&self.path, self.first_seq);
            if target.exists() {
                return Err(self.err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("cannot rotate: {} exists already", target.display()),
                )));
            }
            if self.fault() != Fault::None {
                return Err(self.err(io::Error::from_raw_os_error(30)));
            }
            std::fs::rename(&self.path, &target).map_err(|e| self.err(e))?;
            self.file = None;
            self.rotation_due = false;
            self.len = 0;
            self.synced.0 = 0;
            self.first_seq = self.next_seq;
            tracing::info!(path = %self.path.display(), rotated = %target.display(), "rotated the audit log");
        }
        if self.file.is_none() {
            let f = open_append(&self.path).map_err(|e| self.err(e))?;
            sync_dir(&self.path);
            self.file = Some(f);
        }
        Ok(())
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        let fault = self.fault();
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("the audit file is not open"));
        };
        match fault {
            // Synced by `flush`, once per batch.
            Fault::None | Fault::SyncFails => file.write_all(bytes),
            Fault::Full | Fault::FullStuck => {
                file.write_all(&bytes[..bytes.len() / 2])?;
                Err(io::Error::from_raw_os_error(28))
            }
            Fault::ReadOnly => Err(io::Error::from_raw_os_error(30)),
        }
    }

    /// Appends one record (made durable by the next `flush`); on failure removes any partial
    /// line.
    fn write(&mut self, event: &AuditEvent) -> Result<(), AuditError> {
        let enc =
            chain::encode(self.next_seq, &self.prev, event).map_err(|e| self.err(e.into()))?;
        match self.write_bytes(&enc.line) {
            Ok(()) => {
                self.len += enc.line.len() as u64;
                self.next_seq += 1;
                self.prev = enc.hash;
                self.unsynced = true;
                self.unsealed = Some(event.time);
                Ok(())
            }
            Err(e) => {
                self.dirty = true;
                if let Err(r) = self.repair() {
                    tracing::warn!(error = %r, "cannot remove a partial audit record yet; the next write does");
                }
                Err(self.err(e))
            }
        }
    }

    /// Overwrites the seal in place (no fsync: after a crash it may lag, never lead).
    fn write_seal(&mut self, time: OffsetDateTime) {
        let Some(seal) = &self.seal else { return };
        let mut text = format!(
            "{{\"seq\":{},\"hash\":\"{}\",\"time\":\"{}\"}}",
            self.next_seq - 1,
            self.prev,
            super::format_time(time)
        );
        while text.len() < SEAL_LEN - 1 {
            text.push(' ');
        }
        text.push('\n');
        if let Err(e) = seal.write_all_at(text.as_bytes(), 0) {
            tracing::warn!(error = %e, "cannot update the audit seal");
        }
    }

    fn publish(&self) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        *h = AuditHealth {
            path: self.path.clone(),
            writable: self.failing.is_none(),
            next_seq: self.next_seq,
            head: self.prev.clone(),
            failing_since: self.failing.as_ref().map(|f| f.since),
            refused: self.failing.as_ref().map(|f| f.refused).unwrap_or(0),
            last_error: self.failing.as_ref().map(|f| f.error.clone()),
        };
    }
}

#[async_trait]
impl AuditSink for FileSink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                // Queued for the writer, which runs to completion even if this caller is
                // cancelled, so the chain never holds a record nobody accounted for.
                let (tx, rx) = tokio::sync::oneshot::channel();
                let start = {
                    let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                    q.waiting.push((event.clone(), tx));
                    !std::mem::replace(&mut q.writing, true)
                };
                if start {
                    let (state, queue) = (self.state.clone(), self.queue.clone());
                    handle.spawn_blocking(move || FileSink::write_queued(&state, &queue));
                }
                rx.await.unwrap_or_else(|_| {
                    Err(AuditError::Write {
                        path: self.path.clone(),
                        source: io::Error::other("the audit writer stopped before writing"),
                    })
                })
            }
            Err(_) => FileSink::append_blocking(&self.state, event),
        }
    }

    fn is_writable(&self) -> bool {
        self.health.lock().map(|h| h.writable).unwrap_or(false)
    }

    fn health(&self) -> Option<AuditHealth> {
        Some(
            self.health
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The same error for another record of a failed batch (`io::Error` is not `Clone`).
fn copy_error(e: &AuditError) -> AuditError {
    let copy = |source: &io::Error| io::Error::new(source.kind(), source.to_string());
    match e {
        AuditError::Write { path, source } => AuditError::Write {
            path: path.clone(),
            source: copy(source),
        },
        AuditError::Open { path, source } => AuditError::Open {
            path: path.clone(),
            source: copy(source),
        },
        AuditError::Corrupt { path, line, detail } => AuditError::Corrupt {
            path: path.clone(),
            line: *line,
            detail: detail.clone(),
        },
    }
}
