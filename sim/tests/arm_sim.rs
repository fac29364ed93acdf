//! The ARM simulator over real HTTP: ARM's status codes, error codes and long-running operations
//! for the operations the worker uses.
#![allow(clippy::unwrap_used)] // tests may unwrap (developers' guide)

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sim::SimOptions;
use sim::faults::{FaultPlan, LatencyProfile};

#[tokio::test]
async fn identity_put_is_idempotent_201_then_200_with_the_same_ids() {
    let running = start(SimOptions::default()).await;
    let arm = Arm::new(&running);
    let body = json!({"location": "westeurope", "tags": {"tenant": "a"}});
    let (s1, _, first) = arm.put(&identity_path("id-a"), MSI, body.clone()).await;
    let (s2, _, second) = arm.put(&identity_path("id-a"), MSI, body).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(
        first["properties"]["principalId"],
        second["properties"]["principalId"]
    );
    assert_eq!(first["properties"]["tenantId"], sim::arm::SIM_TENANT_ID);
    let (s, _, got) = arm.get(&identity_path("id-a"), MSI).await;
    assert_eq!(s, 200);
    assert_eq!(
        got["properties"]["clientId"],
        first["properties"]["clientId"]
    );
}

#[tokio::test]
async fn an_agent_pool_is_created_by_a_long_running_operation() {
    let running = start(SimOptions::default()).await;
    let arm = Arm::new(&running);
    let (status, headers, body) = arm.put(&pool_path("pa"), AKS, pool_body()).await;
    assert_eq!(status, 201);
    assert_eq!(body["properties"]["provisioningState"], "Creating");
    let op = headers["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(op.starts_with(&running.arm_url()), "{op}");
    assert!(headers.contains_key("location") && headers.contains_key("retry-after"));
    let (s, _, doc) = arm.get(&op, AKS).await;
    assert_eq!((s, doc["status"].as_str()), (200, Some("Succeeded")));
    let (_, _, pool) = arm.get(&pool_path("pa"), AKS).await;
    assert_eq!(pool["properties"]["provisioningState"], "Succeeded");
    // The same PUT again changes nothing and starts no operation.
    let (s, headers, _) = arm.put(&pool_path("pa"), AKS, pool_body()).await;
    assert_eq!(s, 200);
    assert!(!headers.contains_key("azure-asyncoperation"));
    // Delete: 202 with a Location that answers 202 then 204; a second delete is 204.
    let (s, headers, _) = arm.delete(&pool_path("pa"), AKS).await;
    assert_eq!(s, 202);
    let location = headers["location"].to_str().unwrap().to_string();
    let (s, _, _) = arm.get(&location, AKS).await;
    assert_eq!(s, 204);
    assert_eq!(arm.delete(&pool_path("pa"), AKS).await.0, 204);
    assert_eq!(arm.get(&pool_path("pa"), AKS).await.0, 404);
}

#[tokio::test]
async fn a_busy_cluster_refuses_other_agent_pool_operations_with_operation_not_allowed() {
    let running = start(SimOptions {
        latency: LatencyProfile {
            scale: 1.0,
            operations: vec![("arm.agent_pools.create".into(), 600_000)],
        },
        ..SimOptions::default()
    })
    .await;
    let arm = Arm::new(&running);
    assert_eq!(arm.put(&pool_path("pa"), AKS, pool_body()).await.0, 201);
    let (s, headers, op) = arm.get(&pool_path("pa"), AKS).await;
    assert_eq!(
        (s, op["properties"]["provisioningState"].as_str()),
        (200, Some("Creating"))
    );
    drop(headers);
    for (status, _, body) in [
        arm.put(&pool_path("pb"), AKS, pool_body()).await,
        arm.put(&pool_path("pa"), AKS, pool_body()).await,
        arm.delete(&pool_path("pa"), AKS).await,
    ] {
        assert_eq!(status, 409);
        assert_eq!(body["error"]["code"], "OperationNotAllowed");
    }
    assert_eq!(arm.inventory().await["operationsInProgress"], 1);
}

#[tokio::test]
async fn bodies_that_break_the_official_schema_are_refused_with_every_error() {
    let running = start(SimOptions::default()).await;
    let arm = Arm::new(&running);
    let (s, _, body) = arm
        .put(
            &pool_path("pa"),
            AKS,
            json!({"properties": {"count": "three", "vmSize": "x", "mode": "Boss"}}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(body["error"]["code"], "InvalidRequestContent");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("/properties/count") && message.contains("/properties/mode"),
        "{message}"
    );
    let (s, _, body) = arm
        .put(&identity_path("id-a"), MSI, json!({"tags": {}}))
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("InvalidRequestContent"))
    );
    assert_eq!(arm.inventory().await["counters"]["rejectedBodies"], 2);
    assert_eq!(arm.inventory().await["schemaValidation"], true);
}

#[tokio::test]
async fn api_versions_are_checked_like_arm_does() {
    let running = start(SimOptions::default()).await;
    let arm = Arm::new(&running);
    let (s, _, body) = arm.get(&identity_path("x"), "2018-11-30").await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("InvalidApiVersionParameter"))
    );
    let url = format!("{}{}", running.arm_url(), identity_path("x"));
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "MissingApiVersionParameter");
}

#[tokio::test]
async fn a_federated_credential_needs_its_identity() {
    let running = start(SimOptions::default()).await;
    let arm = Arm::new(&running);
    let fic = format!("{}/federatedIdentityCredentials/fic", identity_path("id-a"));
    let body = json!({"properties": {"issuer": "https://issuer.example/x", "subject": "system:serviceaccount:ns:sa", "audiences": ["api://AzureADTokenExchange"]}});
    let (s, _, err) = arm.put(&fic, MSI, body.clone()).await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (404, Some("ParentResourceNotFound"))
    );
    arm.put(
        &identity_path("id-a"),
        MSI,
        json!({"location": "westeurope"}),
    )
    .await;
    assert_eq!(arm.put(&fic, MSI, body.clone()).await.0, 201);
    assert_eq!(arm.put(&fic, MSI, body).await.0, 200);
    // Deleting the identity takes its credentials with it.
    assert_eq!(arm.delete(&identity_path("id-a"), MSI).await.0, 200);
    assert_eq!(arm.get(&fic, MSI).await.0, 404);
    assert_eq!(arm.delete(&identity_path("id-a"), MSI).await.0, 204);
}

#[tokio::test]
async fn role_assignments_check_principals_and_duplicates() {
    let running = start(SimOptions::default()).await;
    let arm = Arm::new(&running);
    let scope = container_path("tenant-a");
    let role = format!(
        "{SUB}/providers/Microsoft.Authorization/roleDefinitions/ba92f5b4-2d11-453d-a403-e96b0029c9fe"
    );
    let ra =
        |name: &str| format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
    let body = |principal: &str| json!({"properties": {"roleDefinitionId": role, "principalId": principal, "principalType": "ServicePrincipal", "condition": "true", "conditionVersion": "2.0"}});
    // The scope must exist.
    let (s, _, err) = arm
        .put(
            &ra("11111111-1111-1111-1111-111111111111"),
            AUTHZ,
            body("22222222-2222-2222-2222-222222222222"),
        )
        .await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    assert_eq!(arm.put(&scope, STORAGE, json!({})).await.0, 201);
    // An unknown principal.
    let (s, _, err) = arm
        .put(
            &ra("11111111-1111-1111-1111-111111111111"),
            AUTHZ,
            body("22222222-2222-2222-2222-222222222222"),
        )
        .await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (400, Some("PrincipalNotFound"))
    );
    // A fresh identity, still replicating.
    running
        .arm
        .set_principal_propagation(Duration::from_secs(600));
    let (_, _, id) = arm
        .put(
            &identity_path("id-a"),
            MSI,
            json!({"location": "westeurope"}),
        )
        .await;
    let principal = id["properties"]["principalId"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _, err) = arm
        .put(
            &ra("11111111-1111-1111-1111-111111111111"),
            AUTHZ,
            body(&principal),
        )
        .await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (400, Some("PrincipalNotFound"))
    );
    running.arm.set_principal_propagation(Duration::ZERO);
    assert_eq!(
        arm.put(
            &ra("11111111-1111-1111-1111-111111111111"),
            AUTHZ,
            body(&principal)
        )
        .await
        .0,
        201
    );
    assert_eq!(
        arm.put(
            &ra("11111111-1111-1111-1111-111111111111"),
            AUTHZ,
            body(&principal)
        )
        .await
        .0,
        200
    );
    // The same principal, role and scope under another name.
    let (s, _, err) = arm
        .put(
            &ra("33333333-3333-3333-3333-333333333333"),
            AUTHZ,
            body(&principal),
        )
        .await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (409, Some("RoleAssignmentExists"))
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("11111111111111111111111111111111")
    );
    // Listing by principal finds it.
    let list = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignments?$filter=assignedTo('{principal}')"
    );
    let (s, _, page) = arm.get(&list, AUTHZ).await;
    assert_eq!(s, 200);
    assert_eq!(page["value"].as_array().unwrap().len(), 1);
    // Deleting the container deletes the assignments at its scope.
    assert_eq!(arm.delete(&scope, STORAGE).await.0, 200);
    assert_eq!(
        arm.get(&ra("11111111-1111-1111-1111-111111111111"), AUTHZ)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn the_write_bucket_throttles_writes_with_retry_after_and_counts_them() {
    let running = start(SimOptions {
        arm_write_bucket: Some((2, 0.001)),
        ..SimOptions::default()
    })
    .await;
    let arm = Arm::new(&running);
    let body = json!({"location": "westeurope"});
    assert_eq!(
        arm.put(&identity_path("id-a"), MSI, body.clone()).await.0,
        201
    );
    assert_eq!(
        arm.put(&identity_path("id-b"), MSI, body.clone()).await.0,
        201
    );
    let (s, headers, err) = arm.put(&identity_path("id-c"), MSI, body).await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (429, Some("SubscriptionRequestsThrottled"))
    );
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // Reads are not budgeted.
    assert_eq!(arm.get(&identity_path("id-a"), MSI).await.0, 200);
    assert_eq!(arm.inventory().await["counters"]["throttled"], 1);
}

#[tokio::test]
async fn faults_are_injected_by_plan_and_cleared_by_reset() {
    let running = start(SimOptions::default()).await;
    let arm = Arm::new(&running);
    let client = reqwest::Client::new();
    let plan = FaultPlan {
        fail_ops: vec!["arm.blob_containers.put".into()],
        ..FaultPlan::default()
    };
    let resp = client
        .post(format!("{}/_sim/faults", running.arm_url()))
        .json(&plan)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (s, _, err) = arm
        .put(&container_path("tenant-a"), STORAGE, json!({}))
        .await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (400, Some("InjectedPermanentFailure"))
    );
    let plan = FaultPlan {
        transient_rate: 1.0,
        transient_ops: vec!["arm.identities.get".into()],
        seed: Some(1),
        stall_ms: 1,
        retry_after_secs: 3,
        ..FaultPlan::default()
    };
    running.arm.set_faults(plan);
    for _ in 0..8 {
        let (s, headers, _) = arm.get(&identity_path("x"), MSI).await;
        assert!([429, 500, 503, 504].contains(&s), "{s}");
        if s == 429 {
            assert_eq!(headers["retry-after"], "3");
        }
    }
    let resp = client
        .post(format!("{}/_sim/reset", running.arm_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        arm.put(&container_path("tenant-a"), STORAGE, json!({}))
            .await
            .0,
        201
    );
    let inv = arm.inventory().await;
    assert_eq!(
        inv["resources"]["blobContainers"].as_array().unwrap().len(),
        1
    );
    assert_eq!(inv["counters"]["faults"], 0);
    assert_eq!(inv["total"], 1);
}
