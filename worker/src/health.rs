//! The worker's HTTP server for the platform: `/healthz` (the process serves and its receive
//! loop is not stuck), `/readyz` (the transport and the journal answer, and the worker is not
//! backing off from a fault of its own) and `/metrics` (Prometheus text format).
//!
//! May touch: the listening socket it is given, and, per `/readyz` request, one `stats()` call on
//! the queue and one `ping()` on the journal, each bounded by [`HealthState::check_timeout`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::wellbeing::Wellbeing;
use onboarding_journal::Journal;
use onboarding_transport::Queue;

/// What the probes look at.
#[derive(Debug, Clone)]
pub struct HealthState {
    pub queue: Arc<dyn Queue>,
    pub journal: Arc<dyn Journal>,
    pub metrics: Metrics,
    /// Each dependency check gets this long (under the kubelet's probe timeout, 2 s).
    pub check_timeout: Duration,
    /// Turns true on shutdown: the worker takes no new work, so it reports not ready.
    pub stopping: watch::Receiver<bool>,
    /// The runner's view of the worker's own faults, and of its receive loop.
    pub wellbeing: Option<Wellbeing>,
    /// One receive that has not returned after this long means the loop is stuck: `/healthz`
    /// fails, so that the kubelet restarts the pod.
    pub stuck_after: Duration,
}

impl HealthState {
    pub fn new(queue: Arc<dyn Queue>, journal: Arc<dyn Journal>, metrics: Metrics) -> Self {
        Self {
            queue,
            journal,
            metrics,
            check_timeout: Duration::from_millis(1500),
            // A sender dropped at once leaves the value at false: never stopping.
            stopping: watch::channel(false).1,
            wellbeing: None,
            stuck_after: Duration::from_secs(300),
        }
    }

    /// Report the runner's faults in `/readyz`, and a receive stuck past `stuck_after` in
    /// `/healthz`.
    pub fn with_wellbeing(mut self, wellbeing: Wellbeing, stuck_after: Duration) -> Self {
        self.wellbeing = Some(wellbeing);
        self.stuck_after = stuck_after;
        self
    }

    /// Report not ready once `stopping` turns true.
    pub fn with_stopping(mut self, stopping: watch::Receiver<bool>) -> Self {
        self.stopping = stopping;
        self
    }
}

/// The Prometheus text exposition format's content type.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serve until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HealthState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz(State(state): State<HealthState>) -> Response {
    if let Some(waited) = state
        .wellbeing
        .as_ref()
        .and_then(|w| w.receive_stuck(state.stuck_after))
    {
        let why = format!(
            "stuck: one receive from the queue has not returned for {}s (limit {}s)\n",
            waited.as_secs(),
            state.stuck_after.as_secs()
        );
        tracing::warn!(%why, "liveness check failed");
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    "ok\n".into_response()
}

async fn readyz(State(state): State<HealthState>) -> Response {
    let timeout = state.check_timeout;
    let (transport, journal) = tokio::join!(
        tokio::time::timeout(timeout, state.queue.stats()),
        tokio::time::timeout(timeout, state.journal.ping()),
    );
    let transport = match transport {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    };
    let journal = match journal {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    };
    let stopping = *state.stopping.borrow();
    let mut failing = Vec::new();
    let mut checks = serde_json::Map::new();
    for (part, result) in [("transport", transport), ("journal", journal)] {
        match result {
            Ok(()) => {
                checks.insert(part.into(), json!("ok"));
            }
            Err(e) => {
                failing.push(part);
                checks.insert(part.into(), json!(e));
            }
        }
    }
    if stopping {
        failing.push("worker");
        checks.insert("worker".into(), json!("shutting down"));
    } else if let Some(fault) = state.wellbeing.as_ref().and_then(|w| w.fault()) {
        failing.push("worker");
        checks.insert("worker".into(), json!(fault));
    }
    let (status, summary) = if failing.is_empty() {
        (StatusCode::OK, "ready".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", failing.join(", ")),
        )
    };
    if status != StatusCode::OK {
        tracing::debug!(%summary, "readiness check failed");
    }
    (
        status,
        axum::Json(json!({ "status": summary, "checks": checks })),
    )
        .into_response()
}

async fn metrics(State(state): State<HealthState>) -> Response {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        state.metrics.render_prometheus(),
    )
        .into_response()
}
