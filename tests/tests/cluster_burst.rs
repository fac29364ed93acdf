//! A burst of onboardings to one cluster, three worker processes, the shipped saga defaults
//! (attempt limits, budgets, delays): AKS runs one agent-pool operation per cluster at a time
//! (the simulator answers every other with 409 `OperationNotAllowed`), and every tenant must be
//! onboarded, with no faults and again with a quarter of all calls failing transiently while
//! workers are killed at random. Pool operations take 2.4 s here (4 minutes at the simulator's
//! 1/100 of real time); the only setting changed is how often a saga in the cluster's line looks
//! again, scaled the same way (50 ms for the default 5 s).
//!
//! The fault-free run also prints how well the line keeps the cluster busy: the share of the
//! run during which a pool operation was running, and the makespan over the sum of the pool
//! operations. Figures, not assertions: timings on a shared 2-core machine are noisy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::{ProcessHarness, Settings};
use onboarding_contract::events;
use onboarding_transport::SendOutcome;
use rand::{Rng, SeedableRng};
use sim::faults::{FaultPlan, LatencyProfile};

const TENANTS: usize = 32;
const WORKERS: usize = 3;

async fn start(faults: FaultPlan) -> ProcessHarness {
    let h = ProcessHarness::start(Settings {
        latency: LatencyProfile::realistic(0.01),
        faults,
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
    h
}

/// Sends the burst at once; returns the request ids.
async fn send_burst(h: &ProcessHarness) -> Vec<String> {
    let mut requests = Vec::new();
    for i in 0..TENANTS {
        let command = onboarding_testkit::fixtures::OnboardBuilder::tenant(format!("burst-{i}"))
            .request(format!("req-burst-{i}"))
            .build();
        let message = onboarding_transport::envelope::command_message(&command, None);
        assert_eq!(h.queue.send(message).await.unwrap(), SendOutcome::Accepted);
        requests.push(command.request_id().to_string());
    }
    requests
}

/// Every tenant onboarded; one pool each, nothing orphaned.
async fn assert_all_onboarded(h: &ProcessHarness, requests: &[String], within: Duration) {
    let outcomes = h.wait_for_outcomes(requests, within).await;
    let failed: Vec<_> = outcomes
        .values()
        .filter(|e| e.ty != events::ONBOARDED)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {TENANTS} failed: {failed:#?}",
        failed.len()
    );
    let resources = h.arm_resources();
    for kind in ["agentPools", "userAssignedIdentities", "blobContainers"] {
        assert_eq!(resources[kind].len(), TENANTS, "{kind}: {resources:?}");
    }
}

/// How many of `requests` have ended so far.
async fn ended(h: &ProcessHarness, requests: &[String]) -> usize {
    let events = h.events().await;
    let done: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.is_terminal())
        .filter_map(|e| e.request_id())
        .collect();
    requests
        .iter()
        .filter(|r| done.contains(r.as_str()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_onboardings_to_one_cluster_all_succeed_on_the_defaults() {
    let h = start(FaultPlan::default()).await;
    let sent = Instant::now();
    let requests = send_burst(&h).await;
    assert_all_onboarded(&h, &requests, Duration::from_secs(600)).await;
    assert!(h.dead_workers().is_empty(), "a worker died");

    // One create per pool: no attempt was wasted on a busy cluster.
    let spans = h.sims.arm.pool_operations();
    let pools: BTreeSet<&str> = spans.iter().map(|s| s.pool.as_str()).collect();
    assert_eq!(pools.len(), TENANTS, "{pools:?}");
    assert_eq!(spans.len(), TENANTS, "one create per pool: {spans:?}");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_onboardings_succeed_with_a_quarter_of_calls_failing_and_workers_killed() {
    let seed: u64 = onboarding_testkit::env::optional("E2E_SEED")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("fault seed {seed} (E2E_SEED={seed} repeats the simulators' choices)");
    let h = start(FaultPlan {
        transient_rate: 0.25,
        retry_after_secs: 1,
        stall_ms: 300,
        seed: Some(seed),
        ..FaultPlan::default()
    })
    .await;
    let requests = send_burst(&h).await;

    // Kill a worker every few seconds and start another, until every request has ended.
    let killer = {
        let h = &h;
        let requests = requests.clone();
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut alive: Vec<usize> = (0..WORKERS).collect();
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(rng.random_range(4_000..12_000))).await;
                let ended = ended(h, &requests).await;
                if ended == requests.len() {
                    break;
                }
                let victim = alive.remove(rng.random_range(0..alive.len()));
                h.kill_worker(victim);
                eprintln!("killed worker {victim} with {ended} of {TENANTS} ended");
                alive.push(h.spawn_worker());
            }
        }
    };
    killer.await;
    assert_all_onboarded(&h, &requests, Duration::from_secs(900)).await;
    assert!(h.dead_workers().is_empty(), "a worker died on its own");
}
