//! Fault injection: with 30 % of every ARM and Kubernetes API call failing transiently (429
//! with `Retry-After`, 500, 503, or a stall that ends in a 504; the simulators pick evenly), a
//! batch of onboardings must all succeed, each resource created exactly once.
//!
//! The worker's HTTP clients time out after 30 s (`ArmClientOptions::request_timeout`,
//! `KubeClientOptions::request_timeout`, not settable from the configuration file); the
//! simulators' stalls last 300 ms and end in a 504, which the worker retries as transient. A
//! Kubernetes stall takes effect before it times out, so a retried apply must converge.
//!
//! On the shipped saga settings (attempt limit 8, step retry budget 5 s), with two workers on
//! one queue: the storm is ridden out by retrying each call of a multi-call step in process
//! (a guardrails attempt makes seven calls, so most attempts meet a fault), not by a raised
//! attempt limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e::{ProcessHarness, Settings, terminal_ids};
use sim::faults::FaultPlan;
use worker::config::SagaConfig;

const TENANTS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_onboarding_of_a_batch_succeeds_when_thirty_percent_of_calls_fail_transiently() {
    let seed: u64 = onboarding_testkit::env::optional("E2E_SEED")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("fault seed {seed} (E2E_SEED={seed} repeats the simulators' choices)");
    let h = ProcessHarness::start(Settings {
        faults: FaultPlan {
            transient_rate: 0.3,
            retry_after_secs: 1,
            stall_ms: 300,
            seed: Some(seed),
            ..FaultPlan::default()
        },
        // The shipped saga settings (budgets, delays, attempt limits), whose 20 s message
        // budget must stay under the lock; only the cluster line's poll is scaled to the
        // simulator's instant pool operations.
        lock_duration_secs: 30,
        saga: SagaConfig {
            cluster_turn_poll_ms: 200,
            ..SagaConfig::default()
        },
        concurrency: TENANTS,
        ..Settings::default()
    })
    .await;
    // Two workers on one queue.
    h.spawn_worker();
    h.spawn_worker();
    let started = Instant::now();
    let mut requests = Vec::new();
    for i in 0..TENANTS {
        let request = format!("req-storm-{i}");
        h.send_onboard(&format!("storm-{i}"), &request, true).await;
        requests.push(request);
    }
    let outcomes = h
        .wait_for_outcomes(&requests, Duration::from_secs(240))
        .await;
    eprintln!(
        "{TENANTS} onboardings under a 30 % fault rate took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for r in &requests {
        assert_eq!(
            outcomes[r].ty, "tenant.onboarded",
            "{r} did not succeed: {:?}",
            outcomes[r].data
        );
    }
    h.wait_for_empty_queue(Duration::from_secs(60)).await;
    let events = h.events().await;
    for r in &requests {
        assert_eq!(terminal_ids(&events, r).len(), 1, "{r}");
    }
    assert!(h.dead_letters().await.is_empty());

    // The storm really happened, on both APIs.
    let arm = h.arm_inventory();
    let kube = h.sims.kube.inventory();
    let kube_faults: u64 = kube["faults"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    eprintln!(
        "injected faults: ARM {} of {} requests, Kubernetes {kube_faults}",
        arm.counters.faults, arm.counters.requests
    );
    assert!(arm.counters.faults > 0 && kube_faults > 0);

    // Everything exists once: one creation per resource despite retries and stalls.
    let n = TENANTS as u64;
    for (kind, count) in h.creations() {
        let per_tenant = if kind == "kube:NetworkPolicy" { 3 } else { 1 };
        assert_eq!(count, n * per_tenant, "{kind} created {count} times");
    }
    // 5 ARM kinds and 6 Kubernetes kinds (no Role: admins bind a shipped ClusterRole).
    assert_eq!(h.creations().len(), 11, "{:?}", h.creations());
    for (kind, ids) in h.arm_resources() {
        assert_eq!(ids.len(), TENANTS, "{kind}");
    }
    for i in 0..TENANTS {
        let (_, rec) = h.record(&format!("storm-{i}")).await.unwrap();
        assert_eq!(
            rec.resources.len(),
            9,
            "storm-{i}: {:?}",
            rec.resources.keys()
        );
    }
}
