//! Appending records: one sync per batch, rotation when the file is full, the repair of
//! what a failed write left, the `audit.recovered` note, the seal and the health.

use super::files::{open_append, rotated_path, sync_dir};
use super::open::daemon_note;
use super::seal::SEAL_LEN;
use super::{copy_error, AuditHealth, Failing, Fault, State};
use crate::audit::chain;
use crate::audit::{AuditError, AuditEvent, EventKind, Outcome};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use time::OffsetDateTime;

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
    pub(super) fn record_batch(&mut self, events: &[AuditEvent]) -> Vec<Result<(), AuditError>> {
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
    pub(super) fn flush(&mut self) -> Result<(), AuditError> {
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
                    crate::audit::format_time(f.since),
                    crate::audit::format_time(event.time),
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
    pub(super) fn finish_rotation(&mut self) -> Result<(), AuditError> {
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
    pub(super) fn write(&mut self, event: &AuditEvent) -> Result<(), AuditError> {
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
            crate::audit::format_time(time)
        );
        while text.len() < SEAL_LEN - 1 {
            text.push(' ');
        }
        text.push('\n');
        if let Err(e) = seal.write_all_at(text.as_bytes(), 0) {
            tracing::warn!(error = %e, "cannot update the audit seal");
        }
    }

    pub(super) fn publish(&self) {
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
