//! Configuration: embedded defaults, then a TOML file, then `ONBOARD__*` environment variables.
//!
//! Provisioning targets live here and only here: a command may name a target, never a
//! subscription, tenant, scope or identity (no confused deputy). This module is the only place in
//! the library that reads the environment, and only when a binary asks it to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use onboarding_core::{CredentialConfig, REDACTED, Secret};
pub use onboarding_providers::{
    GuardrailDefaults, KubernetesConfig, Provisioning, Target, WorkloadTemplate,
};
pub use saga::SagaConfig;

mod saga;

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
        }
    }
}

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

/// Where saga state lives (`[journal] kind = ...`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum JournalConfig {
    /// A SQLite file: the embedded default, one worker process.
    Sqlite { path: PathBuf },
    /// Azure Table Storage: the production journal, shared by every replica.
    ///
    /// The fields default to empty so that validation can name every missing one at once.
    AzureTable {
        /// Table service endpoint: `https://<account>.table.core.windows.net`, or Azurite's
        /// `http://127.0.0.1:10002/devstoreaccount1`.
        #[serde(default)]
        endpoint: String,
        /// 3-63 letters and digits, starting with a letter.
        #[serde(default)]
        table: String,
        /// How to sign in: an Entra credential in production, `shared_key` for Azurite only.
        #[serde(default)]
        credential: Option<TableCredentialConfig>,
        /// Create the table at start-up if it is missing. Off in production: Bicep creates the
        /// table and the worker's role (Storage Table Data Contributor on the table) cannot.
        #[serde(default)]
        create_table: bool,
    },
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig::Sqlite {
            path: PathBuf::from(".local/journal.db"),
        }
    }
}

/// How the Azure Table journal signs in (`[journal.credential] kind = ...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TableCredentialConfig {
    /// A developer's `az login`.
    AzureCli { tenant_id: Option<String> },
    /// Federated token file projected into the pod, exchanged in the given Entra tenant. The
    /// identity needs "Storage Table Data Contributor" on the table.
    WorkloadIdentity {
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
    },
    /// Shared Key, for Azurite only: production storage accounts disable key access
    /// (`allowSharedKeyAccess: false` in `infra/modules/storage.bicep`).
    SharedKey { account: String, key: Secret },
}

impl TableCredentialConfig {
    /// The Entra token credential this stands for; `None` for Shared Key.
    pub fn token_credential(&self) -> Option<CredentialConfig> {
        match self {
            TableCredentialConfig::AzureCli { tenant_id } => Some(CredentialConfig::AzureCli {
                tenant_id: tenant_id.clone(),
            }),
            TableCredentialConfig::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => Some(CredentialConfig::WorkloadIdentity {
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                token_file: token_file.clone(),
            }),
            TableCredentialConfig::SharedKey { .. } => None,
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

/// Logs, traces and metrics export. The OTLP endpoint is not here: the binary reads the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (traces and metrics are exported only when it is set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` for people, `json` (one object per line) for log pipelines. `--log-format`
    /// overrides it.
    pub log_format: LogFormat,
    /// `service.name` of exported traces and metrics.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            service_name: "onboarding-worker".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?} is not text or json")),
        }
    }
}

/// The HTTP server of `worker run`: `/healthz`, `/readyz`, `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Listen address; `0.0.0.0` so that the kubelet and Prometheus reach the pod.
    pub address: String,
    /// 0 disables the server.
    pub port: u16,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            address: "0.0.0.0".into(),
            port: 8080,
        }
    }
}

impl HealthConfig {
    /// The socket to listen on; `None` when the server is disabled (or the address is invalid,
    /// which validation reports).
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        if self.port == 0 {
            return None;
        }
        let ip: std::net::IpAddr = self.address.parse().ok()?;
        Some(std::net::SocketAddr::new(ip, self.port))
    }
}

/// Field names whose string values [`Config::redacted`] hides even when a section forgot to use
/// [`Secret`] (belt and braces for the output of `worker config check`).
pub const SECRET_FIELDS: &[&str] = &[
    "key",
    "account_key",
    "secret",
    "client_secret",
    "password",
    "connection_string",
    "sas_token",
    "shared_access_key",
];

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
        // The settings given (file, then environment), before any default.
        let mut given = config::Config::builder();
        if let Some(file) = file {
            given = given.add_source(config::File::from(file).required(true));
        }
        let env: config::Map<String, String> = env.into_iter().collect();
        let given = given
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .separator("__")
                    .prefix_separator("__")
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        // The built-in loopback target is a default only for a configuration that names no
        // targets: merged into a file's targets it would stay selectable in production.
        let mut base = Config::default();
        base.targets.clear();
        let mut defaults =
            serde_json::to_value(&base).map_err(|e| ConfigError::Load(e.to_string()))?;
        // A section that picks another `kind` (azure_table, service_bus) must not inherit the
        // default kind's keys (`path`), which it would refuse as unknown.
        if let serde_json::Value::Object(sections) = &mut defaults {
            for section in ["transport", "journal"] {
                let default_kind = sections
                    .get(section)
                    .and_then(|s| s.get("kind"))
                    .and_then(|k| k.as_str())
                    .map(str::to_string);
                if let Ok(kind) = given.get_string(&format!("{section}.kind"))
                    && Some(kind) != default_kind
                {
                    sections.remove(section);
                }
            }
        }
        let defaults =
            config::Config::try_from(&defaults).map_err(|e| ConfigError::Load(e.to_string()))?;
        let builder = config::Config::builder()
            .add_source(defaults)
            .add_source(given);
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
            problems.extend(t.credential.problems(&format!("targets.{name}.credential")));
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
        if let TransportConfig::ServiceBus {
            namespace,
            queue,
            topic,
            credential,
            connection_string,
            ..
        } = &self.transport
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
        if self.worker.concurrency == 0 {
            problems.push("worker.concurrency must be at least 1".into());
        }
        problems.extend(self.journal.problems());
        if self.telemetry.service_name.trim().is_empty() {
            problems.push(
                "telemetry.service_name is empty (it names the worker in traces and metrics)"
                    .into(),
            );
        }
        if self.health.port != 0 && self.health.address.parse::<std::net::IpAddr>().is_err() {
            problems.push(format!(
                "health.address {:?} is not an IP address (0.0.0.0 listens on every interface, 127.0.0.1 on loopback only)",
                self.health.address
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Where and how to provision, as the saga and the providers see it.
    pub fn provisioning(&self) -> Provisioning {
        Provisioning {
            default_target: self.default_target.clone(),
            targets: self.targets.clone(),
            guardrails: self.guardrails.clone(),
            workload: self.workload.clone(),
        }
    }

    pub fn target(&self, name: Option<&str>) -> Option<&Target> {
        self.targets.get(name.unwrap_or(&self.default_target))
    }

    /// The configuration as a JSON value with every secret replaced by [`REDACTED`]: values of
    /// [`Secret`] type, and any string under a name in [`SECRET_FIELDS`].
    pub fn redacted(&self) -> Result<serde_json::Value, ConfigError> {
        let mut value = serde_json::to_value(self).map_err(|e| ConfigError::Load(e.to_string()))?;
        redact(&mut value);
        Ok(value)
    }

    /// [`Config::redacted`] as TOML, the format of the configuration file, so the output of
    /// `worker config check` can be read back with `--config` (secrets aside).
    pub fn redacted_toml(&self) -> Result<String, ConfigError> {
        let mut value = self.redacted()?;
        // TOML has no null: an unset optional setting is simply absent.
        drop_nulls(&mut value);
        toml::to_string(&value).map_err(|e| ConfigError::Load(e.to_string()))
    }

    /// [`Config::redacted`] as pretty JSON, for scripts.
    pub fn redacted_json(&self) -> Result<String, ConfigError> {
        serde_json::to_string_pretty(&self.redacted()?)
            .map_err(|e| ConfigError::Load(e.to_string()))
    }
}

fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if SECRET_FIELDS.contains(&k.to_ascii_lowercase().as_str()) && val.is_string() {
                    *val = serde_json::Value::String(REDACTED.into());
                } else {
                    redact(val);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn drop_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|_, val| !val.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

impl JournalConfig {
    /// Every problem with the journal settings, each naming the setting.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self {
            JournalConfig::Sqlite { path } => {
                if path.as_os_str().is_empty() {
                    problems.push("journal.path is empty (the SQLite journal file)".into());
                }
            }
            JournalConfig::AzureTable {
                endpoint,
                table,
                credential,
                create_table: _,
            } => {
                let mut host = None;
                if endpoint.trim().is_empty() {
                    problems.push(
                        "journal.endpoint is empty: set the Table service endpoint, e.g. https://<account>.table.core.windows.net (Azurite: http://127.0.0.1:10002/devstoreaccount1)"
                            .into(),
                    );
                } else {
                    match url::Url::parse(endpoint) {
                        Ok(u)
                            if matches!(u.scheme(), "http" | "https")
                                && u.query().is_none()
                                && u.fragment().is_none() =>
                        {
                            host = u.host_str().map(str::to_ascii_lowercase);
                        }
                        _ => problems.push(format!(
                            "journal.endpoint {endpoint:?} is not an http(s) URL without query, e.g. https://<account>.table.core.windows.net"
                        )),
                    }
                }
                if table.trim().is_empty() {
                    problems.push(
                        "journal.table is empty: name the journal table (infra/main.bicep creates sagajournal)"
                            .into(),
                    );
                } else if !valid_table_name(table) {
                    problems.push(format!(
                        "journal.table {table:?} is not a valid table name: 3-63 letters and digits, starting with a letter"
                    ));
                }
                match credential {
                    None => problems.push(
                        "journal.credential is missing: add [journal.credential] with kind = \"workload_identity\" (tenant_id, client_id, token_file), \"azure_cli\", or \"shared_key\" (Azurite only: account, key)"
                            .into(),
                    ),
                    Some(TableCredentialConfig::SharedKey { account, key }) => {
                        if account.trim().is_empty() {
                            problems.push("journal.credential.account is empty (Azurite: devstoreaccount1)".into());
                        }
                        if key.expose().trim().is_empty() {
                            problems.push("journal.credential.key is empty (Azurite's well-known account key)".into());
                        } else if base64::Engine::decode(
                            &base64::engine::general_purpose::STANDARD,
                            key.expose().trim(),
                        )
                        .is_err()
                        {
                            problems.push("journal.credential.key is not base64 (a storage account key is)".into());
                        }
                        if host.as_deref().is_some_and(is_azure_storage_host) {
                            problems.push(format!(
                                "journal.credential kind shared_key is for Azurite only, but journal.endpoint {endpoint:?} is an Azure storage account, which allows Entra sign-in only: use kind = \"workload_identity\" (or \"azure_cli\" on a workstation)"
                            ));
                        }
                    }
                    Some(c) => {
                        if let Some(token) = c.token_credential() {
                            problems.extend(token.problems("journal.credential"));
                        }
                    }
                }
            }
        }
        problems
    }
}

/// Azure's table naming rule.
fn valid_table_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
        && !name.eq_ignore_ascii_case("tables")
}

/// A storage endpoint of a public or sovereign Azure cloud (not an emulator).
fn is_azure_storage_host(host: &str) -> bool {
    [
        ".core.windows.net",
        ".core.chinacloudapi.cn",
        ".core.usgovcloudapi.net",
        ".storage.azure.net",
    ]
    .iter()
    .any(|suffix| host.ends_with(suffix))
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
        let text = toml::to_string(&file).expect("the configuration serialises to TOML");
        std::fs::write(&path, text).expect("write");
        let cfg = Config::load(Some(&path), Vec::new()).expect("loads");
        assert_eq!(cfg.targets.keys().collect::<Vec<_>>(), vec!["prod"]);
        assert_eq!(cfg.targets["prod"].kubernetes.server, None);
    }

    #[test]
    fn a_service_bus_transport_without_credential_or_entities_is_refused_naming_each_setting() {
        let mut cfg = Config::default().normalised();
        cfg.transport = TransportConfig::ServiceBus {
            namespace: "sb-onboard".into(),
            queue: String::new(),
            topic: "tenant-events".into(),
            subscription: String::new(),
            credential: None,
            connection_string: None,
        };
        let text = cfg.validate().expect_err("invalid").to_string();
        assert!(text.contains("transport.queue is empty"), "{text}");
        assert!(text.contains("transport.credential is missing"), "{text}");
        assert!(text.contains("<name>.servicebus.windows.net"), "{text}");
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

    fn load_toml(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).expect("write");
        Config::load(Some(&path), Vec::new())
    }

    #[test]
    fn an_azure_table_journal_with_nothing_set_names_every_missing_setting() {
        let err = load_toml("[journal]\nkind = \"azure_table\"\n").expect_err("invalid");
        let ConfigError::Invalid(problems) = &err else {
            panic!("expected Invalid, got {err}");
        };
        let text = err.to_string();
        assert_eq!(problems.len(), 3, "{text}");
        assert!(text.contains("journal.endpoint is empty"), "{text}");
        assert!(text.contains("journal.table is empty"), "{text}");
        assert!(text.contains("journal.credential is missing"), "{text}");
    }

    #[test]
    fn a_production_azure_table_journal_loads_with_workload_identity() {
        let cfg = load_toml(
            r#"
[journal]
kind = "azure_table"
endpoint = "https://stonboard.table.core.windows.net/"
table = "sagajournal"
[journal.credential]
kind = "workload_identity"
tenant_id = "00000000-0000-0000-0000-00000000000a"
client_id = "00000000-0000-0000-0000-000000000000"
token_file = "/var/run/secrets/azure/tokens/azure-identity-token"
"#,
        )
        .expect("loads");
        let JournalConfig::AzureTable {
            table,
            credential,
            create_table,
            ..
        } = &cfg.journal
        else {
            panic!("not azure_table: {:?}", cfg.journal);
        };
        assert_eq!(table, "sagajournal");
        assert!(!create_table);
        assert!(matches!(
            credential,
            Some(TableCredentialConfig::WorkloadIdentity { .. })
        ));
    }

    #[test]
    fn shared_key_is_refused_for_a_real_storage_account_and_bad_values_are_named() {
        let err = load_toml(
            r#"
[journal]
kind = "azure_table"
endpoint = "https://stonboard.table.core.windows.net"
table = "1bad"
[journal.credential]
kind = "shared_key"
account = "stonboard"
key = "not base64!"
[health]
address = "everywhere"
[targets.prod]
subscription_id = "s"
resource_group = "rg"
location = "westeurope"
cluster_resource_group = "rg"
cluster_name = "aks"
oidc_issuer = "https://issuer.example/"
storage_resource_group = "rg"
storage_account = "st"
identity_entra_tenant_id = "t"
cluster_entra_tenant_id = "t"
arm_endpoint = "https://management.azure.com"
[targets.prod.credential]
kind = "workload_identity"
tenant_id = "t"
client_id = ""
token_file = "/token"
[targets.prod.kubernetes]
in_cluster = true
"#,
        )
        .expect_err("invalid");
        let text = err.to_string();
        for expected in [
            "journal.table \"1bad\" is not a valid table name",
            "journal.credential.key is not base64",
            "journal.credential kind shared_key is for Azurite only",
            "health.address \"everywhere\" is not an IP address",
            "targets.prod.credential.client_id is empty",
            "default_target \"default\" is not one of the configured targets (prod)",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
    }

    #[test]
    fn secrets_never_show_in_debug_or_in_the_printed_configuration() {
        let cfg = load_toml(
            r#"
[journal]
kind = "azure_table"
endpoint = "http://127.0.0.1:10002/devstoreaccount1"
table = "journal"
create_table = true
[journal.credential]
kind = "shared_key"
account = "devstoreaccount1"
key = "c2VjcmV0LWtleS12YWx1ZQ=="
"#,
        )
        .expect("loads");
        let JournalConfig::AzureTable {
            credential: Some(TableCredentialConfig::SharedKey { key, .. }),
            ..
        } = &cfg.journal
        else {
            panic!("not shared key: {:?}", cfg.journal);
        };
        assert_eq!(key.expose(), "c2VjcmV0LWtleS12YWx1ZQ==");
        let shown = [
            format!("{cfg:?}"),
            cfg.redacted_toml().expect("toml"),
            cfg.redacted_json().expect("json"),
        ];
        for text in shown {
            assert!(!text.contains("c2VjcmV0"), "{text}");
            assert!(text.contains(REDACTED), "{text}");
        }
    }

    #[test]
    fn the_printed_configuration_reads_back_as_the_same_configuration() {
        let mut cfg = Config::load(None, Vec::new()).expect("defaults");
        cfg.journal = JournalConfig::AzureTable {
            endpoint: "https://stonboard.table.core.windows.net".into(),
            table: "sagajournal".into(),
            credential: Some(TableCredentialConfig::AzureCli { tenant_id: None }),
            create_table: false,
        };
        cfg.health.port = 9090;
        cfg.telemetry.log_format = LogFormat::Json;
        let text = cfg.redacted_toml().expect("toml");
        let back = load_toml(&text).expect("reads back");
        assert_eq!(back, cfg, "{text}");
    }

    #[test]
    fn the_environment_alone_can_switch_the_journal_to_azure_table() {
        let env = [
            ("ONBOARD__JOURNAL__KIND", "azure_table"),
            (
                "ONBOARD__JOURNAL__ENDPOINT",
                "http://127.0.0.1:10002/devstoreaccount1",
            ),
            ("ONBOARD__JOURNAL__TABLE", "journal"),
            ("ONBOARD__JOURNAL__CREATE_TABLE", "true"),
            ("ONBOARD__JOURNAL__CREDENTIAL__KIND", "shared_key"),
            ("ONBOARD__JOURNAL__CREDENTIAL__ACCOUNT", "devstoreaccount1"),
            ("ONBOARD__JOURNAL__CREDENTIAL__KEY", "a2V5"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let cfg = Config::load(None, env).expect("loads");
        assert!(matches!(
            cfg.journal,
            JournalConfig::AzureTable {
                create_table: true,
                credential: Some(TableCredentialConfig::SharedKey { .. }),
                ..
            }
        ));
        // The embedded journal's keys still override one at a time.
        let env = [(
            "ONBOARD__JOURNAL__PATH".to_string(),
            "/tmp/j.db".to_string(),
        )];
        let cfg = Config::load(None, env).expect("loads");
        assert_eq!(
            cfg.journal,
            JournalConfig::Sqlite {
                path: PathBuf::from("/tmp/j.db")
            }
        );
    }
}
