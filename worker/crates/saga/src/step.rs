//! The step trait and what a step is given to work with.
//!
//! A step is one resource: an idempotent forward action (create-or-update) and an idempotent
//! compensation (delete; already gone is success). Steps compute names and specs from validated
//! input and configuration only, and call the outside world through the provider traits.

use std::collections::BTreeMap;
use std::sync::Arc;

use onboarding_core::Classify;
use onboarding_core::Clock;

use onboarding_contract::{OnboardTenant, TenantNames};
use onboarding_providers::{AzureProvisioner, KubeProvisioner, PendingOperation, ProviderError};
use onboarding_providers::{Provisioning, Target};

use super::record::StepName;
use crate::cluster_turns::ClusterTurns;
use crate::retry::RetryPolicy;

/// What a step call produced.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// Finished; the outputs are journalled (forward) or the resource is gone (compensation).
    Done(serde_json::Value),
    /// A long-running operation is under way: poll it at the suggested time.
    Pending(PendingOperation),
}

/// Everything a step may read. Owned, so step calls can run concurrently with journal writes.
#[derive(Debug, Clone)]
pub struct StepInput {
    pub names: TenantNames,
    /// The request being carried out (with the tenant, it names the saga run).
    pub request_id: String,
    pub target: Target,
    /// The onboarding spec; `None` when offboarding (compensations only need names and outputs).
    pub spec: Option<OnboardTenant>,
    /// Outputs of steps already done (this run's, or a previous run's for an offboarding).
    pub outputs: BTreeMap<StepName, serde_json::Value>,
    pub provisioning: Arc<Provisioning>,
    pub azure: Arc<dyn AzureProvisioner>,
    pub kube: Arc<dyn KubeProvisioner>,
    pub clock: Arc<dyn Clock>,
    /// Each cluster's line of agent-pool operations.
    pub cluster_turns: Arc<ClusterTurns>,
    pub settings: Arc<onboarding_config::SagaConfig>,
}

impl StepInput {
    pub fn output(&self, step: StepName) -> Option<&serde_json::Value> {
        self.outputs.get(&step)
    }

    /// A string field of a previous step's outputs, or a permanent error naming it.
    pub fn output_str(&self, step: StepName, field: &str) -> Result<String, ProviderError> {
        self.outputs
            .get(&step)
            .and_then(|o| o.get(field))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                ProviderError::permanent(
                    "read step outputs",
                    step.as_str(),
                    format!("the journal has no {field} from step {step}; it must run first"),
                )
            })
    }

    /// Retry one call of a multi-call step on transient errors as [`RetryPolicy::inner_call`]
    /// says, so a throttled seventh call does not throw away the six that succeeded: the
    /// engine's retry would restart the whole step.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let policy = RetryPolicy::inner_call();
        let mut tries = 1;
        loop {
            match f().await {
                Err(e) if e.is_transient() && policy.allows_another_after(tries) => {
                    self.clock.sleep(policy.delay(tries, e.retry_after())).await;
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    pub fn spec(&self) -> Result<&OnboardTenant, ProviderError> {
        self.spec.as_ref().ok_or_else(|| {
            ProviderError::permanent(
                "read onboarding spec",
                &self.names.tenant_id,
                "a forward step ran without an onboarding command",
            )
        })
    }
}

#[async_trait::async_trait]
pub trait Step: Send + Sync + std::fmt::Debug {
    fn name(&self) -> StepName;
    /// Steps whose outputs this one needs; it runs only after they are done.
    fn needs(&self) -> &'static [StepName];
    /// Optional steps say whether the command asked for them.
    fn enabled(&self, _spec: &OnboardTenant, _provisioning: &Provisioning) -> bool {
        true
    }
    /// A human-readable id of the resource, for `CompensationFailed` reports.
    fn resource(&self, input: &StepInput) -> String;
    /// Create or update. Called again with the pending operation until it is done.
    async fn forward(
        &self,
        input: &StepInput,
        operation: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError>;
    /// Delete. Deleting something already gone is success.
    async fn compensate(
        &self,
        input: &StepInput,
        operation: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError>;
}

/// Poll `operation` if there is one; `Some(outcome)` while it is still running.
pub(crate) async fn poll_first(
    input: &StepInput,
    operation: Option<&PendingOperation>,
) -> Result<Option<StepOutcome>, ProviderError> {
    use onboarding_providers::Progress;
    if let Some(op) = operation {
        match input.azure.poll_operation(&input.target, op).await? {
            Progress::Pending(next) => return Ok(Some(StepOutcome::Pending(next))),
            Progress::Done(()) => {}
        }
    }
    Ok(None)
}

/// Wait for the platform (`kind`: the cluster's turn, or a timed wait) on `resource`, looking
/// again after `retry_after` seconds (else the configured poll interval). A wait is not a failed
/// attempt; it has a deadline of its own (`saga.wait_limit_ms`), counted from `since`.
pub(crate) fn platform_wait(
    input: &StepInput,
    kind: onboarding_providers::OperationKind,
    resource: &str,
    since: Option<chrono::DateTime<chrono::Utc>>,
    place: Option<onboarding_providers::QueuePlace>,
    retry_after: Option<u64>,
) -> Result<StepOutcome, ProviderError> {
    let now = input.clock.now();
    let since = since.unwrap_or(now);
    let limit = std::time::Duration::from_millis(input.settings.wait_limit_ms);
    if (now - since).to_std().unwrap_or_default() > limit {
        let ahead = place.map_or_else(String::new, |p| format!(" ({} operations ahead)", p.ahead));
        return Err(ProviderError::permanent(
            "wait for the platform",
            resource,
            format!(
                "waited {} min for the platform to let this step proceed{ahead}; raise saga.wait_limit_ms or look at what keeps {resource} busy",
                limit.as_secs() / 60,
            ),
        )
        .with_code("WaitLimitReached"));
    }
    let poll_secs = input.settings.cluster_turn_poll_ms.div_ceil(1000).max(1);
    Ok(StepOutcome::Pending(PendingOperation {
        url: resource.to_string(),
        kind,
        retry_after_secs: retry_after.unwrap_or(poll_secs).max(1),
        since: Some(since),
        place,
    }))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}
