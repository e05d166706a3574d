//! `keyturn audit tail`: follows the live file, across rotations.

use super::show::line_text;
use super::Unreadable;
use crate::audit::chain;
use crate::audit::file::rotated_files;
use std::io::{self, Write};
use std::path::Path;

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
