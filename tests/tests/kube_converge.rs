//! Updates converge on a real Kubernetes control plane: an update that drops the admin group
//! revokes its RoleBinding and one that drops the workload deletes the Deployment, and the outcome
//! no longer lists them. The real `worker` and `producer` binaries, the worker authenticated as its
//! own ServiceAccount with exactly the RBAC in `k8s/`.

use std::time::Duration;

use e2e::{KubeSide, ProcessHarness, Settings};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::Api;
use onboarding_contract::CloudEvent;
use onboarding_contract::events::EventData;
use onboarding_testkit::real_cluster::RealCluster;

const OUTCOME: Duration = Duration::from_secs(120);

async fn harness(cluster: &RealCluster) -> Option<ProcessHarness> {
    let env = onboarding_testkit::env::require(
        &["ONBOARD_KUBE_ADMIN_CERT", "ONBOARD_KUBE_ADMIN_KEY"],
        "the ARM simulator registering Nodes in the real cluster (scripts/kube.sh env prints them)",
    )?;
    let h = ProcessHarness::start(Settings {
        kube: KubeSide::Real {
            worker_kubeconfig: cluster.worker_kubeconfig.clone(),
            server: cluster.server.clone(),
            ca: cluster.ca.clone(),
            admin_cert: env["ONBOARD_KUBE_ADMIN_CERT"].clone().into(),
            admin_key: env["ONBOARD_KUBE_ADMIN_KEY"].clone().into(),
        },
        ..Settings::default()
    })
    .await;
    h.spawn_worker();
    Some(h)
}

async fn run(h: &ProcessHarness, args: &[&str], request_id: &str) -> CloudEvent {
    let out = h.producer(args, Duration::from_secs(30)).await;
    assert_eq!(out.code, Some(0), "producer {args:?}: {out:?}");
    let found = h
        .wait_for_outcomes(&[request_id.to_string()], OUTCOME)
        .await;
    found[request_id].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_removes_the_dropped_admin_binding_and_workload_from_a_real_cluster() {
    let Some(cluster) = RealCluster::connect("convergent updates on a real cluster").await else {
        return;
    };
    let Some(h) = harness(&cluster).await else {
        return;
    };
    let tenant = format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let ns = format!("tenant-{tenant}");
    let admin = "11111111-2222-3333-4444-555555555555";

    let event = run(
        &h,
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
    let event = run(
        &h,
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

    let off = run(
        &h,
        &[
            "offboard",
            "--tenant",
            &tenant,
            "--request-id",
            "off-1",
            "--purge-data",
        ],
        "off-1",
    )
    .await;
    assert_eq!(off.ty, "tenant.offboarded", "{off:?}");
}
