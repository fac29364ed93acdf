//! Recording what happened: a step result (through [`machine::apply`], then its metric, log and
//! progress event) and the end of a run (its outcome event, by the [`Terminal`] table; then the
//! next queued request).
//!
//! May touch: the tenant record in memory, the journal's name claims (released when a purge
//! leaves nothing of the tenant), the recorder and the log; the caller saves the record and
//! publishes the events.

use chrono::{DateTime, Utc};
use onboarding_contract::events::{
    self, CloudEvent, EventData, OutcomeData, RemainingResource, StepData,
};
use onboarding_core::{Classify, ErrorClass};

use super::call::StepResult;
use super::{Engine, EngineError, name_claims};
use crate::machine::{self, Terminal};
use crate::record::{FinishedRequest, Phase, Status, StepName, TenantRecord};
use crate::step::StepOutcome;
use onboarding_contract::Command;

impl Engine {
    /// Record a step result. Returns the progress event to publish, if any.
    pub(super) fn record_result(
        &self,
        rec: &mut TenantRecord,
        res: StepResult,
    ) -> Option<CloudEvent> {
        let now = self.cx.clock.now();
        let run = rec.active.as_ref()?;
        if !run.steps.contains_key(&res.step) {
            return None;
        }
        let request_id = run.request_id.clone();
        let traceparent = run.traceparent.clone();
        self.cx.recorder.step_finished(
            res.step.as_str(),
            match res.phase {
                Phase::Forward => "forward",
                Phase::Compensating => "compensation",
            },
            match &res.result {
                Ok(StepOutcome::Done(_)) => "succeeded",
                Ok(StepOutcome::Pending(_)) => "pending",
                Err(e) => match e.class() {
                    ErrorClass::Transient => "transient",
                    ErrorClass::Permanent => "permanent",
                    ErrorClass::InvalidInput => "invalid_input",
                    ErrorClass::Infrastructure => "infrastructure",
                },
            },
            res.elapsed,
        );
        let applied = machine::apply(
            rec,
            res.step,
            res.phase,
            res.result,
            now,
            &self.cx.settings,
            rand::random::<f64>(),
        );
        if let Some(failure) = &applied.failure {
            match res.phase {
                Phase::Forward => {
                    tracing::warn!(step = %res.step, error = %failure.error, retry = failure.retry, "step failed");
                }
                Phase::Compensating => {
                    tracing::warn!(step = %res.step, error = %failure.error, "compensation failed");
                }
            }
        }
        if applied.compensation_started {
            self.cx.recorder.compensation_started("step_failed");
        }
        applied.completed.map(|c| {
            step_event(
                &request_id,
                &rec.tenant_id,
                c.step,
                c.phase,
                c.outputs,
                now,
                traceparent,
            )
        })
    }

    /// End the active run: record its outcome event, then start the next queued request.
    pub(super) async fn finish(
        &self,
        rec: &mut TenantRecord,
        outcome: Terminal,
        events: &mut Vec<CloudEvent>,
    ) -> Result<(), EngineError> {
        let Some(run) = rec.active.clone() else {
            return Ok(());
        };
        let now = self.cx.clock.now();
        let input = self.step_input(rec, &run)?;
        let mut remaining = Vec::new();
        for step in &self.steps {
            let Some(st) = run.steps.get(&step.name()) else {
                continue;
            };
            let reason = match st.compensation {
                Status::Failed => "failed",
                // Kept only if there is something to keep (an offboarding that cancelled an
                // onboarding before the container existed keeps nothing).
                Status::Kept if rec.resources.contains_key(&step.name()) => "kept",
                _ => continue,
            };
            remaining.push(RemainingResource {
                step: step.name().to_string(),
                resource: step.resource(&input),
                reason: reason.into(),
            });
        }
        let ty = outcome.event_type();
        let state_name = outcome.state_name();
        let event = CloudEvent::new(
            ty,
            events::event_id(&run.request_id, ty, ""),
            Some(rec.tenant_id.clone()),
            now,
            run.traceparent.clone(),
            EventData::Outcome(OutcomeData {
                request_id: run.request_id.clone(),
                tenant_id: rec.tenant_id.clone(),
                target: run.target.clone(),
                state: state_name.into(),
                resources: rec
                    .resources
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
                error: outcome.error(&run),
                remaining,
                duration_ms: u64::try_from((now - run.started_at).num_milliseconds()).unwrap_or(0),
                not_found: outcome == Terminal::NotFound,
            }),
        );
        if outcome == Terminal::Offboarded
            && rec.resources.is_empty()
            && matches!(&run.command, Command::Offboard(off) if off.purge_data)
        {
            // Nothing of the tenant is left: its names are free for another tenant.
            self.cx
                .journal
                .release_names(&rec.tenant_id, &name_claims(&input.names, &run.target))
                .await?;
        }
        tracing::info!(tenant.id = %rec.tenant_id, request.id = %run.request_id, state = state_name, "saga finished");
        self.cx.recorder.saga_finished(outcome.metric_label());
        self.remember(rec, &run.request_id, event.clone());
        rec.state = outcome.tenant_state(!rec.resources.is_empty());
        match (&run.command, outcome) {
            (Command::Onboard(c), Terminal::Succeeded) => rec.spec = Some(c.clone()),
            (Command::Offboard(_), Terminal::Offboarded) => rec.spec = None,
            _ => {}
        }
        rec.active = None;
        rec.outbox.push(event.clone());
        events.push(event);
        while let Some(next) = rec.queued.pop_front() {
            let command = next.command.clone();
            match self.start(rec, next).await? {
                Ok(()) => break,
                Err(rejection) => {
                    let event = events::rejected_event(&rejection, command.request_id(), now);
                    self.remember(rec, command.request_id(), event.clone());
                    rec.outbox.push(event.clone());
                    events.push(event);
                }
            }
        }
        Ok(())
    }

    fn remember(&self, rec: &mut TenantRecord, request_id: &str, event: CloudEvent) {
        rec.finished.push_back(FinishedRequest {
            request_id: request_id.to_string(),
            event,
        });
        while rec.finished.len() > self.cx.settings.remembered_requests.max(1) {
            rec.finished.pop_front();
        }
    }
}

/// A `tenant.step_completed` event.
fn step_event(
    request_id: &str,
    tenant: &str,
    step: StepName,
    phase: &str,
    outputs: serde_json::Value,
    now: DateTime<Utc>,
    traceparent: Option<String>,
) -> CloudEvent {
    CloudEvent::new(
        events::STEP_COMPLETED,
        events::event_id(
            request_id,
            events::STEP_COMPLETED,
            &format!("{phase}:{step}"),
        ),
        Some(tenant.to_string()),
        now,
        traceparent,
        EventData::Step(StepData {
            request_id: request_id.to_string(),
            tenant_id: tenant.to_string(),
            step: step.to_string(),
            phase: phase.to_string(),
            outputs,
        }),
    )
}
