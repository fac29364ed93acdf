//! The Service Bus transport through the wire faults of `servicebus-sim`: a hung session accept,
//! a dropped connection, refused tokens, tokens that run out early. Each test starts its own
//! peer on loopback and checks what the worker relies on: a receive returns in bounded time, no
//! message is lost or settled twice, and the transport recovers without being recreated.
//!
//! Touches loopback only.

use std::time::Duration;

use onboarding_transport::servicebus::{ServiceBusAuth, ServiceBusSettings, ServiceBusTransport};
use onboarding_transport::{Delivery, OutgoingMessage, Queue, Topic, TransportError};
use servicebus_sim::{EntityConfig, PeerConfig, ServiceBusPeer, TopicConfig};
use tokio::time::Instant;

const QUEUE: &str = "tenant-commands";
const WAIT: Duration = Duration::from_millis(500);

async fn start_peer() -> ServiceBusPeer {
    ServiceBusPeer::start(PeerConfig {
        queues: vec![
            EntityConfig::queue(QUEUE)
                .with_sessions()
                .lock_duration(Duration::from_secs(5))
                .duplicate_detection(Duration::from_secs(600)),
        ],
        session_wait: Duration::from_secs(2),
        ..PeerConfig::default()
    })
    .await
    .expect("start the Service Bus peer")
}

async fn connect(peer: &ServiceBusPeer, accept_deadline: Duration) -> ServiceBusTransport {
    let mut settings = ServiceBusSettings::new(
        "servicebus-sim",
        QUEUE,
        "tenant-events",
        ServiceBusAuth::ConnectionString(peer.connection_string()),
    );
    settings.operation_timeout = Duration::from_secs(5);
    settings.accept_deadline = accept_deadline;
    ServiceBusTransport::connect(settings)
        .await
        .expect("connect to the peer")
}

fn command(id: &str, session: &str) -> OutgoingMessage {
    OutgoingMessage {
        message_id: id.to_string(),
        session_id: Some(session.to_string()),
        body: id.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Receive until a delivery arrives or `within` passes, checking that every single receive
/// returns within the transport's stated bound (what the runner's stuck check relies on).
/// Errors are returned to the loop, as the runner would back off and call again.
async fn next_delivery(sb: &ServiceBusTransport, within: Duration) -> Option<Delivery> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let started = Instant::now();
        let got = sb.receive(WAIT).await;
        let took = started.elapsed();
        assert!(
            took <= sb.longest_receive(WAIT),
            "a receive took {took:?}, more than the {:?} the transport promises",
            sb.longest_receive(WAIT)
        );
        match got {
            Ok(Some(d)) => return Some(d),
            Ok(None) => {}
            Err(e) => {
                eprintln!("receive failed (the runner would back off): {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    None
}

#[tokio::test]
async fn a_hung_session_accept_is_abandoned_after_its_deadline_and_the_next_message_is_received() {
    let peer = start_peer().await;
    let sb = connect(&peer, Duration::from_secs(2)).await;
    peer.faults().hang_next_receiver_attaches(1);
    sb.send(command("hung-1", "tenant-a")).await.expect("send");
    let started = Instant::now();
    let d = next_delivery(&sb, Duration::from_secs(15))
        .await
        .expect("the message arrives once the hung accept is abandoned");
    assert_eq!(peer.faults().hung_attaches(), 1, "the fault was hit");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the message cannot have come before the hung accept's deadline"
    );
    assert_eq!(d.message.message_id, "hung-1");
    assert_eq!(
        d.message.delivery_count, 1,
        "the hung accept never delivered it"
    );
    sb.complete(&d.lock).await.expect("complete");
    assert_eq!(peer.counts(QUEUE), Some((0, 0, 0)));
    sb.close().await;
}

#[tokio::test]
async fn a_dropped_connection_mid_stream_loses_no_message_and_settles_none_twice() {
    let peer = start_peer().await;
    let sb = connect(&peer, Duration::from_secs(10)).await;
    sb.send(command("drop-1", "tenant-a"))
        .await
        .expect("send 1");
    let first = next_delivery(&sb, Duration::from_secs(10))
        .await
        .expect("the first delivery");
    peer.faults().drop_connections();
    // Let the client see the socket close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = sb
        .complete(&first.lock)
        .await
        .expect_err("the session went with the connection: completing cannot succeed");
    assert!(matches!(err, TransportError::LockLost(_)), "{err}");
    // Sending works on a new connection.
    sb.send(command("drop-2", "tenant-b"))
        .await
        .expect("send after the drop");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let d = next_delivery(&sb, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("only {seen:?} arrived after the drop"));
        if d.message.message_id == "drop-1" {
            assert_eq!(
                d.message.delivery_count, 2,
                "the message whose lock went with the connection comes back"
            );
        }
        sb.complete(&d.lock).await.expect("complete");
        seen.push(d.message.message_id.clone());
    }
    seen.sort();
    assert_eq!(seen, ["drop-1", "drop-2"], "each message exactly once");
    assert_eq!(peer.counts(QUEUE), Some((0, 0, 0)), "nothing left behind");
    assert!(
        next_delivery(&sb, Duration::from_secs(1)).await.is_none(),
        "nothing comes back after being completed"
    );
    sb.close().await;
}

/// A broker restart or a load balancer's reset closes idle connections too; azservicebus
/// notices only on their next use. The transport opens the link on a new connection then, so
/// the runner's next receive (and a reader's next subscribe) does not fail for it.
#[tokio::test]
async fn after_the_broker_drops_every_connection_the_next_receive_and_subscribe_succeed_at_once() {
    let peer = ServiceBusPeer::start(PeerConfig {
        queues: vec![
            EntityConfig::queue(QUEUE)
                .with_sessions()
                .lock_duration(Duration::from_secs(5)),
        ],
        topics: vec![TopicConfig {
            name: "tenant-events".into(),
            duplicate_window: None,
            subscriptions: vec![EntityConfig::queue("readers")],
        }],
        session_wait: Duration::from_secs(1),
        ..PeerConfig::default()
    })
    .await
    .expect("start the Service Bus peer");
    let sb = connect(&peer, Duration::from_secs(10)).await;
    // Connections in the pool: one accept that found nothing, one subscription opened and closed.
    assert!(next_delivery(&sb, Duration::from_secs(2)).await.is_none());
    drop(
        sb.subscribe("readers")
            .await
            .expect("subscribe before the drop"),
    );
    sb.send(command("after-drop", "tenant-a"))
        .await
        .expect("send before the drop");

    peer.faults().drop_connections();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let d = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match sb.receive(WAIT).await {
                Ok(Some(d)) => break d,
                Ok(None) => {}
                Err(e) => panic!("a receive after the drop failed: {e}"),
            }
        }
    })
    .await
    .expect("the message arrives after the drop");
    assert_eq!(d.message.message_id, "after-drop");
    sb.complete(&d.lock).await.expect("complete");
    sb.subscribe("readers")
        .await
        .expect("subscribing after the drop succeeds at the first call");
    assert_eq!(peer.counts(QUEUE), Some((0, 0, 0)));
    sb.close().await;
}

#[tokio::test]
async fn a_refused_token_fails_receives_quickly_and_recovers_once_tokens_are_accepted_again() {
    let peer = start_peer().await;
    let sb = connect(&peer, Duration::from_secs(10)).await;
    sb.send(command("token-1", "tenant-a")).await.expect("send");
    peer.faults().refuse_tokens_for(Duration::from_secs(600));
    let started = Instant::now();
    let refused = sb.receive(WAIT).await;
    assert!(
        started.elapsed() <= sb.longest_receive(WAIT),
        "a refused receive must fail fast, took {:?}",
        started.elapsed()
    );
    assert!(
        !matches!(refused, Ok(Some(_))),
        "nothing can be received with a refused token: {refused:?}"
    );
    peer.faults().accept_tokens();
    let d = next_delivery(&sb, Duration::from_secs(15))
        .await
        .expect("the message arrives once tokens are accepted");
    assert_eq!(d.message.message_id, "token-1");
    sb.complete(&d.lock).await.expect("complete");
    sb.send(command("token-2", "tenant-b"))
        .await
        .expect("sending works again");
    sb.close().await;
}

#[tokio::test]
async fn a_sender_whose_token_lifetime_is_short_keeps_sending_past_it() {
    let peer = start_peer().await;
    let sb = connect(&peer, Duration::from_secs(10)).await;
    peer.faults()
        .limit_token_lifetime(Some(Duration::from_secs(1)));
    for n in 0..3 {
        sb.send(command(&format!("short-{n}"), &format!("tenant-{n}")))
            .await
            .unwrap_or_else(|e| panic!("send {n} failed: {e}"));
        // Past the token's lifetime: the broker detaches the sender before the next send.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    peer.faults().limit_token_lifetime(None);
    assert_eq!(
        peer.counts(QUEUE),
        Some((3, 0, 0)),
        "every send arrived once"
    );
    sb.close().await;
}

/// A connection can go silent with a send in flight right after its link was opened, and
/// nothing then answers that send. The first send of a transport, on a brand-new link, goes
/// unanswered here: it is tried again on a new link after a short wait and arrives once, instead
/// of failing after the whole operation timeout (which held a saga's progress event, and the
/// saga, for 60 s).
#[tokio::test]
async fn a_send_left_unanswered_on_a_new_link_is_sent_again_on_another_and_arrives_once() {
    let peer = start_peer().await;
    let sb = connect(&peer, Duration::from_secs(10)).await;
    peer.faults().leave_next_sends_unanswered(1);
    sb.send(command("unanswered-1", "tenant-u"))
        .await
        .expect("a send the broker left unanswered succeeds on a new link");
    assert_eq!(
        peer.counts(QUEUE),
        Some((1, 0, 0)),
        "the message arrived once"
    );
    let d = next_delivery(&sb, Duration::from_secs(10))
        .await
        .expect("the message is received");
    assert_eq!(d.message.message_id, "unanswered-1");
    sb.complete(&d.lock).await.expect("complete");
    sb.close().await;
}

/// The service answers an accept of the next session after its wait when no session is free
/// (`com.microsoft:timeout`); the transport then reports an empty queue and accepts anew, rather
/// than sitting on a link the broker has given up until the transport's own deadline.
#[tokio::test]
async fn an_accept_that_finds_no_session_ends_at_the_brokers_wait_not_at_the_transports_deadline() {
    let peer = ServiceBusPeer::start(PeerConfig {
        queues: vec![EntityConfig::queue(QUEUE).with_sessions()],
        session_wait: Duration::from_secs(1),
        ..PeerConfig::default()
    })
    .await
    .expect("start the Service Bus peer");
    // A deadline well inside the receive's wait: an accept the broker never answered would
    // end there, as an error.
    let sb = connect(&peer, Duration::from_secs(5)).await;
    for _ in 0..2 {
        let got = sb
            .receive(Duration::from_secs(20))
            .await
            .expect("an empty queue is not an error");
        assert!(got.is_none());
    }
    sb.send(command("late", "tenant-late")).await.expect("send");
    let d = next_delivery(&sb, Duration::from_secs(10))
        .await
        .expect("a message sent after idle accepts is received");
    assert_eq!(d.message.message_id, "late");
    sb.complete(&d.lock).await.expect("complete");
    sb.close().await;
}
