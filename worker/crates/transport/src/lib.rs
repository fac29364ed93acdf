//! The transport: a command queue with Service Bus semantics and an event topic.
//!
//! The worker and the producer only ever talk to these traits. The embedded default is a SQLite
//! file ([`sqlite`]); production is Azure Service Bus. Both must pass the same conformance suite
//! (`onboarding_testkit::transport_conformance`), and [`envelope`] is the one mapping of commands,
//! continuations and events to messages.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use onboarding_core::{Classify, ErrorClass};

pub mod envelope;
pub mod servicebus;
pub mod sqlite;

/// A message to put on the queue or the topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutgoingMessage {
    /// Duplicate-detection key: a second message with the same id inside the window is dropped.
    pub message_id: String,
    /// Messages of one session are delivered to one receiver at a time, in order.
    pub session_id: Option<String>,
    pub content_type: Option<String>,
    /// Service Bus `Subject` (label), e.g. the command or event type.
    pub subject: Option<String>,
    pub correlation_id: Option<String>,
    pub body: Vec<u8>,
    pub application_properties: BTreeMap<String, String>,
    /// Not visible to receivers before this time.
    pub scheduled_enqueue_time: Option<DateTime<Utc>>,
}

/// A message as a receiver sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub session_id: Option<String>,
    pub content_type: Option<String>,
    pub subject: Option<String>,
    pub correlation_id: Option<String>,
    pub body: Vec<u8>,
    pub application_properties: BTreeMap<String, String>,
    /// Unique and increasing per entity, assigned at enqueue.
    pub sequence_number: i64,
    /// How many times this message has been handed out (1 on first delivery).
    pub delivery_count: u32,
    pub enqueued_time: DateTime<Utc>,
    /// Set on messages in the dead-letter queue.
    pub dead_letter_reason: Option<String>,
    pub dead_letter_description: Option<String>,
}

/// Opaque handle to settle a locked message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LockToken(pub String);

/// A peek-locked message: the holder must settle it before `locked_until` or renew the lock.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: ReceivedMessage,
    pub lock: LockToken,
    pub locked_until: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Accepted,
    /// Same MessageId seen within the duplicate-detection window: dropped.
    Duplicate,
}

/// Counts for readiness, tests and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Visible now (scheduled time reached).
    pub active: u64,
    /// Scheduled for later.
    pub scheduled: u64,
    /// Currently locked by a receiver.
    pub locked: u64,
    pub dead_lettered: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the transport is unreachable or busy: {0}; retry shortly")]
    Unavailable(String),
    #[error(
        "the lock on message {0} was lost (expired or already settled); the message will be redelivered"
    )]
    LockLost(String),
    #[error("message rejected by the transport: {0}")]
    Rejected(String),
    #[error("transport storage failed: {0}")]
    Storage(String),
}

impl Classify for TransportError {
    fn class(&self) -> ErrorClass {
        match self {
            TransportError::Unavailable(_) | TransportError::Storage(_) => ErrorClass::Transient,
            TransportError::LockLost(_) => ErrorClass::Permanent,
            TransportError::Rejected(_) => ErrorClass::InvalidInput,
        }
    }
}

/// The command queue.
#[async_trait::async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// Enqueue now, or at `scheduled_enqueue_time`.
    async fn send(&self, message: OutgoingMessage) -> Result<SendOutcome, TransportError>;

    /// Peek-lock the next visible message whose session nobody else holds, waiting up to
    /// `max_wait`. While the message is locked its whole session is held by this receiver.
    /// A message past the max delivery count is dead-lettered instead of delivered.
    async fn receive(&self, max_wait: Duration) -> Result<Option<Delivery>, TransportError>;

    async fn renew_lock(&self, lock: &LockToken) -> Result<DateTime<Utc>, TransportError>;
    /// Remove the message for good.
    async fn complete(&self, lock: &LockToken) -> Result<(), TransportError>;
    /// Give the message back for redelivery (its delivery count stays incremented).
    async fn abandon(&self, lock: &LockToken) -> Result<(), TransportError>;
    /// Move the message to the dead-letter queue with a reason code and a description.
    async fn dead_letter(
        &self,
        lock: &LockToken,
        reason: &str,
        description: &str,
    ) -> Result<(), TransportError>;

    /// Look at dead-lettered messages without locking them, from `from_sequence` on.
    async fn peek_dead_letters(
        &self,
        from_sequence: i64,
        max: usize,
    ) -> Result<Vec<ReceivedMessage>, TransportError>;
    /// Peek-lock the next dead-lettered message; `complete` removes it, `abandon` puts it back.
    async fn receive_dead_letter(
        &self,
        max_wait: Duration,
    ) -> Result<Option<Delivery>, TransportError>;

    async fn stats(&self) -> Result<QueueStats, TransportError>;
}

/// The event topic: every subscription gets every message published after it was created.
#[async_trait::async_trait]
pub trait Topic: Send + Sync + std::fmt::Debug {
    async fn publish(&self, message: OutgoingMessage) -> Result<(), TransportError>;
    /// Open (creating if needed) a durable named subscription.
    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn Subscription>, TransportError>;
    /// Remove a subscription a reader created for itself, and what it has not read: a durable
    /// subscription left behind keeps every later event. Removing one that does not exist is
    /// success. Where subscriptions belong to the infrastructure (Service Bus), refused.
    async fn unsubscribe(&self, subscription: &str) -> Result<(), TransportError>;
}

#[async_trait::async_trait]
pub trait Subscription: Send + std::fmt::Debug {
    /// Receive-and-delete the next event for this subscription, waiting up to `max_wait`.
    async fn next(&mut self, max_wait: Duration)
    -> Result<Option<ReceivedMessage>, TransportError>;
}
