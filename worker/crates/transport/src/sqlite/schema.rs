//! The file itself: connection settings (WAL, `synchronous=FULL`, busy timeout), the tables and
//! their versioning, how rows map to messages, and how SQLite errors become [`TransportError`]s.
//!
//! Touches only the connection it is given (the transport's own file).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, Row, TransactionBehavior};

use crate::{OutgoingMessage, ReceivedMessage, TransportError};

/// How long a write waits for another process's transaction before giving up as `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Bumped whenever the schema changes incompatibly.
const SCHEMA_VERSION: i64 = 1;

pub(super) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(super) fn immediate(
    conn: &mut Connection,
) -> Result<rusqlite::Transaction<'_>, TransportError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(storage)
}

/// Busy/locked means another process held the file longer than the busy timeout: worth retrying.
pub(super) fn storage(e: rusqlite::Error) -> TransportError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => TransportError::Unavailable(
            format!("the transport file stayed locked by another process: {e}"),
        ),
        _ => TransportError::Storage(e.to_string()),
    }
}

pub(super) fn in_file(path: &Path, e: TransportError) -> TransportError {
    match e {
        TransportError::Storage(m) => TransportError::Storage(format!(
            "cannot prepare the transport file {}: {m}; if it is not a transport file, point the configuration elsewhere",
            path.display()
        )),
        other => other,
    }
}

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

pub(super) const MESSAGE_COLUMNS: &str = "seq, message_id, session_id, content_type, subject, correlation_id, body, properties, \
     delivery_count, enqueued_ms, dead_letter_reason, dead_letter_description";
pub(super) const EVENT_COLUMNS: &str = "seq, message_id, session_id, content_type, subject, correlation_id, body, properties, \
     1, enqueued_ms, NULL, NULL";

/// Maps a row selected with [`MESSAGE_COLUMNS`] or [`EVENT_COLUMNS`]. Properties come back
/// as JSON text and are parsed by the caller, which can report a bad row as a storage error.
pub(super) fn message_row(r: &Row<'_>) -> rusqlite::Result<(ReceivedMessage, String)> {
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

pub(super) fn with_properties(
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

pub(super) fn load_message(conn: &Connection, seq: i64) -> Result<ReceivedMessage, TransportError> {
    let row = conn
        .query_row(
            &format!("SELECT {MESSAGE_COLUMNS} FROM queue_messages WHERE seq = ?1"),
            [seq],
            message_row,
        )
        .map_err(storage)?;
    with_properties(row)
}

pub(super) fn properties_json(message: &OutgoingMessage) -> Result<String, TransportError> {
    serde_json::to_string(&message.application_properties)
        .map_err(|e| TransportError::Rejected(format!("application properties: {e}")))
}
