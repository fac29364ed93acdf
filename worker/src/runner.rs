//! The message loop: receive with a concurrency limit, validate, let the engine advance the
//! saga, then settle each message in the order that makes crashes safe (send the continuation
//! and publish outcome events *before* completing; dead-letter invalid input at once).
//!
//! Shutdown (SIGTERM/Ctrl-C in the binary) stops receiving, lets in-flight work finish within a
//! grace period, then abandons what is left, except sagas that are compensating, which are
//! allowed to reach the end of their step calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use onboarding_contract::events::rejected_event;
use onboarding_contract::parse_command;
use onboarding_contract::validate::{FieldError, RejectReason, Rejection, ValidationContext};
use onboarding_core::{Classify, ErrorClass};
use onboarding_saga::engine::{Engine, EngineError, Incoming, WorkFlags, longest_lease};
use onboarding_transport::envelope::{self, event_message};
use onboarding_transport::{Delivery, LockToken};

use crate::context::Context;
use crate::metrics::SettledOutcome;
use crate::wellbeing::{Source, Wellbeing};

/// Messages being worked on: how to abort each task, its lock, and whether it compensates.
type InFlight =
    Arc<Mutex<HashMap<tokio::task::Id, (tokio::task::AbortHandle, LockToken, WorkFlags)>>>;

/// How a message was settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Completed(String),
    DeadLettered { reason: String, description: String },
    Abandoned(String),
}

/// Counters of what the loop did, for logs, `/metrics` and tests.
#[derive(Debug, Default)]
pub struct RunStats {
    pub received: AtomicU64,
    pub completed: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub abandoned: AtomicU64,
}

impl RunStats {
    pub fn snapshot(&self) -> [u64; 4] {
        [
            self.received.load(Ordering::Relaxed),
            self.completed.load(Ordering::Relaxed),
            self.dead_lettered.load(Ordering::Relaxed),
            self.abandoned.load(Ordering::Relaxed),
        ]
    }
}

#[derive(Debug, Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cx: Context,
    engine: Engine,
    validation: ValidationContext,
    stats: RunStats,
    wellbeing: Wellbeing,
}

impl Runner {
    pub fn new(cx: Context) -> Self {
        let validation = ValidationContext {
            max_message_bytes: cx.config.worker.max_message_bytes,
            targets: cx.config.targets.keys().cloned().collect(),
            workload_template: cx.config.workload_template().is_some(),
            reserved_namespaces: cx
                .config
                .worker
                .reserved_namespaces
                .iter()
                .cloned()
                .collect(),
        };
        let wellbeing = Wellbeing::new(
            Duration::from_millis(cx.config.worker.unwell_backoff_first_ms.max(1)),
            Duration::from_millis(cx.config.worker.unwell_backoff_max_ms.max(1)),
        );
        Self {
            inner: Arc::new(Inner {
                engine: Engine::new(cx.saga_context()),
                cx,
                validation,
                stats: RunStats::default(),
                wellbeing,
            }),
        }
    }

    pub fn stats(&self) -> &RunStats {
        &self.inner.stats
    }

    /// Whether the worker itself is well, for `/readyz` and `/healthz`.
    pub fn wellbeing(&self) -> &Wellbeing {
        &self.inner.wellbeing
    }

    fn cx(&self) -> &Context {
        &self.inner.cx
    }

    /// Receive and process messages until `shutdown` turns true (or, with
    /// `worker.exit_when_idle_ms`, until the queue has been empty that long).
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let settings = self.cx().config.worker.clone();
        let semaphore = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let in_flight: InFlight = Arc::default();
        let wait = Duration::from_millis(settings.receive_wait_ms.max(10));
        let mut idle_since: Option<tokio::time::Instant> = None;
        tracing::info!(worker.id = %self.cx().worker_id, concurrency = settings.concurrency, "worker started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            while tasks.try_join_next().is_some() {}
            // While the worker is unwell, receive no more than one message per backoff period:
            // each receive is also the probe of whether the queue answers again.
            tokio::select! {
                _ = self.wellbeing().backoff_over() => {}
                _ = shutdown.changed() => break,
            }
            let permit = tokio::select! {
                p = semaphore.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.changed() => break,
            };
            self.wellbeing().receiving(true);
            let received = tokio::select! {
                r = self.cx().queue.receive(wait) => r,
                _ = shutdown.changed() => break,
            };
            self.wellbeing().receiving(false);
            if received.is_ok() {
                self.wellbeing().recovered(Source::Queue);
            }
            match received {
                Ok(Some(delivery)) => {
                    idle_since = None;
                    let runner = self.clone();
                    let flags = WorkFlags::default();
                    let lock = delivery.lock.clone();
                    let registry = in_flight.clone();
                    let task_flags = flags.clone();
                    let handle = tasks.spawn(async move {
                        runner.process(delivery, task_flags).await;
                        drop(permit);
                        registry.lock().await.remove(&tokio::task::id());
                    });
                    in_flight
                        .lock()
                        .await
                        .insert(handle.id(), (handle, lock, flags));
                }
                Ok(None) => {
                    drop(permit);
                    if settings.exit_when_idle_ms > 0 && tasks.is_empty() {
                        let idle = match self.cx().queue.stats().await {
                            Ok(s) => s.active + s.scheduled + s.locked == 0,
                            Err(_) => false,
                        };
                        if !idle {
                            idle_since = None;
                        } else if idle_since
                            .get_or_insert_with(tokio::time::Instant::now)
                            .elapsed()
                            >= Duration::from_millis(settings.exit_when_idle_ms)
                        {
                            tracing::info!("queue idle; exiting as configured");
                            break;
                        }
                    }
                }
                Err(e) => {
                    drop(permit);
                    let delay = self.wellbeing().failed(
                        Source::Queue,
                        format!("receiving from the queue failed: {e}"),
                    );
                    tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "receive failed; backing off");
                }
            }
        }
        self.drain(
            tasks,
            in_flight,
            Duration::from_millis(settings.shutdown_grace_ms),
        )
        .await;
        tracing::info!(stats = ?self.stats().snapshot(), "worker stopped");
    }

    async fn drain(&self, mut tasks: JoinSet<()>, in_flight: InFlight, grace: Duration) {
        if tasks.is_empty() {
            return;
        }
        tracing::info!(
            in_flight = tasks.len(),
            grace_ms = grace.as_millis() as u64,
            "finishing in-flight work"
        );
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(Some(_)) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        // Grace is over: abandon what is not compensating; let compensations run to the end.
        let registry: Vec<_> = in_flight.lock().await.values().cloned().collect();
        let mut protected = 0;
        for (handle, lock, flags) in registry {
            if flags.compensating.load(Ordering::Relaxed) {
                protected += 1;
                continue;
            }
            handle.abort();
            if let Err(e) = self.cx().queue.abandon(&lock).await {
                tracing::warn!(error = %e, "could not abandon an in-flight message; its lock will expire");
            }
        }
        if protected > 0 {
            tracing::info!(protected, "waiting for compensating sagas");
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Process one delivery to its settlement.
    pub async fn process(&self, delivery: Delivery, flags: WorkFlags) -> Settlement {
        let stats = &self.inner.stats;
        stats.received.fetch_add(1, Ordering::Relaxed);
        let msg = &delivery.message;
        let span = tracing::info_span!(
            "message",
            message.id = %msg.message_id,
            tenant.id = tracing::field::Empty,
            request.id = tracing::field::Empty,
            delivery.count = msg.delivery_count,
        );
        // Every message of one request (the command, its continuations) joins the trace its
        // `traceparent` names.
        if let Some(tp) = envelope::traceparent(msg) {
            crate::telemetry::set_remote_parent(&span, tp);
        }
        let metrics = &self.cx().metrics;
        metrics.message_received();
        // The renewal runs inside this future, not as a task of its own: whatever ends the
        // processing (settled, or the task aborted at shutdown or by its caller) ends the
        // renewal with it. A renewal that outlived its message would keep it locked, unseen by
        // every other worker, for as long as this process lives.
        let settlement = tokio::select! {
            settlement = self.settle(&delivery, flags).instrument(span.clone()) => settlement,
            never = self.keep_lock(&delivery) => match never {},
        };
        match &settlement {
            Settlement::Completed(s) => {
                stats.completed.fetch_add(1, Ordering::Relaxed);
                metrics.message_settled(SettledOutcome::Completed);
                tracing::info!(parent: &span, outcome = %s, "message completed");
            }
            Settlement::DeadLettered {
                reason,
                description,
            } => {
                stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                metrics.message_settled(SettledOutcome::DeadLettered);
                tracing::warn!(parent: &span, reason, description, "message dead-lettered");
            }
            Settlement::Abandoned(why) => {
                stats.abandoned.fetch_add(1, Ordering::Relaxed);
                metrics.message_settled(SettledOutcome::Abandoned);
                tracing::warn!(parent: &span, why, "message abandoned");
            }
        }
        settlement
    }

    /// Renew the message lock at a third of its duration, for as long as it is polled. Never
    /// returns: after a failed renewal it only waits (the lock is lost; settling will say so).
    async fn keep_lock(&self, delivery: &Delivery) -> std::convert::Infallible {
        let (queue, clock) = (&self.cx().queue, &self.cx().clock);
        let mut until = delivery.locked_until;
        loop {
            let left = (until - clock.now()).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep((left / 3).max(Duration::from_millis(50))).await;
            match queue.renew_lock(&delivery.lock).await {
                Ok(next) => until = next,
                Err(e) => {
                    tracing::warn!(error = %e, "lock renewal failed");
                    return std::future::pending().await;
                }
            }
        }
    }

    async fn settle(&self, delivery: &Delivery, flags: WorkFlags) -> Settlement {
        let cx = self.cx();
        let msg = &delivery.message;
        let command = match parse_command(&msg.body, &self.inner.validation).and_then(|c| {
            match &msg.session_id {
                Some(session) if session != c.tenant_id() => {
                    let mut r = Rejection::new(
                        RejectReason::SchemaViolation,
                        vec![FieldError::new(
                            "/tenantId",
                            format!(
                                "tenantId {:?} must equal the message's SessionId {session:?}, which serialises work per tenant",
                                c.tenant_id()
                            ),
                        )],
                    );
                    r.request_id = Some(c.request_id().to_string());
                    r.tenant_id = Some(c.tenant_id().to_string());
                    Err(r)
                }
                _ => Ok(c),
            }
        }) {
            Ok(c) => c,
            Err(rejection) => return self.reject(delivery, &rejection).await,
        };
        let span = tracing::Span::current();
        span.record("tenant.id", command.tenant_id());
        span.record("request.id", command.request_id());
        let tenant = command.tenant_id().to_string();

        let incoming = Incoming {
            message_id: msg.message_id.clone(),
            continuation: envelope::is_continuation(msg),
            // A command sent without trace context starts a trace here; the saga keeps it,
            // so its continuations and events carry it.
            traceparent: envelope::traceparent(msg)
                .map(str::to_string)
                .or_else(|| crate::telemetry::traceparent_of(&span)),
            command,
        };
        let handled = loop {
            let deadline = cx.clock.now() + Duration::from_millis(cx.config.saga.message_budget_ms);
            match self
                .inner
                .engine
                .handle(incoming.clone(), deadline, &flags)
                .await
            {
                Ok(h) => {
                    self.wellbeing().recovered(Source::Work);
                    break Ok(h);
                }
                Err(e) if e.class() == ErrorClass::Infrastructure => {
                    // The worker itself is unwell (its own credential): the saga is not to
                    // blame and nothing was failed. The message stays locked here (its lock is
                    // renewed) rather than going back: every abandon would count as a delivery,
                    // and an outage longer than the delivery limit would dead-letter requests
                    // that are fine. Shutdown abandons it like any other in-flight message.
                    let delay = self.wellbeing().failed(Source::Work, e.to_string());
                    tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "the worker is unwell; the message waits");
                    cx.clock.sleep(delay).await;
                    continue;
                }
                Err(e) => break Err(e),
            }
        };
        let handled = match handled {
            Ok(h) => h,
            Err(e) => {
                if let EngineError::Busy { until, .. } = &e {
                    // Abandoning at once hands the message straight back while the lease is
                    // still held: after a crash, that loop burns the whole delivery count in
                    // milliseconds and dead-letters a saga that is fine. Hold the message (its
                    // lock is being renewed) until the lease runs out, never longer than a
                    // lease can last, then give it back.
                    let left = (*until - cx.clock.now()).to_std().unwrap_or(Duration::ZERO);
                    cx.clock
                        .sleep(left.min(longest_lease(&cx.config.saga)))
                        .await;
                }
                return self
                    .abandon(delivery, format!("{e} ({} error)", e.class()))
                    .await;
            }
        };
        if let Some(rejection) = &handled.rejection {
            return self.reject(delivery, rejection).await;
        }
        // Order matters for crash safety: outcome events and the continuation go out before the
        // message is completed; a crash in between replays them (same ids) instead of losing them.
        for event in &handled.events {
            if let Err(e) = cx.topic.publish(event_message(event)).await {
                return self
                    .abandon(delivery, format!("publishing {} failed: {e}", event.ty))
                    .await;
            }
        }
        if !handled.events.is_empty() {
            let ids: Vec<String> = handled.events.iter().map(|e| e.id.clone()).collect();
            if let Err(e) = self.inner.engine.confirm_published(&tenant, &ids).await {
                return self
                    .abandon(delivery, format!("confirming published events failed: {e}"))
                    .await;
            }
        }
        if let Some(c) = handled.continuation
            && let Err(e) = cx
                .queue
                .send(envelope::continuation_message(
                    &c.command,
                    &c.message_id,
                    c.seq,
                    c.wake_at,
                    c.traceparent.as_deref(),
                ))
                .await
        {
            return self
                .abandon(delivery, format!("sending the continuation failed: {e}"))
                .await;
        }
        match cx.queue.complete(&delivery.lock).await {
            Ok(()) => Settlement::Completed(handled.summary),
            Err(e) => Settlement::Abandoned(format!("complete failed: {e}")),
        }
    }

    async fn reject(&self, delivery: &Delivery, rejection: &Rejection) -> Settlement {
        let cx = self.cx();
        let event = rejected_event(rejection, &delivery.message.message_id, cx.clock.now());
        if let Err(e) = cx.topic.publish(event_message(&event)).await {
            return self
                .abandon(delivery, format!("publishing request.rejected failed: {e}"))
                .await;
        }
        let reason = rejection.reason.code().to_string();
        let description = rejection.description();
        match cx
            .queue
            .dead_letter(&delivery.lock, &reason, &description)
            .await
        {
            Ok(()) => {
                cx.metrics.dead_lettered(&reason);
                Settlement::DeadLettered {
                    reason,
                    description,
                }
            }
            Err(e) => Settlement::Abandoned(format!("dead-lettering failed: {e}")),
        }
    }

    async fn abandon(&self, delivery: &Delivery, why: String) -> Settlement {
        if let Err(e) = self.cx().queue.abandon(&delivery.lock).await {
            return Settlement::Abandoned(format!(
                "{why}; abandon failed too ({e}), the lock will expire"
            ));
        }
        Settlement::Abandoned(why)
    }
}
