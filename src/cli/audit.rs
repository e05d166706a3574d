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
pub(super) async fn audit_command(command: AuditCmd) -> i32 {
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
            blob: Some(url),
        } => {
            if !files.is_empty() || source.file.is_some() || partial {
                eprintln!("keyturn: --blob checks the append blob: give no files, --file or --partial with it");
                return EXIT_CONFIG;
            }
            verify_blob(&source.config, &url).await
        }
        AuditCmd::Verify {
            files,
            source,
            partial,
            blob: None,
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

/// `keyturn audit verify --blob [URL]`: downloads every part of the append blob into a
/// private temporary folder and checks the chain there as for files, naming the blob's part
/// in the report. Exit 0 intact, 1 broken, 2 unreadable (Storage did not answer, or the
/// blob does not exist), 64 bad configuration.
async fn verify_blob(config: &std::path::Path, url: &str) -> i32 {
    use crate::audit::tools;
    let loaded = match load(config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let Some(cfg) = loaded.config.daemon.audit_blob.as_ref() else {
        eprintln!(
            "keyturn: {} has no [daemon.audit_blob]: --blob needs its identity (docs/audit.md)",
            config.display()
        );
        return EXIT_CONFIG;
    };
    let url = if url.is_empty() {
        cfg.url.as_str()
    } else {
        url
    };
    let net = &loaded.config.network;
    let http =
        match crate::azure::http_client(&loaded.config.tls, net, crate::observe::unobserved()) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("keyturn: {e}");
                return EXIT_CONFIG;
            }
        };
    let Some(id) = loaded.config.identities.get(&cfg.identity) else {
        eprintln!("keyturn: daemon.audit_blob.identity names no [identities.NAME]");
        return EXIT_CONFIG;
    };
    let credential = match crate::azure::credential(&cfg.identity, id, &http, net) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keyturn: {e}");
            return EXIT_CONFIG;
        }
    };
    let dir = std::env::temp_dir().join(format!("keyturn-verify-{}", uuid::Uuid::new_v4()));
    if let Err(e) = std::fs::create_dir(&dir) {
        eprintln!("keyturn: cannot create {}: {e}", dir.display());
        return tools::EXIT_UNREADABLE;
    }
    let parts = crate::audit_blob::download(url, credential, &http, net, &dir).await;
    let code = match parts {
        Err(e) => {
            println!("unreadable: {e}");
            tools::EXIT_UNREADABLE
        }
        Ok(parts) => {
            let files: Vec<PathBuf> = parts.iter().map(|(f, _)| f.clone()).collect();
            let name = |f: &PathBuf| -> PathBuf {
                parts
                    .iter()
                    .find(|(p, _)| p == f)
                    .map(|(_, u)| PathBuf::from(u))
                    .unwrap_or_else(|| f.clone())
            };
            let result = tools::verify(&files, false).map(|mut r| {
                r.files = r.files.iter().map(name).collect();
                if let Some(b) = r.problem.as_mut() {
                    b.file = name(&b.file);
                }
                r
            });
            tools::print_verify(result, &mut std::io::stdout().lock())
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    code
}
