//! Starting a run: where a request goes, whether it may run at all (unknown target, target
//! mismatch, name collision), the first state of each step; and what the steps are given.
//!
//! May touch: the journal's name claims (through the context), nothing else; the caller saves
//! the record.

use std::collections::{BTreeMap, BTreeSet};

use onboarding_contract::validate::{FieldError, RejectReason, Rejection};
use onboarding_contract::{Command, TenantNames};
use onboarding_journal::JournalError;

use super::{Engine, EngineError, name_claims};
use crate::record::{
    Phase, QueuedRequest, SagaRun, Status, StepName, StepState, TenantRecord, TenantState,
};
use crate::step::StepInput;

impl Engine {
    /// Make `queued` the active run. `Ok(Err(_))` when it cannot run at all.
    pub(super) async fn start(
        &self,
        rec: &mut TenantRecord,
        queued: QueuedRequest,
    ) -> Result<Result<(), Rejection>, EngineError> {
        let command = queued.command;
        let config = &*self.cx.provisioning;
        let target = command
            .target()
            .map(str::to_string)
            .or_else(|| {
                // An offboarding without a target goes where the tenant lives.
                matches!(command, Command::Offboard(_))
                    .then(|| rec.target.clone())
                    .flatten()
            })
            .unwrap_or_else(|| config.default_target.clone());
        let refuse = |reason, path: &str, message: String| {
            let mut r = Rejection::new(reason, vec![FieldError::new(path, message)]);
            r.request_id = Some(command.request_id().to_string());
            r.tenant_id = Some(command.tenant_id().to_string());
            Ok(Err(r))
        };
        if !config.targets.contains_key(&target) {
            return refuse(
                RejectReason::UnknownTarget,
                "/target",
                format!("target {target:?} is not configured on this worker"),
            );
        }
        if let Some(current) = &rec.target
            && current != &target
            && !matches!(rec.state, TenantState::New | TenantState::Offboarded)
            && !rec.resources.is_empty()
        {
            return refuse(
                RejectReason::TargetMismatch,
                "/target",
                format!(
                    "tenant {} lives in target {current:?}; offboard it there before moving it to {target:?}",
                    rec.tenant_id
                ),
            );
        }
        let names = match TenantNames::derive(command.tenant_id()) {
            Ok(n) => n,
            Err(e) => return refuse(RejectReason::SchemaViolation, "/tenantId", e.to_string()),
        };
        let now = self.cx.clock.now();
        let mut steps_state = BTreeMap::new();
        let mut removing = BTreeSet::new();
        let mut not_found = false;
        let (phase, preexisting) = match &command {
            Command::Onboard(spec) => {
                match self
                    .cx
                    .journal
                    .claim_names(command.tenant_id(), &name_claims(&names, &target))
                    .await
                {
                    Ok(()) => {}
                    Err(e @ JournalError::NameTaken { .. }) => {
                        return refuse(RejectReason::NameCollision, "/tenantId", e.to_string());
                    }
                    Err(e) => return Err(e.into()),
                }
                for step in &self.steps {
                    let forward = if step.enabled(spec, config) {
                        Status::Pending
                    } else if rec.resources.contains_key(&step.name()) {
                        // An update that no longer asks for what exists: remove it.
                        removing.insert(step.name());
                        Status::Pending
                    } else {
                        Status::Skipped
                    };
                    steps_state.insert(
                        step.name(),
                        StepState {
                            forward,
                            ..StepState::default()
                        },
                    );
                }
                let preexisting: BTreeSet<StepName> = rec.resources.keys().copied().collect();
                rec.state = TenantState::Onboarding;
                (Phase::Forward, preexisting)
            }
            Command::Offboard(off) => {
                // A tenant the worker has no record of: answered "not found", nothing touched
                // (not even what happens to carry the tenant's names).
                not_found = rec.state == TenantState::New && rec.resources.is_empty();
                for step in &self.steps {
                    let compensation = if not_found {
                        Status::NotNeeded
                    } else if step.name() == StepName::BlobContainer && !off.purge_data {
                        Status::Kept
                    } else {
                        Status::Pending
                    };
                    steps_state.insert(
                        step.name(),
                        StepState {
                            compensation,
                            ..StepState::default()
                        },
                    );
                }
                if !not_found {
                    rec.state = TenantState::Offboarding;
                }
                (Phase::Compensating, BTreeSet::new())
            }
        };
        if !not_found {
            rec.target = Some(target.clone());
        }
        rec.active = Some(SagaRun {
            request_id: command.request_id().to_string(),
            command,
            target,
            phase,
            failure: None,
            steps: steps_state,
            preexisting,
            removing,
            not_found,
            seq: 0,
            next_continuation: None,
            started_at: now,
            traceparent: queued.traceparent,
        });
        Ok(Ok(()))
    }

    pub(super) fn step_input(
        &self,
        rec: &TenantRecord,
        run: &SagaRun,
    ) -> Result<StepInput, EngineError> {
        let names = TenantNames::derive(&rec.tenant_id).map_err(|e| EngineError::Corrupt {
            tenant: rec.tenant_id.clone(),
            message: e.to_string(),
        })?;
        let target = self
            .cx
            .provisioning
            .targets
            .get(&run.target)
            .cloned()
            .ok_or_else(|| EngineError::Corrupt {
                tenant: rec.tenant_id.clone(),
                message: format!(
                    "target {:?} is no longer configured; restore it in the configuration",
                    run.target
                ),
            })?;
        Ok(StepInput {
            names,
            request_id: run.request_id.clone(),
            target,
            spec: match &run.command {
                Command::Onboard(spec) => Some(spec.clone()),
                Command::Offboard(_) => None,
            },
            outputs: rec.resources.clone(),
            provisioning: self.cx.provisioning.clone(),
            azure: self.cx.azure.clone(),
            kube: self.cx.kube.clone(),
            clock: self.cx.clock.clone(),
            cluster_turns: self.cluster_turns.clone(),
            settings: self.cx.settings.clone(),
        })
    }
}
