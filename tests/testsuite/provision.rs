//! `keyturn provision`'s logic over the in-memory vault and tenant: creation with the
//! write-ahead rule, lost answers, a crash between any two steps, refusals, roles, the dry
//! run, idempotence, and the daemon's recovery leaving a provisioning in flight alone.

use async_trait::async_trait;
use keyturn::audit::{Actor, AuditError, AuditEvent, AuditSink, MemorySink, Trigger};
use keyturn::clock::ManualClock;
use keyturn::entra_roles;
use keyturn::memory::{MemoryDirectory, MemoryVault, StoreFault, StoreOp};
use keyturn::password::PasswordPolicy;
use keyturn::protocol::{Account, Engine, Request, RotationError, Tuning};
use keyturn::provision::entra::{EntraError, Op};
use keyturn::provision::memory::{EntraFault, MemoryEntra};
use keyturn::provision::{AccountOutcome, Options, Provisioner, Target};
use keyturn::store::{tag, StoreError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use time::macros::datetime;

const UPN: &str = "svc-coreview@contoso.onmicrosoft.com";
const SECRET: &str = "svc-coreview";
const STAGING: &str = "svc-coreview-pending";

struct World {
    clock: Arc<ManualClock>,
    vault: Arc<MemoryVault>,
    entra: Arc<MemoryEntra>,
    audit: MemorySink,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-01 03:00 UTC)));
    World {
        vault: Arc::new(MemoryVault::new(
            "https://kv.vault.azure.net/",
            clock.clone(),
        )),
        entra: Arc::new(MemoryEntra::new(clock.clone())),
        clock,
        audit: MemorySink::default(),
    }
}

fn target() -> Target {
    let roles = entra_roles::resolve_all(&["preset:coreview".to_owned()]).0;
    Target {
        name: "coreview".into(),
        user: UPN.into(),
        display_name: "CoreView management".into(),
        roles: Some(roles),
        secret: SECRET.into(),
        policy: PasswordPolicy::default(),
        expiry: Some(time::Duration::days(9)),
    }
}

fn opts() -> Options {
    Options {
        dry_run: false,
        prune_roles: false,
        actor: Actor::Daemon,
        reason: Some("onboarding".into()),
        ticket: Some("T-1".into()),
    }
}

fn tuning() -> keyturn::provision::Tuning {
    keyturn::provision::Tuning {
        attempts: 3,
        delay: Duration::from_millis(1),
        ..Default::default()
    }
}

impl World {
    fn provisioner(&self) -> Provisioner {
        self.provisioner_with(Arc::new(self.audit.clone()))
    }

    fn provisioner_with(&self, audit: Arc<dyn AuditSink>) -> Provisioner {
        Provisioner::new(
            audit,
            self.clock.clone(),
            self.vault.clone(),
            self.entra.clone(),
            tuning(),
        )
    }

    async fn run(&self, o: &Options) -> AccountOutcome {
        self.provisioner().provision(&target(), o).await
    }

    /// Provisioning's invariant: no user yet, or Entra's password is the latest `<secret>`,
    /// or the latest staging version while it is tagged pending.
    fn invariant_holds(&self) -> bool {
        if !self.entra.has_user(UPN) {
            return true;
        }
        self.vault
            .peek(SECRET)
            .is_some_and(|c| self.entra.password_is(UPN, &c.value))
            || self.vault.peek(STAGING).is_some_and(|s| {
                s.tag(tag::STATE) == Some(tag::PENDING) && self.entra.password_is(UPN, &s.value)
            })
    }

    /// The account converged: the user exists with the latest `<secret>` as its password,
    /// holds every declared role, and nothing is pending.
    fn converged(&self) -> bool {
        let mut wanted: Vec<String> = target().roles.unwrap().into_iter().map(|r| r.id).collect();
        wanted.sort();
        self.vault
            .peek(SECRET)
            .is_some_and(|c| self.entra.password_is(UPN, &c.value))
            && self.entra.roles_of(UPN) == wanted
            && self.staged_state().as_deref() != Some(tag::PENDING)
    }

    fn staged_state(&self) -> Option<String> {
        self.vault
            .peek(STAGING)
            .and_then(|s| s.tag(tag::STATE).map(String::from))
    }

    fn kinds(&self) -> Vec<String> {
        self.audit
            .events()
            .iter()
            .map(|e| e.event.as_str().to_owned())
            .collect()
    }

    fn assert_no_password_in_audit(&self, outcome: &AccountOutcome) {
        let text = format!(
            "{}{}",
            serde_json::to_string(&self.audit.events()).unwrap(),
            serde_json::to_string(outcome).unwrap()
        );
        for name in [SECRET, STAGING] {
            for v in self.vault.versions(name) {
                assert!(
                    !text.contains(v.value.expose()),
                    "a password is in the audit log or the output"
                );
            }
        }
    }
}

#[tokio::test]
async fn from_nothing_the_user_is_created_with_its_password_in_key_vault_and_every_role() {
    let w = world();
    let out = w.run(&opts()).await;
    assert_eq!(out.exit, 0, "{out:?}");
    assert_eq!(out.result, "changed");
    assert!(w.converged(), "{out:?}");
    assert_eq!(w.staged_state().as_deref(), Some(tag::COMMITTED));
    let current = w.vault.peek(SECRET).unwrap();
    assert_eq!(current.tag(tag::TRIGGER), Some("provision"));
    assert!(
        current.expires.is_some(),
        "exp is set as a rotation sets it"
    );
    // The write-ahead rule: staged before the create, committed after.
    let kinds = w.kinds();
    let at = |k: &str| kinds.iter().position(|x| x == k).unwrap_or(usize::MAX);
    assert!(at("provision.started") < at("provision.staged"));
    assert!(at("provision.staged") < at("provision.user_created"));
    assert!(at("provision.user_created") < at("provision.committed"));
    assert!(at("provision.committed") < at("provision.role_assigned"));
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "provision.role_assigned")
            .count(),
        7
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("provision.completed")
    );
    let started = &w.audit.events()[0];
    assert_eq!(started.reason.as_deref(), Some("onboarding"));
    assert_eq!(started.ticket.as_deref(), Some("T-1"));
    assert_eq!(started.trigger, Some(Trigger::Provision));
    w.assert_no_password_in_audit(&out);
}

#[tokio::test]
async fn a_second_run_changes_nothing_and_says_so() {
    let w = world();
    assert_eq!(w.run(&opts()).await.exit, 0);
    let (writes, sets, tags, records) = (
        w.entra.writes(),
        w.vault.calls("set"),
        w.vault.calls("update_tags"),
        w.audit.events().len(),
    );
    let out = w.run(&opts()).await;
    assert_eq!(out.exit, 0, "{out:?}");
    assert_eq!(out.result, "unchanged");
    assert!(out.actions.is_empty(), "{out:?}");
    assert_eq!(w.entra.writes(), writes, "no Entra write");
    assert_eq!(w.vault.calls("set"), sets, "no Key Vault write");
    assert_eq!(w.vault.calls("update_tags"), tags);
    assert_eq!(w.audit.events().len(), records, "nothing to record");
}

#[tokio::test]
async fn a_dry_run_plans_and_changes_nothing() {
    let w = world();
    let out = w
        .run(&Options {
            dry_run: true,
            ..opts()
        })
        .await;
    assert_eq!(out.exit, 0, "{out:?}");
    assert_eq!(out.result, "planned");
    assert_eq!(out.actions[0].action, "create_user");
    assert_eq!(
        out.actions
            .iter()
            .filter(|a| a.action == "assign_role")
            .count(),
        7
    );
    assert!(out.actions.iter().all(|a| a.status == "planned"));
    assert!(!w.entra.has_user(UPN));
    assert_eq!(w.entra.writes(), 0);
    assert_eq!(w.vault.calls("set"), 0);
    assert!(w.audit.events().is_empty());
}

#[tokio::test]
async fn a_lost_create_answer_is_resolved_by_reading_the_user() {
    let w = world();
    w.entra.inject(
        Op::CreateUser,
        EntraFault::CommitThenFail(EntraError::Unknown {
            op: Op::CreateUser,
            status: Some(500),
            detail: "HTTP 500".into(),
            request_id: None,
        }),
    );
    let out = w.run(&opts()).await;
    assert_eq!(out.exit, 0, "{out:?}");
    assert!(w.converged());
    let created = w
        .audit
        .events()
        .into_iter()
        .find(|e| e.event.as_str() == "provision.user_created")
        .unwrap();
    assert!(
        created
            .detail
            .unwrap()
            .contains("after the create's answer was lost"),
        "the record says how the create was settled"
    );
}

#[tokio::test]
async fn an_unknown_create_outcome_is_left_pending_and_a_rerun_converges() {
    let w = world();
    for _ in 0..3 {
        w.entra.inject(
            Op::CreateUser,
            EntraFault::Fail(EntraError::Unknown {
                op: Op::CreateUser,
                status: Some(503),
                detail: "HTTP 503".into(),
                request_id: None,
            }),
        );
    }
    let out = w.run(&opts()).await;
    assert_eq!(out.exit, 75, "{out:?}");
    assert_eq!(out.result, "pending");
    assert_eq!(w.staged_state().as_deref(), Some(tag::PENDING));
    assert!(w.invariant_holds());
    let staged = w.vault.peek(STAGING).unwrap().value;
    // The rerun uses the staged password, never a new one.
    let out = w.run(&opts()).await;
    assert_eq!(out.exit, 0, "{out:?}");
    assert!(w.converged());
    assert!(w.entra.password_is(UPN, &staged));
    assert_eq!(
        w.vault.versions(STAGING).len(),
        1,
        "no second password staged"
    );
}

/// Dies (its record cannot be written) at the `n`th record: a crash just before the step
/// that record announces.
struct DiesAt {
    n: usize,
    seen: AtomicUsize,
    inner: MemorySink,
}

#[async_trait]
impl AuditSink for DiesAt {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 >= self.n {
            return Err(AuditError::Write {
                path: "/dev/full".into(),
                source: std::io::Error::other("disk full"),
            });
        }
        self.inner.record(event).await
    }
}

#[tokio::test]
async fn a_crash_between_any_two_steps_keeps_the_password_and_a_rerun_converges() {
    // Records: started, staged, user_created, committed, 7 × role_assigned, completed.
    for n in 1..=12 {
        let w = world();
        let out = w
            .provisioner_with(Arc::new(DiesAt {
                n,
                seen: AtomicUsize::new(0),
                inner: w.audit.clone(),
            }))
            .provision(&target(), &opts())
            .await;
        assert_ne!(out.exit, 0, "n={n}: the crash stops it");
        assert!(w.invariant_holds(), "n={n}: password lost by the crash");
        // A second crash on the rerun's first step changes nothing either.
        let rerun = w.run(&opts()).await;
        assert_eq!(rerun.exit, 0, "n={n}: {rerun:?}");
        assert!(w.converged(), "n={n}: not converged: {rerun:?}");
        assert!(w.invariant_holds(), "n={n}");
        w.assert_no_password_in_audit(&rerun);
        let again = w.run(&opts()).await;
        assert_eq!(again.result, "unchanged", "n={n}: {again:?}");
    }
}

#[tokio::test]
async fn a_refused_create_abandons_the_staged_password_and_names_the_permission() {
    let w = world();
    w.entra.inject(
        Op::CreateUser,
        EntraFault::Fail(EntraError::Refused {
            op: Op::CreateUser,
            status: 403,
            code: "Authorization_RequestDenied".into(),
            message: "Insufficient privileges to complete the operation.".into(),
            request_id: Some("r-1".into()),
        }),
    );
    let out = w.run(&opts()).await;
    assert_eq!(out.exit, 1, "{out:?}");
    let e = out.error.unwrap();
    assert!(e.contains("User.ReadWrite.All"), "{e}");
    assert!(e.contains("User Administrator"), "{e}");
    assert!(!w.entra.has_user(UPN));
    assert_eq!(w.staged_state().as_deref(), Some(tag::ABANDONED));
    assert!(w.vault.peek(SECRET).is_none(), "nothing committed");
    assert!(w.kinds().contains(&"provision.abandoned".to_owned()));
}

#[tokio::test]
async fn a_refused_role_assignment_names_the_permission_and_the_role() {
    let w = world();
    w.entra.inject(
        Op::AssignRole,
        EntraFault::Fail(EntraError::Refused {
            op: Op::AssignRole,
            status: 403,
            code: "Authorization_RequestDenied".into(),
            message: "Insufficient privileges to complete the operation.".into(),
            request_id: None,
        }),
    );
    let out = w.run(&opts()).await;
    assert_eq!(out.exit, 1, "{out:?}");
    let e = out.error.unwrap();
    assert!(e.contains("RoleManagement.ReadWrite.Directory"), "{e}");
    assert!(e.contains("Privileged Role Administrator"), "{e}");
    // The password was secured before the roles: the user is created and in Key Vault.
    assert!(w
        .vault
        .peek(SECRET)
        .is_some_and(|c| w.entra.password_is(UPN, &c.value)));
    assert!(w.kinds().contains(&"provision.failed".to_owned()));
    // Once the right is granted, a rerun assigns the rest without touching the password.
    let sets = w.vault.calls("set");
    let out = w.run(&opts()).await;
    assert_eq!(out.exit, 0, "{out:?}");
    assert!(w.converged());
    assert_eq!(w.vault.calls("set"), sets);
}

#[tokio::test]
async fn an_existing_user_is_not_created_and_extra_roles_are_removed_only_when_asked() {
    let w = world();
    let p = PasswordPolicy::default().generate().unwrap();
    w.entra.add_user(UPN, &p, datetime!(2026-01-01 00:00 UTC));
    w.vault.seed(SECRET, &p, Default::default());
    let helpdesk = entra_roles::resolve("Helpdesk Administrator").unwrap()[0]
        .id
        .clone();
    w.entra.grant(UPN, &helpdesk);
    let out = w.run(&opts()).await;
    assert_eq!(out.exit, 0, "{out:?}");
    assert!(!out.actions.iter().any(|a| a.action == "create_user"));
    assert_eq!(out.extra_roles, vec!["Helpdesk Administrator".to_owned()]);
    assert!(w.entra.password_is(UPN, &p), "the password is left alone");
    assert!(
        w.entra.roles_of(UPN).contains(&helpdesk),
        "kept without --prune-roles"
    );
    let out = w
        .run(&Options {
            prune_roles: true,
            ..opts()
        })
        .await;
    assert_eq!(out.exit, 0, "{out:?}");
    assert!(!w.entra.roles_of(UPN).contains(&helpdesk));
    assert!(w.kinds().contains(&"provision.role_removed".to_owned()));
    assert!(w.converged());
}

#[tokio::test]
async fn an_existing_user_without_a_secret_is_left_to_adopt() {
    let w = world();
    let p = PasswordPolicy::default().generate().unwrap();
    w.entra.add_user(UPN, &p, datetime!(2026-01-01 00:00 UTC));
    let out = w.run(&opts()).await;
    assert_eq!(out.exit, 0, "{out:?}");
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("keyturn adopt coreview")),
        "{out:?}"
    );
    assert!(w.entra.password_is(UPN, &p), "no password set");
    assert!(w.vault.peek(SECRET).is_none());
}

#[tokio::test]
async fn a_resumed_provisioning_does_not_take_a_user_that_was_there_before_its_stage() {
    let w = world();
    for _ in 0..3 {
        w.entra.inject(
            Op::CreateUser,
            EntraFault::Fail(EntraError::NotSent {
                op: Op::CreateUser,
                detail: "cannot connect".into(),
            }),
        );
    }
    assert_eq!(w.run(&opts()).await.exit, 75);
    // Meanwhile someone created the user by hand, with a password nobody told keyturn; its
    // creation time is before the staged password's.
    let theirs = PasswordPolicy::default().generate().unwrap();
    w.entra
        .add_user(UPN, &theirs, datetime!(2026-10-01 00:00 UTC));
    w.clock.advance(time::Duration::hours(1));
    let out = w.run(&opts()).await;
    assert_eq!(out.exit, 1, "{out:?}");
    assert!(out.error.unwrap().contains("keyturn adopt coreview"));
    assert!(
        w.vault.peek(SECRET).is_none(),
        "their user's password is not committed"
    );
    assert_eq!(w.staged_state().as_deref(), Some(tag::ABANDONED));
}

#[tokio::test]
async fn the_daemons_recovery_leaves_a_provisioning_in_flight_alone() {
    let w = world();
    for _ in 0..3 {
        w.entra.inject(
            Op::CreateUser,
            EntraFault::Fail(EntraError::NotSent {
                op: Op::CreateUser,
                detail: "cannot connect".into(),
            }),
        );
    }
    assert_eq!(w.run(&opts()).await.exit, 75);
    let staged = w.vault.peek(STAGING).unwrap();
    // The daemon's view of the account: its own directory (where the user does not exist
    // yet) and the same vault.
    let dir = Arc::new(MemoryDirectory::new(w.clock.clone()));
    let account = Account {
        name: "coreview".into(),
        user: UPN.into(),
        secret: SECRET.into(),
        policy: PasswordPolicy::default(),
        verify: false,
        expiry: Some(time::Duration::days(9)),
        store: w.vault.clone(),
        directory: dir.clone(),
    };
    let audit = MemorySink::default();
    let engine = Engine::new(Arc::new(audit.clone()), w.clock.clone(), Tuning::default());
    for request in [
        Request::daemon(Trigger::Recovery),
        Request::daemon(Trigger::Schedule),
    ] {
        let err = engine.rotate(&account, &request).await.unwrap_err();
        assert!(matches!(err, RotationError::Pending { .. }), "{err}");
        assert!(
            err.to_string().contains("keyturn provision coreview"),
            "{err}"
        );
    }
    assert_eq!(dir.resets(), 0, "no reset of a half-provisioned account");
    let after = w.vault.peek(STAGING).unwrap();
    assert_eq!(after.version, staged.version, "nothing staged over it");
    assert_eq!(after.tag(tag::STATE), Some(tag::PENDING), "not abandoned");
    assert_eq!(w.vault.versions(SECRET).len(), 0, "nothing committed");
    // `keyturn provision` completes it with the staged password.
    let out = w.run(&opts()).await;
    assert_eq!(out.exit, 0, "{out:?}");
    assert!(w.entra.password_is(UPN, &staged.value));
    assert!(w.converged());
}

#[tokio::test]
async fn the_daemon_finishes_a_provisioning_whose_password_is_committed() {
    let w = world();
    // The finish (tagging the staging version committed) fails: the password is committed,
    // the staging version still says pending.
    w.vault.inject(
        StoreOp::UpdateTags,
        Some(STAGING),
        StoreFault::Fail(StoreError::Unavailable {
            vault: "kv".into(),
            detail: "HTTP 503".into(),
            request_id: None,
        }),
    );
    let out = w.run(&opts()).await;
    assert_eq!(out.exit, 0, "{out:?}");
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("could not be tagged committed")),
        "{out:?}"
    );
    assert_eq!(w.staged_state().as_deref(), Some(tag::PENDING));
    let dir = Arc::new(MemoryDirectory::new(w.clock.clone()));
    let account = Account {
        name: "coreview".into(),
        user: UPN.into(),
        secret: SECRET.into(),
        policy: PasswordPolicy::default(),
        verify: false,
        expiry: None,
        store: w.vault.clone(),
        directory: dir.clone(),
    };
    let engine = Engine::new(
        Arc::new(MemorySink::default()),
        w.clock.clone(),
        Tuning::default(),
    );
    // The harmless part, done by the daemon: no Entra request, only the tag.
    let done = engine
        .recover(&account, &Request::daemon(Trigger::Recovery))
        .await
        .unwrap()
        .unwrap();
    assert!(done.finish_only);
    assert_eq!(dir.resets(), 0);
    assert_eq!(w.staged_state().as_deref(), Some(tag::COMMITTED));
    assert!(w.converged());
}
