//! Permanent failures, one step at a time: the simulators refuse one operation for good
//! (`FaultPlan::fail_ops`, a 400 the worker classifies as permanent), and the saga must undo
//! every step it completed, leaving both inventories empty, with a `tenant.onboarding_failed`
//! that names the failing step. When a compensation fails too, the outcome is
//! `tenant.compensation_failed`, whose `remaining` lists exactly what is left in the inventories.
//!
//! Operation names are the simulators': `arm.<family>.<put|get|delete>` (`sim/src/arm`) and
//! `kube.<plural>.<apply|get|list|delete>` (`sim/src/k8s`). Each case runs in its own harness,
//! several at once; the simulators answer at once (no latency).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use e2e::{ProcessHarness, Settings};
use onboarding_contract::events::{EventData, OutcomeData, STEP_COMPLETED};
use onboarding_saga::record::TenantState;
use sim::faults::FaultPlan;

/// Every forward step, and an operation whose permanent failure fails it.
const STEP_FAILURES: [(&str, &str); 9] = [
    ("node_pool", "arm.agent_pools.put"),
    ("identity", "arm.identities.put"),
    ("federated_credential", "arm.federated_credentials.put"),
    ("blob_container", "arm.blob_containers.put"),
    ("role_assignment", "arm.role_assignments.put"),
    ("namespace", "kube.namespaces.apply"),
    ("service_account", "kube.serviceaccounts.apply"),
    // The third object of the step: quota and limit range exist when it fails.
    ("guardrails", "kube.networkpolicies.apply"),
    ("workload", "kube.deployments.apply"),
];

fn plan(fail_ops: &[&str]) -> FaultPlan {
    FaultPlan {
        fail_ops: fail_ops.iter().map(|s| s.to_string()).collect(),
        ..FaultPlan::default()
    }
}

/// What one failed onboarding left behind.
#[derive(Debug)]
struct Failed {
    outcome: OutcomeData,
    outcome_type: String,
    /// Steps completed forward, and steps compensated, by their progress events.
    completed: BTreeSet<String>,
    compensated: BTreeSet<String>,
    arm: BTreeMap<String, BTreeSet<String>>,
    kube: BTreeSet<String>,
    creations: BTreeMap<String, u64>,
    journal_state: TenantState,
    /// Resources the journal still records for the tenant.
    journal_resources: usize,
}

async fn onboard_against(fail_ops: Vec<&'static str>, tenant: &str) -> Failed {
    let h = ProcessHarness::start(Settings {
        faults: plan(&fail_ops),
        ..Settings::default()
    })
    .await;
    let started = std::time::Instant::now();
    h.spawn_worker();
    let request = format!("req-{tenant}");
    h.send_onboard(tenant, &request, true).await;
    let outcomes = h
        .wait_for_outcomes(std::slice::from_ref(&request), Duration::from_secs(60))
        .await;
    eprintln!(
        "{tenant}: outcome after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    h.wait_for_empty_queue(Duration::from_secs(30)).await;
    let terminal = &outcomes[&request];
    let EventData::Outcome(outcome) = terminal.data.clone() else {
        panic!("not an outcome: {terminal:?}");
    };
    let mut completed = BTreeSet::new();
    let mut compensated = BTreeSet::new();
    for e in h.events_of(&request).await {
        if e.ty != STEP_COMPLETED {
            continue;
        }
        if let EventData::Step(s) = &e.data {
            match s.phase.as_str() {
                "forward" => completed.insert(s.step.clone()),
                _ => compensated.insert(s.step.clone()),
            };
        }
    }
    let (_, rec) = h.record(tenant).await.expect("journal record");
    assert!(
        rec.active.is_none() && rec.finished.iter().any(|f| f.request_id == request),
        "the request is not remembered as finished: {rec:?}"
    );
    assert!(h.dead_letters().await.is_empty());
    Failed {
        outcome,
        outcome_type: terminal.ty.clone(),
        completed,
        compensated,
        arm: h.arm_resources(),
        kube: h.kube_objects(),
        creations: h.creations(),
        journal_state: rec.state,
        journal_resources: rec.resources.len(),
    }
}

fn total(arm: &BTreeMap<String, BTreeSet<String>>) -> usize {
    arm.values().map(BTreeSet::len).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_at_any_step_compensates_every_completed_step_and_leaves_nothing() {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(3));
    let mut tasks = Vec::new();
    for (i, (step, op)) in STEP_FAILURES.iter().enumerate() {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _p = gate.acquire_owned().await.unwrap();
            let f = onboard_against(vec![op], &format!("perm-{i}")).await;
            (*step, *op, f)
        }));
    }
    for t in tasks {
        let (step, op, f) = t.await.unwrap();
        let ctx = format!("{op} failing ({step}): {f:#?}");
        assert_eq!(f.outcome_type, "tenant.onboarding_failed", "{ctx}");
        assert_eq!(f.outcome.state, "Failed", "{ctx}");
        let error = f
            .outcome
            .error
            .as_ref()
            .expect("the outcome names the error");
        assert_eq!(error.step.as_deref(), Some(step), "{ctx}");
        assert_eq!(error.class, "permanent", "{ctx}");
        assert!(f.outcome.remaining.is_empty(), "{ctx}");
        assert!(f.outcome.resources.is_empty(), "{ctx}");
        // Every step that completed was undone (the failing one may have half-happened: it is
        // compensated too, which is why compensated ⊇ completed and not equal).
        assert!(
            f.completed.is_subset(&f.compensated),
            "completed {:?} but compensated only {:?}: {ctx}",
            f.completed,
            f.compensated
        );
        assert!(!f.completed.contains(step), "{ctx}");
        assert_eq!(total(&f.arm), 0, "ARM resources left: {ctx}");
        assert!(f.kube.is_empty(), "Kubernetes objects left: {ctx}");
        assert_eq!(f.journal_state, TenantState::Failed, "{ctx}");
        assert_eq!(f.journal_resources, 0, "{ctx}");
        // Nothing was created twice on the way.
        assert!(
            f.creations
                .iter()
                .all(|(k, n)| *n <= if k == "kube:NetworkPolicy" { 3 } else { 1 }),
            "{ctx}"
        );
    }
}

/// `Kind/namespace/name` or `Kind/name` (as the worker reports them) in the harness's
/// `Kind/namespace/name` form (`Kind//name` when cluster-scoped).
fn kube_key(reference: &str) -> String {
    let parts: Vec<&str> = reference.split('/').collect();
    match parts.as_slice() {
        [kind, name] => format!("{kind}//{name}"),
        _ => reference.to_string(),
    }
}

/// What `remaining` says is left, in the inventories' forms: ARM ids lowercased, Kubernetes
/// objects as `Kind/namespace/name`.
fn remaining_as_inventory(outcome: &OutcomeData) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut arm = BTreeSet::new();
    let mut kube = BTreeSet::new();
    for r in &outcome.remaining {
        assert_eq!(r.reason, "failed", "{r:?}");
        for item in r.resource.split(", ") {
            if item.starts_with("/subscriptions/") {
                arm.insert(item.to_ascii_lowercase());
            } else {
                kube.insert(kube_key(item));
            }
        }
    }
    (arm, kube)
}

fn all_arm(arm: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    arm.values().flatten().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_compensation_ends_in_compensation_failed_listing_exactly_what_remains() {
    // The role assignment is refused, then deleting the identity is refused too.
    let arm_case = tokio::spawn(onboard_against(
        vec!["arm.role_assignments.put", "arm.identities.delete"],
        "stuck-arm",
    ));
    // The service account is refused; deleting the namespace and the container is refused.
    let mixed_case = tokio::spawn(onboard_against(
        vec![
            "kube.serviceaccounts.apply",
            "kube.namespaces.delete",
            "arm.blob_containers.delete",
        ],
        "stuck-mixed",
    ));
    for (f, want_steps) in [
        (arm_case.await.unwrap(), vec!["identity"]),
        (
            mixed_case.await.unwrap(),
            vec!["namespace", "blob_container"],
        ),
    ] {
        let ctx = format!("{f:#?}");
        assert_eq!(f.outcome_type, "tenant.compensation_failed", "{ctx}");
        assert_eq!(f.outcome.state, "CompensationFailed", "{ctx}");
        assert_eq!(f.journal_state, TenantState::CompensationFailed, "{ctx}");
        let steps: BTreeSet<&str> = f
            .outcome
            .remaining
            .iter()
            .map(|r| r.step.as_str())
            .collect();
        assert_eq!(
            steps,
            want_steps.into_iter().collect::<BTreeSet<_>>(),
            "{ctx}"
        );
        let (arm, kube) = remaining_as_inventory(&f.outcome);
        assert_eq!(arm, all_arm(&f.arm), "remaining vs ARM inventory: {ctx}");
        assert_eq!(kube, f.kube, "remaining vs Kubernetes inventory: {ctx}");
        assert!(!arm.is_empty() || !kube.is_empty(), "{ctx}");
        // The error is the compensation's.
        let error = f.outcome.error.as_ref().expect("error");
        assert!(error.step.is_some(), "{ctx}");
    }
}

#[test]
fn every_step_of_the_saga_has_a_permanent_failure_case() {
    let covered: BTreeSet<&str> = STEP_FAILURES.iter().map(|(s, _)| *s).collect();
    let all: BTreeSet<&str> = onboarding_saga::record::StepName::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(covered, all);
}
