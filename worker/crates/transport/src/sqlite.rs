//! Embedded SQLite transport: one file holding a command queue with Service Bus semantics and an
//! event topic, safe for several processes at once.
//!
//! This module may touch only its own SQLite file (and create the file's parent directories).
//!
//! # Semantics (those of Azure Service Bus)
//!
//! - **Peek-lock.** `receive` locks one message until `now + lock_duration` and hands out a fresh
//!   lock token. `complete` deletes it, `abandon` releases the lock, `dead_letter` moves it to the
//!   dead-letter queue, `renew_lock` pushes the lock out again. A token that is unknown, expired or
//!   already used is [`TransportError::LockLost`].
//! - **Lock expiry** makes the message deliverable again; every delivery increments its
//!   `delivery_count`. A message whose count would exceed `max_delivery_count` is dead-lettered
//!   with reason `MaxDeliveryCountExceeded` instead of being delivered.
//! - **Sessions.** While any message of a session is locked the whole session is held: no other
//!   message of it is delivered. Within a session messages are delivered in sequence order.
//! - **Scheduled enqueue.** A message with `scheduled_enqueue_time` is invisible until then.
//! - **Duplicate detection.** A `message_id` already sent within `duplicate_detection_window` is
//!   dropped and reported as [`SendOutcome::Duplicate`]. A zero window turns detection off. A
//!   message sent with an empty id gets a fresh UUID (so it is never a duplicate).
//! - **Topic.** `publish` appends an event; a subscription sees every event published after it was
//!   created, in order, and `next` is receive-and-delete (the subscription's cursor advances in the
//!   same transaction that reads the event). Events every subscription has passed are deleted.
//!   There is no duplicate detection on the topic: consumers deduplicate by event id.
//!
//! Every time (now, lock expiry, schedule, duplicate window) is read from the injected
//! [`Clock`] and stored as integer milliseconds since the Unix epoch, so tests can move time.
//! Waiting in `receive(max_wait)` and `next(max_wait)` is real time: the file is polled every
//! [`POLL_INTERVAL`], and a send from the same `SqliteTransport` (or a clone) wakes waiters at once.
//!
//! # Several processes on one file
//!
//! The database runs in WAL mode with `synchronous=FULL` (a committed send survives a power cut,
//! not only a crash) and a busy timeout; every state change is one `BEGIN IMMEDIATE` transaction,
//! so two processes can never both lock one message or both hold one session. WAL needs shared
//! memory between the processes: keep the file on a local file system, not a network share.
//! Sequence numbers come from `AUTOINCREMENT` inside those serialised transactions, so they are
//! never reused and their order is commit order (a subscription's cursor never skips an event).
//! All SQLite work runs on tokio's blocking pool, never on the async runtime's threads; a
//! `receive` cancelled while its blocking part runs may still lock a message, which then comes
//! back when the lock expires (as with a lost network reply on Service Bus).
//!
//! [`QueueStats`] partitions the live messages: `active` are due and unlocked (some may wait
//! behind a held session), `scheduled` are not yet due, `locked` are held by a receiver.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::Notify;

use super::{
    Delivery, LockToken, OutgoingMessage, Queue, QueueStats, ReceivedMessage, SendOutcome,
    Subscription, Topic, TransportError,
};
use onboarding_core::Clock;

/// How often a waiting receiver looks at the file for messages sent by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Reason code of messages dead-lettered for too many deliveries (the Service Bus code).
pub const MAX_DELIVERY_COUNT_EXCEEDED: &str = "MaxDeliveryCountExceeded";

/// How long a write waits for another process's transaction before giving up as `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Bumped whenever the schema changes incompatibly.
const SCHEMA_VERSION: i64 = 1;

/// Service Bus limits subscription names to 50 characters.
const MAX_SUBSCRIPTION_NAME: usize = 50;

/// Settings of the embedded transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteTransportOptions {
    /// How long a received message stays locked to its receiver.
    pub lock_duration: Duration,
    /// Deliveries after which a message is dead-lettered instead of delivered again.
    pub max_delivery_count: u32,
    /// How long a MessageId is remembered for duplicate detection (zero: no detection).
    pub duplicate_detection_window: Duration,
    /// Largest body accepted by `send` and `publish`.
    pub max_message_bytes: usize,
}

impl Default for SqliteTransportOptions {
    fn default() -> Self {
        Self {
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 10,
            duplicate_detection_window: Duration::from_secs(600),
            max_message_bytes: 256 * 1024,
        }
    }
}

/// The SQLite-backed queue and topic. Cheap to clone: clones share one connection and wake each
/// other's waiting receivers.
#[derive(Clone)]
pub struct SqliteTransport {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    options: SqliteTransportOptions,
    clock: Arc<dyn Clock>,
    conn: Mutex<Connection>,
    /// Woken when this process changes the queue in a way that may let a waiter receive.
    queue_changed: Notify,
    /// Woken when this process publishes an event.
    topic_changed: Notify,
}

impl std::fmt::Debug for SqliteTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTransport")
            .field("path", &self.inner.path)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl SqliteTransport {
    /// Open (creating it and its parent directories if needed) the transport file at `path`.
    ///
    /// Blocking: call it at start-up, not from a hot async path.
    pub fn open(
        path: &Path,
        options: SqliteTransportOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TransportError> {
        if options.lock_duration.is_zero() || options.max_delivery_count == 0 {
            return Err(TransportError::Rejected(format!(
                "transport options for {}: the lock duration ({:?}) and the max delivery count ({}) must both be above zero",
                path.display(),
                options.lock_duration,
                options.max_delivery_count
            )));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                TransportError::Storage(format!(
                    "cannot create the directory {} for the transport file: {e}; check the path and its permissions",
                    parent.display()
                ))
            })?;
        }
        let conn = Connection::open(path).map_err(|e| {
            TransportError::Storage(format!(
                "cannot open the transport file {}: {e}; check the path and its permissions",
                path.display()
            ))
        })?;
        db::configure(&conn).map_err(|e| in_file(path, e))?;
        db::init_schema(&conn).map_err(|e| in_file(path, e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                options,
                clock,
                conn: Mutex::new(conn),
                queue_changed: Notify::new(),
                topic_changed: Notify::new(),
            }),
        })
    }

    /// The file this transport lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn options(&self) -> &SqliteTransportOptions {
        &self.inner.options
    }

    fn check_size(&self, message: &OutgoingMessage) -> Result<(), TransportError> {
        let limit = self.inner.options.max_message_bytes;
        if message.body.len() > limit {
            return Err(TransportError::Rejected(format!(
                "message {} has a {}-byte body, more than the {limit}-byte limit; send a smaller body (e.g. a reference to the data)",
                message.message_id,
                message.body.len()
            )));
        }
        Ok(())
    }

    /// Run `f` with the connection on the blocking pool. `f` gets the current time in
    /// milliseconds, read when it starts (callers that wait for a write lock read it again).
    async fn blocking<T, F>(&self, f: F) -> Result<T, TransportError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Ctx<'_>) -> Result<T, TransportError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic in an earlier call cannot leave a transaction open (it rolls back on drop),
            // so the connection is still good.
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            let ctx = Ctx {
                clock: inner.clock.as_ref(),
                options: &inner.options,
            };
            f(&mut conn, &ctx).map_err(|e| match e {
                TransportError::Storage(m) => {
                    TransportError::Storage(format!("{m} (file {})", inner.path.display()))
                }
                other => other,
            })
        })
        .await
        .map_err(|e| TransportError::Storage(format!("a transport task failed: {e}")))?
    }

    /// Try `attempt` until it yields something or `max_wait` has passed, waking early on `wake`.
    async fn wait_for<T, F>(
        &self,
        max_wait: Duration,
        wake: fn(&Inner) -> &Notify,
        attempt: F,
    ) -> Result<Option<T>, TransportError>
    where
        T: Send + 'static,
        F: Fn(&mut Connection, &Ctx<'_>) -> Result<Option<T>, TransportError>
            + Send
            + Sync
            + Clone
            + 'static,
    {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            // Registered before looking, so a send between the look and the wait is not missed.
            let notified = wake(&self.inner).notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = self.blocking(attempt.clone()).await? {
                return Ok(Some(found));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let nap = POLL_INTERVAL.min(deadline - now);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn settle(&self, lock: &LockToken, action: db::Settle) -> Result<(), TransportError> {
        let token = lock.0.clone();
        self.blocking(move |conn, ctx| db::settle(conn, ctx, &token, action))
            .await?;
        self.inner.queue_changed.notify_waiters();
        Ok(())
    }
}

/// What a blocking closure may use besides the connection.
struct Ctx<'a> {
    clock: &'a dyn Clock,
    options: &'a SqliteTransportOptions,
}

impl Ctx<'_> {
    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }
    fn lock_ms(&self) -> i64 {
        duration_ms(self.options.lock_duration)
    }
}

#[async_trait::async_trait]
impl Queue for SqliteTransport {
    async fn send(&self, message: OutgoingMessage) -> Result<SendOutcome, TransportError> {
        self.check_size(&message)?;
        let (outcome, visible_now) = self
            .blocking(move |conn, ctx| {
                let tx = immediate(conn)?;
                let now = ctx.now_ms();
                let window = duration_ms(ctx.options.duplicate_detection_window);
                let r = db::send(&tx, &message, now, window)?;
                tx.commit().map_err(storage)?;
                Ok(r)
            })
            .await?;
        if visible_now {
            self.inner.queue_changed.notify_waiters();
        }
        Ok(outcome)
    }

    async fn receive(&self, max_wait: Duration) -> Result<Option<Delivery>, TransportError> {
        self.wait_for(max_wait, |i| &i.queue_changed, db::receive)
            .await
    }

    async fn renew_lock(&self, lock: &LockToken) -> Result<DateTime<Utc>, TransportError> {
        let token = lock.0.clone();
        self.blocking(move |conn, ctx| db::renew(conn, ctx, &token))
            .await
    }

    async fn complete(&self, lock: &LockToken) -> Result<(), TransportError> {
        self.settle(lock, db::Settle::Complete).await
    }

    async fn abandon(&self, lock: &LockToken) -> Result<(), TransportError> {
        self.settle(lock, db::Settle::Abandon).await
    }

    async fn dead_letter(
        &self,
        lock: &LockToken,
        reason: &str,
        description: &str,
    ) -> Result<(), TransportError> {
        self.settle(
            lock,
            db::Settle::DeadLetter {
                reason: reason.to_owned(),
                description: description.to_owned(),
            },
        )
        .await
    }

    async fn peek_dead_letters(
        &self,
        from_sequence: i64,
        max: usize,
    ) -> Result<Vec<ReceivedMessage>, TransportError> {
        self.blocking(move |conn, _| db::peek_dead_letters(conn, from_sequence, max))
            .await
    }

    async fn receive_dead_letter(
        &self,
        max_wait: Duration,
    ) -> Result<Option<Delivery>, TransportError> {
        self.wait_for(max_wait, |i| &i.queue_changed, db::receive_dead_letter)
            .await
    }

    async fn stats(&self) -> Result<QueueStats, TransportError> {
        self.blocking(|conn, ctx| db::stats(conn, ctx.now_ms()))
            .await
    }
}

#[async_trait::async_trait]
impl Topic for SqliteTransport {
    async fn publish(&self, message: OutgoingMessage) -> Result<(), TransportError> {
        self.check_size(&message)?;
        self.blocking(move |conn, ctx| {
            let tx = immediate(conn)?;
            db::publish(&tx, &message, ctx.now_ms())?;
            tx.commit().map_err(storage)
        })
        .await?;
        self.inner.topic_changed.notify_waiters();
        Ok(())
    }

    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn Subscription>, TransportError> {
        if subscription.is_empty() || subscription.chars().count() > MAX_SUBSCRIPTION_NAME {
            return Err(TransportError::Rejected(format!(
                "subscription name {subscription:?} must be 1 to {MAX_SUBSCRIPTION_NAME} characters"
            )));
        }
        let name = subscription.to_owned();
        let n = name.clone();
        self.blocking(move |conn, ctx| {
            let tx = immediate(conn)?;
            db::subscribe(&tx, &n, ctx.now_ms())?;
            tx.commit().map_err(storage)
        })
        .await?;
        Ok(Box::new(SqliteSubscription {
            transport: self.clone(),
            name,
        }))
    }
}

/// A durable subscription to the topic of a [`SqliteTransport`].
#[derive(Debug)]
pub struct SqliteSubscription {
    transport: SqliteTransport,
    name: String,
}

#[async_trait::async_trait]
impl Subscription for SqliteSubscription {
    async fn next(
        &mut self,
        max_wait: Duration,
    ) -> Result<Option<ReceivedMessage>, TransportError> {
        let name = self.name.clone();
        self.transport
            .wait_for(
                max_wait,
                |i| &i.topic_changed,
                move |conn, _| db::next_event(conn, &name),
            )
            .await
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn immediate(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>, TransportError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(storage)
}

/// Busy/locked means another process held the file longer than the busy timeout: worth retrying.
fn storage(e: rusqlite::Error) -> TransportError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => TransportError::Unavailable(
            format!("the transport file stayed locked by another process: {e}"),
        ),
        _ => TransportError::Storage(e.to_string()),
    }
}

fn in_file(path: &Path, e: TransportError) -> TransportError {
    match e {
        TransportError::Storage(m) => TransportError::Storage(format!(
            "cannot prepare the transport file {}: {m}; if it is not a transport file, point the configuration elsewhere",
            path.display()
        )),
        other => other,
    }
}

/// The SQL, as plain functions on a connection so unit tests can drive it without a runtime.
mod db {
    use super::*;

    pub(super) fn configure(conn: &Connection) -> Result<(), TransportError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(storage)?;
        // Switching to WAL needs a moment alone with the file; processes starting together may
        // collide here without the busy handler's help, so retry for a bounded time.
        let started = std::time::Instant::now();
        loop {
            let mode = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0));
            match mode {
                Ok(m) if m.eq_ignore_ascii_case("wal") => break,
                Ok(m) => {
                    return Err(TransportError::Storage(format!(
                        "the file refused WAL mode (it stays in {m} mode); use a local file system"
                    )));
                }
                Err(e) if started.elapsed() < BUSY_TIMEOUT && is_busy(&e) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(storage(e)),
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(storage)?;
        Ok(())
    }

    fn is_busy(e: &rusqlite::Error) -> bool {
        matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        )
    }

    pub(super) const SCHEMA: &str = "
        CREATE TABLE IF NOT EXISTS queue_messages (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id TEXT NOT NULL,
            session_id TEXT,
            content_type TEXT,
            subject TEXT,
            correlation_id TEXT,
            body BLOB NOT NULL,
            properties TEXT NOT NULL,
            enqueued_ms INTEGER NOT NULL,
            visible_ms INTEGER NOT NULL,
            delivery_count INTEGER NOT NULL DEFAULT 0,
            lock_token TEXT UNIQUE,
            locked_until_ms INTEGER NOT NULL DEFAULT 0,
            dead_lettered INTEGER NOT NULL DEFAULT 0,
            dead_letter_reason TEXT,
            dead_letter_description TEXT
        );
        CREATE INDEX IF NOT EXISTS queue_messages_by_session_lock
            ON queue_messages (session_id, dead_lettered, locked_until_ms)
            WHERE session_id IS NOT NULL;
        CREATE INDEX IF NOT EXISTS queue_messages_by_state
            ON queue_messages (dead_lettered, seq);
        CREATE TABLE IF NOT EXISTS duplicate_ids (
            message_id TEXT PRIMARY KEY,
            seen_ms INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS duplicate_ids_by_time ON duplicate_ids (seen_ms);
        CREATE TABLE IF NOT EXISTS topic_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id TEXT NOT NULL,
            session_id TEXT,
            content_type TEXT,
            subject TEXT,
            correlation_id TEXT,
            body BLOB NOT NULL,
            properties TEXT NOT NULL,
            enqueued_ms INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS subscriptions (
            name TEXT PRIMARY KEY,
            cursor INTEGER NOT NULL,
            created_ms INTEGER NOT NULL
        ) WITHOUT ROWID;
    ";

    pub(super) fn init_schema(conn: &Connection) -> Result<(), TransportError> {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(storage)?;
        let result = (|| {
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(storage)?;
            if version > SCHEMA_VERSION {
                return Err(TransportError::Storage(format!(
                    "the file has transport schema version {version}, newer than this build's {SCHEMA_VERSION}; upgrade the worker"
                )));
            }
            conn.execute_batch(SCHEMA).map_err(storage)?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(storage)
        })();
        match result {
            Ok(()) => conn.execute_batch("COMMIT").map_err(storage),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    const MESSAGE_COLUMNS: &str = "seq, message_id, session_id, content_type, subject, correlation_id, body, properties, \
         delivery_count, enqueued_ms, dead_letter_reason, dead_letter_description";
    const EVENT_COLUMNS: &str = "seq, message_id, session_id, content_type, subject, correlation_id, body, properties, \
         1, enqueued_ms, NULL, NULL";

    /// Maps a row selected with [`MESSAGE_COLUMNS`] or [`EVENT_COLUMNS`]. Properties come back
    /// as JSON text and are parsed by the caller, which can report a bad row as a storage error.
    fn message_row(r: &Row<'_>) -> rusqlite::Result<(ReceivedMessage, String)> {
        let delivery_count: i64 = r.get(8)?;
        Ok((
            ReceivedMessage {
                sequence_number: r.get(0)?,
                message_id: r.get(1)?,
                session_id: r.get(2)?,
                content_type: r.get(3)?,
                subject: r.get(4)?,
                correlation_id: r.get(5)?,
                body: r.get(6)?,
                application_properties: BTreeMap::new(),
                delivery_count: u32::try_from(delivery_count).unwrap_or(u32::MAX),
                enqueued_time: from_ms(r.get(9)?),
                dead_letter_reason: r.get(10)?,
                dead_letter_description: r.get(11)?,
            },
            r.get(7)?,
        ))
    }

    fn with_properties(
        (mut m, json): (ReceivedMessage, String),
    ) -> Result<ReceivedMessage, TransportError> {
        m.application_properties = serde_json::from_str(&json).map_err(|e| {
            TransportError::Storage(format!(
                "message {} (sequence {}) has unreadable application properties: {e}",
                m.message_id, m.sequence_number
            ))
        })?;
        Ok(m)
    }

    fn load_message(conn: &Connection, seq: i64) -> Result<ReceivedMessage, TransportError> {
        let row = conn
            .query_row(
                &format!("SELECT {MESSAGE_COLUMNS} FROM queue_messages WHERE seq = ?1"),
                [seq],
                message_row,
            )
            .map_err(storage)?;
        with_properties(row)
    }

    fn properties_json(message: &OutgoingMessage) -> Result<String, TransportError> {
        serde_json::to_string(&message.application_properties)
            .map_err(|e| TransportError::Rejected(format!("application properties: {e}")))
    }

    /// Enqueue, unless the id was seen within the window. Returns the outcome and whether the
    /// message is visible now (so waiters are worth waking).
    pub(super) fn send(
        conn: &Connection,
        message: &OutgoingMessage,
        now: i64,
        window_ms: i64,
    ) -> Result<(SendOutcome, bool), TransportError> {
        let message_id = if message.message_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            message.message_id.clone()
        };
        if window_ms > 0 {
            conn.execute(
                "DELETE FROM duplicate_ids WHERE seen_ms <= ?1",
                [now.saturating_sub(window_ms)],
            )
            .map_err(storage)?;
            let inserted = conn
                .execute(
                    "INSERT OR IGNORE INTO duplicate_ids (message_id, seen_ms) VALUES (?1, ?2)",
                    params![message_id, now],
                )
                .map_err(storage)?;
            if inserted == 0 {
                return Ok((SendOutcome::Duplicate, false));
            }
        }
        let visible = message
            .scheduled_enqueue_time
            .map(|t| t.timestamp_millis())
            .unwrap_or(now)
            .max(now);
        conn.execute(
            "INSERT INTO queue_messages (message_id, session_id, content_type, subject, correlation_id,
                 body, properties, enqueued_ms, visible_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            params![
                message_id,
                message.session_id,
                message.content_type,
                message.subject,
                message.correlation_id,
                message.body,
                properties_json(message)?,
                visible,
            ],
        )
        .map_err(storage)?;
        Ok((SendOutcome::Accepted, visible <= now))
    }

    /// The visibility query: the lowest-sequence message that is live, due, not locked, and
    /// sessionless or of a session nobody holds. A session is held while any of its live
    /// messages carries an unexpired lock — including a later message locked before an earlier
    /// scheduled one fell due. Order within a session needs no clause of its own: every due
    /// message of a free session is deliverable, so the lowest sequence overall is also the
    /// lowest of its session.
    pub(super) const DELIVERABLE: &str = "
        SELECT m.seq, m.delivery_count FROM queue_messages AS m
        WHERE m.dead_lettered = 0
          AND m.visible_ms <= ?1
          AND m.locked_until_ms <= ?1
          AND (m.session_id IS NULL
               OR NOT EXISTS (SELECT 1 FROM queue_messages AS held
                              WHERE held.session_id = m.session_id
                                AND held.dead_lettered = 0
                                AND held.locked_until_ms > ?1))
        ORDER BY m.seq
        LIMIT 1";

    pub(super) fn deliverable(
        conn: &Connection,
        now: i64,
    ) -> Result<Option<(i64, i64)>, TransportError> {
        conn.prepare_cached(DELIVERABLE)
            .and_then(|mut s| {
                s.query_row([now], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(storage)
    }

    /// One receive attempt: lock the next deliverable message, dead-lettering on the way any
    /// whose delivery count would pass the limit.
    pub(super) fn receive(
        conn: &mut Connection,
        ctx: &Ctx<'_>,
    ) -> Result<Option<Delivery>, TransportError> {
        // Look before taking the write lock: idle pollers in several processes would otherwise
        // serialise on it for nothing.
        if deliverable(conn, ctx.now_ms())?.is_none() {
            return Ok(None);
        }
        let tx = immediate(conn)?;
        let now = ctx.now_ms();
        let max = i64::from(ctx.options.max_delivery_count);
        let delivery = loop {
            let Some((seq, count)) = deliverable(&tx, now)? else {
                break None;
            };
            if count + 1 > max {
                tx.execute(
                    "UPDATE queue_messages SET dead_lettered = 1, dead_letter_reason = ?2,
                         dead_letter_description = ?3, lock_token = NULL, locked_until_ms = 0
                     WHERE seq = ?1",
                    params![
                        seq,
                        MAX_DELIVERY_COUNT_EXCEEDED,
                        format!(
                            "delivered {count} times without being settled; the limit is {max}"
                        )
                    ],
                )
                .map_err(storage)?;
                tracing::warn!(
                    message.sequence = seq,
                    delivery.count = count,
                    "dead-lettered a message past the max delivery count"
                );
                continue;
            }
            break Some(lock(&tx, seq, now, ctx.lock_ms())?);
        };
        tx.commit().map_err(storage)?;
        Ok(delivery)
    }

    fn lock(
        conn: &Connection,
        seq: i64,
        now: i64,
        lock_ms: i64,
    ) -> Result<Delivery, TransportError> {
        let token = uuid::Uuid::new_v4().to_string();
        let until = now.saturating_add(lock_ms);
        conn.execute(
            "UPDATE queue_messages SET lock_token = ?2, locked_until_ms = ?3,
                 delivery_count = delivery_count + 1
             WHERE seq = ?1",
            params![seq, token, until],
        )
        .map_err(storage)?;
        Ok(Delivery {
            message: load_message(conn, seq)?,
            lock: LockToken(token),
            locked_until: from_ms(until),
        })
    }

    pub(super) fn receive_dead_letter(
        conn: &mut Connection,
        ctx: &Ctx<'_>,
    ) -> Result<Option<Delivery>, TransportError> {
        const NEXT: &str = "SELECT seq FROM queue_messages
             WHERE dead_lettered = 1 AND locked_until_ms <= ?1 ORDER BY seq LIMIT 1";
        let peek = |c: &Connection, now: i64| {
            c.query_row(NEXT, [now], |r| r.get::<_, i64>(0))
                .optional()
                .map_err(storage)
        };
        if peek(conn, ctx.now_ms())?.is_none() {
            return Ok(None);
        }
        let tx = immediate(conn)?;
        let now = ctx.now_ms();
        let delivery = match peek(&tx, now)? {
            Some(seq) => Some(lock(&tx, seq, now, ctx.lock_ms())?),
            None => None,
        };
        tx.commit().map_err(storage)?;
        Ok(delivery)
    }

    #[derive(Debug, Clone)]
    pub(super) enum Settle {
        Complete,
        Abandon,
        DeadLetter { reason: String, description: String },
    }

    /// The message a live lock token belongs to, or `LockLost`.
    fn locked(conn: &Connection, token: &str, now: i64) -> Result<(i64, bool), TransportError> {
        conn.query_row(
            "SELECT seq, dead_lettered FROM queue_messages
             WHERE lock_token = ?1 AND locked_until_ms > ?2",
            params![token, now],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(storage)?
        .ok_or_else(|| TransportError::LockLost(format!("with lock token {token}")))
    }

    pub(super) fn settle(
        conn: &mut Connection,
        ctx: &Ctx<'_>,
        token: &str,
        action: Settle,
    ) -> Result<(), TransportError> {
        let tx = immediate(conn)?;
        let (seq, dead_lettered) = locked(&tx, token, ctx.now_ms())?;
        match action {
            Settle::Complete => {
                tx.execute("DELETE FROM queue_messages WHERE seq = ?1", [seq])
            }
            Settle::Abandon => tx.execute(
                "UPDATE queue_messages SET lock_token = NULL, locked_until_ms = 0 WHERE seq = ?1",
                [seq],
            ),
            Settle::DeadLetter { .. } if dead_lettered => {
                return Err(TransportError::Rejected(format!(
                    "message with sequence {seq} is already dead-lettered; complete it to remove it or abandon it to keep it"
                )));
            }
            Settle::DeadLetter {
                reason,
                description,
            } => tx.execute(
                "UPDATE queue_messages SET dead_lettered = 1, dead_letter_reason = ?2,
                     dead_letter_description = ?3, lock_token = NULL, locked_until_ms = 0
                 WHERE seq = ?1",
                params![seq, reason, description],
            ),
        }
        .map_err(storage)?;
        tx.commit().map_err(storage)
    }

    pub(super) fn renew(
        conn: &mut Connection,
        ctx: &Ctx<'_>,
        token: &str,
    ) -> Result<DateTime<Utc>, TransportError> {
        let tx = immediate(conn)?;
        let now = ctx.now_ms();
        let (seq, _) = locked(&tx, token, now)?;
        let until = now.saturating_add(ctx.lock_ms());
        tx.execute(
            "UPDATE queue_messages SET locked_until_ms = ?2 WHERE seq = ?1",
            params![seq, until],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(from_ms(until))
    }

    pub(super) fn peek_dead_letters(
        conn: &Connection,
        from_sequence: i64,
        max: usize,
    ) -> Result<Vec<ReceivedMessage>, TransportError> {
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM queue_messages
                 WHERE dead_lettered = 1 AND seq >= ?1 ORDER BY seq LIMIT ?2"
            ))
            .map_err(storage)?;
        let rows = stmt
            .query_map(params![from_sequence, limit], message_row)
            .map_err(storage)?;
        rows.map(|r| r.map_err(storage).and_then(with_properties))
            .collect()
    }

    pub(super) fn stats(conn: &Connection, now: i64) -> Result<QueueStats, TransportError> {
        let count = |v: Option<i64>| u64::try_from(v.unwrap_or(0)).unwrap_or(0);
        conn.query_row(
            "SELECT
                 SUM(dead_lettered = 0 AND visible_ms <= ?1 AND locked_until_ms <= ?1),
                 SUM(dead_lettered = 0 AND visible_ms > ?1),
                 SUM(dead_lettered = 0 AND locked_until_ms > ?1),
                 SUM(dead_lettered = 1)
             FROM queue_messages",
            [now],
            |r| {
                Ok(QueueStats {
                    active: count(r.get(0)?),
                    scheduled: count(r.get(1)?),
                    locked: count(r.get(2)?),
                    dead_lettered: count(r.get(3)?),
                })
            },
        )
        .map_err(storage)
    }

    /// Events every subscription has read are of no more use; with no subscription at all an
    /// event has no reader (Service Bus drops it too).
    fn collect_read_events(conn: &Connection) -> Result<(), TransportError> {
        conn.execute(
            "DELETE FROM topic_events
             WHERE seq <= COALESCE((SELECT MIN(cursor) FROM subscriptions),
                                   (SELECT MAX(seq) FROM topic_events))",
            [],
        )
        .map_err(storage)?;
        Ok(())
    }

    pub(super) fn publish(
        conn: &Connection,
        message: &OutgoingMessage,
        now: i64,
    ) -> Result<(), TransportError> {
        let message_id = if message.message_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            message.message_id.clone()
        };
        conn.execute(
            "INSERT INTO topic_events (message_id, session_id, content_type, subject, correlation_id,
                 body, properties, enqueued_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                message_id,
                message.session_id,
                message.content_type,
                message.subject,
                message.correlation_id,
                message.body,
                properties_json(message)?,
                now,
            ],
        )
        .map_err(storage)?;
        collect_read_events(conn)
    }

    /// Create the subscription after the latest event ever published, unless it exists.
    pub(super) fn subscribe(conn: &Connection, name: &str, now: i64) -> Result<(), TransportError> {
        // sqlite_sequence remembers the highest sequence even after events are collected.
        conn.execute(
            "INSERT OR IGNORE INTO subscriptions (name, cursor, created_ms)
             VALUES (?1, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'topic_events'), 0), ?2)",
            params![name, now],
        )
        .map_err(storage)?;
        Ok(())
    }

    const NEXT_EVENT: &str = "SELECT seq FROM topic_events
         WHERE seq > (SELECT cursor FROM subscriptions WHERE name = ?1) ORDER BY seq LIMIT 1";

    /// Receive-and-delete: read the next event and move the cursor past it in one transaction.
    pub(super) fn next_event(
        conn: &mut Connection,
        name: &str,
    ) -> Result<Option<ReceivedMessage>, TransportError> {
        let peek = |c: &Connection| {
            c.query_row(NEXT_EVENT, [name], |r| r.get::<_, i64>(0))
                .optional()
                .map_err(storage)
        };
        if peek(conn)?.is_none() {
            return Ok(None);
        }
        let tx = immediate(conn)?;
        let Some(seq) = peek(&tx)? else {
            return Ok(None);
        };
        let row = tx
            .query_row(
                &format!("SELECT {EVENT_COLUMNS} FROM topic_events WHERE seq = ?1"),
                [seq],
                message_row,
            )
            .map_err(storage)?;
        tx.execute(
            "UPDATE subscriptions SET cursor = ?2 WHERE name = ?1",
            params![name, seq],
        )
        .map_err(storage)?;
        collect_read_events(&tx)?;
        tx.commit().map_err(storage)?;
        with_properties(row).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::db::*;
    use super::*;

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
}
