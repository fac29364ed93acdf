//! Expected against live JSON, without a network: each tampering is reported by name, and what
//! the worker itself would write is clean.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use onboarding_contract::OnboardTenant;
use onboarding_contract::names::TenantNames;
use onboarding_providers::{Provisioning, Target};
use serde_json::{Value, json};

use crate::expected::{Expected, OtherTenant, TenantInputs};
use crate::{Status, arm_checks, isolation, kube_checks};

const PRINCIPAL: &str = "11111111-1111-1111-1111-111111111111";
const OTHER_PRINCIPAL: &str = "22222222-2222-2222-2222-222222222222";
const GROUP: &str = "33333333-3333-3333-3333-333333333333";

fn expected(request: Option<&OnboardTenant>) -> Expected {
    let target = Target::local("default");
    let provisioning = Provisioning::default();
    let container =
        onboarding_providers::arm_ids::blob_container_id(&target, "tenant-acme").unwrap();
    let outputs = BTreeMap::from([
        (
            "identity".to_string(),
            json!({"principal_id": PRINCIPAL, "client_id": "c-1"}),
        ),
        ("blob_container".to_string(), json!({"id": container})),
    ]);
    Expected::build(&TenantInputs {
        names: TenantNames::derive("acme").unwrap(),
        target: &target,
        provisioning: &provisioning,
        request,
        outputs: &outputs,
        others: Vec::new(),
    })
}

fn request() -> OnboardTenant {
    let mut r = OnboardTenant::new("r1", "acme");
    r.admin_group_id = Some(GROUP.into());
    r
}

fn live_pool(taints: &[&str]) -> Value {
    json!({"properties": {
        "vmSize": "Standard_D4s_v5", "count": 1, "enableAutoScaling": false, "mode": "User",
        "nodeTaints": taints, "nodeLabels": {"tenant": "acme"},
        "tags": {"managed-by": "tenant-onboarding-worker", "tenant": "acme"},
    }})
}

#[test]
fn a_pool_as_the_worker_builds_it_is_clean_and_one_without_its_taint_is_drift_on_the_taint() {
    let exp = expected(Some(&request()));
    assert_eq!(
        arm_checks::node_pool(&exp, "p", Some(&live_pool(&["tenant=acme:NoSchedule"]))).status,
        Status::Ok
    );
    let drifted = arm_checks::node_pool(&exp, "p", Some(&live_pool(&[])));
    assert_eq!(drifted.status, Status::Drifted);
    assert_eq!(
        drifted.differences[0].path, "properties.nodeTaints",
        "{drifted:?}"
    );
    assert!(
        drifted.detail.contains("tenant=acme:NoSchedule"),
        "{}",
        drifted.detail
    );
}

fn assignment(name: &str, principal: &str, condition: &str) -> Value {
    json!({"name": name, "id": format!("/x/{name}"), "properties": {
        "principalId": principal,
        "roleDefinitionId": "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        "condition": condition, "conditionVersion": "2.0",
    }})
}

#[test]
fn an_edited_abac_condition_is_drift_on_the_condition() {
    let exp = expected(Some(&request()));
    let spec = exp.role_assignment.clone().unwrap();
    let scope = exp.container_scope.clone().unwrap();
    let mut ours = assignment(&spec.name, PRINCIPAL, &spec.condition);
    ours["properties"]["scope"] = json!(scope);
    assert_eq!(
        arm_checks::role_assignment(&exp, &scope, std::slice::from_ref(&ours)).status,
        Status::Ok
    );
    ours["properties"]["condition"] = json!(spec.condition.replace("tenant-acme", "tenant-other"));
    let check = arm_checks::role_assignment(&exp, &scope, &[ours]);
    assert_eq!(check.status, Status::Drifted);
    assert_eq!(check.differences[0].path, "properties.condition");
}

#[test]
fn another_tenants_data_role_on_the_container_is_a_violation_naming_that_tenant() {
    let exp = expected(Some(&request()));
    let spec = exp.role_assignment.clone().unwrap();
    let ours = assignment(&spec.name, PRINCIPAL, &spec.condition);
    let foreign = assignment("99999999-9999-9999-9999-999999999999", OTHER_PRINCIPAL, "");
    let others = [OtherTenant {
        tenant_id: "beta".into(),
        principal_id: Some(OTHER_PRINCIPAL.into()),
    }];
    let clean = arm_checks::container_data_roles(&exp, "s", std::slice::from_ref(&ours), &others);
    assert_eq!(clean.status, Status::Ok);
    let check = arm_checks::container_data_roles(&exp, "s", &[ours, foreign], &others);
    assert_eq!(check.status, Status::Violation);
    assert!(
        check.detail.contains("tenant beta's identity"),
        "{}",
        check.detail
    );
}

#[test]
fn a_changed_federated_subject_is_drift_and_an_isolation_violation() {
    let exp = expected(Some(&request()));
    let live = json!({"properties": {"issuer": Target::local("d").oidc_issuer,
        "subject": "system:serviceaccount:tenant-beta:tenant-workload", "audiences": ["api://AzureADTokenExchange"]}});
    assert_eq!(
        arm_checks::federated_credential(&exp, "f", Some(&live)).differences[0].path,
        "properties.subject"
    );
    assert_eq!(
        arm_checks::federated_subject(&exp, "f", Some(&live)).status,
        Status::Violation
    );
}

fn binding(exp: &Expected) -> onboarding_providers::KubeObject {
    exp.guardrails
        .iter()
        .find(|o| o.kind == "RoleBinding")
        .cloned()
        .expect("a binding")
}

#[test]
fn an_extra_subject_on_the_admin_binding_is_drift_and_an_outside_subject() {
    let exp = expected(Some(&request()));
    let b = binding(&exp);
    let mut live = b.manifest.clone();
    assert_eq!(
        kube_checks::object(&b, true, Some(&live)).status,
        Status::Ok
    );
    live["subjects"].as_array_mut().unwrap().push(
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "outsiders"}),
    );
    let check = kube_checks::object(&b, true, Some(&live));
    assert_eq!(
        (check.name.as_str(), check.status),
        ("guardrail:RoleBinding/tenant-admin", Status::Drifted)
    );
    assert_eq!(check.differences[0].path, "subjects");
    let iso = isolation::role_bindings(&exp, Some(GROUP), &[live]);
    assert_eq!(iso.status, Status::Violation);
    assert!(iso.detail.contains("Group outsiders"), "{}", iso.detail);
}

#[test]
fn without_the_request_body_the_admin_group_id_is_not_compared_but_the_subject_count_is() {
    let exp = expected(None);
    assert!(
        exp.admin_group.is_none(),
        "no binding recorded, none expected"
    );
    let known = expected(Some(&request()));
    let b = binding(&known);
    let mut live = b.manifest.clone();
    live["subjects"][0]["name"] = json!("44444444-4444-4444-4444-444444444444");
    assert_eq!(
        kube_checks::object(&b, false, Some(&live)).status,
        Status::Ok
    );
    assert_eq!(
        kube_checks::object(&b, true, Some(&live)).status,
        Status::Drifted
    );
}

#[test]
fn a_namespace_label_changed_or_a_guardrail_deleted_is_reported_by_name() {
    let exp = expected(Some(&request()));
    let mut ns = exp.namespace.manifest.clone();
    ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = json!("privileged");
    let check = kube_checks::object(&exp.namespace, true, Some(&ns));
    assert_eq!(
        (check.name.as_str(), check.status),
        ("namespace", Status::Drifted)
    );
    assert!(
        check.detail.contains("pod-security.kubernetes.io/enforce"),
        "{}",
        check.detail
    );
    let deny = exp
        .guardrails
        .iter()
        .find(|o| o.name == "default-deny")
        .unwrap();
    let missing = kube_checks::object(deny, true, None);
    assert_eq!(
        (missing.name.as_str(), missing.status),
        ("guardrail:NetworkPolicy/default-deny", Status::Missing)
    );
}

#[test]
fn a_pod_on_a_node_outside_the_tenants_pool_is_a_violation_naming_pod_and_node() {
    let exp = expected(Some(&request()));
    let node = |tenant: &str| {
        json!({"metadata": {"labels": {"tenant": tenant}},
        "spec": {"taints": [{"key": "tenant", "value": tenant, "effect": "NoSchedule"}]}})
    };
    let nodes = BTreeMap::from([
        ("n-acme".to_string(), node("acme")),
        ("n-beta".to_string(), node("beta")),
    ]);
    let pod =
        |name: &str, node: &str| json!({"metadata": {"name": name}, "spec": {"nodeName": node}});
    let pending = json!({"metadata": {"name": "p0"}, "spec": {}});
    assert_eq!(
        isolation::pod_placement(&exp, &[pod("p1", "n-acme"), pending], &nodes).status,
        Status::Ok
    );
    let check = isolation::pod_placement(
        &exp,
        &[pod("p1", "n-acme"), pod("intruder", "n-beta")],
        &nodes,
    );
    assert_eq!(check.status, Status::Violation);
    assert!(
        check.detail.contains("pod intruder runs on node n-beta"),
        "{}",
        check.detail
    );
}

#[test]
fn an_allowed_cluster_scope_probe_is_a_violation_and_a_refused_namespace_probe_for_admins_too() {
    let exp = expected(Some(&request()));
    let probes = isolation::probes(&exp, Some(GROUP), &["tenant-beta".to_string()]);
    let nodes = probes
        .iter()
        .find(|p| p.who == "admin-group" && p.resource.1 == "nodes")
        .unwrap();
    assert_eq!(isolation::probe_check(nodes, Ok(false)).status, Status::Ok);
    let leak = isolation::probe_check(nodes, Ok(true));
    assert_eq!(
        (leak.name.as_str(), leak.status),
        (
            "isolation:access:admin-group:list nodes in cluster",
            Status::Violation
        )
    );
    let own = probes
        .iter()
        .find(|p| p.who == "admin-group" && p.expect_allowed)
        .unwrap();
    assert_eq!(
        isolation::probe_check(own, Ok(false)).status,
        Status::Violation
    );
    assert!(probes.iter().any(|p| p.who == "service-account"
        && p.namespace.as_deref() == Some("tenant-beta")
        && !p.expect_allowed));
    assert!(
        probes
            .iter()
            .filter(|p| p.who == "service-account")
            .all(|p| !p.expect_allowed)
    );
}
