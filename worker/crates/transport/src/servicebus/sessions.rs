//! Sessions and peek-locked messages: accepting the next session, taking one message from it,
//! holding the session receiver (keyed by the lock token) until the message is settled, renewing
//! the lock, and settling (complete, abandon, dead-letter) commands and dead-lettered messages.
//!
//! Touches the network through the connection pool and the receivers only (AMQP to the
//! namespace); shares the transport's state (`pending`, `held`, the dead-letter receiver).

use std::sync::Arc;
use std::time::Duration;

use azservicebus::receiver::DeadLetterOptions;
use azservicebus::{
    ServiceBusReceivedMessage, ServiceBusSessionReceiver, ServiceBusSessionReceiverOptions,
};
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use super::amqp::{locked_until_from_amqp, offset_to_chrono, received_from_amqp};
use super::errors::{error_detail, is_no_session_available, transport_error};
use super::pool::{Pool, lock};
use super::transport::ServiceBusTransport;
use crate::{Delivery, LockToken, TransportError};

/// After a session is accepted its first message is normally already there; this is how long we
/// wait for it even when the caller's `max_wait` is nearly spent.
const FIRST_MESSAGE_WAIT: Duration = Duration::from_secs(5);

/// What a `receive` waits for: an accepted session, none (the broker's wait ended), or an error.
pub(super) type Accepted = Result<Option<ServiceBusSessionReceiver>, TransportError>;

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

/// A peek-locked message waiting to be settled.
pub(super) enum Held {
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

pub(super) enum Settle<'a> {
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

impl ServiceBusTransport {
    pub(super) fn spawn_accept(&self) -> JoinHandle<Accepted> {
        tokio::spawn(accept_next_session(self.pool.clone()))
    }

    /// [`Queue::receive`](crate::Queue::receive): accept the next session (or pick up an accept an
    /// earlier call left running), take one message from it and hold the session until the
    /// message is settled.
    pub(super) async fn receive_from_next_session(
        &self,
        max_wait: Duration,
    ) -> Result<Option<Delivery>, TransportError> {
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

    /// [`Queue::renew_lock`](crate::Queue::renew_lock): the session lock of a command, the
    /// message lock of a dead-lettered message.
    pub(super) async fn renew_held_lock(
        &self,
        token: &LockToken,
    ) -> Result<DateTime<Utc>, TransportError> {
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

    pub(super) fn held_entry(
        &self,
        token: &LockToken,
    ) -> Result<Arc<tokio::sync::Mutex<Held>>, TransportError> {
        lock(&self.held)
            .get(token)
            .cloned()
            .ok_or_else(|| TransportError::LockLost(format!("with lock {}", token.0)))
    }

    /// Complete, abandon or dead-letter a held message, then let its session go.
    pub(super) async fn settle(
        &self,
        token: &LockToken,
        how: Settle<'_>,
    ) -> Result<(), TransportError> {
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

pub(super) fn dead_letter_options(reason: &str, description: &str) -> DeadLetterOptions {
    DeadLetterOptions {
        dead_letter_reason: Some(reason.to_string()),
        dead_letter_error_description: Some(description.to_string()),
        properties_to_modify: None,
    }
}

/// Closing the session receiver releases the session lock for the next receiver.
pub(super) async fn dispose_session(receiver: ServiceBusSessionReceiver) {
    let session = receiver.session_id().to_string();
    if let Err(e) = receiver.dispose().await {
        tracing::debug!(session.id = %session, error = %e, "closing a Service Bus session receiver");
    }
}

pub(super) fn lock_token_of(message: &ServiceBusReceivedMessage) -> LockToken {
    LockToken(uuid::Uuid::from_bytes(*message.lock_token().as_inner()).to_string())
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_lock_expiry_wins() {
        let a = DateTime::<Utc>::from_timestamp(100, 0);
        let b = DateTime::<Utc>::from_timestamp(50, 0);
        assert_eq!(earliest(a, b), b);
        assert_eq!(earliest(None, b), b);
        assert_eq!(earliest(a, None), a);
        assert_eq!(earliest(None, None), None);
    }
}
