//! A burst of onboardings to one cluster, three worker processes, the shipped saga defaults
//! (attempt limits, budgets, delays): AKS runs one agent-pool operation per cluster at a time
//! (the simulator answers every other with 409 `OperationNotAllowed`), and with no faults every
//! tenant must be onboarded. Pool operations take 2.4 s here (4 minutes at the simulator's
//! 1/100 of real time); the only setting changed is how often a saga in the cluster's line looks
//! again, scaled the same way (50 ms for the default 5 s).
//!
//! It also prints how well the line keeps the cluster busy: the share of the run during which a
//! pool operation was running, and the makespan over the sum of the pool operations. Figures,
//! not assertions: timings on a shared 2-core machine are noisy (`scripts/bench.sh` has them
//! too).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::{ProcessHarness, Settings};
use onboarding_contract::events;
use onboarding_transport::SendOutcome;
use sim::faults::LatencyProfile;

const TENANTS: usize = 32;
const WORKERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_onboardings_to_one_cluster_all_succeed_on_the_defaults() {
    let h = ProcessHarness::start(Settings {
        latency: LatencyProfile::realistic(0.01),
        saga: worker::config::SagaConfig {
            cluster_turn_poll_ms: 50,
            ..worker::config::SagaConfig::default()
        },
        // The default message budget (20 s) must stay under the lock.
        lock_duration_secs: 30,
        log_filter: "warn".into(),
        ..Settings::default()
    })
    .await;
    for _ in 0..WORKERS {
        h.spawn_worker();
    }
    let sent = Instant::now();
    let mut requests = Vec::new();
    for i in 0..TENANTS {
        let tenant = format!("burst-{i}");
        let request = format!("req-burst-{i}");
        let command = onboarding_testkit::fixtures::OnboardBuilder::tenant(&tenant)
            .request(&request)
            .build();
        let message = onboarding_transport::envelope::command_message(&command, None);
        assert_eq!(h.queue.send(message).await.unwrap(), SendOutcome::Accepted);
        requests.push(request);
    }
    let outcomes = h
        .wait_for_outcomes(&requests, Duration::from_secs(600))
        .await;
    let failed: Vec<_> = outcomes
        .values()
        .filter(|e| e.ty != events::ONBOARDED)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {TENANTS} failed: {failed:#?}",
        failed.len()
    );
    assert!(h.dead_workers().is_empty(), "a worker died");

    // Nothing orphaned, nothing twice: one pool per tenant, each created once.
    let spans = h.sims.arm.pool_operations();
    let pools: BTreeSet<&str> = spans.iter().map(|s| s.pool.as_str()).collect();
    assert_eq!(pools.len(), TENANTS, "{pools:?}");
    assert_eq!(spans.len(), TENANTS, "one create per pool: {spans:?}");
    let resources = h.arm_resources();
    assert_eq!(resources["agentPools"].len(), TENANTS);

    let busy: Duration = spans.iter().map(|s| s.ends - s.began).sum();
    let first = spans.iter().map(|s| s.began).min().unwrap();
    let last = spans.iter().map(|s| s.ends).max().unwrap();
    let run = last - sent;
    println!(
        "cluster burst: {TENANTS} onboardings, {WORKERS} workers: run {:.1} s, pool operations {:.1} s; busy share {:.3} (goal >= 0.95), makespan / sum of pool operations {:.3} (goal <= 1.05)",
        run.as_secs_f64(),
        busy.as_secs_f64(),
        busy.as_secs_f64() / run.as_secs_f64(),
        (last - first).as_secs_f64() / busy.as_secs_f64(),
    );
}
