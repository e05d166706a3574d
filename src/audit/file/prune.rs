//! Audit retention (`daemon.audit_retention`): removing the oldest rotated files once their
//! last record is older than the retention, so that the chain still verifies.
//!
//! Only a run of the *oldest* rotated files is removed, so what is left is one contiguous
//! piece of the chain; never the live file (the chain's head), never the newest rotated file
//! (its `audit.rotated` record links to the live file, and it holds the record the seal names
//! while the live file is still empty), and never a file that holds the record the seal
//! names. The removal is announced first by an `audit.pruned` record in the live chain that
//! names the record the chain then starts at and that record's `prev`
//! ([`pruned_detail`]); `keyturn audit verify` accepts a chain that starts there and says so.

use super::files::{first_line, last_line, rotated_files};
use super::seal::read_seal;
use crate::audit::chain::parse_line;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

/// The rotated files a prune would remove, and where the chain then starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunePlan {
    /// The files to remove, oldest first.
    pub files: Vec<PathBuf>,
    /// The sequence number of the first record left.
    pub starts_at: u64,
    /// That record's `prev`: the hash of the last record removed.
    pub prev: String,
}

/// The text of an `audit.pruned` record's detail ends in this, then the sequence number,
/// ` whose prev is `, and the 64 hex digits (`keyturn audit verify` reads it).
pub const PRUNED_MARK: &str = "the chain now starts at record ";

/// An `audit.pruned` record's detail for `plan`, `retention` as written in the file.
pub fn pruned_detail(plan: &PrunePlan, retention: &str) -> String {
    let names: Vec<String> = plan
        .files
        .iter()
        .map(|f| {
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    format!(
        "removing {} rotated audit file(s) whose last record is older than daemon.audit_retention ({retention}): {}; {PRUNED_MARK}{} whose prev is {}",
        names.len(),
        names.join(", "),
        plan.starts_at,
        plan.prev
    )
}

/// Reads the `(starts_at, prev)` an `audit.pruned` detail names.
pub fn parse_pruned_detail(detail: &str) -> Option<(u64, &str)> {
    let (_, rest) = detail.rsplit_once(PRUNED_MARK)?;
    let (seq, prev) = rest.split_once(" whose prev is ")?;
    Some((seq.parse().ok()?, prev))
}

/// The oldest rotated files of the log at `log` whose last record is older than
/// `now - retention`; `None` when there is nothing to remove.
pub fn plan_prune(
    log: &Path,
    retention: Duration,
    now: OffsetDateTime,
) -> io::Result<Option<PrunePlan>> {
    let rotated = rotated_files(log)?;
    let cutoff = now - retention;
    // A seal that cannot be read: keep everything (verify reports it).
    let Ok(seal) = read_seal(log) else {
        return Ok(None);
    };
    let mut files = Vec::new();
    // Never the newest rotated file: `windows` stops before it.
    for pair in rotated.windows(2) {
        let ((first, path), (next_first, _)) = (&pair[0], &pair[1]);
        if seal
            .as_ref()
            .is_some_and(|s| (*first..*next_first).contains(&s.seq))
        {
            break;
        }
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        let old = last_line(&file, len)?
            .1
            .and_then(|l| parse_line(&l).ok())
            .and_then(|r| r.time())
            .is_some_and(|t| t < cutoff);
        if !old {
            break;
        }
        files.push(path.clone());
    }
    let Some((_, start)) = rotated.get(files.len()).filter(|_| !files.is_empty()) else {
        return Ok(None);
    };
    let first = first_line(&std::fs::File::open(start)?)?
        .and_then(|l| parse_line(&l).ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} does not start with a valid record; nothing is pruned until `keyturn audit verify` is clean",
                    start.display()
                ),
            )
        })?;
    Ok(Some(PrunePlan {
        files,
        starts_at: first.seq,
        prev: first.prev,
    }))
}

impl PrunePlan {
    /// Removes the files (after the `audit.pruned` record is written).
    pub fn apply(&self) -> io::Result<()> {
        for f in &self.files {
            std::fs::remove_file(f)?;
        }
        if let Some(f) = self.files.first() {
            super::files::sync_dir(f);
        }
        Ok(())
    }
}
