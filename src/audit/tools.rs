//! `keyturn audit show | verify | tail`: reading, checking and following the log. They
//! only read files, so they work on a copy of the log on another machine.

use super::chain::{self, LineError, Record, GENESIS_PREV};
use super::file::{read_seal, rotated_files, SealError};
use super::EventKind;
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Exit code: the chain is intact.
pub const EXIT_INTACT: i32 = 0;
/// Exit code: the chain is broken.
pub const EXIT_BROKEN: i32 = 1;
/// Exit code: a file could not be read.
pub const EXIT_UNREADABLE: i32 = 2;

/// The files of the log whose live file is `live`, oldest first: the rotated files
/// (`<live>.<12 digits>`) then `live` itself when it exists.
pub fn log_files(live: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = rotated_files(live)?.into_iter().map(|(_, p)| p).collect();
    if live.exists() || files.is_empty() {
        files.push(live.to_owned());
    }
    Ok(files)
}

/// A file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct Unreadable {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// One line of a log file.
struct Line {
    file: usize,
    /// 1-based line number in its file.
    number: usize,
    parsed: Result<Record, LineError>,
    /// The line had no newline (an interrupted write).
    incomplete: bool,
}

fn read_lines(files: &[PathBuf]) -> Result<Vec<Line>, Unreadable> {
    let mut out = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|source| Unreadable {
            path: path.clone(),
            source,
        })?;
        let mut rest: &[u8] = &bytes;
        let mut number = 0;
        while !rest.is_empty() {
            number += 1;
            let (line, incomplete, next) = match rest.iter().position(|b| *b == b'\n') {
                Some(p) => (&rest[..p], false, &rest[p + 1..]),
                None => (rest, true, &rest[rest.len()..]),
            };
            rest = next;
            let parsed = match std::str::from_utf8(line) {
                Ok(text) => chain::parse_line(text),
                Err(_) => Err(LineError::Malformed("not UTF-8".into())),
            };
            out.push(Line {
                file: i,
                number,
                parsed,
                incomplete,
            });
        }
    }
    Ok(out)
}

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
}

impl VerifyReport {
    /// True when the chain is intact.
    pub fn intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// Orders files by their first record's sequence number (unreadable first lines last,
/// in the order given).
fn chain_order(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut keyed: Vec<(u64, usize, PathBuf)> = files
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let first = std::fs::read(p).ok().and_then(|b| {
                let end = b.iter().position(|c| *c == b'\n')?;
                let text = std::str::from_utf8(&b[..end]).ok()?;
                chain::parse_line(text).ok().map(|r| r.seq)
            });
            (first.unwrap_or(u64::MAX), i, p.clone())
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, _, p)| p).collect()
}

/// Checks the chain across `files` (ordered by their first sequence number). With
/// `partial`, the files may hold a contiguous piece of a chain (no genesis at the start,
/// more records after the end); otherwise they must hold all of it.
pub fn verify(files: &[PathBuf], partial: bool) -> Result<VerifyReport, Unreadable> {
    // `verify copy/audit.jsonl*` names the seal too: it is checked beside its log, not
    // read as one.
    let logs: Vec<PathBuf> = files
        .iter()
        .filter(|f| !files.iter().any(|l| super::file::seal_path(l) == **f))
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
                if r.seq != 0 && !partial {
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
                    detail: format!("the log ends at record {} but its seal ({}) names record {}: records were removed from the end", last.seq, super::file::seal_path(f).display(), seal.seq),
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

/// The first 12 characters of a hash, for reports. By characters, not bytes: the hashes
/// come from files anyone may have edited.
fn short(h: &str) -> String {
    prefix(h, 12)
}

/// The first `n` characters of `s` (never splits a UTF-8 character).
pub(crate) fn prefix(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// `keyturn audit verify`: prints the result; returns the exit code (0, 1, 2).
pub fn verify_command(files: &[PathBuf], partial: bool, out: &mut dyn Write) -> i32 {
    match verify(files, partial) {
        Ok(report) => {
            let _ = match &report.problem {
                None => writeln!(
                    out,
                    "intact: {} record(s){} in {} file(s); head {}",
                    report.records,
                    match (report.first_seq, report.last_seq) {
                        (Some(a), Some(b)) => format!(" (seq {a}..{b})"),
                        _ => String::new(),
                    },
                    report.files.len(),
                    report.head.as_deref().unwrap_or("-")
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

/// Which records `show` prints.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this account.
    pub account: Option<String>,
    /// Only records at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only these event types; `rotation` matches every `rotation.*`.
    pub events: Vec<String>,
    /// Only this outcome (`success`, `warning`, `failure` or `failed`, `pending`).
    pub outcome: Option<String>,
}

impl Filter {
    /// True when `r` passes.
    pub fn matches(&self, r: &Record) -> bool {
        if let Some(a) = &self.account {
            if r.account() != Some(a.as_str()) {
                return false;
            }
        }
        if let Some(since) = self.since {
            if r.time().is_none_or(|t| t < since) {
                return false;
            }
        }
        if !self.events.is_empty() {
            let ev = r.event();
            let hit = self.events.iter().any(|e| {
                ev == e || (ev.starts_with(e.as_str()) && ev.as_bytes().get(e.len()) == Some(&b'.'))
            });
            if !hit {
                return false;
            }
        }
        if let Some(o) = &self.outcome {
            let want = if o == "failed" { "failure" } else { o.as_str() };
            if r.outcome() != Some(want) {
                return false;
            }
        }
        true
    }
}

/// Parses `--since`: a duration back from `now` (`7d`, `12h`), an RFC 3339 time or a date.
pub fn parse_since(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    if let Ok(d) = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")) {
        return Ok(d.midnight().assume_utc());
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(now - d),
        Err(e) => Err(format!("--since {s:?}: expected a duration like 7d or 12h, a date like 2026-11-01, or an RFC 3339 time ({e})")),
    }
}

/// Reads every record of `files` in chain order; lines that are not records are reported
/// on `warn` and skipped.
pub fn read_records(files: &[PathBuf], warn: &mut dyn Write) -> Result<Vec<Record>, Unreadable> {
    let files = chain_order(files);
    let lines = read_lines(&files)?;
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        match l.parsed {
            Ok(r) => out.push(r),
            Err(e) => {
                let _ = writeln!(
                    warn,
                    "warning: {} line {}: {e}; run `keyturn audit verify`",
                    files[l.file].display(),
                    l.number
                );
            }
        }
    }
    Ok(out)
}

fn actor_text(r: &Record) -> String {
    let trigger = r.str("trigger");
    let actor = r
        .value
        .get("actor")
        .map(|a| match a.get("kind").and_then(|k| k.as_str()) {
            Some("user") => {
                let uid = a.get("uid").and_then(|u| u.as_u64()).unwrap_or(0);
                let mut s = match a.get("name").and_then(|n| n.as_str()) {
                    Some(n) => format!("{n}({uid})"),
                    None => format!("uid {uid}"),
                };
                if let Some(pid) = a.get("pid").and_then(|p| p.as_i64()) {
                    s.push_str(&format!(" pid {pid}"));
                }
                s
            }
            Some(k) => k.to_owned(),
            None => "?".into(),
        });
    match (trigger, actor) {
        (Some(t), Some(a)) => format!("{t}/{a}"),
        (Some(t), None) => t.to_owned(),
        (None, Some(a)) => a,
        (None, None) => "-".into(),
    }
}

fn detail_text(r: &Record) -> String {
    let mut parts = Vec::new();
    if let Some(v) = r.str("version") {
        parts.push(format!("version {}", prefix(v, 8)));
    }
    if let Some(d) = r.value.get("duration_ms").and_then(|d| d.as_u64()) {
        parts.push(format!("took {d}ms"));
    }
    if let Some(e) = r.value.get("error") {
        let mut s = String::from("error ");
        if let Some(c) = e.get("code").and_then(|c| c.as_str()) {
            s.push_str(c);
        } else if let Some(k) = e.get("kind").and_then(|k| k.as_str()) {
            s.push_str(k);
        }
        if let Some(h) = e.get("http_status").and_then(|h| h.as_u64()) {
            s.push_str(&format!(" HTTP {h}"));
        }
        if let Some(m) = e.get("message").and_then(|m| m.as_str()) {
            s.push_str(&format!(": {m}"));
        }
        if let Some(id) = e.get("request_id").and_then(|m| m.as_str()) {
            s.push_str(&format!(" (request {id})"));
        }
        parts.push(s);
    }
    if let Some(t) = r.str("ticket") {
        parts.push(format!("ticket {t}"));
    }
    if let Some(t) = r.str("reason") {
        parts.push(format!("reason {t:?}"));
    }
    if let Some(d) = r.str("detail") {
        parts.push(d.replace('\n', " "));
    }
    parts.join("; ")
}

/// One readable row: time, account, event, trigger/actor, outcome, detail. Every cell is
/// [`printable`]: a record's text (a ticket, a Key Vault message, an account name in a
/// crafted file) cannot send escape sequences to the terminal that shows it.
pub fn row(r: &Record) -> [String; 6] {
    [
        r.str("time").unwrap_or("?").to_owned(),
        r.account().unwrap_or("-").to_owned(),
        r.event().to_owned(),
        actor_text(r),
        r.outcome().unwrap_or("-").to_owned(),
        detail_text(r),
    ]
    .map(|cell| printable(&cell))
}

/// `s` with every control character (ESC, CR, BEL, …) written as its Rust escape (`\u{1b}`).
fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// Writes the records that pass `filter` as a table (or JSON lines); returns how many.
pub fn show(
    records: &[Record],
    filter: &Filter,
    json: bool,
    out: &mut dyn Write,
) -> io::Result<usize> {
    let chosen: Vec<&Record> = records.iter().filter(|r| filter.matches(r)).collect();
    if json {
        for r in &chosen {
            serde_json::to_writer(&mut *out, &r.value)?;
            writeln!(out)?;
        }
        return Ok(chosen.len());
    }
    let header = [
        "TIME",
        "ACCOUNT",
        "EVENT",
        "TRIGGER/ACTOR",
        "OUTCOME",
        "DETAIL",
    ]
    .map(String::from);
    let rows: Vec<[String; 6]> = chosen.iter().map(|r| row(r)).collect();
    let mut widths = [0usize; 5];
    for r in std::iter::once(&header).chain(rows.iter()) {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (w, c) in widths.iter().zip(r.iter()) {
            line.push_str(&format!("{c:<w$}  "));
        }
        line.push_str(&r[5]);
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(chosen.len())
}

/// A record as one readable line (for `tail`).
pub fn line_text(r: &Record) -> String {
    let [time, account, event, actor, outcome, detail] = row(r);
    let mut s = format!("{time} {event:<24} account={account} by={actor} outcome={outcome}");
    if !detail.is_empty() {
        s.push_str(&format!(" ({detail})"));
    }
    s
}

/// The complete (newline-terminated) lines of `bytes`, without their newlines.
fn complete_lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes
        .split_inclusive(|b| *b == b'\n')
        .filter_map(|l| l.strip_suffix(b"\n"))
        .collect()
}

/// Follows the live file: prints the last `initial` records, then every new one as it
/// is appended, across rotations (records that went to a rotated file between two polls
/// are read from it), until `stop` returns true.
pub fn tail(
    live: &Path,
    initial: usize,
    json: bool,
    out: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> Result<(), Unreadable> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;
    let unreadable = |source| Unreadable {
        path: live.to_owned(),
        source,
    };
    // The last sequence number printed: nothing is printed twice or skipped.
    let emitted: std::cell::Cell<Option<u64>> = std::cell::Cell::new(None);
    // Lines are bytes until checked: a file anyone may have edited need not be UTF-8, and
    // a poll may end inside a character the writer has not finished.
    let emit = |out: &mut dyn Write, line: &[u8]| -> io::Result<()> {
        let Ok(text) = std::str::from_utf8(line) else {
            return writeln!(
                out,
                "warning: a line that is not a valid record (not UTF-8)"
            )
            .and_then(|_| out.flush());
        };
        match chain::parse_line(text) {
            Ok(r) if emitted.get().is_some_and(|l| r.seq <= l) => return Ok(()),
            Ok(r) => {
                emitted.set(Some(r.seq));
                if json {
                    writeln!(out, "{text}")
                } else {
                    writeln!(out, "{}", line_text(&r))
                }
            }
            Err(e) => writeln!(out, "warning: a line that is not a valid record ({e})"),
        }
        .and_then(|_| out.flush())
    };
    // Wait for the file to exist.
    let mut file = loop {
        match std::fs::File::open(live) {
            Ok(f) => break f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !stop() => {
                std::thread::sleep(std::time::Duration::from_millis(200))
            }
            Err(e) => return Err(unreadable(e)),
        }
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(unreadable)?;
    let lines = complete_lines(&bytes);
    for l in &lines[lines.len().saturating_sub(initial)..] {
        emit(out, l).map_err(unreadable)?;
    }
    let mut pos = lines.iter().map(|l| l.len() as u64 + 1).sum::<u64>();
    let mut pending: Vec<u8> = Vec::new();
    let mut ino = file.metadata().map_err(unreadable)?.ino();
    while !stop() {
        let mut buf = Vec::new();
        file.seek(SeekFrom::Start(pos)).map_err(unreadable)?;
        let n = file.read_to_end(&mut buf).map_err(unreadable)?;
        pos += n as u64;
        pending.extend_from_slice(&buf);
        while let Some(p) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=p).collect();
            emit(out, &line[..p]).map_err(unreadable)?;
        }
        if n > 0 {
            continue;
        }
        match std::fs::metadata(live) {
            Ok(m) if m.ino() != ino || m.len() < pos => {
                // Rotated. Open the new live file first: every file older than it is
                // already rotated, so reading the rotated files then the new one from its
                // start misses nothing (records already printed are skipped).
                let Ok(f) = std::fs::File::open(live) else {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                };
                let rotated = rotated_files(live).map_err(unreadable)?;
                for (i, (_, path)) in rotated.iter().enumerate() {
                    // Skip files printed entirely already.
                    let done = rotated.get(i + 1).is_some_and(|(next_first, _)| {
                        emitted.get().is_some_and(|l| *next_first <= l + 1)
                    });
                    if done {
                        continue;
                    }
                    if let Ok(bytes) = std::fs::read(path) {
                        for l in complete_lines(&bytes) {
                            emit(out, l).map_err(unreadable)?;
                        }
                    }
                }
                ino = f.metadata().map_err(unreadable)?.ino();
                file = f;
                pos = 0;
                pending.clear();
                continue;
            }
            _ => {}
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}
