//! [`ServiceBusTransport`]: the state shared by the parts (connections, pending accepts, held
//! messages, senders, the dead-letter receiver), connecting and closing, sending, and the
//! [`Queue`] implementation, which hands each operation to `sessions` or `management`.
//!
//! Touches the network through the connection pool (AMQP to the namespace in the settings).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use azservicebus::{
    ServiceBusMessage, ServiceBusReceiver, ServiceBusSender, ServiceBusSenderOptions,
};
use chrono::{DateTime, Utc};
use onboarding_core::Classify;
use tokio::task::JoinHandle;

use super::amqp::outgoing_to_amqp;
use super::errors::transport_error;
use super::pool::{Pool, lock};
use super::sessions::{Accepted, Held, Settle, dispose_session};
use super::settings::ServiceBusSettings;
use crate::{
    Delivery, LockToken, OutgoingMessage, Queue, QueueStats, ReceivedMessage, SendOutcome,
    TransportError,
};

/// The Service Bus implementation of [`Queue`] and [`Topic`](crate::Topic).
pub struct ServiceBusTransport {
    pub(super) settings: Arc<ServiceBusSettings>,
    pub(super) pool: Arc<Pool>,
    /// Accepts still running after their `receive` call gave up waiting.
    pub(super) pending: StdMutex<VecDeque<JoinHandle<Accepted>>>,
    pub(super) held: StdMutex<HashMap<LockToken, Arc<tokio::sync::Mutex<Held>>>>,
    pub(super) queue_sender: tokio::sync::Mutex<Option<ServiceBusSender>>,
    pub(super) topic_sender: tokio::sync::Mutex<Option<ServiceBusSender>>,
    pub(super) dead_letters: tokio::sync::Mutex<Option<ServiceBusReceiver>>,
    pub(super) http: reqwest::Client,
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

    pub(super) fn ns(&self) -> &str {
        &self.settings.namespace
    }

    pub(super) async fn send_to(
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
