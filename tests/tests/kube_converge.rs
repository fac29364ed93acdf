//! Updates converge on a real Kubernetes control plane: an update that drops the admin group
//! revokes its RoleBinding and one that drops the workload deletes the Deployment, and the outcome
//! no longer lists them. The real `worker` and `producer` binaries, the worker authenticated as its
//! own ServiceAccount with exactly the RBAC in `k8s/`.

use e2e::{ProcessHarness, unique_tenant};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::Api;
use onboarding_contract::events::EventData;
use onboarding_testkit::real_cluster::RealCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_removes_the_dropped_admin_binding_and_workload_from_a_real_cluster() {
    let Some(cluster) = RealCluster::connect("convergent updates on a real cluster").await else {
        return;
    };
    let Some(h) = ProcessHarness::on_real_cluster(&cluster).await else {
        return;
    };
    let tenant = unique_tenant("c");
    let ns = format!("tenant-{tenant}");
    let admin = "11111111-2222-3333-4444-555555555555";

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
                "--admin-group",
                admin,
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
    let bindings: Api<RoleBinding> = Api::namespaced(cluster.admin.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(cluster.admin.clone(), &ns);
    assert!(
        bindings
            .get_opt("tenant-admin")
            .await
            .expect("get")
            .is_some()
    );
    assert!(
        deployments
            .get_opt("workload")
            .await
            .expect("get")
            .is_some()
    );

    // The new spec asks for neither.
    let event = h
        .request(
            &["send", "--tenant", &tenant, "--request-id", "on-2"],
            "on-2",
        )
        .await;
    assert_eq!(
        event.ty,
        "tenant.onboarded",
        "{event:?}\n{}",
        h.worker_logs(40)
    );
    assert!(
        bindings
            .get_opt("tenant-admin")
            .await
            .expect("get")
            .is_none(),
        "the dropped admin group keeps its access"
    );
    let gone = deployments
        .get_opt("workload")
        .await
        .expect("get")
        .is_none_or(|d| d.metadata.deletion_timestamp.is_some());
    assert!(gone, "the dropped workload is still there");
    let EventData::Outcome(o) = &event.data else {
        panic!("not an outcome: {event:?}")
    };
    assert!(!o.resources.contains_key("workload"), "{:?}", o.resources);
    let listed = serde_json::Value::Object(o.resources.clone()).to_string();
    assert!(!listed.contains("RoleBinding"), "{listed}");

    let off = h.offboard_purging(&tenant, "off-1").await;
    assert_eq!(off.ty, "tenant.offboarded", "{off:?}");
}
