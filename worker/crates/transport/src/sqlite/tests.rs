//! Unit tests of the SQL in `schema`, `queue` and `topic`, driven on a bare connection without
//! a runtime. (The behaviour through the traits is tested in `worker/tests/transport_sqlite.rs`.)

use rusqlite::{Connection, params};

use super::queue::*;
use super::schema::*;
use super::topic::*;
use crate::{OutgoingMessage, QueueStats, SendOutcome};

fn fresh() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("t.db")).unwrap();
    configure(&conn).unwrap();
    init_schema(&conn).unwrap();
    (dir, conn)
}

fn put(conn: &Connection, id: &str, session: Option<&str>, visible: i64) -> i64 {
    let m = OutgoingMessage {
        message_id: id.into(),
        session_id: session.map(str::to_owned),
        scheduled_enqueue_time: Some(from_ms(visible)),
        ..Default::default()
    };
    send(conn, &m, 0, 0).unwrap();
    conn.last_insert_rowid()
}

fn lock_until(conn: &Connection, seq: i64, until: i64) {
    conn.execute(
        "UPDATE queue_messages SET lock_token = ?1, locked_until_ms = ?2 WHERE seq = ?3",
        params![format!("t{seq}"), until, seq],
    )
    .unwrap();
}

fn next_seq(conn: &Connection, now: i64) -> Option<i64> {
    deliverable(conn, now).unwrap().map(|(seq, _)| seq)
}

#[test]
fn the_visibility_query_skips_messages_not_yet_due() {
    let (_d, conn) = fresh();
    let later = put(&conn, "a", None, 1_000);
    let now = put(&conn, "b", None, 0);
    assert_eq!(next_seq(&conn, 500), Some(now));
    assert_eq!(next_seq(&conn, 1_000), Some(later));
}

#[test]
fn the_visibility_query_skips_locked_messages_until_their_lock_expires() {
    let (_d, conn) = fresh();
    let a = put(&conn, "a", None, 0);
    let b = put(&conn, "b", None, 0);
    lock_until(&conn, a, 100);
    assert_eq!(next_seq(&conn, 99), Some(b));
    assert_eq!(next_seq(&conn, 100), Some(a));
}

#[test]
fn the_visibility_query_skips_dead_lettered_messages() {
    let (_d, conn) = fresh();
    let a = put(&conn, "a", None, 0);
    conn.execute(
        "UPDATE queue_messages SET dead_lettered = 1 WHERE seq = ?1",
        [a],
    )
    .unwrap();
    assert_eq!(next_seq(&conn, 0), None);
}

#[test]
fn a_session_with_a_live_lock_is_held_and_others_are_not() {
    let (_d, conn) = fresh();
    let s1a = put(&conn, "1a", Some("s1"), 0);
    let _s1b = put(&conn, "1b", Some("s1"), 0);
    let s2a = put(&conn, "2a", Some("s2"), 0);
    lock_until(&conn, s1a, 100);
    // s1's second message is unlocked but its session is held.
    assert_eq!(next_seq(&conn, 50), Some(s2a));
    lock_until(&conn, s2a, 100);
    assert_eq!(next_seq(&conn, 50), None);
    // Expired locks hold nothing: s1 starts again from its first message.
    assert_eq!(next_seq(&conn, 100), Some(s1a));
}

#[test]
fn a_dead_lettered_message_does_not_hold_its_session() {
    let (_d, conn) = fresh();
    let s1a = put(&conn, "1a", Some("s1"), 0);
    let s1b = put(&conn, "1b", Some("s1"), 0);
    lock_until(&conn, s1a, 100);
    conn.execute(
        "UPDATE queue_messages SET dead_lettered = 1 WHERE seq = ?1",
        [s1a],
    )
    .unwrap();
    assert_eq!(next_seq(&conn, 50), Some(s1b));
}

#[test]
fn a_session_is_delivered_from_its_earliest_due_message() {
    let (_d, conn) = fresh();
    let scheduled = put(&conn, "1a", Some("s1"), 1_000);
    let due = put(&conn, "1b", Some("s1"), 0);
    // The earlier message is not due yet, so it does not block the later one.
    assert_eq!(next_seq(&conn, 10), Some(due));
    // Once due, the lower sequence number goes first.
    assert_eq!(next_seq(&conn, 1_000), Some(scheduled));
}

#[test]
fn a_session_held_by_a_later_message_blocks_an_earlier_one_falling_due() {
    let (_d, conn) = fresh();
    let _scheduled = put(&conn, "1a", Some("s1"), 1_000);
    let due = put(&conn, "1b", Some("s1"), 0);
    lock_until(&conn, due, 5_000);
    assert_eq!(next_seq(&conn, 1_000), None);
}

#[test]
fn sessionless_messages_are_never_held_by_each_other() {
    let (_d, conn) = fresh();
    let a = put(&conn, "a", None, 0);
    let b = put(&conn, "b", None, 0);
    lock_until(&conn, a, 100);
    assert_eq!(next_seq(&conn, 0), Some(b));
}

#[test]
fn the_visibility_query_walks_the_queue_in_sequence_order_without_sorting() {
    let (_d, conn) = fresh();
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {DELIVERABLE}"))
        .unwrap();
    let plan: Vec<String> = stmt
        .query_map([0], |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        plan.iter().all(|step| !step.contains("TEMP B-TREE")),
        "{plan:?}"
    );
    assert!(
        plan.iter()
            .any(|step| step.contains("queue_messages_by_session_lock")),
        "the held-session check must use its index: {plan:?}"
    );
}

#[test]
fn duplicate_ids_are_forgotten_after_the_window() {
    let (_d, conn) = fresh();
    let m = OutgoingMessage {
        message_id: "x".into(),
        ..Default::default()
    };
    assert_eq!(send(&conn, &m, 0, 100).unwrap().0, SendOutcome::Accepted);
    assert_eq!(send(&conn, &m, 99, 100).unwrap().0, SendOutcome::Duplicate);
    assert_eq!(send(&conn, &m, 100, 100).unwrap().0, SendOutcome::Accepted);
}

#[test]
fn stats_count_each_message_in_exactly_one_live_state() {
    let (_d, conn) = fresh();
    let a = put(&conn, "a", None, 0);
    put(&conn, "b", None, 0);
    put(&conn, "c", None, 500);
    let d = put(&conn, "d", None, 0);
    lock_until(&conn, a, 100);
    conn.execute(
        "UPDATE queue_messages SET dead_lettered = 1 WHERE seq = ?1",
        [d],
    )
    .unwrap();
    assert_eq!(
        stats(&conn, 50).unwrap(),
        QueueStats {
            active: 1,
            scheduled: 1,
            locked: 1,
            dead_lettered: 1
        }
    );
}

#[test]
fn read_events_are_collected_once_every_subscription_passed_them() {
    let (_d, mut conn) = fresh();
    let ev = |id: &str| OutgoingMessage {
        message_id: id.into(),
        ..Default::default()
    };
    publish(&conn, &ev("nobody-listens"), 0).unwrap();
    subscribe(&conn, "a", 0).unwrap();
    subscribe(&conn, "b", 0).unwrap();
    publish(&conn, &ev("e1"), 0).unwrap();
    let count = |c: &Connection| -> i64 {
        c.query_row("SELECT COUNT(*) FROM topic_events", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&conn), 1);
    assert_eq!(
        next_event(&mut conn, "a").unwrap().unwrap().message_id,
        "e1"
    );
    assert_eq!(count(&conn), 1, "b has not read e1 yet");
    assert_eq!(
        next_event(&mut conn, "b").unwrap().unwrap().message_id,
        "e1"
    );
    assert_eq!(count(&conn), 0);
    // A new subscription starts after e1 even though e1 is gone.
    subscribe(&conn, "c", 0).unwrap();
    assert!(next_event(&mut conn, "c").unwrap().is_none());
}

#[test]
fn a_removed_subscription_no_longer_holds_events_back() {
    let (_d, mut conn) = fresh();
    let ev = |id: &str| OutgoingMessage {
        message_id: id.into(),
        ..Default::default()
    };
    subscribe(&conn, "worker", 0).unwrap();
    subscribe(&conn, "producer-left-behind", 0).unwrap();
    publish(&conn, &ev("e1"), 0).unwrap();
    assert_eq!(
        next_event(&mut conn, "worker").unwrap().unwrap().message_id,
        "e1"
    );
    let count = |c: &Connection| -> i64 {
        c.query_row("SELECT COUNT(*) FROM topic_events", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&conn), 1, "held for the subscription left behind");
    super::topic::unsubscribe(&conn, "producer-left-behind").unwrap();
    assert_eq!(count(&conn), 0, "released with it");
    // Removing it again, or one that never existed, is success.
    super::topic::unsubscribe(&conn, "producer-left-behind").unwrap();
    super::topic::unsubscribe(&conn, "never").unwrap();
}
