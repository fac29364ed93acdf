//! Azure Service Bus transport: the command queue and the event topic over AMQP (`azservicebus`).
//!
//! This module may touch the network, and only the Service Bus namespace it is given: AMQP over
//! TLS on 5671 (plain AMQP on 5672 for the local emulator) and, for [`Queue::stats`] only, HTTPS
//! to the namespace's entity-management endpoint. Settings come in through
//! [`ServiceBusSettings`]; nothing here reads the environment.
//!
//! How the [`Queue`] contract maps onto Service Bus:
//! - **Sessions are required.** The commands queue is session-enabled (SessionId = tenant id), so
//!   per-tenant exclusivity is the session lock. [`Queue::receive`] accepts the next available
//!   session, takes ONE message from it and keeps that session receiver, keyed by the
//!   [`LockToken`], until the message is settled; settling closes the session receiver, which
//!   releases the session for the next receiver. Sending without a session id is rejected.
//! - **Lock renewal** renews the session lock: on a session-enabled entity the session lock is
//!   what holds the message (message-lock renewal is not a session receiver's operation).
//!   Dead-lettered messages are not in a session: their message lock is renewed.
//! - **Waiting for a session.** Accepting "the next session" is an AMQP attach the broker holds
//!   open until a session frees up or its own timeout passes, and azservicebus offers no way to
//!   shorten that. A `receive` whose `max_wait` runs out leaves its accept running and the next
//!   `receive` call picks it up, so no attach is abandoned half-way (an abandoned one could
//!   lock a session nobody works on). At most one accept runs per concurrent `receive` caller.
//! - **Duplicate detection** is the entity's (`--enable-duplicate-detection`): Service Bus drops a
//!   duplicate MessageId silently, so [`Queue::send`] always answers [`SendOutcome::Accepted`].
//! - **Scheduled messages** carry the `x-opt-scheduled-enqueue-time` annotation on a normal send,
//!   which the broker honours like the `schedule` management operation but through the same
//!   path (and duplicate detection) as every other send; azservicebus's `schedule_message` would
//!   also panic on an unexpected reply.
//! - **Counts** ([`Queue::stats`]) do not exist in AMQP. With an Entra credential they are read
//!   from the entity description (`CountDetails`) over HTTPS, which needs the Manage claim
//!   (role "Azure Service Bus Data Owner"); `locked` is the number of deliveries this process
//!   holds. With a connection string (the emulator) stats are refused: use the portal or metrics.
//! - **Topic subscriptions** are created by the infrastructure, never here; `subscribe` opens a
//!   receive-and-delete receiver on an existing subscription.
//!
//! The AMQP <-> [`OutgoingMessage`]/[`ReceivedMessage`] mapping lives in pure functions
//! ([`outgoing_to_amqp`], [`received_from_amqp`], ...) tested without a broker.
//! `docs/servicebus.md` says how to run the gated tests against the emulator or a namespace.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use azservicebus::client::service_bus_client::WithCustomRetryPolicy;
use azservicebus::core::BasicRetryPolicy;
use azservicebus::receiver::DeadLetterOptions;
use azservicebus::{
    ServiceBusClient, ServiceBusClientOptions, ServiceBusMessage, ServiceBusReceiveMode,
    ServiceBusReceivedMessage, ServiceBusReceiver, ServiceBusReceiverOptions,
    ServiceBusRetryOptions, ServiceBusSender, ServiceBusSenderOptions, ServiceBusSessionReceiver,
    ServiceBusSessionReceiverOptions, SubQueue,
};
use chrono::{DateTime, Utc};
use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::{
    ApplicationProperties, Body, Data, Message, MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};
use tokio::task::JoinHandle;

use super::{
    Delivery, LockToken, OutgoingMessage, Queue, QueueStats, ReceivedMessage, SendOutcome,
    Subscription, Topic, TransportError,
};
use onboarding_core::Classify;
use onboarding_core::TokenCredential;

/// Entra scope of the Service Bus data plane.
pub const SERVICE_BUS_SCOPE: &str = "https://servicebus.azure.net/.default";
/// W3C trace context, as the runner sets it.
pub const TRACEPARENT: &str = "traceparent";
/// The property Azure SDKs read trace context from on Service Bus messages.
pub const DIAGNOSTIC_ID: &str = "Diagnostic-Id";
/// Application properties the broker sets on dead-lettered messages.
pub const DEAD_LETTER_REASON: &str = "DeadLetterReason";
pub const DEAD_LETTER_DESCRIPTION: &str = "DeadLetterErrorDescription";

const SCHEDULED_ENQUEUE_TIME: &str = "x-opt-scheduled-enqueue-time";
const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
const LOCKED_UNTIL: &str = "x-opt-locked-until";
/// Service Bus limit on MessageId and SessionId.
const MAX_ID_LEN: usize = 128;
/// After a session is accepted its first message is normally already there; this is how long we
/// wait for it even when the caller's `max_wait` is nearly spent.
const FIRST_MESSAGE_WAIT: Duration = Duration::from_secs(5);
/// Entity-management API version used by the Azure SDKs' administration clients.
const MANAGEMENT_API_VERSION: &str = "2021-05";

/// How the transport authenticates to the namespace.
#[derive(Clone)]
pub enum ServiceBusAuth {
    /// `Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...`. With
    /// `UseDevelopmentEmulator=true` the connection is plain AMQP to the local emulator.
    ConnectionString(String),
    /// An Entra credential (workload identity, Azure CLI), possibly in another Entra tenant than
    /// the cluster's. The namespace must grant its principal a Service Bus data role.
    Credential(Arc<dyn TokenCredential>),
}

impl std::fmt::Debug for ServiceBusAuth {
    // A connection string carries a key: it must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceBusAuth::ConnectionString(_) => f.write_str("ConnectionString(<redacted>)"),
            ServiceBusAuth::Credential(c) => f.debug_tuple("Credential").field(c).finish(),
        }
    }
}

/// Where the queue and topic live and how to reach them.
#[derive(Debug, Clone)]
pub struct ServiceBusSettings {
    /// Fully qualified namespace, `<name>.servicebus.windows.net`. With a connection string its
    /// `Endpoint` wins and this is only used in messages.
    pub namespace: String,
    /// The session-enabled commands queue.
    pub queue: String,
    /// The events topic.
    pub topic: String,
    pub auth: ServiceBusAuth,
    /// Time allowed for one try of an AMQP operation (connect, attach, send, settle).
    pub operation_timeout: Duration,
    /// Retries azservicebus makes on transient AMQP failures before reporting them.
    pub max_retries: u32,
}

impl ServiceBusSettings {
    pub fn new(
        namespace: impl Into<String>,
        queue: impl Into<String>,
        topic: impl Into<String>,
        auth: ServiceBusAuth,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            queue: queue.into(),
            topic: topic.into(),
            auth,
            operation_timeout: Duration::from_secs(60),
            max_retries: 3,
        }
    }

    fn validate(&self) -> Result<(), TransportError> {
        let mut problems = Vec::new();
        if self.queue.trim().is_empty() {
            problems.push("the queue name is empty");
        }
        if self.topic.trim().is_empty() {
            problems.push("the topic name is empty");
        }
        match &self.auth {
            ServiceBusAuth::Credential(_) if self.namespace.trim().is_empty() => {
                problems.push("the namespace is empty (expected <name>.servicebus.windows.net)")
            }
            ServiceBusAuth::ConnectionString(cs) if cs.trim().is_empty() => {
                problems.push("the connection string is empty")
            }
            _ => {}
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TransportError::Rejected(format!(
                "Service Bus settings are invalid: {}; fix the transport configuration",
                problems.join(", ")
            )))
        }
    }
}

/// True when a connection string targets the local Service Bus emulator (plain AMQP, no TLS).
pub fn is_development_emulator(connection_string: &str) -> bool {
    connection_string.split(';').any(|pair| {
        pair.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("UseDevelopmentEmulator")
                && v.trim().eq_ignore_ascii_case("true")
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Credential bridge
// ---------------------------------------------------------------------------------------------

/// Our [`TokenCredential`] seen as the `azure_core` credential azservicebus takes, so the
/// Service Bus connection uses the same credential type (with its explicit Entra tenant and
/// client id) as every other Azure client of the worker.
#[derive(Debug, Clone)]
pub struct AzureCoreCredential {
    inner: Arc<dyn TokenCredential>,
}

impl AzureCoreCredential {
    pub fn new(inner: Arc<dyn TokenCredential>) -> Self {
        Self { inner }
    }
}

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for AzureCoreCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        // azservicebus asks for exactly one scope; our trait takes one.
        let scope = scopes.first().copied().unwrap_or(SERVICE_BUS_SCOPE);
        let token = self
            .inner
            .token(scope)
            .await
            .map_err(|e| azure_core::Error::new(azure_core::error::ErrorKind::Credential, e))?;
        let expires_on =
            azure_core::date::OffsetDateTime::from_unix_timestamp(token.expires_on.timestamp())
                .map_err(|e| {
                    azure_core::Error::new(azure_core::error::ErrorKind::DataConversion, e)
                })?;
        Ok(azure_core::credentials::AccessToken::new(
            token.token,
            expires_on,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Mapping (pure)
// ---------------------------------------------------------------------------------------------

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

/// Counts from an entity description (`GET https://<ns>/<queue>?api-version=...`, Atom XML).
/// `None` when the document has no `CountDetails` (Service Bus answers a missing entity with an
/// empty feed). `locked` is left at 0: the broker does not report it.
pub fn parse_count_details(xml: &str) -> Option<QueueStats> {
    if !xml.contains("CountDetails") {
        return None;
    }
    Some(QueueStats {
        active: xml_count(xml, "ActiveMessageCount")?,
        scheduled: xml_count(xml, "ScheduledMessageCount").unwrap_or_default(),
        locked: 0,
        dead_lettered: xml_count(xml, "DeadLetterMessageCount").unwrap_or_default(),
    })
}

/// The number inside `<prefix:name>N</prefix:name>`, matching `name` exactly (so
/// `DeadLetterMessageCount` does not match `TransferDeadLetterMessageCount`).
fn xml_count(xml: &str, name: &str) -> Option<u64> {
    let needle = format!("{name}>");
    let mut from = 0;
    while let Some(pos) = xml[from..].find(&needle) {
        let start = from + pos;
        from = start + needle.len();
        let before = xml[..start].chars().next_back();
        if !matches!(before, Some('<') | Some(':')) {
            continue;
        }
        let rest = &xml[from..];
        let end = rest.find('<').unwrap_or(rest.len());
        if let Ok(n) = rest[..end].trim().parse::<u64>() {
            return Some(n);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Error classification (pure)
// ---------------------------------------------------------------------------------------------

/// What a Service Bus / AMQP failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The message or session lock expired or was already used.
    LockLost,
    /// The queue, topic or subscription does not exist.
    NotFound,
    /// The broker refused the principal (missing data role, wrong namespace).
    Unauthorized,
    /// The request can never succeed as sent (too large, malformed, not allowed).
    Rejected,
    /// Timeouts, busy servers, dropped connections, token acquisition: try again.
    Transient,
}

/// Classify a failure from its text (the error's display and debug forms, which carry the AMQP
/// condition such as `com.microsoft:session-lock-lost` or `NotFound`). `credential` is true when
/// getting a token failed.
pub fn failure_kind(detail: &str, credential: bool) -> FailureKind {
    let d = detail.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| d.contains(n));
    if any(&[
        "lock-lost",
        "locklost",
        "locktokennotfound",
        "lock token",
        "lock supplied is invalid",
        "lock expired",
    ]) {
        FailureKind::LockLost
    } else if credential {
        FailureKind::Transient
    } else if any(&[
        "not-found",
        "notfound",
        "could not be found",
        "entity-not-found",
    ]) {
        FailureKind::NotFound
    } else if any(&["unauthorized", "auth-failed", "forbidden"]) {
        FailureKind::Unauthorized
    } else if any(&[
        "message-size-exceeded",
        "messagesizeexceeded",
        "amqp:not-allowed",
        "notallowed",
        "invalid-field",
        "invalidfield",
        "argument-error",
        "argument-out-of-range",
        "decode-error",
        "decodeerror",
    ]) {
        FailureKind::Rejected
    } else {
        FailureKind::Transient
    }
}

/// True when an accept-next-session attempt ended because no session was free, which is the
/// normal "queue is empty" answer rather than a failure.
pub fn is_no_session_available(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    [
        "com.microsoft:timeout",
        "elapsed",
        "session-cannot-be-locked",
        "sessioncannotbelocked",
        "incomingsourceisnone",
        "source field is none",
        "sessionidnotset",
    ]
    .iter()
    .any(|n| d.contains(n))
}

/// The display chain and debug form of an azservicebus error, for classification and messages.
fn error_detail(err: &azure_core::Error) -> (String, String) {
    let mut display = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string();
        if !display.contains(&text) {
            display.push_str(": ");
            display.push_str(&text);
        }
        source = s.source();
    }
    (display, format!("{err:?}"))
}

/// The [`AuthError`](onboarding_core::AuthError) our credential returned, wherever azservicebus
/// wrapped it.
fn auth_error_in(err: &azure_core::Error) -> Option<&onboarding_core::AuthError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(auth) = e.downcast_ref::<onboarding_core::AuthError>() {
            return Some(auth);
        }
        current = e.source();
    }
    None
}

fn is_credential_error(err: &azure_core::Error) -> bool {
    matches!(err.kind(), azure_core::error::ErrorKind::Credential)
}

/// Turn an azservicebus error into a [`TransportError`] that says what failed, on which entity,
/// and what to do. `subject` names the message for lock errors.
fn transport_error(
    err: &azure_core::Error,
    action: &str,
    namespace: &str,
    subject: &str,
) -> TransportError {
    // Our credential already knows whether its failure is worth retrying.
    if let Some(auth) = auth_error_in(err) {
        return if auth.is_transient() {
            TransportError::Unavailable(format!(
                "{action} on Service Bus namespace {namespace} failed: {auth}"
            ))
        } else {
            TransportError::Rejected(format!(
                "{action} on Service Bus namespace {namespace} failed: {auth}; check the Service Bus credential \
                 (its Entra tenant id, client id and federated credential, see docs/servicebus.md)"
            ))
        };
    }
    let (display, debug) = error_detail(err);
    let kind = failure_kind(&format!("{display} {debug}"), is_credential_error(err));
    to_transport_error(kind, action, namespace, subject, &display)
}

fn to_transport_error(
    kind: FailureKind,
    action: &str,
    namespace: &str,
    subject: &str,
    detail: &str,
) -> TransportError {
    match kind {
        FailureKind::LockLost => TransportError::LockLost(subject.to_string()),
        FailureKind::NotFound => TransportError::Rejected(format!(
            "{action} on Service Bus namespace {namespace} failed: the entity does not exist ({detail}); \
             queues, topics and subscriptions are created by the infrastructure (infra/ or az servicebus), check the names in the transport configuration"
        )),
        FailureKind::Unauthorized => TransportError::Rejected(format!(
            "{action} on Service Bus namespace {namespace} was refused ({detail}); grant the worker's identity \
             \"Azure Service Bus Data Sender\" and \"Azure Service Bus Data Receiver\" (or Data Owner) on the namespace"
        )),
        FailureKind::Rejected => TransportError::Rejected(format!(
            "{action} on Service Bus namespace {namespace} was rejected: {detail}"
        )),
        FailureKind::Transient => TransportError::Unavailable(format!(
            "{action} on Service Bus namespace {namespace} failed: {detail}"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

type Client = ServiceBusClient<BasicRetryPolicy>;

fn lock<T>(m: &StdMutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short critical sections leaves plain data behind.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// fe2o3-amqp builds its TLS config from rustls's process-wide provider; the workspace compiles
/// two (ring and aws-lc-rs), so without an installed default rustls would panic. The binaries
/// install ring at startup; this covers library users and tests.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another installer is fine: a provider is then installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// AMQP connections. azservicebus serialises link creation per connection (and an accept of the
/// next session holds that lock until a session frees up), so concurrent accepts each take a
/// connection of their own; idle ones are kept for reuse.
struct Pool {
    settings: Arc<ServiceBusSettings>,
    idle: StdMutex<Vec<Client>>,
}

impl Pool {
    async fn connect(&self) -> Result<Client, TransportError> {
        ensure_crypto_provider();
        let s = &self.settings;
        let retry_options = ServiceBusRetryOptions {
            try_timeout: s.operation_timeout,
            max_retries: s.max_retries,
            ..ServiceBusRetryOptions::default()
        };
        let options = ServiceBusClientOptions {
            retry_options,
            ..ServiceBusClientOptions::default()
        };
        let result = match &s.auth {
            ServiceBusAuth::ConnectionString(cs) if is_development_emulator(cs) => {
                WithCustomRetryPolicy::<BasicRetryPolicy>::unsecured()
                    .new_from_connection_string(cs.as_str(), options)
                    .await
            }
            ServiceBusAuth::ConnectionString(cs) => {
                ServiceBusClient::new_from_connection_string(cs.as_str(), options).await
            }
            ServiceBusAuth::Credential(credential) => {
                let bridged: Arc<dyn azure_core::credentials::TokenCredential> =
                    Arc::new(AzureCoreCredential::new(credential.clone()));
                ServiceBusClient::new_from_token_credential(s.namespace.clone(), bridged, options)
                    .await
            }
        };
        result.map_err(|e| transport_error(&e, "opening an AMQP connection", &s.namespace, ""))
    }

    async fn take(&self) -> Result<Client, TransportError> {
        let idle = lock(&self.idle).pop();
        match idle {
            Some(client) if !client.is_closed() => Ok(client),
            _ => self.connect().await,
        }
    }

    fn put(&self, client: Client) {
        if !client.is_closed() {
            lock(&self.idle).push(client);
        }
    }
}

/// What a `receive` waits for: an accepted session, none (the broker's wait ended), or an error.
type Accepted = Result<Option<ServiceBusSessionReceiver>, TransportError>;

async fn accept_next_session(pool: Arc<Pool>) -> Accepted {
    let mut client = pool.take().await?;
    let queue = pool.settings.queue.clone();
    let result = client
        .accept_next_session_for_queue(queue.clone(), ServiceBusSessionReceiverOptions::default())
        .await;
    match result {
        Ok(receiver) => {
            pool.put(client);
            Ok(Some(receiver))
        }
        Err(e) => {
            let (display, debug) = error_detail(&e);
            if is_no_session_available(&format!("{display} {debug}")) {
                pool.put(client);
                return Ok(None);
            }
            let err = transport_error(
                &e,
                &format!("accepting the next session on queue {queue}"),
                &pool.settings.namespace,
                "",
            );
            // The connection may be what broke: do not hand it out again.
            if let Err(e) = client.dispose().await {
                tracing::debug!(error = %e, "closing a failed Service Bus connection");
            }
            Err(err)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The transport
// ---------------------------------------------------------------------------------------------

/// A peek-locked message waiting to be settled.
enum Held {
    /// A command: its session stays locked by `receiver` until the message is settled.
    Session {
        receiver: Box<ServiceBusSessionReceiver>,
        message: ServiceBusReceivedMessage,
    },
    /// A dead-lettered message, settled through the shared dead-letter receiver.
    DeadLetter { message: ServiceBusReceivedMessage },
    /// Already settled (the entry is on its way out of the map).
    Settled,
}

enum Settle<'a> {
    Complete,
    Abandon,
    DeadLetter {
        reason: &'a str,
        description: &'a str,
    },
}

impl Settle<'_> {
    fn verb(&self) -> &'static str {
        match self {
            Settle::Complete => "completing",
            Settle::Abandon => "abandoning",
            Settle::DeadLetter { .. } => "dead-lettering",
        }
    }
}

/// The Service Bus implementation of [`Queue`] and [`Topic`].
pub struct ServiceBusTransport {
    settings: Arc<ServiceBusSettings>,
    pool: Arc<Pool>,
    /// Accepts still running after their `receive` call gave up waiting.
    pending: StdMutex<VecDeque<JoinHandle<Accepted>>>,
    held: StdMutex<HashMap<LockToken, Arc<tokio::sync::Mutex<Held>>>>,
    queue_sender: tokio::sync::Mutex<Option<ServiceBusSender>>,
    topic_sender: tokio::sync::Mutex<Option<ServiceBusSender>>,
    dead_letters: tokio::sync::Mutex<Option<ServiceBusReceiver>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for ServiceBusTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBusTransport")
            .field("namespace", &self.settings.namespace)
            .field("queue", &self.settings.queue)
            .field("topic", &self.settings.topic)
            .field("held", &lock(&self.held).len())
            .finish()
    }
}

impl ServiceBusTransport {
    /// Validate the settings and open a first connection, so a wrong namespace, endpoint or
    /// credential fails here rather than on the first receive.
    pub async fn connect(settings: ServiceBusSettings) -> Result<Self, TransportError> {
        settings.validate()?;
        let settings = Arc::new(settings);
        let pool = Arc::new(Pool {
            settings: settings.clone(),
            idle: StdMutex::new(Vec::new()),
        });
        let first = pool.connect().await?;
        pool.put(first);
        let http = reqwest::Client::builder()
            .timeout(settings.operation_timeout)
            .build()
            .map_err(|e| {
                TransportError::Unavailable(format!(
                    "cannot build the HTTPS client for Service Bus entity management: {e}"
                ))
            })?;
        Ok(Self {
            settings,
            pool,
            pending: StdMutex::new(VecDeque::new()),
            held: StdMutex::new(HashMap::new()),
            queue_sender: tokio::sync::Mutex::new(None),
            topic_sender: tokio::sync::Mutex::new(None),
            dead_letters: tokio::sync::Mutex::new(None),
            http,
        })
    }

    pub fn settings(&self) -> &ServiceBusSettings {
        &self.settings
    }

    /// Release everything: abandon-by-close the held sessions (their messages come back),
    /// stop pending accepts, close senders, receivers and connections. Call on shutdown;
    /// dropping the transport without it leaves the broker to time the locks out.
    pub async fn close(&self) {
        let pending: Vec<_> = lock(&self.pending).drain(..).collect();
        for handle in pending {
            if handle.is_finished() {
                if let Ok(Ok(Some(receiver))) = handle.await {
                    dispose_session(receiver).await;
                }
            } else {
                handle.abort();
            }
        }
        let held: Vec<_> = lock(&self.held).drain().map(|(_, v)| v).collect();
        for entry in held {
            let mut entry = entry.lock().await;
            if let Held::Session { receiver, .. } = std::mem::replace(&mut *entry, Held::Settled) {
                dispose_session(*receiver).await;
            }
        }
        for sender in [&self.queue_sender, &self.topic_sender] {
            if let Some(s) = sender.lock().await.take() {
                let _ = s.dispose().await;
            }
        }
        if let Some(r) = self.dead_letters.lock().await.take() {
            let _ = r.dispose().await;
        }
        let clients: Vec<_> = lock(&self.pool.idle).drain(..).collect();
        for c in clients {
            let _ = c.dispose().await;
        }
    }

    fn ns(&self) -> &str {
        &self.settings.namespace
    }

    fn spawn_accept(&self) -> JoinHandle<Accepted> {
        tokio::spawn(accept_next_session(self.pool.clone()))
    }

    async fn send_to(
        &self,
        sender: &tokio::sync::Mutex<Option<ServiceBusSender>>,
        entity: &str,
        message: &OutgoingMessage,
    ) -> Result<(), TransportError> {
        let amqp = outgoing_to_amqp(message)?;
        let mut guard = sender.lock().await;
        if guard.is_none() {
            let mut client = self.pool.take().await?;
            let created = client
                .create_sender(entity.to_string(), ServiceBusSenderOptions::default())
                .await;
            self.pool.put(client);
            *guard = Some(created.map_err(|e| {
                transport_error(&e, &format!("opening a sender on {entity}"), self.ns(), "")
            })?);
        }
        let Some(s) = guard.as_mut() else {
            return Err(TransportError::Unavailable(format!(
                "no sender on {entity}; retry"
            )));
        };
        let result = s
            .send_message(ServiceBusMessage::from_raw_amqp_message(amqp))
            .await;
        match result {
            Ok(()) => {
                tracing::debug!(message.id = %message.message_id, session.id = ?message.session_id, entity, "sent to Service Bus");
                Ok(())
            }
            Err(e) => {
                let err = transport_error(
                    &e,
                    &format!("sending message {} to {entity}", message.message_id),
                    self.ns(),
                    &message.message_id,
                );
                if err.is_transient() {
                    // Start over with a fresh link next time.
                    if let Some(s) = guard.take() {
                        let _ = s.dispose().await;
                    }
                }
                Err(err)
            }
        }
    }

    /// The shared peek-lock receiver on the queue's dead-letter sub-queue (which has no
    /// sessions), created on first use.
    async fn dead_letter_receiver(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<ServiceBusReceiver>>, TransportError> {
        let mut guard = self.dead_letters.lock().await;
        if guard.is_none() {
            let mut client = self.pool.take().await?;
            let created = client
                .create_receiver_for_queue(
                    self.settings.queue.clone(),
                    ServiceBusReceiverOptions {
                        sub_queue: SubQueue::DeadLetter,
                        ..ServiceBusReceiverOptions::default()
                    },
                )
                .await;
            self.pool.put(client);
            *guard = Some(created.map_err(|e| {
                transport_error(
                    &e,
                    &format!(
                        "opening the dead-letter receiver of queue {}",
                        self.settings.queue
                    ),
                    self.ns(),
                    "",
                )
            })?);
        }
        Ok(guard)
    }

    fn held_entry(
        &self,
        token: &LockToken,
    ) -> Result<Arc<tokio::sync::Mutex<Held>>, TransportError> {
        lock(&self.held)
            .get(token)
            .cloned()
            .ok_or_else(|| TransportError::LockLost(format!("with lock {}", token.0)))
    }

    async fn settle(&self, token: &LockToken, how: Settle<'_>) -> Result<(), TransportError> {
        let entry = self.held_entry(token)?;
        let mut held = entry.lock().await;
        let (result, message_id) = match &mut *held {
            Held::Settled => {
                return Err(TransportError::LockLost(format!("with lock {}", token.0)));
            }
            Held::Session { receiver, message } => {
                let id = message
                    .message_id()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let r = match &how {
                    Settle::Complete => receiver.complete_message(&*message).await,
                    Settle::Abandon => receiver.abandon_message(&*message, None).await,
                    Settle::DeadLetter {
                        reason,
                        description,
                    } => {
                        receiver
                            .dead_letter_message(
                                &*message,
                                dead_letter_options(reason, description),
                            )
                            .await
                    }
                };
                (r, id)
            }
            Held::DeadLetter { message } => {
                let id = message
                    .message_id()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let mut guard = self.dead_letters.lock().await;
                let Some(receiver) = guard.as_mut() else {
                    drop(guard);
                    *held = Held::Settled;
                    lock(&self.held).remove(token);
                    return Err(TransportError::LockLost(id));
                };
                let r = match &how {
                    Settle::Complete => receiver.complete_message(&*message).await,
                    Settle::Abandon => receiver.abandon_message(&*message, None).await,
                    Settle::DeadLetter {
                        reason,
                        description,
                    } => {
                        receiver
                            .dead_letter_message(
                                &*message,
                                dead_letter_options(reason, description),
                            )
                            .await
                    }
                };
                (r, id)
            }
        };
        let outcome = result.map_err(|e| {
            transport_error(
                &e,
                &format!("{} message {message_id}", how.verb()),
                self.ns(),
                &message_id,
            )
        });
        // Done with this lock unless a transient failure leaves it worth another try.
        if outcome.is_ok() || matches!(outcome, Err(TransportError::LockLost(_))) {
            let finished = std::mem::replace(&mut *held, Held::Settled);
            drop(held);
            lock(&self.held).remove(token);
            if let Held::Session { receiver, .. } = finished {
                dispose_session(*receiver).await;
            }
        }
        if outcome.is_ok() {
            tracing::debug!(message.id = %message_id, action = how.verb(), "settled on Service Bus");
        }
        outcome
    }
}

impl Drop for ServiceBusTransport {
    // A detached accept would go on to lock a session nobody will ever work on; aborting it
    // drops its connection instead. `close` is the orderly way out.
    fn drop(&mut self) {
        for handle in lock(&self.pending).drain(..) {
            handle.abort();
        }
    }
}

fn dead_letter_options(reason: &str, description: &str) -> DeadLetterOptions {
    DeadLetterOptions {
        dead_letter_reason: Some(reason.to_string()),
        dead_letter_error_description: Some(description.to_string()),
        properties_to_modify: None,
    }
}

/// Closing the session receiver releases the session lock for the next receiver.
async fn dispose_session(receiver: ServiceBusSessionReceiver) {
    let session = receiver.session_id().to_string();
    if let Err(e) = receiver.dispose().await {
        tracing::debug!(session.id = %session, error = %e, "closing a Service Bus session receiver");
    }
}

fn lock_token_of(message: &ServiceBusReceivedMessage) -> LockToken {
    LockToken(uuid::Uuid::from_bytes(*message.lock_token().as_inner()).to_string())
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[async_trait::async_trait]
impl Queue for ServiceBusTransport {
    async fn send(&self, message: OutgoingMessage) -> Result<SendOutcome, TransportError> {
        if message.session_id.is_none() {
            return Err(TransportError::Rejected(format!(
                "message {} has no session id; queue {} is session-enabled, set session_id to the tenant id",
                message.message_id, self.settings.queue
            )));
        }
        self.send_to(&self.queue_sender, &self.settings.queue, &message)
            .await?;
        // Duplicate detection happens in the broker and is silent.
        Ok(SendOutcome::Accepted)
    }

    async fn receive(&self, max_wait: Duration) -> Result<Option<Delivery>, TransportError> {
        let started = tokio::time::Instant::now();
        let pending = lock(&self.pending).pop_front();
        let mut handle = pending.unwrap_or_else(|| self.spawn_accept());
        let accepted = match tokio::time::timeout(max_wait, &mut handle).await {
            Err(_) => {
                lock(&self.pending).push_back(handle);
                return Ok(None);
            }
            Ok(Err(join)) => {
                return Err(TransportError::Unavailable(format!(
                    "accepting a session on queue {} stopped: {join}",
                    self.settings.queue
                )));
            }
            Ok(Ok(accepted)) => accepted?,
        };
        let Some(mut receiver) = accepted else {
            return Ok(None);
        };
        let session = receiver.session_id().to_string();
        let wait = max_wait
            .saturating_sub(started.elapsed())
            .max(FIRST_MESSAGE_WAIT);
        let message = match receiver.receive_message_with_max_wait_time(wait).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                dispose_session(receiver).await;
                return Ok(None);
            }
            Err(e) => {
                let err = transport_error(
                    &e,
                    &format!(
                        "receiving from session {session} of queue {}",
                        self.settings.queue
                    ),
                    self.ns(),
                    "",
                );
                dispose_session(receiver).await;
                return Err(err);
            }
        };
        let received = received_from_amqp(message.raw_amqp_message());
        let session_until = offset_to_chrono!(receiver.session_locked_until());
        let locked_until = earliest(
            locked_until_from_amqp(message.raw_amqp_message()),
            session_until,
        )
        .unwrap_or_else(Utc::now);
        let token = lock_token_of(&message);
        tracing::debug!(message.id = %received.message_id, session.id = %session, "received from Service Bus");
        lock(&self.held).insert(
            token.clone(),
            Arc::new(tokio::sync::Mutex::new(Held::Session {
                receiver: Box::new(receiver),
                message,
            })),
        );
        Ok(Some(Delivery {
            message: received,
            lock: token,
            locked_until,
        }))
    }

    async fn renew_lock(&self, token: &LockToken) -> Result<DateTime<Utc>, TransportError> {
        let entry = self.held_entry(token)?;
        let mut held = entry.lock().await;
        match &mut *held {
            Held::Settled => Err(TransportError::LockLost(format!("with lock {}", token.0))),
            Held::Session { receiver, message } => {
                let id = message
                    .message_id()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                receiver.renew_session_lock().await.map_err(|e| {
                    transport_error(
                        &e,
                        &format!("renewing the session lock of message {id}"),
                        self.ns(),
                        &id,
                    )
                })?;
                offset_to_chrono!(receiver.session_locked_until()).ok_or_else(|| {
                    TransportError::Unavailable(format!(
                        "the renewed session lock of message {id} has an unreadable expiry"
                    ))
                })
            }
            Held::DeadLetter { message } => {
                let id = message
                    .message_id()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let mut guard = self.dead_letters.lock().await;
                let Some(receiver) = guard.as_mut() else {
                    return Err(TransportError::LockLost(id));
                };
                receiver.renew_message_lock(message).await.map_err(|e| {
                    transport_error(
                        &e,
                        &format!("renewing the lock of dead-lettered message {id}"),
                        self.ns(),
                        &id,
                    )
                })?;
                locked_until_from_amqp(message.raw_amqp_message()).ok_or_else(|| {
                    TransportError::Unavailable(format!(
                        "the renewed lock of message {id} has no expiry"
                    ))
                })
            }
        }
    }

    async fn complete(&self, lock: &LockToken) -> Result<(), TransportError> {
        self.settle(lock, Settle::Complete).await
    }

    async fn abandon(&self, lock: &LockToken) -> Result<(), TransportError> {
        self.settle(lock, Settle::Abandon).await
    }

    async fn dead_letter(
        &self,
        lock: &LockToken,
        reason: &str,
        description: &str,
    ) -> Result<(), TransportError> {
        self.settle(
            lock,
            Settle::DeadLetter {
                reason,
                description,
            },
        )
        .await
    }

    async fn peek_dead_letters(
        &self,
        from_sequence: i64,
        max: usize,
    ) -> Result<Vec<ReceivedMessage>, TransportError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let max = u32::try_from(max).unwrap_or(u32::MAX).min(i32::MAX as u32);
        let mut guard = self.dead_letter_receiver().await?;
        let Some(receiver) = guard.as_mut() else {
            return Err(TransportError::Unavailable(
                "no dead-letter receiver; retry".into(),
            ));
        };
        let peeked = receiver
            .peek_messages(max, Some(from_sequence))
            .await
            .map_err(|e| {
                transport_error(
                    &e,
                    &format!("peeking the dead-letter queue of {}", self.settings.queue),
                    self.ns(),
                    "",
                )
            })?;
        Ok(peeked
            .iter()
            .map(|m| received_from_amqp(m.raw_amqp_message()))
            .collect())
    }

    async fn receive_dead_letter(
        &self,
        max_wait: Duration,
    ) -> Result<Option<Delivery>, TransportError> {
        let mut guard = self.dead_letter_receiver().await?;
        let Some(receiver) = guard.as_mut() else {
            return Err(TransportError::Unavailable(
                "no dead-letter receiver; retry".into(),
            ));
        };
        let result = receiver.receive_message_with_max_wait_time(max_wait).await;
        let message = match result {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(e) => {
                let err = transport_error(
                    &e,
                    &format!(
                        "receiving from the dead-letter queue of {}",
                        self.settings.queue
                    ),
                    self.ns(),
                    "",
                );
                if let Some(r) = guard.take() {
                    let _ = r.dispose().await;
                }
                return Err(err);
            }
        };
        drop(guard);
        let received = received_from_amqp(message.raw_amqp_message());
        let locked_until =
            locked_until_from_amqp(message.raw_amqp_message()).unwrap_or_else(Utc::now);
        let token = lock_token_of(&message);
        lock(&self.held).insert(
            token.clone(),
            Arc::new(tokio::sync::Mutex::new(Held::DeadLetter { message })),
        );
        Ok(Some(Delivery {
            message: received,
            lock: token,
            locked_until,
        }))
    }

    async fn stats(&self) -> Result<QueueStats, TransportError> {
        let ServiceBusAuth::Credential(credential) = &self.settings.auth else {
            return Err(TransportError::Rejected(format!(
                "queue counts of {} are not available over AMQP, and reading them from the entity description needs an Entra credential \
                 (this transport uses a connection string); use the Azure portal or the Service Bus metrics",
                self.settings.queue
            )));
        };
        let token = credential.token(SERVICE_BUS_SCOPE).await.map_err(|e| {
            if e.is_transient() {
                TransportError::Unavailable(e.to_string())
            } else {
                TransportError::Rejected(e.to_string())
            }
        })?;
        let url = format!(
            "https://{}/{}?api-version={MANAGEMENT_API_VERSION}",
            self.settings.namespace, self.settings.queue
        );
        let what = format!(
            "reading the counts of queue {} on Service Bus namespace {}",
            self.settings.queue, self.settings.namespace
        );
        let response = self
            .http
            .get(&url)
            .bearer_auth(&token.token)
            .send()
            .await
            .map_err(|e| TransportError::Unavailable(format!("{what} failed: {e}")))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| TransportError::Unavailable(format!("{what} failed: {e}")))?;
        match status.as_u16() {
            200 => {
                let mut stats = parse_count_details(&body).ok_or_else(|| {
                    TransportError::Rejected(format!(
                        "{what}: the queue does not exist; check transport.queue"
                    ))
                })?;
                stats.locked = lock(&self.held).len() as u64;
                Ok(stats)
            }
            401 | 403 => Err(TransportError::Rejected(format!(
                "{what} was refused ({status}): counts need the Manage claim, i.e. the role \"Azure Service Bus Data Owner\"; \
                 the worker's sender/receiver roles do not include it, use the portal or metrics instead"
            ))),
            429 | 500..=599 => Err(TransportError::Unavailable(format!(
                "{what} failed with {status}; retry shortly"
            ))),
            _ => Err(TransportError::Rejected(format!(
                "{what} failed with {status}: {}",
                body.chars().take(300).collect::<String>()
            ))),
        }
    }
}

#[async_trait::async_trait]
impl Topic for ServiceBusTransport {
    async fn publish(&self, message: OutgoingMessage) -> Result<(), TransportError> {
        self.send_to(&self.topic_sender, &self.settings.topic, &message)
            .await
    }

    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn Subscription>, TransportError> {
        let topic = self.settings.topic.clone();
        let mut client = self.pool.take().await?;
        let created = client
            .create_receiver_for_subscription(
                &topic,
                subscription,
                ServiceBusReceiverOptions {
                    receive_mode: ServiceBusReceiveMode::ReceiveAndDelete,
                    ..ServiceBusReceiverOptions::default()
                },
            )
            .await;
        self.pool.put(client);
        let receiver = created.map_err(|e| {
            let (display, debug) = error_detail(&e);
            let kind = failure_kind(&format!("{display} {debug}"), is_credential_error(&e));
            match kind {
                FailureKind::NotFound if auth_error_in(&e).is_none() => TransportError::Rejected(format!(
                    "subscription {subscription} of topic {topic} does not exist on Service Bus namespace {}; \
                     subscriptions are created by the infrastructure, not the worker: \
                     az servicebus topic subscription create --namespace-name <ns> --topic-name {topic} --name {subscription} -g <rg>",
                    self.ns()
                )),
                _ => transport_error(
                    &e,
                    &format!("opening subscription {subscription} of topic {topic}"),
                    self.ns(),
                    "",
                ),
            }
        })?;
        Ok(Box::new(ServiceBusSubscription {
            receiver,
            topic,
            name: subscription.to_string(),
            namespace: self.settings.namespace.clone(),
        }))
    }
}

/// A receive-and-delete receiver on an existing topic subscription.
pub struct ServiceBusSubscription {
    receiver: ServiceBusReceiver,
    topic: String,
    name: String,
    namespace: String,
}

impl std::fmt::Debug for ServiceBusSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBusSubscription")
            .field("topic", &self.topic)
            .field("name", &self.name)
            .finish()
    }
}

#[async_trait::async_trait]
impl Subscription for ServiceBusSubscription {
    async fn next(
        &mut self,
        max_wait: Duration,
    ) -> Result<Option<ReceivedMessage>, TransportError> {
        let message = self
            .receiver
            .receive_message_with_max_wait_time(max_wait)
            .await
            .map_err(|e| {
                transport_error(
                    &e,
                    &format!(
                        "receiving from subscription {} of topic {}",
                        self.name, self.topic
                    ),
                    &self.namespace,
                    "",
                )
            })?;
        Ok(message.map(|m| received_from_amqp(m.raw_amqp_message())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::messaging::{AmqpValue, Batch, Header};

    fn outgoing() -> OutgoingMessage {
        let mut props = BTreeMap::new();
        props.insert("kind".to_string(), "OnboardTenant".to_string());
        OutgoingMessage {
            message_id: "req-1:0".into(),
            session_id: Some("tenant-a".into()),
            content_type: Some("application/json".into()),
            subject: Some("OnboardTenant".into()),
            correlation_id: Some("req-1".into()),
            body: br#"{"tenant":"a"}"#.to_vec(),
            application_properties: props,
            scheduled_enqueue_time: None,
        }
    }

    /// What a receiver gets for a sent message: the same sections, data body as a batch, plus
    /// the annotations and header the broker adds.
    fn as_received(sent: Message<Data>) -> Message<Body<Value>> {
        Message {
            header: sent.header,
            delivery_annotations: None,
            message_annotations: sent.message_annotations,
            properties: sent.properties,
            application_properties: sent.application_properties,
            body: Body::Data(Batch::new(vec![sent.body])),
            footer: None,
        }
    }

    fn annotate(message: &mut Message<Body<Value>>, key: &str, value: Value) {
        message
            .message_annotations
            .get_or_insert_with(MessageAnnotations::default)
            .insert(OwnedKey::from(key), value);
    }

    fn header(delivery_count: u32) -> Header {
        let mut h = Header::builder().build();
        h.delivery_count = delivery_count;
        h
    }

    #[test]
    fn an_outgoing_message_round_trips_through_amqp() {
        let sent = outgoing();
        let received = received_from_amqp(&as_received(outgoing_to_amqp(&sent).unwrap()));
        assert_eq!(received.message_id, "req-1:0");
        assert_eq!(received.session_id.as_deref(), Some("tenant-a"));
        assert_eq!(received.content_type.as_deref(), Some("application/json"));
        assert_eq!(received.subject.as_deref(), Some("OnboardTenant"));
        assert_eq!(received.correlation_id.as_deref(), Some("req-1"));
        assert_eq!(received.body, sent.body);
        assert_eq!(received.application_properties, sent.application_properties);
        assert_eq!(received.delivery_count, 1);
        assert_eq!(received.dead_letter_reason, None);
    }

    #[test]
    fn the_session_id_travels_as_the_amqp_group_id() {
        let amqp = outgoing_to_amqp(&outgoing()).unwrap();
        let props = amqp.properties.unwrap();
        assert_eq!(props.group_id.as_deref(), Some("tenant-a"));
        assert_eq!(props.message_id, Some(MessageId::String("req-1:0".into())));
        assert_eq!(
            props.correlation_id,
            Some(MessageId::String("req-1".into()))
        );
        assert_eq!(props.subject.as_deref(), Some("OnboardTenant"));
        assert_eq!(
            props
                .content_type
                .map(|s| s.as_str().to_string())
                .as_deref(),
            Some("application/json")
        );
    }

    #[test]
    fn a_message_without_a_session_has_no_group_id() {
        let mut m = outgoing();
        m.session_id = None;
        let amqp = outgoing_to_amqp(&m).unwrap();
        assert_eq!(amqp.properties.unwrap().group_id, None);
        let received = received_from_amqp(&as_received(outgoing_to_amqp(&m).unwrap()));
        assert_eq!(received.session_id, None);
    }

    #[test]
    fn traceparent_is_also_written_as_diagnostic_id() {
        let mut m = outgoing();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        m.application_properties
            .insert(TRACEPARENT.into(), tp.into());
        let amqp = outgoing_to_amqp(&m).unwrap();
        let props = amqp.application_properties.unwrap();
        assert_eq!(
            props.0.get(TRACEPARENT),
            Some(&SimpleValue::String(tp.into()))
        );
        assert_eq!(
            props.0.get(DIAGNOSTIC_ID),
            Some(&SimpleValue::String(tp.into()))
        );
    }

    #[test]
    fn an_explicit_diagnostic_id_is_kept() {
        let mut m = outgoing();
        m.application_properties
            .insert(TRACEPARENT.into(), "00-aa-bb-01".into());
        m.application_properties
            .insert(DIAGNOSTIC_ID.into(), "00-cc-dd-01".into());
        let props = outgoing_to_amqp(&m)
            .unwrap()
            .application_properties
            .unwrap();
        assert_eq!(
            props.0.get(DIAGNOSTIC_ID),
            Some(&SimpleValue::String("00-cc-dd-01".into()))
        );
    }

    #[test]
    fn a_message_without_properties_sends_no_property_section() {
        let mut m = outgoing();
        m.application_properties.clear();
        assert!(
            outgoing_to_amqp(&m)
                .unwrap()
                .application_properties
                .is_none()
        );
    }

    #[test]
    fn the_scheduled_enqueue_time_becomes_the_service_bus_annotation() {
        let mut m = outgoing();
        let at = DateTime::parse_from_rfc3339("2031-02-03T04:05:06.789Z")
            .unwrap()
            .with_timezone(&Utc);
        m.scheduled_enqueue_time = Some(at);
        let amqp = outgoing_to_amqp(&m).unwrap();
        assert_eq!(scheduled_enqueue_time_of(&amqp), Some(at));
        let annotations = amqp.message_annotations.unwrap();
        let (key, value) = annotations.iter().next().unwrap();
        assert!(key_is(key, "x-opt-scheduled-enqueue-time"));
        assert_eq!(
            value,
            &Value::Timestamp(Timestamp::from_milliseconds(at.timestamp_millis()))
        );
    }

    #[test]
    fn an_unscheduled_message_has_no_annotations() {
        let amqp = outgoing_to_amqp(&outgoing()).unwrap();
        assert!(amqp.message_annotations.is_none());
        assert_eq!(scheduled_enqueue_time_of(&amqp), None);
    }

    #[test]
    fn broker_annotations_fill_sequence_number_enqueued_time_and_lock_expiry() {
        let mut m = as_received(outgoing_to_amqp(&outgoing()).unwrap());
        let enqueued = DateTime::parse_from_rfc3339("2030-01-01T00:00:00.250Z")
            .unwrap()
            .with_timezone(&Utc);
        let locked = enqueued + chrono::Duration::seconds(60);
        annotate(&mut m, "x-opt-sequence-number", Value::Long(42));
        annotate(
            &mut m,
            "x-opt-enqueued-time",
            Value::Timestamp(Timestamp::from_milliseconds(enqueued.timestamp_millis())),
        );
        annotate(
            &mut m,
            "x-opt-locked-until",
            Value::Timestamp(Timestamp::from_milliseconds(locked.timestamp_millis())),
        );
        m.header = Some(header(2));
        let r = received_from_amqp(&m);
        assert_eq!(r.sequence_number, 42);
        assert_eq!(r.enqueued_time, enqueued);
        assert_eq!(r.delivery_count, 3, "AMQP counts earlier failed deliveries");
        assert_eq!(locked_until_from_amqp(&m), Some(locked));
    }

    #[test]
    fn the_dead_letter_reason_and_description_leave_the_properties_for_their_fields() {
        let mut m = as_received(outgoing_to_amqp(&outgoing()).unwrap());
        let props = m.application_properties.as_mut().unwrap();
        props.0.insert(
            DEAD_LETTER_REASON.into(),
            SimpleValue::String("InvalidCommand".into()),
        );
        props.0.insert(
            DEAD_LETTER_DESCRIPTION.into(),
            SimpleValue::String("tenant_id: must not be empty".into()),
        );
        let r = received_from_amqp(&m);
        assert_eq!(r.dead_letter_reason.as_deref(), Some("InvalidCommand"));
        assert_eq!(
            r.dead_letter_description.as_deref(),
            Some("tenant_id: must not be empty")
        );
        assert!(!r.application_properties.contains_key(DEAD_LETTER_REASON));
        assert!(
            !r.application_properties
                .contains_key(DEAD_LETTER_DESCRIPTION)
        );
        assert_eq!(
            r.application_properties.get("kind").map(String::as_str),
            Some("OnboardTenant")
        );
    }

    #[test]
    fn non_string_application_properties_are_stringified() {
        let mut m = as_received(outgoing_to_amqp(&outgoing()).unwrap());
        let at = DateTime::parse_from_rfc3339("2030-05-06T07:08:09.010Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = uuid::Uuid::parse_str("6f1c2f1e-8a8f-4c55-9a53-0d3c9e3b1a10").unwrap();
        let props = m.application_properties.as_mut().unwrap();
        props.0.insert("attempt".into(), SimpleValue::Int(3));
        props.0.insert("big".into(), SimpleValue::Ulong(u64::MAX));
        props.0.insert("neg".into(), SimpleValue::Long(-7));
        props.0.insert("flag".into(), SimpleValue::Bool(true));
        props
            .0
            .insert("ratio".into(), SimpleValue::Double(0.5.into()));
        props.0.insert(
            "at".into(),
            SimpleValue::Timestamp(Timestamp::from_milliseconds(at.timestamp_millis())),
        );
        props
            .0
            .insert("id".into(), SimpleValue::Uuid(id.into_bytes().into()));
        props.0.insert(
            "raw".into(),
            SimpleValue::Binary(vec![0xde, 0xad, 0x01].into()),
        );
        props
            .0
            .insert("sym".into(), SimpleValue::Symbol(Symbol::from("x")));
        props.0.insert("none".into(), SimpleValue::Null);
        let r = received_from_amqp(&m).application_properties;
        assert_eq!(r["attempt"], "3");
        assert_eq!(r["big"], u64::MAX.to_string());
        assert_eq!(r["neg"], "-7");
        assert_eq!(r["flag"], "true");
        assert_eq!(r["ratio"], "0.5");
        assert_eq!(r["at"], "2030-05-06T07:08:09.010Z");
        assert_eq!(r["id"], "6f1c2f1e-8a8f-4c55-9a53-0d3c9e3b1a10");
        assert_eq!(r["raw"], "dead01");
        assert_eq!(r["sym"], "x");
        assert_eq!(r["none"], "");
    }

    #[test]
    fn non_string_message_and_correlation_ids_are_read_as_text() {
        let mut m = as_received(outgoing_to_amqp(&outgoing()).unwrap());
        let id = uuid::Uuid::parse_str("00000000-0000-0000-0000-00000000002a").unwrap();
        let props = m.properties.as_mut().unwrap();
        props.message_id = Some(MessageId::Uuid(id.into_bytes().into()));
        props.correlation_id = Some(MessageId::Ulong(42));
        let r = received_from_amqp(&m);
        assert_eq!(r.message_id, id.to_string());
        assert_eq!(r.correlation_id.as_deref(), Some("42"));
    }

    #[test]
    fn bodies_in_several_data_sections_or_as_text_values_are_read() {
        let mut m = as_received(outgoing_to_amqp(&outgoing()).unwrap());
        m.body = Body::Data(Batch::new(vec![
            Data(Binary::from(b"ab".to_vec())),
            Data(Binary::from(b"cd".to_vec())),
        ]));
        assert_eq!(received_from_amqp(&m).body, b"abcd");
        m.body = Body::Value(AmqpValue(Value::String("{\"x\":1}".into())));
        assert_eq!(received_from_amqp(&m).body, b"{\"x\":1}");
        m.body = Body::Value(AmqpValue(Value::Int(5)));
        assert!(received_from_amqp(&m).body.is_empty());
        m.body = Body::Empty;
        assert!(received_from_amqp(&m).body.is_empty());
    }

    #[test]
    fn a_bare_message_reads_with_neutral_values() {
        let m: Message<Body<Value>> = Message {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: None,
            application_properties: None,
            body: Body::Empty,
            footer: None,
        };
        let r = received_from_amqp(&m);
        assert_eq!(r.message_id, "");
        assert_eq!(r.session_id, None);
        assert_eq!(r.sequence_number, 0);
        assert_eq!(r.delivery_count, 1);
        assert_eq!(r.enqueued_time, DateTime::<Utc>::UNIX_EPOCH);
        assert!(r.application_properties.is_empty());
        assert_eq!(locked_until_from_amqp(&m), None);
    }

    #[test]
    fn ids_that_service_bus_would_refuse_are_rejected_before_sending() {
        let mut m = outgoing();
        m.message_id = String::new();
        assert!(matches!(
            outgoing_to_amqp(&m),
            Err(TransportError::Rejected(_))
        ));
        m.message_id = "x".repeat(129);
        let err = outgoing_to_amqp(&m).unwrap_err();
        assert!(err.to_string().contains("at most 128"), "{err}");
        let mut m = outgoing();
        m.session_id = Some(String::new());
        assert!(matches!(
            outgoing_to_amqp(&m),
            Err(TransportError::Rejected(_))
        ));
        m.session_id = Some("t".repeat(128));
        assert!(outgoing_to_amqp(&m).is_ok());
    }

    #[test]
    fn the_emulator_is_recognised_from_its_connection_string() {
        assert!(is_development_emulator(
            "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
        ));
        assert!(is_development_emulator(
            "Endpoint=sb://localhost; usedevelopmentemulator = True"
        ));
        assert!(!is_development_emulator(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=v"
        ));
        assert!(!is_development_emulator(
            "Endpoint=sb://localhost;UseDevelopmentEmulator=false"
        ));
    }

    #[test]
    fn connection_strings_never_reach_debug_output() {
        let auth = ServiceBusAuth::ConnectionString(
            "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=supersecret".into(),
        );
        let settings = ServiceBusSettings::new("x", "q", "t", auth);
        let text = format!("{settings:?}");
        assert!(!text.contains("supersecret"), "{text}");
        assert!(text.contains("redacted"));
    }

    #[test]
    fn settings_name_every_missing_part() {
        let settings =
            ServiceBusSettings::new("", " ", "", ServiceBusAuth::ConnectionString(String::new()));
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("queue name is empty"), "{err}");
        assert!(err.contains("topic name is empty"), "{err}");
        assert!(err.contains("connection string is empty"), "{err}");
    }

    #[test]
    fn lock_and_session_lock_failures_are_lock_lost() {
        for detail in [
            "RemoteClosedWithError(Error { condition: Custom(Symbol(\"com.microsoft:session-lock-lost\")) })",
            "com.microsoft:message-lock-lost: The lock supplied is invalid.",
            "LockTokenNotFound",
        ] {
            assert_eq!(
                failure_kind(detail, false),
                FailureKind::LockLost,
                "{detail}"
            );
        }
    }

    #[test]
    fn missing_entities_unauthorised_principals_and_oversized_messages_are_not_retried() {
        assert_eq!(
            failure_kind(
                "ReceiverAttach(RemoteClosedWithError(Error { condition: AmqpError(NotFound), description: Some(\"The messaging entity 'sb://ns/events/subscriptions/x' could not be found.\") }))",
                false
            ),
            FailureKind::NotFound
        );
        assert_eq!(
            failure_kind(
                "CbsAuth: AmqpError(UnauthorizedAccess) Unauthorized access. 'Listen' claim(s) are required",
                false
            ),
            FailureKind::Unauthorized
        );
        assert_eq!(
            failure_kind(
                "NotAccepted(Rejected(Error { condition: LinkError(MessageSizeExceeded) }))",
                false
            ),
            FailureKind::Rejected
        );
    }

    #[test]
    fn timeouts_busy_servers_dropped_connections_and_token_failures_are_transient() {
        for detail in [
            "Elapsed(())",
            "com.microsoft:server-busy",
            "Io(Kind(ConnectionRefused))",
        ] {
            assert_eq!(
                failure_kind(detail, false),
                FailureKind::Transient,
                "{detail}"
            );
        }
        assert_eq!(
            failure_kind(
                "cannot get a token for https://servicebus.azure.net/.default: not found",
                true
            ),
            FailureKind::Transient
        );
    }

    #[test]
    fn errors_say_what_failed_where_and_what_to_do() {
        let e = to_transport_error(
            FailureKind::NotFound,
            "sending message m1 to commands",
            "ns.servicebus.windows.net",
            "m1",
            "amqp:not-found",
        );
        let text = e.to_string();
        assert!(
            text.contains("ns.servicebus.windows.net") && text.contains("infrastructure"),
            "{text}"
        );
        assert_eq!(e.class(), onboarding_core::ErrorClass::InvalidInput);
        let e = to_transport_error(FailureKind::Unauthorized, "receiving", "ns", "", "401");
        assert!(e.to_string().contains("Azure Service Bus Data Receiver"));
        let e = to_transport_error(
            FailureKind::LockLost,
            "completing message m1",
            "ns",
            "m1",
            "x",
        );
        assert!(matches!(&e, TransportError::LockLost(m) if m == "m1"));
        assert!(to_transport_error(FailureKind::Transient, "x", "ns", "", "busy").is_transient());
    }

    fn auth_failure(class: onboarding_core::ErrorClass) -> azure_core::Error {
        azure_core::Error::new(
            azure_core::error::ErrorKind::Credential,
            onboarding_core::AuthError {
                credential: "workload identity (tenant B)".into(),
                scope: SERVICE_BUS_SCOPE.into(),
                message: "AADSTS70021: No matching federated identity record found".into(),
                class,
            },
        )
    }

    #[test]
    fn a_credential_failure_keeps_the_class_the_credential_gave_it() {
        let permanent = transport_error(
            &auth_failure(onboarding_core::ErrorClass::Permanent),
            "opening an AMQP connection",
            "ns.servicebus.windows.net",
            "",
        );
        assert!(
            matches!(permanent, TransportError::Rejected(_)),
            "{permanent}"
        );
        let text = permanent.to_string();
        assert!(
            text.contains("AADSTS70021") && text.contains("federated credential"),
            "{text}"
        );
        let transient = transport_error(
            &auth_failure(onboarding_core::ErrorClass::Transient),
            "opening an AMQP connection",
            "ns.servicebus.windows.net",
            "",
        );
        assert!(transient.is_transient(), "{transient}");
    }

    #[test]
    fn an_empty_queue_answer_to_accept_next_session_is_not_an_error() {
        assert!(is_no_session_available(
            "ReceiverAttach(RemoteClosedWithError(Error { condition: Custom(Symbol(\"com.microsoft:timeout\")) }))"
        ));
        assert!(is_no_session_available(
            "ReceiverAttach(IncomingSourceIsNone)"
        ));
        assert!(!is_no_session_available("AmqpError(NotFound)"));
    }

    #[test]
    fn counts_are_read_from_the_entity_description() {
        let xml = r#"<entry xmlns="http://www.w3.org/2005/Atom"><title type="text">commands</title><content type="application/xml"><QueueDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><LockDuration>PT1M</LockDuration><MessageCount>12</MessageCount><CountDetails xmlns:d2p1="http://schemas.microsoft.com/netservices/2011/06/servicebus"><d2p1:ActiveMessageCount>7</d2p1:ActiveMessageCount><d2p1:DeadLetterMessageCount>2</d2p1:DeadLetterMessageCount><d2p1:ScheduledMessageCount>3</d2p1:ScheduledMessageCount><d2p1:TransferMessageCount>0</d2p1:TransferMessageCount><d2p1:TransferDeadLetterMessageCount>9</d2p1:TransferDeadLetterMessageCount></CountDetails></QueueDescription></content></entry>"#;
        assert_eq!(
            parse_count_details(xml),
            Some(QueueStats {
                active: 7,
                scheduled: 3,
                locked: 0,
                dead_lettered: 2
            })
        );
    }

    #[test]
    fn a_missing_queue_has_no_counts() {
        let empty_feed = r#"<feed xmlns="http://www.w3.org/2005/Atom"><title type="text">Publicly Listed Services</title></feed>"#;
        assert_eq!(parse_count_details(empty_feed), None);
    }

    #[test]
    fn the_earliest_lock_expiry_wins() {
        let a = DateTime::<Utc>::from_timestamp(100, 0);
        let b = DateTime::<Utc>::from_timestamp(50, 0);
        assert_eq!(earliest(a, b), b);
        assert_eq!(earliest(None, b), b);
        assert_eq!(earliest(a, None), a);
        assert_eq!(earliest(None, None), None);
    }

    #[derive(Debug)]
    struct FixedToken;

    #[async_trait::async_trait]
    impl TokenCredential for FixedToken {
        async fn token(
            &self,
            scope: &str,
        ) -> Result<onboarding_core::AccessToken, onboarding_core::AuthError> {
            if scope != SERVICE_BUS_SCOPE {
                return Err(onboarding_core::AuthError {
                    credential: "fixed".into(),
                    scope: scope.into(),
                    message: "unexpected scope".into(),
                    class: onboarding_core::ErrorClass::Permanent,
                });
            }
            Ok(onboarding_core::AccessToken {
                token: "tok-123".into(),
                expires_on: DateTime::<Utc>::from_timestamp(2_000_000_000, 0).unwrap(),
            })
        }
    }

    #[tokio::test]
    async fn our_credential_serves_azservicebus_tokens_for_the_service_bus_scope() {
        use azure_core::credentials::TokenCredential as _;
        let bridged = AzureCoreCredential::new(Arc::new(FixedToken));
        let token = bridged.get_token(&[SERVICE_BUS_SCOPE], None).await.unwrap();
        assert_eq!(token.token.secret(), "tok-123");
        assert_eq!(token.expires_on.unix_timestamp(), 2_000_000_000);
        let err = bridged
            .get_token(&["https://management.azure.com/.default"], None)
            .await
            .unwrap_err();
        assert!(matches!(
            err.kind(),
            azure_core::error::ErrorKind::Credential
        ));
        assert!(
            err.to_string().contains("unexpected scope")
                || format!("{err:?}").contains("unexpected scope")
        );
    }
}
