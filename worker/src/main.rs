//! `worker`: consumes onboarding commands and provisions tenants. Thin: read config, start
//! telemetry, build clients, run the library's loop.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use worker::config::{Config, ConfigError, LogFormat};
use worker::health::HealthState;
use worker::metrics::Metrics;
use worker::telemetry::{Telemetry, TelemetrySettings};

/// The standard OpenTelemetry variable: traces and metrics go to this OTLP/HTTP endpoint.
const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

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
struct Cli {
    /// TOML configuration file (defaults, then this file, then ONBOARD__* environment variables).
    #[arg(long, global = true, env = "ONBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Log format; overrides telemetry.log_format.
    #[arg(long, global = true, value_parser = ["text", "json"], env = "ONBOARD_LOG_FORMAT")]
    log_format: Option<String>,
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
    /// Print the effective configuration (secrets redacted) and exit 0, or list every problem
    /// on stderr and exit 2.
    Check {
        /// TOML (the configuration file's format: the output can be read back with --config)
        /// or JSON.
        #[arg(long, default_value = "toml", value_parser = ["toml", "json"])]
        format: String,
    },
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
            action: ConfigAction::Check { format },
        } => {
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
        Command::Run => run(config, cli.log_format.as_deref()),
    }
}

fn run(config: Config, log_format: Option<&str>) -> ExitCode {
    // Before anything builds a TLS client (the OTLP exporter does, in init).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let log_format = match log_format.map(str::parse::<LogFormat>) {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            eprintln!("worker: --log-format: {e}");
            return ExitCode::from(2);
        }
        None => config.telemetry.log_format,
    };
    let settings = TelemetrySettings {
        log_format,
        service_name: config.telemetry.service_name.clone(),
        otlp_endpoint: std::env::var(OTLP_ENDPOINT_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty()),
        filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    };
    let telemetry = match worker::telemetry::init(&settings) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("worker: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(endpoint) = &settings.otlp_endpoint {
        tracing::info!(otlp.endpoint = %endpoint, service.name = %settings.service_name, "exporting traces and metrics over OTLP/HTTP");
    }
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
    let code = runtime.block_on(serve(config, &telemetry));
    drop(runtime);
    // Outside the runtime: the exporters' HTTP clients block.
    telemetry.shutdown();
    code
}

async fn serve(config: Config, telemetry: &Telemetry) -> ExitCode {
    let metrics = Metrics::default();
    if let Some(meter) = telemetry.meter() {
        metrics.export_to(&meter);
    }
    // Bind first: a port in use is a start-up error, reported before any client is built.
    let listener = match config.health.socket_addr() {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(error = %e, %addr, "cannot listen for health checks");
                eprintln!(
                    "worker: cannot listen on {addr} for /healthz, /readyz and /metrics: {e}; set health.port (ONBOARD__HEALTH__PORT) to a free port, or 0 to turn the server off"
                );
                return ExitCode::FAILURE;
            }
        },
    };
    let cx = match worker::bootstrap::build_context_with(Arc::new(config), metrics.clone()).await {
        Ok(cx) => cx,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = listener.map(|listener| {
        let state = HealthState::new(cx.queue.clone(), cx.journal.clone(), metrics.clone())
            .with_stopping(stop_rx.clone());
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
        }
        tokio::spawn(async move {
            let stopped = async {
                let _ = server_stopped.await;
            };
            if let Err(e) = worker::health::serve(listener, state, stopped).await {
                tracing::error!(error = %e, "the health server stopped");
            }
        })
    });
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: no new messages; finishing in-flight work");
        let _ = stop_tx.send(true);
    });
    // The health server keeps answering while in-flight work drains, so that the liveness
    // probe does not kill a worker that is finishing a compensation.
    worker::runner::Runner::new(cx).run(stop_rx).await;
    let _ = server_stop.send(());
    if let Some(server) = server {
        let _ = server.await;
    }
    ExitCode::SUCCESS
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
