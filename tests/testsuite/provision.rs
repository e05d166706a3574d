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

    /// Makes the next `n` user creations fail before they reach Entra (cannot connect).
    fn creates_not_sent(&self, n: usize) {
        for _ in 0..n {
            self.entra.inject(
                Op::CreateUser,
                EntraFault::Fail(EntraError::NotSent {
                    op: Op::CreateUser,
                    detail: "cannot connect".into(),
                }),
            );
        }
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
    w.creates_not_sent(3);
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
    w.creates_not_sent(3);
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

// ---- Against the emulator: `keyturn provision` as a process, over Graph and Key Vault ----

use crate::common::{write_config, Opts, BIN, READER, ROTATOR, SCENARIO, TENANT, VAULT};
use keyturn_emulator::{Emulator, InvariantQuery};

/// The app `keyturn provision` acts as: it may create users and assign roles, and write the
/// vault.
pub(crate) const PROVISIONER: &str = "55555555-5555-5555-5555-555555555555";
/// An app with the vault but without Graph's write permissions.
const NO_RIGHTS: &str = "66666666-6666-6666-6666-666666666666";
/// An app that may create users and read roles, but not assign them.
const NO_ROLES: &str = "77777777-7777-7777-7777-777777777777";
pub(crate) const NEW_UPN: &str = "svc-new@contoso.onmicrosoft.com";
pub(crate) const NEW_SECRET: &str = "svc-new";

/// [`SCENARIO`] plus the provisioning apps, each with write access to the vault.
pub(crate) fn scenario() -> String {
    let mut s = SCENARIO.replacen(
        "access = [\n",
        &format!("access = [\n  {{ client_id = {PROVISIONER:?}, role = \"Key Vault Secrets Officer\" }},\n  {{ client_id = {NO_RIGHTS:?}, role = \"Key Vault Secrets Officer\" }},\n  {{ client_id = {NO_ROLES:?}, role = \"Key Vault Secrets Officer\" }},\n"),
        1,
    );
    for (name, id, perms) in [
        (
            "provisioner",
            PROVISIONER,
            r#"["User.ReadWrite.All", "RoleManagement.ReadWrite.Directory"]"#,
        ),
        ("no-rights", NO_RIGHTS, r#"["User.Read.All"]"#),
        (
            "no-roles",
            NO_ROLES,
            r#"["User.ReadWrite.All", "RoleManagement.Read.Directory"]"#,
        ),
    ] {
        s.push_str(&format!("\n[[apps]]\ntenant = \"contoso\"\nname = {name:?}\nclient_id = {id:?}\nsecrets = [\"{name}-secret\"]\ngraph_permissions = {perms}\n"));
    }
    s
}

/// An emulator with [`scenario`] and a configuration whose account `svc-new` (not in Entra
/// yet) declares the CoreView roles and provisions as `provision_identity`.
pub(crate) async fn setup(provision_identity: &str) -> (Emulator, tempfile::TempDir, PathBuf) {
    let emu = keyturn_emulator::testkit::start_toml(&scenario()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), &Opts::default());
    let mut text = std::fs::read_to_string(&config).unwrap();
    for (name, id) in [
        ("provisioner", PROVISIONER),
        ("no-rights", NO_RIGHTS),
        ("no-roles", NO_ROLES),
    ] {
        text.push_str(&format!(
            "\n[identities.{name}]\nkind = \"client_secret\"\ntenant_id = \"contoso\"\nclient_id = {id:?}\nclient_secret = \"{name}-secret\"\nallow_inline_secret = true\nauthority_host = {:?}\ngraph_base = {:?}\n",
            emu.authority_host(),
            emu.graph_base()
        ));
    }
    text.push_str(&format!(
        "\n[[accounts]]\nname = \"svc-new\"\nuser = {NEW_UPN:?}\nidentity = \"rotator\"\nvault = {:?}\nsecret = {NEW_SECRET:?}\ndisplay_name = \"CoreView management\"\nroles = [\"preset:coreview\"]\nprovision_identity = {provision_identity:?}\n",
        emu.vault_url(VAULT)
    ));
    std::fs::write(&config, text).unwrap();
    (emu, dir, config)
}

/// Makes Graph's next `count` user creations in `emu` meet `kind` with HTTP `status`.
fn fail_creates(emu: &Emulator, kind: keyturn_emulator::FaultKind, status: u16, count: u32) {
    emu.control()
        .add_fault(keyturn_emulator::FaultRule {
            route: "graph.create".into(),
            kind,
            status: Some(status),
            count: Some(count),
            ..Default::default()
        })
        .unwrap();
}

/// `keyturn provision ARGS --config CONFIG` as a process: (exit code, stdout, stderr).
pub(crate) async fn provision(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .arg("provision")
        .args(args)
        .arg("--config")
        .arg(config)
        .env("KEYTURN_ALLOW_ROOT", "1")
        .env("KEYTURN_LOG", "info")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn new_invariant(emu: &Emulator) -> keyturn_emulator::InvariantReport {
    emu.control()
        .invariant(&InvariantQuery {
            tenant: TENANT.into(),
            user: NEW_UPN.into(),
            vault: VAULT.into(),
            secret: NEW_SECRET.into(),
            staging_secret: None,
        })
        .unwrap()
}

/// Writes that reached the emulator: creates, password changes, deletions, role
/// assignments made or removed, secrets set or retagged.
pub(crate) fn writes(emu: &Emulator) -> u64 {
    let c = emu.control().counters();
    let req = |r: &str| c.requests.get(r).copied().unwrap_or(0);
    let resp = |r: &str| c.responses.get(r).copied().unwrap_or(0);
    req("graph.create")
        + req("graph.patch")
        + req("graph.delete")
        + req("kv.set")
        + req("kv.update")
        + resp("graph.roles 201")
        + resp("graph.roles 204")
}

/// The latest `<secret>` of `svc-new` as a consumer reads it, and whether Entra's password
/// grant takes it (the verify sign-in's app).
pub(crate) async fn key_vault_password_signs_in(emu: &Emulator, config: &Path) -> bool {
    let loaded = crate::common::load(config);
    let value = crate::common::vault_client_as(
        emu,
        &loaded,
        READER,
        "reader-secret",
        keyturn::observe::unobserved(),
    )
    .get_secret(NEW_SECRET, None)
    .await
    .unwrap()
    .into_model()
    .unwrap();
    let password = value.value.unwrap();
    let http = keyturn_emulator::testkit::http(emu);
    let (status, body) = keyturn_emulator::testkit::token_request(
        &http,
        emu,
        TENANT,
        &[
            ("grant_type", "password"),
            ("client_id", ROTATOR),
            ("client_secret", "rotator-secret"),
            ("username", NEW_UPN),
            ("password", password.as_str()),
            ("scope", "openid User.Read"),
        ],
    )
    .await;
    status == 200 || panic!("the password grant refused the Key Vault password: {body}")
}

/// Every value of `svc-new`'s secret and staging secret.
pub(crate) async fn new_passwords(emu: &Emulator, config: &Path) -> Vec<String> {
    let loaded = crate::common::load(config);
    let client = crate::common::vault_client_as(
        emu,
        &loaded,
        crate::common::ROTATOR,
        "rotator-secret",
        keyturn::observe::unobserved(),
    );
    crate::common::all_values(&client, &[NEW_SECRET]).await
}

use std::path::{Path, PathBuf};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_from_nothing_against_the_emulator_then_a_no_op() {
    let (emu, dir, config) = setup("provisioner").await;
    let (code, stdout, stderr) = provision(
        &config,
        &[
            "svc-new",
            "--reason",
            "onboarding",
            "--ticket",
            "OPS-7",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let acct = &out["accounts"][0];
    assert_eq!(acct["result"], "changed", "{out:#}");
    // Doctor's checks of the account ran and none fails.
    let checks = acct["doctor"]["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["check"] == "user_roles"), "{out:#}");
    assert!(checks.iter().all(|c| c["status"] != "fail"), "{out:#}");
    // The user: enabled, no forced change, every declared role; the password in Key Vault.
    let user = emu.control().user(TENANT, NEW_UPN).unwrap();
    assert_eq!(user.flags.disabled, Some(false));
    assert_eq!(user.flags.force_change_password_next_sign_in, Some(false));
    let mut roles = user.directory_roles.clone();
    roles.sort();
    assert_eq!(
        roles,
        [
            "Authentication Administrator",
            "Exchange Administrator",
            "Global Reader",
            "Reports Reader",
            "SharePoint Administrator",
            "Teams Administrator",
            "User Administrator",
        ]
    );
    assert!(new_invariant(&emu).latest_matches);
    assert!(key_vault_password_signs_in(&emu, &config).await);
    let records = crate::common::audit_records(dir.path());
    let started = records
        .iter()
        .find(|r| r["event"] == "provision.started")
        .unwrap();
    assert_eq!(started["reason"], "onboarding");
    assert_eq!(started["ticket"], "OPS-7");
    assert_eq!(started["actor"]["kind"], "user");

    // A second run: nothing written, and it says so.
    let before = writes(&emu);
    let (code, stdout, stderr) = provision(&config, &["svc-new", "--reason", "again"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("nothing to change"), "{stdout}");
    assert_eq!(writes(&emu), before, "a second run writes nothing");

    // No password in anything keyturn printed or recorded.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    for p in new_passwords(&emu, &config).await {
        assert!(!stdout.contains(&p) && !stderr.contains(&p) && !audit.contains(&p));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_nothing_in_the_emulator() {
    let (emu, dir, config) = setup("provisioner").await;
    let before = writes(&emu);
    let (code, stdout, stderr) =
        provision(&config, &["svc-new", "--reason", "look", "--dry-run"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("nothing was changed"), "{stdout}");
    assert!(stdout.contains("create_user"), "{stdout}");
    assert!(stdout.contains("Global Reader"), "{stdout}");
    assert_eq!(writes(&emu), before);
    assert!(emu.control().user(TENANT, NEW_UPN).is_err(), "no user");
    assert!(crate::common::audit_records(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_answer_is_settled_and_an_unknown_one_converges_on_a_rerun() {
    // The create is applied, then its answer is lost: reading the user by UPN settles it.
    let (emu, dir, config) = setup("provisioner").await;
    fail_creates(&emu, keyturn_emulator::FaultKind::CommitThenFail, 500, 1);
    let (code, stdout, stderr) = provision(&config, &["svc-new", "--reason", "r"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(new_invariant(&emu).latest_matches);
    assert!(key_vault_password_signs_in(&emu, &config).await);
    assert!(crate::common::audit_records(dir.path())
        .iter()
        .any(|r| r["event"] == "provision.user_created"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("answer was lost"))));

    // Graph answers nothing definite to any create: the password stays pending (75), and
    // a rerun completes it with the same password.
    let (emu, _dir, config) = setup("provisioner").await;
    fail_creates(&emu, keyturn_emulator::FaultKind::Status, 503, 4);
    let (code, stdout, stderr) = provision(&config, &["svc-new", "--reason", "r"]).await;
    assert_eq!(code, 75, "{stdout}\n{stderr}");
    assert!(stdout.contains("rerun"), "{stdout}");
    assert_eq!(
        staging_state(&emu, &config).await.as_deref(),
        Some("pending")
    );
    let staged = new_passwords(&emu, &config).await;
    emu.control().clear_faults();
    let (code, stdout, stderr) = provision(&config, &["svc-new", "--reason", "r"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let inv = new_invariant(&emu);
    assert!(
        inv.latest_matches && inv.pending_tag.as_deref() == Some("committed"),
        "{inv:?}"
    );
    assert!(key_vault_password_signs_in(&emu, &config).await);
    assert_eq!(staged.len(), 1, "one password staged");
    assert!(
        emu.control()
            .check_password(TENANT, NEW_UPN, &staged[0])
            .unwrap(),
        "the rerun created the user with the staged password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_without_the_rights_name_the_missing_permission() {
    let (emu, _dir, config) = setup("no-rights").await;
    let (code, stdout, stderr) = provision(&config, &["svc-new", "--reason", "r"]).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("User.ReadWrite.All"), "{stdout}");
    assert!(emu.control().user(TENANT, NEW_UPN).is_err());
    assert_eq!(
        staging_state(&emu, &config).await.as_deref(),
        Some("abandoned")
    );

    let (emu, _dir, config) = setup("no-roles").await;
    let (code, stdout, stderr) = provision(&config, &["svc-new", "--reason", "r"]).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("RoleManagement.ReadWrite.Directory"),
        "{stdout}"
    );
    // The user was created and its password secured before the roles were refused.
    assert!(new_invariant(&emu).latest_matches);
}

/// The `keyturn-state` tag of `svc-new`'s latest staging version.
pub(crate) async fn staging_state(emu: &Emulator, config: &Path) -> Option<String> {
    let loaded = crate::common::load(config);
    let client = crate::common::vault_client_as(
        emu,
        &loaded,
        ROTATOR,
        "rotator-secret",
        keyturn::observe::unobserved(),
    );
    let s = client
        .get_secret(&format!("{NEW_SECRET}-pending"), None)
        .await
        .ok()?
        .into_model()
        .ok()?;
    s.tags.and_then(|t| t.get("keyturn-state").cloned())
}

/// A daemon runs on the configuration while an operator provisions the account from another
/// machine (its own lock and audit log, the same tenant and vault). Asked to reconcile the
/// account while the create is in flight, the daemon leaves the staged password alone
/// (neither re-applies nor abandons it), and the provisioning completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_daemon_leaves_a_provisioning_in_flight_alone() {
    let (emu, dir, config) = setup("provisioner").await;
    let daemon = crate::common::Daemon::start(&config, dir.path(), "run");
    daemon.ready().await;
    // The operator's copy: its own state folder, audit log and socket.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("/state\"", "/state-operator\"")
        .replace("/audit.jsonl\"", "/audit-operator.jsonl\"")
        .replace("/admin.sock\"", "/admin-operator.sock\"");
    let operator = dir.path().join("operator.toml");
    std::fs::write(&operator, text).unwrap();
    emu.control()
        .add_fault(keyturn_emulator::FaultRule {
            route: "graph.create".into(),
            kind: keyturn_emulator::FaultKind::Latency,
            latency_ms: Some(4000),
            ..Default::default()
        })
        .unwrap();
    let op = operator.clone();
    let running =
        tokio::spawn(async move { provision(&op, &["svc-new", "--reason", "onboarding"]).await });
    let staged = || {
        std::fs::read_to_string(dir.path().join("audit-operator.jsonl"))
            .unwrap_or_default()
            .contains("provision.staged")
    };
    assert!(crate::common::wait_for(Duration::from_secs(20), staged).await);
    let reconcile = tokio::process::Command::new(BIN)
        .args(["reconcile", "svc-new", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    let deferred = || {
        crate::common::audit_records(dir.path()).iter().any(|r| {
            r["account"] == "svc-new"
                && r["event"] == "rotation.left_pending"
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("keyturn provision svc-new"))
        })
    };
    assert!(
        crate::common::wait_for(Duration::from_secs(10), deferred).await,
        "the daemon left it to keyturn provision: {}\n{}",
        String::from_utf8_lossy(&reconcile.stdout),
        daemon.stderr()
    );
    let (code, stdout, stderr) = running.await.unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let records = crate::common::audit_records(dir.path());
    let of = |event: &str| {
        records
            .iter()
            .filter(|r| r["account"] == "svc-new" && r["event"] == event)
            .count()
    };
    assert_eq!(of("rotation.resumed"), 0, "the daemon never re-applied it");
    assert_eq!(of("rotation.abandoned"), 0, "nor abandoned it");
    assert!(new_invariant(&emu).holds);
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(daemon.wait().await.success());
    // Whatever the daemon did since (a retry may rotate the now provisioned account), the
    // password in Key Vault is Entra's.
    assert!(new_invariant(&emu).latest_matches);
    assert!(key_vault_password_signs_in(&emu, &config).await);
}

#[tokio::test]
async fn a_completed_provisioning_keeps_the_interrupted_runs_id_in_every_record() {
    let w = world();
    w.creates_not_sent(3);
    assert_eq!(w.run(&opts()).await.exit, 75);
    let first = w.audit.events().len();
    let staged_id = w
        .vault
        .peek(STAGING)
        .unwrap()
        .tag(tag::ROTATION_ID)
        .unwrap()
        .to_owned();
    assert_eq!(w.run(&opts()).await.exit, 0);
    let rerun = &w.audit.events()[first..];
    assert!(rerun
        .iter()
        .all(|e| e.rotation_id.map(|i| i.to_string()) == Some(staged_id.clone())));
    assert_eq!(
        w.vault.peek(SECRET).unwrap().tag(tag::ROTATION_ID),
        Some(staged_id.as_str())
    );
}
