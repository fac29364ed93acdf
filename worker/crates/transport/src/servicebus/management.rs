//! Management of the queue beyond sending and receiving commands: the dead-letter sub-queue
//! (peek, peek-lock receive) and the entity counts read from the entity description.
//!
//! Touches the network: AMQP to the namespace for the dead-letter receiver, and HTTPS to the
//! namespace's entity-management endpoint (`GET https://<ns>/<queue>`) for the counts, nothing
//! else. (Scheduled sends need no management call: see `amqp`, the annotation on a normal send.)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use azservicebus::{ServiceBusReceiverOptions, SubQueue};
use chrono::Utc;
use onboarding_core::Classify;

use super::amqp::{locked_until_from_amqp, received_from_amqp};
use super::errors::transport_error;
use super::pool::{ATTACH_WAIT, AttachWait, CLOSE_WAIT, Opened, lock};
use super::sessions::{DeadLetterReceiver, Held, close_receiver, lock_token_of};
use super::settings::ServiceBusAuth;
use super::transport::ServiceBusTransport;
use crate::{Delivery, LockToken, QueueStats, ReceivedMessage, TransportError};

/// Entity-management API version used by the Azure SDKs' administration clients.
const MANAGEMENT_API_VERSION: &str = "2021-05";

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

impl ServiceBusTransport {
    /// The shared peek-lock receiver on the queue's dead-letter sub-queue (which has no
    /// sessions), created on first use and recreated when it failed or has grown older than
    /// `link_max_age` (ahead of the token that authorised it running out: azservicebus refreshes
    /// that token only at its expiry and never retries a failed refresh). Recreating it while
    /// dead letters are held would lose their locks, so an old one is kept while any are.
    pub(super) async fn dead_letter_receiver(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<DeadLetterReceiver>>, TransportError> {
        let mut guard = self.dead_letters.lock().await;
        let too_old = guard
            .as_ref()
            .is_some_and(|dl| dl.created.elapsed() >= self.settings.link_max_age);
        if too_old
            && !self.holds_dead_letters_besides(None)
            && let Some(dl) = guard.take()
        {
            close_receiver(dl.receiver).await;
        }
        if guard.is_none() {
            let what = format!(
                "opening the dead-letter receiver of queue {}",
                self.settings.queue
            );
            let deadline = ATTACH_WAIT.min(self.settings.operation_timeout);
            let opened = self
                .pool
                .open_link(AttachWait::AnsweredAtOnce(deadline), |client| {
                    let queue = self.settings.queue.clone();
                    Box::pin(async move {
                        client
                            .create_receiver_for_queue(
                                queue,
                                ServiceBusReceiverOptions {
                                    sub_queue: SubQueue::DeadLetter,
                                    ..ServiceBusReceiverOptions::default()
                                },
                            )
                            .await
                    })
                })
                .await?;
            let receiver = match opened {
                Opened::Link(receiver) => receiver,
                Opened::Failed(e) => return Err(transport_error(&e, &what, self.ns(), "")),
                Opened::TimedOut => {
                    return Err(TransportError::Unavailable(format!(
                        "{what} got no answer within {deadline:?}; retry"
                    )));
                }
            };
            *guard = Some(DeadLetterReceiver {
                receiver,
                generation: self.dead_letter_generation.fetch_add(1, Ordering::Relaxed),
                created: tokio::time::Instant::now(),
            });
        }
        Ok(guard)
    }

    /// Whether a dead-lettered message (other than `except`) is held on the dead-letter
    /// receiver, whose link must then stay open for it. An entry busy elsewhere counts as one.
    pub(super) fn holds_dead_letters_besides(&self, except: Option<&LockToken>) -> bool {
        lock(&self.held)
            .iter()
            .filter(|(token, _)| Some(*token) != except)
            .any(|(_, entry)| {
                entry
                    .try_lock()
                    .map_or(true, |held| matches!(&*held, Held::DeadLetter { .. }))
            })
    }

    /// [`Queue::peek_dead_letters`](crate::Queue::peek_dead_letters). A failed peek is tried once
    /// more on a new receiver: the likeliest cause is a link the broker closed. (Peeking holds
    /// no lock, so replacing the receiver loses nothing.)
    pub(super) async fn peek_dead_letter_queue(
        &self,
        from_sequence: i64,
        max: usize,
    ) -> Result<Vec<ReceivedMessage>, TransportError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let max = u32::try_from(max).unwrap_or(u32::MAX).min(i32::MAX as u32);
        let mut last_error = None;
        for _ in 0..2 {
            let mut guard = self.dead_letter_receiver().await?;
            let Some(dl) = guard.as_mut() else {
                return Err(TransportError::Unavailable(
                    "no dead-letter receiver; retry".into(),
                ));
            };
            let peeked = tokio::time::timeout(
                self.settings.operation_timeout,
                dl.receiver.peek_messages(max, Some(from_sequence)),
            )
            .await;
            let err = match peeked {
                Ok(Ok(peeked)) => {
                    return Ok(peeked
                        .iter()
                        .map(|m| received_from_amqp(m.raw_amqp_message()))
                        .collect());
                }
                Ok(Err(e)) => transport_error(
                    &e,
                    &format!("peeking the dead-letter queue of {}", self.settings.queue),
                    self.ns(),
                    "",
                ),
                Err(_) => TransportError::Unavailable(format!(
                    "peeking the dead-letter queue of {} got no answer within {:?}",
                    self.settings.queue, self.settings.operation_timeout
                )),
            };
            // Whatever failed, a new link decides: a token that ran out detaches the link with
            // "unauthorized", which a fresh token cures; a real refusal comes back again.
            if let Some(dl) = guard.take() {
                close_receiver(dl.receiver).await;
            }
            last_error = Some(err);
        }
        Err(last_error
            .unwrap_or_else(|| TransportError::Unavailable("peeking dead letters failed".into())))
    }

    /// [`Queue::receive_dead_letter`](crate::Queue::receive_dead_letter).
    pub(super) async fn receive_from_dead_letter_queue(
        &self,
        max_wait: Duration,
    ) -> Result<Option<Delivery>, TransportError> {
        let mut guard = self.dead_letter_receiver().await?;
        let Some(dl) = guard.as_mut() else {
            return Err(TransportError::Unavailable(
                "no dead-letter receiver; retry".into(),
            ));
        };
        let generation = dl.generation;
        let result = tokio::time::timeout(
            max_wait + CLOSE_WAIT,
            dl.receiver.receive_message_with_max_wait_time(max_wait),
        )
        .await;
        let message = match result {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return Ok(None),
            outcome => {
                let err = match outcome {
                    Ok(Err(e)) => transport_error(
                        &e,
                        &format!(
                            "receiving from the dead-letter queue of {}",
                            self.settings.queue
                        ),
                        self.ns(),
                        "",
                    ),
                    _ => TransportError::Unavailable(format!(
                        "receiving from the dead-letter queue of {} did not return within {:?}",
                        self.settings.queue,
                        max_wait + CLOSE_WAIT
                    )),
                };
                // Start over with a new link next time.
                if let Some(dl) = guard.take() {
                    close_receiver(dl.receiver).await;
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
            Arc::new(tokio::sync::Mutex::new(Held::DeadLetter {
                message,
                locked_until,
                generation,
            })),
        );
        Ok(Some(Delivery {
            message: received,
            lock: token,
            locked_until,
        }))
    }

    /// [`Queue::stats`](crate::Queue::stats): the entity description's counts over HTTPS, plus the
    /// deliveries this process holds.
    pub(super) async fn entity_counts(&self) -> Result<QueueStats, TransportError> {
        let ServiceBusAuth::Credential(credential) = &self.settings.auth else {
            return Err(TransportError::Rejected(format!(
                "queue counts of {} are not available over AMQP, and reading them from the entity description needs an Entra credential \
                 (this transport uses a connection string); use the Azure portal or the Service Bus metrics",
                self.settings.queue
            )));
        };
        let token = credential.token(&self.settings.scope).await.map_err(|e| {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
