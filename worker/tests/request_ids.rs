//! Request ids as global idempotency keys, through the saga engine with test doubles: an id
//! names one request of one tenant with one body forever, and a request the tenant carried out
//! before is never applied again once a later one was accepted, however long ago it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;

use onboarding_contract::validate::RejectReason;
use onboarding_saga::record::TenantState;
use onboarding_testkit::engine::EngineHarness;
use onboarding_testkit::fixtures::OnboardBuilder;

fn deployment(h: &EngineHarness) -> String {
    h.cloud
        .inventory()
        .into_iter()
        .find(|r| r.starts_with("Deployment/"))
        .expect("a deployment")
}

#[tokio::test]
async fn a_request_id_reused_for_another_tenant_is_refused_and_provisions_nothing() {
    let h = EngineHarness::new();
    let engine = h.engine("w1");
    let acme = OnboardBuilder::tenant("acme").request("shared-1").build();
    h.drive(&engine, EngineHarness::first_message(&acme)).await;
    let calls = h.cloud.calls.load(Ordering::SeqCst);

    let beta = OnboardBuilder::tenant("beta").request("shared-1").build();
    let refusal = h
        .refused(&engine, EngineHarness::first_message(&beta))
        .await;

    assert_eq!(refusal.reason, RejectReason::RequestIdReused);
    assert_eq!(refusal.errors[0].path, "/requestId");
    assert!(refusal.errors[0].message.contains("acme"), "{refusal}");
    assert_eq!(
        h.cloud.calls.load(Ordering::SeqCst),
        calls,
        "nothing called"
    );
    assert!(h.journal.record("beta").is_none(), "no record for beta");
    assert_eq!(
        h.terminal_events("shared-1").len(),
        1,
        "only acme's outcome"
    );
}

#[tokio::test]
async fn a_request_id_resent_with_another_body_is_refused() {
    let h = EngineHarness::new();
    let engine = h.engine("w1");
    let first = OnboardBuilder::tenant("acme").request("r1").replicas(1);
    h.drive(&engine, EngineHarness::first_message(&first.build()))
        .await;
    let before = h.record("acme");

    let changed = OnboardBuilder::tenant("acme")
        .request("r1")
        .replicas(3)
        .build();
    let refusal = h
        .refused(&engine, EngineHarness::first_message(&changed))
        .await;

    assert_eq!(refusal.reason, RejectReason::RequestIdReused);
    assert!(
        refusal.errors[0].message.contains("different body"),
        "{refusal}"
    );
    assert_eq!(h.record("acme"), before, "the tenant is untouched");
}

#[tokio::test]
async fn an_old_request_replayed_after_sixty_updates_changes_nothing() {
    let h = EngineHarness::new();
    let engine = h.engine("w1");
    let old = OnboardBuilder::tenant("acme")
        .request("u-0")
        .replicas(1)
        .build();
    h.drive(&engine, EngineHarness::first_message(&old)).await;
    for i in 1..=60 {
        let update = OnboardBuilder::tenant("acme")
            .request(format!("u-{i}"))
            .replicas(2)
            .build();
        h.drive(&engine, EngineHarness::first_message(&update))
            .await;
    }
    let before = h.record("acme");
    assert!(
        before.finished_event("u-0").is_none(),
        "the record forgot u-0"
    );
    let live = deployment(&h);
    let calls = h.cloud.calls.load(Ordering::SeqCst);
    let published = h.topic.events().len();

    let refusal = h.refused(&engine, EngineHarness::first_message(&old)).await;

    assert_eq!(refusal.reason, RejectReason::Superseded);
    assert!(refusal.errors[0].message.contains("u-60"), "{refusal}");
    assert_eq!(
        h.cloud.calls.load(Ordering::SeqCst),
        calls,
        "nothing called"
    );
    assert_eq!(deployment(&h), live);
    assert_eq!(h.record("acme"), before, "the tenant is untouched");
    assert_eq!(h.topic.events().len(), published, "no outcome re-published");
}

#[tokio::test]
async fn a_request_replayed_after_a_later_one_finished_is_refused_as_superseded() {
    let h = EngineHarness::new();
    let engine = h.engine("w1");
    let first = OnboardBuilder::tenant("acme")
        .request("r1")
        .replicas(1)
        .build();
    h.drive(&engine, EngineHarness::first_message(&first)).await;
    let second = OnboardBuilder::tenant("acme")
        .request("r2")
        .replicas(2)
        .build();
    h.drive(&engine, EngineHarness::first_message(&second))
        .await;

    let refusal = h
        .refused(&engine, EngineHarness::first_message(&first))
        .await;

    assert_eq!(refusal.reason, RejectReason::Superseded);
    assert_eq!(h.record("acme").state, TenantState::Onboarded);
    assert_eq!(
        h.terminal_events("r1").len(),
        1,
        "r1's outcome not re-published"
    );

    // The latest request is still answered with its outcome.
    h.drive(&engine, EngineHarness::first_message(&second))
        .await;
    let r2 = h.terminal_events("r2");
    assert_eq!(r2.len(), 2);
    assert_eq!(r2[0].id, r2[1].id);
}
