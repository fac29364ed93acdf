//! Ownership inside the tenant's namespace, through the saga engine with test doubles: an
//! object under a name the worker uses but without its marker (a ServiceAccount, a guard rail)
//! is never adopted, changed or deleted, and the step that meets it fails naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use onboarding_contract::events::{self, EventData};
use onboarding_providers::{KubeObject, KubeProvisioner};
use onboarding_testkit::engine::EngineHarness;
use onboarding_testkit::fixtures::OnboardBuilder;

fn foreign(kind: &str, api_version: &str, name: &str) -> KubeObject {
    KubeObject {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: Some("tenant-acme".into()),
        name: name.into(),
        manifest: serde_json::json!({"metadata": {
            "name": name, "namespace": "tenant-acme",
            "labels": {"app.kubernetes.io/managed-by": "platform-team"}
        }}),
    }
}

/// Onboards acme, replaces one of its objects with a foreign one of the same name, then sends
/// an update: returns the update's outcome event.
async fn update_over(h: &EngineHarness, object: &KubeObject) -> onboarding_contract::CloudEvent {
    let engine = h.engine("w");
    let first = OnboardBuilder::tenant("acme").request("r1").build();
    h.drive(&engine, EngineHarness::first_message(&first)).await;
    let target = worker::config::Target::local("default");
    h.cloud.delete(&target, &object.reference()).await.unwrap();
    h.cloud.apply(&target, object).await.unwrap();
    let update = OnboardBuilder::tenant("acme")
        .request("r2")
        .replicas(1)
        .build();
    h.drive(&engine, EngineHarness::first_message(&update))
        .await;
    h.terminal_events("r2").remove(0)
}

fn error_of(event: &onboarding_contract::CloudEvent) -> onboarding_contract::events::EventError {
    let EventData::Outcome(o) = &event.data else {
        panic!("{event:?}")
    };
    o.error.clone().expect("an error")
}

#[tokio::test]
async fn a_foreign_service_account_in_the_tenant_namespace_is_not_adopted() {
    let h = EngineHarness::new();
    let sa = foreign("ServiceAccount", "v1", "tenant-workload");
    let outcome = update_over(&h, &sa).await;
    assert_eq!(outcome.ty, events::ONBOARDING_FAILED, "{outcome:?}");
    let error = error_of(&outcome);
    assert_eq!(error.code.as_deref(), Some("ResourceNotOwned"), "{error:?}");
    assert!(error.message.contains("platform-team"), "{error:?}");
    let target = worker::config::Target::local("default");
    let live = h
        .cloud
        .get(&target, &sa.reference())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        live["metadata"]["labels"]["app.kubernetes.io/managed-by"], "platform-team",
        "left as it was"
    );
}

#[tokio::test]
async fn a_foreign_guard_rail_is_not_adopted_by_an_update() {
    let h = EngineHarness::new();
    let policy = foreign("NetworkPolicy", "networking.k8s.io/v1", "default-deny");
    let outcome = update_over(&h, &policy).await;
    assert_eq!(outcome.ty, events::ONBOARDING_FAILED, "{outcome:?}");
    assert_eq!(error_of(&outcome).step.as_deref(), Some("guardrails"));
    let target = worker::config::Target::local("default");
    let live = h
        .cloud
        .get(&target, &policy.reference())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        live["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "platform-team"
    );
}
