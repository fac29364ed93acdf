//! Building every client the worker needs from configuration: the transport and journal (through
//! `onboarding_bootstrap`), the ARM and Kubernetes provisioners, the clock and metrics.

use std::sync::Arc;

pub use onboarding_bootstrap::{
    BootstrapError, Transport, events_subscription, open_journal, open_transport, prepare_journal,
};
use onboarding_config::Config;
use onboarding_core::{Clock, SystemClock};

use crate::context::Context;
use crate::metrics::Metrics;

/// Every client the worker needs, with a fresh metrics registry.
pub async fn build_context(config: Arc<Config>) -> Result<Context, BootstrapError> {
    build_context_with(config, Metrics::default()).await
}

/// [`build_context`] recording into `metrics` (shared with the health server and exporters).
pub async fn build_context_with(
    config: Arc<Config>,
    metrics: Metrics,
) -> Result<Context, BootstrapError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (queue, topic) = open_transport(&config, clock.clone()).await?;
    let journal = prepare_journal(&config).await?;
    let azure = Arc::new(
        onboarding_azure::ArmProvisioner::from_targets(
            &config.targets,
            onboarding_azure::ArmClientOptions {
                recorder: Arc::new(metrics.clone()),
                ..onboarding_azure::ArmClientOptions::default()
            },
        )
        .map_err(|e| BootstrapError::Open {
            part: "Azure Resource Manager client",
            message: e.to_string(),
        })?,
    );
    let kube = Arc::new(
        onboarding_kube::KubeApplier::from_targets(&config.targets)
            .await
            .map_err(|e| BootstrapError::Open {
                part: "Kubernetes client",
                message: e.to_string(),
            })?,
    );
    Ok(Context {
        config,
        queue,
        topic,
        journal,
        azure,
        kube,
        clock,
        worker_id: format!("worker-{}", uuid::Uuid::new_v4().simple()),
        metrics,
    })
}
