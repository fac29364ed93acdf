//! Duplicates: every request is sent five times and three worker processes work the same
//! SQLite queue and journal at once; each tenant must get one set of resources (the
//! simulators' creation counters: one creation per resource) and each request one terminal
//! event id, however often the outcome is re-published.
//!
//! Of the five sends, two go through `producer send` with the same request id (MessageId =
//! request id, so the queue's duplicate detection drops the second, and the producer says so)
//! and three through `producer send --raw` with the same body (fresh MessageIds, as when an
//! upstream system re-sends after the detection window): those reach the workers, and the
//! saga engine must recognise them as the same request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::{ProcessHarness, Settings, slow_latency, terminal_ids};
use onboarding_contract::commands::WorkloadRequest;
use onboarding_contract::{Command, OnboardTenant};

const TENANTS: usize = 6;
const WORKERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_five_times_to_three_workers_provisions_once_with_one_terminal_event() {
    let h = ProcessHarness::start(Settings {
        // Calls take tens of milliseconds, so copies arrive while their saga is running.
        latency: slow_latency(0.02),
        ..Settings::default()
    })
    .await;
    for _ in 0..WORKERS {
        h.spawn_worker();
    }
    let mut requests = Vec::new();
    for i in 0..TENANTS {
        let tenant = format!("dup-{i}");
        let request = format!("req-dup-{i}");
        let first = h.send_onboard(&tenant, &request, true).await;
        assert_eq!(first["duplicate"], false, "{first}");
        let second = h.send_onboard(&tenant, &request, true).await;
        assert_eq!(
            second["duplicate"], true,
            "the queue must drop a second send with the same MessageId: {second}"
        );
        let mut command = OnboardTenant::new(&request, &tenant);
        command.workload = Some(WorkloadRequest { replicas: 1 });
        let body = h.dir.path().join(format!("{request}.json"));
        std::fs::write(&body, Command::Onboard(command).to_json()).unwrap();
        let mut message_ids = BTreeSet::new();
        for _ in 0..3 {
            let out = h
                .producer(
                    &["send", "--raw", body.to_str().unwrap()],
                    Duration::from_secs(30),
                )
                .await;
            assert_eq!(out.code, Some(0), "{out:?}");
            assert_eq!(out.json()["sessionId"], tenant.as_str());
            message_ids.insert(out.json()["messageId"].as_str().unwrap().to_string());
        }
        assert_eq!(message_ids.len(), 3, "raw sends get distinct MessageIds");
        requests.push(request);
    }

    let outcomes = h
        .wait_for_outcomes(&requests, Duration::from_secs(120))
        .await;
    h.wait_for_empty_queue(Duration::from_secs(60)).await;
    let events = h.events().await;
    for r in &requests {
        assert_eq!(outcomes[r].ty, "tenant.onboarded", "{:?}", outcomes[r].data);
        let published = events
            .iter()
            .filter(|e| e.is_terminal() && e.request_id() == Some(r.as_str()))
            .count();
        assert_eq!(
            terminal_ids(&events, r).len(),
            1,
            "{r}: {published} terminal events with different ids"
        );
        eprintln!("{r}: outcome published {published} time(s), one id");
    }
    assert!(h.dead_letters().await.is_empty());
    assert!(h.dead_workers().is_empty());

    // One set of resources per tenant, each created once.
    let n = TENANTS as u64;
    let creations = h.creations();
    // 5 ARM kinds and 6 Kubernetes kinds (no Role: admins bind a shipped ClusterRole).
    assert_eq!(creations.len(), 11, "{creations:?}");
    for (kind, count) in creations {
        let per_tenant = if kind == "kube:NetworkPolicy" { 3 } else { 1 };
        assert_eq!(count, n * per_tenant, "{kind} created {count} times");
    }
    for (kind, ids) in h.arm_resources() {
        assert_eq!(ids.len(), TENANTS, "{kind}: {ids:?}");
    }

    // The three workers really shared the work.
    let logs = h.worker_logs(10_000);
    let busy = logs
        .split("---- worker ")
        .filter(|section| section.contains("message completed"))
        .count();
    eprintln!("{busy} of {WORKERS} workers settled messages");
    assert!(busy >= 2, "only {busy} worker(s) did any work:\n{logs}");
}
