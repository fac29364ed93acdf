//! The one struct that carries every client the worker uses, so that tests can swap any of them.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::providers::{AzureProvisioner, KubeProvisioner};
use crate::transport::{Queue, Topic};

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
