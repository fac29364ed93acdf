//! Loading: embedded defaults, then the TOML file, then `ONBOARD__*` environment variables
//! (only those the binary passes in), then what those variables say about Entra
//! (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`) for credentials that leave it out,
//! then normalisation and validation.
//!
//! May touch: the configuration file named by the caller; the environment only as given.

use std::path::Path;

use onboarding_core::EntraEnvironment;

use crate::{Config, ConfigError, ENV_PREFIX, JournalConfig, TransportConfig};

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
        let entra = EntraEnvironment::from_vars(env.iter().map(|(k, v)| (k.clone(), v.clone())));
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
        let cfg = cfg.normalised().with_entra_environment(&entra);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every credential's settings left out, filled from what the environment says about Entra
    /// (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`, as the binary passed them in).
    pub fn with_entra_environment(mut self, entra: &EntraEnvironment) -> Self {
        for target in self.targets.values_mut() {
            target.credential = target.credential.clone().with_environment(entra);
        }
        if let TransportConfig::ServiceBus {
            credential: Some(c),
            ..
        } = &mut self.transport
        {
            *c = c.clone().with_environment(entra);
        }
        if let JournalConfig::AzureTable {
            credential: Some(c),
            ..
        } = &mut self.journal
        {
            *c = c.clone().with_environment(entra);
        }
        self
    }

    /// Fill in each target's `name` from its key.
    pub fn normalised(mut self) -> Self {
        for (name, target) in self.targets.iter_mut() {
            target.name = name.clone();
        }
        self
    }
}
