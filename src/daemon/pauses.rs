//! Pauses that outlast a restart: the names of the paused accounts in
//! `<daemon.state_dir>/paused.json`, written atomically (a temporary file at mode 0600,
//! fsynced, renamed over the old one, the folder fsynced) each time `pause` or `resume`
//! changes them. A file that cannot be read as one is a start-up error naming it and the fix.
//! Also the daemon's side: `Daemon::with_pauses` (the pauses it starts with) and the file
//! rewritten after a reload drops accounts.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The file's name in `daemon.state_dir`.
pub const PAUSE_FILE: &str = "paused.json";

/// The format's version, written in the file.
const VERSION: u32 = 1;

/// Why the pause file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PauseFileError {
    /// The file exists but cannot be read.
    #[error("cannot read the pause file {}: {source}; check daemon.state_dir's owner and mode", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a pause file (edited by hand, truncated by a full disk).
    #[error("the pause file {} is not valid ({detail}); fix it (it holds {{\"version\":1,\"paused\":[\"ACCOUNT\", …]}}) or delete it, which resumes every account, then start keyturn again", .path.display())]
    Corrupt { path: PathBuf, detail: String },
    /// The file cannot be written.
    #[error("cannot write the pause file {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contents {
    version: u32,
    paused: BTreeSet<String>,
}

/// The pause file of one state folder.
#[derive(Debug, Clone)]
pub struct PauseFile {
    path: PathBuf,
}

impl PauseFile {
    /// The pause file in `state_dir`.
    pub fn in_dir(state_dir: &Path) -> PauseFile {
        PauseFile {
            path: state_dir.join(PAUSE_FILE),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The paused accounts' names; none when the file does not exist.
    pub fn load(&self) -> Result<BTreeSet<String>, PauseFileError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
            Err(source) => {
                return Err(PauseFileError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let corrupt = |detail: String| PauseFileError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        // serde_json's message names the line and column and the token kind, never the
        // file's text; the file holds account names only.
        let c: Contents = serde_json::from_slice(&text)
            .map_err(|e| corrupt(format!("not JSON of the expected form: {e}")))?;
        if c.version != VERSION {
            return Err(corrupt(format!(
                "version {} is not {VERSION}, the one this keyturn writes",
                c.version
            )));
        }
        Ok(c.paused)
    }

    /// Replaces the file with `paused`: a temporary file (mode 0600) written and fsynced,
    /// renamed over the old one, and the folder fsynced, so that a crash leaves the old list
    /// or the new one, never a torn file.
    pub fn save(&self, paused: &BTreeSet<String>) -> Result<(), PauseFileError> {
        let write = |source| PauseFileError::Write {
            path: self.path.clone(),
            source,
        };
        let text = serde_json::to_vec(&Contents {
            version: VERSION,
            paused: paused.clone(),
        })
        .map_err(|e| write(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(write)?;
        f.write_all(&text).map_err(write)?;
        f.write_all(b"\n").map_err(write)?;
        f.sync_all().map_err(write)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(write)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(write)?;
        }
        Ok(())
    }
}

/// The daemon's side: the pauses it starts with, and the file rewritten when they change.
impl super::Daemon {
    /// Keeps pauses in `file` across restarts, starting with the accounts named in
    /// `paused` (read from it at start-up) paused. A name the configuration no longer has
    /// is dropped, and the file rewritten without it.
    pub fn with_pauses(mut self, file: PauseFile, paused: BTreeSet<String>) -> Self {
        for idx in 0..self.slots.len() {
            if paused.contains(self.slots[idx].name()) {
                self.slots[idx].paused = true;
                self.heap.remove(idx);
                self.board_mut(idx, |b| b.paused = true);
            }
        }
        self.pauses = Some(file);
        if self.paused_names() != paused {
            self.save_pauses_or_warn();
        }
        self
    }

    /// The names of the paused accounts.
    pub(super) fn paused_names(&self) -> BTreeSet<String> {
        self.slots
            .iter()
            .filter(|s| s.paused)
            .map(|s| s.name().to_owned())
            .collect()
    }

    /// Rewrites the pause file (after a reload dropped accounts); a failure is logged: the
    /// pauses in force are unchanged, and a pause of a removed account is harmless.
    pub(super) fn save_pauses_or_warn(&self) {
        if let Some(file) = &self.pauses {
            if let Err(e) = file.save(&self.paused_names()) {
                tracing::warn!(error = %e, "cannot drop removed accounts from the pause file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn pauses_round_trip_atomically_at_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let f = PauseFile::in_dir(dir.path());
        assert!(f.load().unwrap().is_empty(), "no file: nothing paused");
        let names: BTreeSet<String> = ["a".to_owned(), "b".to_owned()].into();
        f.save(&names).unwrap();
        assert_eq!(f.load().unwrap(), names);
        let mode = std::fs::metadata(f.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("paused.json.tmp").exists());
        f.save(&BTreeSet::new()).unwrap();
        assert!(f.load().unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_file_names_itself_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let f = PauseFile::in_dir(dir.path());
        for text in [
            "{\"paused\":",
            "[]",
            "{\"version\":2,\"paused\":[]}",
            "{\"version\":1,\"paused\":[],\"x\":1}",
        ] {
            std::fs::write(f.path(), text).unwrap();
            let e = f.load().unwrap_err().to_string();
            assert!(e.contains(&f.path().display().to_string()), "{e}");
            assert!(
                e.contains("or delete it, which resumes every account"),
                "{e}"
            );
        }
    }
}
