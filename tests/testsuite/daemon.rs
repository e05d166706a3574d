//! The daemon over in-memory Azure, in virtual time: catch-up, schedules, backoff,
//! recovery before scheduling, manual commands, and shutdown.

use keyturn::audit::{EventKind, MemorySink, Trigger};
use keyturn::clock::{Clock, TokioClock};
use keyturn::daemon::{
    AccountError, AccountFailure, Command, Daemon, DaemonError, Managed, Settings,
};
use keyturn::directory::DirectoryError;
use keyturn::memory::{DirFault, DirOp, MemoryDirectory, MemoryVault, StoreFault, StoreOp};
use keyturn::password::{Password, PasswordPolicy};
use keyturn::protocol::{Account, Engine, Request, Tuning};
use keyturn::schedule::Schedule;
use keyturn::store::{tag, Tags};
use std::sync::Arc;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use tokio::sync::{mpsc, oneshot};

struct Fixture {
    clock: Arc<TokioClock>,
    vault: Arc<MemoryVault>,
    dir: Arc<MemoryDirectory>,
    audit: MemorySink,
    managed: Vec<Managed>,
}

fn fixture(n: usize, schedule: &str, rotated_ago: time::Duration) -> Fixture {
    let clock = Arc::new(TokioClock::new(datetime!(2026-11-20 10:00:30 UTC)));
    let vault = Arc::new(MemoryVault::new(
        "https://kv.vault.azure.net/",
        clock.clone(),
    ));
    let dir = Arc::new(MemoryDirectory::new(clock.clone()));
    let mut managed = Vec::new();
    for i in 0..n {
        let upn = format!("svc-{i}@contoso.onmicrosoft.com");
        let p = PasswordPolicy::default().generate().unwrap();
        let rotated = clock.now() - rotated_ago;
        dir.add_user(&upn, &p, Some(rotated));
        let mut tags = Tags::new();
        tags.insert(tag::ROTATED_AT.into(), rotated.format(&Rfc3339).unwrap());
        vault.seed(&format!("svc-{i}"), &p, tags);
        managed.push(Managed {
            account: Account {
                name: format!("acct-{i}"),
                user: upn,
                secret: format!("svc-{i}"),
                policy: PasswordPolicy::default(),
                verify: false,
                expiry: None,
                store: vault.clone(),
                directory: dir.clone(),
            },
            schedule: Schedule::new(schedule, "UTC", Duration::ZERO).unwrap(),
            enabled: true,
            on_missing_secret: keyturn::config::OnMissingSecret::Rotate,
        });
    }
    Fixture {
        clock,
        vault,
        dir,
        audit: MemorySink::default(),
        managed,
    }
}

fn settings() -> Settings {
    Settings {
        max_concurrent: 4,
        max_per_tenant: 4,
        retry_base: Duration::from_secs(10),
        retry_max: Duration::from_secs(60),
        drift_interval: Duration::ZERO,
        readiness_interval: Duration::ZERO,
        shutdown_grace: Duration::from_secs(30),
        startup_delay: Duration::ZERO,
    }
}

impl Fixture {
    fn daemon(&self, settings: Settings) -> Daemon {
        let tuning = Tuning {
            base_delay: Duration::from_millis(10),
            verify_delay: Duration::from_millis(10),
            ..Tuning::default()
        };
        let engine = Arc::new(Engine::new(
            Arc::new(self.audit.clone()),
            self.clock.clone(),
            tuning,
        ));
        Daemon::new(
            engine,
            Arc::new(self.audit.clone()),
            self.clock.clone(),
            settings,
            self.managed.clone(),
        )
    }

    fn completed(&self, account: &str, trigger: Option<Trigger>) -> usize {
        self.audit
            .events()
            .iter()
            .filter(|e| {
                e.event == EventKind::RotationCompleted && e.account.as_deref() == Some(account)
            })
            .filter(|e| trigger.is_none() || e.trigger == trigger)
            .count()
    }

    fn holds(&self, i: usize) -> bool {
        let current = self.vault.peek(&format!("svc-{i}")).unwrap().value;
        self.dir
            .password_is(&format!("svc-{i}@contoso.onmicrosoft.com"), &current)
    }
}

async fn run_for(d: Daemon, virtual_time: Duration) -> mpsc::Sender<Command> {
    let (tx, rx) = mpsc::channel(8);
    d.run(rx, tokio::time::sleep(virtual_time), None)
        .await
        .unwrap();
    tx
}

/// Runs `d` in a task for `virtual_time` at most and waits until it is ready: its command
/// sender and the task.
async fn start_ready(
    d: Daemon,
    virtual_time: Duration,
) -> (
    mpsc::Sender<Command>,
    tokio::task::JoinHandle<Result<(), DaemonError>>,
) {
    let (tx, rx) = mpsc::channel(8);
    let (ready_tx, ready_rx) = oneshot::channel();
    let handle = tokio::spawn(async move {
        d.run(rx, tokio::time::sleep(virtual_time), Some(ready_tx))
            .await
    });
    ready_rx.await.unwrap();
    (tx, handle)
}

#[tokio::test(start_paused = true)]
async fn overdue_accounts_catch_up_at_start_and_then_follow_the_schedule() {
    // Every minute at second 0; last rotated 5 minutes ago: overdue.
    let f = fixture(3, "0 * * * * *", time::Duration::minutes(5));
    run_for(f.daemon(settings()), Duration::from_secs(185)).await;
    for i in 0..3 {
        let name = format!("acct-{i}");
        assert_eq!(
            f.completed(&name, Some(Trigger::CatchUp)),
            1,
            "{name} catches up once"
        );
        // Started 10:00:30; fires at 10:01, 10:02, 10:03 (the catch-up at 10:00:30 moved the next fire past it).
        assert_eq!(f.completed(&name, Some(Trigger::Schedule)), 3, "{name}");
        assert!(f.holds(i));
    }
}

#[tokio::test(start_paused = true)]
async fn accounts_that_are_not_due_wait_for_their_fire_time() {
    // Every hour at minute 0; rotated 10 s ago at 10:00:20: next due 11:00.
    let f = fixture(2, "0 0 * * * *", time::Duration::seconds(10));
    run_for(f.daemon(settings()), Duration::from_secs(20 * 60)).await;
    assert_eq!(
        f.completed("acct-0", None),
        0,
        "nothing is due before 11:00"
    );
    let f = fixture(2, "0 0 * * * *", time::Duration::seconds(10));
    run_for(f.daemon(settings()), Duration::from_secs(60 * 60)).await;
    assert_eq!(f.completed("acct-0", Some(Trigger::Schedule)), 1);
    assert_eq!(f.completed("acct-1", Some(Trigger::Schedule)), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_account_backs_off_and_never_stops_the_others() {
    let f = fixture(3, "0 * * * * *", time::Duration::minutes(5));
    // acct-?: the directory refuses the first 4 resets (whichever accounts they hit).
    for _ in 0..4 {
        f.dir.inject(
            DirOp::Reset,
            DirFault::Fail(DirectoryError::Rejected {
                user: "x".into(),
                status: 403,
                code: "Authorization_RequestDenied".into(),
                message: "Insufficient privileges to complete the operation.".into(),
                request_id: None,
            }),
        );
    }
    run_for(f.daemon(settings()), Duration::from_secs(300)).await;
    let abandoned = f
        .audit
        .events()
        .iter()
        .filter(|e| e.event == EventKind::RotationAbandoned)
        .count();
    assert_eq!(abandoned, 4);
    for i in 0..3 {
        assert!(
            f.completed(&format!("acct-{i}"), None) >= 3,
            "acct-{i} kept rotating"
        );
        assert!(f.holds(i));
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_rotation_frees_its_slot_and_is_retried() {
    let f = fixture(2, "0 * * * * *", time::Duration::minutes(5));
    // A bug: staging acct-0's password panics once. With one slot per tenant (both accounts
    // are in the same tenant), a slot that stayed taken would stop every rotation.
    f.vault
        .inject(StoreOp::Set, Some("svc-0-pending"), StoreFault::Panic);
    let s = Settings {
        max_concurrent: 1,
        max_per_tenant: 1,
        ..settings()
    };
    run_for(f.daemon(s), Duration::from_secs(300)).await;
    assert!(
        f.completed("acct-0", None) >= 3,
        "acct-0 is retried after the panic and keeps its schedule"
    );
    assert!(
        f.completed("acct-1", None) >= 4,
        "acct-1 never waits for the panicked task"
    );
    assert!(f.holds(0) && f.holds(1));
}

#[tokio::test(start_paused = true)]
async fn a_pending_rotation_is_recovered_before_anything_is_scheduled() {
    let f = fixture(1, "0 0 3 * * MON", time::Duration::hours(1));
    // A previous run staged and applied P, then died.
    let p: Password = PasswordPolicy::default().generate().unwrap();
    let mut tags = Tags::new();
    tags.insert(tag::STATE.into(), tag::PENDING.into());
    tags.insert(tag::ROTATION_ID.into(), uuid::Uuid::new_v4().to_string());
    f.vault.seed("svc-0-pending", &p, tags);
    f.dir.reset_out_of_band("svc-0@contoso.onmicrosoft.com", &p);
    let d = f.daemon(settings());
    let (tx, handle) = start_ready(d, Duration::from_secs(5)).await;
    // By readiness, recovery has committed P.
    assert_eq!(f.vault.peek("svc-0").unwrap().value, p);
    assert_eq!(
        f.vault.peek("svc-0-pending").unwrap().tag(tag::STATE),
        Some(tag::COMMITTED)
    );
    assert_eq!(f.completed("acct-0", Some(Trigger::Recovery)), 1);
    drop(tx);
    handle.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn manual_rotations_reply_with_each_result() {
    let f = fixture(2, "0 0 3 * * MON", time::Duration::hours(1));
    let (tx, rx) = mpsc::channel(8);
    let d = f.daemon(settings());
    let handle = tokio::spawn(async move {
        d.run(rx, tokio::time::sleep(Duration::from_secs(60)), None)
            .await
    });
    let (reply_tx, reply_rx) = oneshot::channel();
    let request = Request {
        reason: Some("suspected leak".into()),
        ticket: Some("INC-4242".into()),
        ..Request::daemon(Trigger::Socket)
    };
    tx.send(Command::Rotate {
        target: keyturn::daemon::Target::All,
        request,
        wait: true,
        reply: Some(reply_tx),
    })
    .await
    .unwrap();
    let mut results = reply_rx.await.unwrap();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    let (reply_tx, reply_rx) = oneshot::channel();
    tx.send(Command::Rotate {
        target: keyturn::daemon::Target::One("nope".into()),
        request: Request::daemon(Trigger::Socket),
        wait: true,
        reply: Some(reply_tx),
    })
    .await
    .unwrap();
    let results = reply_rx.await.unwrap();
    match &results[0] {
        (name, Err(e @ AccountFailure::Refused(AccountError::NoSuchAccount { name: asked }))) => {
            assert_eq!((name.as_str(), asked.as_str()), ("nope", "nope"));
            assert_eq!(e.to_string(), "no account named \"nope\" is configured");
        }
        other => panic!("{other:?}"),
    }
    handle.await.unwrap().unwrap();
    let done = f
        .audit
        .events()
        .into_iter()
        .find(|e| e.event == EventKind::RotationCompleted)
        .unwrap();
    assert_eq!(done.reason.as_deref(), Some("suspected leak"));
    assert_eq!(done.ticket.as_deref(), Some("INC-4242"));
    assert!(f.holds(0) && f.holds(1));
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_in_flight_rotations_finish() {
    let f = fixture(1, "0 0 3 * * MON", time::Duration::hours(1));
    // Graph is slow: 3 unknown outcomes with Retry-After 5 s before success.
    for _ in 0..3 {
        f.dir.inject(
            DirOp::Reset,
            DirFault::Fail(DirectoryError::Unknown {
                user: "x".into(),
                status: Some(429),
                detail: "throttled".into(),
                request_id: None,
                retry_after: Some(Duration::from_secs(5)),
            }),
        );
    }
    let (tx, rx) = mpsc::channel(8);
    let d = f.daemon(settings());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        d.run(
            rx,
            async {
                let _ = stop_rx.await;
            },
            None,
        )
        .await
    });
    tx.send(Command::Rotate {
        target: keyturn::daemon::Target::All,
        request: Request::daemon(Trigger::Signal),
        wait: false,
        reply: None,
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_tx.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert_eq!(
        f.completed("acct-0", Some(Trigger::Signal)),
        1,
        "the rotation finished during the grace period"
    );
    let kinds = f.audit.kinds();
    assert_eq!(kinds.last(), Some(&EventKind::RotationCompleted));
    assert!(kinds.contains(&EventKind::DaemonStopping));
    assert!(f.holds(0));
}

/// A directory answer that leaves the outcome unknown (throttled), so the engine retries.
fn throttled(retry_after: Duration) -> DirFault {
    DirFault::Fail(DirectoryError::Unknown {
        user: "x".into(),
        status: Some(429),
        detail: "throttled".into(),
        request_id: None,
        retry_after: Some(retry_after),
    })
}

/// Sends a reload of `accounts` with `tuning` and returns the daemon's answer.
async fn reload(tx: &mpsc::Sender<Command>, accounts: Vec<Managed>, tuning: Tuning) -> String {
    let (reply, answer) = oneshot::channel();
    tx.send(Command::Reload {
        accounts,
        settings: settings(),
        tuning,
        reply: Some(reply),
    })
    .await
    .unwrap();
    answer.await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_failure_with_the_longest_retry_delays_does_not_stop_the_daemon() {
    // `retry_base_delay = "10000y"` once killed the daemon at the first failed rotation: the
    // retry time overflowed. Validation now refuses it; the daemon must survive it anyway.
    let f = fixture(1, "0 * * * * *", time::Duration::minutes(5));
    f.dir.inject(
        DirOp::Reset,
        DirFault::Fail(DirectoryError::Rejected {
            user: "x".into(),
            status: 403,
            code: "Authorization_RequestDenied".into(),
            message: "Insufficient privileges to complete the operation.".into(),
            request_id: None,
        }),
    );
    let ten_thousand_years = Duration::from_secs(10_000 * 31_557_600);
    let d = f.daemon(Settings {
        retry_base: ten_thousand_years,
        retry_max: ten_thousand_years,
        ..settings()
    });
    let board = d.board();
    run_for(d, Duration::from_secs(120)).await;
    let status = board.lock().unwrap().accounts[0].clone();
    assert_eq!(status.failures, 1, "{status:?}");
    assert!(
        status.next_due.unwrap() > f.clock.now() + time::Duration::days(100 * 365),
        "{status:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_applies_the_new_apply_attempts() {
    let f = fixture(1, "0 0 3 * * MON", time::Duration::hours(1));
    let d = f.daemon(settings()); // 5 apply attempts
    let (tx, handle) = start_ready(d, Duration::from_secs(600)).await;
    let answer = reload(
        &tx,
        f.managed.clone(),
        Tuning {
            apply_attempts: 1,
            base_delay: Duration::from_millis(10),
            ..Tuning::default()
        },
    )
    .await;
    assert!(answer.contains("1 account(s) kept"), "{answer}");
    // One throttled answer: a second attempt would succeed, but one attempt is all there is
    // now, so the password is left pending for recovery.
    f.dir
        .inject(DirOp::Reset, throttled(Duration::from_secs(1)));
    let (reply, results) = oneshot::channel();
    tx.send(Command::Rotate {
        target: keyturn::daemon::Target::One("acct-0".into()),
        request: Request::daemon(Trigger::Socket),
        wait: true,
        reply: Some(reply),
    })
    .await
    .unwrap();
    let results = results.await.unwrap();
    match &results[0].1 {
        Err(AccountFailure::Rotation(e)) => {
            assert!(e.is_pending(), "{e}");
            assert!(e.to_string().contains("left pending"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    drop(tx);
    handle.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_reload_reschedules_accounts_whose_time_zone_window_vault_or_secret_changed() {
    // Daily at 03:00 UTC; rotated at 09:00:30 UTC: due tomorrow 03:00 UTC.
    let f = fixture(1, "0 0 3 * * *", time::Duration::hours(1));
    let d = f.daemon(settings());
    let board = d.board();
    let (tx, handle) = start_ready(d, Duration::from_secs(600)).await;
    let next_due = || board.lock().unwrap().accounts[0].next_due.unwrap();
    assert_eq!(next_due(), datetime!(2026-11-21 03:00 UTC));
    let tuning = Tuning::default;
    let mut m = f.managed[0].clone();

    // 03:00 in Auckland (UTC+13 in November) is 14:00 UTC the day before: due today.
    m.schedule = Schedule::new("0 0 3 * * *", "Pacific/Auckland", Duration::ZERO).unwrap();
    let answer = reload(&tx, vec![m.clone()], tuning()).await;
    assert!(answer.contains("1 kept account(s) with another schedule, time zone, window, vault or secret are reconciled"), "{answer}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(next_due(), datetime!(2026-11-20 14:00 UTC));

    // A window moves the account to its offset inside it.
    m.schedule =
        Schedule::new("0 0 3 * * *", "Pacific/Auckland", Duration::from_secs(7200)).unwrap();
    reload(&tx, vec![m.clone()], tuning()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let offset = time::Duration::try_from(m.schedule.offset("acct-0")).unwrap();
    assert!(offset > time::Duration::ZERO);
    // (croner keeps the sub-second part of the time it searches from.)
    let moved = next_due() - (datetime!(2026-11-20 14:00 UTC) + offset);
    assert!(moved.abs() < time::Duration::SECOND, "{moved}");

    // Another vault, where the secret does not exist yet: the first rotation creates it.
    let vault2 = Arc::new(MemoryVault::new(
        "https://kv2.vault.azure.net/",
        f.clock.clone(),
    ));
    m.account.store = vault2.clone();
    reload(&tx, vec![m.clone()], tuning()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(f.completed("acct-0", Some(Trigger::CatchUp)), 1);
    let created = vault2
        .peek("svc-0")
        .expect("the secret is created in the new vault");
    assert!(f
        .dir
        .password_is("svc-0@contoso.onmicrosoft.com", &created.value));

    // Another secret name: the same.
    m.account.secret = "svc-0-renamed".into();
    reload(&tx, vec![m.clone()], tuning()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(f.completed("acct-0", Some(Trigger::CatchUp)), 2);
    let created = vault2
        .peek("svc-0-renamed")
        .expect("the renamed secret is created");
    assert!(f
        .dir
        .password_is("svc-0@contoso.onmicrosoft.com", &created.value));
    drop(tx);
    handle.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_account_changed_by_a_reload_while_it_rotates_is_reconciled_after() {
    let f = fixture(1, "0 0 3 * * MON", time::Duration::hours(1));
    // Graph is slow: the rotation started below runs for about 15 s.
    for _ in 0..3 {
        f.dir
            .inject(DirOp::Reset, throttled(Duration::from_secs(5)));
    }
    let d = f.daemon(settings());
    let (tx, handle) = start_ready(d, Duration::from_secs(600)).await;
    tx.send(Command::Rotate {
        target: keyturn::daemon::Target::All,
        request: Request::daemon(Trigger::Signal),
        wait: false,
        reply: None,
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut m = f.managed[0].clone();
    m.account.secret = "svc-0-renamed".into();
    reload(&tx, vec![m], Tuning::default()).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(f.completed("acct-0", Some(Trigger::Signal)), 1);
    let created = f
        .vault
        .peek("svc-0-renamed")
        .expect("reconciled once the rotation ended: the renamed secret is created");
    assert!(f
        .dir
        .password_is("svc-0@contoso.onmicrosoft.com", &created.value));
    drop(tx);
    handle.await.unwrap().unwrap();
}
