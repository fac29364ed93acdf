//! End to end against a real Kubernetes control plane: the real `worker` and `producer` binaries,
//! the worker authenticated as its own ServiceAccount with exactly the RBAC in `k8s/`, the ARM
//! simulator registering each node pool's Nodes in the cluster as AKS would, so the real scheduler
//! places the tenant's pods. Onboard, update, a permanent failure with compensation, offboard,
//! and a re-onboarding right after an offboarding.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{ProcessHarness, unique_tenant};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams};
use onboarding_contract::CloudEvent;
use onboarding_testkit::real_cluster::RealCluster;
use sim::faults::FaultPlan;

const OUTCOME: Duration = Duration::from_secs(120);

async fn outcome(h: &ProcessHarness, request_id: &str) -> CloudEvent {
    let found = h
        .wait_for_outcomes(&[request_id.to_string()], OUTCOME)
        .await;
    found[request_id].clone()
}

async fn send(h: &ProcessHarness, args: &[&str]) {
    let out = h.producer(args, Duration::from_secs(30)).await;
    assert_eq!(out.code, Some(0), "producer {args:?}: {out:?}");
}

/// The tenant's Nodes and the nodes its pods are bound to.
async fn placement(cluster: &RealCluster, tenant: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let nodes: Api<Node> = Api::all(cluster.admin.clone());
    let mine = nodes
        .list(&ListParams::default().labels(&format!("tenant={tenant}")))
        .await
        .expect("list nodes")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let pods: Api<Pod> = Api::namespaced(cluster.admin.clone(), &format!("tenant-{tenant}"));
    let bound = pods
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter_map(|p| Some((p.metadata.name?, p.spec?.node_name.unwrap_or_default())))
        .collect();
    (mine, bound)
}

/// The tenant's namespace and its pool's Nodes are gone from the cluster.
async fn tenant_gone(cluster: &RealCluster, tenant: &str) {
    let namespaces: Api<Namespace> = Api::all(cluster.admin.clone());
    let name = format!("tenant-{tenant}");
    cluster
        .eventually("namespace removed", Duration::from_secs(120), || {
            let namespaces = namespaces.clone();
            let name = name.clone();
            async move {
                namespaces
                    .get_opt(&name)
                    .await
                    .ok()?
                    .is_none()
                    .then_some(())
            }
        })
        .await;
    cluster
        .eventually(
            "the pool's nodes removed",
            Duration::from_secs(30),
            || async move { placement(cluster, tenant).await.0.is_empty().then_some(()) },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_is_onboarded_updated_offboarded_and_onboarded_again_on_a_real_cluster() {
    let Some(cluster) = RealCluster::connect("end to end on a real cluster").await else {
        return;
    };
    let Some(h) = ProcessHarness::on_real_cluster(&cluster).await else {
        return;
    };
    let tenant = unique_tenant("e");

    // Onboard, with the workload: pods admitted under Pod Security restricted, on the tenant's
    // own nodes only.
    let event = h
        .request(
            &[
                "send",
                "--tenant",
                &tenant,
                "--request-id",
                "on-1",
                "--workload",
                "2",
            ],
            "on-1",
        )
        .await;
    assert_eq!(
        event.ty,
        "tenant.onboarded",
        "{event:?}\n{}",
        h.worker_logs(40)
    );
    let (nodes, pods) = cluster
        .eventually("two pods bound to nodes", Duration::from_secs(60), {
            let (c, t) = (&cluster, tenant.as_str());
            move || async move {
                let (nodes, pods) = placement(c, t).await;
                (pods.len() == 2 && pods.values().all(|n| !n.is_empty())).then_some((nodes, pods))
            }
        })
        .await;
    assert!(!nodes.is_empty(), "the pool registered no node");
    assert!(
        pods.values().all(|n| nodes.contains(n)),
        "pods {pods:?} outside the tenant's nodes {nodes:?}"
    );
    let ns = format!("tenant-{tenant}");
    let bindings: Api<RoleBinding> = Api::namespaced(cluster.admin.clone(), &ns);
    assert_eq!(
        bindings
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        0
    );

    // Update: more replicas, and an admin group whose binding grants the shipped ClusterRole.
    let event = h
        .request(
            &[
                "send",
                "--tenant",
                &tenant,
                "--request-id",
                "on-2",
                "--workload",
                "3",
                "--admin-group",
                "11111111-2222-3333-4444-555555555555",
            ],
            "on-2",
        )
        .await;
    assert_eq!(
        event.ty,
        "tenant.onboarded",
        "{event:?}\n{}",
        h.worker_logs(40)
    );
    let deployments: Api<Deployment> = Api::namespaced(cluster.admin.clone(), &ns);
    let replicas = deployments
        .get("workload")
        .await
        .expect("deployment")
        .spec
        .and_then(|s| s.replicas);
    assert_eq!(replicas, Some(3));
    let binding = bindings.get("tenant-admin").await.expect("admin binding");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, "tenant-onboarding:tenant-admin");

    // An autoscaler takes over the replicas (as the HPA controller does, through the scale
    // subresource): a later update leaves them alone instead of fighting it.
    deployments
        .patch_scale(
            "workload",
            &kube::api::PatchParams {
                field_manager: Some("horizontal-pod-autoscaler".into()),
                ..kube::api::PatchParams::default()
            },
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("scale as an autoscaler would");
    let event = h
        .request(
            &[
                "send",
                "--tenant",
                &tenant,
                "--request-id",
                "on-2b",
                "--workload",
                "3",
                "--admin-group",
                "11111111-2222-3333-4444-555555555555",
            ],
            "on-2b",
        )
        .await;
    assert_eq!(
        event.ty,
        "tenant.onboarded",
        "{event:?}\n{}",
        h.worker_logs(40)
    );
    let replicas = deployments
        .get("workload")
        .await
        .expect("deployment")
        .spec
        .and_then(|s| s.replicas);
    assert_eq!(
        replicas,
        Some(5),
        "the update took the replicas back from the autoscaler"
    );

    // Offboard (purging data), then onboard again at once: the namespace is waited for.
    send(
        &h,
        &[
            "offboard",
            "--tenant",
            &tenant,
            "--request-id",
            "off-1",
            "--purge-data",
        ],
    )
    .await;
    send(&h, &["send", "--tenant", &tenant, "--request-id", "on-3"]).await;
    let off = outcome(&h, "off-1").await;
    assert_eq!(
        off.ty,
        "tenant.offboarded",
        "{off:?}\n{}",
        h.worker_logs(40)
    );
    let again = outcome(&h, "on-3").await;
    assert_eq!(
        again.ty,
        "tenant.onboarded",
        "{again:?}\n{}",
        h.worker_logs(60)
    );
    let namespaces: Api<Namespace> = Api::all(cluster.admin.clone());
    let live = namespaces.get(&ns).await.expect("namespace back");
    assert_eq!(
        live.status.and_then(|s| s.phase).as_deref(),
        Some("Active"),
        "the re-onboarded namespace is a new, active one"
    );

    // Offboard for good: namespace and nodes go.
    let off = h.offboard_purging(&tenant, "off-2").await;
    assert_eq!(off.ty, "tenant.offboarded", "{off:?}");
    tenant_gone(&cluster, &tenant).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_compensates_and_leaves_nothing_in_the_real_cluster() {
    let Some(cluster) = RealCluster::connect("compensation on a real cluster").await else {
        return;
    };
    let Some(h) = ProcessHarness::on_real_cluster(&cluster).await else {
        return;
    };
    let tenant = unique_tenant("f");
    h.set_faults(FaultPlan {
        fail_ops: vec!["role_assignments.put".into()],
        ..FaultPlan::default()
    });
    let event = h
        .request(
            &[
                "send",
                "--tenant",
                &tenant,
                "--request-id",
                "on-1",
                "--workload",
                "1",
            ],
            "on-1",
        )
        .await;
    assert_eq!(
        event.ty,
        "tenant.onboarding_failed",
        "{event:?}\n{}",
        h.worker_logs(40)
    );
    tenant_gone(&cluster, &tenant).await;
    assert_eq!(h.arm_inventory().total, 0, "{:?}", h.arm_resources());
}
