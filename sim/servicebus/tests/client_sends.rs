//! What the AMQP client under azservicebus (fe2o3-amqp, built patched from
//! `third_party/fe2o3-amqp`, see `third_party/README.md`) must do with a send, checked against
//! the peer: return when the broker settles at once, and fail when the connection drops with
//! the send in flight. fe2o3-amqp 0.14.1 did neither reliably, and each showed in the worker as
//! the stall of issue #16: a session accept whose token put never returned held a worker idle
//! for the 90 s accept deadline.
//!
//! Touches loopback only.

use std::time::Duration;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::Message;
use fe2o3_amqp::{Connection, Sender, Session};
use servicebus_sim::{PeerConfig, ServiceBusPeer};

const SENDS: usize = 30_000;
/// A send the peer settles within a millisecond that has not returned after this long never
/// will: this tells a hang from a slow machine, it measures no speed.
const NEVER_RETURNS: Duration = Duration::from_secs(10);

/// Start the peer on a runtime of its own thread (so that the client's runtime is idle between
/// sends, as the worker's is); its address, and what keeps it running.
fn peer_on_its_own_runtime() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the peer's runtime");
        runtime.block_on(async move {
            let peer = ServiceBusPeer::start(PeerConfig::default())
                .await
                .expect("start the Service Bus peer");
            let _ = addr_tx.send(peer.addr());
            let _ = stop_rx.await;
        });
    });
    let addr = addr_rx.recv().expect("the peer's address");
    (addr, stop_tx)
}

/// A connection to the peer, a session on it, and a sender attached to its `$cbs` node (which
/// settles every request at once and needs no token), all named `name`.
async fn sender_to_cbs(
    addr: std::net::SocketAddr,
    name: &str,
) -> (ConnectionHandle<()>, SessionHandle<()>, Sender) {
    let mut connection = Connection::open(name.to_string(), format!("amqp://{addr}").as_str())
        .await
        .expect("open a connection to the peer");
    let mut session = Session::begin(&mut connection)
        .await
        .expect("begin a session");
    let sender = Sender::attach(&mut session, name.to_string(), "$cbs")
        .await
        .expect("attach a sender to $cbs");
    (connection, session, sender)
}

/// Send `n` messages one after another to the peer's `$cbs` node (which settles every request
/// at once and needs no token); the index of the first send that never returned.
async fn first_send_that_never_returns(addr: std::net::SocketAddr, n: usize) -> Option<usize> {
    let (mut connection, mut session, mut sender) =
        sender_to_cbs(addr, "immediate-settlement").await;
    let mut hung = None;
    for i in 0..n {
        let message = Message::builder().value(i as u64).build();
        match tokio::time::timeout(NEVER_RETURNS, sender.send(message)).await {
            Ok(outcome) => {
                outcome.expect("the peer accepts the request");
            }
            Err(_) => {
                hung = Some(i);
                break;
            }
        }
    }
    let _ = sender.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    hung
}

/// Service Bus settles sends, and `$cbs` and `$management` requests, within a millisecond.
/// 0.14.1 handed a transfer to its session before it registered the delivery, and the waker of
/// the session's task could be preempted right there (on an idle runtime, waking a parked
/// worker thread often does exactly that); a disposition processed meanwhile found no delivery
/// and was dropped, and the send waited forever. The patch backports the fix of 0.18.2. Without
/// it this test failed 5 of 5 runs; with it, 0 of 6. Four parked worker threads make the
/// preemption that opens the window more likely.
#[test]
fn every_send_the_broker_settles_at_once_returns() {
    let (addr, _peer) = peer_on_its_own_runtime();
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("the client's runtime");
    let hung = client.block_on(first_send_that_never_returns(addr, SENDS));
    assert_eq!(
        hung, None,
        "a send the peer settled at once never returned (of {SENDS} sends)"
    );
}

/// The outcome of a send is resolved only by the broker's disposition. When the connection
/// drops with the send in flight no disposition can come; 0.14.1 waited forever (the session
/// stopped, but the link kept the outcome's sender alive). The patch fails the send once its
/// session has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_in_flight_when_the_connection_drops_fails_instead_of_waiting_forever() {
    let peer = ServiceBusPeer::start(PeerConfig::default())
        .await
        .expect("start the Service Bus peer");
    let (connection, session, mut sender) = sender_to_cbs(peer.addr(), "dropped-in-flight").await;
    peer.faults().leave_next_requests_unanswered(1);
    let send = tokio::spawn(async move {
        let outcome = sender.send(Message::builder().value(1u64).build()).await;
        (outcome.map(|_| ()).map_err(|e| e.to_string()), sender)
    });
    // The request reaches the peer, which leaves it unanswered; then the connection drops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!send.is_finished(), "the peer left the send unanswered");
    peer.faults().drop_connections();
    let (outcome, _sender) = tokio::time::timeout(NEVER_RETURNS, send)
        .await
        .expect("a send whose connection dropped returns")
        .expect("the sending task");
    let err = outcome.expect_err("a send whose connection dropped cannot have succeeded");
    assert!(err.contains("IllegalSessionState"), "{err}");
    drop(session);
    drop(connection);
}
