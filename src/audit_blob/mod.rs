//! `[daemon.audit_blob]`: a copy of the audit log in an Azure append blob, one hash chain for
//! every replica (`docs/audit.md`, "The append-blob copy").
//!
//! The local file stays the record of truth and the backlog: a task reads the records the
//! file sink wrote (from the file, not from memory, so a restart loses nothing) and appends
//! those not copied yet, each moved into the blob's chain (`audit::chain::rechain`: the same
//! bytes but `seq`, `prev` and `hash`), many records to a block, each block appended at the
//! position keyturn last read (`x-ms-blob-condition-appendpos`), so a block lands once and in
//! order. An append whose answer was lost (or refused, or cut off by the fence) is in doubt:
//! the blob's tail is read again and the block counts as written when the blob's length and
//! last record are exactly what it would have made them. A copy never holds up a rotation:
//! while Storage is unavailable the backlog grows (`keyturn_audit_copy_lag_seconds`) and
//! catches up when it answers. With `[ha]` every request goes through the leader's
//! [`Fence`]: only the lease holder appends, and it reads the blob's tail (the previous
//! leader's last record) before its first append. What has been copied is kept in
//! `<state_dir>/audit-blob.cursor` (the local record's `seq` and `hash`).
//!
//! `remote.rs` speaks to the blob through the official `azure_storage_blob` SDK.

mod remote;

use crate::audit::chain::{self, GENESIS_PREV};
use crate::audit::{AuditError, AuditEvent, AuditSink, EventKind};
use crate::azure::{Http, SetupError};
use crate::config::{AuditBlobConfig, NetworkConfig};
use crate::fence::{Cut, Fence};
use crate::observe::Observer;
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
pub(crate) use remote::{Remote, RemoteError, Tail, MAX_BLOCK, MAX_BLOCKS};
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How often the copier looks at the local log without being woken.
const POLL: Duration = Duration::from_secs(5);
/// The first and the longest wait after a failed request.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// The events that describe the local files themselves, not what keyturn did: they are not
/// copied (the blob has its own chain, and `audit verify` would read an `audit.rotated` at
/// its end as a missing file).
fn local_only(event: &str) -> bool {
    event == EventKind::AuditRotated.as_str() || event == EventKind::AuditPruned.as_str()
}

/// What has been copied: the local record last copied (or skipped as local-only).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// The blob it was copied to.
    url: String,
    /// Its `seq` in the local log.
    seq: u64,
    /// Its `hash` in the local log.
    hash: String,
}

fn cursor_path(state_dir: &Path) -> PathBuf {
    state_dir.join("audit-blob.cursor")
}

fn load_cursor(state_dir: &Path, url: &str) -> Option<Cursor> {
    let text = std::fs::read_to_string(cursor_path(state_dir)).ok()?;
    match serde_json::from_str::<Cursor>(&text) {
        Ok(c) if c.url == url => Some(c),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "audit copy: the cursor file is not valid; copying the whole local log (records already in the blob are recognised at its end only)");
            None
        }
    }
}

fn save_cursor(state_dir: &Path, c: &Cursor) {
    let path = cursor_path(state_dir);
    let tmp = path.with_extension("cursor.tmp");
    let r = serde_json::to_vec(c)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = r {
        tracing::warn!(path = %path.display(), error = %e, "audit copy: cannot save the cursor; after a restart the copy looks for the last records at the blob's end");
    }
}

/// One local record waiting to be copied.
#[derive(Debug, Clone)]
struct Pending {
    seq: u64,
    hash: String,
    line: String,
    time: Option<time::OffsetDateTime>,
}

/// Reads the records the file sink wrote, incrementally.
struct Local {
    live: PathBuf,
    /// Bytes of the live file read so far, and its inode then.
    offset: u64,
    inode: Option<u64>,
}

impl Local {
    /// Records after local `seq` `after` (all when `None`), oldest first.
    fn read_new(&mut self, after: Option<u64>) -> std::io::Result<Vec<Pending>> {
        use std::os::unix::fs::MetadataExt;
        let meta = match std::fs::metadata(&self.live) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let rescan = self.inode != Some(meta.ino()) || meta.len() < self.offset;
        let mut out = Vec::new();
        let files = if rescan {
            self.offset = 0;
            crate::audit::tools::log_files(&self.live)?
        } else {
            vec![self.live.clone()]
        };
        for f in files {
            let live = f == self.live;
            let bytes = std::fs::read(&f)?;
            let start = if live {
                usize::try_from(self.offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len())
            } else {
                0
            };
            let mut consumed = start;
            for piece in bytes[start..].split_inclusive(|b| *b == b'\n') {
                if piece.last() != Some(&b'\n') {
                    break; // a record being written: next time
                }
                consumed += piece.len();
                let Ok(text) = std::str::from_utf8(&piece[..piece.len() - 1]) else {
                    continue;
                };
                let Ok(r) = chain::parse_line(text) else {
                    continue;
                };
                if after.is_some_and(|a| r.seq <= a) {
                    continue;
                }
                out.push(Pending {
                    seq: r.seq,
                    hash: r.hash.clone(),
                    time: r.time(),
                    line: text.to_owned(),
                });
            }
            if live {
                self.offset = consumed as u64;
                self.inode = Some(meta.ino());
            }
        }
        Ok(out)
    }
}

/// The audit sink that wakes the copier after each record the file sink wrote (it is placed
/// after the file in the `Tee`); the copier reads the record from the file.
pub(crate) struct CopySink {
    wake: Arc<Notify>,
}

#[async_trait]
impl AuditSink for CopySink {
    async fn record(&self, _event: &AuditEvent) -> Result<(), AuditError> {
        self.wake.notify_one();
        Ok(())
    }
}

/// The running copier.
pub(crate) struct Copier {
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
    /// Asks for the last rounds, until the instant given.
    stop: tokio::sync::oneshot::Sender<tokio::time::Instant>,
}

impl Copier {
    /// The sink that wakes it.
    pub(crate) fn sink(&self) -> CopySink {
        CopySink {
            wake: self.wake.clone(),
        }
    }

    /// Gives the copier up to `time` to copy what is pending (at a stop: before the leader
    /// releases its lease), then stops it. What is left stays in the local file and is copied
    /// at the next start (on a replica: when it next leads); a standby, which may not append,
    /// stops at once.
    pub(crate) async fn stop(self, time: Duration) {
        let deadline = tokio::time::Instant::now() + time;
        let _ = self.stop.send(deadline);
        let _ = tokio::time::timeout(time + Duration::from_secs(1), self.task).await;
    }
}

/// Everything the copier needs.
pub(crate) struct Setup {
    pub cfg: AuditBlobConfig,
    pub credential: Arc<dyn TokenCredential>,
    pub live: PathBuf,
    pub state_dir: PathBuf,
    pub fence: Option<Arc<Fence>>,
    pub observer: Arc<dyn Observer>,
}

/// Starts the copier.
pub(crate) fn start(setup: Setup, http: &Http, net: &NetworkConfig) -> Result<Copier, SetupError> {
    let remote = Remote::new(&setup.cfg.url, setup.credential.clone(), http, net)?;
    let wake = Arc::new(Notify::new());
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<tokio::time::Instant>();
    let mut state = State {
        remote,
        cursor: load_cursor(&setup.state_dir, &setup.cfg.url),
        setup,
        timeout: net.timeout,
        local: None,
        queue: VecDeque::new(),
        known: None,
        in_doubt: None,
        failures: 0,
    };
    let w = wake.clone();
    let task = tokio::spawn(async move {
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let sleep = match retry_at {
                Some(t) => t.max(tokio::time::Instant::now()),
                None => tokio::time::Instant::now() + POLL,
            };
            tokio::select! {
                _ = w.notified() => {}
                _ = tokio::time::sleep_until(sleep) => {}
                deadline = &mut stopped => {
                    // The last rounds: until the queue is empty, Storage fails or refuses
                    // (a standby), or the deadline.
                    let deadline = deadline.unwrap_or_else(|_| tokio::time::Instant::now());
                    let _ = tokio::time::timeout_at(deadline, async {
                        while let Some(next) = state.round().await {
                            if next > tokio::time::Instant::now() {
                                break;
                            }
                        }
                    })
                    .await;
                    return;
                }
            }
            if retry_at.is_some_and(|t| tokio::time::Instant::now() < t) {
                state.read_local();
                continue;
            }
            retry_at = state.round().await;
        }
    });
    Ok(Copier { wake, task, stop })
}

/// An append whose outcome is unknown.
#[derive(Debug, Clone)]
struct Doubt {
    part: u32,
    /// The part's length after it, had it landed.
    len_after: u64,
    /// The blob-chain hash of its last record.
    last_hash: String,
    /// How many queued records it carried.
    count: usize,
}

struct State {
    remote: Remote,
    setup: Setup,
    timeout: Duration,
    cursor: Option<Cursor>,
    local: Option<Local>,
    queue: VecDeque<Pending>,
    /// The blob's end as this copier last knew it; `None`: read it before appending.
    known: Option<Tail>,
    in_doubt: Option<Doubt>,
    failures: u32,
}

/// Why a request did not give its result.
enum Sent<T> {
    Done(T),
    /// Not sent (a standby, or the leader past its deadline).
    Withheld,
    /// Sent and failed or cut off.
    Failed(RemoteError),
}

impl State {
    /// Runs `op` through the fence (with `[ha]`) or under `network.timeout`.
    async fn send<T>(&self, op: impl Future<Output = Result<T, RemoteError>>) -> Sent<T> {
        let r = match &self.setup.fence {
            Some(f) => match f.run(op).await {
                Ok(r) => r,
                Err(Cut::Refused(_)) => return Sent::Withheld,
                Err(c @ Cut::TimedOut(_)) => Err(RemoteError::Failed(c.to_string())),
            },
            None => match tokio::time::timeout(self.timeout, op).await {
                Ok(r) => r,
                Err(_) => Err(RemoteError::Failed(format!(
                    "no answer within network.timeout ({}s)",
                    self.timeout.as_secs()
                ))),
            },
        };
        match r {
            Ok(v) => Sent::Done(v),
            Err(e) => Sent::Failed(e),
        }
    }

    /// Queues the local records written since the last look.
    fn read_local(&mut self) {
        let after = self
            .queue
            .back()
            .map(|p| p.seq)
            .or(self.cursor.as_ref().map(|c| c.seq));
        let local = self.local.get_or_insert_with(|| Local {
            live: self.setup.live.clone(),
            offset: 0,
            inode: None,
        });
        match local.read_new(after) {
            Ok(new) => self.queue.extend(new),
            Err(e) => {
                tracing::warn!(error = %e, "audit copy: cannot read the local audit log; trying again")
            }
        }
        self.report();
    }

    fn report(&self) {
        let lag = self
            .queue
            .front()
            .and_then(|p| p.time)
            .map(|t| {
                (time::OffsetDateTime::now_utc() - t)
                    .as_seconds_f64()
                    .max(0.0)
            })
            .unwrap_or(0.0);
        self.setup.observer.audit_copy(self.queue.len() as u64, lag);
    }

    /// `n` queued records are in the blob: forget them and move the cursor.
    fn copied(&mut self, n: usize) {
        let mut last = None;
        for _ in 0..n {
            last = self.queue.pop_front();
        }
        if let Some(p) = last {
            let c = Cursor {
                url: self.setup.cfg.url.clone(),
                seq: p.seq,
                hash: p.hash,
            };
            save_cursor(&self.setup.state_dir, &c);
            self.cursor = Some(c);
        }
        self.report();
    }

    fn failed(&mut self, e: &RemoteError) -> Option<tokio::time::Instant> {
        self.failures = self.failures.saturating_add(1);
        let wait = BACKOFF
            .0
            .saturating_mul(1 << self.failures.min(6))
            .min(BACKOFF.1);
        tracing::warn!(error = %e, backlog = self.queue.len(), retry_in = ?wait, "audit copy: Storage did not take the copy; the local log keeps every record and the copy catches up");
        Some(tokio::time::Instant::now() + wait)
    }

    /// Reads the blob's end; settles an append in doubt; drops from the queue what the end
    /// shows is already there.
    async fn learn_tail(&mut self) -> Result<(), Option<RemoteError>> {
        let tail = match self.send(self.remote.tail()).await {
            Sent::Done(t) => t,
            Sent::Withheld => return Err(None),
            Sent::Failed(e) => return Err(Some(e)),
        };
        if let Some(d) = self.in_doubt.take() {
            if tail.part == d.part
                && tail.len == d.len_after
                && tail.last.as_ref().map(|l| l.1.as_str()) == Some(d.last_hash.as_str())
            {
                tracing::info!(
                    records = d.count,
                    "audit copy: an append whose answer was lost had landed"
                );
                self.copied(d.count.min(self.queue.len()));
            }
        }
        // Records of this replica already at the blob's end (a crash after an append,
        // before the cursor was saved): the longest run of the end equal to the queue's head.
        let keys: Vec<String> = self
            .queue
            .iter()
            .take(tail.recent.len())
            .filter_map(|p| chain::content_key(&p.line).ok())
            .collect();
        let m = (1..=keys.len().min(tail.recent.len()))
            .rev()
            .find(|&m| tail.recent[tail.recent.len() - m..] == keys[..m])
            .unwrap_or(0);
        if m > 0 {
            tracing::info!(
                records = m,
                "audit copy: the blob already ends with these records; not copied again"
            );
            self.copied(m);
        }
        self.known = Some(tail);
        Ok(())
    }

    /// One round: queue new local records and append what the blob lacks. Returns when to
    /// try again after a failure.
    async fn round(&mut self) -> Option<tokio::time::Instant> {
        self.read_local();
        // Local-only records at the head are skipped (and counted as copied).
        while self
            .queue
            .front()
            .is_some_and(|p| chain::parse_line(&p.line).is_ok_and(|r| local_only(r.event())))
        {
            self.copied(1);
        }
        if self.queue.is_empty() {
            return None;
        }
        if self.known.is_none() {
            match self.learn_tail().await {
                Ok(()) => {}
                Err(None) => return None,
                Err(Some(e)) => return self.failed(&e),
            }
            if self.queue.is_empty() {
                return None;
            }
        }
        let tail = self.known.clone()?;
        if tail.blocks >= MAX_BLOCKS {
            return self.next_part(&tail).await;
        }
        // The block: queued records moved into the blob's chain, up to 4 MiB.
        let (mut seq, mut prev) = match &tail.last {
            Some((s, h)) => (s.saturating_add(1), h.clone()),
            None => (0, GENESIS_PREV.to_owned()),
        };
        let mut block = Vec::new();
        let mut keys = Vec::new();
        let mut count = 0;
        for p in &self.queue {
            let r = chain::parse_line(&p.line);
            if r.as_ref().is_ok_and(|r| local_only(r.event())) {
                count += 1;
                continue;
            }
            let Ok(e) = chain::rechain(&p.line, seq, &prev) else {
                count += 1;
                continue;
            };
            if block.len() + e.line.len() > MAX_BLOCK {
                break;
            }
            block.extend_from_slice(&e.line);
            if let Ok(k) = chain::content_key(&p.line) {
                keys.push(k);
            }
            count += 1;
            seq += 1;
            prev = e.hash;
        }
        if block.is_empty() {
            if count > 0 {
                self.copied(count);
            } else if let Some(p) = self.queue.front() {
                // A single record larger than a block cannot be copied.
                tracing::error!(
                    seq = p.seq,
                    "audit copy: a record is larger than an append block (4 MiB) and is not copied"
                );
                self.copied(1);
            }
            return None;
        }
        let len = block.len() as u64;
        let doubt = Doubt {
            part: tail.part,
            len_after: tail.len + len,
            last_hash: prev.clone(),
            count,
        };
        match self
            .send(self.remote.append(tail.part, tail.len, block))
            .await
        {
            Sent::Done(blocks) => {
                self.failures = 0;
                self.known = Some(Tail {
                    part: tail.part,
                    len: tail.len + len,
                    blocks: blocks.unwrap_or(tail.blocks + 1),
                    last: Some((seq - 1, prev)),
                    recent: keys,
                });
                self.copied(count);
                if !self.queue.is_empty() {
                    // More to copy: go on at once.
                    return Some(tokio::time::Instant::now());
                }
                None
            }
            Sent::Withheld => {
                self.known = None;
                None
            }
            Sent::Failed(RemoteError::Full(_)) => self.next_part(&tail).await,
            Sent::Failed(e) => {
                // Whatever the answer, the block may have landed (an SDK retry after a lost
                // answer meets 412): the tail decides.
                self.in_doubt = Some(doubt);
                self.known = None;
                self.failed(&e)
            }
        }
    }

    /// The current part is full: the chain continues in the next.
    async fn next_part(&mut self, tail: &Tail) -> Option<tokio::time::Instant> {
        let next = tail.part + 1;
        match self.send(self.remote.create(next)).await {
            Sent::Done(()) => {
                tracing::info!(part = %self.remote.part_url(next), "audit copy: the append blob is full (50,000 blocks); continuing in the next");
                self.known = Some(Tail {
                    part: next,
                    len: 0,
                    blocks: 0,
                    last: tail.last.clone(),
                    recent: Vec::new(),
                });
                Some(tokio::time::Instant::now())
            }
            Sent::Withheld => {
                self.known = None;
                None
            }
            Sent::Failed(e) => {
                self.known = None;
                self.failed(&e)
            }
        }
    }
}

/// Downloads every part of the blob at `url` (`BLOB`, `BLOB.1`, …) into `dir`, one file per
/// part named as the part, for `keyturn audit verify --blob`; returns (file, part URL).
pub(crate) async fn download(
    url: &str,
    credential: Arc<dyn TokenCredential>,
    http: &Http,
    net: &NetworkConfig,
    dir: &Path,
) -> Result<Vec<(PathBuf, String)>, String> {
    let remote = Remote::new(url, credential, http, net).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for k in 0u32.. {
        let Some(bytes) = remote.read_part(k).await.map_err(|e| e.to_string())? else {
            break;
        };
        let file = dir.join(format!("part-{k:06}"));
        std::fs::write(&file, bytes).map_err(|e| format!("{}: {e}", file.display()))?;
        out.push((file, remote.part_url(k)));
    }
    if out.is_empty() {
        return Err(format!("{url} does not exist"));
    }
    Ok(out)
}
