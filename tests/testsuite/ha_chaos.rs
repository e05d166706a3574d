//! Chaos with two replicas (`docs/reliability.md`, "Chaos with two replicas"): two
//! `keyturn run` processes with `[ha]` (15 s leases) and `[daemon.audit_blob]` on one
//! emulator and one Azurite, each replica reaching Azurite through its own TCP proxy. For a
//! while, at random: SIGKILL or SIGTERM of either replica (restarted after), a replica cut off
//! from Azurite for 2 to 14 s (a partition: long enough, the leader loses the lease), and
//! `rotate --all` asked of both; all along, faults on the emulator's routes and a checker
//! asking the emulator whether each account's invariant holds. Then, faults off, every
//! account must converge, and:
//!
//! - **never two leaders acting**: each replica's own audit log is cut into *terms*, each from
//!   an `ha.acquired` to the next; every `rotation.*` record must fall in a term; a rotation
//!   started after the term's `ha.lost` or `ha.released` (before the daemon has stopped) may
//!   record no step done (`staged`, `applied`, `verified`, `committed`: the fence refuses its
//!   requests), while a step already under way may still report (its request left before the
//!   deadline); and, ordered by time, the
//!   records of one account (and of all accounts) must form runs of one term each: a term
//!   whose records resume after another term's began is a failure (two holders interleaved);
//! - 0 invariant violations, and at the end Key Vault's latest password is Entra's for every
//!   account;
//! - the append blob holds one chain (`keyturn audit verify --blob`) with both replicas'
//!   records;
//! - every exit is 0 (SIGTERM), 75 (lost the lease), a SIGKILL, or a SIGTERM that came before
//!   the process had installed its handlers.
//!
//! CI runs 100 s of chaos (about three minutes in all). For figures, by hand:
//! `KEYTURN_HA_CHAOS_SECS=900 cargo test --release --test testsuite ha_chaos:: -- --ignored --nocapture`

use crate::common::*;
use crate::ha::{
    azurite_or_skip, blob_records, cli, create_container, ha_config, role, verify_blob,
    with_audit_blob, Proxy,
};
use keyturn_emulator::{FaultKind, FaultRule, InvariantQuery};
use nix::sys::signal::Signal;
use rand::Rng;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// One replica: its folder, configuration, proxy to Azurite and current process.
struct Replica {
    dir: tempfile::TempDir,
    config: PathBuf,
    proxy: Proxy,
    daemon: Option<Daemon>,
    lives: usize,
}

impl Replica {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    fn start(&mut self) {
        let tag = format!("life-{}", self.lives);
        self.lives += 1;
        self.daemon = Some(Daemon::start_with_log(
            &self.config,
            self.dir.path(),
            &tag,
            "info",
        ));
    }

    /// Waits until a killed process has exited, without forgetting its status.
    async fn wait_gone(&mut self) {
        if let Some(d) = self.daemon.as_mut() {
            while matches!(d.child.try_wait(), Ok(None)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// The exit status if the process has exited (then it is forgotten).
    fn reap(&mut self) -> Option<std::process::ExitStatus> {
        let d = self.daemon.as_mut()?;
        let status = d.child.try_wait().ok().flatten()?;
        self.daemon = None;
        Some(status)
    }
}

/// Faults on the emulator's Key Vault, Graph and token routes (fewer than `chaos.rs`: the
/// Storage tokens come from the token route too).
fn faults() -> Vec<FaultRule> {
    vec![
        chance_status("kv.set", 503, 0.05),
        chance_status("graph.patch", 500, 0.05),
        chance_status("token", 500, 0.02),
        FaultRule {
            status: Some(500),
            ..chance("kv.set", FaultKind::CommitThenFail, 0.05)
        },
        FaultRule {
            then: Some("drop".into()),
            ..chance("graph.patch", FaultKind::CommitThenFail, 0.05)
        },
        chance("kv.*", FaultKind::Drop, 0.02),
        FaultRule {
            latency_ms: Some(250),
            ..chance("*", FaultKind::Latency, 0.1)
        },
    ]
}

/// A record of a replica's log: its time and event.
fn at(r: &serde_json::Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        r["time"].as_str().unwrap_or(""),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A leadership term: (replica, its n-th `ha.acquired`).
type Term = (usize, usize);

/// What the replicas' logs say about who acted when.
#[derive(Default, Debug)]
struct Terms {
    /// Each term's `ha.acquired` time.
    acquired: BTreeMap<Term, OffsetDateTime>,
    /// `rotation.*` records as (time, term, account), in no order.
    actions: Vec<(OffsetDateTime, Term, String)>,
    /// `rotation.*` records written outside a term, and steps done by rotations started
    /// after their term's `ha.lost` or `ha.released`.
    outside: Vec<String>,
    /// Rotations started after their term ended (between `ha.lost` and the daemon's stop):
    /// the fence refuses every request they make.
    late_starts: usize,
}

fn terms(logs: &[Vec<serde_json::Value>]) -> Terms {
    let mut t = Terms::default();
    for (replica, recs) in logs.iter().enumerate() {
        let mut term: Option<Term> = None;
        let mut ended = false;
        let mut late = std::collections::HashSet::new();
        let mut n = 0;
        for r in recs {
            let event = r["event"].as_str().unwrap_or("");
            match event {
                "ha.acquired" => {
                    term = Some((replica, n));
                    ended = false;
                    t.acquired.insert((replica, n), at(r));
                    n += 1;
                }
                "ha.lost" | "ha.released" => ended = true,
                "rotation.started" if ended => {
                    // The fence refuses its requests: it must record no step done.
                    late.insert(r["rotation_id"].as_str().unwrap_or("").to_owned());
                    t.late_starts += 1;
                }
                "rotation.staged" | "rotation.applied" | "rotation.verified"
                | "rotation.committed"
                    if late.contains(r["rotation_id"].as_str().unwrap_or("")) =>
                {
                    t.outside.push(format!(
                        "replica {replica}: a step done by a rotation started after the term ended: {r}"
                    ))
                }
                e if e.starts_with("rotation.") => match term {
                    Some(term) => t.actions.push((
                        at(r),
                        term,
                        r["account"].as_str().unwrap_or("").to_owned(),
                    )),
                    None => t.outside.push(format!("replica {replica}: {r}")),
                },
                _ => {}
            }
        }
    }
    t
}

/// The terms whose records resume after another term's records began, among `actions`
/// ordered by time: two holders interleaved.
fn interleaved(mut actions: Vec<(OffsetDateTime, Term)>) -> Vec<String> {
    actions.sort_by_key(|a| a.0);
    let mut runs: Vec<Term> = Vec::new();
    for (_, term) in &actions {
        if runs.last() != Some(term) {
            runs.push(*term);
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut bad = Vec::new();
    for term in &runs {
        if !seen.insert(*term) {
            bad.push(format!(
                "term {term:?} acts again after another term: runs {runs:?}"
            ));
        }
    }
    bad
}

#[test]
fn interleaving_is_found() {
    let t0 = OffsetDateTime::UNIX_EPOCH;
    let s = |n: i64| t0 + time::Duration::seconds(n);
    assert!(interleaved(vec![(s(1), (0, 0)), (s(2), (0, 0)), (s(3), (1, 0))]).is_empty());
    assert_eq!(
        interleaved(vec![(s(1), (0, 0)), (s(2), (1, 0)), (s(3), (0, 0))]).len(),
        1
    );
}

/// Waits (up to a minute) until the replica behind `socket` leads.
async fn wait_for_leader(socket: &std::path::Path) -> bool {
    for _ in 0..600 {
        if role(socket).await.as_deref() == Some("leader") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn run_chaos(test: &str, secs: u64) {
    let Some(az) = azurite_or_skip(test).await else {
        return;
    };
    let started = Instant::now();
    let emu = emulator().await;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::start(az.port).await;
        let config = ha_config(&emu, dir.path(), &az, proxy.port, "leader");
        with_audit_blob(&config, proxy.port, "audit");
        replicas.push(Replica {
            dir,
            config,
            proxy,
            daemon: None,
            lives: 0,
        });
    }
    create_container(&emu, &replicas[0].config, &az).await;
    let control = emu.control();
    let queries: Vec<(String, InvariantQuery)> = USERS
        .iter()
        .map(|(name, upn, secret, _)| {
            (
                name.to_string(),
                InvariantQuery {
                    tenant: TENANT.into(),
                    user: (*upn).into(),
                    vault: VAULT.into(),
                    secret: (*secret).into(),
                    staging_secret: None,
                },
            )
        })
        .collect();

    // The independent checker.
    let checker = InvariantChecker::start(control.clone(), queries.clone());

    for r in &mut replicas {
        r.start();
    }
    for f in faults() {
        control.add_fault(f).unwrap();
    }
    // When a leader was SIGKILLed (UTC), for the time to take over.
    let mut leader_kills: Vec<OffsetDateTime> = Vec::new();
    let (mut sigkills, mut sigterms, mut partitions, mut asked) = (0, 0, 0, 0);
    let mut exits: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad_exits = Vec::new();
    // Partitions in progress: (replica, until).
    let mut cut_until: [Option<Instant>; 2] = [None, None];
    let chaos = Duration::from_secs(secs);
    while started.elapsed() < chaos {
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(1000..3000))).await;
        for (i, r) in replicas.iter_mut().enumerate() {
            if let Some(status) = r.reap() {
                use std::os::unix::process::ExitStatusExt;
                let what = match (status.code(), status.signal()) {
                    (Some(c), _) => format!("exit {c}"),
                    (None, Some(s)) => format!("signal {s}"),
                    _ => "?".into(),
                };
                if !matches!(status.code(), Some(0) | Some(75) | None)
                    || status.signal().is_some_and(|s| s != 9 && s != 15)
                {
                    bad_exits.push(format!("replica {i}: {what}"));
                }
                *exits.entry(what).or_default() += 1;
                r.start();
            }
            if cut_until[i].is_some_and(|t| Instant::now() >= t) {
                r.proxy.restore();
                cut_until[i] = None;
            }
        }
        let i = rand::rng().random_range(0..2);
        match rand::rng().random_range(0..20) {
            0..=2 => {
                if let Some(d) = &replicas[i].daemon {
                    let leads = role(&replicas[i].socket()).await.as_deref() == Some("leader");
                    d.signal(Signal::SIGKILL);
                    sigkills += 1;
                    if leads {
                        leader_kills.push(OffsetDateTime::now_utc());
                    }
                }
                // A SIGKILL is not instant: until the process is gone, `reap` sees it
                // running, and a kill in the last round would be taken for a live replica
                // at the end (SIGTERMed, it then "exits" with signal 9). The status stays
                // in the child for the next `reap`.
                replicas[i].wait_gone().await;
            }
            3 => {
                if let Some(d) = &replicas[i].daemon {
                    d.signal(Signal::SIGTERM);
                    sigterms += 1;
                }
            }
            4..=6 => {
                if cut_until[i].is_none() {
                    replicas[i].proxy.cut();
                    partitions += 1;
                    cut_until[i] = Some(
                        Instant::now() + Duration::from_secs(rand::rng().random_range(2..=14)),
                    );
                }
            }
            _ => {
                for r in &replicas {
                    let out = cli(
                        &r.socket(),
                        &["rotate", "--all", "--no-wait", "--reason", "ha chaos"],
                    )
                    .await;
                    asked += out.status.success() as u32;
                }
            }
        }
    }

    // Faults off, Storage back, both replicas up: one leads and everything converges.
    let faults_fired = control.counters().faults_by_kind.clone();
    control.clear_faults();
    for (i, r) in replicas.iter_mut().enumerate() {
        r.proxy.restore();
        if let Some(status) = r.reap() {
            if !matches!(status.code(), Some(0) | Some(75) | None) {
                bad_exits.push(format!("replica {i}: {status:?}"));
            }
            r.start();
        } else if r.daemon.is_none() {
            r.start();
        }
    }
    let converge_start = Instant::now();
    let mut converged = false;
    while converge_start.elapsed() < Duration::from_secs(120) && !converged {
        for r in replicas.iter_mut() {
            if r.reap().is_some() {
                r.start();
            }
            if role(&r.socket()).await.as_deref() == Some("leader") {
                let _ = cli(
                    &r.socket(),
                    &["rotate", "--all", "--reason", "ha chaos: converge"],
                )
                .await;
            }
        }
        converged = queries.iter().all(|(_, q)| {
            let r = control.invariant(q).unwrap();
            r.latest_matches && r.pending_tag.as_deref() != Some("pending")
        });
        if !converged {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let converge_time = converge_start.elapsed();
    // A last handover, so that both replicas have led whatever the dice did: the leader stops
    // (it copies its last records and releases the lease), the other takes over and copies
    // its own, then stops too.
    for r in &replicas {
        if let Some(d) = &r.daemon {
            // Started (its signal handlers installed), so SIGTERM is a graceful stop.
            d.ready().await;
        }
    }
    let first = match role(&replicas[0].socket()).await.as_deref() {
        Some("leader") => 0,
        _ => 1,
    };
    for (n, i) in [first, 1 - first].into_iter().enumerate() {
        if n == 1 {
            let led = wait_for_leader(&replicas[i].socket()).await;
            assert!(led, "replica {i} did not take over at the end");
            // Its first copy (its term's records) before it stops.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        if let Some(d) = replicas[i].daemon.take() {
            d.signal(Signal::SIGTERM);
            let status = d.wait().await;
            if !matches!(status.code(), Some(0) | Some(75)) {
                bad_exits.push(format!("replica {i} at the end: {status:?}"));
            }
        }
    }
    let (checks, violations) = checker.stop().await;

    // Who acted when.
    let logs: Vec<Vec<serde_json::Value>> = replicas
        .iter()
        .map(|r| audit_records(r.dir.path()))
        .collect();
    let t = terms(&logs);
    let mut overlaps = interleaved(t.actions.iter().map(|(at, term, _)| (*at, *term)).collect());
    for (name, _) in &queries {
        overlaps.extend(
            interleaved(
                t.actions
                    .iter()
                    .filter(|a| &a.2 == name)
                    .map(|(at, term, _)| (*at, *term))
                    .collect(),
            )
            .into_iter()
            .map(|s| format!("{name}: {s}")),
        );
    }
    // Time to take over: from a leader's SIGKILL to the next ha.acquired.
    let mut takeovers: Vec<f64> = leader_kills
        .iter()
        .filter_map(|k| {
            t.acquired
                .values()
                .filter(|a| *a > k)
                .min()
                .map(|a| (*a - *k).as_seconds_f64())
        })
        .collect();
    takeovers.sort_by(|a, b| a.total_cmp(b));
    let median = takeovers.get(takeovers.len() / 2).copied();
    let max = takeovers.last().copied();
    let failovers = t.acquired.len().saturating_sub(1);
    let lost: usize = logs
        .iter()
        .map(|l| l.iter().filter(|r| r["event"] == "ha.lost").count())
        .sum();
    let completed: usize = logs
        .iter()
        .map(|l| {
            l.iter()
                .filter(|r| r["event"] == "rotation.completed")
                .count()
        })
        .sum();

    // One chain in the append blob, with both replicas' terms.
    let (code, chain) = verify_blob(&replicas[0].config, None).await;
    let blob = blob_records(&emu, &replicas[0].config, &az, "audit").await;
    // The replicas whose terms are in the blob: its `ha.acquired` records are the replicas'
    // own (same time and detail).
    let in_blob = |r: &serde_json::Value| {
        blob.iter().any(|b| {
            b["event"] == "ha.acquired" && b["time"] == r["time"] && b["detail"] == r["detail"]
        })
    };
    let holders: Vec<usize> = logs
        .iter()
        .enumerate()
        .filter(|(_, l)| l.iter().any(|r| r["event"] == "ha.acquired" && in_blob(r)))
        .map(|(i, _)| i)
        .collect();

    let summary = format!(
        "ha chaos: 2 replicas, lease 15s, {} accounts, {secs}s of chaos, {:.0?} in all\n  actions: {sigkills} SIGKILL ({} of the leader), {sigterms} SIGTERM, {partitions} partitions from Storage, {asked} rotate --all accepted\n  exits: {exits:?}\n  terms (ha.acquired): {}, failovers: {failovers}, ha.lost: {lost}\n  time to take over after a leader's SIGKILL (to ha.acquired): median {}, max {} over {} takeovers\n  rotations completed: {completed}; rotation records: {}, outside a term: {}, started after their term ended (refused by the fence): {}, interleaved terms: {}\n  faults fired: {faults_fired:?}\n  invariant checks: {}, violations: {}\n  converged with faults off in {:.1?}: {converged}\n  append blob: {} records, terms of replicas {holders:?}, verify exit {code:?}: {}",
        queries.len(),
        started.elapsed(),
        leader_kills.len(),
        t.acquired.len(),
        median.map(|m| format!("{m:.1}s")).unwrap_or("-".into()),
        max.map(|m| format!("{m:.1}s")).unwrap_or("-".into()),
        takeovers.len(),
        t.actions.len(),
        t.outside.len(),
        t.late_starts,
        overlaps.len(),
        checks,
        violations.len(),
        converge_time,
        blob.len(),
        chain.trim(),
    );
    eprintln!("{summary}");
    assert!(
        violations.is_empty(),
        "invariant violations:\n{}\n{summary}",
        violations.join("\n")
    );
    assert!(converged, "not converged\n{summary}");
    assert!(
        overlaps.is_empty(),
        "two leaders acted:\n{}\n{summary}",
        overlaps.join("\n")
    );
    assert!(
        t.outside.is_empty(),
        "rotation records outside a term:\n{}\n{summary}",
        t.outside.join("\n")
    );
    assert!(bad_exits.is_empty(), "{bad_exits:?}\n{summary}");
    assert_eq!(code, Some(0), "the append blob's chain\n{summary}");
    assert!(
        holders.len() >= 2,
        "both replicas led and appended\n{summary}"
    );
    assert!(failovers >= 1, "{summary}");
    assert!(faults_fired.values().sum::<u64>() > 0, "{summary}");
    emu.shutdown().await;
}

/// The CI run: 100 s of chaos.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_under_chaos_never_act_together() {
    run_chaos("ha_chaos::two_replicas_under_chaos_never_act_together", 100).await;
}

/// The long run for `docs/reliability.md`'s figures (`KEYTURN_HA_CHAOS_SECS`, 900 s by
/// default), by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by hand for docs/reliability.md's figures"]
async fn two_replicas_under_chaos_long() {
    let secs = std::env::var("KEYTURN_HA_CHAOS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(900);
    run_chaos("ha_chaos::two_replicas_under_chaos_long", secs).await;
}
