//! Building every client the worker needs from configuration: the transport and journal (through
//! `onboarding_bootstrap`), the ARM and Kubernetes provisioners (the ARM write budget in the
//! journal, shared by every replica), the clock and metrics.

use std::sync::Arc;

use onboarding_azure::{ArmClientOptions, WriteBudgetConfig};
pub use onboarding_bootstrap::{
    BootstrapError, Transport, events_subscription, open_journal, open_transport, prepare_journal,
};
use onboarding_config::Config;
use onboarding_core::{Clock, Recorder, SystemClock};
use onboarding_journal::Journal;

use crate::arm_budget::JournalBudgetStore;
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
            arm_client_options(
                &config,
                journal.clone(),
                clock.clone(),
                Arc::new(metrics.clone()),
            ),
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

/// The ARM clients' options of a configuration: the `[arm]` write budget, kept in `journal` so
/// that every replica draws on one bucket per subscription.
pub fn arm_client_options(
    config: &Config,
    journal: Arc<dyn Journal>,
    clock: Arc<dyn Clock>,
    recorder: Arc<dyn Recorder>,
) -> ArmClientOptions {
    ArmClientOptions {
        write_budget: WriteBudgetConfig {
            bucket_size: config.arm.write_bucket,
            refill_per_sec: config.arm.write_refill_per_sec,
        },
        budget_store: Some(Arc::new(JournalBudgetStore::new(journal, clock.clone()))),
        clock,
        recorder,
        ..ArmClientOptions::default()
    }
}
