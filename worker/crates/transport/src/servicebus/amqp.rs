//! Message <-> AMQP mapping: [`OutgoingMessage`] to the AMQP message azservicebus sends, and the
//! AMQP message a receiver gets back to [`ReceivedMessage`], with the broker annotations
//! (sequence number, enqueued time, lock expiry, scheduled enqueue time).
//!
//! Pure functions on values: no network, no clock, no state. Tested without a broker (the tests
//! are in `amqp/tests.rs`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::{
    ApplicationProperties, Body, Data, Message, MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};

use super::{DEAD_LETTER_DESCRIPTION, DEAD_LETTER_REASON, DIAGNOSTIC_ID, TRACEPARENT};
use crate::{OutgoingMessage, ReceivedMessage, TransportError};

const SCHEDULED_ENQUEUE_TIME: &str = "x-opt-scheduled-enqueue-time";
const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
const LOCKED_UNTIL: &str = "x-opt-locked-until";
/// Service Bus limit on MessageId and SessionId.
const MAX_ID_LEN: usize = 128;

/// Build the AMQP message for an [`OutgoingMessage`]: MessageId, SessionId (AMQP group-id),
/// subject, content type, correlation id, application properties (with `Diagnostic-Id` filled
/// from `traceparent` when only the latter is set) and the scheduled enqueue time annotation.
pub fn outgoing_to_amqp(message: &OutgoingMessage) -> Result<Message<Data>, TransportError> {
    if message.message_id.is_empty() {
        return Err(TransportError::Rejected(
            "the message has an empty message id; every message needs one (it is the duplicate-detection key)"
                .into(),
        ));
    }
    if message.message_id.len() > MAX_ID_LEN {
        return Err(TransportError::Rejected(format!(
            "message id {:?} is {} characters long; Service Bus allows at most {MAX_ID_LEN}",
            message.message_id,
            message.message_id.len()
        )));
    }
    if let Some(session) = &message.session_id
        && (session.is_empty() || session.len() > MAX_ID_LEN)
    {
        return Err(TransportError::Rejected(format!(
            "session id {session:?} of message {} must be 1 to {MAX_ID_LEN} characters",
            message.message_id
        )));
    }

    let properties = Properties {
        message_id: Some(MessageId::String(message.message_id.clone())),
        group_id: message.session_id.clone(),
        subject: message.subject.clone(),
        content_type: message.content_type.clone().map(Symbol::from),
        correlation_id: message.correlation_id.clone().map(MessageId::String),
        ..Properties::default()
    };

    let mut app = message.application_properties.clone();
    if let Some(traceparent) = app.get(TRACEPARENT).cloned() {
        app.entry(DIAGNOSTIC_ID.to_string()).or_insert(traceparent);
    }
    let application_properties = if app.is_empty() {
        None
    } else {
        let mut map = ApplicationProperties::default();
        for (k, v) in app {
            map.0.insert(k, SimpleValue::String(v));
        }
        Some(map)
    };

    let message_annotations = message.scheduled_enqueue_time.map(|at| {
        let mut annotations = MessageAnnotations::default();
        annotations.insert(
            OwnedKey::from(SCHEDULED_ENQUEUE_TIME),
            Value::Timestamp(Timestamp::from_milliseconds(at.timestamp_millis())),
        );
        annotations
    });

    Ok(Message {
        header: None,
        delivery_annotations: None,
        message_annotations,
        properties: Some(properties),
        application_properties,
        body: Data(Binary::from(message.body.clone())),
        footer: None,
    })
}

/// Read an AMQP message as a [`ReceivedMessage`]. Never fails: a missing field gets its neutral
/// value, non-string application properties are stringified ([`simple_value_to_string`]), and
/// a body that is neither data sections nor a binary/string value is read as empty (the runner
/// then rejects it as unreadable). `DeadLetterReason`/`DeadLetterErrorDescription` move out of
/// the properties into their own fields, so a replay does not carry them along.
pub fn received_from_amqp(message: &Message<Body<Value>>) -> ReceivedMessage {
    let props = message.properties.as_ref();
    let mut application_properties = application_properties_to_map(message);
    let dead_letter_reason = application_properties.remove(DEAD_LETTER_REASON);
    let dead_letter_description = application_properties.remove(DEAD_LETTER_DESCRIPTION);
    ReceivedMessage {
        message_id: props
            .and_then(|p| p.message_id.as_ref())
            .map(message_id_to_string)
            .unwrap_or_default(),
        session_id: props.and_then(|p| p.group_id.clone()),
        content_type: props
            .and_then(|p| p.content_type.as_ref())
            .map(|s| s.as_str().to_string()),
        subject: props.and_then(|p| p.subject.clone()),
        correlation_id: props
            .and_then(|p| p.correlation_id.as_ref())
            .map(message_id_to_string),
        body: body_bytes(&message.body),
        application_properties,
        sequence_number: annotation(message, SEQUENCE_NUMBER)
            .and_then(value_as_i64)
            .unwrap_or_default(),
        // AMQP counts earlier failed deliveries; Service Bus (and our trait) count this one too.
        delivery_count: message
            .header
            .as_ref()
            .map_or(1, |h| h.delivery_count.saturating_add(1)),
        enqueued_time: annotation(message, ENQUEUED_TIME)
            .and_then(value_as_time)
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
        dead_letter_reason,
        dead_letter_description,
    }
}

/// The message lock expiry the broker put on a peek-locked message.
pub fn locked_until_from_amqp(message: &Message<Body<Value>>) -> Option<DateTime<Utc>> {
    annotation(message, LOCKED_UNTIL).and_then(value_as_time)
}

/// The scheduled enqueue time annotation of an outgoing message, if any.
pub fn scheduled_enqueue_time_of(message: &Message<Data>) -> Option<DateTime<Utc>> {
    message
        .message_annotations
        .as_ref()?
        .iter()
        .find(|(k, _)| key_is(k, SCHEDULED_ENQUEUE_TIME))
        .and_then(|(_, v)| value_as_time(v))
}

/// Application properties as strings, whatever AMQP type the sender used.
pub fn application_properties_to_map(message: &Message<Body<Value>>) -> BTreeMap<String, String> {
    message
        .application_properties
        .as_ref()
        .map(|props| {
            props
                .0
                .iter()
                .map(|(k, v)| (k.clone(), simple_value_to_string(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// A readable string for any AMQP simple value: numbers and booleans as Rust prints them,
/// timestamps as RFC 3339 (UTC, milliseconds), UUIDs hyphenated, binary as lowercase hex.
pub fn simple_value_to_string(value: &SimpleValue) -> String {
    match value {
        SimpleValue::Null => String::new(),
        SimpleValue::Bool(v) => v.to_string(),
        SimpleValue::Ubyte(v) => v.to_string(),
        SimpleValue::Ushort(v) => v.to_string(),
        SimpleValue::Uint(v) => v.to_string(),
        SimpleValue::Ulong(v) => v.to_string(),
        SimpleValue::Byte(v) => v.to_string(),
        SimpleValue::Short(v) => v.to_string(),
        SimpleValue::Int(v) => v.to_string(),
        SimpleValue::Long(v) => v.to_string(),
        SimpleValue::Float(v) => v.to_string(),
        SimpleValue::Double(v) => v.to_string(),
        SimpleValue::Char(v) => v.to_string(),
        SimpleValue::Timestamp(t) => timestamp_to_chrono(t)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| t.milliseconds().to_string()),
        SimpleValue::Uuid(u) => uuid::Uuid::from_bytes(*u.as_inner()).to_string(),
        SimpleValue::Binary(b) => hex(b),
        SimpleValue::String(s) => s.clone(),
        SimpleValue::Symbol(s) => s.as_str().to_string(),
        // Decimals and described values have no portable text form; their debug form at least
        // shows what arrived.
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn message_id_to_string(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid::Uuid::from_bytes(*u.as_inner()).to_string(),
        MessageId::Binary(b) => hex(b),
    }
}

fn body_bytes(body: &Body<Value>) -> Vec<u8> {
    match body {
        Body::Data(sections) => sections.iter().flat_map(|d| d.0.iter().copied()).collect(),
        Body::Value(v) => match &v.0 {
            Value::Binary(b) => b.to_vec(),
            Value::String(s) => s.clone().into_bytes(),
            Value::Symbol(s) => s.as_str().as_bytes().to_vec(),
            other => {
                tracing::warn!(body.kind = ?std::mem::discriminant(other), "message body is an AMQP value that is neither binary nor text; reading it as empty");
                Vec::new()
            }
        },
        Body::Sequence(_) => {
            tracing::warn!("message body is an AMQP sequence; reading it as empty");
            Vec::new()
        }
        Body::Empty => Vec::new(),
    }
}

fn key_is(key: &OwnedKey, name: &str) -> bool {
    matches!(key, OwnedKey::Symbol(s) if s.as_str() == name)
}

fn annotation<'a>(message: &'a Message<Body<Value>>, name: &str) -> Option<&'a Value> {
    message
        .message_annotations
        .as_ref()?
        .iter()
        .find(|(k, _)| key_is(k, name))
        .map(|(_, v)| v)
}

fn value_as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Long(v) => Some(*v),
        Value::Int(v) => Some(i64::from(*v)),
        Value::Uint(v) => Some(i64::from(*v)),
        Value::Ulong(v) => i64::try_from(*v).ok(),
        _ => None,
    }
}

fn value_as_time(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::Timestamp(t) => timestamp_to_chrono(t),
        _ => None,
    }
}

fn timestamp_to_chrono(t: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(t.milliseconds())
}

/// `time::OffsetDateTime` (what azservicebus returns) to chrono, without naming the `time` crate.
macro_rules! offset_to_chrono {
    ($odt:expr) => {{
        let odt = $odt;
        DateTime::<Utc>::from_timestamp(odt.unix_timestamp(), odt.nanosecond())
    }};
}
pub(super) use offset_to_chrono;

#[cfg(test)]
mod tests;
