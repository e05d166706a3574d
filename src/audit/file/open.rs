//! Opening the log: continuing the chain from its last record (or the newest rotated
//! file's), removing an incomplete last line, and comparing the end with the seal.

use super::files::{
    count_lines, first_line, last_line, open_append, open_owned, rotated_files, seal_path,
};
use super::seal::{read_seal, SealError};
use super::{AuditHealth, FileOptions, FileSink, State};
use crate::audit::chain::{self, GENESIS_PREV};
use crate::audit::{Actor, AuditError, AuditEvent, EventKind, Outcome};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

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

pub(super) fn daemon_note(
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
}
