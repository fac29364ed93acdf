//! Configuration: embedded defaults, then a TOML file, then `ONBOARD__*` environment variables.
//!
//! Provisioning targets live here and only here: a command may name a target, never a
//! subscription, tenant, scope or identity (no confused deputy). This module is the only place in
//! the library that reads the environment, and only when a binary asks it to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
        }
    }
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum JournalConfig {
    Sqlite { path: PathBuf },
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig::Sqlite {
            path: PathBuf::from(".local/journal.db"),
        }
    }
}

/// Where and how a tenant is provisioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    #[serde(default)]
    pub name: String,
    pub subscription_id: String,
    /// Resource group of the tenants' managed identities.
    pub resource_group: String,
    pub location: String,
    pub cluster_resource_group: String,
    pub cluster_name: String,
    /// The cluster's OIDC issuer URL, trusted by every tenant's federated credential.
    pub oidc_issuer: String,
    pub storage_resource_group: String,
    pub storage_account: String,
    /// Entra tenant of the tenants' identities.
    pub identity_entra_tenant_id: String,
    /// Entra tenant the cluster's workload identity webhook defaults to. When it differs from
    /// `identity_entra_tenant_id`, service accounts carry `azure.workload.identity/tenant-id`.
    pub cluster_entra_tenant_id: String,
    /// ARM endpoint: `https://management.azure.com`, or a simulator.
    pub arm_endpoint: String,
    pub credential: CredentialConfig,
    pub kubernetes: KubernetesConfig,
}

impl Target {
    /// A target pointing at simulators on loopback, for the local run and tests.
    pub fn local(name: &str) -> Self {
        Self {
            name: name.into(),
            subscription_id: "00000000-0000-0000-0000-000000000001".into(),
            resource_group: "rg-tenants".into(),
            location: "westeurope".into(),
            cluster_resource_group: "rg-aks".into(),
            cluster_name: "aks-shared".into(),
            oidc_issuer: "https://oidc.sim.local/00000000-0000-0000-0000-00000000000c/".into(),
            storage_resource_group: "rg-data".into(),
            storage_account: "sttenantdata".into(),
            identity_entra_tenant_id: "00000000-0000-0000-0000-0000000000e1".into(),
            cluster_entra_tenant_id: "00000000-0000-0000-0000-0000000000e1".into(),
            arm_endpoint: "http://127.0.0.1:8780".into(),
            credential: CredentialConfig::None,
            kubernetes: KubernetesConfig {
                server: Some("http://127.0.0.1:8781".into()),
                ..KubernetesConfig::default()
            },
        }
    }
}

/// How to get an ARM token for a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialConfig {
    /// No token: only for simulators on loopback.
    None,
    /// A developer's `az login`.
    AzureCli { tenant_id: Option<String> },
    /// Federated token file projected into the pod, exchanged in the given Entra tenant.
    WorkloadIdentity {
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// API server URL without credentials (simulators, `kubectl proxy`).
    pub server: Option<String>,
    /// Path to a kubeconfig; with `context`, which of its contexts.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Use the pod's service account.
    pub in_cluster: bool,
}

/// Timing and retry policy of the saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SagaConfig {
    /// How long one message may advance a saga; well under the lock duration.
    pub message_budget_ms: u64,
    /// In-process retry budget of one step call before yielding with a continuation.
    pub step_retry_budget_ms: u64,
    /// First delay of in-process retries.
    pub retry_initial_delay_ms: u64,
    /// Delay of the first continuation after a transient failure; doubles per attempt.
    pub continuation_base_delay_ms: u64,
    pub continuation_max_delay_ms: u64,
    /// Continuations a step may spend on transient failures before it is treated as permanent.
    pub step_attempt_limit: u32,
    /// The same, for compensations (which then end in `CompensationFailed`).
    pub compensation_attempt_limit: u32,
    /// Finished requests remembered per tenant for idempotent replays.
    pub remembered_requests: usize,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            message_budget_ms: 20_000,
            step_retry_budget_ms: 5_000,
            retry_initial_delay_ms: 100,
            continuation_base_delay_ms: 2_000,
            continuation_max_delay_ms: 120_000,
            step_attempt_limit: 8,
            compensation_attempt_limit: 8,
            remembered_requests: 50,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Messages (so tenants) worked on at once.
    pub concurrency: usize,
    /// Time given to in-flight work after SIGTERM before it is abandoned.
    pub shutdown_grace_ms: u64,
    /// Bodies larger than this are dead-lettered unread.
    pub max_message_bytes: usize,
    /// How long one receive call waits for a message.
    pub receive_wait_ms: u64,
    /// The worker exits once the queue has been empty this long (0: never). For batch runs.
    pub exit_when_idle_ms: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            shutdown_grace_ms: 30_000,
            max_message_bytes: 64 * 1024,
            receive_wait_ms: 1_000,
            exit_when_idle_ms: 0,
        }
    }
}

/// Quota and limits a tenant gets when its command does not say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardrailDefaults {
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub default_container_cpu: String,
    pub default_container_memory: String,
}

impl Default for GuardrailDefaults {
    fn default() -> Self {
        Self {
            cpu: "8".into(),
            memory: "32Gi".into(),
            pods: 50,
            default_container_cpu: "250m".into(),
            default_container_memory: "256Mi".into(),
        }
    }
}

/// The tenant workload's Deployment template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkloadTemplate {
    pub image: String,
    pub port: u16,
    pub cpu: String,
    pub memory: String,
}

impl Default for WorkloadTemplate {
    fn default() -> Self {
        Self {
            image: "mcr.microsoft.com/azuredocs/aks-helloworld:v1".into(),
            port: 8080,
            cpu: "250m".into(),
            memory: "256Mi".into(),
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
    /// Defaults, then `file` (if given), then `ONBOARD__*` from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        // The built-in loopback target is a default only for a configuration that names no
        // targets: merged into a file's targets it would stay selectable in production.
        let mut base = Config::default();
        base.targets.clear();
        let defaults =
            config::Config::try_from(&base).map_err(|e| ConfigError::Load(e.to_string()))?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        let env: config::Map<String, String> = env.into_iter().collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .separator("__")
                .prefix_separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let cfg: Config = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let mut cfg = cfg;
        if cfg.targets.is_empty() {
            cfg.targets = Config::default().targets;
        }
        let cfg = cfg.normalised();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Fill in each target's `name` from its key.
    pub fn normalised(mut self) -> Self {
        for (name, target) in self.targets.iter_mut() {
            target.name = name.clone();
        }
        self
    }

    /// Every problem at once, each naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if !self.targets.contains_key(&self.default_target) {
            problems.push(format!(
                "default_target {:?} is not one of the configured targets ({})",
                self.default_target,
                self.targets.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        for (name, t) in &self.targets {
            let checks: [(&str, &str); 11] = [
                ("subscription_id", &t.subscription_id),
                ("resource_group", &t.resource_group),
                ("location", &t.location),
                ("cluster_resource_group", &t.cluster_resource_group),
                ("cluster_name", &t.cluster_name),
                ("oidc_issuer", &t.oidc_issuer),
                ("storage_resource_group", &t.storage_resource_group),
                ("storage_account", &t.storage_account),
                ("identity_entra_tenant_id", &t.identity_entra_tenant_id),
                ("cluster_entra_tenant_id", &t.cluster_entra_tenant_id),
                ("arm_endpoint", &t.arm_endpoint),
            ];
            for (field, value) in checks {
                if value.trim().is_empty() {
                    problems.push(format!("targets.{name}.{field} is empty"));
                }
            }
            if !t.oidc_issuer.starts_with("https://") {
                problems.push(format!(
                    "targets.{name}.oidc_issuer must be an https URL, got {:?}",
                    t.oidc_issuer
                ));
            }
            if url::Url::parse(&t.arm_endpoint).is_err() {
                problems.push(format!(
                    "targets.{name}.arm_endpoint is not a URL: {:?}",
                    t.arm_endpoint
                ));
            }
        }
        let s = &self.saga;
        if s.message_budget_ms == 0 {
            problems.push("saga.message_budget_ms must be above 0".into());
        }
        if let TransportConfig::Embedded {
            lock_duration_secs, ..
        } = &self.transport
            && s.message_budget_ms >= lock_duration_secs.saturating_mul(1000)
        {
            problems.push(format!(
                "saga.message_budget_ms ({}) must be shorter than transport.lock_duration_secs ({}s)",
                s.message_budget_ms, lock_duration_secs
            ));
        }
        if self.worker.concurrency == 0 {
            problems.push("worker.concurrency must be at least 1".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    pub fn target(&self, name: Option<&str>) -> Option<&Target> {
        self.targets.get(name.unwrap_or(&self.default_target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_point_at_loopback_simulators() {
        let cfg = Config::load(None, Vec::new()).expect("defaults load");
        let t = cfg.target(None).expect("default target");
        assert_eq!(t.name, "default");
        assert!(t.arm_endpoint.starts_with("http://127.0.0.1"));
    }

    #[test]
    fn environment_overrides_defaults() {
        let env = vec![(
            "ONBOARD__SAGA__MESSAGE_BUDGET_MS".to_string(),
            "1234".to_string(),
        )];
        let cfg = Config::load(None, env).expect("loads");
        assert_eq!(cfg.saga.message_budget_ms, 1234);
    }

    #[test]
    fn a_file_with_its_own_targets_does_not_inherit_the_loopback_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        let mut prod = Target::local("prod");
        prod.arm_endpoint = "https://management.azure.com".into();
        prod.kubernetes = KubernetesConfig {
            in_cluster: true,
            ..KubernetesConfig::default()
        };
        let file = Config {
            default_target: "prod".into(),
            targets: BTreeMap::from([("prod".to_string(), prod)]),
            ..Config::default()
        };
        let text = toml_text(&file);
        std::fs::write(&path, text).expect("write");
        let cfg = Config::load(Some(&path), Vec::new()).expect("loads");
        assert_eq!(cfg.targets.keys().collect::<Vec<_>>(), vec!["prod"]);
        assert_eq!(cfg.targets["prod"].kubernetes.server, None);
    }

    fn toml_text(c: &Config) -> String {
        // The config crate reads TOML; serde_json -> toml via the config crate's own value.
        let v = serde_json::to_value(c).expect("json");
        json_to_toml(&v, "")
    }

    fn json_to_toml(v: &serde_json::Value, prefix: &str) -> String {
        let mut scalars = String::new();
        let mut tables = String::new();
        if let serde_json::Value::Object(map) = v {
            for (k, val) in map {
                match val {
                    serde_json::Value::Object(_) => {
                        let name = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        tables.push_str(&format!("[{name}]\n{}", json_to_toml(val, &name)));
                    }
                    serde_json::Value::Null => {}
                    other => scalars.push_str(&format!("{k} = {other}\n")),
                }
            }
        }
        format!("{scalars}{tables}")
    }

    #[test]
    fn validation_names_every_problem() {
        let mut cfg = Config::default().normalised();
        cfg.default_target = "nope".into();
        cfg.worker.concurrency = 0;
        if let Some(t) = cfg.targets.get_mut("default") {
            t.cluster_name.clear();
        }
        let err = cfg.validate().expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("default_target \"nope\""), "{text}");
        assert!(
            text.contains("targets.default.cluster_name is empty"),
            "{text}"
        );
        assert!(text.contains("worker.concurrency"), "{text}");
    }
}
