//! The namespace: entities configured at start (queues, topics and their subscriptions), the
//! address forms clients use for them, duplicate detection, sending into an entity, and the
//! broker annotations Service Bus stamps on what it delivers.
//!
//! No I/O: state behind one mutex, and a [`Notify`] that wakes links waiting for messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::{
    ApplicationProperties, Body, Header, Message, MessageAnnotations, MessageId,
};
use fe2o3_amqp_types::primitives::{SimpleValue, Symbol, Timestamp, Value};
use tokio::sync::Notify;

use crate::faults::Faults;
use crate::queue::{QueueConfig, QueueState, Stored};

pub type Msg = Message<Body<Value>>;

/// A queue, or a subscription of a topic (then `name` is the subscription's name).
#[derive(Debug, Clone)]
pub struct EntityConfig {
    pub name: String,
    pub requires_session: bool,
    pub lock_duration: Duration,
    pub max_delivery_count: u32,
    /// Duplicate detection by MessageId within this window (queues; `None`: off).
    pub duplicate_window: Option<Duration>,
}

impl EntityConfig {
    /// Service Bus defaults: no sessions, 60 s locks, 10 deliveries, no duplicate detection.
    pub fn queue(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            requires_session: false,
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 10,
            duplicate_window: None,
        }
    }

    pub fn with_sessions(mut self) -> Self {
        self.requires_session = true;
        self
    }

    pub fn lock_duration(mut self, d: Duration) -> Self {
        self.lock_duration = d;
        self
    }

    pub fn max_delivery_count(mut self, n: u32) -> Self {
        self.max_delivery_count = n;
        self
    }

    pub fn duplicate_detection(mut self, window: Duration) -> Self {
        self.duplicate_window = Some(window);
        self
    }
}

#[derive(Debug, Clone)]
pub struct TopicConfig {
    pub name: String,
    pub duplicate_window: Option<Duration>,
    pub subscriptions: Vec<EntityConfig>,
}

/// What a link address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Lower-cased entity path: `queue`, `topic`, `topic/subscriptions/sub`.
    pub entity: String,
    pub dead_letter: bool,
    pub management: bool,
}

/// `amqp://host:port/queue`, `sb://host/Topic/Subscriptions/Sub/$DeadLetterQueue`, `queue`,
/// `queue/$management`: the path after the host, lower-cased (entity names are
/// case-insensitive in Service Bus).
pub fn parse_address(address: &str) -> Address {
    let path = match address.find("://") {
        Some(i) => {
            let rest = &address[i + 3..];
            rest.find('/').map(|j| &rest[j + 1..]).unwrap_or("")
        }
        None => address,
    };
    let mut path = path.trim_matches('/').to_ascii_lowercase();
    let mut dead_letter = false;
    let mut management = false;
    if let Some(p) = path.strip_suffix("/$management") {
        management = true;
        path = p.to_string();
    }
    if let Some(p) = path.strip_suffix("/$deadletterqueue") {
        dead_letter = true;
        path = p.to_string();
    }
    Address {
        entity: path,
        dead_letter,
        management,
    }
}

#[derive(Debug)]
struct Topic {
    subscriptions: Vec<String>,
    duplicate_window: Option<chrono::Duration>,
}

#[derive(Debug, Default)]
pub struct State {
    pub queues: HashMap<String, QueueState<Msg>>,
    topics: HashMap<String, Topic>,
    /// Entity -> MessageId -> when it was first accepted.
    seen: HashMap<String, HashMap<String, DateTime<Utc>>>,
    windows: HashMap<String, chrono::Duration>,
}

/// The shared broker: entities, faults, and the wake-up for waiting links.
#[derive(Debug)]
pub struct Broker {
    state: Mutex<State>,
    pub changed: Notify,
    pub faults: Faults,
    pub max_message_size: u64,
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn queue_of(path: String, c: &EntityConfig) -> QueueState<Msg> {
    QueueState::new(
        path,
        QueueConfig {
            requires_session: c.requires_session,
            lock_duration: chrono_of(c.lock_duration),
            max_delivery_count: c.max_delivery_count.max(1),
        },
    )
}

/// Why a message was not accepted into an entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendRefusal {
    NotFound,
    /// A message without a session id on a session entity (`amqp:not-allowed`).
    NeedsSession,
}

impl Broker {
    pub fn new(
        queues: &[EntityConfig],
        topics: &[TopicConfig],
        max_message_size: u64,
    ) -> Arc<Self> {
        let mut state = State::default();
        for q in queues {
            let path = q.name.to_ascii_lowercase();
            if let Some(w) = q.duplicate_window {
                state.windows.insert(path.clone(), chrono_of(w));
            }
            state.queues.insert(path.clone(), queue_of(path, q));
        }
        for t in topics {
            let topic = t.name.to_ascii_lowercase();
            let mut subscriptions = Vec::new();
            for s in &t.subscriptions {
                let path = format!("{topic}/subscriptions/{}", s.name.to_ascii_lowercase());
                state.queues.insert(path.clone(), queue_of(path.clone(), s));
                subscriptions.push(path);
            }
            state.topics.insert(
                topic,
                Topic {
                    subscriptions,
                    duplicate_window: t.duplicate_window.map(chrono_of),
                },
            );
        }
        Arc::new(Self {
            state: Mutex::new(state),
            changed: Notify::new(),
            faults: Faults::default(),
            max_message_size,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn exists(&self, entity: &str) -> bool {
        let s = self.lock();
        s.queues.contains_key(entity) || s.topics.contains_key(entity)
    }

    pub fn is_topic(&self, entity: &str) -> bool {
        self.lock().topics.contains_key(entity)
    }

    /// Accept a message into a queue or topic. Duplicates (same MessageId within the
    /// window) are accepted and dropped, as Service Bus does.
    pub fn send(
        &self,
        entity: &str,
        message: Msg,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, SendRefusal> {
        let mut s = self.lock();
        let topic = s
            .topics
            .get(entity)
            .map(|t| (t.subscriptions.clone(), t.duplicate_window));
        let targets: Vec<String> = if let Some((subscriptions, window)) = topic {
            if let Some(w) = window {
                s.windows.insert(entity.to_string(), w);
            }
            subscriptions
        } else if s.queues.contains_key(entity) {
            vec![entity.to_string()]
        } else {
            return Err(SendRefusal::NotFound);
        };
        let message_id = message
            .properties
            .as_ref()
            .and_then(|p| p.message_id.as_ref())
            .map(message_id_text);
        let session_id = message.properties.as_ref().and_then(|p| p.group_id.clone());
        if s.queues
            .get(entity)
            .is_some_and(|q| q.config.requires_session)
            && session_id.is_none()
        {
            return Err(SendRefusal::NeedsSession);
        }
        if let (Some(window), Some(id)) = (s.windows.get(entity).copied(), message_id.clone()) {
            let seen = s.seen.entry(entity.to_string()).or_default();
            seen.retain(|_, at| *at + window > now);
            if seen.contains_key(&id) {
                return Ok(Vec::new());
            }
            seen.insert(id, now);
        }
        let scheduled = scheduled_time(&message);
        let mut numbers = Vec::new();
        for path in targets {
            if let Some(q) = s.queues.get_mut(&path) {
                numbers.push(q.enqueue(
                    message.clone(),
                    message_id.clone(),
                    session_id.clone(),
                    scheduled,
                    now,
                ));
            }
        }
        drop(s);
        self.changed.notify_waiters();
        Ok(numbers)
    }

    /// Add a subscription to an existing topic, as the infrastructure would while the namespace
    /// runs; it sees only what is published from now on. False when the topic does not exist;
    /// an existing subscription of that name is kept as it is.
    pub fn create_subscription(&self, topic: &str, subscription: &EntityConfig) -> bool {
        let topic = topic.to_ascii_lowercase();
        let path = format!(
            "{topic}/subscriptions/{}",
            subscription.name.to_ascii_lowercase()
        );
        let mut s = self.lock();
        if !s.topics.contains_key(&topic) {
            return false;
        }
        if !s.queues.contains_key(&path) {
            s.queues
                .insert(path.clone(), queue_of(path.clone(), subscription));
            if let Some(t) = s.topics.get_mut(&topic) {
                t.subscriptions.push(path);
            }
        }
        true
    }

    /// Expire every lock of every entity now.
    pub fn expire_all_locks(&self, now: DateTime<Utc>) {
        for q in self.lock().queues.values_mut() {
            q.expire_all_locks(now);
        }
        self.changed.notify_waiters();
    }
}

pub fn message_id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid::Uuid::from_bytes(*u.as_inner()).to_string(),
        MessageId::Binary(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

fn scheduled_time(message: &Msg) -> Option<DateTime<Utc>> {
    let v = message
        .message_annotations
        .as_ref()?
        .get(
            &OwnedKey::Symbol(Symbol::from("x-opt-scheduled-enqueue-time"))
                as &dyn fe2o3_amqp_types::messaging::annotations::AnnotationKey,
        )?;
    match v {
        Value::Timestamp(t) => DateTime::<Utc>::from_timestamp_millis(t.milliseconds()),
        _ => None,
    }
}

pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp::from_milliseconds(at.timestamp_millis())
}

/// The message as Service Bus delivers it: the header's delivery count, and the broker's
/// annotations and, for dead letters, the reason and description properties.
pub fn to_wire(m: &Stored<Msg>, peek_lock: bool) -> Msg {
    let mut out = m.body.clone();
    let header = out.header.get_or_insert_with(Header::default);
    header.delivery_count = m.delivery_count;
    let annotations = out
        .message_annotations
        .get_or_insert_with(|| MessageAnnotations(Default::default()));
    let mut put = |k: &str, v: Value| {
        annotations.0.insert(OwnedKey::Symbol(Symbol::from(k)), v);
    };
    put("x-opt-sequence-number", Value::Long(m.sequence_number));
    put(
        "x-opt-enqueued-time",
        Value::Timestamp(timestamp(m.enqueued_at)),
    );
    if let Some(at) = m.scheduled_at {
        put(
            "x-opt-scheduled-enqueue-time",
            Value::Timestamp(timestamp(at)),
        );
    }
    if peek_lock && let Some(lock) = &m.lock {
        put(
            "x-opt-locked-until",
            Value::Timestamp(timestamp(lock.until)),
        );
    }
    if let Some(dl) = &m.dead_letter {
        put("x-opt-deadletter-source", Value::String(dl.source.clone()));
        let props = out
            .application_properties
            .get_or_insert_with(ApplicationProperties::default);
        if let Some(r) = &dl.reason {
            props
                .0
                .insert("DeadLetterReason".into(), SimpleValue::String(r.clone()));
        }
        if let Some(d) = &dl.description {
            props.0.insert(
                "DeadLetterErrorDescription".into(),
                SimpleValue::String(d.clone()),
            );
        }
    }
    out
}
