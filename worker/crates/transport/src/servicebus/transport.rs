//! [`ServiceBusTransport`]: the state shared by the parts (connections, pending accepts, held
//! messages, senders, the dead-letter receiver), connecting and closing, sending, and the
//! [`Queue`] implementation, which hands each operation to `sessions` or `management`.
//!
//! Touches the network through the connection pool (AMQP to the namespace in the settings).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use azservicebus::{ServiceBusMessage, ServiceBusSender, ServiceBusSenderOptions};
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use super::amqp::outgoing_to_amqp;
use super::errors::transport_error;
use super::pool::{CLOSE_WAIT, Client, Pool, close_client, lock};
use super::sessions::{
    Accepted, DeadLetterReceiver, FIRST_MESSAGE_WAIT, Held, Settle, close_receiver, dispose_session,
};
use super::settings::ServiceBusSettings;
use crate::{
    Delivery, LockToken, OutgoingMessage, Queue, QueueStats, ReceivedMessage, SendOutcome,
    TransportError,
};

/// The Service Bus implementation of [`Queue`] and [`Topic`](crate::Topic).
pub struct ServiceBusTransport {
    pub(super) settings: Arc<ServiceBusSettings>,
    /// Connections for receivers (accepts, the dead-letter receiver, subscriptions).
    pub(super) pool: Arc<Pool>,
    /// Opens the senders' connections (one per sender, see [`Sender`]).
    pub(super) send_pool: Arc<Pool>,
    /// Accepts still running after their `receive` call gave up waiting.
    pub(super) pending: StdMutex<VecDeque<JoinHandle<Accepted>>>,
    pub(super) held: StdMutex<HashMap<LockToken, Arc<tokio::sync::Mutex<Held>>>>,
    pub(super) queue_sender: tokio::sync::Mutex<Option<Sender>>,
    pub(super) topic_sender: tokio::sync::Mutex<Option<Sender>>,
    pub(super) dead_letters: tokio::sync::Mutex<Option<DeadLetterReceiver>>,
    pub(super) dead_letter_generation: AtomicU64,
    pub(super) http: reqwest::Client,
}

/// A sender link on a connection of its own, and when it was opened (see `link_max_age`).
/// The connection goes with the link: after a link failed (its token ran out, the socket
/// dropped) azservicebus's recovery on that connection can leave the next attach unanswered, so
/// a new link gets a new connection.
pub(super) struct Sender {
    sender: ServiceBusSender,
    client: Client,
    created: tokio::time::Instant,
}

impl Sender {
    async fn close(self) {
        close_sender(self.sender).await;
        close_client(self.client).await;
    }
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
            max_retries: 0,
            idle: StdMutex::new(Vec::new()),
        });
        let send_pool = Arc::new(Pool {
            settings: settings.clone(),
            max_retries: settings.max_retries,
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
            send_pool,
            pending: StdMutex::new(VecDeque::new()),
            held: StdMutex::new(HashMap::new()),
            queue_sender: tokio::sync::Mutex::new(None),
            topic_sender: tokio::sync::Mutex::new(None),
            dead_letters: tokio::sync::Mutex::new(None),
            dead_letter_generation: AtomicU64::new(0),
            http,
        })
    }

    pub fn settings(&self) -> &ServiceBusSettings {
        &self.settings
    }

    /// The longest a [`Queue::receive`] with `max_wait` can take, whatever the broker or the
    /// network does (a hung attach, a connection that stops answering): for a stuck-receive
    /// check. Past `max_wait` a receive leaves its accept running for the next call, which
    /// abandons it at `accept_deadline`; taking the first message of an accepted session and
    /// closing a broken link have bounds of their own.
    pub fn longest_receive(&self, max_wait: Duration) -> Duration {
        longest_receive(max_wait)
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
                s.close().await;
            }
        }
        if let Some(dl) = self.dead_letters.lock().await.take() {
            close_receiver(dl.receiver).await;
        }
        for pool in [&self.pool, &self.send_pool] {
            let clients: Vec<_> = lock(&pool.idle).drain(..).collect();
            for c in clients {
                close_client(c).await;
            }
        }
    }

    pub(super) fn ns(&self) -> &str {
        &self.settings.namespace
    }

    /// Send on the entity's sender, opening it when there is none or it has reached
    /// `link_max_age`. A send that fails on an existing link, or goes unanswered on any, is
    /// tried once more on a new one: the likeliest cause is a link the broker detached (its
    /// token ran out, the connection dropped or went silent), and a refusal that is real comes
    /// back again from the new link. A retried send that did arrive the first time
    /// is dropped by the entity's duplicate detection (same MessageId).
    pub(super) async fn send_to(
        &self,
        sender: &tokio::sync::Mutex<Option<Sender>>,
        entity: &str,
        message: &OutgoingMessage,
    ) -> Result<(), TransportError> {
        let amqp = outgoing_to_amqp(message)?;
        let mut guard = sender.lock().await;
        if guard
            .as_ref()
            .is_some_and(|s| s.created.elapsed() >= self.settings.link_max_age)
            && let Some(old) = guard.take()
        {
            old.close().await;
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let fresh = guard.is_none();
            if fresh {
                *guard = Some(self.open_sender(entity).await?);
            }
            let Some(s) = guard.as_mut() else {
                return Err(TransportError::Unavailable(format!(
                    "no sender on {entity}; retry"
                )));
            };
            // A send can go unanswered without an error: a connection gone silent without
            // closing (a network partition) ends nothing fe2o3-amqp can see, on a link opened
            // long ago or a moment ago alike. The first try gets a short wait, the try on a new
            // link the full time.
            let limit = match attempts {
                1 => self.settings.operation_timeout.min(SEND_UNANSWERED_WAIT),
                _ => self.settings.operation_timeout,
            };
            let result = tokio::time::timeout(
                limit,
                s.sender
                    .send_message(ServiceBusMessage::from_raw_amqp_message(amqp.clone())),
            )
            .await;
            let (err, unanswered) = match result {
                Ok(Ok(())) => {
                    tracing::debug!(message.id = %message.message_id, session.id = ?message.session_id, entity, "sent to Service Bus");
                    return Ok(());
                }
                Ok(Err(e)) => (
                    transport_error(
                        &e,
                        &format!("sending message {} to {entity}", message.message_id),
                        self.ns(),
                        &message.message_id,
                    ),
                    false,
                ),
                Err(_) => (
                    TransportError::Unavailable(format!(
                        "sending message {} to {entity} on Service Bus namespace {} got no answer within {limit:?}",
                        message.message_id,
                        self.ns(),
                    )),
                    true,
                ),
            };
            // Start over with a new link: this one may be what failed.
            if let Some(old) = guard.take() {
                old.close().await;
            }
            // A refusal on a new link is the broker's answer; silence is a dead connection,
            // worth one more try whatever the link's age.
            if attempts >= 2 || (fresh && !unanswered) {
                return Err(err);
            }
            tracing::debug!(entity, error = %err, "send failed on an existing link; trying a new one");
        }
    }

    async fn open_sender(&self, entity: &str) -> Result<Sender, TransportError> {
        let what = format!("opening a sender on {entity}");
        let limit = self.settings.operation_timeout;
        let mut client = tokio::time::timeout(limit, self.send_pool.connect())
            .await
            .map_err(|_| {
                TransportError::Unavailable(format!("{what}: no connection within {limit:?}"))
            })??;
        let created = tokio::time::timeout(
            limit,
            client.create_sender(entity.to_string(), ServiceBusSenderOptions::default()),
        )
        .await;
        match created {
            Ok(Ok(sender)) => Ok(Sender {
                sender,
                client,
                created: tokio::time::Instant::now(),
            }),
            Ok(Err(e)) => {
                close_client(client).await;
                Err(transport_error(&e, &what, self.ns(), ""))
            }
            Err(_) => {
                close_client(client).await;
                Err(TransportError::Unavailable(format!(
                    "{what} on Service Bus namespace {} got no answer within {limit:?}",
                    self.ns()
                )))
            }
        }
    }
}

/// How long a first try of a send may go unanswered before the send is tried again on a new
/// link. The broker answers a send in milliseconds, and a refusal (busy, throttled) comes back
/// as an answer; silence this long means a connection that is gone.
const SEND_UNANSWERED_WAIT: Duration = Duration::from_secs(10);

/// See [`ServiceBusTransport::longest_receive`].
pub(super) fn longest_receive(max_wait: Duration) -> Duration {
    max_wait + FIRST_MESSAGE_WAIT + 3 * CLOSE_WAIT
}

async fn close_sender(sender: ServiceBusSender) {
    match tokio::time::timeout(CLOSE_WAIT, sender.dispose()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "closing a Service Bus sender"),
        Err(_) => tracing::debug!("closing a Service Bus sender timed out; dropped it"),
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
        self.receive_from_next_session(max_wait).await
    }

    async fn renew_lock(&self, token: &LockToken) -> Result<DateTime<Utc>, TransportError> {
        self.renew_held_lock(token).await
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
        self.peek_dead_letter_queue(from_sequence, max).await
    }

    async fn receive_dead_letter(
        &self,
        max_wait: Duration,
    ) -> Result<Option<Delivery>, TransportError> {
        self.receive_from_dead_letter_queue(max_wait).await
    }

    async fn stats(&self) -> Result<QueueStats, TransportError> {
        self.entity_counts().await
    }
}
