//! The embedded SQLite transport against real files: the transport conformance suite, two
//! transports on one file (as two processes would open it), and a hand-moved clock for lock
//! expiry, scheduling and the duplicate window without sleeping.

// Helpers outside #[test] functions unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use onboarding_core::{Clock, SystemClock};
use onboarding_testkit::transport_conformance::ConformanceEnv;
use onboarding_transport::sqlite::{SqliteTransport, SqliteTransportOptions};
use onboarding_transport::{
    OutgoingMessage, Queue, QueueStats, SendOutcome, Topic, TransportError,
};

const LOCK: Duration = Duration::from_secs(1);
const MAX_DELIVERIES: u32 = 3;

async fn sqlite_env() -> ConformanceEnv {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteTransportOptions {
        lock_duration: LOCK,
        max_delivery_count: MAX_DELIVERIES,
        ..Default::default()
    };
    let transport = Arc::new(
        SqliteTransport::open(&dir.path().join("queue.db"), options, Arc::new(SystemClock))
            .unwrap(),
    );
    ConformanceEnv::new(transport.clone(), transport, LOCK, MAX_DELIVERIES).keeping(dir)
}

onboarding_testkit::transport_conformance_tests!(sqlite_env);

// ---------------------------------------------------------------------------------------------
// A clock the test moves by hand.

#[derive(Debug)]
struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(
            Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
        )))
    }
    fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += chrono::Duration::from_std(d).unwrap();
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
    async fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}

fn open(path: &Path, options: SqliteTransportOptions, clock: Arc<dyn Clock>) -> SqliteTransport {
    SqliteTransport::open(path, options, clock).unwrap()
}

fn with_manual_clock(
    options: SqliteTransportOptions,
) -> (tempfile::TempDir, Arc<ManualClock>, SqliteTransport) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let t = open(&dir.path().join("queue.db"), options, clock.clone());
    (dir, clock, t)
}

fn msg(id: &str) -> OutgoingMessage {
    OutgoingMessage {
        message_id: id.into(),
        body: id.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// Fake-clock tests: no sleeping, exact boundaries.

#[tokio::test]
async fn a_lock_expires_exactly_one_lock_duration_after_delivery_on_the_transport_clock() {
    let lock = Duration::from_secs(30);
    let (_dir, clock, q) = with_manual_clock(SqliteTransportOptions {
        lock_duration: lock,
        ..Default::default()
    });
    q.send(msg("m")).await.unwrap();
    let first = q.receive(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(
        first.locked_until,
        clock.now() + chrono::Duration::seconds(30)
    );
    assert_eq!(first.message.delivery_count, 1);
    assert!(q.receive(Duration::ZERO).await.unwrap().is_none());
    clock.advance(lock - ms(1));
    assert!(
        q.receive(Duration::ZERO).await.unwrap().is_none(),
        "still locked 1 ms before expiry"
    );
    clock.advance(ms(1));
    let second = q.receive(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(second.message.message_id, "m");
    assert_eq!(second.message.delivery_count, 2);
    assert!(matches!(
        q.complete(&first.lock).await,
        Err(TransportError::LockLost(_))
    ));
    q.complete(&second.lock).await.unwrap();
    assert_eq!(q.stats().await.unwrap(), QueueStats::default());
}

#[tokio::test]
async fn an_expired_lock_cannot_settle_even_before_redelivery() {
    let (_dir, clock, q) = with_manual_clock(SqliteTransportOptions {
        lock_duration: Duration::from_secs(30),
        ..Default::default()
    });
    q.send(msg("m")).await.unwrap();
    let d = q.receive(Duration::ZERO).await.unwrap().unwrap();
    clock.advance(Duration::from_secs(30));
    for result in [
        q.complete(&d.lock).await,
        q.abandon(&d.lock).await,
        q.renew_lock(&d.lock).await.map(|_| ()),
    ] {
        assert!(matches!(result, Err(TransportError::LockLost(_))));
    }
    assert_eq!(q.stats().await.unwrap().active, 1);
}

#[tokio::test]
async fn renewing_extends_the_lock_from_the_time_of_renewal() {
    let (_dir, clock, q) = with_manual_clock(SqliteTransportOptions {
        lock_duration: Duration::from_secs(30),
        ..Default::default()
    });
    q.send(msg("m")).await.unwrap();
    let d = q.receive(Duration::ZERO).await.unwrap().unwrap();
    clock.advance(Duration::from_secs(20));
    let until = q.renew_lock(&d.lock).await.unwrap();
    assert_eq!(until, clock.now() + chrono::Duration::seconds(30));
    clock.advance(Duration::from_secs(20));
    assert!(
        q.receive(Duration::ZERO).await.unwrap().is_none(),
        "the renewed lock still holds 40 s after delivery"
    );
    q.complete(&d.lock).await.unwrap();
}

#[tokio::test]
async fn a_scheduled_message_becomes_visible_when_the_clock_reaches_its_time() {
    let (_dir, clock, q) = with_manual_clock(SqliteTransportOptions::default());
    let due = clock.now() + chrono::Duration::hours(1);
    let mut m = msg("later");
    m.scheduled_enqueue_time = Some(due);
    q.send(m).await.unwrap();
    q.send(msg("now")).await.unwrap();
    assert_eq!(
        q.stats().await.unwrap(),
        QueueStats {
            active: 1,
            scheduled: 1,
            ..Default::default()
        }
    );
    let now = q.receive(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(now.message.message_id, "now");
    q.complete(&now.lock).await.unwrap();
    clock.advance(Duration::from_secs(3600) - ms(1));
    assert!(q.receive(Duration::ZERO).await.unwrap().is_none());
    clock.advance(ms(1));
    let later = q.receive(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(later.message.message_id, "later");
    assert_eq!(later.message.enqueued_time, due);
}

#[tokio::test]
async fn a_scheduled_time_in_the_past_is_visible_at_once() {
    let (_dir, clock, q) = with_manual_clock(SqliteTransportOptions::default());
    let mut m = msg("late");
    m.scheduled_enqueue_time = Some(clock.now() - chrono::Duration::hours(1));
    q.send(m).await.unwrap();
    let d = q.receive(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(d.message.enqueued_time, clock.now());
}

#[tokio::test]
async fn a_message_id_is_accepted_again_once_the_duplicate_window_has_passed() {
    let window = Duration::from_secs(600);
    let (_dir, clock, q) = with_manual_clock(SqliteTransportOptions {
        duplicate_detection_window: window,
        ..Default::default()
    });
    assert_eq!(q.send(msg("m")).await.unwrap(), SendOutcome::Accepted);
    clock.advance(window - ms(1));
    assert_eq!(q.send(msg("m")).await.unwrap(), SendOutcome::Duplicate);
    clock.advance(ms(1));
    assert_eq!(q.send(msg("m")).await.unwrap(), SendOutcome::Accepted);
    assert_eq!(q.stats().await.unwrap().active, 2);
}

#[tokio::test]
async fn a_zero_duplicate_window_turns_detection_off() {
    let (_dir, _clock, q) = with_manual_clock(SqliteTransportOptions {
        duplicate_detection_window: Duration::ZERO,
        ..Default::default()
    });
    assert_eq!(q.send(msg("m")).await.unwrap(), SendOutcome::Accepted);
    assert_eq!(q.send(msg("m")).await.unwrap(), SendOutcome::Accepted);
}

#[tokio::test]
async fn lock_expiries_past_the_max_delivery_count_dead_letter_the_message() {
    let lock = Duration::from_secs(30);
    let (_dir, clock, q) = with_manual_clock(SqliteTransportOptions {
        lock_duration: lock,
        max_delivery_count: 2,
        ..Default::default()
    });
    q.send(msg("poison")).await.unwrap();
    for n in 1..=2 {
        let d = q.receive(Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(
            (d.message.message_id.as_str(), d.message.delivery_count),
            ("poison", n)
        );
        clock.advance(lock);
    }
    q.send(msg("fine")).await.unwrap();
    // The third delivery would pass the limit: the next message is delivered instead.
    let d = q.receive(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(d.message.message_id, "fine");
    q.complete(&d.lock).await.unwrap();
    let dead = q.peek_dead_letters(0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, "poison");
    assert_eq!(
        dead[0].dead_letter_reason.as_deref(),
        Some("MaxDeliveryCountExceeded")
    );
    assert!(
        dead[0]
            .dead_letter_description
            .as_deref()
            .unwrap_or_default()
            .contains("limit is 2")
    );
    assert_eq!(
        q.stats().await.unwrap(),
        QueueStats {
            dead_lettered: 1,
            ..Default::default()
        }
    );
}

// ---------------------------------------------------------------------------------------------
// SQLite-specific behaviour.

#[tokio::test]
async fn a_body_over_the_size_limit_is_rejected_and_one_at_the_limit_is_accepted() {
    let (_dir, _clock, t) = with_manual_clock(SqliteTransportOptions {
        max_message_bytes: 1024,
        ..Default::default()
    });
    let sized = |id: &str, n: usize| OutgoingMessage {
        message_id: id.into(),
        body: vec![7; n],
        ..Default::default()
    };
    assert!(matches!(
        t.send(sized("big", 1025)).await,
        Err(TransportError::Rejected(_))
    ));
    assert!(matches!(
        t.publish(sized("big-event", 1025)).await,
        Err(TransportError::Rejected(_))
    ));
    assert_eq!(
        t.send(sized("ok", 1024)).await.unwrap(),
        SendOutcome::Accepted
    );
    let d = t.receive(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(d.message.body.len(), 1024);
}

#[test]
fn a_zero_lock_duration_or_max_delivery_count_is_rejected_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    for options in [
        SqliteTransportOptions {
            lock_duration: Duration::ZERO,
            ..Default::default()
        },
        SqliteTransportOptions {
            max_delivery_count: 0,
            ..Default::default()
        },
    ] {
        assert!(matches!(
            SqliteTransport::open(&path, options, Arc::new(SystemClock)),
            Err(TransportError::Rejected(_))
        ));
    }
}

#[tokio::test]
async fn the_default_size_limit_is_256_kib() {
    assert_eq!(
        SqliteTransportOptions::default().max_message_bytes,
        256 * 1024
    );
}

#[tokio::test]
async fn messages_events_and_subscriptions_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deeper/still/queue.db");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    {
        let t = open(&path, SqliteTransportOptions::default(), clock.clone());
        let mut m = msg("kept");
        m.application_properties = BTreeMap::from([("a".into(), "b".into())]);
        t.send(m).await.unwrap();
        t.subscribe("audit").await.unwrap();
        t.publish(msg("event")).await.unwrap();
    }
    let t = open(&path, SqliteTransportOptions::default(), clock);
    let d = t.receive(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(d.message.message_id, "kept");
    assert_eq!(d.message.application_properties["a"], "b");
    let mut sub = t.subscribe("audit").await.unwrap();
    let e = sub.next(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(e.message_id, "event");
    assert_eq!(
        t.send(msg("kept")).await.unwrap(),
        SendOutcome::Duplicate,
        "duplicate ids are remembered across restarts"
    );
}

#[tokio::test]
async fn dead_lettering_a_dead_letter_delivery_is_rejected_and_keeps_it() {
    let (_dir, _clock, q) = with_manual_clock(SqliteTransportOptions::default());
    q.send(msg("m")).await.unwrap();
    let d = q.receive(Duration::ZERO).await.unwrap().unwrap();
    q.dead_letter(&d.lock, "First", "first reason")
        .await
        .unwrap();
    let dl = q
        .receive_dead_letter(Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        q.dead_letter(&dl.lock, "Second", "again").await,
        Err(TransportError::Rejected(_))
    ));
    q.abandon(&dl.lock).await.unwrap();
    let dead = q.peek_dead_letters(0, 10).await.unwrap();
    assert_eq!(dead[0].dead_letter_reason.as_deref(), Some("First"));
}

#[tokio::test]
async fn a_receiver_waiting_on_an_empty_queue_is_woken_by_a_send_from_the_same_transport() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(
        &dir.path().join("q.db"),
        SqliteTransportOptions::default(),
        Arc::new(SystemClock),
    );
    let receiver = t.clone();
    let waiting =
        tokio::spawn(async move { receiver.receive(Duration::from_secs(30)).await.unwrap() });
    tokio::time::sleep(ms(100)).await;
    t.send(msg("wake")).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the waiting receiver was not woken")
        .unwrap()
        .expect("the waiting receiver got nothing");
    assert_eq!(d.message.message_id, "wake");
}

#[tokio::test]
async fn a_receiver_on_another_transport_sees_a_send_by_polling_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let options = SqliteTransportOptions::default();
    let a = open(&path, options.clone(), Arc::new(SystemClock));
    let b = open(&path, options, Arc::new(SystemClock));
    let waiting = tokio::spawn(async move { b.receive(Duration::from_secs(20)).await.unwrap() });
    tokio::time::sleep(ms(100)).await;
    a.send(msg("cross")).await.unwrap();
    let d = waiting
        .await
        .unwrap()
        .expect("the other transport never saw the message");
    assert_eq!(d.message.message_id, "cross");
}

#[tokio::test]
async fn an_empty_or_overlong_subscription_name_is_rejected() {
    let (_dir, _clock, t) = with_manual_clock(SqliteTransportOptions::default());
    assert!(matches!(
        t.subscribe("").await,
        Err(TransportError::Rejected(_))
    ));
    assert!(matches!(
        t.subscribe(&"x".repeat(51)).await,
        Err(TransportError::Rejected(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Two transports on one file, as two processes would have.

/// Which consumer currently holds each session, as the consumers themselves report it.
type Holders = Arc<Mutex<HashMap<String, usize>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_transports_on_one_file_never_both_hold_a_session() {
    // Fewer sessions than consumers, so some consumer is always trying to take a held one.
    const SESSIONS: usize = 3;
    const PER_SESSION: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    // Long locks: nothing may expire during the test, so any overlap is a real violation.
    let options = SqliteTransportOptions {
        lock_duration: Duration::from_secs(60),
        ..Default::default()
    };
    let transports = [
        open(&path, options.clone(), Arc::new(SystemClock)),
        open(&path, options, Arc::new(SystemClock)),
    ];
    // Grouped by session, so the lowest unlocked messages are usually of one session: a queue
    // that ignored sessions would hand several of them out at once.
    for s in 0..SESSIONS {
        for n in 0..PER_SESSION {
            let mut m = msg(&format!("s{s}-{n}"));
            m.session_id = Some(format!("s{s}"));
            transports[n % 2].send(m).await.unwrap();
        }
    }
    let holders: Holders = Arc::default();
    let order: Arc<Mutex<HashMap<String, Vec<usize>>>> = Arc::default();
    let mut consumers = Vec::new();
    // Two consumers on each transport.
    for consumer in 0..4 {
        let t = transports[consumer % 2].clone();
        let (holders, order) = (holders.clone(), order.clone());
        consumers.push(tokio::spawn(async move {
            let mut idle = 0;
            while idle < 10 {
                let Some(d) = t.receive(ms(50)).await.unwrap() else {
                    idle += 1;
                    continue;
                };
                idle = 0;
                let session = d.message.session_id.clone().unwrap();
                if let Some(other) = holders.lock().unwrap().insert(session.clone(), consumer) {
                    panic!("consumers {other} and {consumer} both hold session {session}");
                }
                // Hold the session for a moment so the other transport has a chance to collide.
                tokio::time::sleep(ms(5)).await;
                let n: usize = d
                    .message
                    .message_id
                    .rsplit('-')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                order
                    .lock()
                    .unwrap()
                    .entry(session.clone())
                    .or_default()
                    .push(n);
                // Released in our bookkeeping before the transport releases it, so a quick
                // receive by another consumer right after `complete` is not a false alarm.
                holders.lock().unwrap().remove(&session);
                t.complete(&d.lock).await.unwrap();
            }
        }));
    }
    for c in consumers {
        c.await.unwrap();
    }
    let order = std::mem::take(&mut *order.lock().unwrap());
    assert_eq!(order.len(), SESSIONS);
    for (session, seen) in &order {
        assert_eq!(
            seen,
            &(0..PER_SESSION).collect::<Vec<_>>(),
            "session {session} was delivered out of order or incompletely"
        );
    }
    assert_eq!(transports[0].stats().await.unwrap(), QueueStats::default());
}
