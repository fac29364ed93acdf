//! The event topic on the file: the [`Topic`] implementation for [`SqliteTransport`],
//! [`SqliteSubscription`] (a durable cursor, receive-and-delete), and their SQL (publish,
//! subscribe, read the next event, collect events every subscription has passed).
//!
//! The SQL is plain functions on a connection, so unit tests drive it without a runtime; the
//! trait methods name them `self::publish`, `self::next_event`, ... (this module's functions,
//! not the methods). Touches only the transport's own file, through the connection it is given.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::schema::{
    EVENT_COLUMNS, immediate, message_row, properties_json, storage, with_properties,
};
use super::transport::SqliteTransport;
use crate::{OutgoingMessage, ReceivedMessage, Subscription, Topic, TransportError};

/// Service Bus limits subscription names to 50 characters.
const MAX_SUBSCRIPTION_NAME: usize = 50;

#[async_trait::async_trait]
impl Topic for SqliteTransport {
    async fn publish(&self, message: OutgoingMessage) -> Result<(), TransportError> {
        self.check_size(&message)?;
        self.blocking(move |conn, ctx| {
            let tx = immediate(conn)?;
            self::publish(&tx, &message, ctx.now_ms())?;
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
            self::subscribe(&tx, &n, ctx.now_ms())?;
            tx.commit().map_err(storage)
        })
        .await?;
        Ok(Box::new(SqliteSubscription {
            transport: self.clone(),
            name,
        }))
    }

    async fn unsubscribe(&self, subscription: &str) -> Result<(), TransportError> {
        let name = subscription.to_owned();
        self.blocking(move |conn, _| {
            let tx = immediate(conn)?;
            self::unsubscribe(&tx, &name)?;
            tx.commit().map_err(storage)
        })
        .await
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
                move |conn, _| self::next_event(conn, &name),
            )
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// The SQL
// ---------------------------------------------------------------------------------------------

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

/// Drop the subscription; the events only it still held go with it.
pub(super) fn unsubscribe(conn: &Connection, name: &str) -> Result<(), TransportError> {
    conn.execute("DELETE FROM subscriptions WHERE name = ?1", [name])
        .map_err(storage)?;
    collect_read_events(conn)
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
