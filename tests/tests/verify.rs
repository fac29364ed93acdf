//! `producer verify` through the real binaries, on a real Kubernetes control plane and the ARM
//! simulator: a freshly onboarded tenant verifies clean; tamperings the worker converges (a
//! pool's taint, a namespace label, the ServiceAccount's annotation, a deleted NetworkPolicy, the
//! federated credential's subject, the ABAC condition of the worker's own role assignment) are
//! each reported by name and `--repair` restores a clean verify; tamperings that are someone
//! else's (another tenant's role assignment on the container, a RoleBinding to an outside group,
//! a pod on another tenant's node) are each reported by name with exit 1; an unknown tenant is
//! exit 4.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::{ProcessHarness, unique_tenant};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use onboarding_providers::arm_ids::{blob_container_id, federated_credential_id, node_pool_id};
use onboarding_testkit::real_cluster::{RealCluster, apply_as_admin, bind_verifier_to_worker};
use serde_json::{Value, json};

const AGENT_POOLS: &str = "2026-08-01";
const IDENTITIES: &str = "2024-11-30";
const ROLE_ASSIGNMENTS: &str = "2022-04-01";

/// `producer verify T` (with --json): its exit code and report.
async fn verify(h: &ProcessHarness, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let out = h.producer(&all, Duration::from_secs(180)).await;
    (out.code, out.json())
}

/// The checks of the tenant's report that are not ok: name → detail.
fn failing(report: &Value) -> Vec<(String, String)> {
    report["tenants"][0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] != "ok")
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn assert_reported(report: &Value, name: &str, detail_has: &str) {
    let failing = failing(report);
    assert!(
        failing
            .iter()
            .any(|(n, d)| n == name && d.contains(detail_has)),
        "{name} ({detail_has}) not reported; failing: {failing:#?}"
    );
}

async fn arm_put(h: &ProcessHarness, id: &str, api_version: &str, body: &Value) {
    let url = format!("{}{id}?api-version={api_version}", h.sims.arm_url());
    let resp = reqwest::Client::new()
        .put(&url)
        .json(body)
        .send()
        .await
        .expect("PUT");
    assert!(
        resp.status().is_success(),
        "PUT {url}: {} {:?}",
        resp.status(),
        resp.text().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_each_tampering_by_name_and_repair_restores_a_clean_tenant() {
    let Some(cluster) = RealCluster::connect("producer verify on a real cluster").await else {
        return;
    };
    let Some(h) = ProcessHarness::on_real_cluster(&cluster).await else {
        return;
    };
    bind_verifier_to_worker(&cluster).await;
    let (a, b) = (unique_tenant("vfa"), unique_tenant("vfb"));
    h.onboard_with_own_admin_group(&a).await;
    h.onboard_with_own_admin_group(&b).await;
    h.wait_for_empty_queue(Duration::from_secs(60)).await;

    let (code, report) = verify(&h, &[&a]).await;
    assert_eq!(
        code,
        Some(0),
        "a fresh tenant verifies clean: {:#?}",
        failing(&report)
    );
    assert_eq!(report["clean"], true);
    // The journal keeps the onboarding it built to, so size, count and quota are compared too.
    assert_eq!(report["tenants"][0]["specKnown"], true, "{report}");
    let names: Vec<&str> = report["tenants"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for expected in [
        "node_pool",
        "role_assignment",
        "isolation:pod-placement",
        "isolation:access:admin-group:list nodes in cluster",
        "isolation:container-data-roles",
    ] {
        assert!(names.contains(&expected), "{expected} among {names:?}");
    }
    let (code, _) = verify(&h, &["nosuchtenant"]).await;
    assert_eq!(code, Some(4), "a tenant the journal does not know");

    // Tamperings the worker converges.
    let target = h.config.targets[&h.config.default_target].clone();
    let (na, nb) = (
        onboarding_contract::names::TenantNames::derive(&a).unwrap(),
        onboarding_contract::names::TenantNames::derive(&b).unwrap(),
    );
    let pool_id = node_pool_id(&target, &na.node_pool).unwrap();
    let mut pool = h.arm_get(&pool_id, AGENT_POOLS).await.expect("the pool");
    pool["properties"]["nodeTaints"] = json!([]);
    arm_put(
        &h,
        &pool_id,
        AGENT_POOLS,
        &json!({"properties": pool["properties"]}),
    )
    .await;
    let fic_id = federated_credential_id(&target, &na.identity, &na.federated_credential).unwrap();
    let mut fic = h
        .arm_get(&fic_id, IDENTITIES)
        .await
        .expect("the credential");
    fic["properties"]["subject"] = json!(format!(
        "system:serviceaccount:{}:tenant-workload",
        nb.namespace
    ));
    arm_put(
        &h,
        &fic_id,
        IDENTITIES,
        &json!({"properties": fic["properties"]}),
    )
    .await;
    let ns = na.namespace.clone();
    let merge = |v: Value| Patch::Merge(v);
    Api::<k8s_openapi::api::core::v1::Namespace>::all(cluster.admin.clone())
        .patch(&ns, &PatchParams::default(), &merge(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})))
        .await.expect("label the namespace");
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(cluster.admin.clone(), &ns)
        .patch("tenant-workload", &PatchParams::default(), &merge(json!({"metadata": {"annotations": {"azure.workload.identity/client-id": "tampered"}}})))
        .await.expect("annotate the service account");
    Api::<NetworkPolicy>::namespaced(cluster.admin.clone(), &ns)
        .delete("default-deny", &DeleteParams::default())
        .await
        .expect("delete a guard rail");
    // The worker's own assignment with its condition widened to every tenant's container.
    let ra_scope = blob_container_id(&target, &na.blob_container).unwrap();
    let record = h.record(&a).await.expect("a's record").1;
    let ra = &record.resources[&onboarding_saga::record::StepName::RoleAssignment];
    let ra_id = format!(
        "{ra_scope}/providers/Microsoft.Authorization/roleAssignments/{}",
        ra["name"].as_str().unwrap()
    );
    let mut assignment = h
        .arm_get(&ra_id, ROLE_ASSIGNMENTS)
        .await
        .expect("the assignment");
    let condition = assignment["properties"]["condition"]
        .as_str()
        .unwrap()
        .replace(&na.blob_container, "tenant-*");
    assignment["properties"]["condition"] = json!(condition);
    arm_put(
        &h,
        &ra_id,
        ROLE_ASSIGNMENTS,
        &json!({"properties": assignment["properties"]}),
    )
    .await;

    let (code, report) = verify(&h, &[&a]).await;
    assert_eq!(code, Some(1), "{report}");
    assert_reported(&report, "node_pool", "nodeTaints");
    assert_reported(&report, "federated_credential", "properties.subject");
    assert_reported(&report, "isolation:federated-subject", &nb.namespace);
    assert_reported(&report, "namespace", "pod-security.kubernetes.io/enforce");
    assert_reported(
        &report,
        "service_account",
        "azure.workload.identity/client-id",
    );
    assert_reported(&report, "guardrail:NetworkPolicy/default-deny", "not found");
    assert_reported(&report, "role_assignment", "properties.condition");

    let (code, report) = verify(&h, &[&a, "--repair", "--timeout", "120"]).await;
    assert_eq!(
        code,
        Some(0),
        "--repair restores a clean verify: {:#?}",
        failing(&report)
    );

    // Tamperings that are someone else's: reported, never "repaired" by the worker.
    let scope = blob_container_id(&target, &na.blob_container).unwrap();
    let b_principal = h.record(&b).await.unwrap().1.resources
        [&onboarding_saga::record::StepName::Identity]["principal_id"]
        .as_str()
        .unwrap()
        .to_string();
    let foreign = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    arm_put(&h, &foreign, ROLE_ASSIGNMENTS, &json!({"properties": {
        "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", target.subscription_id),
        "principalId": b_principal, "principalType": "ServicePrincipal"}})).await;
    apply_as_admin(&cluster.admin, &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "intruders", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "outsiders"}]})).await;
    let b_node = Api::<Node>::all(cluster.admin.clone())
        .list(&ListParams::default().labels(&format!("tenant={b}")))
        .await
        .expect("nodes")
        .items
        .into_iter()
        .next()
        .and_then(|n| n.metadata.name)
        .expect("a node of b's pool");
    apply_as_admin(&cluster.admin, &json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stowaway", "namespace": ns},
        "spec": {"nodeName": b_node, "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}})).await;

    let (code, report) = verify(&h, &[&a]).await;
    assert_eq!(code, Some(1), "{report}");
    assert_reported(
        &report,
        "isolation:container-data-roles",
        &format!("tenant {b}'s identity"),
    );
    assert_reported(&report, "isolation:rolebindings", "Group outsiders");
    assert_reported(
        &report,
        "isolation:pod-placement",
        &format!("pod stowaway runs on node {b_node}"),
    );
}
