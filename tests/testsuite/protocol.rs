//! Logic tests of the rotation protocol over the in-memory store and directory:
//! every step's failure mode from `docs/protocol.md`, and crashes between steps.

use async_trait::async_trait;
use keyturn::audit::{AuditError, AuditEvent, AuditSink, EventKind, MemorySink, Outcome, Trigger};
use keyturn::clock::{Clock, ManualClock};
use keyturn::directory::DirectoryError;
use keyturn::memory::{DirFault, DirOp, MemoryDirectory, MemoryVault, StoreFault, StoreOp};
use keyturn::password::{Password, PasswordPolicy};
use keyturn::protocol::{Account, Engine, Request, Rotated, RotationError, Tuning};
use keyturn::store::{tag, StoreError, Tags};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use time::macros::datetime;

const USER: &str = "svc-coreview@contoso.onmicrosoft.com";
const SECRET: &str = "svc-coreview";

struct World {
    clock: Arc<ManualClock>,
    vault: Arc<MemoryVault>,
    dir: Arc<MemoryDirectory>,
    audit: MemorySink,
    account: Account,
    initial: Password,
}

fn tuning() -> Tuning {
    Tuning {
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        verify_delay: Duration::from_millis(1),
        ..Tuning::default()
    }
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
    clock.advance(time::Duration::hours(1));
    let account = Account {
        name: "coreview".into(),
        user: USER.into(),
        secret: SECRET.into(),
        policy: PasswordPolicy::default(),
        verify: true,
        expiry: Some(time::Duration::days(9)),
        store: vault.clone(),
        directory: dir.clone(),
    };
    World {
        clock,
        vault,
        dir,
        audit: MemorySink::default(),
        account,
        initial,
    }
}

impl World {
    fn engine(&self) -> Engine {
        Engine::new(Arc::new(self.audit.clone()), self.clock.clone(), tuning())
    }

    /// A scheduled rotation of the account by a new engine.
    async fn rotate(&self) -> Result<Rotated, RotationError> {
        self.engine()
            .rotate(&self.account, &req(Trigger::Schedule))
            .await
    }

    /// Recovery of the account by a new engine.
    async fn recover(&self) -> Result<Option<Rotated>, RotationError> {
        self.engine()
            .recover(&self.account, &req(Trigger::Recovery))
            .await
    }

    /// Makes Entra refuse the next `n` password resets (403 Authorization_RequestDenied).
    fn refuse_resets(&self, n: u32) {
        for _ in 0..n {
            self.dir.inject(
                DirOp::Reset,
                DirFault::Fail(refused(403, "Authorization_RequestDenied")),
            );
        }
    }

    fn engine_with(&self, audit: Arc<dyn AuditSink>) -> Engine {
        Engine::new(audit, self.clock.clone(), tuning())
    }

    /// The invariant: Entra's password is the latest `<secret>`, or the latest staging
    /// version while it is tagged pending.
    fn invariant_holds(&self) -> bool {
        let current = self.vault.peek(SECRET);
        let staged = self.vault.peek(&format!("{SECRET}-pending"));
        current.is_some_and(|c| self.dir.password_is(USER, &c.value))
            || staged.is_some_and(|s| {
                s.tag(tag::STATE) == Some(tag::PENDING) && self.dir.password_is(USER, &s.value)
            })
    }

    fn current(&self) -> Password {
        self.vault.peek(SECRET).unwrap().value
    }

    fn staged_state(&self) -> Option<String> {
        self.vault
            .peek(&format!("{SECRET}-pending"))
            .and_then(|s| s.tag(tag::STATE).map(String::from))
    }

    fn all_passwords(&self) -> Vec<Password> {
        let mut v: Vec<Password> = self
            .vault
            .versions(SECRET)
            .into_iter()
            .map(|r| r.value)
            .collect();
        v.extend(
            self.vault
                .versions(&format!("{SECRET}-pending"))
                .into_iter()
                .map(|r| r.value),
        );
        v
    }

    fn assert_no_password_in_audit(&self) {
        let text = serde_json::to_string(
            &self
                .audit
                .events()
                .iter()
                .map(|e| serde_json::to_value(e).unwrap())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let human: String = self.audit.events().iter().map(AuditEvent::human).collect();
        for p in self.all_passwords() {
            assert!(
                !text.contains(p.expose()),
                "a password reached an audit record"
            );
            assert!(
                !human.contains(p.expose()),
                "a password reached a human audit line"
            );
        }
    }
}

fn req(trigger: Trigger) -> Request {
    Request::daemon(trigger)
}

fn unavailable() -> StoreError {
    StoreError::Unavailable {
        vault: "demo".into(),
        detail: "HTTP 503".into(),
        request_id: Some("rid".into()),
    }
}

fn unknown() -> DirectoryError {
    DirectoryError::Unknown {
        user: USER.into(),
        status: Some(503),
        detail: "HTTP 503".into(),
        request_id: Some("graph-rid".into()),
        retry_after: None,
    }
}

fn refused(status: u16, code: &str) -> DirectoryError {
    DirectoryError::Rejected {
        user: USER.into(),
        status,
        code: code.into(),
        message: "Insufficient privileges to complete the operation.".into(),
        request_id: Some("graph-rid".into()),
    }
}

#[tokio::test]
async fn a_rotation_puts_the_same_new_password_in_entra_and_key_vault() {
    let w = world();
    let done = w.rotate().await.unwrap();
    assert!(!done.resumed);
    let current = w.current();
    assert_ne!(current, w.initial);
    assert!(w.dir.password_is(USER, &current));
    assert_eq!(current.len(), 16);
    assert_eq!(w.staged_state().as_deref(), Some(tag::COMMITTED));
    let latest = w.vault.peek(SECRET).unwrap();
    assert_eq!(latest.version, done.version);
    assert_eq!(
        latest.tag(tag::ROTATION_ID),
        Some(done.rotation_id.to_string().as_str())
    );
    assert_eq!(latest.tag(tag::TRIGGER), Some("schedule"));
    assert_eq!(latest.tag(tag::ACCOUNT), Some("coreview"));
    assert!(
        latest.tag(tag::STATE).is_none(),
        "<secret> carries no staging state"
    );
    assert_eq!(
        latest.expires,
        Some(w.clock.now() + time::Duration::days(9))
    );
    assert_eq!(
        w.audit.kinds(),
        vec![
            EventKind::RotationStarted,
            EventKind::RotationStaged,
            EventKind::RotationApplied,
            EventKind::RotationVerified,
            EventKind::RotationCommitted,
            EventKind::RotationCompleted
        ]
    );
    assert!(w.invariant_holds());
    w.assert_no_password_in_audit();
}

#[tokio::test]
async fn a_failed_stage_changes_nothing() {
    let w = world();
    w.vault.inject(
        StoreOp::Set,
        Some("svc-coreview-pending"),
        StoreFault::Fail(unavailable()),
    );
    let err = w.rotate().await.unwrap_err();
    assert!(matches!(err, RotationError::Stage { .. }), "{err}");
    assert!(err.to_string().contains("nothing was changed"));
    assert_eq!(w.dir.resets(), 0);
    assert_eq!(w.current(), w.initial);
    assert!(w.dir.password_is(USER, &w.initial));
    let last = w.audit.events().pop().unwrap();
    assert_eq!(last.event, EventKind::RotationFailed);
    assert_eq!(last.error.unwrap().request_id.as_deref(), Some("rid"));
}

#[tokio::test]
async fn a_stage_whose_answer_was_lost_is_completed_by_the_next_rotation() {
    let w = world();
    w.vault.inject(
        StoreOp::Set,
        Some("svc-coreview-pending"),
        StoreFault::CommitThenFail(unavailable()),
    );
    assert!(w.rotate().await.is_err());
    assert!(w.invariant_holds());
    assert_eq!(w.staged_state().as_deref(), Some(tag::PENDING));
    let staged = w.vault.peek("svc-coreview-pending").unwrap().value;

    let done = w.rotate().await.unwrap();
    assert!(done.resumed);
    assert_eq!(
        w.current(),
        staged,
        "the pending password, not a new one, is completed"
    );
    assert!(w.dir.password_is(USER, &staged));
    assert_eq!(w.staged_state().as_deref(), Some(tag::COMMITTED));
}

#[tokio::test]
async fn a_definite_refusal_abandons_after_one_attempt() {
    let w = world();
    w.refuse_resets(1);
    let err = w.rotate().await.unwrap_err();
    assert!(matches!(err, RotationError::Abandoned { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("Privileged Authentication Administrator"),
        "{msg}"
    );
    assert!(msg.contains("graph-rid"), "{msg}");
    assert_eq!(w.staged_state().as_deref(), Some(tag::ABANDONED));
    assert_eq!(w.current(), w.initial);
    assert!(w.dir.password_is(USER, &w.initial));
    let last = w.audit.events().pop().unwrap();
    assert_eq!(last.event, EventKind::RotationAbandoned);
    assert_eq!(
        last.error.as_ref().unwrap().code.as_deref(),
        Some("Authorization_RequestDenied")
    );
    assert_eq!(last.error.as_ref().unwrap().http_status, Some(403));
    // Abandoned is not pending: the next rotation starts afresh.
    w.rotate().await.unwrap();
    assert!(w.invariant_holds());
}

#[tokio::test]
async fn unknown_outcomes_are_retried_with_the_same_password() {
    let w = world();
    w.dir
        .inject(DirOp::Reset, DirFault::ApplyThenFail(unknown()));
    w.dir.inject(DirOp::Reset, DirFault::Fail(unknown()));
    let done = w.rotate().await.unwrap();
    assert_eq!(
        w.dir.resets(),
        2,
        "one lost answer, one refused attempt, then success"
    );
    assert!(w.dir.password_is(USER, &w.current()));
    assert_eq!(
        w.vault.versions("svc-coreview-pending").len(),
        1,
        "one password for all attempts"
    );
    assert!(!done.resumed);
}

#[tokio::test]
async fn unknown_outcomes_that_never_clear_leave_the_password_pending() {
    let w = world();
    for _ in 0..tuning().apply_attempts {
        w.dir
            .inject(DirOp::Reset, DirFault::ApplyThenFail(unknown()));
    }
    let err = w.rotate().await.unwrap_err();
    assert!(err.is_pending(), "{err}");
    assert_eq!(w.staged_state().as_deref(), Some(tag::PENDING));
    assert_ne!(
        w.current(),
        w.vault.peek("svc-coreview-pending").unwrap().value
    );
    assert!(w.invariant_holds(), "Entra holds the pending password");

    let done = w.recover().await.unwrap().unwrap();
    assert!(done.resumed);
    assert!(w.dir.password_is(USER, &w.current()));
    assert_eq!(w.staged_state().as_deref(), Some(tag::COMMITTED));
}

#[tokio::test]
async fn a_refusal_after_an_unknown_outcome_is_not_proof() {
    let w = world();
    w.dir
        .inject(DirOp::Reset, DirFault::ApplyThenFail(unknown()));
    w.refuse_resets(1 + tuning().apply_attempts);
    let err = w.rotate().await.unwrap_err();
    assert!(
        err.is_pending(),
        "must not abandon a password Entra may hold: {err}"
    );
    assert!(w.invariant_holds());
}

#[tokio::test]
async fn a_failed_commit_leaves_pending_and_recovery_commits() {
    let w = world();
    w.vault
        .inject(StoreOp::Set, Some(SECRET), StoreFault::Fail(unavailable()));
    let err = w.rotate().await.unwrap_err();
    assert!(err.is_pending(), "{err}");
    assert_eq!(w.current(), w.initial);
    assert!(
        !w.dir.password_is(USER, &w.initial),
        "Entra already holds the new password"
    );
    assert!(w.invariant_holds(), "the staging secret holds it");

    let done = w.rotate().await.unwrap();
    assert!(done.resumed);
    assert!(w.dir.password_is(USER, &w.current()));
    assert_eq!(w.staged_state().as_deref(), Some(tag::COMMITTED));
}

#[tokio::test]
async fn a_lost_commit_answer_is_finished_without_another_reset() {
    let w = world();
    w.vault.inject(
        StoreOp::Set,
        Some(SECRET),
        StoreFault::CommitThenFail(unavailable()),
    );
    assert!(w.rotate().await.unwrap_err().is_pending());
    let resets = w.dir.resets();
    let committed = w.current();
    let done = w.recover().await.unwrap().unwrap();
    assert!(done.finish_only);
    assert_eq!(w.dir.resets(), resets, "no second reset was needed");
    assert_eq!(w.current(), committed);
    assert_eq!(w.staged_state().as_deref(), Some(tag::COMMITTED));
}

#[tokio::test]
async fn a_failed_finish_warns_and_the_next_rotation_still_makes_a_new_password() {
    let w = world();
    w.vault
        .inject(StoreOp::UpdateTags, None, StoreFault::Fail(unavailable()));
    let first = w.rotate().await.unwrap();
    assert_eq!(first.warnings.len(), 1);
    assert_eq!(w.staged_state().as_deref(), Some(tag::PENDING));
    assert!(w.invariant_holds());
    let p1 = w.current();

    let second = w
        .engine()
        .rotate(&w.account, &req(Trigger::Socket))
        .await
        .unwrap();
    assert_ne!(second.rotation_id, first.rotation_id);
    assert_ne!(w.current(), p1, "a request to rotate gets a new password");
    assert_eq!(w.staged_state().as_deref(), Some(tag::COMMITTED));
}

#[tokio::test]
async fn recovery_abandons_only_with_proof_that_entra_never_took_the_password() {
    // A previous run staged a password and died before the PATCH. Now Graph refuses it.
    let w = world();
    let staged = PasswordPolicy::default().generate().unwrap();
    let mut tags = Tags::new();
    tags.insert(tag::STATE.into(), tag::PENDING.into());
    tags.insert(tag::ROTATION_ID.into(), uuid::Uuid::new_v4().to_string());
    w.vault.seed("svc-coreview-pending", &staged, tags);
    w.refuse_resets(1);
    let err = w.recover().await.unwrap_err();
    assert!(matches!(err, RotationError::Abandoned { .. }), "{err}");
    assert_eq!(w.staged_state().as_deref(), Some(tag::ABANDONED));
    assert!(w.invariant_holds());
}

#[tokio::test]
async fn recovery_keeps_pending_when_entra_may_have_taken_the_password() {
    // A previous run staged P and applied it; its response was lost; then the app lost its role.
    let w = world();
    let staged = PasswordPolicy::default().generate().unwrap();
    let mut tags = Tags::new();
    tags.insert(tag::STATE.into(), tag::PENDING.into());
    w.vault.seed("svc-coreview-pending", &staged, tags);
    w.clock.advance(time::Duration::seconds(1));
    w.dir.reset_out_of_band(USER, &staged);
    w.refuse_resets(tuning().apply_attempts);
    let err = w.recover().await.unwrap_err();
    assert!(err.is_pending(), "{err}");
    assert_eq!(w.staged_state().as_deref(), Some(tag::PENDING));
    assert!(
        w.invariant_holds(),
        "abandoning here would have lost the password"
    );
}

#[tokio::test]
async fn verify_blocked_by_conditional_access_warns_and_commits() {
    let w = world();
    w.dir.block_sign_in(USER, 53003);
    let done = w.rotate().await.unwrap();
    assert_eq!(done.warnings.len(), 1);
    assert!(
        done.warnings[0].contains("AADSTS53003"),
        "{}",
        done.warnings[0]
    );
    assert!(done.warnings[0].contains("Conditional Access"));
    assert!(w.dir.password_is(USER, &w.current()));
    let verified = w
        .audit
        .events()
        .into_iter()
        .find(|e| e.event == EventKind::RotationVerified)
        .unwrap();
    assert_eq!(verified.outcome, Some(Outcome::Warning));
    assert_eq!(verified.error.unwrap().code.as_deref(), Some("AADSTS53003"));
}

#[tokio::test]
async fn verify_retries_while_entra_replicates() {
    let w = world();
    for _ in 0..2 {
        w.dir.inject(
            DirOp::Verify,
            DirFault::Fail(DirectoryError::SignIn {
                user: USER.into(),
                aadsts: 50126,
                message: "invalid username or password".into(),
            }),
        );
    }
    let done = w.rotate().await.unwrap();
    assert!(done.warnings.is_empty(), "{:?}", done.warnings);
    let verified = w
        .audit
        .events()
        .into_iter()
        .find(|e| e.event == EventKind::RotationVerified)
        .unwrap();
    assert_eq!(verified.outcome, Some(Outcome::Success));
}

#[tokio::test]
async fn drift_is_detected_after_an_out_of_band_change() {
    let w = world();
    let engine = w.engine();
    engine
        .rotate(&w.account, &req(Trigger::Schedule))
        .await
        .unwrap();
    assert_eq!(engine.check_drift(&w.account).await.unwrap(), None);
    w.clock.advance(time::Duration::hours(2));
    let other = PasswordPolicy::default().generate().unwrap();
    w.dir.reset_out_of_band(USER, &other);
    let drift = engine
        .check_drift(&w.account)
        .await
        .unwrap()
        .expect("drift");
    assert_eq!(drift.changed_at, w.clock.now());
    assert_eq!(w.audit.kinds().last(), Some(&EventKind::DriftDetected));
    assert!(
        !w.invariant_holds(),
        "Key Vault is stale until the drift rotation"
    );
    engine
        .rotate(&w.account, &req(Trigger::Drift))
        .await
        .unwrap();
    assert!(w.invariant_holds());
    assert_eq!(engine.check_drift(&w.account).await.unwrap(), None);
}

/// An audit sink that dies (like the process) at its Nth record and stays dead.
struct DiesAt {
    n: usize,
    seen: AtomicUsize,
}

#[async_trait]
impl AuditSink for DiesAt {
    async fn record(&self, _: &AuditEvent) -> Result<(), AuditError> {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 >= self.n {
            return Err(AuditError::Write {
                path: "/dev/full".into(),
                source: std::io::Error::other("disk full"),
            });
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_crash_between_any_two_steps_is_recovered() {
    // Records 1..=6 announce: started, staged, applied, verified, committed, completed.
    for n in 1..=6 {
        let w = world();
        let dying = w.engine_with(Arc::new(DiesAt {
            n,
            seen: AtomicUsize::new(0),
        }));
        let err = dying
            .rotate(&w.account, &req(Trigger::Schedule))
            .await
            .unwrap_err();
        assert!(matches!(err, RotationError::Audit { .. }), "n={n}: {err}");
        assert!(
            w.invariant_holds(),
            "invariant broken by a crash at record {n}"
        );

        // A new process starts: recovery, then a rotation.
        let engine = w.engine();
        engine
            .recover(&w.account, &req(Trigger::Recovery))
            .await
            .unwrap();
        assert!(
            w.invariant_holds(),
            "n={n}: invariant broken after recovery"
        );
        assert_ne!(
            w.staged_state().as_deref(),
            Some(tag::PENDING),
            "n={n}: still pending"
        );
        engine
            .rotate(&w.account, &req(Trigger::Schedule))
            .await
            .unwrap();
        assert!(w.dir.password_is(USER, &w.current()), "n={n}");
        w.assert_no_password_in_audit();
    }
}

#[tokio::test]
async fn rotations_of_one_account_never_overlap() {
    let w = world();
    let engine = Arc::new(w.engine());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let engine = engine.clone();
        let account = w.account.clone();
        tasks.push(tokio::spawn(async move {
            engine.rotate(&account, &req(Trigger::Signal)).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(w.vault.versions(SECRET).len(), 9, "8 rotations + the seed");
    assert!(w.invariant_holds());
    let staged = w.vault.versions("svc-coreview-pending");
    assert!(staged
        .iter()
        .all(|s| s.tag(tag::STATE) == Some(tag::COMMITTED)));
}

#[tokio::test]
async fn an_adoption_tags_its_versions_and_a_recovery_completing_it_keeps_the_tag() {
    let w = world();
    let adopt = Request {
        adopt: true,
        ..req(Trigger::Socket)
    };
    // The commit fails: the adoption's password is left pending, its staging version tagged.
    w.vault
        .inject(StoreOp::Set, Some(SECRET), StoreFault::Fail(unavailable()));
    let err = w.engine().rotate(&w.account, &adopt).await.unwrap_err();
    assert!(err.is_pending(), "{err}");
    let staged = w.vault.peek(&format!("{SECRET}-pending")).unwrap();
    assert!(staged.tag(tag::ADOPTED).is_some(), "{:?}", staged.tags);

    // The daemon's recovery (not an adoption itself) completes it: the committed version
    // records the adoption.
    let done = w
        .engine()
        .rotate(&w.account, &req(Trigger::Recovery))
        .await
        .unwrap();
    assert!(done.resumed);
    let latest = w.vault.peek(SECRET).unwrap();
    assert_eq!(latest.version, done.version);
    let at = latest
        .tag(tag::ADOPTED)
        .unwrap_or_else(|| panic!("{:?}", latest.tags));
    assert!(
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_ok(),
        "{at}"
    );

    // A later rotation is not an adoption.
    w.rotate().await.unwrap();
    assert!(w.vault.peek(SECRET).unwrap().tag(tag::ADOPTED).is_none());
}
