//! The command queue on the file: the [`Queue`] implementation for [`SqliteTransport`] and its
//! SQL (send with duplicate detection, the visibility query, peek-lock receive with
//! dead-lettering past the max delivery count, settle, renew, dead letters, counts).
//!
//! The SQL is plain functions on a connection, so unit tests drive it without a runtime; the
//! trait methods name them `self::send`, `self::receive`, ... (this module's functions, not the
//! methods). Touches only the transport's own file, through the connection it is given.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::MAX_DELIVERY_COUNT_EXCEEDED;
use super::schema::{
    MESSAGE_COLUMNS, duration_ms, from_ms, immediate, load_message, message_row, properties_json,
    storage, with_properties,
};
use super::transport::{Ctx, SqliteTransport};
use crate::{
    Delivery, LockToken, OutgoingMessage, Queue, QueueStats, ReceivedMessage, SendOutcome,
    TransportError,
};

impl SqliteTransport {
    async fn settle(&self, lock: &LockToken, action: Settle) -> Result<(), TransportError> {
        let token = lock.0.clone();
        self.blocking(move |conn, ctx| self::settle(conn, ctx, &token, action))
            .await?;
        self.inner.queue_changed.notify_waiters();
        Ok(())
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
                let r = self::send(&tx, &message, now, window)?;
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
        self.wait_for(max_wait, |i| &i.queue_changed, self::receive)
            .await
    }

    async fn renew_lock(&self, lock: &LockToken) -> Result<DateTime<Utc>, TransportError> {
        let token = lock.0.clone();
        self.blocking(move |conn, ctx| self::renew(conn, ctx, &token))
            .await
    }

    async fn complete(&self, lock: &LockToken) -> Result<(), TransportError> {
        self.settle(lock, Settle::Complete).await
    }

    async fn abandon(&self, lock: &LockToken) -> Result<(), TransportError> {
        self.settle(lock, Settle::Abandon).await
    }

    async fn dead_letter(
        &self,
        lock: &LockToken,
        reason: &str,
        description: &str,
    ) -> Result<(), TransportError> {
        self.settle(
            lock,
            Settle::DeadLetter {
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
        self.blocking(move |conn, _| self::peek_dead_letters(conn, from_sequence, max))
            .await
    }

    async fn receive_dead_letter(
        &self,
        max_wait: Duration,
    ) -> Result<Option<Delivery>, TransportError> {
        self.wait_for(max_wait, |i| &i.queue_changed, self::receive_dead_letter)
            .await
    }

    async fn stats(&self) -> Result<QueueStats, TransportError> {
        self.blocking(|conn, ctx| self::stats(conn, ctx.now_ms()))
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// The SQL
// ---------------------------------------------------------------------------------------------

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
                    format!("delivered {count} times without being settled; the limit is {max}")
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

fn lock(conn: &Connection, seq: i64, now: i64, lock_ms: i64) -> Result<Delivery, TransportError> {
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
