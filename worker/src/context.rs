//! The one struct that carries every client the worker uses, so that tests can swap any of them.
//! The saga gets its share of it ([`Context::saga_context`]): never the queue or the topic.

use std::sync::Arc;

use onboarding_contract::CloudEvent;
use onboarding_core::Clock;
use onboarding_journal::Journal;
use onboarding_providers::{AzureProvisioner, KubeProvisioner};
use onboarding_saga::{ProgressSink, SagaContext};
use onboarding_transport::envelope::event_message;
use onboarding_transport::{Queue, Topic};

use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Clone, Debug)]
pub struct Context {
    pub config: Arc<Config>,
    pub queue: Arc<dyn Queue>,
    pub topic: Arc<dyn Topic>,
    pub journal: Arc<dyn Journal>,
    pub azure: Arc<dyn AzureProvisioner>,
    pub kube: Arc<dyn KubeProvisioner>,
    pub clock: Arc<dyn Clock>,
    /// Identifies this process in journal leases.
    pub worker_id: String,
    /// Where the runner and the engine count what they do (`Metrics::default()` in tests).
    pub metrics: Metrics,
}

impl Context {
    /// What the saga engine may use: the journal, the providers, the clock, the settings; its
    /// progress events go to the topic through [`TopicProgress`].
    pub fn saga_context(&self) -> SagaContext {
        SagaContext {
            settings: Arc::new(self.config.saga.clone()),
            provisioning: Arc::new(self.config.provisioning()),
            journal: self.journal.clone(),
            azure: self.azure.clone(),
            kube: self.kube.clone(),
            clock: self.clock.clone(),
            worker_id: self.worker_id.clone(),
            recorder: Arc::new(self.metrics.clone()),
            progress: Arc::new(TopicProgress(self.topic.clone())),
        }
    }
}

/// Publishes the saga's progress events on the events topic, best effort.
#[derive(Debug)]
pub struct TopicProgress(pub Arc<dyn Topic>);

#[async_trait::async_trait]
impl ProgressSink for TopicProgress {
    async fn progress(&self, event: CloudEvent) {
        // The outcome event is what consumers must rely on; a lost progress event is logged.
        if let Err(e) = self.0.publish(event_message(&event)).await {
            tracing::warn!(error = %e, event.id = %event.id, "progress event not published");
        }
    }
}
