//! Opening the transport and the journal a configuration names: the one place that maps their
//! config kinds to implementations, shared by the `worker` and `producer` binaries and the e2e
//! suites. Links no saga and no provider, so the producer can use it.
//!
//! May touch: the queue, topic and journal the configuration names, and the credentials they
//! sign in with.

use std::sync::Arc;
use std::time::Duration;

use onboarding_config::{Config, JournalConfig, TableCredentialConfig, TransportConfig};
use onboarding_core::Classify;
use onboarding_core::Clock;
use onboarding_identity::credential_for;
use onboarding_journal::azure_table::{AzureTableJournal, TableAuth};
use onboarding_journal::sqlite::SqliteJournal;
use onboarding_journal::{Journal, JournalError};
use onboarding_transport::servicebus::{ServiceBusAuth, ServiceBusSettings, ServiceBusTransport};
use onboarding_transport::sqlite::{SqliteTransport, SqliteTransportOptions};
use onboarding_transport::{Queue, Topic};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot open the {part}: {message}")]
    Open { part: &'static str, message: String },
}

/// The command queue and the event topic of one transport.
pub type Transport = (Arc<dyn Queue>, Arc<dyn Topic>);

/// The queue and topic chosen by `transport.kind`. Service Bus connects here (AMQP).
pub async fn open_transport(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> Result<Transport, BootstrapError> {
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
        TransportConfig::ServiceBus {
            namespace,
            queue,
            topic,
            credential,
            connection_string,
            ..
        } => {
            let open = |message: String| BootstrapError::Open {
                part: "Service Bus transport",
                message,
            };
            let auth = match (connection_string, credential) {
                (Some(cs), _) => ServiceBusAuth::ConnectionString(cs.expose().to_string()),
                (None, Some(c)) => ServiceBusAuth::Credential(
                    credential_for(c)
                        .map_err(|e| open(e.to_string()))?
                        .ok_or_else(|| {
                            open(
                                "transport.credential kind none cannot sign in to Service Bus"
                                    .into(),
                            )
                        })?,
                ),
                (None, None) => return Err(open("transport.credential is missing".into())),
            };
            let mut settings = ServiceBusSettings::new(namespace, queue, topic, auth);
            if let Some(c) = credential {
                settings.scope = c.cloud().service_bus_scope().to_string();
            }
            let t = Arc::new(
                ServiceBusTransport::connect(settings)
                    .await
                    .map_err(|e| open(format!("{namespace}: {e}")))?,
            );
            Ok((t.clone(), t))
        }
    }
}

/// The events subscription a producer reads: the configured one on Service Bus (subscriptions
/// are infrastructure there), a fresh one of its own on the embedded topic.
pub fn events_subscription(config: &Config) -> String {
    match &config.transport {
        TransportConfig::ServiceBus { subscription, .. } if !subscription.is_empty() => {
            subscription.clone()
        }
        _ => format!("producer-{}", uuid::Uuid::new_v4().simple()),
    }
}

/// The journal chosen by `journal.kind`. Sends nothing over the network: readers (the producer)
/// use it as is; the worker uses [`prepare_journal`], which also checks that it is usable.
pub fn open_journal(config: &Config) -> Result<Arc<dyn Journal>, BootstrapError> {
    match &config.journal {
        JournalConfig::Sqlite { path } => {
            let j = SqliteJournal::open(path).map_err(|e| BootstrapError::Open {
                part: "SQLite journal",
                message: format!("{}: {e}", path.display()),
            })?;
            Ok(Arc::new(j))
        }
        JournalConfig::AzureTable { .. } => Ok(Arc::new(azure_table_journal(config)?)),
    }
}

/// The Azure Table journal of `journal` (which must be of kind `azure_table`).
fn azure_table_journal(config: &Config) -> Result<AzureTableJournal, BootstrapError> {
    let open_err = |message: String| BootstrapError::Open {
        part: "Azure Table journal",
        message,
    };
    let JournalConfig::AzureTable {
        endpoint,
        table,
        credential,
        ..
    } = &config.journal
    else {
        return Err(open_err("journal.kind is not azure_table".into()));
    };
    let url = url::Url::parse(endpoint)
        .map_err(|e| open_err(format!("journal.endpoint {endpoint:?} is not a URL: {e}")))?;
    let auth = match credential {
        None => return Err(open_err("journal.credential is missing".into())),
        Some(TableCredentialConfig::SharedKey { account, key }) => TableAuth::SharedKey {
            account: account.clone(),
            key: key.expose().to_string(),
        },
        Some(other) => {
            let config = other
                .token_credential()
                .ok_or_else(|| open_err("journal.credential names no Entra credential".into()))?;
            let credential = credential_for(&config)
                .map_err(|e| open_err(e.to_string()))?
                .ok_or_else(|| open_err("journal.credential names no Entra credential".into()))?;
            TableAuth::Bearer {
                credential,
                scope: config.cloud().storage_scope().to_string(),
            }
        }
    };
    AzureTableJournal::new(url, table.clone(), auth).map_err(|e| open_err(e.to_string()))
}

/// The worker's journal: [`open_journal`], then the table created when configured
/// (`journal.create_table`), then one reachability check. A refusal (missing permission or
/// table, a wrong key) stops start-up with the storage's explanation; an outage only warns,
/// since the readiness probe reports it and the saga engine retries.
pub async fn prepare_journal(config: &Config) -> Result<Arc<dyn Journal>, BootstrapError> {
    let journal: Arc<dyn Journal> = match &config.journal {
        JournalConfig::AzureTable { create_table, .. } => {
            let j = azure_table_journal(config)?;
            if *create_table {
                j.ensure_table().await.map_err(|e| BootstrapError::Open {
                    part: "Azure Table journal",
                    message: format!("creating table {}: {e}", j.table()),
                })?;
            }
            Arc::new(j)
        }
        JournalConfig::Sqlite { .. } => open_journal(config)?,
    };
    match journal.ping().await {
        Ok(()) => {}
        Err(e @ JournalError::Unavailable(_)) => {
            tracing::warn!(error = %e, "the journal is not reachable yet; /readyz reports it until it is");
        }
        Err(e) if !e.is_transient() => {
            let mut message = e.to_string();
            if let JournalConfig::AzureTable {
                create_table: false,
                ..
            } = &config.journal
                && message.contains("TableNotFound")
            {
                message.push_str(
                    "; deploy infra/main.bicep (which creates the table), or let the worker create it with journal.create_table = true (its identity then needs a role that may create tables)",
                );
            }
            return Err(BootstrapError::Open {
                part: "journal",
                message,
            });
        }
        Err(e) => tracing::warn!(error = %e, "journal check failed"),
    }
    Ok(journal)
}
