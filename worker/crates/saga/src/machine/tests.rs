//! Unit tests of the state machine: runs built by hand on a three-step graph, no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use onboarding_config::SagaConfig;
use onboarding_contract::Command;
use onboarding_contract::events;
use onboarding_providers::{OperationKind, PendingOperation, ProviderError};
use onboarding_record::{Phase, SagaRun, Status, StepName, StepState, TenantRecord, TenantState};
use serde_json::json;

use super::*;
use crate::step::StepOutcome;

const NS: StepName = StepName::Namespace;
const ID: StepName = StepName::Identity;
const FED: StepName = StepName::FederatedCredential;

/// Namespace and identity need nothing; the federated credential needs the identity.
fn graph() -> StepGraph {
    StepGraph::new([(NS, &[][..]), (ID, &[][..]), (FED, &[ID][..])])
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

fn onboard() -> Command {
    serde_json::from_value(json!({
        "schemaVersion": "1.0",
        "kind": "OnboardTenant",
        "requestId": "req-1",
        "tenantId": "acme",
        "nodePool": {"vmSize": "Standard_D4s_v5", "count": 1}
    }))
    .unwrap()
}

fn offboard() -> Command {
    serde_json::from_value(json!({
        "schemaVersion": "1.0",
        "kind": "OffboardTenant",
        "requestId": "req-2",
        "tenantId": "acme"
    }))
    .unwrap()
}

fn run(command: Command, phase: Phase, steps: &[(StepName, Status, Status)]) -> SagaRun {
    SagaRun {
        request_id: command.request_id().to_string(),
        command,
        target: "default".into(),
        phase,
        failure: None,
        steps: steps
            .iter()
            .map(|&(n, forward, compensation)| {
                (
                    n,
                    StepState {
                        forward,
                        compensation,
                        ..StepState::default()
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
        preexisting: BTreeSet::new(),
        removing: BTreeSet::new(),
        not_found: false,
        seq: 0,
        next_continuation: None,
        started_at: t0(),
        traceparent: None,
    }
}

fn forward(steps: &[(StepName, Status)]) -> SagaRun {
    let steps: Vec<_> = steps
        .iter()
        .map(|&(n, s)| (n, s, Status::NotNeeded))
        .collect();
    run(onboard(), Phase::Forward, &steps)
}

fn record(run: SagaRun) -> TenantRecord {
    TenantRecord {
        active: Some(run),
        ..TenantRecord::new("acme")
    }
}

fn step(rec: &TenantRecord, name: StepName) -> &StepState {
    &rec.active.as_ref().unwrap().steps[&name]
}

fn saga() -> SagaConfig {
    SagaConfig::default()
}

fn throttled() -> ProviderError {
    ProviderError::transient("create", "acme", "throttled")
}

fn refused() -> ProviderError {
    ProviderError::permanent("create", "acme", "quota exceeded")
}

#[test]
fn a_step_waits_until_every_step_it_needs_is_done() {
    let graph = graph();
    let none = BTreeSet::new();
    let r = forward(&[
        (NS, Status::Pending),
        (ID, Status::Pending),
        (FED, Status::Pending),
    ]);
    assert_eq!(ready(&graph, &r, t0(), &none), vec![NS, ID]);
    let r = forward(&[
        (NS, Status::Pending),
        (ID, Status::Waiting),
        (FED, Status::Pending),
    ]);
    assert_eq!(ready(&graph, &r, t0(), &none), vec![NS, ID]);
    let r = forward(&[
        (NS, Status::Done),
        (ID, Status::Done),
        (FED, Status::Pending),
    ]);
    assert_eq!(ready(&graph, &r, t0(), &none), vec![FED]);
}

#[test]
fn a_waiting_step_is_ready_only_once_its_wake_time_has_come() {
    let graph = graph();
    let none = BTreeSet::new();
    let mut r = forward(&[(NS, Status::Waiting)]);
    r.steps.get_mut(&NS).unwrap().wake_at = Some(t0() + Duration::from_secs(10));
    assert!(ready(&graph, &r, t0(), &none).is_empty());
    assert_eq!(
        ready(&graph, &r, t0() + Duration::from_secs(10), &none),
        vec![NS]
    );
}

#[test]
fn a_step_already_in_flight_is_not_launched_twice_but_one_left_running_by_a_dead_worker_is() {
    let graph = graph();
    let r = forward(&[(NS, Status::Running), (ID, Status::Running)]);
    let running = BTreeSet::from([NS]);
    assert_eq!(ready(&graph, &r, t0(), &running), vec![ID]);
}

#[test]
fn compensation_undoes_a_step_only_after_every_step_that_needs_it() {
    let graph = graph();
    let none = BTreeSet::new();
    let r = run(
        onboard(),
        Phase::Compensating,
        &[
            (NS, Status::Done, Status::Pending),
            (ID, Status::Done, Status::Pending),
            (FED, Status::Done, Status::Pending),
        ],
    );
    assert_eq!(ready(&graph, &r, t0(), &none), vec![NS, FED]);
    let mut r = r;
    r.steps.get_mut(&FED).unwrap().compensation = Status::Done;
    assert_eq!(ready(&graph, &r, t0(), &none), vec![NS, ID]);
    assert_eq!(
        ready(&graph, &r, t0(), &BTreeSet::from([NS])),
        vec![ID],
        "a step being undone is not launched again"
    );
}

#[test]
fn launching_marks_the_steps_running_in_the_current_direction_with_their_operation() {
    let mut r = forward(&[(NS, Status::Pending), (ID, Status::Waiting)]);
    let op = PendingOperation {
        url: "https://op".into(),
        kind: OperationKind::Location,
        retry_after_secs: 5,
        since: None,
        place: None,
    };
    r.steps.get_mut(&ID).unwrap().operation = Some(op.clone());
    let launched = launch(&mut r, &[NS, ID], t0());
    assert_eq!(launched, vec![(NS, None), (ID, Some(op))]);
    assert_eq!(r.steps[&NS].forward, Status::Running);
    assert_eq!(r.steps[&ID].updated_at, Some(t0()));
}

#[test]
fn a_finished_step_records_its_outputs_and_reports_its_progress() {
    let mut rec = record(forward(&[(NS, Status::Running)]));
    let outputs = json!({"name": "t-acme"});
    let applied = apply(
        &mut rec,
        NS,
        Phase::Forward,
        Ok(StepOutcome::Done(outputs.clone())),
        t0(),
        &saga(),
        0.5,
    );
    assert_eq!(step(&rec, NS).forward, Status::Done);
    assert_eq!(rec.resources[&NS], outputs);
    assert_eq!(
        applied.completed,
        Some(Completed {
            step: NS,
            phase: "forward",
            outputs
        })
    );
}

#[test]
fn a_long_running_operation_is_polled_when_the_service_suggests() {
    let mut rec = record(forward(&[(NS, Status::Running)]));
    let op = PendingOperation {
        url: "https://op".into(),
        kind: OperationKind::AsyncOperation,
        retry_after_secs: 7,
        since: None,
        place: None,
    };
    apply(
        &mut rec,
        NS,
        Phase::Forward,
        Ok(StepOutcome::Pending(op.clone())),
        t0(),
        &saga(),
        0.5,
    );
    let st = step(&rec, NS);
    assert_eq!(st.forward, Status::Waiting);
    assert_eq!(st.wake_at, Some(t0() + Duration::from_secs(7)));
    assert_eq!(st.operation, Some(op));
}

#[test]
fn a_transient_failure_waits_for_a_continuation_with_a_growing_delay() {
    let mut rec = record(forward(&[(NS, Status::Running)]));
    for (attempt, delay_ms) in [(1, 2_000), (2, 4_000), (3, 8_000)] {
        let applied = apply(
            &mut rec,
            NS,
            Phase::Forward,
            Err(throttled()),
            t0(),
            &saga(),
            0.5,
        );
        assert!(applied.failure.unwrap().retry);
        let st = step(&rec, NS);
        assert_eq!(st.forward, Status::Waiting);
        assert_eq!(st.attempts, attempt);
        assert_eq!(st.wake_at, Some(t0() + Duration::from_millis(delay_ms)));
    }
}

#[test]
fn a_transient_failure_past_the_attempt_limit_counts_as_permanent() {
    let saga = SagaConfig {
        step_attempt_limit: 2,
        ..saga()
    };
    let mut rec = record(forward(&[(NS, Status::Running)]));
    apply(
        &mut rec,
        NS,
        Phase::Forward,
        Err(throttled()),
        t0(),
        &saga,
        0.5,
    );
    let applied = apply(
        &mut rec,
        NS,
        Phase::Forward,
        Err(throttled()),
        t0(),
        &saga,
        0.5,
    );
    assert!(applied.compensation_started);
    let run = rec.active.as_ref().unwrap();
    assert_eq!(run.phase, Phase::Compensating);
    let failure = run.failure.as_ref().unwrap();
    assert_eq!(failure.class, "transient (attempt limit reached)");
    assert_eq!(failure.step.as_deref(), Some("namespace"));
}

#[test]
fn a_permanent_failure_switches_the_run_to_compensation_of_what_it_created() {
    let mut r = forward(&[
        (NS, Status::Done),
        (ID, Status::Running),
        (FED, Status::Pending),
    ]);
    let mut rec = {
        r.preexisting.clear();
        record(r)
    };
    let applied = apply(
        &mut rec,
        ID,
        Phase::Forward,
        Err(refused()),
        t0(),
        &saga(),
        0.5,
    );
    assert!(applied.compensation_started);
    assert!(!applied.failure.unwrap().retry);
    assert_eq!(step(&rec, ID).forward, Status::Failed);
    assert_eq!(step(&rec, NS).compensation, Status::Pending);
    assert_eq!(
        step(&rec, ID).compensation,
        Status::Pending,
        "a failed create may have left something behind"
    );
    assert_eq!(
        step(&rec, FED).compensation,
        Status::NotNeeded,
        "never started, nothing to undo"
    );
}

#[test]
fn compensation_leaves_alone_what_existed_before_the_run() {
    let mut r = forward(&[(NS, Status::Done), (ID, Status::Done)]);
    r.preexisting.insert(NS);
    switch_to_compensation(&mut r, cancelled_by("req-2"));
    assert_eq!(r.steps[&NS].compensation, Status::NotNeeded);
    assert_eq!(r.steps[&ID].compensation, Status::Pending);
    assert_eq!(
        r.failure.unwrap().code.as_deref(),
        Some("CancelledByOffboarding")
    );
}

#[test]
fn only_an_offboarding_cancels_an_onboarding_that_still_goes_forward() {
    let going = forward(&[(NS, Status::Running)]);
    assert!(cancels(&offboard(), &going));
    assert!(!cancels(&onboard(), &going));
    let undoing = run(onboard(), Phase::Compensating, &[]);
    assert!(!cancels(&offboard(), &undoing));
}

#[test]
fn an_undone_step_gives_up_its_resource() {
    let mut rec = record(run(
        onboard(),
        Phase::Compensating,
        &[(NS, Status::Done, Status::Running)],
    ));
    rec.resources.insert(NS, json!({"name": "t-acme"}));
    let applied = apply(
        &mut rec,
        NS,
        Phase::Compensating,
        Ok(StepOutcome::Done(json!(null))),
        t0(),
        &saga(),
        0.5,
    );
    assert!(rec.resources.is_empty());
    assert_eq!(step(&rec, NS).compensation, Status::Done);
    assert_eq!(applied.completed.unwrap().phase, "compensation");
}

#[test]
fn a_compensation_failing_past_its_limit_is_final() {
    let saga = SagaConfig {
        compensation_attempt_limit: 1,
        ..saga()
    };
    let mut rec = record(run(
        onboard(),
        Phase::Compensating,
        &[(NS, Status::Done, Status::Running)],
    ));
    let applied = apply(
        &mut rec,
        NS,
        Phase::Compensating,
        Err(throttled()),
        t0(),
        &saga,
        0.5,
    );
    assert!(!applied.failure.unwrap().retry);
    assert_eq!(step(&rec, NS).compensation, Status::Failed);
    assert_eq!(
        terminal(rec.active.as_ref().unwrap()),
        Some(Terminal::CompensationFailed)
    );
}

#[test]
fn a_run_with_every_step_done_is_succeeded() {
    assert_eq!(
        terminal(&forward(&[(NS, Status::Done), (ID, Status::Skipped)])),
        Some(Terminal::Succeeded)
    );
    assert_eq!(
        terminal(&forward(&[(NS, Status::Done), (ID, Status::Waiting)])),
        None
    );
}

#[test]
fn a_settled_compensation_ends_as_failed_offboarded_or_compensation_failed() {
    let settled = [
        (NS, Status::Done, Status::Done),
        (ID, Status::NotNeeded, Status::NotNeeded),
    ];
    assert_eq!(
        terminal(&run(onboard(), Phase::Compensating, &settled)),
        Some(Terminal::Failed)
    );
    assert_eq!(
        terminal(&run(offboard(), Phase::Compensating, &settled)),
        Some(Terminal::Offboarded)
    );
    let unsettled = [(NS, Status::Done, Status::Waiting)];
    assert_eq!(
        terminal(&run(offboard(), Phase::Compensating, &unsettled)),
        None
    );
}

#[test]
fn the_next_wake_is_the_earliest_waiting_step_of_the_current_direction() {
    let mut r = forward(&[
        (NS, Status::Waiting),
        (ID, Status::Waiting),
        (FED, Status::Done),
    ]);
    r.steps.get_mut(&NS).unwrap().wake_at = Some(t0() + Duration::from_secs(30));
    r.steps.get_mut(&ID).unwrap().wake_at = Some(t0() + Duration::from_secs(10));
    r.steps.get_mut(&FED).unwrap().wake_at = Some(t0());
    assert_eq!(next_wake(&r), Some(t0() + Duration::from_secs(10)));
    assert_eq!(next_wake(&forward(&[(NS, Status::Done)])), None);
}

#[test]
fn each_terminal_outcome_has_its_event_tenant_state_and_metric_label() {
    let table = [
        (
            Terminal::Succeeded,
            events::ONBOARDED,
            TenantState::Onboarded,
            "Succeeded",
            "succeeded",
        ),
        (
            Terminal::Failed,
            events::ONBOARDING_FAILED,
            TenantState::Failed,
            "Failed",
            "failed",
        ),
        (
            Terminal::CompensationFailed,
            events::COMPENSATION_FAILED,
            TenantState::CompensationFailed,
            "CompensationFailed",
            "compensation_failed",
        ),
        (
            Terminal::Offboarded,
            events::OFFBOARDED,
            TenantState::Offboarded,
            "Offboarded",
            "offboarded",
        ),
    ];
    for (t, ty, state, name, label) in table {
        assert_eq!(t.event_type(), ty);
        assert_eq!(t.tenant_state(false), state);
        assert_eq!(t.state_name(), name);
        assert_eq!(t.metric_label(), label);
    }
    assert_eq!(
        Terminal::Failed.tenant_state(true),
        TenantState::Onboarded,
        "a failed update leaves the tenant as it was"
    );
}

#[test]
fn a_compensation_failed_outcome_reports_the_first_compensation_error() {
    let mut r = run(
        onboard(),
        Phase::Compensating,
        &[(NS, Status::Done, Status::Failed)],
    );
    r.failure = Some(cancelled_by("req-2"));
    r.steps.get_mut(&NS).unwrap().last_error = Some(refused());
    let error = Terminal::CompensationFailed.error(&r).unwrap();
    assert_eq!(error.step.as_deref(), Some("namespace"));
    assert_eq!(
        Terminal::Failed.error(&r).unwrap().class,
        "cancelled",
        "a failed onboarding reports why it compensated"
    );
    assert_eq!(Terminal::Succeeded.error(&r), None);
}

#[test]
fn a_step_an_update_removes_gives_up_its_resource_going_forward() {
    let mut r = run(
        onboard(),
        Phase::Forward,
        &[(NS, Status::Running, Status::NotNeeded)],
    );
    r.removing.insert(NS);
    let mut rec = record(r);
    rec.resources.insert(NS, json!({"name": "t-acme"}));
    let applied = apply(
        &mut rec,
        NS,
        Phase::Forward,
        Ok(StepOutcome::Done(json!(null))),
        t0(),
        &saga(),
        0.5,
    );
    assert!(rec.resources.is_empty(), "the record lists what exists");
    assert_eq!(step(&rec, NS).forward, Status::Done);
    assert_eq!(applied.completed.unwrap().phase, "removal");
    assert_eq!(
        terminal(rec.active.as_ref().unwrap()),
        Some(Terminal::Succeeded)
    );
}

#[test]
fn an_offboarding_of_an_unknown_tenant_ends_not_found_and_leaves_it_unknown() {
    let mut r = run(
        offboard(),
        Phase::Compensating,
        &[(NS, Status::Pending, Status::NotNeeded)],
    );
    r.not_found = true;
    assert_eq!(terminal(&r), Some(Terminal::NotFound));
    assert_eq!(Terminal::NotFound.event_type(), events::OFFBOARDED);
    assert_eq!(Terminal::NotFound.state_name(), "NotFound");
    assert_eq!(Terminal::NotFound.tenant_state(false), TenantState::New);
    assert_eq!(Terminal::NotFound.error(&r), None);
}
