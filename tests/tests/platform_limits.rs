//! The platform's limits through the real binaries and the ARM simulator, which enforces them
//! as ARM does: a VM size the subscription may not use, a regional vCPU quota that runs out
//! (both permanent: the onboarding fails, is compensated, and its event carries ARM's message),
//! and a container name that stays "being deleted" for a while after a purge (a wait: the
//! re-onboarding that meets it succeeds).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::{ProcessHarness, Settings};
use onboarding_contract::events::{self, EventData, OutcomeData};
use sim::faults::LatencyProfile;

fn failure(event: &onboarding_contract::CloudEvent) -> OutcomeData {
    assert_eq!(event.ty, events::ONBOARDING_FAILED, "{event:?}");
    let EventData::Outcome(o) = &event.data else {
        panic!("{event:?}")
    };
    o.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_size_the_subscription_may_not_use_fails_permanently_with_arms_message() {
    let h = ProcessHarness::start(Settings::default()).await;
    h.spawn_worker();
    let event = h
        .request(
            &[
                "send",
                "--tenant",
                "sizes",
                "--request-id",
                "on-1",
                "--vm-size",
                "Standard_Z99s_v9",
            ],
            "on-1",
        )
        .await;
    let o = failure(&event);
    let error = o.error.expect("an error");
    assert_eq!(error.class, "permanent", "{error:?}");
    assert_eq!(error.step.as_deref(), Some("node_pool"));
    assert!(
        error
            .message
            .contains("is not allowed in your subscription"),
        "ARM's own words: {error:?}"
    );
    h.wait_for_empty_queue(Duration::from_secs(30)).await;
    assert_eq!(h.arm_inventory().total, 0, "{:?}", h.arm_resources());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_vcpu_quota_fails_permanently_with_arms_message() {
    let h = ProcessHarness::start(Settings::default()).await;
    h.spawn_worker();
    // 60 nodes of 4 vCPUs: 240, over the subscription's 200.
    let event = h
        .request(
            &[
                "send",
                "--tenant",
                "greedy",
                "--request-id",
                "on-1",
                "--count",
                "60",
            ],
            "on-1",
        )
        .await;
    let o = failure(&event);
    let error = o.error.expect("an error");
    assert_eq!(error.class, "permanent", "{error:?}");
    assert!(error.message.to_lowercase().contains("quota"), "{error:?}");
    h.wait_for_empty_queue(Duration::from_secs(30)).await;
    assert_eq!(h.arm_inventory().total, 0, "{:?}", h.arm_resources());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_again_right_after_a_purge_waits_for_the_container_name_and_succeeds() {
    // Everything instant, except that a deleted container's name stays taken for 6 s (30 s
    // at a fifth of real time).
    let h = ProcessHarness::start(Settings {
        latency: LatencyProfile {
            scale: 0.2,
            operations: Vec::new(),
        },
        ..Settings::default()
    })
    .await;
    h.spawn_worker();
    let on = h
        .request(
            &["send", "--tenant", "again", "--request-id", "on-1"],
            "on-1",
        )
        .await;
    assert_eq!(on.ty, events::ONBOARDED, "{on:?}");
    let off = h
        .request(
            &[
                "offboard",
                "--tenant",
                "again",
                "--request-id",
                "off-1",
                "--purge-data",
            ],
            "off-1",
        )
        .await;
    assert_eq!(off.ty, events::OFFBOARDED, "{off:?}");
    assert_eq!(
        h.arm_inventory().containers_being_deleted.len(),
        1,
        "the name is still being deleted"
    );

    let again = h
        .request(
            &["send", "--tenant", "again", "--request-id", "on-2"],
            "on-2",
        )
        .await;
    assert_eq!(
        again.ty,
        events::ONBOARDED,
        "{again:?}\n{}",
        h.worker_logs(30)
    );
    assert_eq!(h.arm_resources()["blobContainers"].len(), 1);
}
