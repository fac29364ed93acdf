//! The plan's pure parts, without a network: how a check maps to a verb, a change lists each
//! field old → new, an offboarding keeps the container unless purged and skips what is not the
//! worker's, and dropping an option names exactly the objects it leaves out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use onboarding_contract::OnboardTenant;
use onboarding_contract::commands::WorkloadRequest;
use onboarding_contract::names::TenantNames;
use onboarding_providers::{Provisioning, Target, WorkloadTemplate};
use serde_json::json;

use crate::expected::{Expected, TenantInputs};
use crate::kube_checks::check_name;
use crate::plan::{Action, TenantPlan, offboard_item, onboard_item, optional_objects};
use crate::{Check, Difference, Group, Status, arm_checks};

fn check(name: &str, status: Status) -> Check {
    Check::new(name, Group::Resource, status, format!("/r/{name}"), "d")
}

#[test]
fn each_check_status_maps_onto_the_verb_the_saga_would_act_out() {
    let cases = [
        (Status::Ok, Action::Unchanged),
        (Status::Drifted, Action::Change),
        (Status::Missing, Action::Create),
        (Status::NotOurs, Action::Refuse),
        (Status::Error, Action::Unknown),
    ];
    for (status, action) in cases {
        assert_eq!(onboard_item(&check("node_pool", status)).action, action);
    }
}

#[test]
fn a_change_lists_each_field_path_with_the_live_value_as_old_and_the_request_as_new() {
    let c = Check::compared(
        "node_pool",
        "/pool",
        vec![Difference {
            path: "properties.count".into(),
            expected: json!(3),
            found: json!(1),
        }],
    );
    let item = onboard_item(&c);
    assert_eq!(item.action, Action::Change);
    assert_eq!(item.changes.len(), 1);
    assert_eq!(item.changes[0].path, "properties.count");
    assert_eq!(item.changes[0].old, json!(1));
    assert_eq!(item.changes[0].new, json!(3));
    let v = serde_json::to_value(&item).unwrap();
    assert_eq!(v["action"], "change");
    assert_eq!(
        v["changes"][0],
        json!({"path": "properties.count", "old": 1, "new": 3})
    );
}

#[test]
fn an_offboarding_removes_what_is_ours_keeps_the_container_unless_purged_and_skips_the_rest() {
    let pool = offboard_item(&check("node_pool", Status::Drifted), false).unwrap();
    assert_eq!(pool.action, Action::Remove);
    let kept = offboard_item(&check("blob_container", Status::Ok), false).unwrap();
    assert_eq!(kept.action, Action::Keep);
    let purged = offboard_item(&check("blob_container", Status::Ok), true).unwrap();
    assert_eq!(purged.action, Action::Remove);
    assert!(offboard_item(&check("identity", Status::Missing), false).is_none());
    assert!(offboard_item(&check("namespace", Status::NotOurs), false).is_none());
}

#[test]
fn the_summary_counts_items_per_verb_and_only_unchanged_or_kept_is_a_noop() {
    let plan = TenantPlan::new(
        "acme",
        "default",
        "onboard",
        vec![
            onboard_item(&check("node_pool", Status::Ok)),
            onboard_item(&check("identity", Status::Ok)),
        ],
    );
    assert_eq!(plan.summary, BTreeMap::from([("unchanged".to_string(), 2)]));
    assert!(plan.is_noop());
    assert!(plan.render().contains("= node_pool"), "{}", plan.render());
    let plan = TenantPlan::new(
        "acme",
        "default",
        "onboard",
        vec![onboard_item(&check("workload", Status::Missing))],
    );
    assert!(!plan.is_noop());
}

fn optional_names(request: &OnboardTenant) -> Vec<String> {
    let target = Target::local("default");
    // Workloads are on, as the default configuration has them.
    let provisioning = Provisioning {
        workload: Some(WorkloadTemplate::default()),
        ..Provisioning::default()
    };
    let outputs = BTreeMap::new();
    let inputs = TenantInputs {
        names: TenantNames::derive("acme").unwrap(),
        target: &target,
        provisioning: &provisioning,
        request: Some(request),
        outputs: &outputs,
        others: Vec::new(),
    };
    let exp = Expected::build(&inputs);
    optional_objects(&inputs, &exp)
        .iter()
        .map(check_name)
        .collect()
}

#[test]
fn dropping_the_workload_and_the_admin_group_leaves_out_exactly_the_deployment_and_the_binding() {
    let mut full = OnboardTenant::new("r1", "acme");
    full.admin_group_id = Some("33333333-3333-3333-3333-333333333333".into());
    full.workload = Some(WorkloadRequest { replicas: 2 });
    assert!(optional_names(&full).is_empty());
    let bare = OnboardTenant::new("r2", "acme");
    let mut names = optional_names(&bare);
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[1], "workload");
    assert!(names[0].starts_with("guardrail:RoleBinding/"), "{names:?}");
}

#[test]
fn a_node_pool_asked_for_another_count_is_a_change_of_the_count_alone() {
    let target = Target::local("default");
    let provisioning = Provisioning::default();
    let outputs = BTreeMap::new();
    let mut r = OnboardTenant::new("r1", "acme");
    r.node_pool.count = Some(3);
    let exp = Expected::build(&TenantInputs {
        names: TenantNames::derive("acme").unwrap(),
        target: &target,
        provisioning: &provisioning,
        request: Some(&r),
        outputs: &outputs,
        others: Vec::new(),
    });
    let live = json!({"properties": {
        "vmSize": "Standard_D4s_v5", "count": 1, "mode": "User",
        "nodeTaints": ["tenant=acme:NoSchedule"], "nodeLabels": {"tenant": "acme"},
        "tags": {"managed-by": "tenant-onboarding-worker", "tenant": "acme"},
    }});
    let item = onboard_item(&arm_checks::node_pool(&exp, "/pool", Some(&live)));
    assert_eq!(item.action, Action::Change);
    let paths: Vec<&str> = item.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["properties.count"]);
}
