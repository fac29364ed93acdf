//! `worker`: consumes onboarding commands and provisions tenants. Thin: parse the command line,
//! load the configuration, start telemetry, and call [`worker::serve::run`] with the shutdown
//! signal; everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use worker::cli::{Cli, Command, ConfigAction};
use worker::config::{Config, ConfigError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("worker: {e}");
            if matches!(e, ConfigError::Invalid(_) | ConfigError::Load(_)) {
                let file = cli.config.as_ref().map(|p| p.display().to_string());
                eprintln!(
                    "fix the settings above (file: {}, environment: ONBOARD__*)",
                    file.as_deref().unwrap_or("none")
                );
            }
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config {
        action: ConfigAction::Check { format },
    }) = &cli.command
    {
        // Printed with absolute paths, so that the output works as a file read from anywhere
        // (relative paths in a file are relative to the file).
        let config = match std::env::current_dir() {
            Ok(dir) => config.with_absolute_paths(&dir),
            Err(_) => config,
        };
        return worker::cli::print_config(&config, format);
    }
    // Before anything builds a TLS client (the OTLP exporter does, in init).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let telemetry = match worker::cli::telemetry_settings(&config, cli.log_format.as_deref())
        .and_then(|s| worker::telemetry::init(&s).map_err(|e| e.to_string()))
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("worker: {e}");
            return ExitCode::from(2);
        }
    };
    if telemetry.exporting() {
        tracing::info!(
            "exporting traces and metrics over OTLP/HTTP ({})",
            worker::cli::OTLP_ENDPOINT_ENV
        );
    }
    let served = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(worker::serve::run(
            config,
            &telemetry,
            worker::cli::shutdown_signal(),
        )),
        Err(e) => {
            eprintln!("worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Outside the runtime: the exporters' HTTP clients block.
    telemetry.shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("worker: {e}");
            ExitCode::FAILURE
        }
    }
}
