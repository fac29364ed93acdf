//! Drift over time, through the real binaries on a real Kubernetes control plane and the ARM
//! simulator: a worker with `[drift] interval_secs = 2` says nothing about clean tenants, and
//! once a tenant's default-deny NetworkPolicy is deleted it publishes one `tenant.drifted` event
//! naming it within two intervals (plus the time a check takes), and not again for the same
//! drift; the clean tenant is never named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e::{KubeSide, ProcessHarness, Settings, unique_tenant, wait_until};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams};
use onboarding_contract::events::{CloudEvent, DRIFTED, EventData};
use onboarding_testkit::real_cluster::{RealCluster, bind_verifier_to_worker};

const INTERVAL: Duration = Duration::from_secs(2);
/// What one round of checks may take on top of the interval (reads and SubjectAccessReviews
/// for each tenant on a real API server).
const ROUND: Duration = Duration::from_secs(4);

fn drifted(events: &[CloudEvent], tenant: &str) -> Vec<CloudEvent> {
    events
        .iter()
        .filter(|e| e.ty == DRIFTED && e.subject.as_deref() == Some(tenant))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_network_policy_is_announced_once_as_tenant_drifted_and_a_clean_tenant_never() {
    let Some(cluster) = RealCluster::connect("the drift check on a real cluster").await else {
        return;
    };
    let Some(kube) = KubeSide::real(&cluster) else {
        return;
    };
    let h = ProcessHarness::start(Settings {
        kube,
        ..Settings::default()
    })
    .await;
    // The worker reads this file when it starts: the check on, every two seconds.
    let mut config = h.config.clone();
    config.drift.interval_secs = INTERVAL.as_secs();
    onboarding_testkit::config::write_config(h.dir.path(), "worker.toml", &config);
    bind_verifier_to_worker(&cluster).await;
    h.spawn_worker();

    let (a, b) = (unique_tenant("dra"), unique_tenant("drb"));
    h.onboard_with_own_admin_group(&a).await;
    h.onboard_with_own_admin_group(&b).await;
    h.wait_for_empty_queue(Duration::from_secs(60)).await;

    // Clean tenants: several rounds, nothing said.
    tokio::time::sleep(INTERVAL * 2 + ROUND).await;
    let events = h.events().await;
    assert!(
        drifted(&events, &a).is_empty() && drifted(&events, &b).is_empty(),
        "clean tenants are not announced: {:#?}\n{}",
        drifted(&events, &a),
        h.worker_logs(40)
    );

    let ns = onboarding_contract::names::TenantNames::derive(&a)
        .unwrap()
        .namespace;
    Api::<NetworkPolicy>::namespaced(cluster.admin.clone(), &ns)
        .delete("default-deny", &DeleteParams::default())
        .await
        .expect("delete a guard rail");
    let tampered = Instant::now();
    let event = wait_until(INTERVAL * 2 + ROUND, "a tenant.drifted event", || async {
        drifted(&h.events().await, &a).into_iter().next()
    })
    .await;
    let took = tampered.elapsed();
    eprintln!("tenant.drifted {took:?} after the tampering");
    let EventData::Drifted(data) = &event.data else {
        panic!("a tenant.drifted event carries DriftedData: {event:?}");
    };
    assert_eq!(data.tenant_id, a);
    assert!(
        data.findings
            .iter()
            .any(|f| f.name == "guardrail:NetworkPolicy/default-deny" && f.status == "missing"),
        "the event names the deleted policy: {data:#?}"
    );

    // The same drift, found again and again, is not announced again.
    tokio::time::sleep(INTERVAL * 2 + ROUND).await;
    let events = h.events().await;
    assert_eq!(
        drifted(&events, &a).len(),
        1,
        "announced once: {:#?}",
        drifted(&events, &a)
    );
    assert!(
        drifted(&events, &b).is_empty(),
        "the clean tenant is never named"
    );
}
