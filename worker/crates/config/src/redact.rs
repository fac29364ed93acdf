//! Printing a configuration without its secrets (`worker config check`): values of
//! [`Secret`](crate::Secret) type and any string under a name in [`SECRET_FIELDS`] become
//! [`REDACTED`](crate::REDACTED), as JSON or as TOML that reads back with `--config`.
//!
//! May touch: nothing; pure transformation.

use crate::{Config, ConfigError, REDACTED};

/// Field names whose string values [`Config::redacted`] hides even when a section forgot to use
/// [`Secret`](crate::Secret) (belt and braces for the output of `worker config check`).
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

impl Config {
    /// The configuration as a JSON value with every secret replaced by [`REDACTED`]: values of
    /// [`Secret`](crate::Secret) type, and any string under a name in [`SECRET_FIELDS`].
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
