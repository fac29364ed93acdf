//! The event topic on Service Bus: publishing through the transport's topic sender, and
//! [`ServiceBusSubscription`], a receive-and-delete receiver on a subscription the
//! infrastructure created (never created here).
//!
//! Touches the network through the connection pool (AMQP to the namespace in the settings).

use std::time::Duration;

use azservicebus::{ServiceBusReceiveMode, ServiceBusReceiver, ServiceBusReceiverOptions};

use super::amqp::received_from_amqp;
use super::errors::{
    FailureKind, auth_error_in, error_detail, failure_kind, is_credential_error, transport_error,
};
use super::pool::{ATTACH_WAIT, AttachWait, CLOSE_WAIT, Opened};
use super::transport::ServiceBusTransport;
use crate::{OutgoingMessage, ReceivedMessage, Subscription, Topic, TransportError};

#[async_trait::async_trait]
impl Topic for ServiceBusTransport {
    async fn publish(&self, message: OutgoingMessage) -> Result<(), TransportError> {
        self.send_to(&self.topic_sender, &self.settings.topic, &message)
            .await
    }

    async fn unsubscribe(&self, subscription: &str) -> Result<(), TransportError> {
        // The worker's identities hold Send and Listen only: subscriptions are made and
        // removed by the infrastructure (infra/), never by a reader.
        Err(TransportError::Rejected(format!(
            "subscription {subscription:?} of topic {} is managed by the infrastructure, not removed by readers",
            self.settings.topic
        )))
    }

    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn Subscription>, TransportError> {
        let topic = self.settings.topic.clone();
        let deadline = ATTACH_WAIT.min(self.settings.operation_timeout);
        let what = format!("opening subscription {subscription} of topic {topic}");
        let opened = self
            .pool
            .open_link(AttachWait::AnsweredAtOnce(deadline), |client| {
                let (topic, subscription) = (topic.clone(), subscription.to_string());
                Box::pin(async move {
                    client
                        .create_receiver_for_subscription(
                            topic,
                            subscription,
                            ServiceBusReceiverOptions {
                                receive_mode: ServiceBusReceiveMode::ReceiveAndDelete,
                                ..ServiceBusReceiverOptions::default()
                            },
                        )
                        .await
                })
            })
            .await?;
        let receiver = match opened {
            Opened::Link(receiver) => receiver,
            Opened::TimedOut => {
                return Err(TransportError::Unavailable(format!(
                    "{what} on Service Bus namespace {} got no answer within {deadline:?}; retry",
                    self.ns()
                )));
            }
            Opened::Failed(e) => {
                let (display, debug) = error_detail(&e);
                let kind = failure_kind(&format!("{display} {debug}"), is_credential_error(&e));
                return Err(match kind {
                    FailureKind::NotFound if auth_error_in(&e).is_none() => {
                        TransportError::Rejected(format!(
                            "subscription {subscription} of topic {topic} does not exist on Service Bus namespace {}; \
                         subscriptions are created by the infrastructure, not the worker: \
                         az servicebus topic subscription create --namespace-name <ns> --topic-name {topic} --name {subscription} -g <rg>",
                            self.ns()
                        ))
                    }
                    _ => transport_error(&e, &what, self.ns(), ""),
                });
            }
        };
        Ok(Box::new(ServiceBusSubscription {
            receiver: Some(receiver),
            topic,
            name: subscription.to_string(),
            namespace: self.settings.namespace.clone(),
        }))
    }
}

/// A receive-and-delete receiver on an existing topic subscription.
pub struct ServiceBusSubscription {
    /// Taken by `Drop`, which closes the link.
    receiver: Option<ServiceBusReceiver>,
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

impl Drop for ServiceBusSubscription {
    // A receiver dropped without a detach leaves its link attached on the broker, which goes on
    // handing it (receive-and-delete) events nobody reads, and the next attach on the same
    // connection waits behind it. Close it in the background instead.
    fn drop(&mut self) {
        let Some(receiver) = self.receiver.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = receiver.dispose().await {
                    tracing::debug!(error = %e, "closing a Service Bus subscription receiver");
                }
            });
        }
    }
}

#[async_trait::async_trait]
impl Subscription for ServiceBusSubscription {
    async fn next(
        &mut self,
        max_wait: Duration,
    ) -> Result<Option<ReceivedMessage>, TransportError> {
        let Some(receiver) = self.receiver.as_mut() else {
            return Err(TransportError::Unavailable(format!(
                "subscription {} of topic {} is closed",
                self.name, self.topic
            )));
        };
        // The receive has its own wait, but on a connection that broke under it the timer is
        // all that ends it.
        let message = tokio::time::timeout(
            max_wait + CLOSE_WAIT,
            receiver.receive_message_with_max_wait_time(max_wait),
        )
        .await
        .map_err(|_| {
            TransportError::Unavailable(format!(
                "receiving from subscription {} of topic {} did not return within {:?}",
                self.name,
                self.topic,
                max_wait + CLOSE_WAIT
            ))
        })?
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
