//! Audit retention (`daemon.audit_retention`, issue 19 item 6; `docs/audit.md`,
//! "Retention"): the daemon removes the oldest rotated audit files, never the chain's head,
//! and `keyturn audit verify` still verifies and says where the chain starts.

use crate::common::*;
use keyturn::audit::file::{plan_prune, rotated_files};
use keyturn::audit::{AuditEvent, AuditSink, EventKind, FileOptions, FileSink, Outcome};
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use time::OffsetDateTime;

const DAY: Duration = Duration::from_secs(86400);

/// Writes `old` records dated 500 days ago, then `recent` dated now, into small files.
async fn write_log(path: &Path, old: usize, recent: usize) {
    let sink = FileSink::open_with(
        path,
        FileOptions {
            max_bytes: 1200,
            ..FileOptions::default()
        },
    )
    .unwrap();
    let now = OffsetDateTime::now_utc();
    for i in 0..old + recent {
        let time = if i < old { now - DAY * 500 } else { now };
        let mut ev = AuditEvent::new(EventKind::DriftDetected, time);
        ev.account = Some(format!("acct-{i}"));
        ev.outcome = Some(Outcome::Warning);
        ev.detail = Some("a record to fill the file".into());
        sink.record(&ev).await.unwrap();
    }
}

fn out_of(path: &Path) -> String {
    verify(path).1
}

fn verify(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--file"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_prunes_old_rotated_files_and_the_chain_still_verifies() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &emu,
        dir.path(),
        &Opts {
            verify: false,
            ..Opts::default()
        },
    );
    let log = dir.path().join("audit.jsonl");
    write_log(&log, 12, 12).await;
    let before = rotated_files(&log).unwrap();
    assert!(before.len() >= 4, "{before:?}");
    assert_eq!(verify(&log).0, Some(0));

    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[daemon]\n", "[daemon]\naudit_retention = \"400days\"\n"),
    )
    .unwrap();
    let d = Daemon::start(&config, dir.path(), "run");
    d.ready().await;
    assert!(
        wait_for(Duration::from_secs(10), || count(
            dir.path(),
            "audit.pruned",
            None
        ) == 1)
        .await,
        "{}",
        d.stderr()
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait().await.success());

    let after = rotated_files(&log).unwrap();
    assert!(after.len() < before.len(), "{after:?}");
    // Only the oldest went, and not every old one: the live file, the newest rotated file
    // and everything recent stay.
    assert!(log.exists());
    assert_eq!(after.last(), before.last());
    assert_eq!(&before[before.len() - after.len()..], &after[..]);
    let first_left = after[0].0;
    assert!(first_left > 0);

    let (code, out) = verify(&log);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "starts at record {first_left}: the records before it were removed by daemon.audit_retention"
        )),
        "{out}"
    );
    let pruned = audit_records(dir.path())
        .into_iter()
        .find(|r| r["event"] == "audit.pruned")
        .unwrap();
    assert!(
        pruned["detail"]
            .as_str()
            .unwrap()
            .contains("older than daemon.audit_retention (400days)"),
        "{pruned}"
    );

    // `keyturn audit export` (what `kubectl exec` can copy out of a distroless container):
    // the stored bytes in chain order, which verify checks elsewhere with the same head.
    let out = Command::new(BIN)
        .args(["audit", "export", "--file"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success());
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("copy.jsonl");
    std::fs::write(&copy, &out.stdout).unwrap();
    let (code, copied) = verify(&copy);
    assert_eq!(code, Some(0), "{copied}");
    let head = |text: &str| text.split("head ").nth(1).unwrap()[..64].to_owned();
    assert_eq!(head(&copied), head(&out_of(&log)));
    assert!(
        copied.contains(&format!("starts at record {first_left}")),
        "{copied}"
    );

    // A file removed by hand is still caught: the chain no longer starts where the
    // audit.pruned record says.
    std::fs::remove_file(&after[0].1).unwrap();
    let (code, out) = verify(&log);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("missing start"), "{out}");
}

/// Never the newest rotated file, even when every record is old; nothing without old files.
#[tokio::test]
async fn retention_never_takes_the_newest_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    write_log(&log, 20, 0).await;
    let rotated = rotated_files(&log).unwrap();
    let now = OffsetDateTime::now_utc();
    let plan = plan_prune(&log, DAY * 400, now).unwrap().unwrap();
    assert_eq!(plan.files.len(), rotated.len() - 1);
    assert_eq!(plan.starts_at, rotated.last().unwrap().0);
    assert!(plan_prune(&log, DAY * 600, now).unwrap().is_none());

    let fresh = dir.path().join("fresh.jsonl");
    write_log(&fresh, 0, 20).await;
    assert!(plan_prune(&fresh, DAY, now).unwrap().is_none());
}
