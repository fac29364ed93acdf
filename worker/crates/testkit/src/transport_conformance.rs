//! Transport conformance suite: the Service Bus properties every [`Queue`] + [`Topic`] pair must
//! have, written once and run against each implementation.
//!
//! This module touches nothing but the transport it is handed. It is public library code (not
//! `#[cfg(test)]`) so integration tests of any implementation can call it; its functions panic
//! on a violated property, like test code.
//!
//! An implementation's test file is one macro call with an async factory:
//!
//! ```ignore
//! async fn sqlite_env() -> ConformanceEnv { /* open a transport with a ~1 s lock */ }
//! onboarding_testkit::transport_conformance_tests!(sqlite_env);
//! ```
//!
//! Every property uses its own UUID-named messages, sessions and subscriptions and leaves other
//! messages alone (it holds any foreign message it receives only until it has found its own, then
//! abandons it), so the suite also runs against a shared live entity. Against a shared entity run
//! it with `--test-threads=1`: properties that count deliveries assume nobody else abandons their
//! messages. Waits are real time and generous; the only timing assumptions are "a message
//! scheduled 3 s ahead is not due 1 s after it was sent" and "a lock renewed every half lock
//! duration does not expire".

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use onboarding_transport::{
    Delivery, LockToken, OutgoingMessage, Queue, ReceivedMessage, SendOutcome, Subscription, Topic,
    TransportError,
};

/// What a property runs against, built fresh for each property by the caller's factory.
pub struct ConformanceEnv {
    pub queue: Arc<dyn Queue>,
    pub topic: Arc<dyn Topic>,
    /// The queue's lock duration (short, about a second, keeps the suite fast).
    pub lock_duration: Duration,
    /// The queue's max delivery count.
    pub max_delivery_count: u32,
    /// Whatever must outlive the property (a temp dir, a server handle); dropped after it.
    pub keep_alive: Vec<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for ConformanceEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConformanceEnv")
            .field("queue", &self.queue)
            .field("topic", &self.topic)
            .field("lock_duration", &self.lock_duration)
            .field("max_delivery_count", &self.max_delivery_count)
            .finish_non_exhaustive()
    }
}

impl ConformanceEnv {
    pub fn new(
        queue: Arc<dyn Queue>,
        topic: Arc<dyn Topic>,
        lock_duration: Duration,
        max_delivery_count: u32,
    ) -> Self {
        Self {
            queue,
            topic,
            lock_duration,
            max_delivery_count,
            keep_alive: Vec::new(),
        }
    }

    /// Keep `thing` alive until the property has run.
    pub fn keeping(mut self, thing: impl Any + Send + Sync) -> Self {
        self.keep_alive.push(Box::new(thing));
        self
    }

    /// The generous bound for "eventually".
    fn patience(&self) -> Duration {
        Duration::from_secs(10).max(self.lock_duration * 3)
    }
}

/// Expands to one `#[tokio::test]` per conformance property, each calling `$factory().await` for
/// a fresh [`ConformanceEnv`]. The calling crate needs `tokio` with the `macros` feature.
#[macro_export]
macro_rules! transport_conformance_tests {
    ($factory:expr) => {
        $crate::transport_conformance_tests!(@each $factory;
            a_received_message_keeps_its_body_properties_subject_and_session,
            a_completed_message_is_not_delivered_again,
            an_abandoned_message_is_redelivered_with_its_delivery_count_incremented,
            a_message_whose_lock_expires_is_redelivered,
            renewing_a_lock_keeps_the_message_locked_past_its_first_expiry,
            settling_with_a_stale_lock_is_lock_lost,
            a_held_session_goes_to_no_second_receiver_while_other_sessions_do,
            messages_of_one_session_are_delivered_in_send_order,
            a_scheduled_message_is_invisible_until_it_is_due,
            a_duplicate_message_id_is_dropped,
            a_message_past_the_max_delivery_count_is_dead_lettered_with_the_reason,
            a_dead_lettered_message_keeps_its_reason_description_and_content,
            completing_a_dead_letter_delivery_removes_it_and_abandoning_returns_it,
            every_subscription_gets_every_event_in_order,
            a_subscription_created_after_a_publish_does_not_see_it,
            a_reopened_subscription_resumes_after_the_last_event_it_read,
        );
    };
    // For implementations that need a live service: the factory returns `Option`, `None`
    // meaning "skipped" (the factory prints what is missing), and the caller lists the
    // properties the service can take part in.
    (optional $factory:expr; $($property:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $property() {
                let Some(env) = ($factory)().await else {
                    return;
                };
                $crate::transport_conformance::$property(env).await;
            }
        )*
    };
    (@each $factory:expr; $($property:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $property() {
                let env = ($factory)().await;
                $crate::transport_conformance::$property(env).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A fresh prefix naming everything one property creates.
fn run_id() -> String {
    format!("conformance-{}", uuid::Uuid::new_v4())
}

fn message(id: &str, session: Option<&str>, body: &[u8]) -> OutgoingMessage {
    OutgoingMessage {
        message_id: id.to_owned(),
        session_id: session.map(str::to_owned),
        body: body.to_vec(),
        ..Default::default()
    }
}

fn ours(run: &str) -> impl Fn(&ReceivedMessage) -> bool + '_ {
    move |m| m.message_id.starts_with(run)
}

async fn send_ok(queue: &dyn Queue, m: OutgoingMessage) {
    let id = m.message_id.clone();
    let outcome = queue
        .send(m)
        .await
        .unwrap_or_else(|e| panic!("sending {id} failed: {e}"));
    assert_eq!(outcome, SendOutcome::Accepted, "sending {id}");
}

/// Receive until a delivery matching `wanted` arrives or `within` has passed. Foreign deliveries
/// are held (so they are not handed back at once) and abandoned before returning.
async fn receive_matching(
    queue: &dyn Queue,
    dead_letters: bool,
    wanted: &dyn Fn(&ReceivedMessage) -> bool,
    within: Duration,
) -> Option<Delivery> {
    let deadline = Instant::now() + within;
    let mut foreign = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = left.min(Duration::from_millis(500));
        let got = if dead_letters {
            queue.receive_dead_letter(wait).await
        } else {
            queue.receive(wait).await
        };
        match got.unwrap_or_else(|e| panic!("receive failed: {e}")) {
            Some(d) if wanted(&d.message) => break Some(d),
            Some(d) => foreign.push(d.lock),
            None if left.is_zero() => break None,
            None => {}
        }
    };
    for lock in foreign {
        // Best effort: a foreign lock may have expired meanwhile, which gives it back anyway.
        let _ = queue.abandon(&lock).await;
    }
    found
}

async fn receive_own(
    env: &ConformanceEnv,
    wanted: &dyn Fn(&ReceivedMessage) -> bool,
    what: &str,
) -> Delivery {
    receive_matching(env.queue.as_ref(), false, wanted, env.patience())
        .await
        .unwrap_or_else(|| panic!("{what} was not delivered within {:?}", env.patience()))
}

async fn receive_own_dead_letter(
    env: &ConformanceEnv,
    wanted: &dyn Fn(&ReceivedMessage) -> bool,
    what: &str,
) -> Delivery {
    receive_matching(env.queue.as_ref(), true, wanted, env.patience())
        .await
        .unwrap_or_else(|| {
            panic!(
                "{what} was not delivered from the dead-letter queue within {:?}",
                env.patience()
            )
        })
}

async fn assert_nothing_delivered(
    env: &ConformanceEnv,
    wanted: &dyn Fn(&ReceivedMessage) -> bool,
    during: Duration,
    why: &str,
) {
    if let Some(d) = receive_matching(env.queue.as_ref(), false, wanted, during).await {
        panic!(
            "{why}, yet message {} was delivered (delivery count {})",
            d.message.message_id, d.message.delivery_count
        );
    }
}

async fn complete(env: &ConformanceEnv, d: &Delivery) {
    env.queue
        .complete(&d.lock)
        .await
        .unwrap_or_else(|e| panic!("completing {} failed: {e}", d.message.message_id));
}

/// Look through the whole dead-letter queue for `message_id`.
async fn find_dead_letter(queue: &dyn Queue, message_id: &str) -> Option<ReceivedMessage> {
    let mut from = 0;
    loop {
        let batch = queue
            .peek_dead_letters(from, 100)
            .await
            .unwrap_or_else(|e| panic!("peeking dead letters failed: {e}"));
        from = batch.last()?.sequence_number + 1;
        if let Some(m) = batch.into_iter().find(|m| m.message_id == message_id) {
            return Some(m);
        }
    }
}

async fn eventually_dead_lettered(env: &ConformanceEnv, message_id: &str) -> ReceivedMessage {
    let deadline = Instant::now() + env.patience();
    loop {
        if let Some(m) = find_dead_letter(env.queue.as_ref(), message_id).await {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{message_id} did not appear in the dead-letter queue within {:?}",
            env.patience()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn must<T>(result: Result<T, TransportError>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

fn assert_lock_lost<T: std::fmt::Debug>(result: Result<T, TransportError>, what: &str) {
    match result {
        Err(TransportError::LockLost(_)) => {}
        other => panic!("{what}: expected LockLost, got {other:?}"),
    }
}

async fn next_own(
    sub: &mut dyn Subscription,
    run: &str,
    within: Duration,
) -> Option<ReceivedMessage> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub
            .next(left.min(Duration::from_millis(500)))
            .await
            .unwrap_or_else(|e| panic!("reading the subscription failed: {e}"))
        {
            Some(m) if m.message_id.starts_with(run) => return Some(m),
            Some(_) => {}
            None if left.is_zero() => return None,
            None => {}
        }
    }
}

async fn subscribe(topic: &dyn Topic, name: &str) -> Box<dyn Subscription> {
    topic
        .subscribe(name)
        .await
        .unwrap_or_else(|e| panic!("subscribing {name} failed: {e}"))
}

async fn publish(topic: &dyn Topic, id: &str) {
    topic
        .publish(OutgoingMessage {
            message_id: id.to_owned(),
            subject: Some("conformance.event".into()),
            body: id.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("publishing {id} failed: {e}"));
}

/// Service Bus subscription names are at most 50 characters; a UUID's simple form is 32.
fn subscription_name(tag: &str) -> String {
    format!("c{tag}-{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------------------------
// Queue properties

pub async fn a_received_message_keeps_its_body_properties_subject_and_session(env: ConformanceEnv) {
    let run = run_id();
    let session = format!("{run}-session");
    let properties = BTreeMap::from([
        ("tenant.id".to_owned(), "acme".to_owned()),
        ("unicode".to_owned(), "grüße ✓".to_owned()),
        ("empty".to_owned(), String::new()),
    ]);
    let sent = OutgoingMessage {
        message_id: format!("{run}-1"),
        session_id: Some(session.clone()),
        content_type: Some("application/json".into()),
        subject: Some("OnboardTenant".into()),
        correlation_id: Some(format!("{run}-correlation")),
        body: vec![0, 159, 146, 150, b'{', b'}', 255],
        application_properties: properties.clone(),
        scheduled_enqueue_time: None,
    };
    send_ok(env.queue.as_ref(), sent.clone()).await;
    let d = receive_own(&env, &ours(&run), "the sent message").await;
    let m = &d.message;
    assert_eq!(m.message_id, sent.message_id);
    assert_eq!(m.session_id, sent.session_id);
    assert_eq!(m.content_type, sent.content_type);
    assert_eq!(m.subject, sent.subject);
    assert_eq!(m.correlation_id, sent.correlation_id);
    assert_eq!(m.body, sent.body);
    // A transport may add properties of its own; ours must all come back unchanged.
    for (k, v) in &properties {
        assert_eq!(m.application_properties.get(k), Some(v), "property {k}");
    }
    assert_eq!(m.delivery_count, 1);
    assert_eq!(m.dead_letter_reason, None);
    complete(&env, &d).await;
}

pub async fn a_completed_message_is_not_delivered_again(env: ConformanceEnv) {
    let run = run_id();
    send_ok(env.queue.as_ref(), message(&format!("{run}-1"), None, b"x")).await;
    let d = receive_own(&env, &ours(&run), "the sent message").await;
    complete(&env, &d).await;
    // Longer than the lock, so a lock that merely expired would have shown up again.
    assert_nothing_delivered(
        &env,
        &ours(&run),
        env.lock_duration + Duration::from_millis(500),
        "the message was completed",
    )
    .await;
}

pub async fn an_abandoned_message_is_redelivered_with_its_delivery_count_incremented(
    env: ConformanceEnv,
) {
    let run = run_id();
    send_ok(env.queue.as_ref(), message(&format!("{run}-1"), None, b"x")).await;
    let first = receive_own(&env, &ours(&run), "the sent message").await;
    must(env.queue.abandon(&first.lock).await, "abandoning");
    let second = receive_own(&env, &ours(&run), "the abandoned message").await;
    assert_eq!(second.message.message_id, first.message.message_id);
    assert_eq!(
        second.message.sequence_number,
        first.message.sequence_number
    );
    assert_eq!(second.message.body, first.message.body);
    assert_eq!(
        second.message.delivery_count,
        first.message.delivery_count + 1
    );
    assert_ne!(second.lock, first.lock, "a new delivery gets a new lock");
    complete(&env, &second).await;
}

pub async fn a_message_whose_lock_expires_is_redelivered(env: ConformanceEnv) {
    let run = run_id();
    send_ok(env.queue.as_ref(), message(&format!("{run}-1"), None, b"x")).await;
    let first = receive_own(&env, &ours(&run), "the sent message").await;
    // Not settled: the lock runs out and the message comes back.
    let second = receive_own(&env, &ours(&run), "the message whose lock expired").await;
    assert_eq!(second.message.message_id, first.message.message_id);
    assert_eq!(
        second.message.delivery_count,
        first.message.delivery_count + 1
    );
    assert_lock_lost(
        env.queue.complete(&first.lock).await,
        "completing with the expired lock",
    );
    complete(&env, &second).await;
}

pub async fn renewing_a_lock_keeps_the_message_locked_past_its_first_expiry(env: ConformanceEnv) {
    let run = run_id();
    send_ok(env.queue.as_ref(), message(&format!("{run}-1"), None, b"x")).await;
    let d = receive_own(&env, &ours(&run), "the sent message").await;
    let mut until = d.locked_until;
    // Three half-lock naps: past the original expiry, never past a renewed one.
    for round in 0..3 {
        tokio::time::sleep(env.lock_duration / 2).await;
        let renewed = env
            .queue
            .renew_lock(&d.lock)
            .await
            .unwrap_or_else(|e| panic!("renewal {round} failed: {e}"));
        assert!(
            renewed > until,
            "renewal {round} moved the lock from {until} to {renewed}"
        );
        until = renewed;
    }
    assert_nothing_delivered(
        &env,
        &ours(&run),
        Duration::from_millis(200),
        "the lock was renewed",
    )
    .await;
    complete(&env, &d).await;
}

pub async fn settling_with_a_stale_lock_is_lock_lost(env: ConformanceEnv) {
    let run = run_id();
    send_ok(env.queue.as_ref(), message(&format!("{run}-1"), None, b"x")).await;
    let d = receive_own(&env, &ours(&run), "the sent message").await;
    complete(&env, &d).await;
    let q = env.queue.as_ref();
    assert_lock_lost(q.complete(&d.lock).await, "completing twice");
    assert_lock_lost(q.abandon(&d.lock).await, "abandoning a completed message");
    assert_lock_lost(
        q.dead_letter(&d.lock, "Test", "already completed").await,
        "dead-lettering a completed message",
    );
    assert_lock_lost(q.renew_lock(&d.lock).await, "renewing a completed message");
    let made_up = LockToken(uuid::Uuid::new_v4().to_string());
    assert_lock_lost(
        q.complete(&made_up).await,
        "completing with a made-up token",
    );
}

pub async fn a_held_session_goes_to_no_second_receiver_while_other_sessions_do(
    env: ConformanceEnv,
) {
    let run = run_id();
    let sessions = [format!("{run}-s1"), format!("{run}-s2")];
    for s in &sessions {
        for n in 0..2 {
            send_ok(
                env.queue.as_ref(),
                message(&format!("{s}-{n}"), Some(s), b"x"),
            )
            .await;
        }
    }
    let session_of = |d: &Delivery| d.message.session_id.clone().unwrap_or_default();
    let first = receive_own(&env, &ours(&run), "a message of either session").await;
    let held = session_of(&first);
    assert_eq!(first.message.message_id, format!("{held}-0"));
    let second = receive_own(&env, &ours(&run), "a message of the other session").await;
    assert_ne!(
        session_of(&second),
        held,
        "a second receiver got a message of a session the first one holds"
    );
    assert_eq!(
        second.message.message_id,
        format!("{}-0", session_of(&second))
    );
    assert_nothing_delivered(
        &env,
        &ours(&run),
        Duration::from_millis(500),
        "both sessions are held",
    )
    .await;
    // Settling releases the session: its next message follows.
    complete(&env, &first).await;
    let third = receive_own(&env, &ours(&run), "the released session's next message").await;
    assert_eq!(third.message.message_id, format!("{held}-1"));
    complete(&env, &second).await;
    complete(&env, &third).await;
    let last = receive_own(&env, &ours(&run), "the last message").await;
    assert_eq!(
        last.message.message_id,
        format!("{}-1", session_of(&second))
    );
    complete(&env, &last).await;
}

pub async fn messages_of_one_session_are_delivered_in_send_order(env: ConformanceEnv) {
    let run = run_id();
    let session = format!("{run}-session");
    let count = 5;
    for n in 0..count {
        send_ok(
            env.queue.as_ref(),
            message(
                &format!("{run}-{n}"),
                Some(&session),
                n.to_string().as_bytes(),
            ),
        )
        .await;
    }
    let mut last_sequence = i64::MIN;
    for n in 0..count {
        let d = receive_own(&env, &ours(&run), &format!("message {n} of the session")).await;
        assert_eq!(d.message.message_id, format!("{run}-{n}"), "out of order");
        assert!(
            d.message.sequence_number > last_sequence,
            "sequence numbers must increase in send order"
        );
        last_sequence = d.message.sequence_number;
        complete(&env, &d).await;
    }
}

pub async fn a_scheduled_message_is_invisible_until_it_is_due(env: ConformanceEnv) {
    let run = run_id();
    let due = chrono::Utc::now() + chrono::Duration::seconds(3);
    let mut m = message(&format!("{run}-1"), None, b"later");
    m.scheduled_enqueue_time = Some(due);
    send_ok(env.queue.as_ref(), m).await;
    let stats = must(env.queue.stats().await, "reading stats");
    assert!(
        stats.scheduled >= 1,
        "stats must count the scheduled message: {stats:?}"
    );
    assert_nothing_delivered(
        &env,
        &ours(&run),
        Duration::from_secs(1),
        "the message is scheduled 3 s ahead",
    )
    .await;
    let d = receive_own(&env, &ours(&run), "the scheduled message").await;
    assert_eq!(d.message.body, b"later");
    assert_eq!(d.message.delivery_count, 1);
    complete(&env, &d).await;
}

pub async fn a_duplicate_message_id_is_dropped(env: ConformanceEnv) {
    let run = run_id();
    let id = format!("{run}-1");
    send_ok(env.queue.as_ref(), message(&id, None, b"first")).await;
    let again = must(
        env.queue.send(message(&id, None, b"second")).await,
        "sending the duplicate",
    );
    assert_eq!(again, SendOutcome::Duplicate);
    let d = receive_own(&env, &ours(&run), "the first message").await;
    assert_eq!(d.message.body, b"first");
    complete(&env, &d).await;
    // Still inside the window after completion: the id is remembered, not the message.
    let after = must(
        env.queue.send(message(&id, None, b"third")).await,
        "sending the duplicate after completion",
    );
    assert_eq!(after, SendOutcome::Duplicate);
    assert_nothing_delivered(
        &env,
        &ours(&run),
        Duration::from_millis(500),
        "both later sends were duplicates",
    )
    .await;
}

pub async fn a_message_past_the_max_delivery_count_is_dead_lettered_with_the_reason(
    env: ConformanceEnv,
) {
    let run = run_id();
    let id = format!("{run}-1");
    send_ok(env.queue.as_ref(), message(&id, None, b"poison")).await;
    for n in 1..=env.max_delivery_count {
        let d = receive_own(&env, &ours(&run), &format!("delivery {n}")).await;
        assert_eq!(d.message.delivery_count, n);
        must(env.queue.abandon(&d.lock).await, "abandoning");
    }
    assert_nothing_delivered(
        &env,
        &ours(&run),
        Duration::from_millis(500),
        "the message reached the max delivery count",
    )
    .await;
    let dead = eventually_dead_lettered(&env, &id).await;
    assert_eq!(
        dead.dead_letter_reason.as_deref(),
        Some("MaxDeliveryCountExceeded")
    );
    assert_eq!(dead.body, b"poison");
    let d = receive_own_dead_letter(&env, &ours(&run), "the dead-lettered message").await;
    complete(&env, &d).await;
}

pub async fn a_dead_lettered_message_keeps_its_reason_description_and_content(env: ConformanceEnv) {
    let run = run_id();
    let id = format!("{run}-1");
    let session = format!("{run}-session");
    let mut sent = message(&id, Some(&session), b"{\"bad\":true}");
    sent.subject = Some("OnboardTenant".into());
    sent.application_properties = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
    send_ok(env.queue.as_ref(), sent.clone()).await;
    let d = receive_own(&env, &ours(&run), "the sent message").await;
    must(
        env.queue
            .dead_letter(&d.lock, "InvalidCommand", "tenant_id: must not be empty")
            .await,
        "dead-lettering",
    );
    let check = |m: &ReceivedMessage, via: &str| {
        assert_eq!(m.message_id, id, "{via}");
        assert_eq!(
            m.dead_letter_reason.as_deref(),
            Some("InvalidCommand"),
            "{via}"
        );
        assert_eq!(
            m.dead_letter_description.as_deref(),
            Some("tenant_id: must not be empty"),
            "{via}"
        );
        assert_eq!(m.body, sent.body, "{via}");
        assert_eq!(m.subject, sent.subject, "{via}");
        assert_eq!(m.session_id, sent.session_id, "{via}");
        assert_eq!(
            m.application_properties.get("k").map(String::as_str),
            Some("v"),
            "{via}"
        );
    };
    let peeked = eventually_dead_lettered(&env, &id).await;
    check(&peeked, "peek");
    let dl = receive_own_dead_letter(&env, &ours(&run), "the dead-lettered message").await;
    check(&dl.message, "receive_dead_letter");
    complete(&env, &dl).await;
    assert_nothing_delivered(
        &env,
        &ours(&run),
        Duration::from_millis(300),
        "the message was dead-lettered",
    )
    .await;
}

pub async fn completing_a_dead_letter_delivery_removes_it_and_abandoning_returns_it(
    env: ConformanceEnv,
) {
    let run = run_id();
    let id = format!("{run}-1");
    send_ok(env.queue.as_ref(), message(&id, None, b"x")).await;
    let d = receive_own(&env, &ours(&run), "the sent message").await;
    must(
        env.queue
            .dead_letter(&d.lock, "Test", "for the dead-letter queue")
            .await,
        "dead-lettering",
    );
    let first = receive_own_dead_letter(&env, &ours(&run), "the dead-lettered message").await;
    must(
        env.queue.abandon(&first.lock).await,
        "abandoning a dead letter",
    );
    let second =
        receive_own_dead_letter(&env, &ours(&run), "the abandoned dead-lettered message").await;
    assert_eq!(second.message.message_id, id);
    complete(&env, &second).await;
    assert!(
        find_dead_letter(env.queue.as_ref(), &id).await.is_none(),
        "a completed dead letter must be gone from the dead-letter queue"
    );
    assert_lock_lost(
        env.queue.complete(&second.lock).await,
        "completing a removed dead letter again",
    );
}

// ---------------------------------------------------------------------------------------------
// Topic properties

pub async fn every_subscription_gets_every_event_in_order(env: ConformanceEnv) {
    let run = run_id();
    let mut a = subscribe(env.topic.as_ref(), &subscription_name("a")).await;
    let mut b = subscribe(env.topic.as_ref(), &subscription_name("b")).await;
    let ids: Vec<String> = (0..5).map(|n| format!("{run}-{n}")).collect();
    for id in &ids {
        publish(env.topic.as_ref(), id).await;
    }
    for (label, sub) in [("a", &mut a), ("b", &mut b)] {
        for id in &ids {
            let got = next_own(sub.as_mut(), &run, env.patience())
                .await
                .unwrap_or_else(|| panic!("subscription {label} never got {id}"));
            assert_eq!(&got.message_id, id, "subscription {label} out of order");
            assert_eq!(got.body, id.as_bytes());
            assert_eq!(got.subject.as_deref(), Some("conformance.event"));
        }
        assert!(
            next_own(sub.as_mut(), &run, Duration::from_millis(300))
                .await
                .is_none(),
            "subscription {label} got an event twice"
        );
    }
}

pub async fn a_subscription_created_after_a_publish_does_not_see_it(env: ConformanceEnv) {
    let run = run_id();
    let mut early = subscribe(env.topic.as_ref(), &subscription_name("early")).await;
    publish(env.topic.as_ref(), &format!("{run}-before")).await;
    let mut late = subscribe(env.topic.as_ref(), &subscription_name("late")).await;
    publish(env.topic.as_ref(), &format!("{run}-after")).await;
    let first_late = next_own(late.as_mut(), &run, env.patience())
        .await
        .expect("the late subscription never got the event published after it");
    assert_eq!(first_late.message_id, format!("{run}-after"));
    for expected in ["before", "after"] {
        let got = next_own(early.as_mut(), &run, env.patience())
            .await
            .unwrap_or_else(|| panic!("the early subscription never got {expected}"));
        assert_eq!(got.message_id, format!("{run}-{expected}"));
    }
}

pub async fn a_reopened_subscription_resumes_after_the_last_event_it_read(env: ConformanceEnv) {
    let run = run_id();
    let name = subscription_name("resume");
    let mut sub = subscribe(env.topic.as_ref(), &name).await;
    publish(env.topic.as_ref(), &format!("{run}-0")).await;
    publish(env.topic.as_ref(), &format!("{run}-1")).await;
    let got = next_own(sub.as_mut(), &run, env.patience())
        .await
        .expect("the first event never arrived");
    assert_eq!(got.message_id, format!("{run}-0"));
    drop(sub);
    let mut reopened = subscribe(env.topic.as_ref(), &name).await;
    let got = next_own(reopened.as_mut(), &run, env.patience())
        .await
        .expect("the reopened subscription lost the unread event");
    assert_eq!(
        got.message_id,
        format!("{run}-1"),
        "a read event came back or one was skipped"
    );
}
