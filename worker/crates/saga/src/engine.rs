//! The saga engine, the driver: advances one tenant's saga for one message's time budget.
//!
//! For each message: load the tenant's journal record and take its lease with a
//! compare-and-swap; answer replays of finished requests with their stored outcome event; queue
//! or cancel on behalf of new requests ([`start`]); then launch every step the state machine
//! ([`crate::machine`]) says is ready, concurrently ([`call`]), and journal each result as it
//! arrives ([`finish`]). Retries follow [`RetryPolicy`]: in process within the step retry budget,
//! then across continuations. When the budget is spent with work left, the engine hands back the
//! continuation message to schedule; when the run ends, the terminal event to publish.
//!
//! May touch: the journal (load, compare-and-swap store, name claims), the steps (and through
//! them the providers), the clock, the recorder and the progress sink. Never a queue or topic:
//! settling the message and publishing outcomes is the runner's job. Decisions about the run
//! record belong in [`crate::machine`], not here.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::context::SagaContext;
use crate::machine::{self, StepGraph};
use crate::record::{Continuation, Lease, Phase, QueuedRequest, SagaRun, StepName, TenantRecord};
use crate::retry::RetryPolicy;
use crate::step::Step;
use crate::steps;
use onboarding_contract::events::CloudEvent;
use onboarding_contract::validate::Rejection;
use onboarding_contract::{Command, TenantNames};
use onboarding_core::{Classify, ErrorClass};
use onboarding_journal::JournalError;

mod call;
mod finish;
mod requests;
mod start;

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
    /// The worker itself is unwell (its own credential): the steps it hit stay as they were,
    /// to be run again once the worker has backed off; nothing was failed or compensated.
    #[error("step {step} of tenant {tenant} could not run because the worker is unwell: {message}")]
    Infrastructure {
        tenant: String,
        step: String,
        message: String,
    },
}

impl Classify for EngineError {
    fn class(&self) -> ErrorClass {
        match self {
            EngineError::Busy { .. } => ErrorClass::Transient,
            EngineError::Journal(e) => e.class(),
            EngineError::Corrupt { .. } => ErrorClass::Permanent,
            EngineError::Infrastructure { .. } => ErrorClass::Infrastructure,
        }
    }
}

/// A lease outlasts its message's deadline by the step retry budget (a step launched just
/// before the deadline may retry that long) plus this margin for the final journal writes.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The longest journal lease this engine writes: a message's budget, the step retry budget and
/// the margin. A lease held by another worker never lasts longer than this from when it was taken.
pub fn longest_lease(saga: &onboarding_config::SagaConfig) -> Duration {
    ms(saga.message_budget_ms) + step_retry_budget(saga) + LEASE_MARGIN
}

/// Lets the runner see that a message's saga is compensating, which shutdown must not cut short.
#[derive(Debug, Default, Clone)]
pub struct WorkFlags {
    pub compensating: Arc<AtomicBool>,
}

struct Doc {
    key: String,
    version: Option<u64>,
    rec: TenantRecord,
}

#[derive(Debug)]
pub struct Engine {
    cx: SagaContext,
    cluster_turns: Arc<crate::cluster_turns::ClusterTurns>,
    steps: Vec<Arc<dyn Step>>,
    graph: StepGraph,
}

impl Engine {
    pub fn new(cx: SagaContext) -> Self {
        let steps = steps::all();
        let cluster_turns = Arc::new(crate::cluster_turns::ClusterTurns::new(
            cx.journal.clone(),
            cx.clock.clone(),
            &cx.settings,
        ));
        Self {
            cluster_turns,
            cx,
            graph: StepGraph::of(&steps),
            steps,
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
        // Continuations are the worker's own messages of a request registered already.
        let entry = if incoming.continuation {
            None
        } else {
            match self.register(&incoming.command).await? {
                Ok(entry) => Some(entry),
                Err(rejection) => {
                    return Ok(Handled {
                        rejection: Some(rejection),
                        summary: "request id already used for another request: refused".into(),
                        ..Handled::default()
                    });
                }
            }
        };
        let tenant = incoming.command.tenant_id().to_string();
        let request_id = incoming.command.request_id().to_string();
        let handled = self
            .handle_registered(incoming, entry.as_ref(), deadline, flags)
            .await?;
        if let Some(entry) = entry
            && !entry.accepted
            && handled.rejection.is_none()
            && self.load(&tenant).await?.rec.knows(&request_id)
        {
            self.mark_accepted(&request_id).await?;
        }
        Ok(handled)
    }

    async fn handle_registered(
        &self,
        incoming: Incoming,
        entry: Option<&crate::record::RequestEntry>,
        deadline: DateTime<Utc>,
        flags: &WorkFlags,
    ) -> Result<Handled, EngineError> {
        let tenant = incoming.command.tenant_id().to_string();
        let request_id = incoming.command.request_id().to_string();
        let mut doc = self.load(&tenant).await?;

        // Outcome events a crash kept from being confirmed go out with whatever comes next.
        let mut events = doc.rec.outbox.clone();
        let superseded = || Handled {
            events: events.clone(),
            rejection: Some(requests::superseded(
                &incoming.command,
                doc.rec.latest_request(),
            )),
            summary: "replay of a superseded request: refused".into(),
            ..Handled::default()
        };
        if let Some(event) = doc.rec.finished_event(&request_id) {
            if incoming.continuation {
                return Ok(Handled {
                    events,
                    ..Handled::note("continuation of a finished request: dropped")
                });
            }
            if doc.rec.latest_request() != Some(request_id.as_str()) {
                return Ok(superseded());
            }
            if !events.iter().any(|e| e.id == event.id) {
                events.push(event.clone());
            }
            return Ok(Handled {
                events,
                ..Handled::note("replay of a finished request: outcome re-published")
            });
        }
        if entry.is_some_and(|e| e.accepted) && !doc.rec.knows(&request_id) {
            // Carried out so long ago that the record no longer lists it.
            return Ok(superseded());
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
                let started = self.start(&mut doc.rec, queued).await?;
                if started.is_ok() {
                    doc.rec.last_accepted = Some(request_id.clone());
                }
                if let Err(rejection) = started {
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
                let cancels = machine::cancels(&incoming.command, run);
                doc.rec.last_accepted = Some(request_id.clone());
                let queued = QueuedRequest {
                    command: incoming.command.clone(),
                    traceparent: incoming.traceparent.clone(),
                };
                if cancels {
                    if let Some(run) = doc.rec.active.as_mut() {
                        self.cx.recorder.compensation_started("cancelled");
                        machine::switch_to_compensation(run, machine::cancelled_by(&request_id));
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

        if let Err(e) = self.advance(&mut doc, deadline, flags, &mut events).await {
            if matches!(e, EngineError::Infrastructure { .. }) {
                // What finished meanwhile is recorded; the lease goes, so that the message can
                // be tried again (here or on another replica) as soon as the worker is well.
                doc.rec.lease = None;
                self.save(&mut doc).await?;
            }
            return Err(e);
        }

        let continuation = match doc.rec.active.as_mut() {
            Some(run) => {
                let now = self.cx.clock.now();
                // Nothing waiting (the budget ran out with steps ready): look again after the
                // first continuation delay.
                let first = RetryPolicy::continuation(&self.cx.settings, run.phase).first;
                let wake = machine::next_wake(run).unwrap_or_else(|| now + first);
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
        let until = deadline + step_retry_budget(saga) + LEASE_MARGIN;
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

    /// Run steps until the active run (and any queued after it) finishes or the budget is spent.
    async fn advance(
        &self,
        doc: &mut Doc,
        deadline: DateTime<Utc>,
        flags: &WorkFlags,
        events: &mut Vec<CloudEvent>,
    ) -> Result<(), EngineError> {
        let saga = &*self.cx.settings;
        let step_budget = step_retry_budget(saga);
        let mut inflight = FuturesUnordered::new();
        let mut running: BTreeSet<StepName> = BTreeSet::new();
        // The first step call the worker's own unwellness stopped: no more launches, the calls
        // under way finish and are recorded, then the message waits (see EngineError).
        let mut unwell: Option<EngineError> = None;
        while let Some(run) = doc.rec.active.as_ref() {
            if unwell.is_some() && running.is_empty() {
                break;
            }
            flags
                .compensating
                .store(run.phase == Phase::Compensating, Ordering::Relaxed);
            let now = self.cx.clock.now();
            if running.is_empty()
                && let Some(outcome) = machine::terminal(run)
            {
                // No save here: the next launch, or the final release, writes the outcome
                // (outbox included) before anything else can happen.
                self.finish(&mut doc.rec, outcome, events).await?;
                continue;
            }
            let may_launch = unwell.is_none() && now + step_budget < deadline;
            let ready = if may_launch {
                machine::ready(&self.graph, run, now, &running)
            } else {
                Vec::new()
            };
            if !ready.is_empty() {
                let phase = run.phase;
                let input = Arc::new(self.step_input(&doc.rec, run)?);
                let request_id = run.request_id.clone();
                let removing = run.removing.clone();
                let launches = match doc.rec.active.as_mut() {
                    Some(run) => machine::launch(run, &ready, now),
                    None => Vec::new(),
                };
                // Journal that these steps started before starting them, so that a crash
                // leaves evidence of what may need compensating.
                self.save(doc).await?;
                for (name, operation) in launches {
                    let Some(step) = self.step(name).cloned() else {
                        continue;
                    };
                    running.insert(name);
                    inflight.push(call::call_step(
                        step,
                        input.clone(),
                        call::Action::of(phase, name, &removing),
                        operation,
                        self.cx.clock.clone(),
                        RetryPolicy::step_call(saga),
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
            let wake = machine::next_wake(run);
            if running.is_empty() {
                match wake {
                    // Worth waiting in process: the step can still run within the budget. A wake
                    // time already passed whose step is still not ready (or past the launch
                    // window) is not waited for: sleeping zero and looking again would spin
                    // until the message's lock expires.
                    Some(w) if may_launch && w > now && w + step_budget < deadline => {
                        self.cx.clock.sleep(to_std(w - now)).await;
                        continue;
                    }
                    _ => break,
                }
            }
            let sleep_for = wake
                .filter(|w| *w > now && *w + step_budget < deadline)
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
                if let Err(e) = &res.result
                    && e.class() == ErrorClass::Infrastructure
                {
                    // Not the step's outcome: it stays `Running` in the record, which the
                    // next message runs again (steps are idempotent), without an attempt counted.
                    tracing::warn!(step = %res.step, error = %e, "the worker is unwell; the step waits for it");
                    unwell.get_or_insert(EngineError::Infrastructure {
                        tenant: doc.rec.tenant_id.clone(),
                        step: res.step.to_string(),
                        message: e.to_string(),
                    });
                    continue;
                }
                let progress = self.record_result(&mut doc.rec, res);
                self.save(doc).await?;
                if let Some(event) = progress {
                    self.publish_progress(event).await;
                }
            }
        }
        match unwell {
            Some(e) => Err(e),
            None => Ok(()),
        }
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

    async fn publish_progress(&self, event: CloudEvent) {
        // Progress is best effort: the outcome event is what consumers must rely on.
        self.cx.progress.progress(event).await;
    }
}

/// How long a step call may spend retrying in process ([`RetryPolicy::step_call`]).
fn step_retry_budget(saga: &onboarding_config::SagaConfig) -> Duration {
    RetryPolicy::step_call(saga).budget().unwrap_or_default()
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn to_std(d: chrono::TimeDelta) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
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
