//! [`RunnerHarness`], the runner-level harness: the worker in process for operations tests,
//! both simulators on loopback ports, the embedded queue and topic in a temp dir, a journal of the test's choice, the context built by
//! `bootstrap` (so the configuration wiring is what runs), and a runner driven until an event.
//! It stays beside the tests because it needs the `worker` crate, which the test kit must not
//! depend on; commands come from the kit's builders (`onboarding_testkit::fixtures`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use onboarding_transport::Subscription;
use serde_json::Value;
use worker::config::{Config, JournalConfig};
use worker::context::Context;
use worker::metrics::Metrics;
use worker::runner::Runner;

/// Generous upper bound for one onboarding against instant simulators (it takes about two
/// seconds); only reached when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The worker's runner in process against both simulators (runner level; see
/// `onboarding_testkit` for the engine-level and `e2e` for the process-level harness).
pub struct RunnerHarness {
    pub sim: sim::Running,
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl RunnerHarness {
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
        let mut config =
            onboarding_testkit::config::embedded(dir.path(), &sim.arm_url(), &sim.kube_url());
        if let Some(journal) = journal {
            config.journal = journal;
        }
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
