//! Opening the worker's journal and queue for reading, refusing to invent empty ones: an
//! embedded (SQLite) file that does not exist means the producer is not looking where the
//! worker writes (relative paths resolve against the current directory), and creating it would
//! answer "no tenant" or "the dead-letter queue is empty" for the wrong reason.
//!
//! May touch: the file system (whether the files exist), then the journal and transport as the
//! configuration names them.

use std::path::Path;
use std::sync::Arc;

use onboarding_config::{Config, JournalConfig, TransportConfig};
use onboarding_core::SystemClock;
use onboarding_journal::Journal;
use onboarding_transport::{Queue, Topic};

use crate::{EXIT_FAILED, EXIT_INVALID, Failure};

fn must_exist(what: &str, path: &Path) -> Result<(), Failure> {
    if path.exists() {
        return Ok(());
    }
    let absolute = std::env::current_dir()
        .map(|d| d.join(path))
        .unwrap_or_else(|_| path.to_path_buf());
    Err(Failure::new(
        EXIT_INVALID,
        format!(
            "there is no {what} at {}: the worker has not run with this configuration, or this is not where it runs (relative paths resolve against the current directory); run from there, or pass the worker's --config",
            absolute.display()
        ),
    ))
}

/// The journal, for reading what the worker wrote.
pub fn existing_journal(config: &Config) -> Result<Arc<dyn Journal>, Failure> {
    if let JournalConfig::Sqlite { path } = &config.journal {
        must_exist("journal", path)?;
    }
    onboarding_bootstrap::open_journal(config).map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))
}

/// The queue (and topic), for working the queue the worker reads.
pub async fn existing_transport(
    config: &Config,
) -> Result<(Arc<dyn Queue>, Arc<dyn Topic>), Failure> {
    if let TransportConfig::Embedded { path, .. } = &config.transport {
        must_exist("queue", path)?;
    }
    onboarding_bootstrap::open_transport(config, Arc::new(SystemClock))
        .await
        .map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))
}

/// Every tenant record the journal holds (or just `tenant`'s), sorted by tenant id: tenant
/// records only, not the request registry, cluster lines or budgets the journal also holds
/// (their keys have a ':', which a tenant id never has).
pub async fn tenant_records(
    journal: &dyn Journal,
    tenant: Option<&str>,
) -> Result<Vec<onboarding_record::TenantRecord>, Failure> {
    let failed = |e: onboarding_journal::JournalError| Failure::new(EXIT_FAILED, e.to_string());
    let keys = match tenant {
        Some(t) => vec![t.to_string()],
        None => journal
            .keys()
            .await
            .map_err(failed)?
            .into_iter()
            .filter(|k| !k.contains(':'))
            .collect(),
    };
    let mut records = Vec::new();
    for key in keys {
        let Some(stored) = journal.load(&key).await.map_err(failed)? else {
            continue;
        };
        records.push(serde_json::from_value(stored.value).map_err(|e| {
            Failure::new(
                EXIT_FAILED,
                format!("the journal record of {key} cannot be read: {e}"),
            )
        })?);
    }
    Ok(records)
}
