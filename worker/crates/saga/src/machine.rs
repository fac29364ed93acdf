//! The saga's state machine: what the run record says to do next, and what a step result does
//! to it.
//!
//! Which steps are ready ([`ready`]), marking them running ([`launch`]), recording a step result
//! ([`apply`]), switching a run to compensation ([`switch_to_compensation`]), when a run is over
//! and how ([`terminal`], [`Terminal`]), and when to look again ([`next_wake`]).
//!
//! Pure functions over the `onboarding_record` types: no I/O, no clock (the time is an
//! argument), no randomness (the jitter draw is an argument), no logging, no async. The engine
//! (the driver) loads, leases, calls the steps, saves, logs and counts around these.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use onboarding_config::SagaConfig;
use onboarding_contract::Command;
use onboarding_contract::events::{self, EventError};
use onboarding_core::Classify;
use onboarding_providers::{OperationKind, PendingOperation, ProviderError};
use onboarding_record::{Phase, SagaRun, Status, StepName, StepState, TenantRecord, TenantState};

use crate::retry::RetryPolicy;
use crate::step::{Step, StepOutcome};

#[cfg(test)]
mod tests;

/// The steps in their order, each with the steps it needs (whose outputs it reads).
#[derive(Debug, Clone, PartialEq)]
pub struct StepGraph {
    steps: Vec<(StepName, &'static [StepName])>,
}

impl StepGraph {
    pub fn new(steps: impl IntoIterator<Item = (StepName, &'static [StepName])>) -> Self {
        Self {
            steps: steps.into_iter().collect(),
        }
    }

    /// The graph of these steps.
    pub fn of(steps: &[Arc<dyn Step>]) -> Self {
        Self::new(steps.iter().map(|s| (s.name(), s.needs())))
    }

    /// Steps that need `step`, i.e. must be compensated before it.
    fn dependents(&self, step: StepName) -> impl Iterator<Item = StepName> + '_ {
        self.steps
            .iter()
            .filter(move |(_, needs)| needs.contains(&step))
            .map(|(n, _)| *n)
    }
}

/// Steps of the run that can be called at `now`, in graph order. Forward, a step waits until
/// every step it needs is done; compensating, until every step that needs it is settled.
pub fn ready(
    graph: &StepGraph,
    run: &SagaRun,
    now: DateTime<Utc>,
    running: &BTreeSet<StepName>,
) -> Vec<StepName> {
    let due = |st: &StepState| st.wake_at.is_none_or(|w| w <= now);
    let mut ready = Vec::new();
    for &(name, needs) in &graph.steps {
        let Some(st) = run.steps.get(&name) else {
            continue;
        };
        if running.contains(&name) {
            continue;
        }
        let ok = match run.phase {
            Phase::Forward => match st.forward {
                Status::Pending => needs
                    .iter()
                    .all(|n| run.steps.get(n).is_some_and(|d| d.forward == Status::Done)),
                Status::Waiting => due(st),
                // Left running by a worker that died: run it again (idempotent).
                Status::Running => true,
                _ => false,
            },
            Phase::Compensating => {
                let this_turn = match st.compensation {
                    Status::Pending | Status::Running => true,
                    Status::Waiting => due(st),
                    _ => false,
                };
                this_turn
                    && graph.dependents(name).all(|d| {
                        !running.contains(&d)
                            && run
                                .steps
                                .get(&d)
                                .is_none_or(|s| s.compensation.is_settled())
                    })
            }
        };
        if ok {
            ready.push(name);
        }
    }
    ready
}

/// Mark `steps` running in the run's current direction, as of `now`. Returns each with the
/// long-running operation to poll, if any.
pub fn launch(
    run: &mut SagaRun,
    steps: &[StepName],
    now: DateTime<Utc>,
) -> Vec<(StepName, Option<PendingOperation>)> {
    let phase = run.phase;
    let mut launches = Vec::new();
    for name in steps {
        if let Some(st) = run.steps.get_mut(name) {
            match phase {
                Phase::Forward => st.forward = Status::Running,
                Phase::Compensating => st.compensation = Status::Running,
            }
            st.updated_at = Some(now);
            launches.push((*name, st.operation.clone()));
        }
    }
    launches
}

/// Switch a run to compensation of everything it may have created (not what existed before it).
pub fn switch_to_compensation(run: &mut SagaRun, failure: EventError) {
    run.phase = Phase::Compensating;
    run.failure = Some(failure);
    for (name, st) in run.steps.iter_mut() {
        let undo = st.forward.was_started() && !run.preexisting.contains(name);
        st.compensation = if undo {
            Status::Pending
        } else {
            Status::NotNeeded
        };
        st.attempts = 0;
        st.operation = None;
        st.wake_at = None;
    }
}

/// Why a run compensates when an offboarding request cancels its onboarding.
pub fn cancelled_by(offboarding_request_id: &str) -> EventError {
    EventError {
        step: None,
        class: "cancelled".into(),
        code: Some("CancelledByOffboarding".into()),
        message: format!("onboarding cancelled by offboarding request {offboarding_request_id}"),
    }
}

/// Whether a new request cancels the running one instead of queueing behind it: an offboarding
/// arriving while an onboarding still goes forward.
pub fn cancels(incoming: &Command, run: &SagaRun) -> bool {
    matches!(incoming, Command::Offboard(_))
        && matches!(run.command, Command::Onboard(_))
        && run.phase == Phase::Forward
}

/// A step that finished in one direction: the progress event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    pub step: StepName,
    /// `"forward"` or `"compensation"`.
    pub phase: &'static str,
    /// The step's outputs (forward), or null (compensation).
    pub outputs: serde_json::Value,
}

/// A step error, for the driver's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub error: ProviderError,
    /// A continuation will try the step again.
    pub retry: bool,
}

/// What [`apply`] did, for the driver to publish, log and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub completed: Option<Completed>,
    pub failure: Option<Failure>,
    /// This result switched the run to compensation.
    pub compensation_started: bool,
}

/// Record the result of calling `step` in `phase` into the tenant record, at `now`. A transient
/// error waits for a continuation (delayed by [`RetryPolicy::continuation`], with jitter `draw`
/// in `[0, 1)`) until the phase's attempt limit; a forward failure past that switches the run to
/// compensation; a compensation failure past it is final.
pub fn apply(
    rec: &mut TenantRecord,
    step: StepName,
    phase: Phase,
    result: Result<StepOutcome, ProviderError>,
    now: DateTime<Utc>,
    saga: &SagaConfig,
    draw: f64,
) -> Applied {
    let mut applied = Applied::default();
    let Some(run) = rec.active.as_mut() else {
        return applied;
    };
    let run_phase = run.phase;
    let Some(st) = run.steps.get_mut(&step) else {
        return applied;
    };
    st.updated_at = Some(now);
    let poll_at = |op: &PendingOperation| match op.kind {
        // Waiting in the cluster's line: the saga's own setting, which may be well under a
        // second (the whole line moves on when one pool operation ends).
        OperationKind::ClusterTurn if op.place.is_some_and(|p| p.ahead > 0) => {
            now + Duration::from_millis(saga.cluster_turn_poll_ms.max(1))
        }
        // The cluster's own operation, run in its turn: looked at as often as the line looks,
        // so that the next one starts as soon as this one ends (ARM's Retry-After is coarse).
        OperationKind::AsyncOperation
        | OperationKind::Location
        | OperationKind::ProvisioningState
            if op.place.is_some() =>
        {
            now + Duration::from_secs(op.retry_after_secs.max(1))
                .min(Duration::from_millis(saga.cluster_turn_poll_ms.max(1)))
        }
        _ => now + Duration::from_secs(op.retry_after_secs.max(1)),
    };
    let mut switch_failure = None;
    match (phase, result) {
        (Phase::Forward, Ok(StepOutcome::Done(_))) if run.removing.contains(&step) => {
            // An update removed what the new spec no longer asks for.
            st.forward = Status::Done;
            st.operation = None;
            st.wake_at = None;
            st.last_error = None;
            rec.resources.remove(&step);
            applied.completed = Some(Completed {
                step,
                phase: "removal",
                outputs: serde_json::Value::Null,
            });
        }
        (Phase::Forward, Ok(StepOutcome::Done(outputs))) => {
            st.forward = Status::Done;
            st.operation = None;
            st.wake_at = None;
            st.last_error = None;
            rec.resources.insert(step, outputs.clone());
            applied.completed = Some(Completed {
                step,
                phase: "forward",
                outputs,
            });
        }
        (Phase::Forward, Ok(StepOutcome::Pending(op))) => {
            st.forward = Status::Waiting;
            st.wake_at = Some(poll_at(&op));
            // A run already compensating deletes instead of polling the creation.
            st.operation = (run_phase == Phase::Forward).then_some(op);
        }
        (Phase::Forward, Err(e)) => {
            let policy = RetryPolicy::continuation(saga, Phase::Forward);
            let retry = e.is_transient()
                && policy.allows_another_after(st.attempts + 1)
                && run_phase == Phase::Forward;
            if retry {
                st.attempts += 1;
                st.forward = Status::Waiting;
                st.wake_at = Some(now + policy.delay_with(st.attempts, e.retry_after(), draw));
            } else {
                st.forward = Status::Failed;
                switch_failure = Some(EventError {
                    step: Some(step.to_string()),
                    class: if e.is_transient() {
                        "transient (attempt limit reached)".into()
                    } else {
                        e.class.to_string()
                    },
                    code: e.code.clone(),
                    message: e.to_string(),
                });
            }
            applied.failure = Some(Failure {
                error: e.clone(),
                retry,
            });
            st.last_error = Some(e);
        }
        (Phase::Compensating, Ok(StepOutcome::Done(_))) => {
            st.compensation = Status::Done;
            st.operation = None;
            st.wake_at = None;
            st.last_error = None;
            rec.resources.remove(&step);
            applied.completed = Some(Completed {
                step,
                phase: "compensation",
                outputs: serde_json::Value::Null,
            });
        }
        (Phase::Compensating, Ok(StepOutcome::Pending(op))) => {
            st.compensation = Status::Waiting;
            st.wake_at = Some(poll_at(&op));
            st.operation = Some(op);
        }
        (Phase::Compensating, Err(e)) => {
            let policy = RetryPolicy::continuation(saga, Phase::Compensating);
            let retry = e.is_transient() && policy.allows_another_after(st.attempts + 1);
            if retry {
                st.attempts += 1;
                st.compensation = Status::Waiting;
                st.wake_at = Some(now + policy.delay_with(st.attempts, e.retry_after(), draw));
            } else {
                st.compensation = Status::Failed;
            }
            applied.failure = Some(Failure {
                error: e.clone(),
                retry,
            });
            st.last_error = Some(e);
        }
    }
    if let Some(failure) = switch_failure
        && run.phase == Phase::Forward
    {
        switch_to_compensation(run, failure);
        applied.compensation_started = true;
    }
    applied
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    Succeeded,
    Failed,
    CompensationFailed,
    Offboarded,
    /// An offboarding of a tenant the worker has no record of: nothing was touched.
    NotFound,
}

impl Terminal {
    /// The outcome event's type.
    pub fn event_type(self) -> &'static str {
        match self {
            Terminal::Succeeded => events::ONBOARDED,
            Terminal::Failed => events::ONBOARDING_FAILED,
            Terminal::CompensationFailed => events::COMPENSATION_FAILED,
            Terminal::Offboarded | Terminal::NotFound => events::OFFBOARDED,
        }
    }

    /// The tenant's state afterwards. A failed onboarding that leaves resources behind (an
    /// update of a tenant that was onboarded before) leaves the tenant onboarded.
    pub fn tenant_state(self, resources_left: bool) -> TenantState {
        match self {
            Terminal::Succeeded => TenantState::Onboarded,
            Terminal::Failed if resources_left => TenantState::Onboarded,
            Terminal::Failed => TenantState::Failed,
            Terminal::CompensationFailed => TenantState::CompensationFailed,
            Terminal::Offboarded => TenantState::Offboarded,
            // Still unknown: the answer changes nothing.
            Terminal::NotFound => TenantState::New,
        }
    }

    /// The `state` field of the outcome event.
    pub fn state_name(self) -> &'static str {
        match self {
            Terminal::Succeeded => "Succeeded",
            Terminal::Failed => "Failed",
            Terminal::CompensationFailed => "CompensationFailed",
            Terminal::Offboarded => "Offboarded",
            Terminal::NotFound => "NotFound",
        }
    }

    /// The label of the `saga_finished` metric.
    pub fn metric_label(self) -> &'static str {
        match self {
            Terminal::Succeeded => "succeeded",
            Terminal::Failed => "failed",
            Terminal::CompensationFailed => "compensation_failed",
            Terminal::Offboarded => "offboarded",
            Terminal::NotFound => "not_found",
        }
    }

    /// The error the outcome event reports: why the run compensated, or for a failed
    /// compensation, the first compensation error.
    pub fn error(self, run: &SagaRun) -> Option<EventError> {
        match self {
            Terminal::Succeeded | Terminal::Offboarded | Terminal::NotFound => None,
            Terminal::Failed => run.failure.clone(),
            Terminal::CompensationFailed => run
                .steps
                .iter()
                .find(|(_, s)| s.compensation == Status::Failed)
                .and_then(|(name, s)| {
                    s.last_error.as_ref().map(|e| EventError {
                        step: Some(name.to_string()),
                        class: e.class.to_string(),
                        code: e.code.clone(),
                        message: e.to_string(),
                    })
                })
                .or(run.failure.clone()),
        }
    }
}

/// How the run ended, once nothing is left to do in its direction; `None` while it goes on.
pub fn terminal(run: &SagaRun) -> Option<Terminal> {
    match run.phase {
        Phase::Forward => run
            .steps
            .values()
            .all(|s| matches!(s.forward, Status::Done | Status::Skipped))
            .then_some(Terminal::Succeeded),
        Phase::Compensating => {
            if !run.steps.values().all(|s| s.compensation.is_settled()) {
                return None;
            }
            Some(if run.not_found {
                Terminal::NotFound
            } else if run.steps.values().any(|s| s.compensation == Status::Failed) {
                Terminal::CompensationFailed
            } else if matches!(run.command, Command::Offboard(_)) {
                Terminal::Offboarded
            } else {
                Terminal::Failed
            })
        }
    }
}

/// The earliest time a waiting step of the run's current direction is due.
pub fn next_wake(run: &SagaRun) -> Option<DateTime<Utc>> {
    run.steps
        .values()
        .filter(|s| match run.phase {
            Phase::Forward => s.forward == Status::Waiting,
            Phase::Compensating => s.compensation == Status::Waiting,
        })
        .filter_map(|s| s.wake_at)
        .min()
}
