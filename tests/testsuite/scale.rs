//! Scale behaviour in virtual time: the rate limiter spreads a burst to fit its budget, and
//! the per-tenant concurrency cap holds while every account is rotated at once.

use async_trait::async_trait;
use keyturn::audit::{EventKind, MemorySink, Trigger};
use keyturn::clock::{Clock, TokioClock};
use keyturn::daemon::{Command, Daemon, Managed, Settings};
use keyturn::directory::{Applied, Directory, DirectoryError, UserInfo, Verified};
use keyturn::limits::{Limiter, LimitsConfig};
use keyturn::memory::{MemoryDirectory, MemoryVault};
use keyturn::password::{Password, PasswordPolicy};
use keyturn::protocol::{Account, Engine, Request, Tuning};
use keyturn::schedule::Schedule;
use keyturn::store::{tag, NewVersion, SecretRecord, SecretStore, Step, StoreError, Tags, Written};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use tokio::sync::{mpsc, oneshot};

/// A store that records when each set reached it (tokio time).
struct Recording {
    vault: String,
    sets: Mutex<Vec<tokio::time::Instant>>,
}

#[async_trait]
impl SecretStore for Recording {
    async fn latest(&self, _name: &str) -> Result<Option<SecretRecord>, StoreError> {
        Ok(None)
    }
    async fn set(&self, _name: &str, _new: NewVersion<'_>) -> Result<Written, StoreError> {
        self.sets.lock().unwrap().push(tokio::time::Instant::now());
        Ok(Written {
            version: "v".into(),
            request_id: None,
        })
    }
    async fn update_tags(&self, _: &str, _: &str, _: Tags) -> Result<(), StoreError> {
        Ok(())
    }
    fn vault(&self) -> &str {
        &self.vault
    }
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_sets_is_spread_to_fit_the_vault_budget() {
    let limiter = Limiter::new(
        LimitsConfig {
            vault_writes_per_10s: 20,
            headroom: 0.0,
            reserve: 0.0,
            ..Default::default()
        },
        keyturn::observe::unobserved(),
    );
    let inner = Arc::new(Recording {
        vault: "https://kv.vault.azure.net/".into(),
        sets: Mutex::new(Vec::new()),
    });
    // Two stores on the same vault (two identities) share its budget.
    let a = limiter.store(inner.clone());
    let b = limiter.store(inner.clone());
    let start = tokio::time::Instant::now();
    let password = Password::new("Aa1!aaaaaaaaaaaa".into());
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let password = password.clone();
        tasks.push(tokio::spawn(async move {
            let (name, step) = if i % 3 == 0 {
                ("s-pending", Step::Stage)
            } else {
                ("s", Step::Commit)
            };
            store
                .set(
                    name,
                    NewVersion {
                        value: &password,
                        tags: Tags::new(),
                        expires: None,
                        step,
                    },
                )
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut times = inner.sets.lock().unwrap().clone();
    times.sort();
    assert_eq!(times.len(), 60);
    // In every 10 s window: at most 20 sets.
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|u| **u - *t < Duration::from_secs(10))
            .count();
        assert!(in_window <= 20, "{in_window} sets in 10 s from set {i}");
    }
    // And no slower than the budget: 1 at once, then one every 10/19 s.
    let took = *times.last().unwrap() - start;
    let expected = Duration::from_secs(10) * 59 / 19;
    assert!(
        took <= expected + Duration::from_millis(100),
        "took {took:?}, budget allows {expected:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn graph_writes_are_paced_per_app_and_tenant() {
    let limiter = Limiter::new(
        LimitsConfig {
            graph_writes_per_150s: 15,
            headroom: 0.0,
            reserve: 0.0,
            ..Default::default()
        },
        keyturn::observe::unobserved(),
    );
    let clock = Arc::new(TokioClock::new(datetime!(2026-11-20 10:00:00 UTC)));
    let dir = Arc::new(MemoryDirectory::new(clock));
    let password = Password::new("Aa1!aaaaaaaaaaaa".into());
    dir.add_user("u@t", &password, None);
    let t1 = limiter.directory("app@t1", dir.clone());
    let t2 = limiter.directory("app@t2", dir.clone());
    let start = tokio::time::Instant::now();
    for _ in 0..15 {
        t1.reset_password("u@t", &password).await.unwrap();
    }
    // 15 per 150 s: 1 at once and one every 150/14 s.
    assert!(
        start.elapsed() >= Duration::from_secs(149),
        "{:?}",
        start.elapsed()
    );
    let before = tokio::time::Instant::now();
    t2.reset_password("u@t", &password).await.unwrap();
    assert_eq!(
        before.elapsed(),
        Duration::ZERO,
        "another tenant has its own budget"
    );
}

/// A directory in one tenant that counts how many resets run at once.
struct Counting {
    inner: Arc<MemoryDirectory>,
    tenant: String,
    running: Arc<Mutex<HashMap<String, (usize, usize)>>>,
}

#[async_trait]
impl Directory for Counting {
    async fn reset_password(
        &self,
        user: &str,
        password: &Password,
    ) -> Result<Applied, DirectoryError> {
        {
            let mut r = self.running.lock().unwrap();
            let e = r.entry(self.tenant.clone()).or_default();
            e.0 += 1;
            e.1 = e.1.max(e.0);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let out = self.inner.reset_password(user, password).await;
        self.running
            .lock()
            .unwrap()
            .get_mut(&self.tenant)
            .unwrap()
            .0 -= 1;
        out
    }
    async fn user(&self, user: &str) -> Result<UserInfo, DirectoryError> {
        self.inner.user(user).await
    }
    async fn verify(&self, user: &str, password: &Password) -> Result<Verified, DirectoryError> {
        self.inner.verify(user, password).await
    }
    fn tenant(&self) -> Option<&str> {
        Some(&self.tenant)
    }
}

#[tokio::test(start_paused = true)]
async fn the_per_tenant_cap_holds_during_a_rotation_of_every_account() {
    let clock = Arc::new(TokioClock::new(datetime!(2026-11-20 10:00:30 UTC)));
    let vault = Arc::new(MemoryVault::new(
        "https://kv.vault.azure.net/",
        clock.clone(),
    ));
    let running = Arc::new(Mutex::new(HashMap::new()));
    let mut managed = Vec::new();
    let mut dirs = Vec::new();
    for t in 0..3 {
        let inner = Arc::new(MemoryDirectory::new(clock.clone()));
        dirs.push(inner.clone());
        let dir: Arc<dyn Directory> = Arc::new(Counting {
            inner: inner.clone(),
            tenant: format!("tenant-{t}"),
            running: running.clone(),
        });
        for i in 0..8 {
            let upn = format!("svc-{i}@tenant-{t}");
            let secret = format!("t{t}-svc-{i}");
            let p = PasswordPolicy::default().generate().unwrap();
            let rotated = clock.now() - time::Duration::minutes(1);
            inner.add_user(&upn, &p, Some(rotated));
            let mut tags = Tags::new();
            tags.insert(tag::ROTATED_AT.into(), rotated.format(&Rfc3339).unwrap());
            vault.seed(&secret, &p, tags);
            managed.push(Managed {
                account: Account {
                    name: format!("t{t}-acct-{i}"),
                    user: upn,
                    secret,
                    policy: PasswordPolicy::default(),
                    verify: false,
                    expiry: None,
                    store: vault.clone(),
                    directory: dir.clone(),
                },
                schedule: Schedule::new("0 3 * * MON", "UTC", Duration::ZERO).unwrap(),
                enabled: true,
                on_missing_secret: keyturn::config::OnMissingSecret::Rotate,
            });
        }
    }
    let audit = MemorySink::default();
    let engine = Arc::new(Engine::new(
        Arc::new(audit.clone()),
        clock.clone(),
        Tuning::default(),
    ));
    let daemon = Daemon::new(
        engine,
        Arc::new(audit.clone()),
        clock.clone(),
        Settings {
            max_concurrent: 5,
            max_per_tenant: 2,
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
            drift_interval: Duration::ZERO,
            readiness_interval: Duration::ZERO,
            shutdown_grace: Duration::from_secs(30),
            startup_delay: Duration::ZERO,
        },
        managed,
    );
    let (tx, rx) = mpsc::channel(8);
    let (ready_tx, ready_rx) = oneshot::channel();
    let run = tokio::spawn(daemon.run(
        rx,
        tokio::time::sleep(Duration::from_secs(600)),
        Some(ready_tx),
    ));
    ready_rx.await.unwrap();
    let (reply, answer) = oneshot::channel();
    tx.send(Command::Rotate {
        target: keyturn::daemon::Target::All,
        request: Request::daemon(Trigger::Signal),
        wait: true,
        reply: Some(reply),
    })
    .await
    .unwrap();
    let results = answer.await.unwrap();
    assert_eq!(results.len(), 24);
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    let completed = audit
        .events()
        .iter()
        .filter(|e| e.event == EventKind::RotationCompleted)
        .count();
    assert_eq!(completed, 24);
    let peaks: Vec<usize> = running.lock().unwrap().values().map(|v| v.1).collect();
    assert_eq!(
        peaks,
        vec![2, 2, 2],
        "each tenant ran at most (and reached) 2 at once"
    );
    drop(tx);
    run.abort();
}
