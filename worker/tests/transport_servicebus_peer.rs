//! The Service Bus transport against `servicebus-sim`, an AMQP 1.0 peer on loopback that behaves
//! as Microsoft's Python SDK says the service does. Runs everywhere (no broker, no Docker, no
//! credentials): the shared transport conformance suite through the real [`ServiceBusTransport`],
//! plus the differences Service Bus is allowed (silent duplicate detection).
//!
//! Touches loopback only: each test starts its own peer on a free port and drops it at the end.
//!
//! The suite is written for any queue, Service Bus is stricter in two documented ways, and the
//! test adapter ([`PeerQueue`]) bridges them without touching what the transport does:
//! - the commands queue is session-enabled and the transport refuses a message without a
//!   session id, so a conformance message without one is sent in a session of its own (its
//!   message id);
//! - `stats()` is refused with a connection string (AMQP has no counts), so the adapter reads
//!   them from the peer, and topic subscriptions are created by the infrastructure, so the
//!   adapter creates them in the peer before the transport opens them.
//!
//! `transport_servicebus_faults.rs` runs the transport through the peer's wire faults.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use onboarding_testkit::transport_conformance::ConformanceEnv;
use onboarding_transport::servicebus::{ServiceBusAuth, ServiceBusSettings, ServiceBusTransport};
use onboarding_transport::{
    Delivery, LockToken, OutgoingMessage, Queue, QueueStats, ReceivedMessage, SendOutcome,
    Subscription, Topic, TransportError,
};
use servicebus_sim::{EntityConfig, PeerConfig, ServiceBusPeer, TopicConfig};

const QUEUE: &str = "tenant-commands";
const TOPIC: &str = "tenant-events";
/// Short, so lock expiry and renewal properties run in seconds.
const LOCK: Duration = Duration::from_secs(2);
const MAX_DELIVERIES: u32 = 3;

async fn start_peer() -> ServiceBusPeer {
    ServiceBusPeer::start(PeerConfig {
        queues: vec![
            EntityConfig::queue(QUEUE)
                .with_sessions()
                .lock_duration(LOCK)
                .max_delivery_count(MAX_DELIVERIES)
                .duplicate_detection(Duration::from_secs(600)),
        ],
        topics: vec![TopicConfig {
            name: TOPIC.into(),
            duplicate_window: None,
            subscriptions: Vec::new(),
        }],
        // The service holds an accept of the next session about a minute; shorter keeps
        // idle accepts turning over during the tests.
        session_wait: Duration::from_secs(3),
        ..PeerConfig::default()
    })
    .await
    .expect("start the Service Bus peer")
}

async fn connect(peer: &ServiceBusPeer) -> ServiceBusTransport {
    connect_to(peer.connection_string()).await
}

async fn connect_to(connection_string: String) -> ServiceBusTransport {
    let mut settings = ServiceBusSettings::new(
        "servicebus-sim",
        QUEUE,
        TOPIC,
        ServiceBusAuth::ConnectionString(connection_string),
    );
    settings.operation_timeout = Duration::from_secs(10);
    ServiceBusTransport::connect(settings)
        .await
        .expect("connect to the peer")
}

/// [`ServiceBusTransport`] as the conformance suite expects a queue to look; see the module doc
/// for the two things it bridges.
#[derive(Debug)]
struct PeerQueue {
    transport: ServiceBusTransport,
    peer: Arc<ServiceBusPeer>,
}

#[async_trait::async_trait]
impl Queue for PeerQueue {
    async fn send(&self, mut message: OutgoingMessage) -> Result<SendOutcome, TransportError> {
        if message.session_id.is_none() {
            message.session_id = Some(message.message_id.clone());
        }
        self.transport.send(message).await
    }

    async fn receive(&self, max_wait: Duration) -> Result<Option<Delivery>, TransportError> {
        self.transport.receive(max_wait).await
    }

    async fn renew_lock(&self, lock: &LockToken) -> Result<DateTime<Utc>, TransportError> {
        self.transport.renew_lock(lock).await
    }

    async fn complete(&self, lock: &LockToken) -> Result<(), TransportError> {
        self.transport.complete(lock).await
    }

    async fn abandon(&self, lock: &LockToken) -> Result<(), TransportError> {
        self.transport.abandon(lock).await
    }

    async fn dead_letter(
        &self,
        lock: &LockToken,
        reason: &str,
        description: &str,
    ) -> Result<(), TransportError> {
        self.transport.dead_letter(lock, reason, description).await
    }

    async fn peek_dead_letters(
        &self,
        from_sequence: i64,
        max: usize,
    ) -> Result<Vec<ReceivedMessage>, TransportError> {
        self.transport.peek_dead_letters(from_sequence, max).await
    }

    async fn receive_dead_letter(
        &self,
        max_wait: Duration,
    ) -> Result<Option<Delivery>, TransportError> {
        self.transport.receive_dead_letter(max_wait).await
    }

    async fn stats(&self) -> Result<QueueStats, TransportError> {
        let (active, scheduled, dead_lettered) = self
            .peer
            .counts(QUEUE)
            .ok_or_else(|| TransportError::Rejected(format!("the peer has no queue {QUEUE}")))?;
        Ok(QueueStats {
            active: active as u64,
            scheduled: scheduled as u64,
            locked: 0,
            dead_lettered: dead_lettered as u64,
        })
    }
}

#[async_trait::async_trait]
impl Topic for PeerQueue {
    async fn publish(&self, message: OutgoingMessage) -> Result<(), TransportError> {
        self.transport.publish(message).await
    }

    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn Subscription>, TransportError> {
        self.peer
            .create_subscription(TOPIC, EntityConfig::queue(subscription).lock_duration(LOCK));
        self.transport.subscribe(subscription).await
    }

    async fn unsubscribe(&self, subscription: &str) -> Result<(), TransportError> {
        self.transport.unsubscribe(subscription).await
    }
}

mod conformance {
    use super::*;

    async fn env() -> ConformanceEnv {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let peer = Arc::new(start_peer().await);
        let transport = connect(&peer).await;
        let queue = Arc::new(PeerQueue {
            transport,
            peer: peer.clone(),
        });
        ConformanceEnv::new(queue.clone(), queue, LOCK, MAX_DELIVERIES).keeping(peer)
    }

    // Every property but `a_duplicate_message_id_is_dropped`: Service Bus drops a duplicate
    // silently, so `send` cannot answer `Duplicate` (see the test below).
    onboarding_testkit::transport_conformance_tests!(optional (|| async { Some(env().await) });
        a_received_message_keeps_its_body_properties_subject_and_session,
        a_completed_message_is_not_delivered_again,
        an_abandoned_message_is_redelivered_with_its_delivery_count_incremented,
        a_message_whose_lock_expires_is_redelivered,
        renewing_a_lock_keeps_the_message_locked_past_its_first_expiry,
        settling_with_a_stale_lock_is_lock_lost,
        a_held_session_goes_to_no_second_receiver_while_other_sessions_do,
        messages_of_one_session_are_delivered_in_send_order,
        a_scheduled_message_is_invisible_until_it_is_due,
        a_message_past_the_max_delivery_count_is_dead_lettered_with_the_reason,
        a_dead_lettered_message_keeps_its_reason_description_and_content,
        completing_a_dead_letter_delivery_removes_it_and_abandoning_returns_it,
        every_subscription_gets_every_event_in_order,
        a_subscription_created_after_a_publish_does_not_see_it,
        a_reopened_subscription_resumes_after_the_last_event_it_read,
    );
}

#[tokio::test]
async fn a_duplicate_message_id_is_accepted_and_dropped_without_a_second_delivery() {
    let peer = start_peer().await;
    let sb = connect(&peer).await;
    let id = format!("dup-{}", uuid::Uuid::new_v4().simple());
    let message = |body: &[u8]| OutgoingMessage {
        message_id: id.clone(),
        session_id: Some("tenant-dup".into()),
        body: body.to_vec(),
        ..Default::default()
    };
    for body in [b"first", b"again"] {
        let outcome = sb.send(message(body)).await.expect("send");
        assert_eq!(outcome, SendOutcome::Accepted, "duplicates are silent");
    }
    let d = sb
        .receive(Duration::from_secs(5))
        .await
        .expect("receive")
        .expect("the first copy arrives");
    assert_eq!(d.message.body, b"first");
    sb.complete(&d.lock).await.expect("complete");
    assert!(
        sb.receive(Duration::from_secs(1))
            .await
            .expect("receive")
            .is_none(),
        "the duplicate must not be delivered"
    );
    assert_eq!(peer.counts(QUEUE), Some((0, 0, 0)));
    sb.close().await;
}

/// `producer dlq delete` and `dlq replay` complete a dead letter and end. fe2o3-amqp writes a
/// disposition from a task of its own, so a process that ends right after `complete` returned
/// could take the frame with it, and the message stayed dead-lettered (beside its replayed copy).
/// Each completion here runs in a runtime of its own, dropped as a process would end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_completed_just_before_its_process_ends_is_removed_for_good() {
    const MESSAGES: usize = 4;
    let peer = start_peer().await;
    let sb = connect(&peer).await;
    for i in 0..MESSAGES {
        sb.send(OutgoingMessage {
            message_id: format!("dl-exit-{i}-{}", uuid::Uuid::new_v4().simple()),
            session_id: Some("tenant-dl-exit".into()),
            body: b"{}".to_vec(),
            ..Default::default()
        })
        .await
        .expect("send");
        let d = sb
            .receive(Duration::from_secs(5))
            .await
            .expect("receive")
            .expect("the message arrives");
        sb.dead_letter(&d.lock, "Test", "dead-lettered to be deleted")
            .await
            .expect("dead-letter");
    }
    sb.close().await;
    assert_eq!(peer.counts(QUEUE), Some((0, 0, MESSAGES)));

    for left in (0..MESSAGES).rev() {
        let connection_string = peer.connection_string();
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the short-lived process");
            runtime.block_on(async {
                let sb = connect_to(connection_string).await;
                let d = sb
                    .receive_dead_letter(Duration::from_secs(5))
                    .await
                    .expect("receive a dead letter")
                    .expect("a dead letter is there");
                sb.complete(&d.lock)
                    .await
                    .expect("complete the dead letter");
            });
            // The runtime ends here, with whatever its tasks had not written yet.
        })
        .await
        .expect("the short-lived process");
        assert_eq!(
            peer.counts(QUEUE),
            Some((0, 0, left)),
            "a completed dead letter must be gone once `complete` has returned"
        );
    }
}
