//! The `worker` binary's command line and what it reads at its edge: the arguments, the
//! OpenTelemetry and `RUST_LOG` variables, and the signals that ask it to stop. The binary
//! parses, loads the configuration, starts telemetry and calls [`crate::serve::run`] with the
//! shutdown future from [`shutdown_signal`].
//!
//! May touch: standard output (`config check`), the process environment and signals.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};
use crate::telemetry::TelemetrySettings;

/// The standard OpenTelemetry variable: traces and metrics go to this OTLP/HTTP endpoint.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The tenant onboarding worker.
///
/// Consumes OnboardTenant/OffboardTenant commands from the queue, provisions each tenant's node
/// pool, identity, federated credential, role assignment, blob container and Kubernetes objects
/// as a saga with compensation, and publishes CloudEvents. With no configuration it runs on the
/// embedded default: SQLite queue and journal under .local/, Azure and Kubernetes at the
/// loopback simulators (`cargo run -p sim`). `worker run` serves /healthz, /readyz and /metrics
/// on health.port (8080); with OTEL_EXPORTER_OTLP_ENDPOINT set it exports traces and metrics
/// over OTLP/HTTP. RUST_LOG filters logs.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// TOML configuration file (defaults, then this file, then ONBOARD__* environment variables).
    #[arg(long, global = true, env = "ONBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format; overrides telemetry.log_format.
    #[arg(long, global = true, value_parser = ["text", "json"], env = "ONBOARD_LOG_FORMAT")]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume commands until SIGTERM/Ctrl-C (the default).
    Run,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the effective configuration (secrets redacted) and exit 0, or list every problem
    /// on stderr and exit 2. Settings that are valid but leave tenants with something that does
    /// not work (no egress for the tenants' pods) are warned about on stderr.
    Check {
        /// TOML (the configuration file's format: the output can be read back with --config)
        /// or JSON.
        #[arg(long, default_value = "toml", value_parser = ["toml", "json"])]
        format: String,
    },
}

/// `worker config check`: the effective configuration, secrets redacted, as TOML or JSON on
/// stdout, and [`Config::warnings`] on stderr (stdout stays a configuration that reads back).
pub fn print_config(config: &Config, format: &str) -> ExitCode {
    for warning in config.warnings() {
        eprintln!("worker: warning: {warning}");
    }
    let text = if format == "json" {
        config.redacted_json()
    } else {
        config.redacted_toml()
    };
    match text {
        Ok(text) => {
            use std::io::Write as _;
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("worker: cannot print the configuration: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Telemetry settings from the configuration, `--log-format`, `OTEL_EXPORTER_OTLP_ENDPOINT` and
/// `RUST_LOG`; the one place the worker reads those variables.
pub fn telemetry_settings(
    config: &Config,
    log_format: Option<&str>,
) -> Result<TelemetrySettings, String> {
    let log_format = match log_format.map(str::parse::<LogFormat>) {
        Some(Ok(f)) => f,
        Some(Err(e)) => return Err(format!("--log-format: {e}")),
        None => config.telemetry.log_format,
    };
    Ok(TelemetrySettings {
        log_format,
        service_name: config.telemetry.service_name.clone(),
        otlp_endpoint: std::env::var(OTLP_ENDPOINT_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty()),
        filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    })
}

/// Resolves when SIGTERM or Ctrl-C arrives: the shutdown future the binary hands to
/// [`crate::serve::run`].
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
