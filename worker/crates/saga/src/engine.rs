//! The saga engine: advances one tenant's saga for one message's time budget.
//!
//! For each message: load the tenant's journal record and take its lease with a
//! compare-and-swap; answer replays of finished requests with their stored outcome event; queue
//! or cancel on behalf of new requests; then run every step whose dependencies are done,
//! concurrently, journalling each result as it arrives. Transient errors are retried in process
//! (backoff with jitter, honouring `Retry-After`) within a short budget, then the step waits for a
//! continuation with a growing delay, up to an attempt limit. A permanent failure switches the run
//! to compensation: completed steps are undone in reverse dependency order. When the budget is
//! spent with work left, the engine hands back the continuation message to schedule; when the run
//! ends, the terminal event to publish. The engine writes only the journal and the progress
//! events; settling the message is the runner's job.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tracing::Instrument;

use crate::context::SagaContext;
use onboarding_contract::events::{
    self, CloudEvent, EventData, EventError, OutcomeData, RemainingResource, StepData,
};
use onboarding_contract::validate::{FieldError, RejectReason, Rejection};
use onboarding_contract::{Command, TenantNames};
use onboarding_core::{Classify, ErrorClass};
use onboarding_journal::JournalError;
use onboarding_providers::{PendingOperation, ProviderError};

use super::record::{
    Continuation, FinishedRequest, Lease, Phase, QueuedRequest, SagaRun, Status, StepName,
    StepState, TenantRecord, TenantState,
};
use super::step::{Step, StepInput, StepOutcome};
use super::steps;

/// The continuation the runner must send: the running command again, due at `wake_at`, under
/// its own message id (`<request-id>:<seq>`). The envelope turns it into a queue message.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuationRequest {
    pub command: Command,
    pub message_id: String,
    pub seq: u64,
    pub wake_at: DateTime<Utc>,
    pub traceparent: Option<String>,
}

impl ContinuationRequest {
    fn of(run: &SagaRun, live: &Continuation) -> Self {
        Self {
            command: run.command.clone(),
            message_id: live.message_id.clone(),
            seq: u64::from(run.seq),
            wake_at: live.wake_at,
            traceparent: run.traceparent.clone(),
        }
    }
}

/// One received command, as the engine needs it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub command: Command,
    pub message_id: String,
    /// A continuation the worker sent itself (never re-publishes an outcome).
    pub continuation: bool,
    pub traceparent: Option<String>,
}

/// What the runner must do before completing the message.
#[derive(Debug, Clone, Default)]
pub struct Handled {
    /// Outcome events to publish, in order.
    pub events: Vec<CloudEvent>,
    /// The continuation to send (scheduled) for a saga that is not finished.
    pub continuation: Option<ContinuationRequest>,
    /// The command cannot be carried out (target mismatch, name collision): dead-letter it.
    pub rejection: Option<Rejection>,
    /// For logs: what happened.
    pub summary: String,
}

impl Handled {
    fn note(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            ..Self::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "tenant {tenant} is being worked on by {owner} until {until}; the message will be retried"
    )]
    Busy {
        tenant: String,
        owner: String,
        until: DateTime<Utc>,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the journal record of tenant {tenant} cannot be used: {message}")]
    Corrupt { tenant: String, message: String },
}

impl Classify for EngineError {
    fn class(&self) -> ErrorClass {
        match self {
            EngineError::Busy { .. } => ErrorClass::Transient,
            EngineError::Journal(e) => e.class(),
            EngineError::Corrupt { .. } => ErrorClass::Permanent,
        }
    }
}

/// A lease outlasts its message's deadline by the step retry budget (a step launched just
/// before the deadline may retry that long) plus this margin for the final journal writes.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The longest journal lease this engine writes: a message's budget, the step retry budget and
/// the margin. A lease held by another worker never lasts longer than this from when it was taken.
pub fn longest_lease(saga: &onboarding_config::SagaConfig) -> Duration {
    ms(saga.message_budget_ms) + ms(saga.step_retry_budget_ms) + LEASE_MARGIN
}

/// Lets the runner see that a message's saga is compensating, which shutdown must not cut short.
#[derive(Debug, Default, Clone)]
pub struct WorkFlags {
    pub compensating: Arc<AtomicBool>,
}

/// The outcome of a step call, tagged with what it was.
struct StepResult {
    step: StepName,
    phase: Phase,
    result: Result<StepOutcome, ProviderError>,
    /// Wall time of the call, retries included (for metrics).
    elapsed: Duration,
}

struct Doc {
    key: String,
    version: Option<u64>,
    rec: TenantRecord,
}

enum Terminal {
    Succeeded,
    Failed,
    CompensationFailed,
    Offboarded,
}

#[derive(Debug)]
pub struct Engine {
    cx: SagaContext,
    steps: Vec<Arc<dyn Step>>,
}

impl Engine {
    pub fn new(cx: SagaContext) -> Self {
        Self {
            cx,
            steps: steps::all(),
        }
    }

    pub fn context(&self) -> &SagaContext {
        &self.cx
    }

    fn step(&self, name: StepName) -> Option<&Arc<dyn Step>> {
        self.steps.iter().find(|s| s.name() == name)
    }

    /// Handle one command message, advancing its tenant's saga until `deadline`.
    pub async fn handle(
        &self,
        incoming: Incoming,
        deadline: DateTime<Utc>,
        flags: &WorkFlags,
    ) -> Result<Handled, EngineError> {
        let tenant = incoming.command.tenant_id().to_string();
        let request_id = incoming.command.request_id().to_string();
        let mut doc = self.load(&tenant).await?;

        // Outcome events a crash kept from being confirmed go out with whatever comes next.
        let mut events = doc.rec.outbox.clone();
        if let Some(event) = doc.rec.finished_event(&request_id) {
            let summary = if incoming.continuation {
                "continuation of a finished request: dropped"
            } else {
                if !events.iter().any(|e| e.id == event.id) {
                    events.push(event.clone());
                }
                "replay of a finished request: outcome re-published"
            };
            return Ok(Handled {
                events,
                summary: summary.into(),
                ..Handled::default()
            });
        }

        self.take_lease(&mut doc, deadline).await?;

        match doc.rec.active.as_ref() {
            None => {
                if incoming.continuation {
                    let handled = Handled {
                        events,
                        ..Handled::note("continuation of an unknown request: dropped")
                    };
                    return self.release(doc, handled).await;
                }
                let queued = QueuedRequest {
                    command: incoming.command.clone(),
                    traceparent: incoming.traceparent.clone(),
                };
                if let Err(rejection) = self.start(&mut doc.rec, queued).await? {
                    return self
                        .release(
                            doc,
                            Handled {
                                events,
                                rejection: Some(rejection),
                                summary: "refused when starting".into(),
                                ..Handled::default()
                            },
                        )
                        .await;
                }
            }
            Some(run) if run.request_id == request_id => {
                if let Some(live) = &run.next_continuation
                    && live.message_id != incoming.message_id
                {
                    // An older message of this request (a redelivery after a crash, or the
                    // original command): make sure the live continuation exists, do nothing else.
                    let message = ContinuationRequest::of(run, live);
                    return self
                        .release(
                            doc,
                            Handled {
                                events,
                                continuation: Some(message),
                                summary: "stale message of a running request: continuation re-sent"
                                    .into(),
                                ..Handled::default()
                            },
                        )
                        .await;
                }
            }
            Some(run) => {
                if doc.rec.is_queued(&request_id) {
                    let handled = Handled {
                        events,
                        ..Handled::note("already queued behind the running request")
                    };
                    return self.release(doc, handled).await;
                }
                let cancels = matches!(incoming.command, Command::Offboard(_))
                    && matches!(run.command, Command::Onboard(_))
                    && run.phase == Phase::Forward;
                let queued = QueuedRequest {
                    command: incoming.command.clone(),
                    traceparent: incoming.traceparent.clone(),
                };
                if cancels {
                    if let Some(run) = doc.rec.active.as_mut() {
                        self.cx.recorder.compensation_started("cancelled");
                        switch_to_compensation(
                            run,
                            EventError {
                                step: None,
                                class: "cancelled".into(),
                                code: Some("CancelledByOffboarding".into()),
                                message: format!(
                                    "onboarding cancelled by offboarding request {request_id}"
                                ),
                            },
                        );
                    }
                    doc.rec.queued.push_front(queued);
                } else {
                    doc.rec.queued.push_back(queued);
                    let handled = Handled {
                        events,
                        ..Handled::note("queued behind the running request")
                    };
                    return self.release(doc, handled).await;
                }
            }
        }

        self.advance(&mut doc, deadline, flags, &mut events).await?;

        let continuation = match doc.rec.active.as_mut() {
            Some(run) => {
                let now = self.cx.clock.now();
                let wake = next_wake(run)
                    .unwrap_or_else(|| now + ms(self.cx.settings.continuation_base_delay_ms));
                run.seq += 1;
                let live = Continuation {
                    message_id: format!("{}:{}", run.request_id, run.seq),
                    wake_at: wake.max(now),
                };
                let message = ContinuationRequest::of(run, &live);
                run.next_continuation = Some(live);
                Some(message)
            }
            None => None,
        };
        let summary = match &continuation {
            Some(c) => format!("yielded; continuation {} scheduled", c.message_id),
            None => "finished".to_string(),
        };
        self.release(
            doc,
            Handled {
                events,
                continuation,
                rejection: None,
                summary,
            },
        )
        .await
    }

    async fn load(&self, tenant: &str) -> Result<Doc, EngineError> {
        let key = tenant.to_string();
        match self.cx.journal.load(&key).await? {
            None => Ok(Doc {
                key,
                version: None,
                rec: TenantRecord::new(tenant),
            }),
            Some(v) => {
                let rec = serde_json::from_value(v.value).map_err(|e| EngineError::Corrupt {
                    tenant: tenant.to_string(),
                    message: e.to_string(),
                })?;
                Ok(Doc {
                    key,
                    version: Some(v.version),
                    rec,
                })
            }
        }
    }

    async fn save(&self, doc: &mut Doc) -> Result<(), EngineError> {
        let value = serde_json::to_value(&doc.rec).map_err(|e| EngineError::Corrupt {
            tenant: doc.key.clone(),
            message: e.to_string(),
        })?;
        let version = self.cx.journal.store(&doc.key, &value, doc.version).await?;
        doc.version = Some(version);
        Ok(())
    }

    async fn release(&self, mut doc: Doc, handled: Handled) -> Result<Handled, EngineError> {
        doc.rec.lease = None;
        self.save(&mut doc).await?;
        Ok(handled)
    }

    /// Take the tenant's lease with a compare-and-swap: a second guard besides sessions.
    async fn take_lease(&self, doc: &mut Doc, deadline: DateTime<Utc>) -> Result<(), EngineError> {
        let saga = &*self.cx.settings;
        let until = deadline + ms(saga.step_retry_budget_ms) + LEASE_MARGIN;
        for _ in 0..10 {
            let now = self.cx.clock.now();
            if let Some(lease) = &doc.rec.lease
                && lease.owner != self.cx.worker_id
                && lease.until > now
            {
                if lease.until >= deadline {
                    return Err(EngineError::Busy {
                        tenant: doc.key.clone(),
                        owner: lease.owner.clone(),
                        until: lease.until,
                    });
                }
                self.cx.clock.sleep(to_std(lease.until - now)).await;
                *doc = self.load(&doc.key).await?;
                continue;
            }
            doc.rec.lease = Some(Lease {
                owner: self.cx.worker_id.clone(),
                until,
            });
            match self.save(doc).await {
                Ok(()) => return Ok(()),
                Err(EngineError::Journal(JournalError::Conflict { .. })) => {
                    *doc = self.load(&doc.key).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(EngineError::Busy {
            tenant: doc.key.clone(),
            owner: "another worker".into(),
            until: deadline,
        })
    }

    /// Make `queued` the active run. `Ok(Err(_))` when it cannot run at all.
    async fn start(
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
                for step in &self.steps {
                    let compensation = if step.name() == StepName::BlobContainer && !off.purge_data
                    {
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
                rec.state = TenantState::Offboarding;
                (Phase::Compensating, BTreeSet::new())
            }
        };
        rec.target = Some(target.clone());
        rec.active = Some(SagaRun {
            request_id: command.request_id().to_string(),
            command,
            target,
            phase,
            failure: None,
            steps: steps_state,
            preexisting,
            seq: 0,
            next_continuation: None,
            started_at: now,
            traceparent: queued.traceparent,
        });
        Ok(Ok(()))
    }

    fn step_input(&self, rec: &TenantRecord, run: &SagaRun) -> Result<StepInput, EngineError> {
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
        })
    }

    /// Run steps until the active run (and any queued after it) finishes or the budget is spent.
    async fn advance(
        &self,
        doc: &mut Doc,
        deadline: DateTime<Utc>,
        flags: &WorkFlags,
        events: &mut Vec<CloudEvent>,
    ) -> Result<(), EngineError> {
        let saga = &*self.cx.settings;
        let step_budget = ms(saga.step_retry_budget_ms);
        let mut inflight = FuturesUnordered::new();
        let mut running: BTreeSet<StepName> = BTreeSet::new();
        while let Some(run) = doc.rec.active.as_ref() {
            flags
                .compensating
                .store(run.phase == Phase::Compensating, Ordering::Relaxed);
            let now = self.cx.clock.now();
            if running.is_empty()
                && let Some(outcome) = self.terminal(run)
            {
                // No save here: the next launch, or the final release, writes the outcome
                // (outbox included) before anything else can happen.
                self.finish(&mut doc.rec, outcome, events).await?;
                continue;
            }
            let may_launch = now + step_budget < deadline;
            let ready = if may_launch {
                self.ready(run, now, &running)
            } else {
                Vec::new()
            };
            if !ready.is_empty() {
                let phase = run.phase;
                let input = Arc::new(self.step_input(&doc.rec, run)?);
                let request_id = run.request_id.clone();
                let mut launches = Vec::new();
                if let Some(run) = doc.rec.active.as_mut() {
                    for name in &ready {
                        if let Some(st) = run.steps.get_mut(name) {
                            match phase {
                                Phase::Forward => st.forward = Status::Running,
                                Phase::Compensating => st.compensation = Status::Running,
                            }
                            st.updated_at = Some(now);
                            launches.push((*name, st.operation.clone()));
                        }
                    }
                }
                // Journal that these steps started before starting them, so that a crash
                // leaves evidence of what may need compensating.
                self.save(doc).await?;
                for (name, operation) in launches {
                    let Some(step) = self.step(name).cloned() else {
                        continue;
                    };
                    running.insert(name);
                    inflight.push(call_step(
                        step,
                        input.clone(),
                        phase,
                        operation,
                        self.cx.clock.clone(),
                        RetryPolicy::from(saga),
                        tracing::info_span!(
                            "step",
                            step = %name,
                            tenant.id = %doc.rec.tenant_id,
                            request.id = %request_id,
                            phase = ?phase
                        ),
                    ));
                }
                continue;
            }
            let Some(run) = doc.rec.active.as_ref() else {
                break;
            };
            let wake = next_wake(run);
            if running.is_empty() {
                match wake {
                    // Worth waiting in process: the step can still run within the budget.
                    Some(w) if w + step_budget < deadline => {
                        self.cx.clock.sleep(to_std(w - now)).await;
                        continue;
                    }
                    _ => break,
                }
            }
            let sleep_for = wake
                .filter(|w| *w + step_budget < deadline)
                .map(|w| to_std(w - now));
            let finished = match sleep_for {
                Some(d) => tokio::select! {
                    r = inflight.next() => r,
                    _ = self.cx.clock.sleep(d) => None,
                },
                None => inflight.next().await,
            };
            if let Some(res) = finished {
                running.remove(&res.step);
                let progress = self.apply(&mut doc.rec, res)?;
                self.save(doc).await?;
                if let Some(event) = progress {
                    self.publish_progress(event).await;
                }
            }
        }
        Ok(())
    }

    /// Steps that can be called now.
    fn ready(
        &self,
        run: &SagaRun,
        now: DateTime<Utc>,
        running: &BTreeSet<StepName>,
    ) -> Vec<StepName> {
        let due = |st: &StepState| st.wake_at.is_none_or(|w| w <= now);
        let mut ready = Vec::new();
        for step in &self.steps {
            let name = step.name();
            let Some(st) = run.steps.get(&name) else {
                continue;
            };
            if running.contains(&name) {
                continue;
            }
            let ok = match run.phase {
                Phase::Forward => match st.forward {
                    Status::Pending => step
                        .needs()
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
                        && steps::dependents(&self.steps, name).iter().all(|d| {
                            !running.contains(d)
                                && run.steps.get(d).is_none_or(|s| s.compensation.is_settled())
                        })
                }
            };
            if ok {
                ready.push(name);
            }
        }
        ready
    }

    fn terminal(&self, run: &SagaRun) -> Option<Terminal> {
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
                Some(
                    if run.steps.values().any(|s| s.compensation == Status::Failed) {
                        Terminal::CompensationFailed
                    } else if matches!(run.command, Command::Offboard(_)) {
                        Terminal::Offboarded
                    } else {
                        Terminal::Failed
                    },
                )
            }
        }
    }

    /// Record a step result. Returns the progress event to publish, if any.
    fn apply(
        &self,
        rec: &mut TenantRecord,
        res: StepResult,
    ) -> Result<Option<CloudEvent>, EngineError> {
        let saga = &*self.cx.settings;
        let now = self.cx.clock.now();
        let tenant = rec.tenant_id.clone();
        let Some(run) = rec.active.as_mut() else {
            return Ok(None);
        };
        let request_id = run.request_id.clone();
        let traceparent = run.traceparent.clone();
        let run_phase = run.phase;
        let Some(st) = run.steps.get_mut(&res.step) else {
            return Ok(None);
        };
        st.updated_at = Some(now);
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
                },
            },
            res.elapsed,
        );
        let mut switch_failure = None;
        let mut done_outputs = None;
        match (res.phase, res.result) {
            (Phase::Forward, Ok(StepOutcome::Done(outputs))) => {
                st.forward = Status::Done;
                st.operation = None;
                st.wake_at = None;
                st.last_error = None;
                done_outputs = Some(outputs);
            }
            (Phase::Forward, Ok(StepOutcome::Pending(op))) => {
                st.forward = Status::Waiting;
                st.wake_at = Some(now + Duration::from_secs(op.retry_after_secs.max(1)));
                // A run already compensating deletes instead of polling the creation.
                st.operation = (run_phase == Phase::Forward).then_some(op);
            }
            (Phase::Forward, Err(e)) => {
                let retry = e.is_transient()
                    && st.attempts + 1 < saga.step_attempt_limit
                    && run_phase == Phase::Forward;
                if retry {
                    st.attempts += 1;
                    st.forward = Status::Waiting;
                    st.wake_at = Some(now + continuation_delay(saga, st.attempts, e.retry_after()));
                } else {
                    st.forward = Status::Failed;
                    switch_failure = Some(EventError {
                        step: Some(res.step.to_string()),
                        class: if e.is_transient() {
                            "transient (attempt limit reached)".into()
                        } else {
                            e.class.to_string()
                        },
                        code: e.code.clone(),
                        message: e.to_string(),
                    });
                }
                tracing::warn!(step = %res.step, error = %e, retry, "step failed");
                st.last_error = Some(e);
            }
            (Phase::Compensating, Ok(StepOutcome::Done(_))) => {
                st.compensation = Status::Done;
                st.operation = None;
                st.wake_at = None;
                st.last_error = None;
                rec.resources.remove(&res.step);
                return Ok(Some(step_event(
                    &request_id,
                    &tenant,
                    res.step,
                    "compensation",
                    serde_json::Value::Null,
                    now,
                    traceparent,
                )));
            }
            (Phase::Compensating, Ok(StepOutcome::Pending(op))) => {
                st.compensation = Status::Waiting;
                st.wake_at = Some(now + Duration::from_secs(op.retry_after_secs.max(1)));
                st.operation = Some(op);
            }
            (Phase::Compensating, Err(e)) => {
                if e.is_transient() && st.attempts + 1 < saga.compensation_attempt_limit {
                    st.attempts += 1;
                    st.compensation = Status::Waiting;
                    st.wake_at = Some(now + continuation_delay(saga, st.attempts, e.retry_after()));
                } else {
                    st.compensation = Status::Failed;
                }
                tracing::warn!(step = %res.step, error = %e, "compensation failed");
                st.last_error = Some(e);
            }
        }
        if let Some(failure) = switch_failure
            && run.phase == Phase::Forward
        {
            self.cx.recorder.compensation_started("step_failed");
            switch_to_compensation(run, failure);
        }
        if let Some(outputs) = done_outputs {
            rec.resources.insert(res.step, outputs.clone());
            return Ok(Some(step_event(
                &request_id,
                &tenant,
                res.step,
                "forward",
                outputs,
                now,
                traceparent,
            )));
        }
        Ok(None)
    }

    /// End the active run: record its outcome event, then start the next queued request.
    async fn finish(
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
                Status::Kept => "kept",
                _ => continue,
            };
            remaining.push(RemainingResource {
                step: step.name().to_string(),
                resource: step.resource(&input),
                reason: reason.into(),
            });
        }
        let first_compensation_error = run
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
            });
        let (ty, state, error) = match outcome {
            Terminal::Succeeded => (events::ONBOARDED, TenantState::Onboarded, None),
            Terminal::Offboarded => (events::OFFBOARDED, TenantState::Offboarded, None),
            Terminal::Failed => (
                events::ONBOARDING_FAILED,
                if rec.resources.is_empty() {
                    TenantState::Failed
                } else {
                    TenantState::Onboarded
                },
                run.failure.clone(),
            ),
            Terminal::CompensationFailed => (
                events::COMPENSATION_FAILED,
                TenantState::CompensationFailed,
                first_compensation_error.or(run.failure.clone()),
            ),
        };
        let state_name = match outcome {
            Terminal::Succeeded => "Succeeded",
            Terminal::Failed => "Failed",
            Terminal::CompensationFailed => "CompensationFailed",
            Terminal::Offboarded => "Offboarded",
        };
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
                error,
                remaining,
                duration_ms: u64::try_from((now - run.started_at).num_milliseconds()).unwrap_or(0),
            }),
        );
        tracing::info!(tenant.id = %rec.tenant_id, request.id = %run.request_id, state = state_name, "saga finished");
        self.cx.recorder.saga_finished(match outcome {
            Terminal::Succeeded => "succeeded",
            Terminal::Failed => "failed",
            Terminal::CompensationFailed => "compensation_failed",
            Terminal::Offboarded => "offboarded",
        });
        self.remember(rec, &run.request_id, event.clone());
        rec.state = state;
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

    /// The runner published these outcome events: drop them from the tenant's outbox.
    pub async fn confirm_published(
        &self,
        tenant: &str,
        event_ids: &[String],
    ) -> Result<(), EngineError> {
        for _ in 0..10 {
            let mut doc = self.load(tenant).await?;
            let before = doc.rec.outbox.len();
            doc.rec.outbox.retain(|e| !event_ids.contains(&e.id));
            if doc.rec.outbox.len() == before {
                return Ok(());
            }
            match self.save(&mut doc).await {
                Ok(()) => return Ok(()),
                Err(EngineError::Journal(JournalError::Conflict { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(EngineError::Busy {
            tenant: tenant.to_string(),
            owner: "another worker".into(),
            until: self.cx.clock.now(),
        })
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

    async fn publish_progress(&self, event: CloudEvent) {
        // Progress is best effort: the outcome event is what consumers must rely on.
        self.cx.progress.progress(event).await;
    }
}

/// Switch a run to compensation of everything it may have created.
fn switch_to_compensation(run: &mut SagaRun, failure: EventError) {
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

fn next_wake(run: &SagaRun) -> Option<DateTime<Utc>> {
    run.steps
        .values()
        .filter(|s| match run.phase {
            Phase::Forward => s.forward == Status::Waiting,
            Phase::Compensating => s.compensation == Status::Waiting,
        })
        .filter_map(|s| s.wake_at)
        .min()
}

/// Base delay doubled per attempt, capped, with ±20 % jitter; never sooner than `Retry-After`.
fn continuation_delay(
    saga: &onboarding_config::SagaConfig,
    attempts: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let base =
        saga.continuation_base_delay_ms as f64 * 2f64.powi(attempts.saturating_sub(1) as i32);
    let capped = base.min(saga.continuation_max_delay_ms as f64);
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    let delay = Duration::from_millis((capped * jitter) as u64);
    retry_after.map_or(delay, |r| delay.max(r))
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn to_std(d: chrono::TimeDelta) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
}

#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    budget: Duration,
    initial: Duration,
}

impl From<&onboarding_config::SagaConfig> for RetryPolicy {
    fn from(s: &onboarding_config::SagaConfig) -> Self {
        Self {
            budget: ms(s.step_retry_budget_ms),
            initial: ms(s.retry_initial_delay_ms.max(1)),
        }
    }
}

/// One step call with in-process retries of transient errors, within the retry budget.
async fn call_step(
    step: Arc<dyn Step>,
    input: Arc<StepInput>,
    phase: Phase,
    operation: Option<PendingOperation>,
    clock: Arc<dyn onboarding_core::Clock>,
    policy: RetryPolicy,
    span: tracing::Span,
) -> StepResult {
    let name = step.name();
    let started = std::time::Instant::now();
    let work = async move {
        let give_up_at = clock.now() + policy.budget;
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(policy.initial)
            .with_max_delay(policy.initial * 16)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let result = match phase {
                Phase::Forward => step.forward(&input, operation.as_ref()).await,
                Phase::Compensating => step.compensate(&input, operation.as_ref()).await,
            };
            match result {
                Err(e) if e.is_transient() => {
                    let mut delay = delays.next().unwrap_or(policy.initial);
                    if let Some(after) = e.retry_after() {
                        delay = delay.max(after);
                    }
                    if clock.now() + delay > give_up_at {
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
        phase,
        result,
        elapsed: started.elapsed(),
    }
}

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

/// The names that must belong to this tenant alone on `target`, as journal claims.
pub fn name_claims(names: &TenantNames, target: &str) -> Vec<onboarding_journal::NameClaim> {
    names
        .exclusive()
        .into_iter()
        .map(|(kind, name)| onboarding_journal::NameClaim {
            kind: format!("{target}/{kind}"),
            name: name.to_string(),
        })
        .collect()
}
