//! What the saga is given to work with: the journal, the two provider traits, the clock, its
//! settings and the provisioning targets, where to count, and where progress events go. The
//! binary builds one; tests swap any part. The saga holds no queue or topic: progress events go
//! to a [`ProgressSink`] the runner provides, outcome events come back in `Handled`.

use std::sync::Arc;

use onboarding_contract::CloudEvent;
use onboarding_core::{Clock, Recorder};
use onboarding_journal::Journal;
use onboarding_providers::{AzureProvisioner, KubeProvisioner, Provisioning};

use onboarding_config::SagaConfig;

/// Receives the `tenant.step_completed` events as steps finish. Best effort: the outcome event
/// is what consumers must rely on, so a sink swallows (and logs) its own failures.
#[async_trait::async_trait]
pub trait ProgressSink: Send + Sync + std::fmt::Debug {
    async fn progress(&self, event: CloudEvent);
}

/// Drops progress events (tests that only look at outcomes).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

#[async_trait::async_trait]
impl ProgressSink for NoProgress {
    async fn progress(&self, _event: CloudEvent) {}
}

#[derive(Clone, Debug)]
pub struct SagaContext {
    pub settings: Arc<SagaConfig>,
    pub provisioning: Arc<Provisioning>,
    pub journal: Arc<dyn Journal>,
    pub azure: Arc<dyn AzureProvisioner>,
    pub kube: Arc<dyn KubeProvisioner>,
    pub clock: Arc<dyn Clock>,
    /// Identifies this process in journal leases.
    pub worker_id: String,
    pub recorder: Arc<dyn Recorder>,
    pub progress: Arc<dyn ProgressSink>,
}
