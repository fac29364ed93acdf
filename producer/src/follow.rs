//! Following a sent request to its outcome (`--wait`), by the transport: on the embedded topic
//! a subscription of the run's own; on Service Bus the tenant's journal record (every reader of
//! a Service Bus subscription competes for its events, so two waiters would take each other's
//! outcomes), and the configured subscription only when the journal cannot be read, saying so.
//! Also how an outcome is printed and which exit code it deserves.
//!
//! May touch: the topic and (reading only) the journal and dead-letter queue the configuration
//! names; standard output and error.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use onboarding_config::Config;
use onboarding_config::TransportConfig;
use onboarding_contract::events::{self, CloudEvent, EventData};
use onboarding_journal::Journal;
use onboarding_record::{SagaRun, Status, TenantRecord};
use onboarding_transport::{Queue, Subscription, Topic};
use serde_json::json;

use crate::output::Output;
use crate::{EXIT_FAILED, EXIT_NOT_FOUND, EXIT_TIMEOUT, Failure};

/// How `--wait` follows a request (see the module doc).
pub(crate) enum Follower {
    /// Events from a topic subscription; `own`: this run created it (and removes it).
    Events {
        name: String,
        own: bool,
        subscription: Box<dyn Subscription>,
    },
    /// The tenant's journal record, polled.
    Journal(Arc<dyn Journal>),
}

/// The follower for this configuration: on Service Bus the journal when it can be read (one
/// read of the tenant's record proves it), else the configured subscription with a warning.
pub(crate) async fn follower_for(
    config: &Config,
    topic: &dyn Topic,
    tenant: &str,
) -> Result<Follower, Failure> {
    let service_bus = matches!(config.transport, TransportConfig::ServiceBus { .. });
    if service_bus {
        let readable = match crate::stores::existing_journal(config) {
            Ok(journal) => match journal.load(tenant).await {
                Ok(_) => Ok(journal),
                Err(e) => Err(e.to_string()),
            },
            Err(f) => Err(f.message),
        };
        match readable {
            Ok(journal) => return Ok(Follower::Journal(journal)),
            Err(why) => {
                let name = onboarding_bootstrap::events_subscription(config);
                eprintln!(
                    "producer: warning: cannot read the journal ({why}); following the events subscription {name:?} instead: every other reader of that subscription (another --wait, a consumer) competes for its events, and an event one of them takes never reaches this one"
                );
            }
        }
    }
    let name = onboarding_bootstrap::events_subscription(config);
    let subscription = topic
        .subscribe(&name)
        .await
        .map_err(|e| Failure::new(EXIT_FAILED, format!("cannot subscribe to events: {e}")))?;
    Ok(Follower::Events {
        name,
        own: !service_bus,
        subscription,
    })
}

/// The request a journal follower watches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Followed<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) request_id: &'a str,
}

/// How often the journal follower reads the tenant's record: a record read is one small
/// journal read, and steps take seconds to minutes.
const JOURNAL_POLL: Duration = Duration::from_millis(250);
/// How often it looks for the request in the dead-letter queue (a rejection is dead-lettered
/// and never reaches the journal): a peek reads every dead letter added since the last one.
const DEAD_LETTER_POLL: Duration = Duration::from_secs(2);

/// Follow `request` through the tenant's journal record until its outcome: a progress line for
/// each step of its run as it completes (the lines `describe` prints for step events), then the
/// outcome the worker recorded. A request the worker refuses is dead-lettered and never reaches
/// the record, so the dead-letter queue is peeked for its MessageId (the request id) as well.
pub(crate) async fn follow_journal(
    out: &Output,
    journal: &dyn Journal,
    queue: &dyn Queue,
    request: Followed<'_>,
    timeout: Duration,
) -> Result<(), Failure> {
    let started = Instant::now();
    let mut reported: BTreeSet<(String, &'static str)> = BTreeSet::new();
    let mut dead_letters_from = 0;
    let mut next_dead_letter_look = started;
    let mut read_failure_told = false;
    loop {
        match journal.load(request.tenant).await {
            Ok(Some(stored)) => {
                let record: TenantRecord = serde_json::from_value(stored.value).map_err(|e| {
                    Failure::new(
                        EXIT_FAILED,
                        format!(
                            "the journal record of {} cannot be read: {e}",
                            request.tenant
                        ),
                    )
                })?;
                if let Some(event) = record.finished_event(request.request_id) {
                    let elapsed = started.elapsed().as_secs_f64();
                    out.emit(event, || describe(event, elapsed));
                    return conclude(event);
                }
                // Another request of the tenant may run first (this one is queued behind it).
                if let Some(run) = record
                    .active
                    .as_ref()
                    .filter(|r| r.request_id == request.request_id)
                {
                    for (step, phase) in completed_steps(run) {
                        if reported.insert((step.clone(), phase)) {
                            let elapsed = started.elapsed().as_secs_f64();
                            out.emit(
                                &json!({
                                    "type": events::STEP_COMPLETED,
                                    "source": "journal",
                                    "data": {"requestId": request.request_id, "tenantId": request.tenant, "step": step, "phase": phase},
                                }),
                                || step_line(&step, phase, elapsed),
                            );
                        }
                    }
                }
            }
            Ok(None) => {}
            // A journal that answered once and stops answering (a network blip) is read again
            // until the timeout; saying so once keeps a long outage from flooding stderr.
            Err(e) => {
                if !read_failure_told {
                    eprintln!("producer: reading the journal failed ({e}); trying again");
                    read_failure_told = true;
                }
            }
        }
        if Instant::now() >= next_dead_letter_look {
            next_dead_letter_look = Instant::now() + DEAD_LETTER_POLL;
            match dead_lettered(queue, request.request_id, &mut dead_letters_from).await {
                Ok(Some(rejected)) => {
                    let elapsed = started.elapsed().as_secs_f64();
                    out.emit(&rejected, || {
                        format!(
                            "  [{elapsed:6.1}s] dead-lettered ({}):\n    {}",
                            rejected["data"]["reason"].as_str().unwrap_or_default(),
                            rejected["data"]["description"].as_str().unwrap_or_default()
                        )
                    });
                    return Err(Failure::new(EXIT_FAILED, String::new()));
                }
                Ok(None) => {}
                Err(e) => {
                    if !read_failure_told {
                        eprintln!(
                            "producer: reading the dead-letter queue failed ({e}); trying again"
                        );
                        read_failure_told = true;
                    }
                }
            }
        }
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(no_outcome(request.request_id, timeout));
        }
        tokio::time::sleep(left.min(JOURNAL_POLL)).await;
    }
}

/// The steps of `run` that have completed, with the phase their step event names
/// (`forward`, `removal` for what an update removes, `compensation`), in step order.
fn completed_steps(run: &SagaRun) -> Vec<(String, &'static str)> {
    let mut done = Vec::new();
    for (step, state) in &run.steps {
        if state.forward == Status::Done {
            let phase = match run.removing.contains(step) {
                true => "removal",
                false => "forward",
            };
            done.push((step.to_string(), phase));
        }
        if state.compensation == Status::Done {
            done.push((step.to_string(), "compensation"));
        }
    }
    done
}

/// The dead letter whose MessageId is `request_id`, as a `request.rejected`-like document, if
/// one arrived since `from` (which moves past what was read, so each peek reads only new ones).
pub(crate) async fn dead_lettered(
    queue: &dyn Queue,
    request_id: &str,
    from: &mut i64,
) -> Result<Option<serde_json::Value>, onboarding_transport::TransportError> {
    loop {
        let batch = queue.peek_dead_letters(*from, 100).await?;
        let Some(last) = batch.last() else {
            return Ok(None);
        };
        *from = last.sequence_number + 1;
        if let Some(m) = batch.iter().find(|m| m.message_id == request_id) {
            return Ok(Some(json!({
                "type": events::REQUEST_REJECTED,
                "source": "dead-letter queue",
                "data": {
                    "messageId": m.message_id,
                    "sequenceNumber": m.sequence_number,
                    "reason": m.dead_letter_reason,
                    "description": m.dead_letter_description,
                },
            })));
        }
    }
}

pub(crate) fn no_outcome(request_id: &str, timeout: Duration) -> Failure {
    Failure::new(
        EXIT_TIMEOUT,
        format!(
            "no outcome for {request_id} after {}s; the saga may still be running: check `producer status <tenant>`",
            timeout.as_secs()
        ),
    )
}

/// Print progress events of `request_id` until its outcome.
pub(crate) async fn follow(
    out: &Output,
    mut sub: Box<dyn Subscription>,
    request_id: &str,
    timeout: Duration,
) -> Result<(), Failure> {
    let started = Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(no_outcome(request_id, timeout));
        }
        let msg = sub
            .next(left.min(Duration::from_secs(1)))
            .await
            .map_err(|e| Failure::new(EXIT_FAILED, format!("reading events failed: {e}")))?;
        let Some(msg) = msg else { continue };
        let Ok(event) = serde_json::from_slice::<CloudEvent>(&msg.body) else {
            continue;
        };
        if event.request_id() != Some(request_id) {
            continue;
        }
        let elapsed = started.elapsed().as_secs_f64();
        out.emit(&event, || describe(&event, elapsed));
        if event.is_terminal() || event.ty == events::REQUEST_REJECTED {
            return conclude(&event);
        }
    }
}

/// The exit a request's final event deserves.
pub(crate) fn conclude(event: &CloudEvent) -> Result<(), Failure> {
    if let EventData::Outcome(o) = &event.data
        && o.not_found
    {
        return Err(Failure::new(
            EXIT_NOT_FOUND,
            format!(
                "not found: the worker has no record of tenant {}; nothing was deleted",
                o.tenant_id
            ),
        ));
    }
    match event.ty.as_str() {
        events::ONBOARDED | events::OFFBOARDED => Ok(()),
        _ => Err(Failure::new(EXIT_FAILED, String::new())),
    }
}

/// The progress line of a completed step, whether a step event or the journal said so.
fn step_line(step: &str, phase: &str, elapsed: f64) -> String {
    let verb = match phase {
        "forward" => "done",
        "removal" => "removed (no longer asked for)",
        _ => "undone",
    };
    format!("  [{elapsed:6.1}s] {step:<22} {verb}")
}

pub(crate) fn describe(event: &CloudEvent, elapsed: f64) -> String {
    match &event.data {
        EventData::Step(s) => step_line(&s.step, &s.phase, elapsed),
        EventData::Outcome(o) => {
            let mut text = format!(
                "  [{elapsed:6.1}s] {} {}: {} (event {}, type {})",
                o.tenant_id, o.request_id, o.state, event.id, event.ty
            );
            if let Some(e) = &o.error {
                text.push_str(&format!(
                    "\n  cause: {}{}",
                    e.step
                        .as_deref()
                        .map(|s| format!("step {s}: "))
                        .unwrap_or_default(),
                    e.message
                ));
            }
            for r in &o.remaining {
                text.push_str(&format!("\n  {} ({}): {}", r.step, r.reason, r.resource));
            }
            text
        }
        EventData::Rejected(r) => format!(
            "  [{elapsed:6.1}s] rejected ({}):\n{}",
            r.reason,
            r.errors
                .iter()
                .map(|e| format!("    {}: {}", e.path, e.message))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        EventData::Drifted(d) => format!(
            "  [{elapsed:6.1}s] {} drifted: {}",
            d.tenant_id,
            d.findings
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
