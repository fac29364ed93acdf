//! Ownership on a real Kubernetes control plane, through the real binaries: a namespace someone
//! else made under the name the worker would use (`tenant-<t>`, with a Deployment in it) is never
//! adopted, changed or deleted: not by the onboarding that finds it, not by its compensation, not
//! by an offboarding that purges, and not by an offboarding of a tenant the worker never knew.
//! "Unchanged" is the API server's word for it: the same uid and resourceVersion (generation,
//! for the Deployment, whose status its controller keeps writing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::{ProcessHarness, unique_tenant};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use onboarding_contract::events::EventData;
use onboarding_testkit::real_cluster::{RealCluster, apply_as_admin};
use serde_json::json;

/// Another team's namespace and Deployment under the tenant's names.
async fn plant(cluster: &RealCluster, tenant: &str) -> (String, String) {
    let ns = format!("tenant-{tenant}");
    apply_as_admin(
        &cluster.admin,
        &json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"team": "payments"}}}),
    )
    .await;
    apply_as_admin(
        &cluster.admin,
        &json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ledger", "namespace": ns},
            "spec": {"replicas": 0,
                "selector": {"matchLabels": {"app": "ledger"}},
                "template": {"metadata": {"labels": {"app": "ledger"}},
                    "spec": {"containers": [{"name": "ledger", "image": "registry.k8s.io/pause:3.10"}]}}}}),
    )
    .await;
    versions(cluster, tenant).await
}

/// What must not change: the namespace's uid and resourceVersion; the Deployment's uid,
/// generation (it moves with every change of the spec), labels and spec. (The Deployment's
/// resourceVersion moves with its status, which its controller writes.)
async fn versions(cluster: &RealCluster, tenant: &str) -> (String, String) {
    let ns = format!("tenant-{tenant}");
    let namespace = Api::<Namespace>::all(cluster.admin.clone())
        .get(&ns)
        .await
        .expect("the namespace is still there");
    let deployment = Api::<Deployment>::namespaced(cluster.admin.clone(), &ns)
        .get("ledger")
        .await
        .expect("the Deployment is still there");
    let m = &namespace.metadata;
    let d = &deployment.metadata;
    (
        format!(
            "{}:{}",
            m.uid.clone().unwrap_or_default(),
            m.resource_version.clone().unwrap_or_default()
        ),
        format!(
            "{}:{}:{:?}:{}",
            d.uid.clone().unwrap_or_default(),
            d.generation.unwrap_or_default(),
            d.labels,
            serde_json::to_string(&deployment.spec).unwrap_or_default()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_namespace_survives_a_failed_onboarding_and_an_offboarding_unchanged() {
    let Some(cluster) = RealCluster::connect("ownership on a real cluster").await else {
        return;
    };
    let Some(h) = ProcessHarness::on_real_cluster(&cluster).await else {
        return;
    };
    let tenant = unique_tenant("own");
    let before = plant(&cluster, &tenant).await;

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
    assert_eq!(event.ty, "tenant.onboarding_failed", "{event:?}");
    let EventData::Outcome(o) = &event.data else {
        panic!("{event:?}")
    };
    let error = o.error.as_ref().expect("an error");
    assert_eq!(error.code.as_deref(), Some("ResourceNotOwned"), "{error:?}");
    assert_eq!(error.step.as_deref(), Some("namespace"), "{error:?}");
    assert!(
        error.message.contains("team") || error.message.contains("lacks"),
        "{error:?}"
    );
    assert_eq!(
        versions(&cluster, &tenant).await,
        before,
        "untouched by the onboarding"
    );

    let event = h.offboard_purging(&tenant, "off-1").await;
    assert_eq!(event.ty, "tenant.offboarded", "{event:?}");
    h.wait_for_empty_queue(Duration::from_secs(30)).await;
    assert_eq!(
        versions(&cluster, &tenant).await,
        before,
        "untouched by the offboarding"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_a_tenant_the_worker_never_knew_deletes_nothing() {
    let Some(cluster) = RealCluster::connect("ownership on a real cluster").await else {
        return;
    };
    let Some(h) = ProcessHarness::on_real_cluster(&cluster).await else {
        return;
    };
    let tenant = unique_tenant("ghost");
    let before = plant(&cluster, &tenant).await;
    let out = h
        .producer(
            &[
                "offboard",
                "--tenant",
                &tenant,
                "--purge-data",
                "--wait",
                "--timeout",
                "60",
            ],
            Duration::from_secs(90),
        )
        .await;
    assert_eq!(out.code, Some(4), "not found: {out:?}");
    h.wait_for_empty_queue(Duration::from_secs(30)).await;
    assert_eq!(versions(&cluster, &tenant).await, before);
}
