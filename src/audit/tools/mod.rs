//! `keyturn audit show | verify | tail`: reading, checking and following the log. They
//! only read files, so they work on a copy of the log on another machine.
//!
//! Here: finding and reading the files (shared by the three); `verify`: checking the chain
//! and the seal; `show`: filtering records and printing them as a table; `tail`: following
//! the live file across rotations.

mod show;
mod tail;
mod verify;

pub use show::{line_text, parse_since, show, Filter};
pub use tail::tail;
pub use verify::{print_verify, verify, verify_command, Break, BreakKind, VerifyReport};

use super::chain::{self, LineError, Record};
use super::file::rotated_files;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Exit code: the chain is intact.
pub(crate) const EXIT_INTACT: i32 = 0;
/// Exit code: the chain is broken.
pub(crate) const EXIT_BROKEN: i32 = 1;
/// Exit code: a file could not be read.
pub(crate) const EXIT_UNREADABLE: i32 = 2;

/// The files of the log whose live file is `live`, oldest first: the rotated files
/// (`<live>.<12 digits>`) then `live` itself when it exists.
pub fn log_files(live: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = rotated_files(live)?.into_iter().map(|(_, p)| p).collect();
    if live.exists() || files.is_empty() {
        files.push(live.to_owned());
    }
    Ok(files)
}

/// `keyturn audit export`: every file of the log whose live file is `live`, in chain order,
/// copied to `out` byte for byte (a file that cannot be read, or `out` failing, stops it).
pub fn export(live: &Path, out: &mut dyn Write) -> Result<(), Unreadable> {
    let files = log_files(live).map_err(|source| Unreadable {
        path: live.to_owned(),
        source,
    })?;
    for f in files {
        let unreadable = |source| Unreadable {
            path: f.clone(),
            source,
        };
        let mut file = std::fs::File::open(&f).map_err(unreadable)?;
        io::copy(&mut file, out).map_err(unreadable)?;
    }
    out.flush().map_err(|source| Unreadable {
        path: live.to_owned(),
        source,
    })
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

/// The first 12 characters of a hash, for reports. By characters, not bytes: the hashes
/// come from files anyone may have edited.
fn short(h: &str) -> String {
    prefix(h, 12)
}

/// The first `n` characters of `s` (never splits a UTF-8 character).
pub(crate) fn prefix(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
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
