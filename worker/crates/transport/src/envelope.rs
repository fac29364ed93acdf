//! The envelope: how commands, continuations and events travel as queue messages, and how a
//! received message is read back. The one place that knows the message properties
//! (MessageId, SessionId, subject, `traceparent`/`Diagnostic-Id`, the continuation marker), used
//! by the runner, the producer, the benchmarks and the tests alike.
//!
//! Pure mapping: touches no queue.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use onboarding_contract::Command;
use onboarding_contract::events::{self, CloudEvent};

use crate::{OutgoingMessage, ReceivedMessage};

/// Application property marking a continuation, whose value is its sequence number.
pub const CONTINUATION_PROPERTY: &str = "onboarding-continuation";
/// W3C trace context of the request, carried by every message of it.
pub const TRACEPARENT_PROPERTY: &str = "traceparent";
/// Service Bus's own name for the same trace context.
pub const DIAGNOSTIC_ID_PROPERTY: &str = "Diagnostic-Id";
const COMMAND_CONTENT_TYPE: &str = "application/json";

/// A new W3C `traceparent` (version 00, sampled) for a request that starts a trace.
pub fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

fn trace_properties(traceparent: Option<&str>) -> BTreeMap<String, String> {
    traceparent
        .map(|tp| {
            BTreeMap::from([
                (TRACEPARENT_PROPERTY.to_string(), tp.to_string()),
                (DIAGNOSTIC_ID_PROPERTY.to_string(), tp.to_string()),
            ])
        })
        .unwrap_or_default()
}

/// A command as the producer sends it: MessageId = request id (so duplicate detection drops a
/// resend), SessionId = tenant id (per-tenant exclusivity), the trace context in properties.
pub fn command_message(command: &Command, traceparent: Option<&str>) -> OutgoingMessage {
    command_message_with_body(command, command.to_json(), traceparent)
}

/// [`command_message`] with the body given as bytes (the producer sends what the operator wrote).
pub fn command_message_with_body(
    command: &Command,
    body: Vec<u8>,
    traceparent: Option<&str>,
) -> OutgoingMessage {
    OutgoingMessage {
        message_id: command.request_id().to_string(),
        session_id: Some(command.tenant_id().to_string()),
        content_type: Some(COMMAND_CONTENT_TYPE.into()),
        subject: Some(command.kind().into()),
        correlation_id: Some(command.request_id().to_string()),
        body,
        application_properties: trace_properties(traceparent),
        scheduled_enqueue_time: None,
    }
}

/// The same command re-sent by the worker to itself, due at `wake_at`: MessageId
/// `<request-id>:<seq>` (distinct per continuation, so duplicate detection keeps it), the same
/// SessionId, and the continuation marker.
pub fn continuation_message(
    command: &Command,
    message_id: &str,
    seq: u64,
    wake_at: DateTime<Utc>,
    traceparent: Option<&str>,
) -> OutgoingMessage {
    let mut message = command_message(command, traceparent);
    message.message_id = message_id.to_string();
    message
        .application_properties
        .insert(CONTINUATION_PROPERTY.to_string(), seq.to_string());
    message.scheduled_enqueue_time = Some(wake_at);
    message
}

/// An event as a topic message: MessageId = event id, so a topic with duplicate detection drops
/// re-publications too.
pub fn event_message(event: &CloudEvent) -> OutgoingMessage {
    let mut properties = trace_properties(event.traceparent.as_deref());
    properties.insert("cloudEvents:type".into(), event.ty.clone());
    if let Some(s) = &event.subject {
        properties.insert("cloudEvents:subject".into(), s.clone());
    }
    OutgoingMessage {
        message_id: event.id.clone(),
        session_id: None,
        content_type: Some(events::CONTENT_TYPE.into()),
        subject: Some(event.ty.clone()),
        correlation_id: event.request_id().map(str::to_string),
        body: event.to_json(),
        application_properties: properties,
        scheduled_enqueue_time: None,
    }
}

/// Whether the worker sent this message to itself as a continuation.
pub fn is_continuation(message: &ReceivedMessage) -> bool {
    message
        .application_properties
        .contains_key(CONTINUATION_PROPERTY)
}

/// The trace context a received message carries (`traceparent`, else `Diagnostic-Id`).
pub fn traceparent(message: &ReceivedMessage) -> Option<&str> {
    let props = &message.application_properties;
    props
        .get(TRACEPARENT_PROPERTY)
        .or_else(|| props.get(DIAGNOSTIC_ID_PROPERTY))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use onboarding_contract::OnboardTenant;

    use super::*;

    fn onboard() -> Command {
        Command::Onboard(OnboardTenant::new("req-1", "acme"))
    }

    #[test]
    fn a_command_is_keyed_by_its_request_and_grouped_by_its_tenant() {
        let m = command_message(&onboard(), Some("00-abc-def-01"));
        assert_eq!(m.message_id, "req-1");
        assert_eq!(m.session_id.as_deref(), Some("acme"));
        assert_eq!(m.subject.as_deref(), Some("OnboardTenant"));
        assert_eq!(
            m.application_properties[TRACEPARENT_PROPERTY],
            "00-abc-def-01"
        );
        assert_eq!(
            m.application_properties[DIAGNOSTIC_ID_PROPERTY],
            "00-abc-def-01"
        );
        assert!(m.scheduled_enqueue_time.is_none());
    }

    #[test]
    fn a_continuation_is_the_same_command_scheduled_under_its_own_message_id() {
        let wake = Utc::now();
        let m = continuation_message(&onboard(), "req-1:3", 3, wake, None);
        assert_eq!(m.message_id, "req-1:3");
        assert_eq!(m.session_id.as_deref(), Some("acme"));
        assert_eq!(m.application_properties[CONTINUATION_PROPERTY], "3");
        assert_eq!(m.scheduled_enqueue_time, Some(wake));
        assert_eq!(m.body, onboard().to_json());
    }

    #[test]
    fn a_received_message_tells_whether_it_is_a_continuation_and_its_trace() {
        let sent = continuation_message(&onboard(), "req-1:1", 1, Utc::now(), Some("00-t-s-01"));
        let received = ReceivedMessage {
            message_id: sent.message_id,
            session_id: sent.session_id,
            content_type: sent.content_type,
            subject: sent.subject,
            correlation_id: sent.correlation_id,
            body: sent.body,
            application_properties: sent.application_properties,
            sequence_number: 1,
            delivery_count: 1,
            enqueued_time: Utc::now(),
            dead_letter_reason: None,
            dead_letter_description: None,
        };
        assert!(is_continuation(&received));
        assert_eq!(traceparent(&received), Some("00-t-s-01"));
    }
}
