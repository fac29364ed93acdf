//! The Kubernetes provider against a real control plane (kube-apiserver, controller-manager,
//! scheduler, etcd built by `scripts/kube.sh`), authenticated as the worker's own ServiceAccount
//! with exactly the RBAC in `k8s/base/rbac.yaml`. What the simulator cannot show: RBAC escalation
//! prevention, Pod Security admission, asynchronous namespace deletion, the scheduler honouring
//! the tenant's taints.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use onboarding_core::{Classify, ErrorClass};
use onboarding_kube::KubeApplier;
use onboarding_providers::manifests;
use onboarding_providers::{EgressRule, GuardrailDefaults, KubeObject, KubeProvisioner, Target};
use onboarding_testkit::kube_conformance::tenant_objects;
use onboarding_testkit::real_cluster::{self, RealCluster};
use serde_json::json;

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

async fn applier(cluster: &RealCluster) -> (KubeApplier, Target) {
    let target = cluster.target();
    let targets = [("default".to_string(), target.clone())]
        .into_iter()
        .collect();
    let applier = KubeApplier::from_targets(&targets)
        .await
        .expect("a client for the real API server");
    (applier, target)
}

#[tokio::test]
async fn the_worker_applies_every_tenant_object_with_exactly_the_shipped_rbac() {
    let Some(cluster) = RealCluster::connect("tenant objects as the worker").await else {
        return;
    };
    let (kube, target) = applier(&cluster).await;
    let tenant = unique("rbac");
    let (ns, objects) = tenant_objects(&tenant);
    for object in &objects {
        let live = kube
            .apply(&target, object)
            .await
            .unwrap_or_else(|e| panic!("{} {} refused: {e}", object.kind, object.name));
        assert_eq!(live["metadata"]["name"], object.name.as_str());
    }
    // The admins' binding grants the shipped ClusterRole; the worker wrote no Role.
    let binding = kube
        .get(&target, &manifests::guardrail_refs(&ns)[0])
        .await
        .expect("get")
        .expect("the admin RoleBinding exists");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(
        binding["roleRef"]["name"],
        manifests::TENANT_ADMIN_CLUSTER_ROLE
    );
    // Applying everything again changes nothing and is refused nowhere (idempotent).
    for object in &objects {
        kube.apply(&target, object).await.expect("re-apply");
    }
}

#[tokio::test]
async fn a_role_granting_rights_the_worker_lacks_is_refused_permanently() {
    let Some(cluster) = RealCluster::connect("escalation prevention").await else {
        return;
    };
    let (kube, target) = applier(&cluster).await;
    let tenant = unique("esc");
    let ns = format!("tenant-{tenant}");
    kube.apply(&target, &manifests::namespace(&ns, &tenant))
        .await
        .expect("namespace");
    // What the first round's guardrails wrote: a Role with secrets and exec.
    let role = KubeObject {
        api_version: "rbac.authorization.k8s.io/v1".into(),
        kind: "Role".into(),
        namespace: Some(ns.clone()),
        name: "tenant-admin".into(),
        manifest: json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "tenant-admin", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["secrets", "pods/exec"], "verbs": ["get", "create"]}],
        }),
    };
    let err = kube.apply(&target, &role).await.expect_err("forbidden");
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.message.contains("forbidden"), "{err}");
}

async fn worker_may(cluster: &RealCluster, verb: &str, resource: &str, ns: Option<&str>) -> bool {
    // `group/resource` names a resource outside the core group.
    let (group, resource) = resource
        .split_once('/')
        .filter(|(g, _)| g.contains('.'))
        .unwrap_or(("", resource));
    let client = cluster.worker_client().await;
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client);
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: ns.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = reviews
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectAccessReview");
    answer.status.map(|s| s.allowed).unwrap_or(false)
}

#[tokio::test]
async fn the_worker_holds_no_tenant_rights_of_its_own_anywhere() {
    let Some(cluster) = RealCluster::connect("worker least privilege").await else {
        return;
    };
    for (verb, resource, ns) in [
        ("create", "pods", Some("default")),
        ("get", "secrets", Some("kube-system")),
        ("create", "pods/exec", Some("tenant-onboarding")),
        ("create", "rbac.authorization.k8s.io/roles", Some("default")),
        ("escalate", "rbac.authorization.k8s.io/clusterroles", None),
        ("bind", "rbac.authorization.k8s.io/clusterroles", None),
    ] {
        assert!(
            !worker_may(&cluster, verb, resource, ns).await,
            "the worker may {verb} {resource} in {ns:?}"
        );
    }
    assert!(worker_may(&cluster, "create", "namespaces", None).await);
    assert!(
        worker_may(
            &cluster,
            "create",
            "rbac.authorization.k8s.io/rolebindings",
            Some("default")
        )
        .await
    );
}

/// Register a Node as AKS would for the tenant's pool: its labels, its taint, Ready.
async fn register_tenant_node(cluster: &RealCluster, tenant: &str) -> String {
    let name = format!("aks-{}-vmss000000", &tenant[..tenant.len().min(12)]);
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "tenant": tenant, "kubernetes.azure.com/agentpool": tenant,
            "kubernetes.io/os": "linux", "kubernetes.io/hostname": name}},
        "spec": {"taints": [{"key": "tenant", "value": tenant, "effect": "NoSchedule"}]},
    });
    real_cluster::apply_as_admin(&cluster.admin, &node).await;
    let nodes: Api<Node> = Api::all(cluster.admin.clone());
    let status = json!({"status": {
        "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
        "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "registered by the test as AKS would"}]}});
    nodes
        .patch_status(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await
        .expect("node status");
    name
}

#[tokio::test]
async fn tenant_pods_pass_pod_security_and_land_only_on_the_tenant_nodes() {
    let Some(cluster) = RealCluster::connect("placement").await else {
        return;
    };
    let (kube, target) = applier(&cluster).await;
    let tenant = unique("pl");
    let node = register_tenant_node(&cluster, &tenant).await;
    let (ns, objects) = tenant_objects(&tenant);
    for object in &objects {
        kube.apply(&target, object).await.expect("apply");
    }
    // The workload's pods are admitted under Pod Security `restricted` and bound to the node.
    let pods: Api<Pod> = Api::namespaced(cluster.admin.clone(), &ns);
    let placed = cluster
        .eventually("workload pods scheduled", Duration::from_secs(60), || {
            let pods = pods.clone();
            async move {
                let list = pods.list(&ListParams::default()).await.ok()?;
                // The workload runs one replica (tenant_objects); every pod of it bound.
                let nodes: Vec<String> = list
                    .items
                    .iter()
                    .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                    .collect();
                (!nodes.is_empty() && nodes.len() == list.items.len()).then_some(nodes)
            }
        })
        .await;
    assert!(placed.iter().all(|n| n == &node), "{placed:?}");

    // A pod without the toleration stays Pending: no node will take it.
    let stray: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stray", "namespace": ns},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                              "limits": {"cpu": "10m", "memory": "16Mi"}},
                "securityContext": {"allowPrivilegeEscalation": false,
                                    "capabilities": {"drop": ["ALL"]}}}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &stray)
        .await
        .expect("the stray pod is admitted");
    let reason = cluster
        .eventually(
            "the stray pod judged unschedulable",
            Duration::from_secs(30),
            || {
                let pods = pods.clone();
                async move {
                    let p = pods.get("stray").await.ok()?;
                    let status = p.status?;
                    let cond = status
                        .conditions?
                        .into_iter()
                        .find(|c| c.type_ == "PodScheduled")?;
                    (cond.status == "False").then_some(cond.reason.unwrap_or_default())
                }
            },
        )
        .await;
    assert_eq!(reason, "Unschedulable");
    let stray = pods.get("stray").await.expect("stray");
    assert_eq!(stray.spec.and_then(|s| s.node_name), None);
}

#[tokio::test]
async fn a_deleted_namespace_is_gone_only_when_the_api_server_says_so() {
    let Some(cluster) = RealCluster::connect("namespace deletion").await else {
        return;
    };
    let (kube, target) = applier(&cluster).await;
    let tenant = unique("del");
    let (ns, objects) = tenant_objects(&tenant);
    for object in objects.iter().filter(|o| o.kind != "Deployment") {
        kube.apply(&target, object).await.expect("apply");
    }
    let reference = manifests::namespace_ref(&ns);
    kube.delete(&target, &reference).await.expect("delete");
    // Deleting again while it terminates, or once gone, is success.
    kube.delete(&target, &reference)
        .await
        .expect("delete again");
    cluster
        .eventually("namespace removed", Duration::from_secs(90), || {
            let kube = &kube;
            let target = &target;
            let reference = &reference;
            async move {
                match kube.get(target, reference).await {
                    Ok(None) => Some(()),
                    Ok(Some(live)) => {
                        // While it exists it says it is going.
                        assert_eq!(live["status"]["phase"], "Terminating", "{live}");
                        None
                    }
                    Err(e) => panic!("get: {e}"),
                }
            }
        })
        .await;
}

/// The egress policy (IPv4 and IPv6 `ipBlock` peers, TCP ports) passes the API server's
/// validation as the worker applies it, reads back as built, and goes with the guard rails.
#[tokio::test]
async fn the_egress_policy_is_accepted_by_the_api_server_and_removed_with_the_guard_rails() {
    let Some(cluster) = RealCluster::connect("egress policy").await else {
        return;
    };
    let (kube, target) = applier(&cluster).await;
    let tenant = unique("eg");
    let ns = format!("tenant-{tenant}");
    kube.apply(&target, &manifests::namespace(&ns, &tenant))
        .await
        .expect("namespace");
    let rule = |name: &str, cidrs: &[&str], ports: &[u16]| EgressRule {
        name: name.into(),
        cidrs: cidrs.iter().map(|c| (*c).to_string()).collect(),
        ports: ports.to_vec(),
    };
    let defaults = GuardrailDefaults {
        egress: vec![
            rule("entra", &["20.190.128.0/18", "2603:1006:2000::/48"], &[443]),
            rule("storage", &["20.60.0.0/16"], &[443, 8443]),
        ],
        ..GuardrailDefaults::default()
    };
    let objects = manifests::guardrails(
        &ns,
        &tenant,
        &manifests::GuardrailSpec::from_defaults(&defaults, None),
    );
    let built = objects
        .iter()
        .find(|o| o.name == manifests::ALLOW_EGRESS_AZURE_POLICY_NAME)
        .expect("the egress policy is built");
    for object in &objects {
        kube.apply(&target, object)
            .await
            .unwrap_or_else(|e| panic!("{} {} refused: {e}", object.kind, object.name));
    }
    let live = kube
        .get(&target, &built.reference())
        .await
        .expect("get")
        .expect("the egress policy exists");
    assert_eq!(live["spec"], built.manifest["spec"]);
    // Compensation and offboarding delete every guard rail by reference, this one included.
    for reference in manifests::guardrail_refs(&ns) {
        kube.delete(&target, &reference).await.expect("delete");
    }
    assert!(
        kube.get(&target, &built.reference())
            .await
            .expect("get")
            .is_none()
    );
    kube.delete(&target, &manifests::namespace_ref(&ns))
        .await
        .expect("namespace");
}

/// Host-name egress on a cluster that runs Cilium: the worker applies its
/// `CiliumNetworkPolicy` with its own (shipped) RBAC, it reads back as built, and the guard
/// rails' compensation removes it. The cluster here has no Cilium; the test installs a CRD for
/// the kind that accepts any spec, so what is checked is the worker's side (kind, RBAC,
/// ownership labels, delete), not Cilium's validation.
#[tokio::test]
async fn a_host_name_egress_policy_is_applied_and_removed_where_cilium_serves_it() {
    let Some(cluster) = RealCluster::connect("host-name egress policy").await else {
        return;
    };
    onboarding_testkit::real_cluster::apply_as_admin(
        &cluster.admin,
        &serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "ciliumnetworkpolicies.cilium.io"},
            "spec": {
                "group": "cilium.io",
                "scope": "Namespaced",
                "names": {"plural": "ciliumnetworkpolicies", "singular": "ciliumnetworkpolicy",
                          "kind": "CiliumNetworkPolicy", "shortNames": ["cnp"]},
                "versions": [{"name": "v2", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        }),
    )
    .await;
    let (kube, target) = applier(&cluster).await;
    let kube = std::sync::Arc::new(kube);
    let tenant = unique("fq");
    let ns = format!("tenant-{tenant}");
    kube.apply(&target, &manifests::namespace(&ns, &tenant))
        .await
        .expect("namespace");
    let defaults = GuardrailDefaults {
        fqdn_egress: Some(
            onboarding_providers::FqdnEgress {
                engine: onboarding_providers::FqdnEngine::Cilium,
                names: vec!["login.microsoftonline.com".into()],
                ports: vec![443],
            }
            .for_account("sttenants"),
        ),
        ..GuardrailDefaults::default()
    };
    let objects = manifests::guardrails(
        &ns,
        &tenant,
        &manifests::GuardrailSpec::from_defaults(&defaults, None),
    );
    let built = objects
        .iter()
        .find(|o| o.kind == manifests::CILIUM_POLICY_KIND)
        .expect("the Cilium policy is built")
        .clone();
    // A CRD is served a moment after it is created.
    let live = cluster
        .eventually(
            "the CiliumNetworkPolicy applied",
            Duration::from_secs(30),
            || {
                let (kube, target, built) = (kube.clone(), target.clone(), built.clone());
                async move { kube.apply(&target, &built).await.ok() }
            },
        )
        .await;
    assert_eq!(live["spec"], built.manifest["spec"]);
    assert_eq!(
        live["metadata"]["labels"][manifests::MANAGED_BY_LABEL],
        manifests::FIELD_MANAGER
    );
    kube.delete(&target, &manifests::fqdn_policy_ref(&ns))
        .await
        .expect("delete");
    assert!(
        kube.get(&target, &manifests::fqdn_policy_ref(&ns))
            .await
            .expect("get")
            .is_none()
    );
    kube.delete(&target, &manifests::namespace_ref(&ns))
        .await
        .expect("namespace");
}

/// The `KubeProvisioner` conformance suite against the real API server, as the worker.
mod conformance {
    use super::*;

    async fn real() -> Option<onboarding_testkit::kube_conformance::KubeEnv> {
        let cluster = RealCluster::connect("KubeProvisioner conformance (real API server)").await?;
        let (kube, target) = applier(&cluster).await;
        Some(onboarding_testkit::kube_conformance::KubeEnv {
            kube: std::sync::Arc::new(kube),
            target,
            // Content is removed first (the namespace controller): seconds, not minutes, when
            // no pods are bound.
            namespace_deletion: Duration::from_secs(90),
            guard: Box::new(cluster),
        })
    }

    onboarding_testkit::kube_conformance_tests!(real);
}
