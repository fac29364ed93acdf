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
//!   open until a session frees up or its own wait passes, and azservicebus awaits it with no
//!   limit. A `receive` whose `max_wait` runs out leaves its accept running and the next
//!   `receive` call picks it up; an accept that has not finished within
//!   [`ServiceBusSettings::accept_deadline`] is taken for hung: its connection is closed (so the
//!   broker drops the attach rather than lock a session for nobody) and the next receive
//!   accepts anew. A `receive` therefore returns within
//!   [`ServiceBusTransport::longest_receive`], whatever the broker does.
//! - **Settlement is checked here.** fe2o3-amqp sends a settlement without waiting for the
//!   broker's answer, and azservicebus "recovers" a failed receiver by re-attaching it, after
//!   which settling an earlier message reports success for nothing. So receivers get no
//!   azservicebus retries, a lock past its expiry is `LockLost` without asking the broker, and a
//!   session message whose link failed is `LockLost` (the broker released the session with its
//!   link; the message comes back).
//! - **Links are renewed.** azservicebus refreshes a link's token only at its expiry and never
//!   retries a failed refresh: senders and the dead-letter receiver are recreated after
//!   [`ServiceBusSettings::link_max_age`], and a send or peek that fails on an existing link is
//!   tried once more on a new one, as is a send left unanswered for 10 s on any link (its
//!   connection went silent).
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
//!
//! # Layout
//!
//! This module only declares the parts and re-exports their public items:
//! - `settings`: [`ServiceBusSettings`], [`ServiceBusAuth`] and the credential bridge (pure);
//! - `amqp`: message <-> AMQP mapping (pure);
//! - `errors`: what an azservicebus failure means, as a [`TransportError`] (pure);
//! - `pool`: the AMQP connections;
//! - `sessions`: accepting sessions (with a deadline), holding, renewing and settling
//!   peek-locked messages;
//! - `management`: the dead-letter queue and the entity counts (HTTPS);
//! - `transport`: [`ServiceBusTransport`], which ties them together and implements [`Queue`];
//! - `topic`: [`Topic`] and the subscription receiver.
//!
//! The parts may use each other's `pub(super)` items; nothing outside `servicebus` sees them.

mod amqp;
mod errors;
mod management;
mod pool;
mod sessions;
mod settings;
mod topic;
mod transport;

pub use amqp::{
    application_properties_to_map, locked_until_from_amqp, outgoing_to_amqp, received_from_amqp,
    scheduled_enqueue_time_of, simple_value_to_string,
};
pub use errors::{FailureKind, failure_kind, is_no_session_available};
pub use management::parse_count_details;
pub use settings::{
    AzureCoreCredential, ServiceBusAuth, ServiceBusSettings, is_development_emulator,
};
pub use topic::ServiceBusSubscription;
pub use transport::ServiceBusTransport;

#[cfg(doc)]
use crate::{
    LockToken, OutgoingMessage, Queue, ReceivedMessage, SendOutcome, Topic, TransportError,
};

/// Entra scope of the Service Bus data plane.
pub const SERVICE_BUS_SCOPE: &str = "https://servicebus.azure.net/.default";
/// W3C trace context, as the runner sets it.
pub const TRACEPARENT: &str = "traceparent";
/// The property Azure SDKs read trace context from on Service Bus messages.
pub const DIAGNOSTIC_ID: &str = "Diagnostic-Id";
/// Application properties the broker sets on dead-lettered messages.
pub const DEAD_LETTER_REASON: &str = "DeadLetterReason";
pub const DEAD_LETTER_DESCRIPTION: &str = "DeadLetterErrorDescription";
