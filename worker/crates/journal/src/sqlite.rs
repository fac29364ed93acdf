//! SQLite journal: the embedded default, one database file that every worker process on a machine
//! may share.
//!
//! May touch: the database file given to [`SqliteJournal::open`] (and its `-wal`/`-shm` siblings)
//! and nothing else. The file is in WAL mode with a busy timeout, so several processes can open it
//! at once; every compare-and-swap runs in an `IMMEDIATE` transaction, which takes SQLite's write
//! lock before reading the version, so two writers can never both see the same version and both
//! win. SQLite calls block, so they run on tokio's blocking pool, never on the async runtime.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tracing::Instrument;

use super::{Journal, JournalError, NameClaim, Versioned};

/// How long a statement waits for another process's write lock before giving up with
/// [`JournalError::Unavailable`]. Journal transactions are a few statements long, so a wait this
/// long means something is wrong rather than busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS journal (
    key        TEXT PRIMARY KEY NOT NULL,
    version    INTEGER NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS name_claims (
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    claimed_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
";

/// The SQLite journal. Cheap to clone: clones share one connection and one write counter.
#[derive(Clone)]
pub struct SqliteJournal {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    // One connection per instance: SQLite serialises writers anyway, and the IMMEDIATE
    // transaction, not this mutex, is what makes compare-and-swap safe across processes.
    conn: Mutex<Connection>,
    writes: AtomicU64,
}

impl std::fmt::Debug for SqliteJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJournal")
            .field("path", &self.inner.path)
            .field("writes", &self.writes())
            .finish()
    }
}

impl SqliteJournal {
    /// Opens (creating if needed) the journal at `path`, creating missing parent directories.
    /// Blocks on file I/O: call it at start-up, or from `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                JournalError::Unavailable(format!(
                    "cannot create the directory {} for the SQLite journal: {e}; check that the worker may write there",
                    parent.display()
                ))
            })?;
        }
        let fail = |what: &str, e: rusqlite::Error| {
            JournalError::Unavailable(format!(
                "cannot {what} the SQLite journal {}: {e}",
                path.display()
            ))
        };
        let conn = Connection::open(path).map_err(|e| fail("open", e))?;
        // The timeout first: switching to WAL and creating the schema take locks that another
        // process opening the same file at the same moment may hold.
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail("configure", e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| fail("switch to WAL mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(JournalError::Unavailable(format!(
                "the SQLite journal {} refused WAL mode (got {mode:?}); put it on a local file system",
                path.display()
            )));
        }
        conn.execute_batch(SCHEMA)
            .map_err(|e| fail("create the schema of", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                conn: Mutex::new(conn),
                writes: AtomicU64::new(0),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Successful stores through this instance (and its clones) since it was opened.
    pub fn writes(&self) -> u64 {
        self.inner.writes.load(Ordering::Relaxed)
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Inner) -> Result<T, JournalError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave the connection half-written: SQLite
            // rolls back an unfinished transaction when it is dropped. So a poisoned lock is safe.
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn, &inner)
        })
        .await
        .map_err(|e| {
            JournalError::Unavailable(format!(
                "the SQLite journal {} task did not finish: {e}",
                self.inner.path.display()
            ))
        })?
    }
}

impl Inner {
    fn sql_error(&self, what: &str, e: rusqlite::Error) -> JournalError {
        JournalError::Unavailable(format!(
            "SQLite journal {}: {what} failed: {e}",
            self.path.display()
        ))
    }
}

fn to_version(raw: i64, key: &str) -> Result<u64, JournalError> {
    u64::try_from(raw).map_err(|_| JournalError::Corrupt {
        key: key.to_string(),
        message: format!("negative version {raw}"),
    })
}

fn from_version(version: u64, key: &str) -> Result<i64, JournalError> {
    i64::try_from(version).map_err(|_| JournalError::Conflict {
        key: key.to_string(),
        expected: Some(version),
        found: None,
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

#[async_trait::async_trait]
impl Journal for SqliteJournal {
    async fn load(&self, key: &str) -> Result<Option<Versioned<serde_json::Value>>, JournalError> {
        let key = key.to_string();
        self.with_conn(move |conn, inner| {
            let row: Option<(i64, String)> = conn
                .query_row(
                    "SELECT version, value FROM journal WHERE key = ?1",
                    params![key],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(|e| inner.sql_error(&format!("reading record {key}"), e))?;
            let Some((version, text)) = row else {
                return Ok(None);
            };
            let value = serde_json::from_str(&text).map_err(|e| JournalError::Corrupt {
                key: key.clone(),
                message: format!("stored value is not JSON: {e}"),
            })?;
            Ok(Some(Versioned {
                version: to_version(version, &key)?,
                value,
            }))
        })
        .await
    }

    async fn store(
        &self,
        key: &str,
        value: &serde_json::Value,
        expected: Option<u64>,
    ) -> Result<u64, JournalError> {
        let key = key.to_string();
        let text = serde_json::to_string(value).map_err(|e| JournalError::Corrupt {
            key: key.clone(),
            message: format!("value cannot be serialised: {e}"),
        })?;
        let span =
            tracing::debug_span!("journal.store", journal.key = %key, journal.expected = ?expected);
        self.with_conn(move |conn, inner| {
            let fail = |e| inner.sql_error(&format!("storing record {key}"), e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            let found: Option<i64> = tx
                .query_row(
                    "SELECT version FROM journal WHERE key = ?1",
                    params![key],
                    |row| row.get(0),
                )
                .optional()
                .map_err(fail)?;
            let found = found.map(|v| to_version(v, &key)).transpose()?;
            if found != expected {
                return Err(JournalError::Conflict {
                    key: key.clone(),
                    expected,
                    found,
                });
            }
            let new_version = match expected {
                None => {
                    tx.execute(
                        "INSERT INTO journal (key, version, value, updated_at) VALUES (?1, 1, ?2, ?3)",
                        params![key, text, now()],
                    )
                    .map_err(fail)?;
                    1
                }
                Some(v) => {
                    let next = v.checked_add(1).ok_or_else(|| JournalError::Corrupt {
                        key: key.clone(),
                        message: format!("version {v} cannot be incremented"),
                    })?;
                    tx.execute(
                        "UPDATE journal SET version = ?2, value = ?3, updated_at = ?4 WHERE key = ?1",
                        params![key, from_version(next, &key)?, text, now()],
                    )
                    .map_err(fail)?;
                    next
                }
            };
            tx.commit().map_err(fail)?;
            inner.writes.fetch_add(1, Ordering::Relaxed);
            Ok(new_version)
        })
        .instrument(span)
        .await
    }

    async fn keys(&self) -> Result<Vec<String>, JournalError> {
        self.with_conn(|conn, inner| {
            let fail = |e| inner.sql_error("listing records", e);
            // SQLite's default BINARY collation compares bytes, which is how `str` orders too.
            let mut stmt = conn
                .prepare("SELECT key FROM journal ORDER BY key")
                .map_err(fail)?;
            let keys = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(fail)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(fail)?;
            Ok(keys)
        })
        .await
    }

    async fn claim_names(&self, tenant: &str, claims: &[NameClaim]) -> Result<(), JournalError> {
        let tenant = tenant.to_string();
        let claims = claims.to_vec();
        let span =
            tracing::debug_span!("journal.claim_names", tenant.id = %tenant, claims = claims.len());
        self.with_conn(move |conn, inner| {
            let fail = |e| inner.sql_error(&format!("claiming names for tenant {tenant}"), e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            for claim in &claims {
                let owner: Option<String> = tx
                    .query_row(
                        "SELECT owner FROM name_claims WHERE kind = ?1 AND name = ?2",
                        params![claim.kind, claim.name],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(fail)?;
                if let Some(owner) = owner.filter(|o| *o != tenant) {
                    // Dropping `tx` rolls back: nothing of this batch is claimed.
                    return Err(JournalError::NameTaken {
                        kind: claim.kind.clone(),
                        name: claim.name.clone(),
                        tenant: tenant.clone(),
                        owner,
                    });
                }
            }
            let at = now();
            for claim in &claims {
                tx.execute(
                    "INSERT OR IGNORE INTO name_claims (kind, name, owner, claimed_at) VALUES (?1, ?2, ?3, ?4)",
                    params![claim.kind, claim.name, tenant, at],
                )
                .map_err(fail)?;
            }
            tx.commit().map_err(fail)
        })
        .instrument(span)
        .await
    }

    async fn release_names(&self, tenant: &str, claims: &[NameClaim]) -> Result<(), JournalError> {
        let tenant = tenant.to_string();
        let claims = claims.to_vec();
        self.with_conn(move |conn, inner| {
            let fail = |e| inner.sql_error(&format!("releasing names of tenant {tenant}"), e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            for claim in &claims {
                tx.execute(
                    "DELETE FROM name_claims WHERE kind = ?1 AND name = ?2 AND owner = ?3",
                    params![claim.kind, claim.name, tenant],
                )
                .map_err(fail)?;
            }
            tx.commit().map_err(fail)
        })
        .await
    }

    async fn ping(&self) -> Result<(), JournalError> {
        self.with_conn(|conn, inner| {
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|_| ())
            .map_err(|e| inner.sql_error("ping", e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_creates_missing_parent_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/journal.db");
        let journal = SqliteJournal::open(&path).unwrap();
        assert!(path.exists());
        assert_eq!(journal.path(), path);
    }

    #[tokio::test]
    async fn the_write_counter_counts_successful_stores_only() {
        let dir = tempfile::tempdir().unwrap();
        let journal = SqliteJournal::open(&dir.path().join("j.db")).unwrap();
        let value = serde_json::json!({"step": 1});
        assert_eq!(journal.store("t", &value, None).await.unwrap(), 1);
        assert_eq!(journal.store("t", &value, Some(1)).await.unwrap(), 2);
        assert!(journal.store("t", &value, Some(1)).await.is_err());
        assert_eq!(journal.writes(), 2);
        assert_eq!(journal.clone().writes(), 2);
    }

    #[tokio::test]
    async fn a_value_that_is_not_json_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let journal = SqliteJournal::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO journal (key, version, value, updated_at) VALUES ('t', 1, '{nope', '')",
            [],
        )
        .unwrap();
        match journal.load("t").await {
            Err(JournalError::Corrupt { key, .. }) => assert_eq!(key, "t"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_journal_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let value = serde_json::json!({"kept": true});
        SqliteJournal::open(&path)
            .unwrap()
            .store("t", &value, None)
            .await
            .unwrap();
        let reopened = SqliteJournal::open(&path).unwrap();
        let loaded = reopened.load("t").await.unwrap().unwrap();
        assert_eq!(loaded.version, 1);
        assert_eq!(loaded.value, value);
    }
}
