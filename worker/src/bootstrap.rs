//! Building the clients a process needs from configuration: the one place that maps config
//! kinds to implementations, shared by the `worker` and `producer` binaries and the e2e suites.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, JournalConfig, TransportConfig};
use crate::context::Context;
use crate::journal::Journal;
use crate::journal::sqlite::SqliteJournal;
use crate::transport::sqlite::{SqliteTransport, SqliteTransportOptions};
use crate::transport::{Queue, Topic};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot open the {part}: {message}")]
    Open { part: &'static str, message: String },
}

/// The command queue and the event topic of one transport.
pub type Transport = (Arc<dyn Queue>, Arc<dyn Topic>);

/// The queue and topic chosen by `transport.kind`.
pub fn open_transport(config: &Config, clock: Arc<dyn Clock>) -> Result<Transport, BootstrapError> {
    match &config.transport {
        TransportConfig::Embedded {
            path,
            lock_duration_secs,
            max_delivery_count,
            duplicate_detection_window_secs,
        } => {
            let options = SqliteTransportOptions {
                lock_duration: Duration::from_secs(*lock_duration_secs),
                max_delivery_count: *max_delivery_count,
                duplicate_detection_window: Duration::from_secs(*duplicate_detection_window_secs),
                ..SqliteTransportOptions::default()
            };
            let t = Arc::new(SqliteTransport::open(path, options, clock).map_err(|e| {
                BootstrapError::Open {
                    part: "embedded transport",
                    message: format!("{}: {e}", path.display()),
                }
            })?);
            Ok((t.clone(), t))
        }
    }
}

/// The journal chosen by `journal.kind`.
pub fn open_journal(config: &Config) -> Result<Arc<dyn Journal>, BootstrapError> {
    match &config.journal {
        JournalConfig::Sqlite { path } => {
            let j = SqliteJournal::open(path).map_err(|e| BootstrapError::Open {
                part: "SQLite journal",
                message: format!("{}: {e}", path.display()),
            })?;
            Ok(Arc::new(j))
        }
    }
}

/// Every client the worker needs.
pub async fn build_context(config: Arc<Config>) -> Result<Context, BootstrapError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (queue, topic) = open_transport(&config, clock.clone())?;
    let journal = open_journal(&config)?;
    let azure = Arc::new(
        crate::azure::ArmProvisioner::from_targets(
            &config.targets,
            crate::azure::ArmClientOptions::default(),
        )
        .map_err(|e| BootstrapError::Open {
            part: "Azure Resource Manager client",
            message: e.to_string(),
        })?,
    );
    let kube = Arc::new(
        crate::k8s::KubeApplier::from_targets(&config.targets)
            .await
            .map_err(|e| BootstrapError::Open {
                part: "Kubernetes client",
                message: e.to_string(),
            })?,
    );
    Ok(Context {
        config,
        queue,
        topic,
        journal,
        azure,
        kube,
        clock,
        worker_id: format!("worker-{}", uuid::Uuid::new_v4().simple()),
    })
}
