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
    ServiceBusReceivedMessage, ServiceBusReceiver, ServiceBusSessionReceiver,
    ServiceBusSessionReceiverOptions,
};
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use super::amqp::{locked_until_from_amqp, offset_to_chrono, received_from_amqp};
use super::errors::{error_detail, is_dead_connection, is_no_session_available, transport_error};
use super::pool::{AttachWait, CLOSE_WAIT, Opened, Pool, lock};
use super::transport::ServiceBusTransport;
use crate::{Delivery, LockToken, TransportError};

/// After a session is accepted its first message is normally already there; this is how long we
/// wait for it even when the caller's `max_wait` is nearly spent.
pub(super) const FIRST_MESSAGE_WAIT: Duration = Duration::from_secs(5);
/// What a `receive` waits for: an accepted session, none (the broker's wait ended), or an error.
pub(super) type Accepted = Result<Option<ServiceBusSessionReceiver>, TransportError>;

/// Accept the next session on a connection of its own. azservicebus awaits the attach forever
/// (the broker normally answers within its own wait, about a minute), so the attach gets
/// `deadline`: past it the connection is closed, which makes the broker drop the attach (and
/// with it any session it would have locked for nobody), and the caller accepts anew.
async fn accept_next_session(pool: Arc<Pool>, deadline: Duration) -> Accepted {
    let queue = pool.settings.queue.clone();
    let opened = pool
        .open_link(AttachWait::HeldByTheBroker(deadline), |client| {
            let queue = queue.clone();
            Box::pin(async move {
                client
                    .accept_next_session_for_queue(
                        queue,
                        ServiceBusSessionReceiverOptions::default(),
                    )
                    .await
            })
        })
        .await?;
    match opened {
        Opened::Link(receiver) => Ok(Some(receiver)),
        Opened::TimedOut => {
            tracing::warn!(queue = %queue, ?deadline, "accepting a Service Bus session hung; dropped its connection");
            Err(TransportError::Unavailable(format!(
                "accepting the next session on queue {queue} of Service Bus namespace {} got no answer within {deadline:?}; \
                 that connection was dropped and the next receive accepts anew",
                pool.settings.namespace
            )))
        }
        Opened::Failed(e) => {
            let (display, debug) = error_detail(&e);
            if is_no_session_available(&format!("{display} {debug}")) {
                return Ok(None);
            }
            Err(transport_error(
                &e,
                &format!("accepting the next session on queue {queue}"),
                &pool.settings.namespace,
                "",
            ))
        }
    }
}

/// A peek-locked message waiting to be settled.
pub(super) enum Held {
    /// A command: its session stays locked by `receiver` until the message is settled.
    Session {
        receiver: Box<ServiceBusSessionReceiver>,
        message: ServiceBusReceivedMessage,
        /// When the broker releases the session unless it is renewed.
        locked_until: DateTime<Utc>,
    },
    /// A dead-lettered message, settled through the dead-letter receiver that received it.
    DeadLetter {
        message: ServiceBusReceivedMessage,
        locked_until: DateTime<Utc>,
        /// Which dead-letter receiver received it (see [`DeadLetterReceiver`]).
        generation: u64,
    },
    /// Already settled (the entry is on its way out of the map).
    Settled,
}

impl Held {
    fn locked_until(&self) -> Option<DateTime<Utc>> {
        match self {
            Held::Session { locked_until, .. } | Held::DeadLetter { locked_until, .. } => {
                Some(*locked_until)
            }
            Held::Settled => None,
        }
    }
}

/// The shared peek-lock receiver on the dead-letter sub-queue. `generation` changes whenever it
/// is recreated: a message received on an earlier one cannot be settled on this one (fe2o3
/// answers a disposition for a delivery the link does not know with a silent success).
pub(super) struct DeadLetterReceiver {
    pub(super) receiver: ServiceBusReceiver,
    pub(super) generation: u64,
    pub(super) created: tokio::time::Instant,
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

/// The session lock's expiry, when azservicebus could read one that is still ahead: it reads
/// `com.microsoft:locked-until-utc` only as an AMQP timestamp, while the service sends .NET
/// ticks, and then reports a default date long past.
fn usable_session_expiry(receiver: &ServiceBusSessionReceiver) -> Option<DateTime<Utc>> {
    offset_to_chrono!(receiver.session_locked_until()).filter(|at| *at > Utc::now())
}

impl ServiceBusTransport {
    pub(super) fn spawn_accept(&self) -> JoinHandle<Accepted> {
        tokio::spawn(accept_next_session(
            self.pool.clone(),
            self.settings.accept_deadline,
        ))
    }

    /// [`Queue::receive`](crate::Queue::receive): accept the next session (or pick up an accept an
    /// earlier call left running), take one message from it and hold the session until the
    /// message is settled. Returns within `max_wait` plus [`FIRST_MESSAGE_WAIT`] and
    /// [`CLOSE_WAIT`], whatever the broker does: an accept that is still running is left for the
    /// next call (and abandoned at its deadline).
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
        // The receive has its own wait, but on a connection that broke under it the timer is
        // all that ends it.
        let received = tokio::time::timeout(
            wait + CLOSE_WAIT,
            receiver.receive_message_with_max_wait_time(wait),
        )
        .await;
        let message = match received {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => {
                dispose_session(receiver).await;
                return Ok(None);
            }
            Err(_) => {
                dispose_session(receiver).await;
                return Err(TransportError::Unavailable(format!(
                    "receiving from session {session} of queue {} did not return within {:?}",
                    self.settings.queue,
                    wait + CLOSE_WAIT
                )));
            }
            Ok(Err(e)) => {
                let (detail, debug) = error_detail(&e);
                if is_dead_connection(&format!("{detail} {debug}")) {
                    // The session went with its connection before a message was taken:
                    // nothing is held, and the next receive accepts on a new connection.
                    tracing::info!(session.id = %session, error = %detail, "a session's connection dropped before its first message; accepting anew");
                    dispose_session(receiver).await;
                    return Ok(None);
                }
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
        let locked_until = earliest(
            locked_until_from_amqp(message.raw_amqp_message()),
            usable_session_expiry(&receiver),
        )
        .unwrap_or_else(Utc::now);
        let token = lock_token_of(&message);
        tracing::debug!(message.id = %received.message_id, session.id = %session, "received from Service Bus");
        lock(&self.held).insert(
            token.clone(),
            Arc::new(tokio::sync::Mutex::new(Held::Session {
                receiver: Box::new(receiver),
                message,
                locked_until,
            })),
        );
        Ok(Some(Delivery {
            message: received,
            lock: token,
            locked_until,
        }))
    }

    /// Forget a held message whose lock is gone, closing its session receiver (which the broker
    /// has already let go).
    async fn drop_held(&self, token: &LockToken, held: &mut Held) {
        let finished = std::mem::replace(held, Held::Settled);
        lock(&self.held).remove(token);
        if let Held::Session { receiver, .. } = finished {
            dispose_session(*receiver).await;
        }
    }

    /// [`Queue::renew_lock`](crate::Queue::renew_lock): the session lock of a command, the
    /// message lock of a dead-lettered message.
    pub(super) async fn renew_held_lock(
        &self,
        token: &LockToken,
    ) -> Result<DateTime<Utc>, TransportError> {
        let entry = self.held_entry(token)?;
        let mut held = entry.lock().await;
        if held.locked_until().is_some_and(|until| until <= Utc::now()) {
            // The broker has released it already; renewing would only be refused.
            self.drop_held(token, &mut held).await;
            return Err(TransportError::LockLost(format!(
                "with lock {} (expired)",
                token.0
            )));
        }
        // Settling this message waits for the entry this renewal holds, so a renewal stuck on
        // a dropped connection would hold the saga's outcome too.
        let limit = held
            .locked_until()
            .map_or(self.settings.operation_timeout, |until| {
                renewal_limit(until, Utc::now(), self.settings.operation_timeout)
            });
        let result = match &mut *held {
            Held::Settled => Err(TransportError::LockLost(format!("with lock {}", token.0))),
            Held::Session {
                receiver,
                message,
                locked_until,
            } => {
                let id = message
                    .message_id()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let renewed = tokio::time::timeout(limit, receiver.renew_session_lock()).await;
                match renewed {
                    Err(_) => Err(TransportError::Unavailable(format!(
                        "renewing the session lock of message {id} got no answer within {limit:?}"
                    ))),
                    Ok(Err(e)) => Err(transport_error(
                        &e,
                        &format!("renewing the session lock of message {id}"),
                        self.ns(),
                        &id,
                    )),
                    Ok(Ok(())) => match usable_session_expiry(receiver) {
                        Some(until) => {
                            *locked_until = until;
                            Ok(until)
                        }
                        None => Err(TransportError::Unavailable(format!(
                            "the renewed session lock of message {id} has an unreadable expiry"
                        ))),
                    },
                }
            }
            Held::DeadLetter {
                message,
                locked_until,
                generation,
            } => {
                let id = message
                    .message_id()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let mut guard = self.dead_letters.lock().await;
                match guard.as_mut() {
                    Some(dl) if dl.generation == *generation => {
                        let renewed =
                            tokio::time::timeout(limit, dl.receiver.renew_message_lock(message))
                                .await;
                        match renewed {
                            Err(_) => Err(TransportError::Unavailable(format!(
                                "renewing the lock of dead-lettered message {id} got no answer within {limit:?}"
                            ))),
                            Ok(Err(e)) => Err(transport_error(
                                &e,
                                &format!("renewing the lock of dead-lettered message {id}"),
                                self.ns(),
                                &id,
                            )),
                            Ok(Ok(())) => {
                                match locked_until_from_amqp(message.raw_amqp_message()) {
                                    Some(until) => {
                                        *locked_until = until;
                                        Ok(until)
                                    }
                                    None => Err(TransportError::Unavailable(format!(
                                        "the renewed lock of message {id} has no expiry"
                                    ))),
                                }
                            }
                        }
                    }
                    _ => Err(TransportError::LockLost(format!(
                        "{id} (its dead-letter receiver was replaced)"
                    ))),
                }
            }
        };
        if matches!(result, Err(TransportError::LockLost(_))) {
            self.drop_held(token, &mut held).await;
        }
        result
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
    ///
    /// fe2o3-amqp sends a settlement without waiting for the broker's answer, so a settlement
    /// the broker refuses (the lock expired, the link is gone) would look like a success. What
    /// the broker would say is decided here instead: a lock past its expiry is lost, and a
    /// session message whose link failed is lost too (the broker releases a session with its
    /// link). Settling anyway could report a completion that never happened.
    pub(super) async fn settle(
        &self,
        token: &LockToken,
        how: Settle<'_>,
    ) -> Result<(), TransportError> {
        let entry = self.held_entry(token)?;
        let mut held = entry.lock().await;
        if held.locked_until().is_some_and(|until| until <= Utc::now()) {
            self.drop_held(token, &mut held).await;
            return Err(TransportError::LockLost(format!(
                "with lock {} (expired)",
                token.0
            )));
        }
        let limit = self.settings.operation_timeout;
        let (outcome, message_id) = match &mut *held {
            Held::Settled => {
                return Err(TransportError::LockLost(format!("with lock {}", token.0)));
            }
            Held::Session {
                receiver, message, ..
            } => {
                let id = message
                    .message_id()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let r = tokio::time::timeout(limit, async {
                    match &how {
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
                    }
                })
                .await;
                let outcome = match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => {
                        let (detail, _) = error_detail(&e);
                        tracing::warn!(message.id = %id, error = %detail, "settling on a failed session link; the broker has released the session");
                        Err(TransportError::LockLost(format!(
                            "{id} (its session link failed: {detail})"
                        )))
                    }
                    Err(_) => Err(TransportError::LockLost(format!(
                        "{id} (its session link did not answer within {limit:?})"
                    ))),
                };
                (outcome, id)
            }
            Held::DeadLetter {
                message,
                generation,
                ..
            } => {
                let id = message
                    .message_id()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let mut guard = self.dead_letters.lock().await;
                let outcome = match guard.as_mut() {
                    Some(dl) if dl.generation == *generation => {
                        let receiver = &mut dl.receiver;
                        let r = tokio::time::timeout(limit, async {
                            match &how {
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
                            }
                        })
                        .await;
                        match r {
                            Ok(Ok(())) if self.holds_dead_letters_besides(Some(token)) => Ok(()),
                            // Nothing else rides on this link: closing it confirms the
                            // settlement (see `confirm_by_closing`).
                            Ok(Ok(())) => match guard.take() {
                                Some(dl) => confirm_by_closing(dl.receiver, &how, &id).await,
                                None => Ok(()),
                            },
                            Ok(Err(e)) => {
                                // The link failed: recreate it next time; this lock goes with it.
                                let err = transport_error(
                                    &e,
                                    &format!("{} dead-lettered message {id}", how.verb()),
                                    self.ns(),
                                    &id,
                                );
                                if let Some(dl) = guard.take() {
                                    close_receiver(dl.receiver).await;
                                }
                                Err(TransportError::LockLost(format!(
                                    "{id} (the dead-letter link failed: {err})"
                                )))
                            }
                            Err(_) => {
                                if let Some(dl) = guard.take() {
                                    close_receiver(dl.receiver).await;
                                }
                                Err(TransportError::LockLost(format!(
                                    "{id} (the dead-letter link did not answer within {limit:?})"
                                )))
                            }
                        }
                    }
                    _ => Err(TransportError::LockLost(format!(
                        "{id} (its dead-letter receiver was replaced)"
                    ))),
                };
                (outcome, id)
            }
        };
        // Either way this lock is done with: settled, or lost.
        self.drop_held(token, &mut held).await;
        if outcome.is_ok() {
            tracing::debug!(message.id = %message_id, action = how.verb(), "settled on Service Bus");
        }
        outcome
    }
}

/// How long renewing a lock that runs out at `locked_until` may take: no longer than the lock
/// has left (an answer after it ran out is worthless, and a connection gone silent never
/// answers), at least a second, at most the operation timeout.
fn renewal_limit(
    locked_until: DateTime<Utc>,
    now: DateTime<Utc>,
    operation_timeout: Duration,
) -> Duration {
    let left = (locked_until - now).to_std().unwrap_or_default();
    left.max(Duration::from_secs(1)).min(operation_timeout)
}

/// Close the dead-letter receiver just used to settle a message, so that the settlement is
/// known to have reached the broker before the caller hears it succeeded.
///
/// fe2o3-amqp hands a disposition to its session task and returns; a process that ends right
/// after (`producer dlq replay` does) can end before the frame is written, and the original
/// then stays dead-lettered beside its replayed copy. The detach follows the disposition on
/// the same link, and the broker answers it only after reading what came before, so a closed
/// link is a confirmed settlement. A completion or dead-lettering that cannot be confirmed is
/// reported as unknown; an abandon needs no confirmation (closing the link releases the lock
/// anyway).
async fn confirm_by_closing(
    receiver: ServiceBusReceiver,
    how: &Settle<'_>,
    id: &str,
) -> Result<(), TransportError> {
    let closed = tokio::time::timeout(CLOSE_WAIT, receiver.dispose()).await;
    let unconfirmed = match closed {
        Ok(Ok(())) => return Ok(()),
        _ if matches!(how, Settle::Abandon) => return Ok(()),
        Ok(Err(e)) => error_detail(&e).0,
        Err(_) => format!("no answer within {CLOSE_WAIT:?}"),
    };
    Err(TransportError::Unavailable(format!(
        "{} dead-lettered message {id} was sent, but the broker did not confirm it ({unconfirmed}); \
         `producer dlq list` shows whether it is still there",
        how.verb()
    )))
}

/// Close a receiver, or drop it when closing does not finish in [`CLOSE_WAIT`].
pub(super) async fn close_receiver(receiver: ServiceBusReceiver) {
    match tokio::time::timeout(CLOSE_WAIT, receiver.dispose()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "closing a Service Bus receiver"),
        Err(_) => tracing::debug!("closing a Service Bus receiver timed out; dropped it"),
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
    match tokio::time::timeout(CLOSE_WAIT, receiver.dispose()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(session.id = %session, error = %e, "closing a Service Bus session receiver")
        }
        Err(_) => {
            tracing::debug!(session.id = %session, "closing a Service Bus session receiver timed out; dropped it")
        }
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

    #[test]
    fn a_renewal_may_take_what_the_lock_has_left_within_a_second_and_the_operation_timeout() {
        let now = Utc::now();
        let minute = Duration::from_secs(60);
        let in_secs = |s| now + chrono::Duration::seconds(s);
        assert_eq!(
            renewal_limit(in_secs(20), now, minute),
            Duration::from_secs(20)
        );
        assert_eq!(renewal_limit(in_secs(300), now, minute), minute);
        assert_eq!(
            renewal_limit(in_secs(0), now, minute),
            Duration::from_secs(1)
        );
        assert_eq!(
            renewal_limit(in_secs(-5), now, minute),
            Duration::from_secs(1)
        );
    }
}
