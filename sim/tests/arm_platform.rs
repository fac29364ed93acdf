//! The platform's limits the ARM simulator enforces by default, over real HTTP: one agent-pool
//! operation per cluster and cluster-level operations that keep pool operations out, blob
//! containers that stay "being deleted", the VM size list and the regional vCPU quota.
#![allow(clippy::unwrap_used)] // tests may unwrap (developers' guide)

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sim::SimOptions;
use sim::arm::{ArmBehaviour, VmSize};
use sim::faults::LatencyProfile;

const CLUSTER: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/aks";

fn sized(size: &str, count: u32) -> Value {
    json!({"properties": {"count": count, "vmSize": size, "mode": "User", "osType": "Linux"}})
}

fn autoscaled(size: &str, min: u32, max: u32) -> Value {
    json!({"properties": {"enableAutoScaling": true, "minCount": min, "maxCount": max, "vmSize": size, "mode": "User", "osType": "Linux"}})
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

/// Agent pools take ten minutes: the first operation keeps the cluster busy.
fn slow_pools() -> SimOptions {
    SimOptions {
        latency: LatencyProfile {
            scale: 1.0,
            operations: vec![("arm.agent_pools".into(), 600_000)],
        },
        ..SimOptions::default()
    }
}

#[tokio::test]
async fn a_pool_operation_on_a_busy_cluster_gets_the_message_aks_gives() {
    let running = start(slow_pools()).await;
    let arm = Arm::new(&running);
    assert_eq!(arm.put(&pool_path("pa"), AKS, pool_body()).await.0, 201);
    let (s, _, other) = arm.put(&pool_path("pb"), AKS, pool_body()).await;
    assert_eq!(
        (s, other["error"]["code"].as_str()),
        (409, Some("OperationNotAllowed"))
    );
    assert_eq!(
        message(&other),
        "Operation is not allowed: Another agentpool operation (pa - Creating) is in progress, please wait for it to finish before starting a new operation. See https://aka.ms/aks-pending-operation for more details"
    );
    let (_, _, same) = arm.delete(&pool_path("pa"), AKS).await;
    assert!(
        message(&same).starts_with("Operation is not allowed: Another operation (pa - Creating)"),
        "{same}"
    );
    // Another cluster is not busy.
    let elsewhere = pool_path("pb").replace("/managedClusters/aks/", "/managedClusters/aks2/");
    assert_eq!(arm.put(&elsewhere, AKS, pool_body()).await.0, 201);
}

#[tokio::test]
async fn pool_operations_overlap_when_the_one_at_a_time_rule_is_off() {
    let running = start(SimOptions {
        arm_behaviour: ArmBehaviour {
            one_pool_operation_per_cluster: false,
            ..ArmBehaviour::default()
        },
        ..slow_pools()
    })
    .await;
    let arm = Arm::new(&running);
    assert_eq!(arm.put(&pool_path("pa"), AKS, pool_body()).await.0, 201);
    assert_eq!(arm.put(&pool_path("pb"), AKS, pool_body()).await.0, 201);
    assert_eq!(arm.inventory().await["operationsInProgress"], 2);
}

#[tokio::test]
async fn a_cluster_operation_refuses_pool_puts_and_deletes_until_it_ends() {
    let running = start(SimOptions::default()).await;
    let arm = Arm::new(&running);
    assert_eq!(arm.put(&pool_path("pa"), AKS, pool_body()).await.0, 201);
    let (s, started) = arm
        .post_sim(
            "/_sim/cluster-operation",
            json!({"clusterId": CLUSTER, "seconds": 0.6}),
        )
        .await;
    assert_eq!(s, 200, "{started}");
    assert_eq!(started["operation"], "Upgrading");
    let inventory = arm.inventory().await;
    assert_eq!(inventory["clusterOperations"][CLUSTER], "Upgrading");
    for (status, _, body) in [
        arm.put(&pool_path("pb"), AKS, pool_body()).await,
        arm.delete(&pool_path("pa"), AKS).await,
    ] {
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("OperationNotAllowed"))
        );
        assert!(
            message(&body).starts_with(
                "Operation is not allowed: Another operation (Upgrading) is in progress"
            ),
            "{body}"
        );
    }
    // Reads go on.
    assert_eq!(arm.get(&pool_path("pa"), AKS).await.0, 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(arm.put(&pool_path("pb"), AKS, pool_body()).await.0, 201);
    assert_eq!(arm.delete(&pool_path("pa"), AKS).await.0, 202);
    assert!(
        arm.inventory().await["clusterOperations"]
            .as_object()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_cluster_operation_names_its_cluster_by_id_or_by_parts_and_nothing_else() {
    let running = start(SimOptions::default()).await;
    let arm = Arm::new(&running);
    let (s, by_parts) = arm
        .post_sim(
            "/_sim/cluster-operation",
            json!({"subscription": "s1", "resourceGroup": "rg", "cluster": "c", "seconds": 60, "operation": "Stopping"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        by_parts["clusterId"],
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c"
    );
    // Ids are case-insensitive, like ARM's.
    let pool = "/subscriptions/S1/resourcegroups/RG/providers/microsoft.containerservice/managedclusters/C/agentPools/p1";
    let (s, _, body) = arm.put(pool, AKS, pool_body()).await;
    assert_eq!(s, 409);
    assert!(
        message(&body).contains("Another operation (Stopping)"),
        "{body}"
    );
    for bad in [
        json!({"seconds": 5}),
        json!({"clusterId": "/subscriptions/s/resourceGroups/rg", "seconds": 5}),
        json!({"clusterId": CLUSTER}),
        json!({"clusterId": CLUSTER, "seconds": -1}),
        json!({"clusterId": CLUSTER, "subscription": "s", "seconds": 1}),
    ] {
        let (s, body) = arm.post_sim("/_sim/cluster-operation", bad.clone()).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (400, Some("InvalidClusterOperation")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_deleted_container_stays_being_deleted_for_the_scaled_window() {
    // 30 real seconds at scale 0.02: 0.6 s.
    let running = start(SimOptions {
        latency: LatencyProfile {
            scale: 0.02,
            operations: Vec::new(),
        },
        ..SimOptions::default()
    })
    .await;
    let arm = Arm::new(&running);
    let path = container_path("tenant-a");
    assert_eq!(arm.put(&path, STORAGE, json!({})).await.0, 201);
    assert_eq!(arm.delete(&path, STORAGE).await.0, 200);
    let (s, _, gone) = arm.get(&path, STORAGE).await;
    assert_eq!(
        (s, gone["error"]["code"].as_str()),
        (404, Some("ContainerNotFound"))
    );
    let (s, _, refused) = arm.put(&path, STORAGE, json!({})).await;
    assert_eq!(
        (s, refused["error"]["code"].as_str(), message(&refused)),
        (
            409,
            Some("ContainerOperationFailure"),
            "The specified container is being deleted. Try operation later."
        )
    );
    let inventory = arm.inventory().await;
    assert_eq!(
        inventory["containersBeingDeleted"][0].as_str(),
        Some(path.as_str())
    );
    assert_eq!(inventory["total"], 0);
    // Deleting it again finds nothing to delete.
    assert_eq!(arm.delete(&path, STORAGE).await.0, 204);
    // Other names are free.
    assert_eq!(
        arm.put(&container_path("tenant-b"), STORAGE, json!({}))
            .await
            .0,
        201
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(arm.put(&path, STORAGE, json!({})).await.0, 201);
    assert_eq!(arm.inventory().await["containersBeingDeleted"], json!([]));
}

#[tokio::test]
async fn with_zero_latency_a_deleted_container_name_is_free_at_once() {
    let running = start(SimOptions::default()).await;
    let arm = Arm::new(&running);
    let path = container_path("tenant-a");
    assert_eq!(arm.put(&path, STORAGE, json!({})).await.0, 201);
    assert_eq!(arm.delete(&path, STORAGE).await.0, 200);
    assert_eq!(arm.put(&path, STORAGE, json!({})).await.0, 201);
}

#[tokio::test]
async fn an_unknown_vm_size_is_refused_with_the_bad_request_aks_gives() {
    let running = start(SimOptions::default()).await;
    let arm = Arm::new(&running);
    let (s, _, body) = arm
        .put(&pool_path("pa"), AKS, sized("Standard_Q4z_v9", 1))
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("BadRequest"))
    );
    let m = message(&body);
    assert!(
        m.starts_with("The VM size of AgentPoolProfile:pa is not allowed in your subscription in location 'westeurope'. The available VM sizes are '"),
        "{m}"
    );
    assert!(
        m.contains("standard_d4s_v5") && m.contains("https://aka.ms/aks/quotas-skus-regions"),
        "{m}"
    );
    // Sizes under 2 vCPUs exist but AKS will not run nodes on them.
    let (s, _, body) = arm
        .put(&pool_path("pa"), AKS, sized("Standard_DS1_v2", 1))
        .await;
    assert_eq!(s, 400);
    assert!(
        message(&body).contains("does not have enough CPU/memory to run as an AKS node"),
        "{body}"
    );
    assert_eq!(arm.inventory().await["total"], 0);
    // Names are case-insensitive.
    assert_eq!(
        arm.put(&pool_path("pa"), AKS, sized("standard_d8S_V5", 1))
            .await
            .0,
        201
    );
}

#[tokio::test]
async fn extra_vm_sizes_can_be_allowed_and_the_list_switched_off() {
    let mut sizes = VmSize::common();
    sizes.push(VmSize::new("Standard_D4s_v6", 4, 16 * 1024));
    let running = start(SimOptions {
        arm_behaviour: ArmBehaviour {
            vm_sizes: Some(sizes),
            ..ArmBehaviour::default()
        },
        ..SimOptions::default()
    })
    .await;
    let arm = Arm::new(&running);
    assert_eq!(
        arm.put(&pool_path("pa"), AKS, sized("Standard_D4s_v6", 1))
            .await
            .0,
        201
    );

    let running = start(SimOptions {
        arm_behaviour: ArmBehaviour {
            vm_sizes: None,
            ..ArmBehaviour::default()
        },
        ..SimOptions::default()
    })
    .await;
    let arm = Arm::new(&running);
    assert_eq!(
        arm.put(&pool_path("pa"), AKS, sized("Standard_Q4z_v9", 2))
            .await
            .0,
        201
    );
    // The quota still counts it, by its name's vCPUs.
    assert_eq!(
        arm.inventory().await["vcpusInUse"]["00000000-0000-0000-0000-000000000001"],
        8
    );
}

#[tokio::test]
async fn the_vcpu_quota_runs_out_and_the_error_names_usage_and_limit() {
    let running = start(SimOptions {
        arm_behaviour: ArmBehaviour {
            vcpu_quota: Some(16),
            ..ArmBehaviour::default()
        },
        ..SimOptions::default()
    })
    .await;
    let arm = Arm::new(&running);
    assert_eq!(
        arm.put(&pool_path("pa"), AKS, sized("Standard_D4s_v5", 2))
            .await
            .0,
        201
    );
    // An autoscaling pool counts its maximum: 3 × 4 = 12 more than the 8 in use.
    let (s, _, body) = arm
        .put(&pool_path("pb"), AKS, autoscaled("Standard_D4s_v5", 1, 3))
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("ErrCode_InsufficientVCPUQuota"))
    );
    let m = message(&body);
    assert!(
        m.starts_with("Insufficient vcpu quota requested 12, remaining 8 for family Total Regional vCPUs for region westeurope."),
        "{m}"
    );
    assert!(
        m.contains("Current Limit: 16, Current Usage: 8, Additional Required: 12, (Minimum) New Limit Required: 20"),
        "{m}"
    );
    assert_eq!(arm.get(&pool_path("pb"), AKS).await.0, 404);
    // Exactly up to the limit is fine.
    assert_eq!(
        arm.put(&pool_path("pb"), AKS, autoscaled("Standard_D4s_v5", 1, 2))
            .await
            .0,
        201
    );
    assert_eq!(
        arm.inventory().await["vcpusInUse"]["00000000-0000-0000-0000-000000000001"],
        16
    );
    // Scaling up counts the pool's new size, not old plus new.
    let (s, _, _) = arm
        .put(&pool_path("pa"), AKS, sized("Standard_D4s_v5", 3))
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        arm.put(&pool_path("pa"), AKS, sized("Standard_D4s_v5", 1))
            .await
            .0,
        200
    );
    // Deleting gives vCPUs back once the pool is gone.
    assert_eq!(arm.delete(&pool_path("pb"), AKS).await.0, 202);
    assert_eq!(
        arm.put(&pool_path("pc"), AKS, sized("Standard_D4s_v5", 3))
            .await
            .0,
        201
    );
    // The quota is per subscription.
    let other = pool_path_in("00000000-0000-0000-0000-000000000002", "aks", "pa");
    assert_eq!(
        arm.put(&other, AKS, sized("Standard_D16s_v5", 1)).await.0,
        201
    );
}

#[tokio::test]
async fn the_default_quota_is_200_vcpus_per_subscription() {
    let running = start(SimOptions::default()).await;
    let arm = Arm::new(&running);
    assert_eq!(
        arm.put(&pool_path("big"), AKS, sized("Standard_D16s_v5", 12))
            .await
            .0,
        201
    );
    assert_eq!(
        arm.put(&pool_path("mid"), AKS, sized("Standard_D8s_v5", 1))
            .await
            .0,
        201
    );
    let (s, _, body) = arm
        .put(&pool_path("one"), AKS, sized("Standard_B2s", 1))
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        message(&body).contains("Current Limit: 200, Current Usage: 200"),
        "{body}"
    );
    let running = start(SimOptions {
        arm_behaviour: ArmBehaviour::permissive(),
        ..SimOptions::default()
    })
    .await;
    let arm = Arm::new(&running);
    assert_eq!(
        arm.put(&pool_path("huge"), AKS, sized("Standard_D32s_v5", 1000))
            .await
            .0,
        201
    );
}
