//! Ownership end to end: resources someone else made under the names the worker would use (an
//! identity `id-tenant-<t>` and a container `tenant-<t>`, PUT straight to the ARM simulator
//! without the worker's marker) are never adopted, changed or deleted — not by the onboarding
//! that finds them, not by its compensation, not by an offboarding of the tenant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::{ProcessHarness, Settings};
use onboarding_contract::events::EventData;
use serde_json::{Value, json};
use sim::arm::{MSI_API_VERSION, STORAGE_API_VERSION};

/// PUTs `body` at `id` directly on the ARM simulator, as another team would.
async fn put_foreign(h: &ProcessHarness, id: &str, api_version: &str, body: Value) {
    let resp = reqwest::Client::new()
        .put(format!(
            "{}{id}?api-version={api_version}",
            h.sims.arm_url()
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "PUT {id}: {}", resp.status());
}

async fn outcome(
    h: &ProcessHarness,
    request: &str,
) -> (String, onboarding_contract::events::OutcomeData) {
    let outcomes = h
        .wait_for_outcomes(&[request.to_string()], Duration::from_secs(60))
        .await;
    let terminal = &outcomes[request];
    let EventData::Outcome(data) = terminal.data.clone() else {
        panic!("not an outcome: {terminal:?}");
    };
    (terminal.ty.clone(), data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_identity_and_container_survive_a_failed_onboarding_and_an_offboarding_byte_for_byte()
 {
    let h = ProcessHarness::start(Settings::default()).await;
    let tenant = "own";
    let target = h.config.targets.get("default").expect("default target");
    let identity_id =
        onboarding_providers::arm_ids::identity_id(target, &format!("id-tenant-{tenant}")).unwrap();
    let container_id =
        onboarding_providers::arm_ids::blob_container_id(target, &format!("tenant-{tenant}"))
            .unwrap();
    put_foreign(
        &h,
        &identity_id,
        MSI_API_VERSION,
        json!({"location": "westeurope", "tags": {"owner": "payments-team", "tenant": tenant}}),
    )
    .await;
    put_foreign(
        &h,
        &container_id,
        STORAGE_API_VERSION,
        json!({"properties": {"metadata": {"owner": "payments", "ledger": "2026-q4"}}}),
    )
    .await;
    let identity_before = h.arm_get(&identity_id, MSI_API_VERSION).await.unwrap();
    let container_before = h.arm_get(&container_id, STORAGE_API_VERSION).await.unwrap();

    h.spawn_worker();
    h.send_onboard(tenant, "on-1", false).await;
    let (ty, data) = outcome(&h, "on-1").await;
    assert_eq!(
        ty,
        "tenant.onboarding_failed",
        "{data:?}\n{}",
        h.worker_logs(40)
    );
    assert_eq!(data.state, "Failed", "{data:?}");
    let error = data.error.as_ref().expect("the outcome names the error");
    assert_eq!(error.class, "permanent", "{error:?}");
    assert_eq!(error.code.as_deref(), Some("ResourceNotOwned"), "{error:?}");
    let step = error.step.as_deref();
    let named = match step {
        Some("identity") => &identity_id,
        Some("blob_container") => &container_id,
        other => panic!("failed at {other:?}, not at the foreign resource: {error:?}"),
    };
    assert!(
        error.message.contains(named.as_str())
            || error.message.contains(named.rsplit('/').next().unwrap()),
        "the error does not name {named}: {error:?}"
    );
    assert_eq!(
        h.arm_get(&identity_id, MSI_API_VERSION).await.unwrap(),
        identity_before
    );
    assert_eq!(
        h.arm_get(&container_id, STORAGE_API_VERSION).await.unwrap(),
        container_before
    );
    // Nothing of the worker's remains either: the foreign two are the whole ARM inventory.
    let resources = h.arm_resources();
    let all: Vec<&String> = resources.values().flatten().collect();
    assert_eq!(all.len(), 2, "{resources:?}");

    // An offboarding of the tenant, purging data, deletes neither.
    let out = h
        .producer(
            &[
                "offboard",
                "--tenant",
                tenant,
                "--request-id",
                "off-1",
                "--purge-data",
            ],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let (ty, data) = outcome(&h, "off-1").await;
    assert_eq!(ty, "tenant.offboarded", "{data:?}");
    assert!(data.remaining.is_empty(), "{data:?}");
    h.wait_for_empty_queue(Duration::from_secs(30)).await;
    assert_eq!(
        h.arm_get(&identity_id, MSI_API_VERSION).await.unwrap(),
        identity_before
    );
    assert_eq!(
        h.arm_get(&container_id, STORAGE_API_VERSION).await.unwrap(),
        container_before
    );
    let deletes: Vec<String> = h
        .sims
        .arm
        .recorded_requests()
        .into_iter()
        .map(|r| r.operation)
        .filter(|op| {
            op == "arm.identities.delete"
                || op == "arm.blob_containers.delete"
                || op == "arm.identities.put"
                || op == "arm.blob_containers.put"
        })
        .collect();
    assert_eq!(
        deletes,
        ["arm.identities.put", "arm.blob_containers.put"],
        "only the two foreign PUTs ever wrote them"
    );
}
