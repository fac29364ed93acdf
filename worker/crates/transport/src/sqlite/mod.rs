//! Embedded SQLite transport: one file holding a command queue with Service Bus semantics and an
//! event topic, safe for several processes at once.
//!
//! This module may touch only its own SQLite file (and create the file's parent directories).
//!
//! # Semantics (those of Azure Service Bus)
//!
//! - **Peek-lock.** `receive` locks one message until `now + lock_duration` and hands out a fresh
//!   lock token. `complete` deletes it, `abandon` releases the lock, `dead_letter` moves it to the
//!   dead-letter queue, `renew_lock` pushes the lock out again. A token that is unknown, expired or
//!   already used is [`TransportError::LockLost`].
//! - **Lock expiry** makes the message deliverable again; every delivery increments its
//!   `delivery_count`. A message whose count would exceed `max_delivery_count` is dead-lettered
//!   with reason `MaxDeliveryCountExceeded` instead of being delivered.
//! - **Sessions.** While any message of a session is locked the whole session is held: no other
//!   message of it is delivered. Within a session messages are delivered in sequence order.
//! - **Scheduled enqueue.** A message with `scheduled_enqueue_time` is invisible until then.
//! - **Duplicate detection.** A `message_id` already sent within `duplicate_detection_window` is
//!   dropped and reported as [`SendOutcome::Duplicate`]. A zero window turns detection off. A
//!   message sent with an empty id gets a fresh UUID (so it is never a duplicate).
//! - **Topic.** `publish` appends an event; a subscription sees every event published after it was
//!   created, in order, and `next` is receive-and-delete (the subscription's cursor advances in the
//!   same transaction that reads the event). Events every subscription has passed are deleted.
//!   There is no duplicate detection on the topic: consumers deduplicate by event id.
//!
//! Every time (now, lock expiry, schedule, duplicate window) is read from the injected
//! [`Clock`] and stored as integer milliseconds since the Unix epoch, so tests can move time.
//! Waiting in `receive(max_wait)` and `next(max_wait)` is real time: the file is polled every
//! [`POLL_INTERVAL`], and a send from the same `SqliteTransport` (or a clone) wakes waiters at once.
//!
//! # Several processes on one file
//!
//! The database runs in WAL mode with `synchronous=FULL` (a committed send survives a power cut,
//! not only a crash) and a busy timeout; every state change is one `BEGIN IMMEDIATE` transaction,
//! so two processes can never both lock one message or both hold one session. WAL needs shared
//! memory between the processes: keep the file on a local file system, not a network share.
//! Sequence numbers come from `AUTOINCREMENT` inside those serialised transactions, so they are
//! never reused and their order is commit order (a subscription's cursor never skips an event).
//! All SQLite work runs on tokio's blocking pool, never on the async runtime's threads; a
//! `receive` cancelled while its blocking part runs may still lock a message, which then comes
//! back when the lock expires (as with a lost network reply on Service Bus).
//!
//! [`QueueStats`] partitions the live messages: `active` are due and unlocked (some may wait
//! behind a held session), `scheduled` are not yet due, `locked` are held by a receiver.
//!
//! # Layout
//!
//! This module only declares the parts and re-exports their public items:
//! - `transport`: [`SqliteTransport`] and its options: opening the file, running SQL on the
//!   blocking pool, waiting for messages;
//! - `schema`: the connection settings, the tables, and how rows map to messages;
//! - `queue`: the [`Queue`] implementation and its SQL;
//! - `topic`: the [`Topic`] implementation, [`SqliteSubscription`] and their SQL;
//! - `tests`: unit tests of the SQL, driven on a bare connection without a runtime.
//!
//! The parts may use each other's `pub(super)` items; nothing outside `sqlite` sees them.

use std::time::Duration;

mod queue;
mod schema;
mod topic;
mod transport;

#[cfg(test)]
mod tests;

pub use topic::SqliteSubscription;
pub use transport::{SqliteTransport, SqliteTransportOptions};

#[cfg(doc)]
use crate::{Queue, QueueStats, SendOutcome, Topic, TransportError};
#[cfg(doc)]
use onboarding_core::Clock;

/// How often a waiting receiver looks at the file for messages sent by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Reason code of messages dead-lettered for too many deliveries (the Service Bus code).
pub const MAX_DELIVERY_COUNT_EXCEEDED: &str = "MaxDeliveryCountExceeded";
