//! `ArmProvisioner` over real HTTP against the ARM simulator: full create and delete,
//! idempotence, and the classification of every kind of failure.
#![allow(clippy::unwrap_used)] // tests may unwrap (developers' guide)

mod azure_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use azure_support::*;
use onboarding_azure::ArmClientOptions;
use onboarding_core::{Clock, ErrorClass};
use onboarding_providers::{AzureProvisioner, Progress};
use onboarding_testkit::fakes::ManualClock;
use sim::SimOptions;
use sim::faults::{FaultPlan, LatencyProfile};
use worker::arm_budget::JournalBudgetStore;

async fn inventory(env: &Env) -> serde_json::Value {
    reqwest::get(format!("{}/_sim/inventory", env.running.arm_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn creating_all_five_resources_then_deleting_them_leaves_an_empty_inventory() {
    let env = start(SimOptions::default()).await;
    let created = create_all(&env.arm, &env.target, "acme").await.unwrap();
    let inv = inventory(&env).await;
    assert_eq!(inv["total"], 5, "{inv}");
    for kind in [
        "agentPools",
        "userAssignedIdentities",
        "federatedIdentityCredentials",
        "blobContainers",
        "roleAssignments",
    ] {
        assert_eq!(
            inv["resources"][kind].as_array().unwrap().len(),
            1,
            "{kind}: {inv}"
        );
    }
    assert_eq!(
        inv["resources"]["roleAssignments"][0],
        created.role_assignment_id
    );
    // The identity is readable, and the assignment carries the ABAC condition.
    let got = env
        .arm
        .get_identity(&env.target, "id-acme")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.principal_id, created.identity_principal);
    assert_eq!(got.entra_tenant_id, sim::arm::SIM_TENANT_ID);
    let put = env
        .running
        .arm
        .recorded_requests()
        .into_iter()
        .find(|r| r.operation == "arm.role_assignments.put")
        .unwrap();
    assert_eq!(
        put.body.unwrap()["properties"]["condition"],
        onboarding_providers::rbac::blob_container_condition("tenant-acme").unwrap()
    );

    delete_all(&env.arm, &env.target, "acme", &created)
        .await
        .unwrap();
    let inv = inventory(&env).await;
    assert_eq!(inv["total"], 0, "{inv}");
    assert_eq!(inv["operationsInProgress"], 0, "{inv}");
    // Deleting again is success: everything is already gone.
    delete_all(&env.arm, &env.target, "acme", &created)
        .await
        .unwrap();
}

#[tokio::test]
async fn creating_again_changes_nothing() {
    let env = start(SimOptions::default()).await;
    let first = create_all(&env.arm, &env.target, "acme").await.unwrap();
    let before = inventory(&env).await["resources"].clone();
    let requests_before = env.running.arm.recorded_requests().len();
    let second = create_all(&env.arm, &env.target, "acme").await.unwrap();
    assert_eq!(first, second);
    assert_eq!(inventory(&env).await["resources"], before);
    // The pool already matched its spec: the second run only read it.
    let again = &env.running.arm.recorded_requests()[requests_before..];
    assert!(
        again.iter().all(|r| r.operation != "arm.agent_pools.put"),
        "{again:?}"
    );
}

/// ARM client options whose write budget lives in a journal on `dir` (as the worker's does) and
/// runs on a manual clock, with the journal-backed store to look into.
fn journal_budget(
    dir: &std::path::Path,
) -> (ArmClientOptions, JournalBudgetStore, Arc<ManualClock>) {
    let clock = ManualClock::new();
    let journal = onboarding_journal::sqlite::SqliteJournal::open(&dir.join("journal.db")).unwrap();
    let store = JournalBudgetStore::new(Arc::new(journal), clock.clone());
    let options = ArmClientOptions {
        budget_store: Some(Arc::new(store.clone())),
        clock: clock.clone(),
        ..ArmClientOptions::default()
    };
    (options, store, clock)
}

/// The write bucket of the simulator's subscription, as the journal has it.
async fn shared_bucket(env: &Env, store: &JournalBudgetStore) -> onboarding_azure::SharedBucket {
    let host = url::Url::parse(&env.running.arm_url()).unwrap();
    let key = format!(
        "{}|{}",
        host.host_str().unwrap(),
        env.target.subscription_id
    );
    store
        .bucket(&key)
        .await
        .unwrap()
        .expect("the bucket exists")
}

#[tokio::test]
async fn throttling_with_retry_after_is_transient_and_carries_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let (options, store, clock) = journal_budget(dir.path());
    let env = start_with(
        SimOptions {
            arm_write_bucket: Some((1, 0.01)),
            ..SimOptions::default()
        },
        options,
    )
    .await;
    env.arm
        .ensure_identity(&env.target, &TenantResources::tenant("a").identity())
        .await
        .unwrap();
    // ARM said no write is left: the shared bucket holds none either.
    assert!(shared_bucket(&env, &store).await.tokens < 1.0);
    let err = env
        .arm
        .ensure_identity(&env.target, &TenantResources::tenant("b").identity())
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    assert_eq!(err.code.as_deref(), Some("SubscriptionRequestsThrottled"));
    let retry_after = err.retry_after_secs.unwrap();
    assert!(retry_after >= 1, "{err:?}");
    // The 429 blocks every replica's writes to the subscription until its Retry-After.
    let bucket = shared_bucket(&env, &store).await;
    assert_eq!(bucket.tokens, 0.0);
    assert_eq!(
        bucket.blocked_until,
        Some(clock.now() + chrono::TimeDelta::seconds(i64::try_from(retry_after).unwrap())),
        "{bucket:?}"
    );
}

#[tokio::test]
async fn arms_remaining_writes_header_lowers_the_shared_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let (options, store, _) = journal_budget(dir.path());
    let env = start_with(
        SimOptions {
            arm_write_bucket: Some((4, 0.001)),
            ..SimOptions::default()
        },
        options,
    )
    .await;
    env.arm
        .ensure_identity(&env.target, &TenantResources::tenant("a").identity())
        .await
        .unwrap();
    let writes: Vec<_> = env
        .running
        .arm
        .recorded_requests()
        .into_iter()
        .filter(|r| r.method == "PUT" || r.method == "DELETE")
        .collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    // Our bucket of 200 had 199 left; ARM's of 4 answered `...-subscription-writes: 3`.
    assert_eq!(shared_bucket(&env, &store).await.tokens, 3.0);
}

#[tokio::test]
async fn server_errors_and_stalls_are_transient() {
    let env = start_with(
        SimOptions {
            faults: FaultPlan {
                transient_rate: 1.0,
                transient_ops: vec!["arm.identities.put".into()],
                retry_after_secs: 2,
                stall_ms: 5_000,
                seed: Some(11),
                ..FaultPlan::default()
            },
            ..SimOptions::default()
        },
        ArmClientOptions {
            request_timeout: Duration::from_millis(300),
            ..ArmClientOptions::default()
        },
    )
    .await;
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let err = env
            .arm
            .ensure_identity(&env.target, &TenantResources::tenant("a").identity())
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Transient, "{err}");
        if err.code.as_deref() == Some("TooManyRequests") {
            assert_eq!(err.retry_after_secs, Some(2));
        }
        seen.insert(err.code.clone().unwrap_or_default());
        if seen.len() == 4 {
            break;
        }
    }
    let want: BTreeSet<String> = [
        "TooManyRequests",
        "InternalServerError",
        "ServiceUnavailable",
        "Timeout",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn a_permanent_failure_is_permanent_and_names_the_resource() {
    let env = start(SimOptions {
        faults: FaultPlan {
            fail_ops: vec!["arm.blob_containers.put".into()],
            ..FaultPlan::default()
        },
        ..SimOptions::default()
    })
    .await;
    let err = env
        .arm
        .ensure_blob_container(&env.target, &TenantResources::tenant("acme").container())
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(err.code.as_deref(), Some("InjectedPermanentFailure"));
    assert!(err.resource.ends_with("/containers/tenant-acme"), "{err:?}");
    assert!(err.to_string().contains("create blob container"), "{err}");
}

#[tokio::test]
async fn a_busy_cluster_is_a_transient_operation_not_allowed() {
    let env = start(SimOptions {
        latency: LatencyProfile {
            scale: 1.0,
            operations: vec![("arm.agent_pools".into(), 600_000)],
        },
        ..SimOptions::default()
    })
    .await;
    let Progress::Pending(op) = env
        .arm
        .ensure_node_pool(&env.target, &TenantResources::tenant("a").pool())
        .await
        .unwrap()
    else {
        panic!("a pool takes minutes to create");
    };
    assert!(op.retry_after_secs >= 1);
    assert!(matches!(
        env.arm.poll_operation(&env.target, &op).await.unwrap(),
        Progress::Pending(_)
    ));
    // Asking again while it is being created only looks at it.
    let Progress::Pending(again) = env
        .arm
        .ensure_node_pool(&env.target, &TenantResources::tenant("a").pool())
        .await
        .unwrap()
    else {
        panic!("still creating");
    };
    assert_eq!(
        again.kind,
        onboarding_providers::OperationKind::ProvisioningState
    );
    assert!(matches!(
        env.arm.poll_operation(&env.target, &again).await.unwrap(),
        Progress::Pending(_)
    ));
    let err = env
        .arm
        .ensure_node_pool(&env.target, &TenantResources::tenant("b").pool())
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    assert_eq!(err.code.as_deref(), Some("OperationNotAllowed"));
}

#[tokio::test]
async fn a_pool_of_the_same_name_owned_by_another_tenant_is_neither_adopted_nor_deleted() {
    let env = start(SimOptions::default()).await;
    drive_pool(
        &env.arm,
        &env.target,
        &TenantResources::tenant("acme").pool(),
        false,
    )
    .await
    .unwrap();
    let mut intruder = TenantResources::tenant("other").pool();
    intruder.name = TenantResources::tenant("acme").pool().name;
    let err = env
        .arm
        .ensure_node_pool(&env.target, &intruder)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(err.code.as_deref(), Some("ResourceNotOwned"), "{err}");
    assert!(err.message.contains("tenant \"acme\""), "{err}");
    // Deleting it for the other tenant leaves it in place.
    let before = inventory(&env).await["resources"].clone();
    assert_eq!(
        env.arm
            .delete_node_pool(&env.target, &intruder.name, "other")
            .await
            .unwrap(),
        Progress::Done(())
    );
    assert_eq!(inventory(&env).await["resources"], before);
}

#[tokio::test]
async fn the_same_grant_under_a_name_the_worker_did_not_derive_is_not_adopted() {
    let env = start(SimOptions::default()).await;
    let created = create_all(&env.arm, &env.target, "acme").await.unwrap();
    let mut spec = TenantResources::role_assignment(
        &env.target,
        &created.container_id,
        &created.identity_principal,
        "tenant-acme",
    );
    // The assignment that exists is the same grant, under a name this spec does not derive:
    // someone else's (adopting it would mean deleting it on offboarding).
    spec.name = "5e0b8a3c-5c49-4a37-9b7e-1d0b3c1f2a11".into();
    let err = env
        .arm
        .ensure_role_assignment(&env.target, &spec)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(err.code.as_deref(), Some("ResourceNotOwned"), "{err}");
    assert!(err.message.contains(&created.role_assignment_name), "{err}");
    // The same principal and role with another condition: a conflict, named as such.
    spec.condition = onboarding_providers::rbac::blob_container_condition("tenant-other").unwrap();
    let err = env
        .arm
        .ensure_role_assignment(&env.target, &spec)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(err.code.as_deref(), Some("RoleAssignmentConflict"));
    let listed = inventory(&env).await.to_string();
    assert!(listed.contains(&created.role_assignment_name), "{listed}");
}

#[tokio::test]
async fn a_principal_that_has_not_replicated_yet_is_transient() {
    let env = start(SimOptions::default()).await;
    env.running
        .arm
        .set_principal_propagation(Duration::from_secs(600));
    let id = env
        .arm
        .ensure_identity(&env.target, &TenantResources::tenant("acme").identity())
        .await
        .unwrap();
    let c = env
        .arm
        .ensure_blob_container(&env.target, &TenantResources::tenant("acme").container())
        .await
        .unwrap();
    let spec = TenantResources::role_assignment(&env.target, &c.id, &id.principal_id, &c.name);
    let err = env
        .arm
        .ensure_role_assignment(&env.target, &spec)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    assert_eq!(err.code.as_deref(), Some("PrincipalNotFound"));
    env.running.arm.set_principal_propagation(Duration::ZERO);
    env.arm
        .ensure_role_assignment(&env.target, &spec)
        .await
        .unwrap();
}

#[tokio::test]
async fn hostile_container_names_produce_no_condition_and_no_request() {
    let env = start(SimOptions::default()).await;
    let long = "a".repeat(64);
    for name in ["x' OR 1==1", "a]", "Tenant-Acme", long.as_str(), "a/../b"] {
        assert!(
            onboarding_providers::rbac::blob_container_condition(name).is_err(),
            "{name:?}"
        );
        let mut spec = TenantResources::tenant("acme").container();
        spec.name = name.to_string();
        let err = env
            .arm
            .ensure_blob_container(&env.target, &spec)
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::InvalidInput, "{name:?}: {err}");
        assert!(
            env.arm
                .delete_blob_container(&env.target, name, "acme")
                .await
                .is_err()
        );
    }
    assert!(env.running.arm.recorded_requests().is_empty());
}

#[tokio::test]
async fn a_role_assignment_outside_one_container_is_refused_before_any_request() {
    let env = start(SimOptions::default()).await;
    let account = onboarding_providers::arm_ids::storage_account_id(&env.target).unwrap();
    for scope in [
        format!("/subscriptions/{}", env.target.subscription_id),
        account,
    ] {
        let spec = TenantResources::role_assignment(
            &env.target,
            &scope,
            "8e0c8a3c-5c49-4a37-9b7e-1d0b3c1f2a11",
            "tenant-acme",
        );
        let err = env
            .arm
            .ensure_role_assignment(&env.target, &spec)
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::InvalidInput, "{scope}: {err}");
        assert!(err.message.contains("one blob container"), "{err}");
    }
    assert!(env.running.arm.recorded_requests().is_empty());
}

#[tokio::test]
async fn deleting_what_does_not_exist_is_success() {
    let env = start(SimOptions::default()).await;
    let scope =
        onboarding_providers::arm_ids::blob_container_id(&env.target, "tenant-none").unwrap();
    env.arm
        .delete_role_assignment(
            &env.target,
            &TenantResources::role_assignment(
                &env.target,
                &scope,
                "5e0b8a3c-5c49-4a37-9b7e-1d0b3c1f2a11",
                "tenant-none",
            ),
        )
        .await
        .unwrap();
    env.arm
        .delete_blob_container(&env.target, "tenant-none", "none")
        .await
        .unwrap();
    env.arm
        .delete_federated_credential(&env.target, "id-none", "fic-none", "none")
        .await
        .unwrap();
    env.arm
        .delete_identity(&env.target, "id-none", "none")
        .await
        .unwrap();
    assert_eq!(
        env.arm
            .delete_node_pool(&env.target, "tnone", "none")
            .await
            .unwrap(),
        Progress::Done(())
    );
}

// ---------------------------------------------------------------- ownership markers

/// PUTs a resource straight to the simulator, as someone other than the worker would.
async fn put_foreign(env: &Env, id: &str, api_version: &str, body: serde_json::Value) {
    let resp = reqwest::Client::new()
        .put(format!(
            "{}{id}?api-version={api_version}",
            env.running.arm_url()
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

async fn arm_get(env: &Env, id: &str, api_version: &str) -> serde_json::Value {
    reqwest::get(format!(
        "{}{id}?api-version={api_version}",
        env.running.arm_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

#[tokio::test]
async fn an_identity_and_a_container_are_created_with_the_workers_marker_for_the_tenant() {
    let env = start(SimOptions::default()).await;
    let specs = TenantResources::tenant("acme");
    let id = env
        .arm
        .ensure_identity(&env.target, &specs.identity())
        .await
        .unwrap();
    let c = env
        .arm
        .ensure_blob_container(&env.target, &specs.container())
        .await
        .unwrap();
    let identity = arm_get(&env, &id.id, onboarding_azure::api::MANAGED_IDENTITY).await;
    assert_eq!(identity["tags"]["managed-by"], "tenant-onboarding-worker");
    assert_eq!(identity["tags"]["tenant"], "acme");
    let container = arm_get(&env, &c.id, onboarding_azure::api::BLOB_CONTAINERS).await;
    let metadata = &container["properties"]["metadata"];
    assert_eq!(metadata["managed_by"], "tenant-onboarding-worker");
    assert_eq!(metadata["tenant"], "acme");
}

#[tokio::test]
async fn an_existing_foreign_identity_and_container_are_refused_by_name_and_left_unchanged() {
    let env = start(SimOptions::default()).await;
    let specs = TenantResources::tenant("acme");
    let identity_id =
        onboarding_providers::arm_ids::identity_id(&env.target, &specs.identity().name).unwrap();
    let container_id =
        onboarding_providers::arm_ids::blob_container_id(&env.target, &specs.container().name)
            .unwrap();
    let (id_api, c_api) = (
        onboarding_azure::api::MANAGED_IDENTITY,
        onboarding_azure::api::BLOB_CONTAINERS,
    );
    put_foreign(
        &env,
        &identity_id,
        id_api,
        serde_json::json!({"location": "westeurope", "tags": {"owner": "payments-team"}}),
    )
    .await;
    put_foreign(
        &env,
        &container_id,
        c_api,
        serde_json::json!({"properties": {"metadata": {"owner": "payments", "tenant": "acme"}}}),
    )
    .await;
    let identity_before = arm_get(&env, &identity_id, id_api).await;
    let container_before = arm_get(&env, &container_id, c_api).await;

    let err = env
        .arm
        .ensure_identity(&env.target, &specs.identity())
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent, "{err}");
    assert_eq!(err.code.as_deref(), Some("ResourceNotOwned"));
    assert!(err.to_string().contains(&identity_id), "{err}");
    let err = env
        .arm
        .ensure_blob_container(&env.target, &specs.container())
        .await
        .unwrap_err();
    assert_eq!(err.code.as_deref(), Some("ResourceNotOwned"), "{err}");
    assert!(err.to_string().contains(&container_id), "{err}");

    // Deleting them for the tenant is a no-op: neither carries the marker.
    env.arm
        .delete_identity(&env.target, &specs.identity().name, "acme")
        .await
        .unwrap();
    env.arm
        .delete_blob_container(&env.target, &specs.container().name, "acme")
        .await
        .unwrap();

    assert_eq!(arm_get(&env, &identity_id, id_api).await, identity_before);
    assert_eq!(arm_get(&env, &container_id, c_api).await, container_before);
    let writes: Vec<_> = env
        .running
        .arm
        .recorded_requests()
        .into_iter()
        .filter(|r| r.operation.ends_with(".put") || r.operation.ends_with(".delete"))
        .map(|r| r.operation)
        .collect();
    assert_eq!(writes.len(), 2, "only the two foreign PUTs: {writes:?}");
}

#[tokio::test]
async fn another_tenants_identity_and_container_are_neither_adopted_nor_deleted() {
    let env = start(SimOptions::default()).await;
    let beta = TenantResources::tenant("beta");
    env.arm
        .ensure_identity(&env.target, &beta.identity())
        .await
        .unwrap();
    env.arm
        .ensure_blob_container(&env.target, &beta.container())
        .await
        .unwrap();
    let mut as_acme = beta.identity();
    as_acme.tenant_id = "acme".into();
    let err = env
        .arm
        .ensure_identity(&env.target, &as_acme)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"beta\""), "{err}");
    env.arm
        .delete_identity(&env.target, &beta.identity().name, "acme")
        .await
        .unwrap();
    env.arm
        .delete_blob_container(&env.target, &beta.container().name, "acme")
        .await
        .unwrap();
    assert_eq!(inventory(&env).await["total"], 2);
    // Its own tenant deletes them.
    env.arm
        .delete_identity(&env.target, &beta.identity().name, "beta")
        .await
        .unwrap();
    env.arm
        .delete_blob_container(&env.target, &beta.container().name, "beta")
        .await
        .unwrap();
    assert_eq!(inventory(&env).await["total"], 0);
}

#[tokio::test]
async fn a_role_assignment_under_the_workers_name_but_for_another_principal_is_neither_adopted_nor_deleted()
 {
    let env = start(SimOptions::default()).await;
    let created = create_all(&env.arm, &env.target, "acme").await.unwrap();
    let theirs = TenantResources::role_assignment(
        &env.target,
        &created.container_id,
        "6f0b8a3c-5c49-4a37-9b7e-1d0b3c1f2a12",
        "tenant-acme",
    );
    // The worker's name for another principal's assignment: what is there is not that one.
    let mut mine = theirs.clone();
    mine.principal_id = created.identity_principal.clone();
    mine.name = created.role_assignment_name.clone();
    let mut other_principal = mine.clone();
    other_principal.principal_id = theirs.principal_id.clone();
    let err = env
        .arm
        .ensure_role_assignment(&env.target, &other_principal)
        .await
        .unwrap_err();
    assert_eq!(err.code.as_deref(), Some("ResourceNotOwned"), "{err}");
    assert!(
        err.to_string().contains(&created.role_assignment_id),
        "{err}"
    );
    env.arm
        .delete_role_assignment(&env.target, &other_principal)
        .await
        .unwrap();
    assert_eq!(
        inventory(&env).await["resources"]["roleAssignments"][0],
        created.role_assignment_id
    );
    // The one it describes is deleted.
    env.arm
        .delete_role_assignment(&env.target, &mine)
        .await
        .unwrap();
    assert_eq!(
        inventory(&env).await["resources"]["roleAssignments"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn a_federated_credential_under_a_foreign_identity_is_not_deleted() {
    let env = start(SimOptions::default()).await;
    let specs = TenantResources::tenant("acme");
    let fic = specs.federated_credential(&env.target);
    let identity_id =
        onboarding_providers::arm_ids::identity_id(&env.target, &specs.identity().name).unwrap();
    let fic_id = onboarding_providers::arm_ids::federated_credential_id(
        &env.target,
        &specs.identity().name,
        &fic.name,
    )
    .unwrap();
    let api = onboarding_azure::api::MANAGED_IDENTITY;
    put_foreign(
        &env,
        &identity_id,
        api,
        serde_json::json!({"location": "westeurope", "tags": {"tenant": "acme"}}),
    )
    .await;
    put_foreign(
        &env,
        &fic_id,
        api,
        serde_json::json!({"properties": {"issuer": "https://issuer.example", "subject": "system:serviceaccount:x:y", "audiences": ["api://AzureADTokenExchange"]}}),
    )
    .await;
    let before = arm_get(&env, &fic_id, api).await;
    env.arm
        .delete_federated_credential(&env.target, &specs.identity().name, &fic.name, "acme")
        .await
        .unwrap();
    assert_eq!(arm_get(&env, &fic_id, api).await, before);
    assert_eq!(inventory(&env).await["total"], 2);
}

#[tokio::test]
async fn an_edited_condition_on_the_workers_own_assignment_is_put_back_and_another_principal_is_refused()
 {
    let env = start(SimOptions::default()).await;
    let created = create_all(&env.arm, &env.target, "acme").await.unwrap();
    let api = "2022-04-01";
    let mut assignment = arm_get(&env, &created.role_assignment_id, api).await;
    let own = assignment["properties"]["condition"]
        .as_str()
        .unwrap()
        .to_string();
    assignment["properties"]["condition"] =
        serde_json::json!(own.replace("tenant-acme", "tenant-*"));
    put_foreign(
        &env,
        &created.role_assignment_id,
        api,
        serde_json::json!({"properties": assignment["properties"]}),
    )
    .await;
    // The update converges: the worker's assignment carries the worker's condition again.
    let spec = TenantResources::role_assignment(
        &env.target,
        &created.container_id,
        &created.identity_principal,
        "tenant-acme",
    );
    env.arm
        .ensure_role_assignment(&env.target, &spec)
        .await
        .unwrap();
    let now = arm_get(&env, &created.role_assignment_id, api).await;
    assert_eq!(now["properties"]["condition"], serde_json::json!(own));
    // Under the worker's name but for another principal: not the worker's to change.
    let mut other = spec.clone();
    other.principal_id = "00000000-0000-0000-0000-00000000beef".into();
    let err = env
        .arm
        .ensure_role_assignment(&env.target, &other)
        .await
        .unwrap_err();
    assert_eq!(err.code.as_deref(), Some("ResourceNotOwned"), "{err}");
}
