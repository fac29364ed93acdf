//! Configuration: embedded defaults, then a TOML file, then `ONBOARD__*` environment variables.
//!
//! Provisioning targets live here and only here: a command may name a target, never a
//! subscription, tenant, scope or identity (no confused deputy). This crate is the only place in
//! the library that reads the environment, and only when a binary asks it to.
//!
//! One module per section of the file ([`transport`](TransportConfig), [`journal`](JournalConfig),
//! `targets` (their validation; the types come from `onboarding_providers`), [`worker`](WorkerSettings),
//! [`telemetry`](TelemetryConfig), [`health`](HealthConfig), [`saga`](SagaConfig), [`arm`](ArmConfig), [`drift`](DriftConfig)), plus `load`
//! (layering the sources), `validate` (every problem at once) and `redact` (printing without
//! secrets). Every type is re-exported here, so `onboarding_config::X` is the path to use.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use arm::ArmConfig;
pub use drift::DriftConfig;
pub use health::HealthConfig;
pub use journal::{JournalConfig, TableCredentialConfig};
pub use onboarding_core::{
    AzureCliSettings, Cloud, CloudName, CredentialConfig, EntraEnvironment,
    ManagedIdentitySettings, REDACTED, Secret, WorkloadIdentitySettings,
};
pub use onboarding_providers::{
    EgressRule, GuardrailDefaults, KubernetesConfig, Provisioning, Target, WorkloadTemplate,
};
pub use redact::SECRET_FIELDS;
pub use saga::SagaConfig;
pub use telemetry::{LogFormat, TelemetryConfig};
pub use transport::TransportConfig;
pub use worker::WorkerSettings;

mod arm;
mod drift;
mod health;
mod journal;
mod load;
mod redact;
mod saga;
mod targets;
mod telemetry;
mod transport;
mod validate;
mod worker;

#[cfg(test)]
mod tests;

/// Environment variables with this prefix override the file, `__` separating levels:
/// `ONBOARD__SAGA__MESSAGE_BUDGET_SECS=20`.
pub const ENV_PREFIX: &str = "ONBOARD";

/// Everything the worker and the producer need to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub transport: TransportConfig,
    pub journal: JournalConfig,
    /// The target a command gets when it names none.
    pub default_target: String,
    pub targets: BTreeMap<String, Target>,
    pub saga: SagaConfig,
    pub worker: WorkerSettings,
    pub guardrails: GuardrailDefaults,
    /// When set, a command may ask for its workload to be deployed from this template.
    pub workload: Option<WorkloadTemplate>,
    pub telemetry: TelemetryConfig,
    pub health: HealthConfig,
    /// The write budget every replica shares per subscription.
    pub arm: ArmConfig,
    /// The periodic drift check (off by default).
    pub drift: DriftConfig,
}

impl Default for Config {
    fn default() -> Self {
        let mut targets = BTreeMap::new();
        targets.insert("default".to_string(), Target::local("default"));
        Self {
            transport: TransportConfig::default(),
            journal: JournalConfig::default(),
            default_target: "default".into(),
            targets,
            saga: SagaConfig::default(),
            worker: WorkerSettings::default(),
            guardrails: GuardrailDefaults::default(),
            workload: Some(WorkloadTemplate::default()),
            telemetry: TelemetryConfig::default(),
            health: HealthConfig::default(),
            arm: ArmConfig::default(),
            drift: DriftConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(String),
    #[error("configuration is invalid:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Where and how to provision, as the saga and the providers see it.
    pub fn provisioning(&self) -> Provisioning {
        Provisioning {
            default_target: self.default_target.clone(),
            targets: self.targets.clone(),
            guardrails: self.guardrails.clone(),
            workload: self.workload_template().cloned(),
        }
    }

    /// The workload template, unless `[workload] enabled = false` turned workloads off.
    pub fn workload_template(&self) -> Option<&WorkloadTemplate> {
        self.workload.as_ref().filter(|w| w.enabled)
    }

    pub fn target(&self, name: Option<&str>) -> Option<&Target> {
        self.targets.get(name.unwrap_or(&self.default_target))
    }
}
