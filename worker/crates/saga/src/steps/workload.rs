//! Step `workload` (optional): the tenant's Deployment from the configured template, pinned to
//! the tenant's node pool and running as the tenant's workload identity.
//!
//! A Deployment of that name without the worker's marker for this tenant is neither adopted nor
//! deleted. When another field manager owns the replicas (an autoscaler targets the Deployment),
//! the worker leaves them out of what it applies. Touches the target's API server only.

use super::owned::{delete_owned, live_if_ours};
use super::ownership::replicas_managed_elsewhere;
use crate::record::StepName;
use crate::step::{Step, StepInput, StepOutcome};
use onboarding_contract::OnboardTenant;
use onboarding_providers::Provisioning;
use onboarding_providers::manifests;
use onboarding_providers::{KubeObject, PendingOperation, ProviderError};

#[derive(Debug)]
pub struct WorkloadStep;

fn object(input: &StepInput) -> KubeObject {
    let template = input.provisioning.workload.clone().unwrap_or_default();
    let replicas = input
        .spec
        .as_ref()
        .and_then(|s| s.workload.as_ref())
        .map_or(1, |w| w.replicas);
    manifests::workload(
        &input.names.namespace,
        &input.names.tenant_id,
        &input.names.service_account,
        &template,
        replicas,
    )
}

#[async_trait::async_trait]
impl Step for WorkloadStep {
    fn name(&self) -> StepName {
        StepName::Workload
    }
    fn needs(&self) -> &'static [StepName] {
        &[
            StepName::NodePool,
            StepName::ServiceAccount,
            StepName::FederatedCredential,
            StepName::RoleAssignment,
        ]
    }
    fn enabled(&self, spec: &OnboardTenant, config: &Provisioning) -> bool {
        spec.workload.is_some() && config.workload.is_some()
    }
    fn resource(&self, input: &StepInput) -> String {
        object(input).reference().to_string()
    }
    async fn forward(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        let mut obj = object(input);
        let reference = obj.reference();
        if let Some(live) = live_if_ours(input, &reference).await?
            && replicas_managed_elsewhere(&live)
            && let Some(spec) = obj.manifest.get_mut("spec").and_then(|s| s.as_object_mut())
        {
            // Server-side apply with force would take the replicas back from the autoscaler.
            spec.remove("replicas");
        }
        input.kube.apply(&input.target, &obj).await?;
        Ok(StepOutcome::Done(
            serde_json::json!({ "deployment": obj.reference().to_string() }),
        ))
    }
    async fn compensate(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        delete_owned(input, &object(input).reference()).await?;
        Ok(StepOutcome::Done(serde_json::Value::Null))
    }
}
