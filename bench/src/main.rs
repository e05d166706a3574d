//! `keyturn-bench`: seeds `keyturn-emulator` (in this process) with a fleet, runs
//! `keyturn run` as a real child process against it, and measures start-up, idle memory and
//! CPU, command latency, and a rotation of every account (see `docs/benchmarks.md`), while a
//! consumer reads a password through the official SDK at its reserved share of the vault's
//! read budget, counting the 429s it meets during start-up, the rotate-all and a drift check.
//!
//! ```sh
//! cargo build --release && cargo run --release -p keyturn-bench -- --accounts 10000 --tenants 1000 --vaults 10 --limits on
//! ```
//!
//! Here: the arguments and the run, step by step. `watch`: noticing the first request for a
//! path in the emulator's access log; `measure`: reading a process's memory and CPU, counting
//! completed rotations in the audit log, the admin socket, the keyturn child process;
//! `load`: the emulator alone under the request mix of a rotation; `consumer`: the vault's
//! other client.

mod consumer;
mod load;
mod measure;
mod watch;

use anyhow::{bail, Context, Result};
use clap::Parser;
use keyturn_bench::{EmulatorLimits, Fleet, KeyturnOpts};
use keyturn_emulator::{Emulator, EmulatorConfig, InvariantQuery, Scenario};
use measure::{cpu_secs, percentile, proc_status, report, send, AuditTail, KeyturnProc};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use watch::{WatchLayer, WATCH};

#[derive(Parser, Debug)]
#[command(about = "keyturn scale benchmark")]
struct Args {
    /// Accounts (N).
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Tenants (T), one app each.
    #[arg(long, default_value_t = 1_000)]
    tenants: usize,
    /// Vaults (V).
    #[arg(long, default_value_t = 10)]
    vaults: usize,
    /// `on`: the emulator enforces Azure's limits and keyturn paces itself; `off`: neither.
    #[arg(long, default_value = "on")]
    limits: String,
    /// The keyturn binary.
    #[arg(long, default_value = "target/release/keyturn")]
    keyturn: PathBuf,
    /// `daemon.max_concurrent_rotations`.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// `daemon.max_concurrent_per_tenant`.
    #[arg(long, default_value_t = 4)]
    per_tenant: usize,
    /// Seconds of idle CPU measurement.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// `rotate` commands timed for latency.
    #[arg(long, default_value_t = 50)]
    latency_samples: usize,
    /// Also measure the emulator alone with the same request mix (workers).
    #[arg(long, default_value_t = 0)]
    load_workers: usize,
    /// Append the result as a JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Measure only the emulator alone (with `--load-workers`, default 64 here), no keyturn.
    #[arg(long)]
    emulator_only: bool,
    /// `limits.reserve` for keyturn (its default: 0.25).
    #[arg(long, default_value_t = 0.25)]
    reserve: f64,
    /// The consumer's reads per second of one password in the first vault; default: its
    /// reserved share of that vault's read budget (`reserve` × 4,000 per 10 s with limits on),
    /// 0: no consumer.
    #[arg(long)]
    consumer_rate: Option<f64>,
    /// `daemon.drift_check_interval`: the consumer's drift-check phase is the first drift
    /// check after the rotate-all.
    #[arg(long, default_value = "90s")]
    drift: String,
}

/// Seconds of a keyturn duration written as `<n>s`, `<n>m` or `<n>h`.
fn secs_of(d: &str) -> Option<u64> {
    let (n, unit) = d.split_at(d.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    })
}

/// The total of the emulator's request counters for routes starting with `prefix`.
fn routes(c: &keyturn_emulator::Counters, prefix: &str) -> u64 {
    c.requests
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| *v)
        .sum()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    let args = Args::parse();
    let filter =
        tracing_subscriber::filter::filter_fn(|m| m.target() == "keyturn_emulator::access");
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(WatchLayer.with_filter(filter)),
    )?;
    let limits_on = match args.limits.as_str() {
        "on" => true,
        "off" => false,
        other => bail!("--limits must be on or off, not {other:?}"),
    };
    let fleet = Fleet {
        accounts: args.accounts,
        tenants: args.tenants.min(args.accounts).max(1),
        vaults: args.vaults.max(1),
    };
    let keyturn = std::fs::canonicalize(&args.keyturn).with_context(|| {
        format!(
            "{}: build it with cargo build --release",
            args.keyturn.display()
        )
    })?;
    let dir = std::env::temp_dir().join(format!("keyturn-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // Seed.
    let t = Instant::now();
    let limits = if limits_on {
        EmulatorLimits::azure()
    } else {
        EmulatorLimits::off()
    };
    let scenario = Scenario::from_toml_str(&fleet.scenario(limits))?;
    let emu = Emulator::start(EmulatorConfig {
        scenario: Some(scenario),
        ..Default::default()
    })
    .await?;
    let seed_time = t.elapsed();
    let ctl = emu.control();
    if args.emulator_only {
        let workers = if args.load_workers == 0 {
            64
        } else {
            args.load_workers
        };
        let cpu0 = cpu_secs(std::process::id());
        let c = load::run(&emu, &fleet, workers).await?;
        let cpu = cpu_secs(std::process::id()) - cpu0;
        eprintln!(
            "emulator alone: {c:.1} rotations/s ({workers} workers); emulator and load generator {:.2} ms CPU/rotation",
            cpu / fleet.accounts as f64 * 1e3
        );
        let result = serde_json::json!({"accounts": fleet.accounts, "tenants": fleet.tenants,
            "vaults": fleet.vaults, "limits": limits_on, "seed_s": seed_time.as_secs_f64(),
            "emulator_only": true, "workers": workers, "emulator_capacity_per_s": c});
        report(&result, args.json_out.as_deref())?;
        emu.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    let config = dir.join("keyturn.toml");
    let opts = KeyturnOpts {
        limits: limits_on,
        max_concurrent: args.concurrency,
        per_tenant: args.per_tenant,
        drift: args.drift.clone(),
        reserve: Some(args.reserve),
        budgets: None,
    };
    std::fs::write(&config, fleet.config(&emu, &dir, &opts))?;
    let drift_secs = secs_of(&args.drift).context("--drift: a number and s, m or h")?;

    // The consumer, warmed up (its token, the vault's authentication challenge) before
    // keyturn starts.
    let kv_limits = limits;
    let consumer_rate = args.consumer_rate.unwrap_or(if limits_on {
        args.reserve * f64::from(kv_limits.kv_other) / (kv_limits.kv_window_ms as f64 / 1000.0)
    } else {
        0.0
    });
    let consumer = if consumer_rate > 0.0 {
        let loaded = keyturn::config::load(&config)?;
        let (_, _, secret) = fleet.account(0);
        let c = consumer::Consumer::start(
            consumer::Target {
                loaded: &loaded,
                authority_host: emu.authority_host(),
                tenant: keyturn_bench::OPERATOR_TENANT,
                client_id: keyturn_bench::CONSUMER_CLIENT,
                client_secret: keyturn_bench::CONSUMER_SECRET,
                vault_url: emu.vault_url(&Fleet::vault_name(fleet.vault_of(0))),
                secret,
            },
            consumer_rate,
        )?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        eprintln!("consumer reading {consumer_rate:.1}/s from kv0");
        Some(c)
    } else {
        None
    };
    let phase = |name: &str| {
        if let Some(c) = &consumer {
            c.phase(name);
        }
    };
    eprintln!(
        "seeded {} accounts, {} tenants, {} vaults in {:.1}s; config {}",
        fleet.accounts,
        fleet.tenants,
        fleet.vaults,
        seed_time.as_secs_f64(),
        config.display()
    );

    // Start-up to ready.
    let stderr = dir.join("keyturn.stderr");
    let before = ctl.counters();
    phase("start-up");
    let t = Instant::now();
    let child = Command::new(&keyturn)
        .args(["run", "--config"])
        .arg(&config)
        // The bench may run as root (a throwaway VM); keyturn refuses root unless told.
        .env("KEYTURN_ALLOW_ROOT", "1")
        .env("KEYTURN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr)?)
        .spawn()?;
    let kt = KeyturnProc { child, stderr };
    let pid = kt.child.id();
    wait_for_log(
        &kt.stderr,
        "keyturn is ready",
        t,
        "keyturn never became ready",
    )
    .await?;
    let startup = t.elapsed();
    let at_ready = ctl.counters();
    phase("");
    let consumer_kv_at_startup = consumer
        .as_ref()
        .map(|c| c.snapshot("start-up").kv_requests)
        .unwrap_or(0);
    let startup_kv = routes(&at_ready, "kv.") - routes(&before, "kv.") - consumer_kv_at_startup;
    let diff = |route: &str, a: &keyturn_emulator::Counters, b: &keyturn_emulator::Counters| {
        b.requests.get(route).copied().unwrap_or(0) - a.requests.get(route).copied().unwrap_or(0)
    };
    let startup_requests = format!(
        "kv.list {}, kv.get {}, graph.get {}, token {}",
        diff("kv.list", &before, &at_ready),
        diff("kv.get", &before, &at_ready),
        diff("graph.get", &before, &at_ready),
        diff("token", &before, &at_ready)
    );
    eprintln!(
        "ready in {:.2}s ({startup_requests}; counted by the emulator, the consumer's included); keyturn's Key Vault requests {startup_kv} (goal ≤ N/10 = {})",
        startup.as_secs_f64(),
        fleet.accounts / 10
    );

    // The start-up drift check's Graph reads run after ready, holding no account: idle is
    // measured once they are done.
    let drift_started = ctl.counters();
    wait_for_log(
        &kt.stderr,
        "drift check: Graph's last password changes read",
        t,
        "keyturn's start-up drift check never ended",
    )
    .await?;
    let startup_drift = t.elapsed() - startup;
    let drift_done = ctl.counters();
    eprintln!(
        "start-up drift reads done {:.2}s after ready (graph.get {}, token {} after ready)",
        startup_drift.as_secs_f64(),
        diff("graph.get", &drift_started, &drift_done),
        diff("token", &drift_started, &drift_done)
    );

    // Idle memory and CPU.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss_kib = proc_status(pid, "VmRSS:");
    let cpu0 = cpu_secs(pid);
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle_cpu = cpu_secs(pid) - cpu0;
    let idle_rss_end_kib = proc_status(pid, "VmRSS:");
    eprintln!(
        "idle: VmRSS {} KiB ({} KiB {}s later), CPU {:.3}s in {}s",
        idle_rss_kib, idle_rss_end_kib, args.idle_secs, idle_cpu, args.idle_secs
    );

    // Latency from a socket `rotate` to the first Key Vault request for that account.
    let socket = dir.join("admin.sock");
    let mut audit = AuditTail {
        path: dir.join("audit.jsonl"),
        offset: 0,
        completed: 0,
        rest: String::new(),
    };
    let mut latencies = Vec::new();
    for k in 0..args.latency_samples.min(fleet.accounts) {
        let i = k * fleet.accounts / args.latency_samples.min(fleet.accounts).max(1);
        let (name, _, secret) = fleet.account(i);
        *WATCH.prefix.lock().unwrap_or_else(|e| e.into_inner()) = format!("/secrets/{secret}-");
        *WATCH.hit.lock().unwrap_or_else(|e| e.into_inner()) = None;
        WATCH.on.store(true, Ordering::SeqCst);
        let done = audit.poll();
        let sent = Instant::now();
        let socket2 = socket.clone();
        let req = serde_json::json!({"v":1,"cmd":"rotate","account":name,"reason":"bench latency","wait":false});
        tokio::task::spawn_blocking(move || send(&socket2, &req)).await??;
        let end = Instant::now() + Duration::from_secs(30);
        while audit.poll() == done && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        WATCH.on.store(false, Ordering::SeqCst);
        if let Some(hit) = *WATCH.hit.lock().unwrap_or_else(|e| e.into_inner()) {
            latencies.push(hit - sent);
        }
    }
    latencies.sort();
    let (lat_p50, lat_p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    eprintln!(
        "rotate→first Key Vault request: median {:.1} ms, p99 {:.1} ms ({} samples)",
        lat_p50.as_secs_f64() * 1e3,
        lat_p99.as_secs_f64() * 1e3,
        latencies.len()
    );

    // Rotate all.
    let throttled0: u64 = ctl.counters().throttled.values().sum();
    let baseline = audit.poll();
    let (kt_cpu0, emu_cpu0) = (cpu_secs(pid), cpu_secs(std::process::id()));
    let requests0 = ctl.counters();
    phase("rotate-all");
    let t = Instant::now();
    let socket2 = socket.clone();
    let answer = tokio::task::spawn_blocking(move || {
        send(
            &socket2,
            &serde_json::json!({"v":1,"cmd":"rotate","all":true,"reason":"bench","wait":false}),
        )
    })
    .await??;
    if answer["ok"] != true {
        eprintln!("rotate all: {answer}");
    }
    let mut peak_rss = 0;
    let mut last_progress = Instant::now();
    let mut last = baseline;
    while audit.poll() < baseline + fleet.accounts {
        peak_rss = peak_rss.max(proc_status(pid, "VmRSS:"));
        if audit.completed != last {
            last = audit.completed;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > Duration::from_secs(120) {
            eprintln!(
                "no progress for 120 s; {} of {} completed",
                last - baseline,
                fleet.accounts
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = t.elapsed();
    phase("");
    let consumer_throttled_rotate = consumer
        .as_ref()
        .map(|c| c.snapshot("rotate-all").throttled)
        .unwrap_or(0);
    let completed = audit.completed - baseline;
    let (kt_cpu, emu_cpu) = (
        cpu_secs(pid) - kt_cpu0,
        cpu_secs(std::process::id()) - emu_cpu0,
    );
    let requests1 = ctl.counters();
    let sent: u64 =
        requests1.requests.values().sum::<u64>() - requests0.requests.values().sum::<u64>();
    let per = |x: f64| x / completed.max(1) as f64;
    eprintln!(
        "rotate-all CPU: keyturn {kt_cpu:.1} s ({:.2} ms/rotation), emulator and bench {emu_cpu:.1} s ({:.2} ms/rotation); {:.1} requests/rotation",
        per(kt_cpu) * 1e3,
        per(emu_cpu) * 1e3,
        per(sent as f64)
    );
    let hwm_kib = proc_status(pid, "VmHWM:");
    peak_rss = peak_rss.max(proc_status(pid, "VmRSS:"));
    // The 429s keyturn met: the emulator's, less the consumer's.
    let throttled = (ctl.counters().throttled.values().sum::<u64>() - throttled0)
        .saturating_sub(consumer_throttled_rotate);

    // The least time Azure's limits allow keyturn, after the reserve: two sets per rotation
    // per vault, one Graph write per rotation per tenant, two other operations per rotation
    // per vault, each budget times (1 − reserve).
    let mut per_vault = vec![0usize; fleet.vaults];
    let mut per_tenant = vec![0usize; fleet.tenants];
    for i in 0..fleet.accounts {
        per_vault[fleet.vault_of(i)] += 1;
        per_tenant[fleet.tenant_of(i)] += 1;
    }
    let max_v = *per_vault.iter().max().unwrap_or(&0) as f64;
    let max_t = *per_tenant.iter().max().unwrap_or(&0) as f64;
    let share = 1.0 - args.reserve;
    let min_wall = (2.0 * max_v / (300.0 * share) * 10.0)
        .max(max_t / (3000.0 * share) * 150.0)
        .max(2.0 * max_v / (4000.0 * share) * 10.0);

    // Invariants.
    let mut violations = 0;
    for i in 0..fleet.accounts {
        let (_, upn, secret) = fleet.account(i);
        let r = ctl.invariant(&InvariantQuery {
            tenant: Fleet::tenant_id(fleet.tenant_of(i)),
            user: upn,
            vault: Fleet::vault_name(fleet.vault_of(i)),
            secret,
            staging_secret: None,
        })?;
        if !r.holds {
            violations += 1;
        }
    }
    let rate = completed as f64 / wall.as_secs_f64();
    eprintln!(
        "rotate-all: {completed}/{} in {:.1}s ({:.1}/s); minimum by the limits {:.1}s (ratio {:.3}); 429s {throttled}; invariant violations {violations}; peak VmRSS {} KiB, VmHWM {} KiB",
        fleet.accounts,
        wall.as_secs_f64(),
        rate,
        min_wall,
        wall.as_secs_f64() / min_wall,
        peak_rss,
        hwm_kib
    );

    // The first drift check after the rotate-all: from its first listing until no listing
    // for 3 s (its Key Vault part; it reads a value only for an account the listing shows
    // pending, none here, and the consumer's reads are the other `kv.get`s; its Graph reads
    // do not touch the vault's budget, and the readiness watch keeps reading Graph anyway).
    let mut drift_s = None;
    if consumer.is_some() {
        let lists0 = routes(&ctl.counters(), "kv.list");
        let end = Instant::now() + Duration::from_secs(drift_secs * 2 + 30);
        while routes(&ctl.counters(), "kv.list") == lists0 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        phase("drift check");
        let t = Instant::now();
        let keyturn_kv = || routes(&ctl.counters(), "kv.list") + routes(&ctl.counters(), "kv.set");
        let mut last = keyturn_kv();
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_secs(3) && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = keyturn_kv();
            if now != last {
                last = now;
                quiet = Instant::now();
            }
        }
        phase("");
        drift_s = Some(quiet.duration_since(t).as_secs_f64());
    }
    drop(kt);
    let consumer_seen = match consumer {
        Some(c) => c.stop().await,
        None => Default::default(),
    };
    let mut consumer_json = serde_json::Map::new();
    for (name, seen) in &consumer_seen {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let max = seen.latencies.last().copied().unwrap_or_default();
        eprintln!(
            "consumer, {name}: {} reads, {} failed, {} × 429; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            seen.reads,
            seen.failures,
            seen.throttled,
            ms(percentile(&seen.latencies, 0.5)),
            ms(percentile(&seen.latencies, 0.99)),
            ms(max)
        );
        consumer_json.insert(
            name.clone(),
            serde_json::json!({"reads": seen.reads, "failures": seen.failures,
                "throttled": seen.throttled,
                "p50_ms": ms(percentile(&seen.latencies, 0.5)),
                "p99_ms": ms(percentile(&seen.latencies, 0.99)), "max_ms": ms(max)}),
        );
    }
    if let Some(s) = drift_s {
        eprintln!("drift check: {s:.1}s");
    }

    // The emulator alone, same request mix.
    let capacity = if args.load_workers > 0 {
        let c = load::run(&emu, &fleet, args.load_workers).await?;
        eprintln!(
            "emulator alone: {c:.1} rotations/s ({} workers)",
            args.load_workers
        );
        Some(c)
    } else {
        None
    };

    let result = serde_json::json!({
        "accounts": fleet.accounts, "tenants": fleet.tenants, "vaults": fleet.vaults,
        "limits": limits_on, "concurrency": args.concurrency, "per_tenant": args.per_tenant,
        "seed_s": seed_time.as_secs_f64(),
        "startup_s": startup.as_secs_f64(), "startup_requests": startup_requests,
        "startup_drift_reads_s": startup_drift.as_secs_f64(),
        "startup_kv_requests": startup_kv, "reserve": args.reserve,
        "consumer_rate": consumer_rate, "consumer": consumer_json, "drift_check_s": drift_s,
        "idle_rss_kib": idle_rss_kib, "idle_rss_end_kib": idle_rss_end_kib, "idle_cpu_s": idle_cpu, "idle_secs": args.idle_secs,
        "latency_p50_ms": lat_p50.as_secs_f64() * 1e3, "latency_p99_ms": lat_p99.as_secs_f64() * 1e3,
        "latency_samples": latencies.len(),
        "rotate_all_s": wall.as_secs_f64(), "completed": completed, "rotations_per_s": rate,
        "min_wall_s": min_wall, "ratio": wall.as_secs_f64() / min_wall,
        "throttled": throttled, "violations": violations,
        "peak_rss_kib": peak_rss, "hwm_kib": hwm_kib,
        "rotate_all_cpu_keyturn_s": kt_cpu, "rotate_all_cpu_emulator_s": emu_cpu,
        "requests_per_rotation": per(sent as f64),
        "emulator_capacity_per_s": capacity,
    });
    report(&result, args.json_out.as_deref())?;
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Waits until keyturn's log `stderr` contains `line`, at most 900 s after `started`.
async fn wait_for_log(
    stderr: &std::path::Path,
    line: &str,
    started: Instant,
    never: &str,
) -> Result<()> {
    loop {
        if std::fs::read_to_string(stderr)
            .unwrap_or_default()
            .contains(line)
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("{never}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
