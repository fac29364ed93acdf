//! [`SqliteTransport`] and [`SqliteTransportOptions`]: opening the file, the shared connection,
//! running SQL on tokio's blocking pool, and waiting for messages (polling the file, woken early
//! by sends from this process).
//!
//! Touches only its own SQLite file (and creates the file's parent directories).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onboarding_core::Clock;
use rusqlite::Connection;
use tokio::sync::Notify;

use super::POLL_INTERVAL;
use super::schema::{configure, duration_ms, in_file, init_schema};
use crate::{OutgoingMessage, TransportError};

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
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) path: PathBuf,
    pub(super) options: SqliteTransportOptions,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) conn: Mutex<Connection>,
    /// Woken when this process changes the queue in a way that may let a waiter receive.
    pub(super) queue_changed: Notify,
    /// Woken when this process publishes an event.
    pub(super) topic_changed: Notify,
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
        configure(&conn).map_err(|e| in_file(path, e))?;
        init_schema(&conn).map_err(|e| in_file(path, e))?;
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

    pub(super) fn check_size(&self, message: &OutgoingMessage) -> Result<(), TransportError> {
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
    pub(super) async fn blocking<T, F>(&self, f: F) -> Result<T, TransportError>
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
    pub(super) async fn wait_for<T, F>(
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
}

/// What a blocking closure may use besides the connection.
pub(super) struct Ctx<'a> {
    pub(super) clock: &'a dyn Clock,
    pub(super) options: &'a SqliteTransportOptions,
}

impl Ctx<'_> {
    pub(super) fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }
    pub(super) fn lock_ms(&self) -> i64 {
        duration_ms(self.options.lock_duration)
    }
}
