//! The `[telemetry]` section: log format and the service name of exported traces and metrics.
//!
//! May touch: nothing; pure data.

use serde::{Deserialize, Serialize};

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
