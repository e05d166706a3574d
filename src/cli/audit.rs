//! `keyturn audit show | verify | tail | export`: where the log is, and the exit codes; the reading
//! and checking itself is [`crate::audit::tools`].

use super::{load, AuditCmd, AuditSource};
use crate::config::EXIT_CONFIG;
use std::path::PathBuf;

fn audit_path(source: &AuditSource) -> Result<PathBuf, i32> {
    match &source.file {
        Some(f) => Ok(f.clone()),
        None => load(&source.config).map(|l| l.config.daemon.audit_log),
    }
}

/// `keyturn audit show|verify|tail`; returns the exit code.
pub(super) fn audit_command(command: AuditCmd) -> i32 {
    use crate::audit::tools;
    let unreadable = |e: tools::Unreadable| {
        eprintln!("keyturn: {e}");
        tools::EXIT_UNREADABLE
    };
    match command {
        AuditCmd::Show {
            source,
            account,
            since,
            event,
            outcome,
            json,
        } => {
            let path = match audit_path(&source) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let since = match since
                .map(|s| tools::parse_since(&s, time::OffsetDateTime::now_utc()))
                .transpose()
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("keyturn: {e}");
                    return EXIT_CONFIG;
                }
            };
            let files = match tools::log_files(&path) {
                Ok(f) => f,
                Err(source) => return unreadable(tools::Unreadable { path, source }),
            };
            let records = match tools::read_records(&files, &mut std::io::stderr()) {
                Ok(r) => r,
                Err(e) => return unreadable(e),
            };
            let filter = tools::Filter {
                account,
                since,
                events: event,
                outcome,
            };
            match tools::show(&records, &filter, json, &mut std::io::stdout().lock()) {
                Ok(_) => 0,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
                Err(e) => {
                    eprintln!("keyturn: {e}");
                    1
                }
            }
        }
        AuditCmd::Verify {
            files,
            source,
            partial,
        } => {
            let files = if files.is_empty() {
                let path = match audit_path(&source) {
                    Ok(p) => p,
                    Err(code) => return code,
                };
                match tools::log_files(&path) {
                    Ok(f) => f,
                    Err(source) => return unreadable(tools::Unreadable { path, source }),
                }
            } else {
                files
            };
            tools::verify_command(&files, partial, &mut std::io::stdout().lock())
        }
        AuditCmd::Export { source } => {
            let path = match audit_path(&source) {
                Ok(p) => p,
                Err(code) => return code,
            };
            match tools::export(&path, &mut std::io::stdout().lock()) {
                Ok(()) => 0,
                Err(e) if e.source.kind() == std::io::ErrorKind::BrokenPipe => 0,
                Err(e) => unreadable(e),
            }
        }
        AuditCmd::Tail {
            source,
            lines,
            json,
        } => {
            let path = match audit_path(&source) {
                Ok(p) => p,
                Err(code) => return code,
            };
            match tools::tail(&path, lines, json, &mut std::io::stdout(), &|| false) {
                Ok(()) => 0,
                Err(e) => unreadable(e),
            }
        }
    }
}
