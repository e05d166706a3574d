//! `keyturn provision`: makes Entra match an account's declaration (`docs/lifecycle.md`):
//! a missing user is created with the rotation protocol's write-ahead rule, missing
//! directory roles are assigned, extra ones reported (removed with `--prune-roles`).
//!
//! The creation, step by step (each announced in the audit log before it proceeds):
//!
//! 1. **Stage**: a new password P (the account's policy) into `<secret>-pending`, tagged
//!    `pending` with trigger `provision`, before anything happens in Entra.
//! 2. **Create**: `POST /users` with P. A lost answer is resolved by reading the user by UPN;
//!    a definite refusal with no such user afterwards proves Entra never took P (the staging
//!    version is tagged `abandoned`); an outcome still unknown leaves P pending (exit 75).
//! 3. **Commit**: P as the new version of `<secret>`; 4. **Finish**: the staging version
//!    tagged `committed`.
//!
//! A rerun finds a `pending` staging version with trigger `provision` and completes it with
//! the same P, never a new one: the user exists (created after P was staged: commit), does
//! not (create it with P) or was there before P was staged (P was never Entra's: abandon and
//! leave the user to `keyturn adopt`). The daemon's recovery leaves such a version to
//! `keyturn provision` (`protocol::recover`), so a running daemon never re-applies,
//! abandons or rotates past a half-provisioned account.
//!
//! `entra`: the Graph operations as a trait; `memory`: an in-memory double for tests.

pub mod entra;
pub mod memory;

use crate::audit::{
    Actor, AuditError, AuditEvent, AuditSink, ErrorInfo, EventKind, Outcome, Trigger,
};
use crate::clock::Clock;
use crate::entra_roles::Role;
use crate::password::{Password, PasswordPolicy};
use crate::store::{
    staging_name, tag, NewVersion, SecretRecord, SecretStore, Step, StoreError, Tags,
};
use entra::{Entra, EntraError, EntraUser, NewUser, Op};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

/// Exit code when a create's outcome stays unknown (`EX_TEMPFAIL`): rerun to complete it.
pub const EXIT_PENDING: i32 = 75;
/// Exit code when Azure could not be reached or no token was had (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: i32 = 69;
/// Exit code for a declaration that cannot be provisioned as written (`EX_USAGE`, as a bad
/// configuration; `config::EXIT_CONFIG`, which this layer does not import).
pub const EXIT_USAGE: i32 = 64;

/// What an account declares, as provisioning needs it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The configured name.
    pub name: String,
    /// The user: its UPN (an object id cannot be created).
    pub user: String,
    /// `displayName` for a created user.
    pub display_name: String,
    /// The roles it should hold; `None`: leave roles alone.
    pub roles: Option<Vec<Role>>,
    /// `<secret>`.
    pub secret: String,
    /// The password policy.
    pub policy: PasswordPolicy,
    /// `<secret>`'s `exp` after the commit (period + grace), as a rotation sets it.
    pub expiry: Option<time::Duration>,
}

/// How one run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Print the plan, change nothing (no write, no audit record).
    pub dry_run: bool,
    /// Remove directory roles the declaration does not list.
    pub prune_roles: bool,
    /// Who asked.
    pub actor: Actor,
    /// Why.
    pub reason: Option<String>,
    /// The ticket.
    pub ticket: Option<String>,
}

/// Retries and tolerances.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Attempts of one request whose outcome is unknown.
    pub attempts: u32,
    /// Delay between attempts (doubled each time).
    pub delay: Duration,
    /// Clock skew allowed between Key Vault's and Entra's clocks when telling a user created
    /// after the password was staged from one that was there before.
    pub clock_skew: time::Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            attempts: 4,
            delay: Duration::from_secs(2),
            clock_skew: time::Duration::minutes(5),
        }
    }
}

/// One thing provisioning did, or (dry run) would do.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Action {
    /// `create_user`, `complete_create`, `finish`, `assign_role`, `remove_role`.
    pub action: &'static str,
    /// What it is about: the UPN, a role's name.
    pub target: String,
    /// `planned` (dry run), `done`, or `failed`.
    pub status: &'static str,
}

/// What provisioning did to one account.
#[derive(Debug, Clone, Serialize)]
pub struct AccountOutcome {
    /// The account's name.
    pub account: String,
    /// The user.
    pub user: String,
    /// `unchanged` (Entra already matched), `changed`, `planned` (dry run, something to do),
    /// `pending` (rerun to complete), `failed`.
    pub result: &'static str,
    /// What was (or would be) done.
    pub actions: Vec<Action>,
    /// Roles the user holds that the declaration does not list (removed with
    /// `--prune-roles`).
    pub extra_roles: Vec<String>,
    /// Things to know that are not failures (e.g. an existing user whose password is not in
    /// Key Vault: `keyturn adopt`).
    pub notes: Vec<String>,
    /// What failed, and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The exit code this account calls for (0, 1, 64, 69, 75).
    #[serde(skip)]
    pub exit: i32,
}

/// Why provisioning of an account stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("account {account}: {message}")]
    Usage { account: String, message: String },
    #[error("account {account}: could not read Key Vault: {source}; nothing was changed")]
    Read {
        account: String,
        #[source]
        source: StoreError,
    },
    #[error("account {account}: could not stage the new password in Key Vault: {source}; nothing was changed")]
    Stage {
        account: String,
        #[source]
        source: StoreError,
    },
    #[error("account {account}: {source}")]
    Graph {
        account: String,
        #[source]
        source: EntraError,
    },
    #[error("account {account}: {message}")]
    Abandoned { account: String, message: String },
    #[error("account {account}: {message}; the password stays in the staging secret, tagged pending: rerun `keyturn provision {account}` to complete it")]
    Pending { account: String, message: String },
    #[error("account {account}: {source}")]
    Audit {
        account: String,
        #[source]
        source: AuditError,
    },
}

impl ProvisionError {
    /// The exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            ProvisionError::Usage { .. } => EXIT_USAGE,
            ProvisionError::Pending { .. } => EXIT_PENDING,
            ProvisionError::Read { source, .. } | ProvisionError::Stage { source, .. } => {
                match source.next_step() {
                    crate::store::NextStep::RetryLater | crate::store::NextStep::FixCredentials => {
                        EXIT_UNAVAILABLE
                    }
                    crate::store::NextStep::Alert => 1,
                }
            }
            ProvisionError::Graph { source, .. } => match source {
                EntraError::Refused { .. } => 1,
                EntraError::Unknown { .. } | EntraError::NotSent { .. } => EXIT_UNAVAILABLE,
            },
            ProvisionError::Abandoned { .. } | ProvisionError::Audit { .. } => 1,
        }
    }
}

/// What the reads found about the user.
enum UserPlan {
    /// A provisioning left pending by an earlier run: complete it with its password.
    Resume(SecretRecord),
    /// Only the finish tag is missing: `<secret>` holds the staged password already.
    FinishOnly(SecretRecord),
    /// No such user: create it.
    Create,
    /// The user exists.
    Exists(EntraUser),
}

/// Runs provisioning for accounts, over one vault's store and one tenant's Graph.
pub struct Provisioner {
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
    store: Arc<dyn SecretStore>,
    entra: Arc<dyn Entra>,
    tuning: Tuning,
}

/// One account's run: its target, options, rotation id and what it did so far.
struct Run<'a> {
    t: &'a Target,
    o: &'a Options,
    id: Uuid,
    out: AccountOutcome,
}

impl Provisioner {
    /// A provisioner writing audit records to `audit`, Key Vault through `store` and Entra
    /// through `entra` (the provisioning identity's).
    pub fn new(
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
        store: Arc<dyn SecretStore>,
        entra: Arc<dyn Entra>,
        tuning: Tuning,
    ) -> Self {
        Provisioner {
            audit,
            clock,
            store,
            entra,
            tuning,
        }
    }

    /// Makes Entra match `t` (or, with `dry_run`, says what that would take).
    pub async fn provision(&self, t: &Target, o: &Options) -> AccountOutcome {
        let mut run = Run {
            t,
            o,
            id: Uuid::new_v4(),
            out: AccountOutcome {
                account: t.name.clone(),
                user: t.user.clone(),
                result: "unchanged",
                actions: Vec::new(),
                extra_roles: Vec::new(),
                notes: Vec::new(),
                error: None,
                exit: 0,
            },
        };
        let result = self.provision_in(&mut run).await;
        let mut out = run.out;
        match result {
            Ok(()) => {
                if o.dry_run {
                    if !out.actions.is_empty() {
                        out.result = "planned";
                    }
                } else if out.actions.iter().any(|a| a.status == "done") {
                    out.result = "changed";
                }
            }
            Err(e) => {
                out.exit = e.exit_code();
                out.result = if out.exit == EXIT_PENDING {
                    "pending"
                } else {
                    "failed"
                };
                out.error = Some(e.to_string());
            }
        }
        out
    }

    async fn provision_in(&self, run: &mut Run<'_>) -> Result<(), ProvisionError> {
        let t = run.t;
        let plan = self.plan_user(t).await?;
        let mut started = false;
        let user = match plan {
            UserPlan::Exists(u) => Some(u),
            UserPlan::Create => {
                if uuid::Uuid::parse_str(t.user.trim()).is_ok() {
                    return Err(ProvisionError::Usage {
                        account: t.name.clone(),
                        message: format!("no user {:?} in Entra, and an object id cannot be created: set the account's `user` to the user principal name to create (e.g. svc-coreview@contoso.onmicrosoft.com)", t.user),
                    });
                }
                if !t.user.contains('@') {
                    return Err(ProvisionError::Usage {
                        account: t.name.clone(),
                        message: format!("no user {:?} in Entra; to create it, `user` must be a user principal name (name@domain)", t.user),
                    });
                }
                self.act(run, "create_user", t.user.clone());
                if run.o.dry_run {
                    None
                } else {
                    started = true;
                    self.start(run, "the user does not exist: creating it")
                        .await?;
                    Some(self.create(run, None).await?)
                }
            }
            UserPlan::Resume(staged) => {
                self.act(run, "complete_create", t.user.clone());
                // Every record of the completion carries the interrupted run's id.
                if let Some(id) = staged
                    .tag(tag::ROTATION_ID)
                    .and_then(|i| Uuid::parse_str(i).ok())
                {
                    run.id = id;
                }
                if run.o.dry_run {
                    None
                } else {
                    started = true;
                    self.start(
                        run,
                        "an earlier provisioning left the password pending: completing it",
                    )
                    .await?;
                    Some(self.create(run, Some(staged)).await?)
                }
            }
            UserPlan::FinishOnly(staged) => {
                self.act(run, "finish", staging_name(&t.secret));
                // Every record of the completion carries the interrupted run's id.
                if let Some(id) = staged
                    .tag(tag::ROTATION_ID)
                    .and_then(|i| Uuid::parse_str(i).ok())
                {
                    run.id = id;
                }
                if !run.o.dry_run {
                    started = true;
                    self.start(
                        run,
                        "the password is committed; marking the staging version committed",
                    )
                    .await?;
                    self.finish(run, &staged.version).await?;
                }
                self.entra
                    .find_user(&t.user)
                    .await
                    .map_err(|e| self.graph(t, e))?
            }
        };
        if let Some(user) = &user {
            if !started {
                match self.store.latest(&t.secret).await {
                    Ok(Some(_)) => {}
                    Ok(None) => run.out.notes.push(format!(
                        "the user exists but its password is not in Key Vault ({:?} does not exist): keyturn does not know it; take it over with `keyturn adopt {}` (docs/lifecycle.md)",
                        t.secret, t.name
                    )),
                    Err(source) => {
                        return Err(ProvisionError::Read {
                            account: t.name.clone(),
                            source,
                        })
                    }
                }
            }
            self.roles(run, Some(user), &mut started).await?;
        } else if run.o.dry_run {
            // A user to create holds no role yet: every declared one is to be assigned.
            self.roles(run, None, &mut started).await?;
        }
        if started {
            let changed: Vec<String> = run
                .out
                .actions
                .iter()
                .filter(|a| a.status == "done")
                .map(|a| format!("{} {}", a.action, a.target))
                .collect();
            let mut ev = self.event(run, EventKind::ProvisionCompleted);
            ev.outcome = Some(Outcome::Success);
            ev.reason = run.o.reason.clone();
            ev.ticket = run.o.ticket.clone();
            ev.detail = Some(if changed.is_empty() {
                "Entra matches the declaration; nothing was changed".into()
            } else {
                format!("Entra matches the declaration: {}", changed.join(", "))
            });
            self.record(run, ev).await?;
        }
        Ok(())
    }

    /// Reads the staging secret and the user: what must happen to the user.
    async fn plan_user(&self, t: &Target) -> Result<UserPlan, ProvisionError> {
        let read = |source| ProvisionError::Read {
            account: t.name.clone(),
            source,
        };
        let staged = self
            .store
            .latest(&staging_name(&t.secret))
            .await
            .map_err(read)?;
        if let Some(staged) = staged.filter(|s| s.tag(tag::STATE) == Some(tag::PENDING)) {
            if staged.tag(tag::TRIGGER) != Some(Trigger::Provision.as_str()) {
                return Err(ProvisionError::Pending {
                    account: t.name.clone(),
                    message: format!(
                        "a rotation (trigger {}) is pending in {:?}: the daemon's recovery completes it (`keyturn reconcile {}`); provisioning waits for it",
                        staged.tag(tag::TRIGGER).unwrap_or("unknown"),
                        staging_name(&t.secret),
                        t.name
                    ),
                });
            }
            let current = self.store.latest(&t.secret).await.map_err(read)?;
            if current.is_some_and(|c| {
                c.tag(tag::ROTATION_ID) == staged.tag(tag::ROTATION_ID) && c.value == staged.value
            }) {
                return Ok(UserPlan::FinishOnly(staged));
            }
            return Ok(UserPlan::Resume(staged));
        }
        match self.entra.find_user(&t.user).await {
            Ok(Some(u)) => Ok(UserPlan::Exists(u)),
            Ok(None) => Ok(UserPlan::Create),
            Err(e) => Err(self.graph(t, e)),
        }
    }

    /// Creates the user with the write-ahead rule: `staged` is a pending provisioning's
    /// staging version (its password is used again), `None` to stage a new password first.
    async fn create(
        &self,
        run: &mut Run<'_>,
        staged: Option<SecretRecord>,
    ) -> Result<EntraUser, ProvisionError> {
        let t = run.t;
        let (password, version, staged_at, fresh) = match staged {
            Some(s) => {
                if let Some(id) = s
                    .tag(tag::ROTATION_ID)
                    .and_then(|i| Uuid::parse_str(i).ok())
                {
                    run.id = id;
                }
                let mut ev = self.event(run, EventKind::ProvisionResumed);
                ev.secret = Some(staging_name(&t.secret));
                ev.version = Some(s.version.clone());
                self.record(run, ev).await?;
                (s.value, s.version, s.created, false)
            }
            None => {
                let password = t.policy.generate().map_err(|e| ProvisionError::Usage {
                    account: t.name.clone(),
                    message: format!("the password policy cannot be used: {e}"),
                })?;
                let staged_at = self.clock.now();
                let written = match self
                    .store
                    .set(
                        &staging_name(&t.secret),
                        NewVersion {
                            value: &password,
                            tags: self.tags(run, Some(tag::PENDING)),
                            expires: None,
                            step: Step::Stage,
                        },
                    )
                    .await
                {
                    Ok(w) => w,
                    Err(source) => {
                        let e = ProvisionError::Stage {
                            account: t.name.clone(),
                            source,
                        };
                        self.failed(run, &e, None).await?;
                        return Err(e);
                    }
                };
                let mut ev = self.event(run, EventKind::ProvisionStaged);
                ev.secret = Some(staging_name(&t.secret));
                ev.version = Some(written.version.clone());
                ev.request_id = written.request_id.clone();
                self.record(run, ev).await?;
                (password, written.version, Some(staged_at), true)
            }
        };
        let user = self
            .create_user(run, &password, &version, staged_at, fresh)
            .await?;
        self.commit(run, &password, &version).await?;
        Ok(user)
    }

    /// `POST /users` with the staged password until Graph's answer, or a read of the user
    /// by UPN, settles whether Entra holds it.
    async fn create_user(
        &self,
        run: &mut Run<'_>,
        password: &Password,
        version: &str,
        staged_at: Option<OffsetDateTime>,
        fresh: bool,
    ) -> Result<EntraUser, ProvisionError> {
        let t = run.t;
        let nickname = mail_nickname(&t.user);
        let new = NewUser {
            user_principal_name: &t.user,
            display_name: &t.display_name,
            mail_nickname: &nickname,
            password,
        };
        // On a rerun, a user that exists may be this provisioning's (its create landed, the
        // answer was lost) or someone else's that was there before the password was staged.
        if !fresh {
            match self.entra.find_user(&t.user).await {
                Ok(Some(u)) => {
                    let ours = self.after_stage(&u, staged_at);
                    return self.settle_existing(run, u, version, ours).await;
                }
                Ok(None) => {}
                Err(e) => {
                    let e = self.graph(t, e);
                    return self.left_pending(run, e).await;
                }
            }
        }
        let mut delay = self.tuning.delay;
        let mut last: Option<EntraError> = None;
        let mut maybe_sent = false;
        for attempt in 1..=self.tuning.attempts.max(1) {
            match self.entra.create_user(&new).await {
                Ok(u) => {
                    self.created(run, &u, "created").await?;
                    return Ok(u);
                }
                Err(e) => {
                    tracing::warn!(account = %t.name, attempt, error = %e, "user create did not complete");
                    let definite = matches!(e, EntraError::Refused { .. });
                    if !matches!(e, EntraError::NotSent { .. }) {
                        maybe_sent |= !definite;
                    }
                    // Whatever the answer, whether the user now exists settles it.
                    match self.entra.find_user(&t.user).await {
                        Ok(Some(u)) => {
                            // The user did not exist before this run's first create: it
                            // is this run's when a create may have landed, or an earlier
                            // run's when it was created after the password was staged.
                            let ours = maybe_sent || (!fresh && self.after_stage(&u, staged_at));
                            return self.settle_existing(run, u, version, ours).await;
                        }
                        Ok(None) if definite && !maybe_sent => {
                            // Every attempt was refused and no such user exists: Entra
                            // never took the password.
                            return self.abandon(run, version, e).await;
                        }
                        Ok(None) => {}
                        Err(read) => {
                            tracing::warn!(account = %t.name, error = %read, "the user could not be read after a create");
                        }
                    }
                    last = Some(e);
                }
            }
            if attempt < self.tuning.attempts {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
        }
        let e = match last {
            Some(source) => self.graph(t, source),
            None => ProvisionError::Pending {
                account: t.name.clone(),
                message: "no create was attempted".into(),
            },
        };
        self.left_pending(run, e).await
    }

    /// Whether the user was created after the password was staged (allowing for the skew
    /// between Key Vault's and Entra's clocks); `false` when either time is unknown.
    fn after_stage(&self, u: &EntraUser, staged_at: Option<OffsetDateTime>) -> bool {
        match (u.created, staged_at) {
            (Some(created), Some(staged)) => created + self.tuning.clock_skew >= staged,
            _ => false,
        }
    }

    /// The user exists after (or instead of) a create: `ours` when this provisioning's
    /// create made it (it then holds the staged password), else someone else's.
    async fn settle_existing(
        &self,
        run: &mut Run<'_>,
        u: EntraUser,
        version: &str,
        ours: bool,
    ) -> Result<EntraUser, ProvisionError> {
        if ours {
            self.created(
                run,
                &u,
                "found by its UPN after the create's answer was lost",
            )
            .await?;
            return Ok(u);
        }
        let t = run.t;
        // The user was there before the password was staged: the create could not have
        // made it, so Entra never took the staged password.
        let e = EntraError::Refused {
            op: Op::CreateUser,
            status: 400,
            code: "UserExists".into(),
            message: format!(
                "{} exists and was created before this provisioning staged its password; its password is not keyturn's: take it over with `keyturn adopt {}`",
                t.user, t.name
            ),
            request_id: None,
        };
        self.abandon(run, version, e).await
    }

    async fn created(
        &self,
        run: &mut Run<'_>,
        u: &EntraUser,
        how: &str,
    ) -> Result<(), ProvisionError> {
        let mut ev = self.event(run, EventKind::ProvisionUserCreated);
        ev.outcome = Some(Outcome::Success);
        ev.detail = Some(format!("user {} ({}) {how}", u.user_principal_name, u.id));
        self.record(run, ev).await?;
        self.done(run, "create_user");
        Ok(())
    }

    /// Commit and finish: the password Entra now holds becomes `<secret>`'s latest version.
    async fn commit(
        &self,
        run: &mut Run<'_>,
        password: &Password,
        staged_version: &str,
    ) -> Result<(), ProvisionError> {
        let t = run.t;
        let now = self.clock.now();
        let written = self
            .store
            .set(
                &t.secret,
                NewVersion {
                    value: password,
                    tags: self.tags(run, None),
                    expires: t.expiry.and_then(|e| now.checked_add(e)),
                    step: Step::Commit,
                },
            )
            .await;
        let written = match written {
            Ok(w) => w,
            Err(source) => {
                let e = ProvisionError::Pending {
                    account: t.name.clone(),
                    message: format!("Entra holds the new user's password, but it could not be committed to {:?}: {source}", t.secret),
                };
                return self.left_pending(run, e).await;
            }
        };
        let mut ev = self.event(run, EventKind::ProvisionCommitted);
        ev.secret = Some(t.secret.clone());
        ev.version = Some(written.version.clone());
        ev.request_id = written.request_id.clone();
        self.record(run, ev).await?;
        self.finish(run, staged_version).await
    }

    /// Tags the staging version `committed`; a failure is a warning (a rerun finishes it).
    async fn finish(&self, run: &mut Run<'_>, staged_version: &str) -> Result<(), ProvisionError> {
        let t = run.t;
        let mut tags = self.tags(run, Some(tag::COMMITTED));
        if let Ok(Some(s)) = self.store.latest(&staging_name(&t.secret)).await {
            if s.version == staged_version {
                tags = s.tags;
                tags.insert(tag::STATE.into(), tag::COMMITTED.into());
            }
        }
        if let Err(e) = self
            .store
            .update_tags(&staging_name(&t.secret), staged_version, tags)
            .await
        {
            run.out.notes.push(format!("the staging version could not be tagged committed ({e}); the password is committed: rerun `keyturn provision {}` to finish", t.name));
        } else if run.out.actions.iter().any(|a| a.action == "finish") {
            self.done(run, "finish");
        }
        Ok(())
    }

    /// Reads the user's roles and assigns what is missing (removes extras with
    /// `prune_roles`); `user` `None` (dry run of a create): every declared role is missing.
    async fn roles(
        &self,
        run: &mut Run<'_>,
        user: Option<&EntraUser>,
        started: &mut bool,
    ) -> Result<(), ProvisionError> {
        let t = run.t;
        let Some(wanted) = &t.roles else {
            return Ok(());
        };
        let held = match user {
            Some(u) => self
                .entra
                .role_assignments(&u.id)
                .await
                .map_err(|e| self.graph(t, e))?,
            None => Vec::new(),
        };
        let missing: Vec<&Role> = wanted
            .iter()
            .filter(|r| !held.iter().any(|a| a.role_id.eq_ignore_ascii_case(&r.id)))
            .collect();
        let extra: Vec<&entra::Assignment> = held
            .iter()
            .filter(|a| !wanted.iter().any(|r| r.id.eq_ignore_ascii_case(&a.role_id)))
            .collect();
        run.out.extra_roles = extra.iter().map(|a| role_label(&a.role_id)).collect();
        for r in &missing {
            self.act(run, "assign_role", r.name.clone());
        }
        if run.o.prune_roles {
            for a in &extra {
                self.act(run, "remove_role", role_label(&a.role_id));
            }
        }
        if !extra.is_empty() && !run.o.prune_roles {
            run.out.notes.push(format!(
                "the user holds roles the declaration does not list: {} (kept; `--prune-roles` removes them)",
                run.out.extra_roles.join(", ")
            ));
        }
        let Some(u) = user else {
            return Ok(());
        };
        if run.o.dry_run || (missing.is_empty() && (extra.is_empty() || !run.o.prune_roles)) {
            return Ok(());
        }
        if !*started {
            *started = true;
            self.start(
                run,
                "the user's directory roles differ from the declaration",
            )
            .await?;
        }
        for r in missing {
            self.assign(run, u, r).await?;
        }
        if run.o.prune_roles {
            for a in extra {
                match self.entra.remove_assignment(&a.id).await {
                    Ok(()) => {}
                    // Already gone (a lost answer, someone else).
                    Err(EntraError::Refused { status: 404, .. }) => {}
                    Err(e) => {
                        let e = self.graph(t, e);
                        self.failed(run, &e, None).await?;
                        return Err(e);
                    }
                }
                let mut ev = self.event(run, EventKind::ProvisionRoleRemoved);
                ev.outcome = Some(Outcome::Success);
                ev.detail = Some(format!(
                    "removed {} ({})",
                    role_label(&a.role_id),
                    a.role_id
                ));
                self.record(run, ev).await?;
                self.done_target(run, "remove_role", &role_label(&a.role_id));
            }
        }
        Ok(())
    }

    /// Assigns one role; a lost answer or a duplicate is settled by listing again.
    async fn assign(
        &self,
        run: &mut Run<'_>,
        u: &EntraUser,
        r: &Role,
    ) -> Result<(), ProvisionError> {
        let t = run.t;
        let mut delay = self.tuning.delay;
        let mut outcome = Err(EntraError::NotSent {
            op: Op::AssignRole,
            detail: "no attempt was made".into(),
        });
        for attempt in 1..=self.tuning.attempts.max(1) {
            outcome = match self.entra.assign_role(&u.id, &r.id).await {
                Ok(_) => Ok(()),
                Err(
                    e @ EntraError::Refused {
                        status: 403 | 404, ..
                    },
                ) => Err(e),
                Err(e) => {
                    // A 400 may be "already assigned" (a lost answer's duplicate); anything
                    // unknown may have taken effect: the listing says.
                    match self.entra.role_assignments(&u.id).await {
                        Ok(held) if held.iter().any(|a| a.role_id.eq_ignore_ascii_case(&r.id)) => {
                            Ok(())
                        }
                        _ => Err(e),
                    }
                }
            };
            match &outcome {
                Ok(()) | Err(EntraError::Refused { .. }) => break,
                Err(_) if attempt < self.tuning.attempts => {
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                }
                Err(_) => {}
            }
        }
        match outcome {
            Ok(()) => {
                let mut ev = self.event(run, EventKind::ProvisionRoleAssigned);
                ev.outcome = Some(Outcome::Success);
                ev.detail = Some(format!("assigned {} ({}) tenant-wide", r.name, r.id));
                self.record(run, ev).await?;
                self.done_target(run, "assign_role", &r.name);
                Ok(())
            }
            Err(e) => {
                let e = self.graph(t, e);
                self.failed(run, &e, None).await?;
                Err(e)
            }
        }
    }

    async fn abandon<T>(
        &self,
        run: &mut Run<'_>,
        version: &str,
        cause: EntraError,
    ) -> Result<T, ProvisionError> {
        let t = run.t;
        let mut tags = self.tags(run, Some(tag::ABANDONED));
        if let Ok(Some(s)) = self.store.latest(&staging_name(&t.secret)).await {
            if s.version == version {
                tags = s.tags;
                tags.insert(tag::STATE.into(), tag::ABANDONED.into());
            }
        }
        let tagged = self
            .store
            .update_tags(&staging_name(&t.secret), version, tags)
            .await;
        let mut ev = self.event(run, EventKind::ProvisionAbandoned);
        ev.outcome = Some(Outcome::Failure);
        ev.secret = Some(staging_name(&t.secret));
        ev.version = Some(version.to_owned());
        ev.error = Some(entra_error_info(&cause));
        ev.reason = run.o.reason.clone();
        ev.ticket = run.o.ticket.clone();
        ev.detail = Some(match &tagged {
            Ok(()) => "Entra never took the staged password: the staging version is tagged abandoned".into(),
            Err(e) => format!("Entra never took the staged password; the staging version could not be tagged abandoned ({e})"),
        });
        self.record(run, ev).await?;
        if let Some(a) = run.out.actions.iter_mut().find(|a| a.status == "planned") {
            a.status = "failed";
        }
        Err(ProvisionError::Abandoned {
            account: t.name.clone(),
            message: format!("the user was not created: {cause}"),
        })
    }

    async fn left_pending<T>(
        &self,
        run: &mut Run<'_>,
        e: ProvisionError,
    ) -> Result<T, ProvisionError> {
        let t = run.t;
        let mut ev = self.event(run, EventKind::ProvisionLeftPending);
        ev.outcome = Some(Outcome::Pending);
        ev.secret = Some(staging_name(&t.secret));
        ev.reason = run.o.reason.clone();
        ev.ticket = run.o.ticket.clone();
        ev.detail = Some(format!("{e}"));
        if let ProvisionError::Graph { source, .. } = &e {
            ev.error = Some(entra_error_info(source));
        }
        self.record(run, ev).await?;
        Err(match e {
            ProvisionError::Pending { .. } => e,
            other => ProvisionError::Pending {
                account: t.name.clone(),
                message: match other {
                    ProvisionError::Graph { source, .. } => source.to_string(),
                    o => o.to_string(),
                },
            },
        })
    }

    async fn failed(
        &self,
        run: &mut Run<'_>,
        e: &ProvisionError,
        info: Option<ErrorInfo>,
    ) -> Result<(), ProvisionError> {
        let mut ev = self.event(run, EventKind::ProvisionFailed);
        ev.outcome = Some(Outcome::Failure);
        ev.reason = run.o.reason.clone();
        ev.ticket = run.o.ticket.clone();
        ev.error = info.or_else(|| match e {
            ProvisionError::Graph { source, .. } => Some(entra_error_info(source)),
            ProvisionError::Stage { source, .. } | ProvisionError::Read { source, .. } => {
                Some(ErrorInfo {
                    kind: source.kind().into(),
                    http_status: source.status(),
                    code: source.code().map(String::from),
                    request_id: source.request_id().map(String::from),
                    message: source.to_string(),
                })
            }
            _ => None,
        });
        ev.detail = Some(e.to_string());
        if let Some(a) = run.out.actions.iter_mut().find(|a| a.status == "planned") {
            a.status = "failed";
        }
        self.record(run, ev).await
    }

    /// The first record of a run that changes something: who asked and why.
    async fn start(&self, run: &mut Run<'_>, what: &str) -> Result<(), ProvisionError> {
        let mut ev = self.event(run, EventKind::ProvisionStarted);
        ev.reason = run.o.reason.clone();
        ev.ticket = run.o.ticket.clone();
        ev.detail = Some(what.to_owned());
        self.record(run, ev).await
    }

    fn act(&self, run: &mut Run<'_>, action: &'static str, target: String) {
        run.out.actions.push(Action {
            action,
            target,
            status: "planned",
        });
    }

    fn done(&self, run: &mut Run<'_>, action: &str) {
        if let Some(a) = run.out.actions.iter_mut().find(|a| {
            a.status == "planned" && (a.action == action || a.action == "complete_create")
        }) {
            a.status = "done";
        }
    }

    fn done_target(&self, run: &mut Run<'_>, action: &str, target: &str) {
        if let Some(a) = run
            .out
            .actions
            .iter_mut()
            .find(|a| a.status == "planned" && a.action == action && a.target == target)
        {
            a.status = "done";
        }
    }

    fn tags(&self, run: &Run<'_>, state: Option<&str>) -> Tags {
        let mut tags = Tags::new();
        if let Some(state) = state {
            tags.insert(tag::STATE.into(), state.into());
        }
        tags.insert(tag::ROTATION_ID.into(), run.id.to_string());
        tags.insert(tag::ACCOUNT.into(), run.t.name.clone());
        tags.insert(
            tag::ROTATED_AT.into(),
            self.clock.now().format(&Rfc3339).unwrap_or_default(),
        );
        tags.insert(tag::TRIGGER.into(), Trigger::Provision.as_str().into());
        tags
    }

    fn event(&self, run: &Run<'_>, kind: EventKind) -> AuditEvent {
        let mut ev = AuditEvent::new(kind, self.clock.now());
        ev.account = Some(run.t.name.clone());
        ev.rotation_id = Some(run.id);
        ev.user = Some(run.t.user.clone());
        ev.vault = Some(self.store.vault().to_owned());
        ev.trigger = Some(Trigger::Provision);
        ev.actor = Some(run.o.actor.clone());
        ev
    }

    /// Records `ev`; if it cannot be written, provisioning stops there (fail closed).
    async fn record(&self, run: &Run<'_>, ev: AuditEvent) -> Result<(), ProvisionError> {
        self.audit
            .record(&ev)
            .await
            .map_err(|source| ProvisionError::Audit {
                account: run.t.name.clone(),
                source,
            })
    }

    fn graph(&self, t: &Target, source: EntraError) -> ProvisionError {
        ProvisionError::Graph {
            account: t.name.clone(),
            source,
        }
    }
}

/// `mailNickname` from a UPN: its local part, with only the characters Graph accepts there
/// (letters, digits and `. - _`; Graph refuses `@ ( ) \ [ ] " ; : < > , SPACE`).
pub fn mail_nickname(upn: &str) -> String {
    let local = upn.split('@').next().unwrap_or(upn);
    let clean: String = local
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if clean.is_empty() {
        "keyturn".into()
    } else {
        clean.chars().take(64).collect()
    }
}

/// A role's display name, or its id.
fn role_label(id: &str) -> String {
    crate::entra_roles::name_of(id)
        .map(str::to_owned)
        .unwrap_or_else(|| id.to_owned())
}

fn entra_error_info(e: &EntraError) -> ErrorInfo {
    ErrorInfo {
        kind: e.kind().into(),
        http_status: e.status(),
        code: e.code().map(String::from),
        request_id: e.request_id().map(String::from),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::mail_nickname;

    #[test]
    fn the_mail_nickname_is_the_upns_local_part_cleaned() {
        assert_eq!(
            mail_nickname("svc-coreview@contoso.onmicrosoft.com"),
            "svc-coreview"
        );
        assert_eq!(mail_nickname("a b(c)@x"), "abc");
        assert_eq!(mail_nickname("@x"), "keyturn");
    }
}
