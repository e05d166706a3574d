//! The audit trail as ops and auditors see it: the records a rotation writes, the hash
//! chain and every kind of tampering `keyturn audit verify` must locate, rotation across
//! files, restarts, a full disk (simulated and, as root, a real tmpfs), concurrent
//! writers, the command-line tools, and the absence of passwords.

use keyturn::audit::chain::{self, GENESIS_PREV};
use keyturn::audit::file::{rotated_files, seal_path, Fault};
use keyturn::audit::tools::{self, BreakKind};
use keyturn::audit::{
    Actor, AuditEvent, AuditSink, EventKind, FaultSwitch, FileOptions, FileSink, MemorySink,
    Outcome, Tee, Trigger,
};
use keyturn::clock::ManualClock;
use keyturn::memory::{MemoryDirectory, MemoryVault};
use keyturn::password::{Password, PasswordPolicy};
use keyturn::protocol::{Account, Engine, Request, RotationError, Tuning};
use keyturn::store::Tags;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use time::macros::datetime;

const USER: &str = "svc-coreview@contoso.onmicrosoft.com";
const SECRET: &str = "svc-coreview";

fn event(n: u64) -> AuditEvent {
    let mut ev = AuditEvent::new(
        EventKind::RotationStarted,
        datetime!(2026-11-22 10:00 UTC) + time::Duration::seconds(n as i64),
    );
    ev.account = Some(format!("acct-{}", n % 3));
    ev.trigger = Some(Trigger::Schedule);
    ev.actor = Some(Actor::Daemon);
    ev.detail = Some(format!("event {n}"));
    ev
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn records(path: &Path) -> Vec<chain::Record> {
    tools::read_records(&tools::log_files(path).unwrap(), &mut std::io::sink()).unwrap()
}

fn verify(path: &Path) -> tools::VerifyReport {
    tools::verify(&tools::log_files(path).unwrap(), false).unwrap()
}

async fn log_with(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("audit.jsonl");
    let sink = FileSink::open(&path).unwrap();
    for i in 0..n {
        sink.record(&event(i)).await.unwrap();
    }
    path
}

// ---------------------------------------------------------------- the protocol's records

struct World {
    vault: Arc<MemoryVault>,
    account: Account,
    clock: Arc<ManualClock>,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-01 03:00 UTC)));
    let vault = Arc::new(MemoryVault::new(
        "https://demo.vault.azure.net/",
        clock.clone(),
    ));
    let dir = Arc::new(MemoryDirectory::new(clock.clone()));
    let initial = PasswordPolicy::default().generate().unwrap();
    dir.add_user(USER, &initial, Some(datetime!(2026-10-01 00:00 UTC)));
    vault.seed(SECRET, &initial, Tags::new());
    let account = Account {
        name: "coreview".into(),
        user: USER.into(),
        secret: SECRET.into(),
        policy: PasswordPolicy::default(),
        verify: true,
        expiry: Some(time::Duration::days(9)),
        store: vault.clone(),
        directory: dir,
    };
    World {
        vault,
        account,
        clock,
    }
}

fn tuning() -> Tuning {
    Tuning {
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        verify_delay: Duration::from_millis(1),
        ..Tuning::default()
    }
}

fn every_password(w: &World) -> Vec<Password> {
    let mut v: Vec<Password> = w
        .vault
        .versions(SECRET)
        .into_iter()
        .map(|r| r.value)
        .collect();
    v.extend(
        w.vault
            .versions(&format!("{SECRET}-pending"))
            .into_iter()
            .map(|r| r.value),
    );
    v
}

#[tokio::test]
async fn rotations_write_exactly_the_expected_records_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let w = world();
    let file: Arc<dyn AuditSink> = Arc::new(FileSink::open(&path).unwrap());
    let engine = Engine::new(file, w.clock.clone(), tuning());
    let by_hand = Request {
        trigger: Trigger::Cli,
        actor: Actor::User {
            uid: 1000,
            name: Some("alice".into()),
            pid: Some(4242),
        },
        reason: Some("leaver".into()),
        ticket: Some("CHG-1234".into()),
        rotation_id: None,
        urgent: false,
        adopt: false,
    };
    let first = engine.rotate(&w.account, &by_hand).await.unwrap();
    let second = engine
        .rotate(&w.account, &Request::daemon(Trigger::Schedule))
        .await
        .unwrap();

    let recs = records(&path);
    let kinds: Vec<&str> = recs.iter().map(|r| r.event()).collect();
    let rotation = [
        "rotation.started",
        "rotation.staged",
        "rotation.applied",
        "rotation.verified",
        "rotation.committed",
        "rotation.completed",
    ];
    let expected: Vec<&str> = std::iter::once("audit.genesis")
        .chain(rotation)
        .chain(rotation)
        .collect();
    assert_eq!(kinds, expected);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.seq, i as u64);
        assert_eq!(r.value["v"], 1);
        let prev = if i == 0 {
            GENESIS_PREV
        } else {
            &recs[i - 1].hash
        };
        assert_eq!(r.prev, prev);
    }
    // Who, why and what, on every record of the rotation.
    let started = &recs[1];
    assert_eq!(started.account(), Some("coreview"));
    assert_eq!(started.str("user"), Some(USER));
    assert_eq!(started.str("vault"), Some("https://demo.vault.azure.net/"));
    assert_eq!(started.str("trigger"), Some("cli"));
    assert_eq!(
        started.value["actor"],
        serde_json::json!({"kind": "user", "uid": 1000, "name": "alice", "pid": 4242})
    );
    assert_eq!(started.str("reason"), Some("leaver"));
    assert_eq!(started.str("ticket"), Some("CHG-1234"));
    assert_eq!(
        started.str("rotation_id"),
        Some(first.rotation_id.to_string().as_str())
    );
    let completed = &recs[6];
    assert_eq!(completed.outcome(), Some("success"));
    assert!(completed.value["duration_ms"].is_u64());
    assert_eq!(
        recs[12].str("rotation_id"),
        Some(second.rotation_id.to_string().as_str())
    );
    assert_eq!(recs[12].str("trigger"), Some("schedule"));
    // The time format: RFC 3339, UTC, milliseconds.
    assert_eq!(recs[1].str("time"), Some("2026-11-01T03:00:00.000Z"));
    assert!(verify(&path).intact());
}

#[tokio::test]
async fn no_generated_password_reaches_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let w = world();
    let file: Arc<dyn AuditSink> = Arc::new(FileSink::open(&path).unwrap());
    let engine = Engine::new(file, w.clock.clone(), tuning());
    for _ in 0..5 {
        engine
            .rotate(&w.account, &Request::daemon(Trigger::Schedule))
            .await
            .unwrap();
        w.clock.advance(time::Duration::days(1));
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let passwords = every_password(&w);
    assert!(passwords.len() >= 6);
    for p in passwords {
        assert!(
            !text.contains(p.expose()),
            "a password reached the audit file"
        );
        // Nor a JSON-escaped form of it.
        let escaped = serde_json::to_string(p.expose()).unwrap();
        assert!(!text.contains(escaped.trim_matches('"')));
    }
}

// ---------------------------------------------------------------- chain and restarts

#[tokio::test]
async fn the_chain_continues_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 3).await;
    {
        let sink = FileSink::open(&path).unwrap();
        sink.record(&event(3)).await.unwrap();
        assert_eq!(sink.health().unwrap().next_seq, 5);
    }
    let recs = records(&path);
    assert_eq!(
        recs.len(),
        5,
        "one genesis, then four events, no second genesis"
    );
    assert_eq!(recs[0].event(), "audit.genesis");
    assert_eq!(recs[4].seq, 4);
    assert_eq!(recs[4].prev, recs[3].hash);
    let report = verify(&path);
    assert!(report.intact(), "{:?}", report.problem);
    assert_eq!(report.head.as_deref(), Some(recs[4].hash.as_str()));
    let meta = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
}

#[tokio::test]
async fn an_incomplete_last_line_from_a_crash_is_removed_and_noted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 3).await;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"v\":1,\"seq\":4,\"time\":\"2026-");
    std::fs::write(&path, &bytes).unwrap();
    let report = verify(&path);
    assert_eq!(report.problem.unwrap().kind, BreakKind::Malformed);

    let sink = FileSink::open(&path).unwrap();
    sink.record(&event(9)).await.unwrap();
    let recs = records(&path);
    let kinds: Vec<&str> = recs.iter().map(|r| r.event()).collect();
    assert_eq!(
        &kinds[4..],
        &["audit.recovered", "rotation.started"],
        "the repair is recorded"
    );
    assert!(verify(&path).intact());
}

// ---------------------------------------------------------------- tampering

/// Builds a 10-record log (genesis + 9), applies `tamper` to its lines, verifies.
async fn tampered(tamper: impl FnOnce(&mut Vec<String>)) -> tools::Break {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 9).await;
    let mut l = lines(&path);
    tamper(&mut l);
    let mut text = l.join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    let report = verify(&path);
    report.problem.expect("tampering must be detected")
}

#[tokio::test]
async fn an_edited_record_is_located() {
    let b = tampered(|l| l[5] = l[5].replace("event 4", "event X")).await;
    assert_eq!(b.kind, BreakKind::Edited);
    assert_eq!((b.line, b.seq), (6, Some(5)));
}

#[tokio::test]
async fn a_deleted_record_is_located() {
    let b = tampered(|l| {
        l.remove(4);
    })
    .await;
    assert_eq!(b.kind, BreakKind::Deleted);
    assert_eq!((b.line, b.seq), (5, Some(5)));
    assert!(
        b.detail.contains("records 4..4 are missing"),
        "{}",
        b.detail
    );
}

#[tokio::test]
async fn an_inserted_copy_is_located() {
    let b = tampered(|l| {
        let copy = l[3].clone();
        l.insert(4, copy);
    })
    .await;
    assert_eq!(b.kind, BreakKind::Inserted);
    assert_eq!((b.line, b.seq), (5, Some(3)));
}

#[tokio::test]
async fn a_forged_record_with_a_valid_own_hash_is_located() {
    let b = tampered(|l| {
        // A forger who knows the format writes a self-consistent record 4, but cannot
        // both link it to record 3 and have record 4's successor link to it.
        let prev = chain::parse_line(&l[3]).unwrap().hash;
        let mut ev = event(100);
        ev.detail = Some("forged".into());
        let forged = chain::encode(4, &prev, &ev).unwrap();
        l.insert(
            4,
            String::from_utf8(forged.line)
                .unwrap()
                .trim_end()
                .to_owned(),
        );
    })
    .await;
    assert_eq!(b.kind, BreakKind::Inserted);
    assert_eq!((b.line, b.seq), (6, Some(4)));
    assert!(b.detail.contains("appears twice"), "{}", b.detail);
}

#[tokio::test]
async fn reordered_records_are_located() {
    let b = tampered(|l| l.swap(4, 5)).await;
    assert_eq!(b.kind, BreakKind::Reordered);
    assert_eq!((b.line, b.seq), (5, Some(5)));
}

#[tokio::test]
async fn records_cut_off_the_end_are_detected_by_the_seal() {
    let b = tampered(|l| {
        l.truncate(7);
    })
    .await;
    assert_eq!(b.kind, BreakKind::Truncated);
    assert_eq!((b.line, b.seq), (7, Some(6)));
    assert!(b.detail.contains("names record 9"), "{}", b.detail);
}

#[tokio::test]
async fn records_cut_off_the_start_are_detected() {
    let b = tampered(|l| {
        l.remove(0);
    })
    .await;
    assert_eq!(b.kind, BreakKind::MissingStart);
    assert_eq!((b.line, b.seq), (1, Some(1)));
}

#[tokio::test]
async fn a_rewritten_chain_is_caught_by_the_seal() {
    // An attacker who edits record 5 and recomputes every hash after it.
    let b = tampered(|l| {
        let mut prev = chain::parse_line(&l[4]).unwrap().hash;
        for (i, line) in l.iter_mut().enumerate().skip(5) {
            let mut ev = event(i as u64 - 1);
            if i == 5 {
                ev.detail = Some("nothing to see".into());
            }
            let e = chain::encode(i as u64, &prev, &ev).unwrap();
            prev = e.hash;
            *line = String::from_utf8(e.line).unwrap().trim_end().to_owned();
        }
    })
    .await;
    assert_eq!(b.kind, BreakKind::Edited);
    assert_eq!(b.seq, Some(9));
    assert!(b.detail.contains("rewritten"), "{}", b.detail);
}

#[tokio::test]
async fn a_truncation_while_stopped_is_recorded_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 9).await;
    let mut l = lines(&path);
    l.truncate(6);
    std::fs::write(&path, l.join("\n") + "\n").unwrap();
    // keyturn restarts and continues the chain; the gap is recorded, not hidden.
    let sink = FileSink::open(&path).unwrap();
    sink.record(&event(50)).await.unwrap();
    let b = verify(&path).problem.expect("the loss stays visible");
    assert_eq!(b.kind, BreakKind::Noted);
    assert_eq!((b.line, b.seq), (7, Some(6)));
}

// ---------------------------------------------------------------- rotation

#[tokio::test]
async fn rotation_across_files_keeps_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let opts = FileOptions {
        max_bytes: 1500,
        ..FileOptions::default()
    };
    {
        let sink = FileSink::open_with(&path, opts.clone()).unwrap();
        for i in 0..20 {
            sink.record(&event(i)).await.unwrap();
        }
    }
    // A restart continues in the same files.
    {
        let sink = FileSink::open_with(&path, opts).unwrap();
        for i in 20..30 {
            sink.record(&event(i)).await.unwrap();
        }
    }
    let rotated = rotated_files(&path).unwrap();
    assert!(rotated.len() >= 3, "{rotated:?}");
    assert_eq!(rotated[0].0, 0);
    for (first_seq, file) in &rotated {
        let recs = tools::read_records(std::slice::from_ref(file), &mut std::io::sink()).unwrap();
        assert_eq!(recs[0].seq, *first_seq, "named after its first record");
        assert_eq!(recs.last().unwrap().event(), "audit.rotated");
    }
    let all = records(&path);
    let events: Vec<u64> = all
        .iter()
        .filter(|r| r.event() == "rotation.started")
        .map(|r| r.str("detail").unwrap()[6..].parse().unwrap())
        .collect();
    assert_eq!(
        events,
        (0..30).collect::<Vec<_>>(),
        "nothing lost or reordered"
    );
    let report = verify(&path);
    assert!(report.intact(), "{:?}", report.problem);
    assert_eq!(report.files.len(), rotated.len() + 1);

    // Each file alone is a piece of the chain.
    let piece = tools::verify(&[rotated[1].1.clone()], true).unwrap();
    assert!(piece.intact());
    // The files in any order still verify (they are ordered by their first record).
    let mut shuffled = tools::log_files(&path).unwrap();
    shuffled.reverse();
    assert!(tools::verify(&shuffled, false).unwrap().intact());

    // A missing rotated file is a deletion.
    std::fs::remove_file(&rotated[1].1).unwrap();
    let b = verify(&path).problem.unwrap();
    assert_eq!(b.kind, BreakKind::Deleted);
    assert_eq!(b.file, rotated[2].1);
    assert_eq!((b.line, b.seq), (1, Some(rotated[2].0)));
}

// ---------------------------------------------------------------- full disk

/// A file sink at `path` whose disk faults the test switches.
fn sink_with_faults(path: &Path) -> (Arc<FileSink>, Arc<FaultSwitch>) {
    let faults = FaultSwitch::new();
    let sink = FileSink::open_with(
        path,
        FileOptions {
            faults: Some(faults.clone()),
            ..FileOptions::default()
        },
    )
    .unwrap();
    (Arc::new(sink), faults)
}

#[tokio::test]
async fn a_full_disk_fails_closed_and_recovers_without_losing_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (sink, faults) = sink_with_faults(&path);
    sink.record(&event(0)).await.unwrap();

    // Full: the write stops half-way; the call fails and the partial line is removed.
    faults.set(Fault::Full);
    assert!(sink.record(&event(1)).await.is_err());
    assert!(!sink.is_writable());
    let h = sink.health().unwrap();
    assert_eq!((h.writable, h.refused), (false, 1));
    assert!(h.last_error.unwrap().contains("No space left on device"));
    assert!(verify(&path).intact(), "no partial line left behind");

    // Stuck: the partial line cannot even be removed now; the next write repairs it.
    faults.set(Fault::FullStuck);
    assert!(sink.record(&event(2)).await.is_err());
    assert!(!std::fs::read(&path).unwrap().ends_with(b"\n"));
    faults.set(Fault::ReadOnly);
    assert!(sink.record(&event(3)).await.is_err());

    // Space again: the gap is recorded, then the record.
    faults.set(Fault::None);
    sink.record(&event(4)).await.unwrap();
    assert!(sink.is_writable());
    let recs = records(&path);
    let kinds: Vec<&str> = recs.iter().map(|r| r.event()).collect();
    assert_eq!(
        kinds,
        [
            "audit.genesis",
            "rotation.started",
            "audit.recovered",
            "rotation.started"
        ]
    );
    assert!(recs[2]
        .str("detail")
        .unwrap()
        .contains("3 record(s) were refused"));
    assert_eq!(recs[3].str("detail"), Some("event 4"));
    assert!(verify(&path).intact());

    // The engine: no rotation starts while the file cannot be written.
    let w = world();
    let engine = Engine::new(sink.clone(), w.clock.clone(), tuning());
    let before = w.vault.versions(&format!("{SECRET}-pending")).len();
    faults.set(Fault::Full);
    let err = engine
        .rotate(&w.account, &Request::daemon(Trigger::Schedule))
        .await
        .unwrap_err();
    assert!(matches!(err, RotationError::Audit { .. }), "{err}");
    assert_eq!(
        w.vault.versions(&format!("{SECRET}-pending")).len(),
        before,
        "nothing was staged"
    );
    faults.set(Fault::None);
    engine
        .rotate(&w.account, &Request::daemon(Trigger::Schedule))
        .await
        .unwrap();
    assert!(verify(&path).intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_sync_takes_back_the_records_it_did_not_make_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (sink, faults) = sink_with_faults(&path);
    sink.record(&event(0)).await.unwrap();
    let seal_before = std::fs::read_to_string(seal_path(&path)).unwrap();

    // The device fails the sync: writes reached the page cache, so every record written
    // since the last good sync is taken back and every caller told it failed.
    faults.set(Fault::SyncFails);
    let mut calls = Vec::new();
    for n in 1..=20 {
        let sink = sink.clone();
        calls.push(tokio::spawn(async move { sink.record(&event(n)).await }));
    }
    for c in calls {
        let err = c.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("Input/output error"), "{err}");
    }
    let h = sink.health().unwrap();
    assert_eq!((h.writable, h.refused), (false, 20));
    assert_eq!(
        std::fs::read_to_string(seal_path(&path)).unwrap(),
        seal_before,
        "the seal never names a record that was not synced"
    );

    faults.set(Fault::None);
    sink.record(&event(21)).await.unwrap();
    let recs = records(&path);
    let kinds: Vec<&str> = recs.iter().map(|r| r.event()).collect();
    assert_eq!(
        kinds,
        [
            "audit.genesis",
            "rotation.started",
            "audit.recovered",
            "rotation.started"
        ]
    );
    assert!(recs[2]
        .str("detail")
        .unwrap()
        .contains("20 record(s) were refused"));
    assert_eq!(recs[3].str("detail"), Some("event 21"));
    let report = verify(&path);
    assert!(report.intact(), "{:?}", report.problem);
}

/// A real full disk: a 64 KiB tmpfs (needs root; skipped with a note otherwise).
#[tokio::test]
async fn a_real_full_tmpfs_fails_closed_and_recovers() {
    let mnt = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs (not root?)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.path().to_owned());
    let filler = mnt.path().join("filler");
    std::fs::write(&filler, vec![0u8; 40 * 1024]).unwrap();
    let path = mnt.path().join("audit.jsonl");
    let sink = FileSink::open(&path).unwrap();
    let mut written = 0;
    let mut failed = false;
    for i in 0..1000 {
        match sink.record(&event(i)).await {
            Ok(()) => written += 1,
            Err(e) => {
                assert!(e.to_string().contains("No space left"), "{e}");
                failed = true;
                break;
            }
        }
    }
    assert!(failed && written > 10, "written {written}");
    assert!(!sink.is_writable());
    assert!(verify(&path).intact(), "no partial record on the full disk");
    std::fs::remove_file(&filler).unwrap();
    sink.record(&event(5000)).await.unwrap();
    assert!(sink.is_writable());
    let recs = records(&path);
    assert_eq!(recs.len(), written + 3); // genesis + written + recovered + the new one
    assert_eq!(recs[recs.len() - 2].event(), "audit.recovered");
    assert!(verify(&path).intact());
}

// ---------------------------------------------------------------- concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_produce_one_valid_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let memory = MemorySink::default();
    let sink: Arc<dyn AuditSink> = Arc::new(Tee(vec![
        Arc::new(
            FileSink::open_with(
                &path,
                FileOptions {
                    max_bytes: 64 * 1024,
                    ..FileOptions::default()
                },
            )
            .unwrap(),
        ),
        Arc::new(memory.clone()),
    ]));
    let mut tasks = Vec::new();
    for t in 0..50u64 {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                let mut ev = event(i);
                ev.account = Some(format!("acct-{t}"));
                ev.detail = Some(format!("{i}"));
                sink.record(&ev).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = verify(&path);
    assert!(report.intact(), "{:?}", report.problem);
    let recs = records(&path);
    let ours: Vec<&chain::Record> = recs
        .iter()
        .filter(|r| r.event() == "rotation.started")
        .collect();
    assert_eq!(ours.len(), 1000);
    for t in 0..50 {
        let name = format!("acct-{t}");
        let seen: Vec<u64> = ours
            .iter()
            .filter(|r| r.account() == Some(name.as_str()))
            .map(|r| r.str("detail").unwrap().parse().unwrap())
            .collect();
        assert_eq!(
            seen,
            (0..20).collect::<Vec<_>>(),
            "each writer's order kept"
        );
    }
    assert_eq!(memory.events().len(), 1000);
}

// ---------------------------------------------------------------- show

#[tokio::test]
async fn show_filters_by_account_event_outcome_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = FileSink::open(&path).unwrap();
    for i in 0..6 {
        let mut ev = event(i);
        if i == 4 {
            ev.event = EventKind::RotationFailed;
            ev.outcome = Some(Outcome::Failure);
            ev.error = Some(keyturn::audit::ErrorInfo {
                kind: "rejected".into(),
                http_status: Some(403),
                code: Some("Authorization_RequestDenied".into()),
                request_id: Some("rid-1".into()),
                message: "Insufficient privileges".into(),
            });
        }
        sink.record(&ev).await.unwrap();
    }
    let recs = records(&path);
    let mut out = Vec::new();
    let filter = tools::Filter {
        account: Some("acct-1".into()),
        outcome: Some("failed".into()),
        events: vec!["rotation".into()],
        since: Some(datetime!(2026-11-22 10:00:02 UTC)),
    };
    assert_eq!(tools::show(&recs, &filter, false, &mut out).unwrap(), 1);
    let text = String::from_utf8(out).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("TIME"), "{text}");
    assert!(rows[1].contains("2026-11-22T10:00:04.000Z"));
    assert!(rows[1].contains("rotation.failed"));
    assert!(rows[1].contains("schedule/daemon"));
    assert!(rows[1].contains("Authorization_RequestDenied HTTP 403"));
    assert!(rows[1].contains("rid-1"));
    let all = tools::Filter::default();
    let mut json = Vec::new();
    assert_eq!(tools::show(&recs, &all, true, &mut json).unwrap(), 7);
    let since = tools::parse_since("7d", datetime!(2026-11-29 10:00 UTC)).unwrap();
    assert_eq!(since, datetime!(2026-11-22 10:00 UTC));
}

// ---------------------------------------------------------------- the binary

fn keyturn(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyturn"))
        .args(args)
        .env_remove("KEYTURN_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_verifies_shows_and_exits_with_the_documented_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 9).await;
    let p = path.to_str().unwrap();

    let (code, out, _) = keyturn(&["audit", "verify", "--file", p]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("intact: 10 record(s) (seq 0..9) in 1 file(s)"),
        "{out}"
    );

    // Also with files as arguments, on a copy elsewhere.
    let copy = tempfile::tempdir().unwrap();
    let copied = copy.path().join("audit.jsonl");
    std::fs::copy(&path, &copied).unwrap();
    let (code, _, _) = keyturn(&["audit", "verify", copied.to_str().unwrap()]);
    assert_eq!(code, 0);
    // The documented `verify copy/audit.jsonl*` names the seal too: checked, not read as a log.
    std::fs::copy(seal_path(&path), seal_path(&copied)).unwrap();
    let (code, out, _) = keyturn(&[
        "audit",
        "verify",
        copied.to_str().unwrap(),
        seal_path(&copied).to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("in 1 file(s)"), "{out}");

    let (code, out, _) = keyturn(&["audit", "show", "--file", p, "--account", "acct-2"]);
    assert_eq!(code, 0);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 4, "{out}"); // header + events 2, 5, 8
    assert!(rows[1].contains("acct-2") && rows[1].contains("rotation.started"));

    let (code, out, _) = keyturn(&["audit", "show", "--file", p, "--json", "--event", "audit"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["event"], "audit.genesis");

    // Tampered: exit 1 and the place.
    let mut l = lines(&path);
    l[3] = l[3].replace("event 2", "event 7");
    std::fs::write(&path, l.join("\n") + "\n").unwrap();
    let (code, out, _) = keyturn(&["audit", "verify", "--file", p]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("BROKEN (edited)") && out.contains("line 4 (seq 3)"),
        "{out}"
    );

    // Unreadable: exit 2.
    let (code, out, _) = keyturn(&["audit", "verify", "/nonexistent/audit.jsonl"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unreadable"));

    // A bad --since: usage error.
    let (code, _, err) = keyturn(&["audit", "show", "--file", p, "--since", "soon"]);
    assert_eq!(code, 64, "{err}");
}

#[tokio::test]
async fn the_cli_finds_the_log_through_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 2).await;
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml"))
            .unwrap();
    let config = dir.path().join("keyturn.toml");
    // The example filled in as a new user would: their ids instead of its placeholders, and
    // the client secret where systemd puts it.
    std::fs::write(
        &config,
        example
            .replace("/var/log/keyturn/audit.jsonl", path.to_str().unwrap())
            .replace(
                "00000000-0000-0000-0000-000000000000",
                "72f988bf-86f1-41af-91ab-2d7cd011db47",
            )
            .replace(
                "11111111-1111-1111-1111-111111111111",
                "6f1c0a4e-8b2d-4c3e-9f5a-0b1c2d3e4f5a",
            ),
    )
    .unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("keyturn-client-secret"), "s3cret").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyturn"))
        .args(["audit", "verify", "--config", config.to_str().unwrap()])
        .env_remove("KEYTURN_CONFIG")
        .env_remove("AZURE_AUTHORITY_HOST")
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .output()
        .unwrap();
    let (code, out, err) = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("intact: 3 record(s)"));
}

#[tokio::test]
async fn the_cli_tail_follows_new_records_across_a_rotation() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = FileSink::open_with(
        &path,
        FileOptions {
            max_bytes: 1200,
            ..FileOptions::default()
        },
    )
    .unwrap();
    sink.record(&event(0)).await.unwrap();
    /// Kills the child even when an assertion fails.
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_keyturn"))
            .args(["audit", "tail", "--json", "-n", "1", "--file"])
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut reader = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(chain::parse_line(line.trim_end()).unwrap().seq, 1);
    // Enough records to rotate the file at least once.
    for i in 1..12 {
        sink.record(&event(i)).await.unwrap();
    }
    assert!(!rotated_files(&path).unwrap().is_empty());
    let total = records(&path).len() as u64;
    let mut last = 1;
    while last + 1 < total {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let r = chain::parse_line(line.trim_end()).unwrap();
        assert_eq!(r.seq, last + 1, "tail skipped or repeated a record");
        last = r.seq;
    }
    drop(child);
    assert!(seal_path(&path).exists());
}

/// Throughput, one writer (a sync per record) and 50 (group commit): `cargo test -p keyturn
/// --release --test testsuite audit::throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = Arc::new(FileSink::open(&path).unwrap());
    let n = 2000u64;
    let start = std::time::Instant::now();
    for i in 0..n {
        sink.record(&event(i)).await.unwrap();
    }
    let serial = n as f64 / start.elapsed().as_secs_f64();
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..50u64 {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..(n / 50) {
                sink.record(&event(t * 1000 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let concurrent = n as f64 / start.elapsed().as_secs_f64();
    let start = std::time::Instant::now();
    let report = verify(&path);
    let verify_rate = report.records as f64 / start.elapsed().as_secs_f64();
    assert!(report.intact());
    eprintln!(
        "one writer: {serial:.0} records/s; 50 writers: {concurrent:.0} records/s; verify: {verify_rate:.0} records/s ({} bytes/record)",
        std::fs::metadata(&path).unwrap().len() / report.records
    );
}

// ---------------------------------------------------------------- crafted input (issue 11)

/// `keyturn audit verify --file P` on a 10-record log whose seal holds `seal`.
async fn verify_with_seal(seal: &[u8]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 9).await;
    std::fs::write(seal_path(&path), seal).unwrap();
    keyturn(&["audit", "verify", "--file", path.to_str().unwrap()])
}

#[tokio::test]
async fn a_seal_with_a_multibyte_hash_is_a_broken_chain_not_a_panic() {
    // Byte 12 of the hash falls inside "é": slicing it by bytes panicked (exit 101).
    let (code, out, err) =
        verify_with_seal("{\"seq\":9,\"hash\":\"0123456789aé\"}".as_bytes()).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with("BROKEN (malformed)")
            && out.contains("audit.jsonl.seal is not a valid seal"),
        "{out}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn every_malformed_seal_breaks_the_chain_with_a_message() {
    // Each used to be taken for "no seal" (exit 0), so garbling the seal hid records cut
    // off the end.
    let long = format!("{{\"seq\":9,\"hash\":\"{}\"}}", "a".repeat(2000));
    for (seal, why) in [
        (&b"not json"[..], "invalid JSON"),
        (&b"{\"seq\":9,\"hash\":\"\xff\xfe\"}"[..], "not UTF-8"),
        (&b"{\"seq\":9,\"hash\":\"abc\"}"[..], "64 lowercase hex"),
        (&b"{\"seq\":-1,\"hash\":\"abc\"}"[..], "invalid JSON"),
        (long.as_bytes(), "bytes or more"),
    ] {
        let (code, out, err) = verify_with_seal(seal).await;
        assert_eq!(code, 1, "{seal:?}: {out}{err}");
        assert!(out.starts_with("BROKEN (malformed)"), "{out}");
        assert!(out.contains(why), "{why}: {out}");
    }
    // An empty seal (created, not yet written) is no seal.
    let (code, out, _) = verify_with_seal(b"").await;
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn an_unreadable_seal_makes_the_log_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 3).await;
    std::fs::remove_file(seal_path(&path)).unwrap();
    std::fs::create_dir(seal_path(&path)).unwrap();
    let (code, out, err) = keyturn(&["audit", "verify", "--file", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.starts_with("unreadable: cannot read"), "{out}");
}

#[tokio::test]
async fn a_damaged_seal_at_start_up_is_recorded_not_overwritten_silently() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 9).await;
    // Cut records off the end and garble the seal that would have shown it.
    let mut l = lines(&path);
    l.truncate(6);
    std::fs::write(&path, l.join("\n") + "\n").unwrap();
    std::fs::write(seal_path(&path), "garbage").unwrap();
    let sink = FileSink::open(&path).unwrap();
    sink.record(&event(50)).await.unwrap();
    let b = verify(&path).problem.expect("the damage stays visible");
    assert_eq!(b.kind, BreakKind::Noted);
    assert!(b.detail.contains("is not a valid seal"), "{}", b.detail);
}

/// A log of valid records (good hashes) whose record 2 has `version`.
async fn log_with_version(dir: &Path, version: &str) -> PathBuf {
    let path = log_with(dir, 1).await;
    let sink = FileSink::open(&path).unwrap();
    let mut ev = event(2);
    ev.event = EventKind::RotationStaged;
    ev.version = Some(version.into());
    sink.record(&ev).await.unwrap();
    sink.record(&event(3)).await.unwrap();
    path
}

#[tokio::test]
async fn a_multibyte_version_in_a_valid_record_is_shown_not_a_panic() {
    // Byte 8 falls inside "€": `audit show` and `audit tail` panicked on it.
    let version = "abcdefg€€";
    let dir = tempfile::tempdir().unwrap();
    let path = log_with_version(dir.path(), version).await;
    assert!(verify(&path).intact());
    let (code, out, err) = keyturn(&["audit", "show", "--file", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("version abcdefg€;"), "{out}");
    // What `tail` prints for each record, and the stdout/journald copies' line.
    let staged = records(&path)
        .into_iter()
        .find(|r| r.event() == "rotation.staged")
        .unwrap();
    assert!(tools::line_text(&staged).contains("version abcdefg€"));
    let mut ev = event(2);
    ev.version = Some(version.into());
    assert!(ev.human().contains("version=abcdefg€"), "{}", ev.human());
    let mut out = Vec::new();
    tools::tail(&path, 10, false, &mut out, &|| true).unwrap();
    assert!(String::from_utf8(out).unwrap().contains("version abcdefg€"));
}

#[tokio::test]
async fn control_characters_in_a_record_reach_no_terminal() {
    // A valid record whose ticket and detail carry terminal escapes (a crafted file, or text
    // that came from an admin request or an Azure answer): `show` and `tail` print them
    // escaped, never as raw ESC/CR bytes that would repaint or hide lines on a terminal.
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 1).await;
    let sink = FileSink::open(&path).unwrap();
    let mut ev = event(2);
    ev.ticket = Some("CHG-1\u{1b}[2J\u{1b}[31mred".into());
    ev.detail = Some("line\rover\u{7}".into());
    sink.record(&ev).await.unwrap();
    assert!(verify(&path).intact());
    let (code, out, err) = keyturn(&["audit", "show", "--file", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let mut tailed = Vec::new();
    tools::tail(&path, 10, false, &mut tailed, &|| true).unwrap();
    let tailed = String::from_utf8(tailed).unwrap();
    for text in [&out, &tailed] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert!(text.contains("ticket CHG-1\\u{1b}[2J"), "{text}");
        assert!(text.contains("line\\rover"), "{text}");
    }
}

#[tokio::test]
async fn tail_reports_a_line_that_is_not_utf8_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 2).await;
    let mut bytes = std::fs::read(&path).unwrap();
    let good = lines(&path);
    bytes.clear();
    bytes.extend_from_slice(good[0].as_bytes());
    bytes.extend_from_slice(b"\n\xff\xfe not a record\n");
    bytes.extend_from_slice(good[1].as_bytes());
    bytes.push(b'\n');
    std::fs::write(&path, &bytes).unwrap();
    let mut out = Vec::new();
    // It stopped with "cannot read …: stream did not contain valid UTF-8".
    tools::tail(&path, 10, false, &mut out, &|| true).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("warning: a line that is not a valid record (not UTF-8)"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 3, "{out}");
}

#[tokio::test]
async fn a_record_with_the_largest_seq_is_a_break_not_an_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let a = chain::encode(u64::MAX, GENESIS_PREV, &event(1)).unwrap();
    let b = chain::encode(0, &a.hash, &event(2)).unwrap();
    std::fs::write(&path, [a.line, b.line].concat()).unwrap();
    let report = tools::verify(std::slice::from_ref(&path), true).unwrap();
    let problem = report.problem.expect("a record after the largest seq");
    assert_eq!(problem.line, 2);
    // The daemon refuses to continue such a chain rather than wrap to 0.
    std::fs::write(
        &path,
        &chain::encode(u64::MAX, GENESIS_PREV, &event(1))
            .unwrap()
            .line,
    )
    .unwrap();
    let err = FileSink::open(&path).err().expect("refused");
    assert!(err.to_string().contains("no record can follow"), "{err}");
}

// ---------------------------------------------------------------- planted files (issue 11)

#[tokio::test]
async fn a_symlinked_audit_log_or_seal_is_refused_and_the_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "root's file\n").unwrap();
    let log = dir.path().join("audit.jsonl");
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    let err = FileSink::open(&log)
        .err()
        .expect("a link is refused")
        .to_string();
    assert!(
        err.contains("is a symbolic link") && err.contains(log.to_str().unwrap()),
        "{err}"
    );
    // A dangling link is not followed to create its target either.
    let dangling = dir.path().join("dangling.jsonl");
    let target = dir.path().join("created-through-the-link");
    std::os::unix::fs::symlink(&target, &dangling).unwrap();
    assert!(FileSink::open(&dangling).is_err());
    assert!(!target.exists());
    // The seal.
    let log2 = dir.path().join("other.jsonl");
    std::os::unix::fs::symlink(&victim, seal_path(&log2)).unwrap();
    let err = FileSink::open(&log2)
        .err()
        .expect("a linked seal is refused")
        .to_string();
    assert!(err.contains("is a symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's file\n");
}

#[tokio::test]
async fn a_hard_linked_audit_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "another file\n").unwrap();
    let log = dir.path().join("audit.jsonl");
    std::fs::hard_link(&victim, &log).unwrap();
    let err = FileSink::open(&log).err().expect("refused").to_string();
    assert!(err.contains("2 hard links"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "another file\n");
}

#[tokio::test]
async fn an_audit_log_owned_by_someone_else_is_refused() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    std::fs::write(&log, "").unwrap();
    // Needs root to give the file away; elsewhere, nothing to check.
    if std::os::unix::fs::chown(&log, Some(65534), None).is_err() {
        eprintln!("SKIPPED: not root, cannot chown");
        return;
    }
    assert_ne!(std::fs::metadata(dir.path()).unwrap().uid(), 65534);
    let err = FileSink::open(&log).err().expect("refused").to_string();
    assert!(err.contains("owned by uid 65534"), "{err}");
    // Owned by the folder's owner (the service user, when root runs keyturn): accepted.
    std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
    assert!(FileSink::open(&log).is_ok());
}

#[test]
fn a_huge_gap_in_seq_is_reported_at_once() {
    // The fuzzer's first find: a record with seq 10^18 after record 0 made verify walk every
    // missing number (it ran for minutes, and would run for years).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let a = chain::encode(0, GENESIS_PREV, &event(1)).unwrap();
    let b = chain::encode(1_000_000_000_000_000_000, &a.hash, &event(2)).unwrap();
    std::fs::write(&path, [a.line, b.line].concat()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(tools::verify(&[path], false).map(|r| r.problem));
    });
    let problem = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("verify answers within 10 s")
        .unwrap()
        .expect("a gap is a break");
    assert_eq!(problem.kind, BreakKind::Deleted);
    assert!(
        problem
            .detail
            .contains("records 1..999999999999999999 are missing"),
        "{}",
        problem.detail
    );
}
