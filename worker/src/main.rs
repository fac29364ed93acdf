//! `worker`: consumes onboarding commands and provisions tenants. Thin: read config, start
//! telemetry, build clients, run the library's loop.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use worker::config::{Config, ConfigError};

/// The tenant onboarding worker.
///
/// Consumes OnboardTenant/OffboardTenant commands from the queue, provisions each tenant's node
/// pool, identity, federated credential, role assignment, blob container and Kubernetes objects
/// as a saga with compensation, and publishes CloudEvents. With no configuration it runs on the
/// embedded default: SQLite queue and journal under .local/, Azure and Kubernetes at the
/// loopback simulators (`cargo run -p sim`).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file (defaults, then this file, then ONBOARD__* environment variables).
    #[arg(long, global = true, env = "ONBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"], env = "ONBOARD_LOG_FORMAT")]
    log_format: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume commands until SIGTERM/Ctrl-C (the default).
    Run,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print the effective configuration (secrets redacted); exit 2 listing every problem.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("worker: {e}");
            if matches!(e, ConfigError::Invalid(_) | ConfigError::Load(_)) {
                eprintln!(
                    "fix the settings above (file: {}, environment: ONBOARD__*)",
                    cli.config
                        .as_ref()
                        .map_or("none".into(), |p| p.display().to_string())
                );
            }
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Config {
            action: ConfigAction::Check,
        } => match redacted_json(&config) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("worker: cannot print the configuration: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run => run(config, &cli.log_format),
    }
}

fn redacted_json(config: &Config) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(config)?;
    redact(&mut value);
    serde_json::to_string_pretty(&value)
}

/// Hide anything that looks like a secret.
fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                let k = k.to_ascii_lowercase();
                if ["key", "secret", "password", "connection_string", "token"]
                    .iter()
                    .any(|s| k.contains(s))
                    && val.is_string()
                {
                    *val = serde_json::Value::String("<redacted>".into());
                } else {
                    redact(val);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn run(config: Config, log_format: &str) -> ExitCode {
    init_tracing(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cx = match worker::bootstrap::build_context(Arc::new(config)).await {
            Ok(cx) => cx,
            Err(e) => {
                tracing::error!(error = %e, "start-up failed");
                eprintln!("worker: {e}");
                return ExitCode::FAILURE;
            }
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested: no new messages; finishing in-flight work");
            let _ = stop_tx.send(true);
        });
        worker::runner::Runner::new(cx).run(stop_rx).await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
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

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,worker=info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder.init();
    }
}
