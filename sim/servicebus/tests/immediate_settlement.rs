//! A send the broker settles at once must return. Service Bus settles sends, and `$cbs` and
//! `$management` requests, within a millisecond. fe2o3-amqp 0.14.1 handed a transfer to its
//! session before it registered the delivery, and the waker of the session's task could be
//! preempted right there (on an idle runtime, waking a parked worker thread often does exactly
//! that); a disposition processed meanwhile found no delivery and was dropped, and the send
//! waited forever. In the worker this was the stall of issue #16: a session accept whose token
//! put never returned held a worker idle for the 90 s accept deadline.
//!
//! The workspace patches fe2o3-amqp with the fix of 0.18.2 (`third_party/README.md`). Without
//! it this test failed 5 of 5 runs; with it, 0 of 6.
//!
//! Touches loopback only. The peer runs on a runtime of its own so that the client's runtime is
//! idle between sends, as the worker's is: every send then wakes a parked thread, and more
//! parked threads (four) make the preemption that opens the window more likely.

use std::time::Duration;

use fe2o3_amqp::types::messaging::Message;
use fe2o3_amqp::{Connection, Sender, Session};
use servicebus_sim::{PeerConfig, ServiceBusPeer};

const SENDS: usize = 30_000;
/// A send the peer settles within a millisecond that has not returned after this long never
/// will: this tells a hang from a slow machine, it measures no speed.
const NEVER_RETURNS: Duration = Duration::from_secs(10);

/// Start the peer on a runtime of its own thread; its address, and what keeps it running.
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

/// Send `n` messages one after another to the peer's `$cbs` node (which settles every request
/// at once and needs no token); the index of the first send that never returned.
async fn first_send_that_never_returns(addr: std::net::SocketAddr, n: usize) -> Option<usize> {
    let mut connection =
        Connection::open("immediate-settlement", format!("amqp://{addr}").as_str())
            .await
            .expect("open a connection to the peer");
    let mut session = Session::begin(&mut connection)
        .await
        .expect("begin a session");
    let mut sender = Sender::attach(&mut session, "immediate-settlement", "$cbs")
        .await
        .expect("attach a sender to $cbs");
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
