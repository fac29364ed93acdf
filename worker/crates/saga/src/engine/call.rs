//! One step call, retried in process on transient errors by [`RetryPolicy::step_call`] within the
//! step retry budget, and timed.
//!
//! May touch: the step (and through it the providers) and the clock; never the journal.

use std::sync::Arc;
use std::time::Duration;

use onboarding_core::Classify;
use onboarding_providers::{PendingOperation, ProviderError};
use tracing::Instrument;

use crate::record::{Phase, StepName};
use crate::retry::RetryPolicy;
use crate::step::{Step, StepInput, StepOutcome};

/// The outcome of a step call, tagged with what it was.
pub(super) struct StepResult {
    pub step: StepName,
    pub phase: Phase,
    pub result: Result<StepOutcome, ProviderError>,
    /// Wall time of the call, retries included (for metrics).
    pub elapsed: Duration,
}

/// What a call does to the step's resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Create or update it (forward).
    Ensure,
    /// Remove it going forward: an update no longer asks for it (the step's compensation, but
    /// the result counts as forward progress).
    Remove,
    /// Undo it (compensation).
    Undo,
}

impl Action {
    /// The action of `step` in a run going in `phase`, `removing` these steps.
    pub(super) fn of(
        phase: Phase,
        step: StepName,
        removing: &std::collections::BTreeSet<StepName>,
    ) -> Self {
        match phase {
            Phase::Forward if removing.contains(&step) => Action::Remove,
            Phase::Forward => Action::Ensure,
            Phase::Compensating => Action::Undo,
        }
    }
    fn phase(self) -> Phase {
        match self {
            Action::Ensure | Action::Remove => Phase::Forward,
            Action::Undo => Phase::Compensating,
        }
    }
}

/// Call `step` to do `action`, retrying transient errors as `policy` says until its budget is
/// spent.
pub(super) async fn call_step(
    step: Arc<dyn Step>,
    input: Arc<StepInput>,
    action: Action,
    operation: Option<PendingOperation>,
    clock: Arc<dyn onboarding_core::Clock>,
    policy: RetryPolicy,
    span: tracing::Span,
) -> StepResult {
    let name = step.name();
    let started = std::time::Instant::now();
    let work = async move {
        let give_up_at = policy.budget().map(|budget| clock.now() + budget);
        let mut retry = 0;
        loop {
            let result = match action {
                Action::Ensure => step.forward(&input, operation.as_ref()).await,
                Action::Remove | Action::Undo => step.compensate(&input, operation.as_ref()).await,
            };
            retry += 1;
            match result {
                Err(e) if e.is_transient() && policy.allows_another_after(retry) => {
                    let delay = policy.delay(retry, e.retry_after());
                    if give_up_at.is_some_and(|at| clock.now() + delay > at) {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, delay_ms = delay.as_millis() as u64, "transient error, retrying");
                    clock.sleep(delay).await;
                }
                other => return other,
            }
        }
    }
    .instrument(span);
    let result = work.await;
    StepResult {
        step: name,
        phase: action.phase(),
        result,
        elapsed: started.elapsed(),
    }
}
