//! The single-instance lock (`<state_dir>/keyturn.lock`) and whether the previous holder
//! stopped uncleanly.

use super::DaemonError;
use std::path::Path;

/// The single-instance lock: an exclusive `flock` on `<state_dir>/keyturn.lock`, held
/// for the life of the value. The file holds the holder's pid while it runs; it is emptied
/// when the value is released or dropped, on every exit path (a failed start included),
/// so a pid left in it means the holder did not get there: it was killed (SIGKILL, OOM),
/// aborted, or panicked, and the next holder is [`unclean`](Self::unclean).
pub struct InstanceLock {
    /// `None` only in tests simulating a crash.
    file: Option<std::fs::File>,
    /// The previous holder did not release the lock: it was killed or crashed.
    pub unclean: bool,
}

impl InstanceLock {
    /// Takes the lock or says who holds it. The lock file is opened without following a
    /// symbolic link and must be a regular file owned by this user or the state
    /// directory's owner ([`crate::audit::file::open_owned`]).
    pub fn acquire(state_dir: &Path) -> Result<Self, DaemonError> {
        use std::io::{Read, Seek, Write};
        let path = state_dir.join("keyturn.lock");
        let io = |e: std::io::Error| DaemonError::LockFile {
            path: path.clone(),
            source: e,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let mut file = crate::audit::file::open_owned(
            &path,
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = (&file).take(64).read_to_string(&mut holder);
                return Err(DaemonError::Locked {
                    path,
                    holder: holder.trim().to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut previous = String::new();
        let _ = (&file).take(64).read_to_string(&mut previous);
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(InstanceLock {
            file: Some(file),
            unclean: !previous.trim().is_empty(),
        })
    }

    /// A clean stop: the next start needs no settling delay. Call it once this process has
    /// waited out an unclean predecessor (`unclean_start_delay`) or did not inherit one;
    /// dropping the lock without calling it keeps an inherited unclean mark (a start that
    /// failed before the delay was over did not let the crashed process's requests settle).
    pub fn release(mut self) {
        self.unclean = false;
    }

    /// Closes the file like a killed process: the `flock` goes, the pid stays.
    #[cfg(test)]
    fn simulate_crash(mut self) {
        self.file = None;
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // A panic is a crash: its rotations stopped anywhere, so the next start must wait.
        // An unclean mark this process inherited and has not waited out stays too.
        if std::thread::panicking() || self.unclean {
            return;
        }
        if let Some(file) = &self.file {
            let _ = file.set_len(0);
            let _ = file.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InstanceLock;

    #[test]
    fn an_unreleased_lock_marks_the_next_start_unclean() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstanceLock::acquire(dir.path()).unwrap();
        assert!(!first.unclean, "a fresh state dir is clean");
        assert!(matches!(
            InstanceLock::acquire(dir.path()),
            Err(super::DaemonError::Locked { .. })
        ));
        first.simulate_crash(); // like SIGKILL: the flock goes, the pid stays
        let second = InstanceLock::acquire(dir.path()).unwrap();
        assert!(second.unclean);
        second.release();
        let third = InstanceLock::acquire(dir.path()).unwrap();
        assert!(!third.unclean, "released: clean");
    }

    #[test]
    fn a_dropped_lock_is_clean_unless_it_inherited_a_crash_or_panicked() {
        let dir = tempfile::tempdir().unwrap();
        // A start that fails (an early return) drops the lock: the next start is clean.
        drop(InstanceLock::acquire(dir.path()).unwrap());
        let lock = InstanceLock::acquire(dir.path()).unwrap();
        assert!(!lock.unclean, "a failed start is not a crash");
        drop(lock);
        // A panic is a crash.
        let d = dir.path().to_owned();
        let panicked = std::thread::spawn(move || {
            let _lock = InstanceLock::acquire(&d).unwrap();
            panic!("a bug");
        });
        assert!(panicked.join().is_err());
        let lock = InstanceLock::acquire(dir.path()).unwrap();
        assert!(lock.unclean, "a panic leaves the pid");
        // A start after a crash that fails before the delay keeps the mark…
        drop(lock);
        let lock = InstanceLock::acquire(dir.path()).unwrap();
        assert!(lock.unclean, "the crash before it is not waited out yet");
        // …until one waits it out and releases.
        lock.release();
        assert!(!InstanceLock::acquire(dir.path()).unwrap().unclean);
    }

    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::symlink(&victim, state.join("keyturn.lock")).unwrap();
        let err = InstanceLock::acquire(&state).err().expect("refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }

    #[test]
    fn a_lock_file_that_cannot_be_created_keeps_the_io_error_as_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let state = file.join("state");
        let err = InstanceLock::acquire(&state).err().expect("refused");
        let source = std::error::Error::source(&err).expect("the io error is kept");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotADirectory);
        assert_eq!(
            err.to_string(),
            format!(
                "cannot create or lock {}: {io}; check that daemon.state_dir exists and is writable",
                state.join("keyturn.lock").display()
            )
        );
    }
}
