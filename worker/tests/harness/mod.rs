//! The worker in process for operations tests: both simulators on loopback ports, the embedded
//! queue and topic in a temp dir, a journal of the test's choice, the context built by
//! `bootstrap` (so the configuration wiring is what runs), and a runner driven until an event.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use onboarding_transport::envelope::TRACEPARENT_PROPERTY;
use onboarding_transport::{OutgoingMessage, Subscription};
use serde_json::{Value, json};
use worker::config::{Config, JournalConfig, Target, TransportConfig};
use worker::context::Context;
use worker::metrics::Metrics;
use worker::runner::Runner;

/// Generous upper bound for one onboarding against instant simulators (it takes about two
/// seconds); only reached when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(120);

pub struct Harness {
    pub sim: sim::Running,
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl Harness {
    /// Simulators with `options`; the SQLite journal unless `journal` is given.
    pub async fn start(options: sim::SimOptions, journal: Option<JournalConfig>) -> Self {
        let sim = sim::start(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            options,
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut target = Target::local("default");
        target.arm_endpoint = sim.arm_url();
        target.kubernetes.server = Some(sim.kube_url());
        let mut config = Config {
            transport: TransportConfig::Embedded {
                path: dir.path().join("queue.db"),
                lock_duration_secs: 60,
                max_delivery_count: 10,
                duplicate_detection_window_secs: 600,
            },
            journal: journal.unwrap_or(JournalConfig::Sqlite {
                path: dir.path().join("journal.db"),
            }),
            targets: BTreeMap::from([("default".to_string(), target)]),
            ..Config::default()
        };
        // A one-second budget: the node pool (whose operation asks to be polled a second later)
        // cannot finish within the first message, so every onboarding has a continuation.
        config.saga.message_budget_ms = 1_000;
        config.saga.step_retry_budget_ms = 300;
        config.saga.retry_initial_delay_ms = 20;
        config.saga.continuation_base_delay_ms = 200;
        config.worker.receive_wait_ms = 100;
        config.worker.concurrency = 4;
        config.worker.shutdown_grace_ms = 5_000;
        config.health.port = 0;
        let config = config.normalised();
        config
            .validate()
            .expect("the harness configuration is valid");
        Self { sim, dir, config }
    }

    pub fn queue_path(&self) -> PathBuf {
        self.dir.path().join("queue.db")
    }

    /// The context `worker run` would build from this configuration, recording into `metrics`.
    pub async fn context(&self, metrics: Metrics) -> Context {
        worker::bootstrap::build_context_with(Arc::new(self.config.clone()), metrics)
            .await
            .expect("context")
    }
}

/// An `OnboardTenant` body with a workload, so that all nine steps run.
pub fn onboard_body(tenant: &str, request_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": "1.0",
        "kind": "OnboardTenant",
        "requestId": request_id,
        "tenantId": tenant,
        "nodePool": {"vmSize": "Standard_D4s_v5", "count": 1},
        "workload": {"replicas": 1},
    }))
    .unwrap()
}

/// A command message as the producer sends it.
pub fn command(
    tenant: &str,
    message_id: &str,
    body: Vec<u8>,
    traceparent: Option<&str>,
) -> OutgoingMessage {
    let mut properties = BTreeMap::new();
    if let Some(tp) = traceparent {
        properties.insert(TRACEPARENT_PROPERTY.to_string(), tp.to_string());
    }
    OutgoingMessage {
        message_id: message_id.to_string(),
        session_id: Some(tenant.to_string()),
        content_type: Some("application/json".into()),
        subject: Some("OnboardTenant".into()),
        correlation_id: Some(message_id.to_string()),
        body,
        application_properties: properties,
        scheduled_enqueue_time: None,
    }
}

/// Run `runner` until `done` has seen every event it waits for, then stop it (as SIGTERM
/// would) and return every event received, in order.
pub async fn run_until(
    runner: &Runner,
    events: &mut Box<dyn Subscription>,
    mut done: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = {
        let runner = runner.clone();
        tokio::spawn(async move { runner.run(stopped).await })
    };
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    while !done(&seen) {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the awaited events did not arrive within {PATIENCE:?}; received: {seen:#?}"
        );
        if let Some(m) = events.next(Duration::from_millis(200)).await.unwrap() {
            seen.push(serde_json::from_slice::<Value>(&m.body).unwrap());
        }
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    seen
}

/// Whether an event of type `ty` about `tenant` is among `events`.
pub fn has_event(events: &[Value], ty: &str, tenant: &str) -> bool {
    events
        .iter()
        .any(|e| e["type"] == ty && e["subject"] == tenant)
}
