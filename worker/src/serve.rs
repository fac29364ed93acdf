//! `run(config, telemetry, shutdown)`: the worker process once configured. Binds the health
//! port, builds every client, runs the message loop (and, when configured, the periodic drift
//! check beside it) until `shutdown` resolves, then drains
//! in-flight work (the health server keeps answering meanwhile, so a liveness probe does not kill
//! a worker that is finishing a compensation).
//!
//! May touch: the health port and everything the configuration names (through bootstrap).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::bootstrap::BootstrapError;
use crate::config::Config;
use crate::health::HealthState;
use crate::metrics::Metrics;
use crate::telemetry::Telemetry;

/// How long past its own wait one receive may take before `/healthz` calls the loop stuck.
const STUCK_MARGIN: Duration = Duration::from_secs(60);

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "cannot listen on {addr} for /healthz, /readyz and /metrics: {source}; set health.port (ONBOARD__HEALTH__PORT) to a free port, or 0 to turn the server off"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Startup(#[from] BootstrapError),
}

/// Serve until `shutdown` resolves, then stop receiving and let in-flight work finish.
pub async fn run(
    config: Config,
    telemetry: &Telemetry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Metrics::default();
    if let Some(meter) = telemetry.meter() {
        metrics.export_to(&meter);
    }
    // Bind first: a port in use is a start-up error, reported before any client is built.
    let listener = match config.health.socket_addr() {
        None => None,
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Listen { addr, source })?,
        ),
    };
    let cx = crate::bootstrap::build_context_with(Arc::new(config), metrics.clone()).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = crate::runner::Runner::new(cx.clone());
    // A receive waits `receive_wait_ms` at most; a minute past that, it is not coming back.
    let stuck_after = Duration::from_millis(cx.config.worker.receive_wait_ms) + STUCK_MARGIN;
    let server = listener.map(|listener| {
        let state = HealthState::new(cx.queue.clone(), cx.journal.clone(), metrics.clone())
            .with_stopping(stop_rx.clone())
            .with_wellbeing(runner.wellbeing().clone(), stuck_after);
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
        }
        tokio::spawn(async move {
            let stopped = async {
                let _ = server_stopped.await;
            };
            if let Err(e) = crate::health::serve(listener, state, stopped).await {
                tracing::error!(error = %e, "the health server stopped");
            }
        })
    });
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested: no new messages; finishing in-flight work");
        let _ = stop_tx.send(true);
    });
    // Off unless `[drift] interval_secs` is set; stopped by the same signal as the runner.
    let drift = crate::drift::spawn(&cx, stop_rx.clone());
    runner.run(stop_rx).await;
    if let Some(drift) = drift {
        let _ = drift.await;
    }
    let _ = server_stop.send(());
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(())
}
