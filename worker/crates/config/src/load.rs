//! Loading: embedded defaults, then the TOML file, then `ONBOARD__*` environment variables
//! (only those the binary passes in), then what those variables say about Entra
//! (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`) for credentials that leave it out,
//! then normalisation and validation.
//!
//! May touch: the configuration file named by the caller; the environment only as given.

use std::path::{Path, PathBuf};

use onboarding_core::{Cloud, EntraEnvironment};

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
        // targets: merged into a file's targets it would stay selectable in production. A file
        // that sets some fields of `[targets.default]` gets the rest from it, field by field.
        let mut base = Config::default();
        let overrides_default = given.get_table("targets.default").is_ok();
        base.targets
            .retain(|name, _| overrides_default && name == "default");
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
            // Of the built-in default target, a file's `[targets.default]` takes single fields
            // but not parts of its tables: a `kubernetes` with a kubeconfig must not inherit the
            // built-in `server`, nor a credential the built-in kind's keys.
            if let Some(serde_json::Value::Object(default)) = sections
                .get_mut("targets")
                .and_then(|t| t.get_mut("default"))
            {
                for table in ["kubernetes", "credential"] {
                    if given.get_table(&format!("targets.default.{table}")).is_ok() {
                        default.remove(table);
                    }
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
        let mut cfg = cfg.normalised().with_entra_environment(&entra);
        if let Some(file) = file {
            cfg.resolve_paths_of(file)?;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Relative paths written in `file` are relative to the file's directory, wherever the
    /// binary runs (from elsewhere, `.local/journal.db` would silently be another journal).
    /// Paths from the defaults or the environment stay relative to the working directory.
    fn resolve_paths_of(&mut self, file: &Path) -> Result<(), ConfigError> {
        let written = config::Config::builder()
            .add_source(config::File::from(file).required(true))
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let base = file.parent().unwrap_or(Path::new(""));
        let resolve = |key: String, path: &mut PathBuf| {
            if path.is_relative() && written.get_string(&key).is_ok() {
                *path = base.join(&*path);
            }
        };
        if let TransportConfig::Embedded { path, .. } = &mut self.transport {
            resolve("transport.path".into(), path);
        }
        if let JournalConfig::Sqlite { path } = &mut self.journal {
            resolve("journal.path".into(), path);
        }
        // The paths a credential holds: its token file and its cloud's CA file.
        let credential =
            |prefix: &str, parts: Option<(Option<&mut Option<PathBuf>>, &mut Cloud)>| {
                let Some((token_file, cloud)) = parts else {
                    return;
                };
                if let Some(Some(f)) = token_file {
                    resolve(format!("{prefix}.token_file"), f);
                }
                if let Some(f) = &mut cloud.ca_file {
                    resolve(format!("{prefix}.cloud.ca_file"), f);
                }
            };
        for (name, target) in self.targets.iter_mut() {
            credential(
                &format!("targets.{name}.credential"),
                target.credential.parts_mut(),
            );
            if let Some(k) = &mut target.kubernetes.kubeconfig {
                resolve(format!("targets.{name}.kubernetes.kubeconfig"), k);
            }
        }
        if let TransportConfig::ServiceBus {
            credential: Some(c),
            ..
        } = &mut self.transport
        {
            credential("transport.credential", c.parts_mut());
        }
        if let JournalConfig::AzureTable {
            credential: Some(c),
            ..
        } = &mut self.journal
        {
            credential("journal.credential", c.parts_mut());
        }
        Ok(())
    }

    /// Every relative path made absolute against `dir` (the working directory, given by the
    /// binary): what `worker config check` prints, so that its output works from anywhere.
    pub fn with_absolute_paths(mut self, dir: &Path) -> Self {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        if let TransportConfig::Embedded { path, .. } = &mut self.transport {
            abs(path);
        }
        if let JournalConfig::Sqlite { path } = &mut self.journal {
            abs(path);
        }
        for target in self.targets.values_mut() {
            if let Some(k) = &mut target.kubernetes.kubeconfig {
                abs(k);
            }
        }
        self
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
