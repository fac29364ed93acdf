//! `producer send --wait` against a running worker: the simulators and the worker's real ARM
//! and Kubernetes clients run in this process, the producer as the operator runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::sync::Arc;

use sim::SimOptions;
use sim::faults::FaultPlan;
use worker::config::Config;

struct System {
    dir: tempfile::TempDir,
    config_path: std::path::PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    worker: tokio::task::JoinHandle<()>,
    _sims: sim::Running,
}

async fn start(faults: FaultPlan) -> System {
    let sims = sim::start(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            faults,
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        onboarding_testkit::config::embedded(dir.path(), &sims.arm_url(), &sims.kube_url());
    config.worker.receive_wait_ms = 100;
    config.saga.message_budget_ms = 5000;
    config.saga.step_retry_budget_ms = 1000;
    config.saga.continuation_base_delay_ms = 200;
    let config_path = onboarding_testkit::config::write_config(dir.path(), "worker.toml", &config);
    let config = Config::load(Some(&config_path), Vec::new()).expect("config loads");
    let cx = worker::bootstrap::build_context(Arc::new(config))
        .await
        .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let runner = worker::runner::Runner::new(cx);
    let worker = tokio::spawn(async move { runner.run(rx).await });
    System {
        dir,
        config_path,
        stop,
        worker,
        _sims: sims,
    }
}

impl System {
    async fn producer(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_producer"));
        cmd.arg("--config").arg(&self.config_path).args(args);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }
    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.worker.await.unwrap();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_prints_each_step_and_the_outcome_then_status_shows_the_resources() {
    let sys = start(FaultPlan::default()).await;
    let out = sys
        .producer(&[
            "send",
            "--tenant",
            "acme",
            "--workload",
            "1",
            "--wait",
            "--timeout",
            "60",
        ])
        .await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
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
        assert!(t.contains(step), "no progress line for {step}: {t}");
    }
    assert!(
        t.contains("Succeeded") && t.contains("tenant.onboarded"),
        "{t}"
    );

    // The subscription the run made for itself on the embedded topic went with it: left
    // behind, it would hold every later event.
    let queue_db = rusqlite::Connection::open(sys.dir.path().join("queue.db")).unwrap();
    let left: i64 = queue_db
        .query_row("SELECT COUNT(*) FROM subscriptions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "no subscription left behind");

    let status = sys.producer(&["status", "acme"]).await;
    let s = text(&status);
    assert!(status.status.success(), "{s}");
    assert!(
        s.contains("state Onboarded") && s.contains("tenant-acme"),
        "{s}"
    );

    let off = sys
        .producer(&["offboard", "--tenant", "acme", "--wait", "--timeout", "60"])
        .await;
    assert!(off.status.success(), "{}", text(&off));
    assert!(
        text(&off).contains("blob_container (kept)"),
        "{}",
        text(&off)
    );
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_exits_1_and_names_the_cause_when_the_saga_compensates() {
    let sys = start(FaultPlan {
        fail_ops: vec!["role_assignments.put".into()],
        ..FaultPlan::default()
    })
    .await;
    let out = sys
        .producer(&["send", "--tenant", "doomed", "--wait", "--timeout", "60"])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("Failed") && t.contains("step role_assignment"),
        "{t}"
    );
    assert!(t.contains("undone"), "compensations are shown: {t}");
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboard_wait_of_an_unknown_tenant_exits_4_saying_not_found() {
    let sys = start(FaultPlan::default()).await;
    let out = sys
        .producer(&["offboard", "--tenant", "ghost", "--wait", "--timeout", "60"])
        .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(4), "{t}");
    assert!(t.contains("NotFound") && t.contains("not found"), "{t}");
    assert!(t.contains("nothing was deleted"), "{t}");
    sys.stop().await;
}
