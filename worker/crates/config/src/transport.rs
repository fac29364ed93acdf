//! The `[transport]` section: which queue and topic carry commands and events (embedded SQLite
//! or Azure Service Bus), and the checks of its settings.
//!
//! May touch: nothing; pure data and validation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use onboarding_core::{CredentialConfig, Secret};

// Loaded once per process: the size of a credential's settings does not matter.
#[allow(clippy::large_enum_variant)]
/// Which transport carries commands and events (`[transport] kind = ...`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransportConfig {
    /// The SQLite-backed queue and topic: one machine, zero set-up.
    Embedded {
        path: PathBuf,
        /// Session lock duration of the embedded queue.
        #[serde(default = "default_lock_secs")]
        lock_duration_secs: u64,
        #[serde(default = "default_max_delivery")]
        max_delivery_count: u32,
        #[serde(default = "default_dup_window")]
        duplicate_detection_window_secs: u64,
    },
    /// Azure Service Bus (production): the session-enabled commands queue and the events topic,
    /// created by `infra/`. The fields default to empty so validation names every missing one.
    ServiceBus {
        /// `<name>.servicebus.windows.net`.
        #[serde(default)]
        namespace: String,
        #[serde(default)]
        queue: String,
        #[serde(default)]
        topic: String,
        /// The events subscription `producer --wait` reads: on Service Bus subscriptions are
        /// infrastructure, not created on the fly.
        #[serde(default)]
        subscription: String,
        /// An Entra credential in the namespace's own Entra tenant (workload identity for pods,
        /// the Azure CLI for people): the namespace may live in another tenant than the cluster.
        #[serde(default)]
        credential: Option<CredentialConfig>,
        /// The Service Bus emulator's connection string; never for a real namespace, whose local
        /// auth is disabled.
        #[serde(default)]
        connection_string: Option<Secret>,
    },
}

fn default_lock_secs() -> u64 {
    60
}
fn default_max_delivery() -> u32 {
    10
}
fn default_dup_window() -> u64 {
    600
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig::Embedded {
            path: PathBuf::from(".local/queue.db"),
            lock_duration_secs: default_lock_secs(),
            max_delivery_count: default_max_delivery(),
            duplicate_detection_window_secs: default_dup_window(),
        }
    }
}

impl TransportConfig {
    /// Every problem with the Service Bus settings, each naming the setting (none for the
    /// embedded transport, whose lock duration is checked against the saga budget by
    /// [`Config::validate`](crate::Config::validate)).
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let TransportConfig::ServiceBus {
            namespace,
            queue,
            topic,
            credential,
            connection_string,
            ..
        } = self
        {
            for (field, value) in [("queue", queue), ("topic", topic)] {
                if value.trim().is_empty() {
                    problems.push(format!("transport.{field} is empty (kind service_bus)"));
                }
            }
            match (credential, connection_string) {
                (None, None) => problems.push(
                    "transport.credential is missing (kind service_bus needs an Entra credential: workload_identity or azure_cli; or connection_string for the emulator)"
                        .into(),
                ),
                (Some(_), Some(_)) => problems.push(
                    "transport has both credential and connection_string; keep one (connection strings are for the emulator only)"
                        .into(),
                ),
                (Some(CredentialConfig::None), None) => problems.push(
                    "transport.credential kind none cannot sign in to Service Bus; use workload_identity or azure_cli"
                        .into(),
                ),
                (Some(c), None) => problems.extend(c.problems("transport.credential")),
                (None, Some(_)) => {}
            }
            if connection_string.is_none() && !namespace.ends_with(".servicebus.windows.net") {
                problems.push(format!(
                    "transport.namespace must be the fully qualified <name>.servicebus.windows.net, got {namespace:?}"
                ));
            }
        }
        problems
    }
}
