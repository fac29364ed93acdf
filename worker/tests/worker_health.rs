//! The health server over HTTP: `/metrics` after real work (the runner in process against the
//! simulators), `/readyz` with a journal that is down, and ARM throttling counted by the client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use harness::{RunnerHarness, has_event, run_until};
use onboarding_journal::{Journal, JournalError, NameClaim, Versioned};
use onboarding_testkit::fixtures::{MessageBuilder, OnboardBuilder};
use serde_json::Value;
use worker::health::{HealthState, PROMETHEUS_CONTENT_TYPE};
use worker::metrics::Metrics;
use worker::runner::Runner;

/// Serve `state` on a loopback port; returns the base URL.
async fn serve(state: HealthState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(worker::health::serve(
        listener,
        state,
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// `name{labels} value` lines of a Prometheus text exposition, keyed by everything before the
/// value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {samples:#?}"))
}

#[tokio::test]
async fn metrics_count_an_onboarding_and_a_dead_letter_by_outcome() {
    let h = RunnerHarness::start(sim::SimOptions::default(), None).await;
    let metrics = Metrics::default();
    let cx = h.context(metrics.clone()).await;
    let mut events = cx.topic.subscribe("test").await.unwrap();
    cx.queue
        .send(
            OnboardBuilder::tenant("acme")
                .request("r1")
                .with_workload()
                .message()
                .build(),
        )
        .await
        .unwrap();
    cx.queue
        .send(MessageBuilder::raw("broken", "bad-1", b"{not json".to_vec()).build())
        .await
        .unwrap();
    let runner = Runner::new(cx.clone());
    run_until(&runner, &mut events, |seen| {
        has_event(seen, "tenant.onboarded", "acme")
            && seen.iter().any(|e| e["type"] == "request.rejected")
    })
    .await;

    let base = serve(HealthState::new(
        cx.queue.clone(),
        cx.journal.clone(),
        metrics,
    ))
    .await;
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        PROMETHEUS_CONTENT_TYPE
    );
    let text = response.text().await.unwrap();
    let s = samples(&text);

    let [received, completed, dead_lettered, abandoned] = runner.stats().snapshot();
    // The command, at least one continuation (the node pool is polled a second later), the
    // malformed message.
    assert!(received >= 3, "{received} messages");
    assert_eq!(
        sample(&s, "onboarding_messages_received_total"),
        received as f64
    );
    assert_eq!(
        sample(
            &s,
            r#"onboarding_messages_settled_total{outcome="completed"}"#
        ),
        completed as f64
    );
    assert_eq!(completed, received - 1);
    assert_eq!(
        sample(
            &s,
            r#"onboarding_messages_settled_total{outcome="dead_lettered"}"#
        ),
        1.0
    );
    assert_eq!(dead_lettered, 1);
    assert_eq!(
        sample(
            &s,
            r#"onboarding_messages_settled_total{outcome="abandoned"}"#
        ),
        abandoned as f64
    );
    assert_eq!(
        sample(
            &s,
            r#"onboarding_dead_letters_total{reason="MalformedJson"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&s, r#"onboarding_sagas_finished_total{state="succeeded"}"#),
        1.0
    );
    assert_eq!(
        sample(&s, r#"onboarding_sagas_finished_total{state="failed"}"#),
        0.0
    );
    assert_eq!(sample(&s, "onboarding_arm_throttled_total"), 0.0);
    for step in [
        "namespace",
        "node_pool",
        "identity",
        "blob_container",
        "federated_credential",
        "role_assignment",
        "service_account",
        "guardrails",
        "workload",
    ] {
        let series = format!(
            r#"onboarding_step_duration_seconds_count{{step="{step}",phase="forward",outcome="succeeded"}}"#
        );
        assert_eq!(sample(&s, &series), 1.0, "{series}");
    }
    assert!(
        sample(
            &s,
            r#"onboarding_step_duration_seconds_count{step="node_pool",phase="forward",outcome="pending"}"#
        ) >= 1.0
    );
    assert!(!text.contains("onboarding_compensations_total{"), "{text}");
}

#[tokio::test]
async fn a_refused_step_counts_a_compensation_and_a_failed_saga() {
    let options = sim::SimOptions {
        faults: sim::faults::FaultPlan {
            fail_ops: vec!["role_assignments.put".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let h = RunnerHarness::start(options, None).await;
    let metrics = Metrics::default();
    let cx = h.context(metrics.clone()).await;
    let mut events = cx.topic.subscribe("test").await.unwrap();
    cx.queue
        .send(
            OnboardBuilder::tenant("acme")
                .request("r1")
                .with_workload()
                .message()
                .build(),
        )
        .await
        .unwrap();
    run_until(&Runner::new(cx.clone()), &mut events, |seen| {
        has_event(seen, "tenant.onboarding_failed", "acme")
    })
    .await;
    let base = serve(HealthState::new(
        cx.queue.clone(),
        cx.journal.clone(),
        metrics,
    ))
    .await;
    let s = samples(
        &reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(
        sample(
            &s,
            r#"onboarding_compensations_total{trigger="step_failed"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&s, r#"onboarding_sagas_finished_total{state="failed"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &s,
            r#"onboarding_step_duration_seconds_count{step="role_assignment",phase="forward",outcome="permanent"}"#
        ),
        1.0
    );
    assert!(
        sample(
            &s,
            r#"onboarding_step_duration_seconds_count{step="identity",phase="compensation",outcome="succeeded"}"#
        ) >= 1.0
    );
}

/// A journal whose storage cannot be reached.
#[derive(Debug)]
struct UnreachableJournal;

#[async_trait::async_trait]
impl Journal for UnreachableJournal {
    async fn load(&self, _: &str) -> Result<Option<Versioned<Value>>, JournalError> {
        Err(down())
    }
    async fn store(&self, _: &str, _: &Value, _: Option<u64>) -> Result<u64, JournalError> {
        Err(down())
    }
    async fn keys(&self) -> Result<Vec<String>, JournalError> {
        Err(down())
    }
    async fn claim_names(&self, _: &str, _: &[NameClaim]) -> Result<(), JournalError> {
        Err(down())
    }
    async fn release_names(&self, _: &str, _: &[NameClaim]) -> Result<(), JournalError> {
        Err(down())
    }
    async fn ping(&self) -> Result<(), JournalError> {
        Err(down())
    }
}

fn down() -> JournalError {
    JournalError::Unavailable("connection refused by journal.example:443".into())
}

fn embedded_queue(dir: &tempfile::TempDir) -> Arc<dyn onboarding_transport::Queue> {
    Arc::new(
        onboarding_transport::sqlite::SqliteTransport::open(
            &dir.path().join("queue.db"),
            Default::default(),
            Arc::new(onboarding_core::SystemClock),
        )
        .unwrap(),
    )
}

#[tokio::test]
async fn readyz_is_503_naming_the_journal_when_the_journal_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let state = HealthState::new(
        embedded_queue(&dir),
        Arc::new(UnreachableJournal),
        Metrics::default(),
    );
    let base = serve(state).await;

    let live = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(
        live.status(),
        200,
        "liveness does not depend on the journal"
    );

    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "not ready: journal", "{body}");
    assert_eq!(body["checks"]["transport"], "ok", "{body}");
    let why = body["checks"]["journal"].as_str().unwrap();
    assert!(why.contains("journal.example:443"), "{why}");
}

#[tokio::test]
async fn readyz_is_200_when_both_answer_and_503_once_shutting_down() {
    let dir = tempfile::tempdir().unwrap();
    let journal =
        onboarding_journal::sqlite::SqliteJournal::open(&dir.path().join("journal.db")).unwrap();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let state = HealthState::new(embedded_queue(&dir), Arc::new(journal), Metrics::default())
        .with_stopping(stopping);
    let base = serve(state).await;

    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["journal"], "ok", "{body}");
    assert_eq!(body["checks"]["transport"], "ok", "{body}");

    stop.send(true).unwrap();
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "not ready: worker", "{body}");
}

#[tokio::test]
async fn throttled_arm_answers_are_counted() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = {
        let calls = calls.clone();
        axum::Router::new().fallback(move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "1")],
                        r#"{"error":{"code":"SubscriptionRequestsThrottled","message":"slow down"}}"#,
                    )
                } else {
                    (axum::http::StatusCode::OK, [("retry-after", "0")], "{}")
                }
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let metrics = Metrics::default();
    let client = onboarding_azure::ArmClient::new(
        endpoint,
        None,
        onboarding_azure::ArmClientOptions {
            recorder: std::sync::Arc::new(metrics.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let op = onboarding_azure::client::Op {
        operation: "read identity",
        resource: "/subscriptions/s/resourceGroups/rg",
    };
    let url = client
        .url("/subscriptions/s/resourceGroups/rg", "2024-11-30")
        .unwrap();
    let first = client
        .send(reqwest::Method::GET, url.clone(), None, op)
        .await
        .unwrap();
    assert_eq!(first.status, 429);
    let second = client
        .send(reqwest::Method::GET, url, None, op)
        .await
        .unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(metrics.counter(worker::metrics::ARM_THROTTLED, &[]), 1);
    assert!(
        metrics
            .render_prometheus()
            .contains("\nonboarding_arm_throttled_total 1\n")
    );
}
