//! `keyturn audit verify`: the chain across the files, and the seal beside the live file.

use super::{
    chain_order, read_lines, short, Unreadable, EXIT_BROKEN, EXIT_INTACT, EXIT_UNREADABLE,
};
use crate::audit::chain::{LineError, Record, GENESIS_PREV};
use crate::audit::file::{parse_pruned_detail, read_seal, SealError};
use crate::audit::EventKind;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

/// How the chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// A record's content does not match its hash.
    Edited,
    /// Records are missing from the middle.
    Deleted,
    /// A record does not belong (a duplicate, or one that does not link to its predecessor).
    Inserted,
    /// Records are out of order.
    Reordered,
    /// Records are missing at the end.
    Truncated,
    /// Records are missing at the start (the first is not the genesis record).
    MissingStart,
    /// A line is not a record at all.
    Malformed,
    /// keyturn itself recorded that records were removed while it was down.
    Noted,
}

impl BreakKind {
    /// A short name for reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakKind::Edited => "edited",
            BreakKind::Deleted => "deleted",
            BreakKind::Inserted => "inserted",
            BreakKind::Reordered => "reordered",
            BreakKind::Truncated => "truncated",
            BreakKind::MissingStart => "missing start",
            BreakKind::Malformed => "malformed",
            BreakKind::Noted => "records lost",
        }
    }
}

/// Where and how the chain breaks first.
#[derive(Debug, Clone)]
pub struct Break {
    /// The kind of damage.
    pub kind: BreakKind,
    /// The file.
    pub file: PathBuf,
    /// The 1-based line in that file.
    pub line: usize,
    /// The record's sequence number, when readable.
    pub seq: Option<u64>,
    /// What is wrong, for people.
    pub detail: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BROKEN ({}) at {} line {}",
            self.kind.as_str(),
            self.file.display(),
            self.line
        )?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// The result of a verification.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The files checked, in chain order.
    pub files: Vec<PathBuf>,
    /// Records read.
    pub records: u64,
    /// First and last sequence numbers.
    pub first_seq: Option<u64>,
    /// Last sequence number.
    pub last_seq: Option<u64>,
    /// Hash of the last record.
    pub head: Option<String>,
    /// The first break, if any.
    pub problem: Option<Break>,
    /// The chain starts after records that `daemon.audit_retention` removed: the sequence
    /// number of the `audit.pruned` record that announced it.
    pub pruned_by: Option<u64>,
}

impl VerifyReport {
    /// True when the chain is intact.
    pub fn intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// Checks the chain across `files` (ordered by their first sequence number). With
/// `partial`, the files may hold a contiguous piece of a chain (no genesis at the start,
/// more records after the end); otherwise they must hold all of it.
pub fn verify(files: &[PathBuf], partial: bool) -> Result<VerifyReport, Unreadable> {
    // `verify copy/audit.jsonl*` names the seal too: it is checked beside its log, not
    // read as one.
    let logs: Vec<PathBuf> = files
        .iter()
        .filter(|f| {
            !files
                .iter()
                .any(|l| crate::audit::file::seal_path(l) == **f)
        })
        .cloned()
        .collect();
    let files = chain_order(&logs);
    let lines = read_lines(&files)?;
    let mut report = VerifyReport {
        files: files.clone(),
        records: 0,
        first_seq: None,
        last_seq: None,
        head: None,
        problem: None,
        pruned_by: None,
    };
    // Where each sequence number appears, for telling reordering from deletion.
    let mut positions: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, l) in lines.iter().enumerate() {
        if let Ok(r) = &l.parsed {
            positions.entry(r.seq).or_default().push(i);
        }
    }
    let mut prev: Option<&Record> = None;
    for (i, l) in lines.iter().enumerate() {
        let at = |kind: BreakKind, seq: Option<u64>, detail: String| Break {
            kind,
            file: files[l.file].clone(),
            line: l.number,
            seq,
            detail,
        };
        let r = match &l.parsed {
            Ok(r) if l.incomplete => {
                report.problem = Some(at(
                    BreakKind::Malformed,
                    Some(r.seq),
                    "the last line has no newline".into(),
                ));
                return Ok(report);
            }
            Ok(r) => r,
            Err(e) => {
                let (kind, detail) = match (e, l.incomplete) {
                    (_, true) => (BreakKind::Malformed, "an incomplete record (a write interrupted by a crash or a full disk; keyturn removes it when it next opens the log)".to_owned()),
                    (LineError::HashMismatch { .. }, _) => (BreakKind::Edited, format!("edited: {e}")),
                    (LineError::Malformed(_), _) => (BreakKind::Malformed, format!("{e} (edited, inserted or corrupted)")),
                };
                let seq = serde_json::from_slice::<serde_json::Value>(
                    std::fs::read(&files[l.file])
                        .ok()
                        .and_then(|b| {
                            b.split(|c| *c == b'\n')
                                .nth(l.number - 1)
                                .map(<[u8]>::to_vec)
                        })
                        .unwrap_or_default()
                        .as_slice(),
                )
                .ok()
                .and_then(|v| v.get("seq").and_then(|s| s.as_u64()));
                report.problem = Some(at(kind, seq, detail));
                return Ok(report);
            }
        };
        match prev {
            None => {
                if r.seq == 0 && r.prev != GENESIS_PREV {
                    report.problem = Some(at(
                        BreakKind::Inserted,
                        Some(0),
                        "record 0 must start the chain with prev = 64 zeros".into(),
                    ));
                    return Ok(report);
                }
                // A start that retention made: an `audit.pruned` record later in the chain
                // names this record and its prev (and the rest of the chain must verify).
                let pruned_by = lines.iter().find_map(|l| {
                    let p = l.parsed.as_ref().ok()?;
                    (p.event() == EventKind::AuditPruned.as_str()
                        && p.seq > r.seq
                        && parse_pruned_detail(p.str("detail")?) == Some((r.seq, &r.prev)))
                    .then_some(p.seq)
                });
                if r.seq != 0 && pruned_by.is_some() {
                    report.pruned_by = pruned_by;
                } else if r.seq != 0 && !partial {
                    report.problem = Some(at(
                        BreakKind::MissingStart,
                        Some(r.seq),
                        format!("the log starts at record {} instead of the genesis record 0: earlier records or files are missing (pass every rotated file, or --partial to check a piece of the chain)", r.seq),
                    ));
                    return Ok(report);
                }
                report.first_seq = Some(r.seq);
            }
            Some(p) => {
                // A crafted record may carry the largest seq: nothing can follow it.
                let expected = p.seq.saturating_add(1);
                if r.seq > expected {
                    // Over the records read, not the missing range: a crafted seq of 10^18
                    // would take years to walk.
                    let missing_later = positions
                        .iter()
                        .any(|(s, v)| (expected..r.seq).contains(s) && v.iter().any(|&j| j > i));
                    report.problem = Some(if missing_later {
                        at(BreakKind::Reordered, Some(r.seq), format!("record {} comes before record {expected}, which appears later: records were reordered", r.seq))
                    } else {
                        at(
                            BreakKind::Deleted,
                            Some(r.seq),
                            format!("records {expected}..{} are missing: deleted", r.seq - 1),
                        )
                    });
                    return Ok(report);
                }
                if r.seq < expected {
                    let earlier = positions
                        .get(&r.seq)
                        .and_then(|v| v.iter().copied().find(|&j| j < i));
                    let dup = earlier.and_then(|j| {
                        lines[j]
                            .parsed
                            .as_ref()
                            .ok()
                            .filter(|o| o.hash == r.hash)
                            .map(|_| j)
                    });
                    report.problem = Some(match (dup, earlier) {
                        (Some(j), _) => at(BreakKind::Inserted, Some(r.seq), format!("a copy of the record at {} line {}: inserted", files[lines[j].file].display(), lines[j].number)),
                        (None, Some(j)) => at(BreakKind::Inserted, Some(r.seq), format!("record {} appears twice (also at {} line {}): one of them was inserted", r.seq, files[lines[j].file].display(), lines[j].number)),
                        (None, None) => at(BreakKind::Reordered, Some(r.seq), format!("record {} comes after record {}: records were reordered", r.seq, p.seq)),
                    });
                    return Ok(report);
                }
                if r.prev != p.hash {
                    report.problem = Some(at(
                        BreakKind::Inserted,
                        Some(r.seq),
                        format!("its prev {} is not the hash {} of record {}: a record before it was inserted or replaced", short(&r.prev), short(&p.hash), p.seq),
                    ));
                    return Ok(report);
                }
            }
        }
        if r.event() == EventKind::AuditSealMismatch.as_str() {
            report.problem = Some(at(
                BreakKind::Noted,
                Some(r.seq),
                format!(
                    "keyturn found at start-up that records were removed from the end of the log: {}",
                    r.str("detail").unwrap_or("")
                ),
            ));
            return Ok(report);
        }
        report.records += 1;
        report.last_seq = Some(r.seq);
        report.head = Some(r.hash.clone());
        prev = Some(r);
    }
    // The end: what the seal beside the live file says, and a last file that was rotated.
    let Some(last_line) = lines.last() else {
        if !partial {
            if let Some(f) = files.last() {
                match read_seal(f) {
                    Ok(Some(seal)) => {
                        report.problem = Some(Break {
                            kind: BreakKind::Truncated,
                            file: f.clone(),
                            line: 0,
                            seq: None,
                            detail: format!(
                                "the log is empty but its seal names record {}",
                                seal.seq
                            ),
                        });
                    }
                    Ok(None) => {}
                    Err(e) => return seal_problem(report, e),
                }
            }
        }
        return Ok(report);
    };
    let last = prev.expect("the loop returned unless every line parsed");
    let file = files[last_line.file].clone();
    for f in &files {
        let seal = match read_seal(f) {
            Ok(Some(seal)) => seal,
            Ok(None) => continue,
            Err(e) => return seal_problem(report, e),
        };
        if seal.seq > last.seq {
            report.problem = Some(Break {
                    kind: BreakKind::Truncated,
                    file: file.clone(),
                    line: last_line.number,
                    seq: Some(last.seq),
                    detail: format!("the log ends at record {} but its seal ({}) names record {}: records were removed from the end", last.seq, crate::audit::file::seal_path(f).display(), seal.seq),
                });
            return Ok(report);
        }
        if let Some(j) = positions.get(&seal.seq).and_then(|v| v.first()) {
            if let Ok(r) = &lines[*j].parsed {
                if r.hash != seal.hash {
                    report.problem = Some(Break {
                            kind: BreakKind::Edited,
                            file: files[lines[*j].file].clone(),
                            line: lines[*j].number,
                            seq: Some(r.seq),
                            detail: format!("the seal names record {} with hash {} but the log's record {} has hash {}: the log was rewritten", seal.seq, short(&seal.hash), r.seq, short(&r.hash)),
                        });
                    return Ok(report);
                }
            }
        }
    }
    if !partial && last.event() == EventKind::AuditRotated.as_str() {
        report.problem = Some(Break {
            kind: BreakKind::Truncated,
            file,
            line: last_line.number,
            seq: Some(last.seq),
            detail: "the last record says the chain continues in a new file, which is missing"
                .into(),
        });
    }
    Ok(report)
}

/// A seal that cannot be read makes the log unreadable (exit 2); one that is not a seal
/// breaks it (exit 1): the seal is what shows records cut off the end, so a damaged seal
/// is never taken for "no seal".
fn seal_problem(mut report: VerifyReport, e: SealError) -> Result<VerifyReport, Unreadable> {
    match e {
        SealError::Unreadable { path, source } => Err(Unreadable { path, source }),
        SealError::Malformed { ref path, .. } => {
            report.problem = Some(Break {
                kind: BreakKind::Malformed,
                file: path.clone(),
                line: 1,
                seq: None,
                detail: format!("{e}: it was edited or corrupted, and records may have been removed from the end of the log"),
            });
            Ok(report)
        }
    }
}

/// `keyturn audit verify`: prints the result; returns the exit code (0, 1, 2).
pub fn verify_command(files: &[PathBuf], partial: bool, out: &mut dyn Write) -> i32 {
    print_verify(verify(files, partial), out)
}

/// Prints a verification's result; returns the exit code (0, 1, 2).
pub fn print_verify(result: Result<VerifyReport, Unreadable>, out: &mut dyn Write) -> i32 {
    match result {
        Ok(report) => {
            let _ = match &report.problem {
                None => writeln!(
                    out,
                    "intact: {} record(s){} in {} file(s); head {}{}",
                    report.records,
                    match (report.first_seq, report.last_seq) {
                        (Some(a), Some(b)) => format!(" (seq {a}..{b})"),
                        _ => String::new(),
                    },
                    report.files.len(),
                    report.head.as_deref().unwrap_or("-"),
                    match (report.pruned_by, report.first_seq) {
                        (Some(by), Some(first)) => format!("; starts at record {first}: the records before it were removed by daemon.audit_retention (audit.pruned, record {by})"),
                        _ => String::new(),
                    }
                ),
                Some(b) => writeln!(out, "{b}"),
            };
            if report.intact() {
                EXIT_INTACT
            } else {
                EXIT_BROKEN
            }
        }
        Err(e) => {
            let _ = writeln!(out, "unreadable: {e}");
            EXIT_UNREADABLE
        }
    }
}
