//! Step `workload` (optional): the tenant's Deployment from the configured template, pinned to
//! the tenant's node pool and running as the tenant's workload identity.

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
        let obj = object(input);
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
        input
            .kube
            .delete(&input.target, &object(input).reference())
            .await?;
        Ok(StepOutcome::Done(serde_json::Value::Null))
    }
}
