//! Rules of the entity state machine, without AMQP or a clock.

use super::*;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap_or_default()
}

fn queue(sessions: bool) -> QueueState<&'static str> {
    QueueState::new(
        "q",
        QueueConfig {
            requires_session: sessions,
            lock_duration: Duration::seconds(30),
            max_delivery_count: 3,
        },
    )
}

#[test]
fn a_locked_message_is_not_delivered_twice_until_its_lock_expires() {
    let mut q = queue(false);
    q.enqueue("a", Some("m1".into()), None, None, at(0));
    let first = q.lock_next(false, None, at(0)).expect("delivered");
    assert_eq!(first.delivery_count, 0);
    assert!(q.lock_next(false, None, at(10)).is_none());
    let again = q.lock_next(false, None, at(31)).expect("back after expiry");
    assert_eq!(again.delivery_count, 1);
    assert_ne!(again.lock, first.lock);
}

#[test]
fn completing_with_a_stale_token_is_message_lock_lost() {
    let mut q = queue(false);
    q.enqueue("a", None, None, None, at(0));
    let m = q.lock_next(false, None, at(0)).expect("delivered");
    let token = m.lock.expect("locked").token;
    assert_eq!(
        q.settle(token, Settlement::Complete, None, at(40)),
        Err(LockError::MessageLockLost)
    );
}

#[test]
fn abandoning_past_the_max_delivery_count_dead_letters_with_the_service_reason() {
    let mut q = queue(false);
    q.enqueue("a", None, None, None, at(0));
    for _ in 0..3 {
        let m = q.lock_next(false, None, at(1)).expect("delivered");
        let token = m.lock.expect("locked").token;
        q.settle(token, Settlement::Abandon { count: true }, None, at(1))
            .expect("abandon");
    }
    assert!(q.lock_next(false, None, at(1)).is_none());
    let dl = q
        .lock_next(true, None, at(1))
        .expect("in the dead-letter queue");
    let info = dl.dead_letter.expect("dead-letter info");
    assert_eq!(info.reason.as_deref(), Some("MaxDeliveryCountExceeded"));
    assert_eq!(info.source, "q");
}

#[test]
fn a_scheduled_message_is_invisible_until_due_and_can_be_cancelled() {
    let mut q = queue(false);
    let seq = q.enqueue("a", None, None, Some(at(20)), at(0));
    assert!(q.lock_next(false, None, at(5)).is_none());
    assert_eq!(q.peek(false, 0, 10, None).len(), 1);
    assert!(q.cancel_scheduled(seq, at(5)));
    assert!(q.lock_next(false, None, at(25)).is_none());
    let seq = q.enqueue("b", None, None, Some(at(20)), at(0));
    let m = q.lock_next(false, None, at(21)).expect("due");
    assert_eq!(m.sequence_number, seq);
    assert_eq!(m.enqueued_at, at(20));
}

#[test]
fn the_next_available_session_skips_sessions_held_by_others() {
    let mut q = queue(true);
    q.enqueue("a1", None, Some("a".into()), None, at(0));
    q.enqueue("b1", None, Some("b".into()), None, at(0));
    let (s1, _) = q
        .lock_session(None, 1, at(0))
        .expect("ok")
        .expect("a session");
    let (s2, _) = q
        .lock_session(None, 2, at(0))
        .expect("ok")
        .expect("another");
    assert_ne!(s1, s2);
    assert_eq!(q.lock_session(None, 3, at(0)), Ok(None));
    assert_eq!(
        q.lock_session(Some(&s1), 3, at(0)),
        Err(SessionLockError::CannotBeLocked)
    );
    q.release_session(&s1, 1);
    assert!(q.lock_session(Some(&s1), 3, at(0)).expect("free").is_some());
}

#[test]
fn session_messages_are_locked_until_the_session_lock_and_lost_with_it() {
    let mut q = queue(true);
    q.enqueue("a1", None, Some("a".into()), None, at(0));
    let (s, until) = q
        .lock_session(None, 7, at(0))
        .expect("ok")
        .expect("session");
    let m = q.lock_next(false, Some(&s), at(1)).expect("message");
    let lock = m.lock.expect("locked");
    assert_eq!(lock.until, until);
    assert_eq!(
        q.settle(lock.token, Settlement::Complete, Some(7), at(31)),
        Err(LockError::SessionLockLost)
    );
    let renewed_elsewhere = q.lock_session(None, 8, at(31)).expect("ok").expect("again");
    let m = q
        .lock_next(false, Some(&renewed_elsewhere.0), at(31))
        .expect("redelivered");
    assert_eq!(m.delivery_count, 1);
}

#[test]
fn renewing_a_session_lock_extends_its_messages() {
    let mut q = queue(true);
    q.enqueue("a1", None, Some("a".into()), None, at(0));
    let (s, _) = q
        .lock_session(None, 7, at(0))
        .expect("ok")
        .expect("session");
    let m = q.lock_next(false, Some(&s), at(0)).expect("message");
    let until = q.renew_session_lock(&s, at(20)).expect("renewed");
    assert_eq!(until, at(50));
    let token = m.lock.expect("locked").token;
    q.settle(token, Settlement::Complete, Some(7), at(40))
        .expect("still held after the first expiry");
}

#[test]
fn renewing_a_message_lock_extends_it() {
    let mut q = queue(false);
    q.enqueue("a", None, None, None, at(0));
    let token = q
        .lock_next(false, None, at(0))
        .and_then(|m| m.lock)
        .expect("locked")
        .token;
    assert_eq!(q.renew_message_lock(token, at(20)), Ok(at(50)));
    q.settle(token, Settlement::Complete, None, at(45))
        .expect("renewed lock still valid");
}

#[test]
fn dead_lettering_keeps_reason_and_description_and_peek_shows_them() {
    let mut q = queue(false);
    q.enqueue("a", Some("m".into()), None, None, at(0));
    let token = q
        .lock_next(false, None, at(0))
        .and_then(|m| m.lock)
        .expect("locked")
        .token;
    q.settle(
        token,
        Settlement::DeadLetter {
            reason: Some("InvalidCommand".into()),
            description: Some("tenant_id: bad".into()),
        },
        None,
        at(1),
    )
    .expect("dead-letter");
    let peeked = q.peek(true, 0, 10, None);
    assert_eq!(peeked.len(), 1);
    let info = peeked[0].dead_letter.clone().expect("info");
    assert_eq!(info.reason.as_deref(), Some("InvalidCommand"));
    assert_eq!(info.description.as_deref(), Some("tenant_id: bad"));
    assert_eq!(q.counts(at(1)), (0, 0, 1));
}
