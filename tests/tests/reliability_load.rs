//! Load: a burst of requests on the embedded default (SQLite queue and journal, simulators that
//! answer at once) worked by one worker process with concurrency 32: every request must reach a
//! terminal state, or the dead-letter queue for the few deliberately invalid ones; none may be
//! lost, and none may end twice.
//!
//! The burst is enqueued through the transport directly (the message `producer send` builds:
//! MessageId = request id, SessionId = tenant id): thousands of producer processes would measure
//! process start-up, not the worker.
//!
//! Tenants are spread over several targets (subscriptions): the worker's ARM client keeps a
//! per-subscription write budget like ARM's (a bucket of 200 writes refilled at 10/s, not
//! settable from the configuration file), and an onboarding makes five ARM writes, so one
//! subscription caps the worker at about two onboardings a second however fast everything
//! else is (500 requests on one target took 238 s, nearly all of it waiting for that budget).
//!
//! The default test sends 500 requests over 10 targets (about 20 s of work on two cores in a
//! debug build). The full 5,000-request burst over 50 targets took 214 s (185 s to work off,
//! 27 requests/s, 16 s to read the 44,200 events), which would take the reliability suites
//! past their time budget on every CI run, so it is `#[ignore]`d:
//! `cargo test -p e2e --test reliability_load -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use e2e::{ProcessHarness, Settings, target_name};
use onboarding_contract::events::{REQUEST_REJECTED, TERMINAL_TYPES};
use onboarding_contract::{Command, OnboardTenant};
use onboarding_transport::{OutgoingMessage, SendOutcome};

/// Every this-many-th request is invalid (a tenant id that is not a DNS label).
const INVALID_EVERY: usize = 50;

fn message(i: usize, targets: usize) -> (String, OutgoingMessage, bool) {
    let invalid = i % INVALID_EVERY == INVALID_EVERY - 1;
    let tenant = if invalid {
        format!("Load_{i}")
    } else {
        format!("load-{i}")
    };
    let request = format!("req-load-{i}");
    let mut command = OnboardTenant::new(&request, &tenant);
    command.target = Some(target_name(i % targets));
    let body = Command::Onboard(command).to_json();
    let msg = OutgoingMessage {
        message_id: request.clone(),
        session_id: Some(tenant),
        content_type: Some("application/json".into()),
        subject: Some("OnboardTenant".into()),
        correlation_id: Some(request.clone()),
        body,
        ..OutgoingMessage::default()
    };
    (request, msg, invalid)
}

async fn burst(n: usize, targets: usize, time_limit: Duration) {
    let h = ProcessHarness::start(Settings {
        targets,
        concurrency: 32,
        lock_duration_secs: 30,
        saga: worker::config::SagaConfig {
            message_budget_ms: 10_000,
            step_retry_budget_ms: 2_000,
            ..Settings::default().saga
        },
        receive_wait_ms: 500,
        log_filter: "warn".into(),
        ..Settings::default()
    })
    .await;
    let started = Instant::now();
    let mut valid = BTreeSet::new();
    let mut invalid = BTreeSet::new();
    for i in 0..n {
        let (request, msg, bad) = message(i, targets);
        assert_eq!(h.queue.send(msg).await.unwrap(), SendOutcome::Accepted);
        if bad {
            invalid.insert(request);
        } else {
            valid.insert(request);
        }
    }
    let enqueued = started.elapsed();
    h.spawn_worker();
    let worker_started = Instant::now();

    // Done when nothing is left to deliver: every saga ended or its message was dead-lettered.
    let deadline = Instant::now() + time_limit;
    loop {
        let s = h.queue.stats().await.unwrap();
        if s.active + s.scheduled + s.locked == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} requests not worked off within {time_limit:?}: {s:?}"
        );
        assert!(h.dead_workers().is_empty(), "the worker died");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let worked = worker_started.elapsed();

    // Every valid request ended, in the journal and on the topic, exactly once.
    let mut ended: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut rejected = BTreeSet::new();
    h.pull_events().await;
    let events = h.events().await;
    for e in &events {
        if e.ty == REQUEST_REJECTED {
            rejected.insert(e.id.clone());
        }
        let Some(r) = e.request_id() else {
            continue;
        };
        if TERMINAL_TYPES.contains(&e.ty.as_str()) {
            ended.entry(r.to_string()).or_default().insert(e.id.clone());
        }
    }
    let read_events = worker_started.elapsed() - worked;
    let missing: Vec<_> = valid
        .iter()
        .filter(|r| !ended.contains_key(*r))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "requests without an outcome: {missing:?}"
    );
    for (r, ids) in &ended {
        assert_eq!(
            ids.len(),
            1,
            "{r} ended with {} different events",
            ids.len()
        );
    }
    let onboarded = events.iter().filter(|e| e.ty == "tenant.onboarded").count();
    assert_eq!(
        onboarded,
        valid.len(),
        "every valid request onboards its tenant"
    );
    for i in (0..n).step_by(97) {
        let (request, msg, bad) = message(i, targets);
        if bad {
            continue;
        }
        let (_, rec) = h.record(msg.session_id.as_deref().unwrap()).await.unwrap();
        assert!(
            rec.finished.iter().any(|f| f.request_id == request) && rec.active.is_none(),
            "{request}: {rec:?}"
        );
    }

    // The invalid ones are in the dead-letter queue, each once, and nothing else is.
    let dead = h.dead_letters().await;
    let dead_ids: BTreeSet<String> = dead.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(dead_ids, invalid, "dead letters");
    assert_eq!(dead.len(), invalid.len());
    assert!(
        dead.iter()
            .all(|m| m.dead_letter_reason.as_deref() == Some("SchemaViolation"))
    );
    assert_eq!(
        rejected.len(),
        invalid.len(),
        "one request.rejected per invalid request"
    );

    // One of each resource per onboarded tenant: nothing twice.
    let arm = h.arm_inventory();
    for (kind, ids) in &arm.resources {
        assert_eq!(ids.len(), valid.len(), "{kind}");
        assert_eq!(arm.counters.created[kind], valid.len() as u64, "{kind}");
    }

    eprintln!(
        "load: {n} requests ({} valid, {} invalid): enqueued in {:.1}s, worked off in {:.1}s ({:.0} requests/s), {} events read in {:.1}s",
        valid.len(),
        invalid.len(),
        enqueued.as_secs_f64(),
        worked.as_secs_f64(),
        n as f64 / worked.as_secs_f64(),
        events.len(),
        read_events.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_500_requests_all_end_or_are_dead_lettered_and_none_is_lost() {
    burst(500, 10, Duration::from_secs(240)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "5,000 requests take several minutes on two cores in a debug build; run with --ignored"]
async fn a_burst_of_5000_requests_all_end_or_are_dead_lettered_and_none_is_lost() {
    burst(5_000, 50, Duration::from_secs(1_800)).await;
}
