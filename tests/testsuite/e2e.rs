//! End to end, in-process: the protocol through the real adapters (the official Key Vault
//! SDK, azure_identity, reqwest for Graph) against the emulator over TLS.

use crate::common::*;
use keyturn::audit::{EventKind, MemorySink, Outcome, Trigger};
use keyturn::clock::SystemClock;
use keyturn::daemon::Managed;
use keyturn::protocol::{Engine, Request, RotationError, Tuning};
use keyturn_emulator::{FaultKind, FaultRule};
use std::sync::Arc;
use std::time::Duration;

struct Rig {
    emu: keyturn_emulator::Emulator,
    _dir: tempfile::TempDir,
    loaded: keyturn::config::Loaded,
    accounts: Vec<Managed>,
    audit: MemorySink,
    engine: Arc<Engine>,
}

async fn rig(opts: Opts) -> Rig {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&emu, dir.path(), &opts);
    let loaded = load(&path);
    let http = keyturn::azure::http_client(
        &loaded.config.tls,
        &loaded.config.network,
        keyturn::observe::unobserved(),
    )
    .unwrap();
    let accounts = keyturn::app::accounts(&loaded, &http).unwrap();
    let audit = MemorySink::default();
    let tuning = Tuning {
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        verify_delay: Duration::from_millis(100),
        ..Tuning::default()
    };
    let engine = Arc::new(Engine::new(
        Arc::new(audit.clone()),
        Arc::new(SystemClock),
        tuning,
    ));
    Rig {
        emu,
        _dir: dir,
        loaded,
        accounts,
        audit,
        engine,
    }
}

impl Rig {
    fn account(&self, name: &str) -> &keyturn::protocol::Account {
        &self
            .accounts
            .iter()
            .find(|m| m.account.name == name)
            .unwrap()
            .account
    }

    async fn rotate(&self, name: &str) -> Result<keyturn::protocol::Rotated, RotationError> {
        self.engine
            .rotate(self.account(name), &Request::daemon(Trigger::Cli))
            .await
    }

    fn graph_patches(&self) -> u64 {
        self.emu
            .control()
            .counters()
            .requests
            .get("graph.patch")
            .copied()
            .unwrap_or(0)
    }
}

fn fault(route: &str, kind: FaultKind) -> FaultRule {
    FaultRule {
        route: route.into(),
        kind,
        count: Some(1),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_full_rotation_makes_entra_and_key_vault_agree() {
    let r = rig(Opts::default()).await;
    assert!(invariant(&r.emu, "svc-1").latest_matches, "seeded state");
    let done = r.rotate("svc-1").await.unwrap();
    let report = invariant(&r.emu, "svc-1");
    assert!(report.latest_matches, "{report:?}");
    assert_eq!(report.pending_tag.as_deref(), Some("committed"));
    assert!(
        !r.emu
            .control()
            .check_password(TENANT, "svc-1@contoso.onmicrosoft.com", "Initial-Pass-1!")
            .unwrap(),
        "the old password no longer works"
    );
    // What a consumer reads: the latest version, with keyturn's tags and an expiry.
    let secret = reader(&r.emu, &r.loaded)
        .get_secret("svc-1", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let tags = secret.tags.unwrap();
    assert_eq!(tags["keyturn-rotation-id"], done.rotation_id.to_string());
    assert_eq!(tags["keyturn-trigger"], "cli");
    assert_eq!(secret.content_type.as_deref(), Some("password"));
    assert!(secret.attributes.unwrap().expires.is_some());
    assert_eq!(secret.value.as_ref().map(|v| v.len()), Some(16));
    let kinds = r.audit.kinds();
    assert_eq!(kinds.first(), Some(&EventKind::RotationStarted));
    assert_eq!(kinds.last(), Some(&EventKind::RotationCompleted));
    let verified = r
        .audit
        .events()
        .into_iter()
        .find(|e| e.event == EventKind::RotationVerified)
        .unwrap();
    assert_eq!(verified.outcome, Some(Outcome::Success));
    let applied = r
        .audit
        .events()
        .into_iter()
        .find(|e| e.event == EventKind::RotationApplied)
        .unwrap();
    assert!(
        applied.request_id.is_some(),
        "Graph's request id is recorded"
    );
}

#[tokio::test]
async fn a_lost_graph_answer_is_retried_with_the_same_password() {
    let r = rig(Opts::default()).await;
    r.emu
        .control()
        .add_fault(fault("graph.patch", FaultKind::CommitThenFail))
        .unwrap();
    let done = r.rotate("svc-2").await.unwrap();
    assert!(!done.resumed);
    assert_eq!(
        r.graph_patches(),
        2,
        "the first PATCH's answer was lost; the second succeeded"
    );
    assert_eq!(
        r.emu
            .control()
            .counters()
            .faults_by_kind
            .get("commit_then_fail"),
        Some(&1)
    );
    assert!(invariant(&r.emu, "svc-2").latest_matches);
}

#[tokio::test]
async fn a_dropped_graph_connection_is_an_unknown_outcome_retried() {
    let r = rig(Opts::default()).await;
    let mut rule = fault("graph.patch", FaultKind::CommitThenFail);
    rule.then = Some("drop".into());
    r.emu.control().add_fault(rule).unwrap();
    r.rotate("svc-1").await.unwrap();
    assert!(invariant(&r.emu, "svc-1").latest_matches);
}

#[tokio::test]
async fn a_failed_key_vault_commit_leaves_the_password_pending_until_recovery() {
    let r = rig(Opts {
        verify: false,
        ..Opts::default()
    })
    .await;
    // Slow the PATCH down, and while it runs make the next secret write fail with 403
    // (as when the vault role is removed mid-rotation; the SDK does not retry 403).
    let mut slow = fault("graph.patch", FaultKind::Latency);
    slow.latency_ms = Some(700);
    r.emu.control().add_fault(slow).unwrap();
    let engine = r.engine.clone();
    let account = r.account("svc-1").clone();
    let task = tokio::spawn(async move {
        engine
            .rotate(&account, &Request::daemon(Trigger::Schedule))
            .await
    });
    assert!(wait_for(Duration::from_secs(10), || r.graph_patches() >= 1).await);
    let mut forbid = fault("kv.set", FaultKind::Status);
    forbid.status = Some(403);
    r.emu.control().add_fault(forbid).unwrap();
    let err = task.await.unwrap().unwrap_err();
    assert!(err.is_pending(), "{err}");
    let report = invariant(&r.emu, "svc-1");
    assert!(
        !report.latest_matches && report.pending_matches && report.holds,
        "{report:?}"
    );
    assert_eq!(report.pending_tag.as_deref(), Some("pending"));

    let done = r
        .engine
        .recover(r.account("svc-1"), &Request::daemon(Trigger::Recovery))
        .await
        .unwrap()
        .unwrap();
    assert!(done.resumed);
    let report = invariant(&r.emu, "svc-1");
    assert!(report.latest_matches, "{report:?}");
    assert_eq!(report.pending_tag.as_deref(), Some("committed"));
    let left = r
        .audit
        .events()
        .into_iter()
        .find(|e| e.event == EventKind::RotationLeftPending)
        .unwrap();
    let error = left.error.unwrap();
    assert_eq!(error.http_status, Some(403));
}

#[tokio::test]
async fn verify_warns_for_conditional_access_naming_aadsts53003() {
    let r = rig(Opts::default()).await;
    let done = r.rotate("svc-ca").await.unwrap();
    assert_eq!(done.warnings.len(), 1, "{:?}", done.warnings);
    assert!(
        done.warnings[0].contains("AADSTS53003"),
        "{}",
        done.warnings[0]
    );
    assert!(done.warnings[0].contains("Conditional Access"));
    assert!(
        invariant(&r.emu, "svc-ca").latest_matches,
        "the password is committed anyway"
    );
    let verified = r
        .audit
        .events()
        .into_iter()
        .find(|e| e.event == EventKind::RotationVerified)
        .unwrap();
    assert_eq!(verified.outcome, Some(Outcome::Warning));
    let error = verified.error.unwrap();
    assert_eq!(error.code.as_deref(), Some("AADSTS53003"));
    assert!(
        !error.message.contains("Trace ID"),
        "trace ids are trimmed: {}",
        error.message
    );
}

#[tokio::test]
async fn a_graph_403_names_the_missing_role_and_changes_nothing() {
    let r = rig(Opts {
        accounts: vec![("svc-1", "weak")],
        ..Opts::default()
    })
    .await;
    let err = r.rotate("svc-1").await.unwrap_err();
    assert!(matches!(err, RotationError::Abandoned { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("Authorization_RequestDenied"), "{msg}");
    assert!(
        msg.contains("Privileged Authentication Administrator"),
        "{msg}"
    );
    assert_eq!(r.graph_patches(), 1, "a definite refusal is not retried");
    let report = invariant(&r.emu, "svc-1");
    assert!(report.latest_matches);
    assert_eq!(report.pending_tag.as_deref(), Some("abandoned"));
    assert!(r
        .emu
        .control()
        .check_password(TENANT, "svc-1@contoso.onmicrosoft.com", "Initial-Pass-1!")
        .unwrap());
    let abandoned = r
        .audit
        .events()
        .into_iter()
        .find(|e| e.event == EventKind::RotationAbandoned)
        .unwrap();
    let error = abandoned.error.unwrap();
    assert_eq!(error.http_status, Some(403));
    assert!(error.request_id.is_some(), "Graph's request id is recorded");
}

#[tokio::test]
async fn drift_after_an_out_of_band_change_is_detected_and_rotated_away() {
    let r = rig(Opts {
        verify: false,
        ..Opts::default()
    })
    .await;
    r.rotate("svc-2").await.unwrap();
    assert_eq!(
        r.engine.check_drift(r.account("svc-2")).await.unwrap(),
        None,
        "keyturn's own change is not drift"
    );
    // An admin resets the password in the portal ten minutes later.
    r.emu.control().advance_clock(Duration::from_secs(600));
    r.emu
        .control()
        .set_password(TENANT, "svc-2@contoso.onmicrosoft.com", "Portal-Reset-99!")
        .unwrap();
    assert!(!invariant(&r.emu, "svc-2").holds, "Key Vault is stale");
    let drift = r.engine.check_drift(r.account("svc-2")).await.unwrap();
    assert!(drift.is_some());
    assert_eq!(r.audit.kinds().last(), Some(&EventKind::DriftDetected));
    r.engine
        .rotate(r.account("svc-2"), &Request::daemon(Trigger::Drift))
        .await
        .unwrap();
    assert!(invariant(&r.emu, "svc-2").latest_matches);
}

#[tokio::test]
async fn throttling_is_honoured() {
    let r = rig(Opts {
        verify: false,
        ..Opts::default()
    })
    .await;
    let mut throttle = fault("graph.patch", FaultKind::Status);
    throttle.status = Some(429);
    throttle.retry_after = Some(1);
    throttle.count = Some(2);
    r.emu.control().add_fault(throttle).unwrap();
    let started = std::time::Instant::now();
    r.rotate("svc-1").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 1 was honoured twice"
    );
    assert_eq!(r.graph_patches(), 3);
    assert!(invariant(&r.emu, "svc-1").latest_matches);
}
