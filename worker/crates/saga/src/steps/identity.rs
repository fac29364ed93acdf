//! Step `identity`: the tenant's user-assigned managed identity, used by its pods through
//! workload identity. Outputs client id, principal id and Entra tenant id for later steps.

use std::collections::BTreeMap;

use crate::record::StepName;
use crate::step::{Step, StepInput, StepOutcome, to_json};
use onboarding_providers::{IdentitySpec, PendingOperation, ProviderError};

use super::id_or_reason;

#[derive(Debug)]
pub struct IdentityStep;

#[async_trait::async_trait]
impl Step for IdentityStep {
    fn name(&self) -> StepName {
        StepName::Identity
    }
    fn needs(&self) -> &'static [StepName] {
        &[]
    }
    fn resource(&self, input: &StepInput) -> String {
        id_or_reason(onboarding_providers::arm_ids::identity_id(
            &input.target,
            &input.names.identity,
        ))
    }
    async fn forward(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        let spec = IdentitySpec {
            name: input.names.identity.clone(),
            tenant_id: input.names.tenant_id.clone(),
            tags: BTreeMap::from([("tenant".to_string(), input.names.tenant_id.clone())]),
        };
        let info = input.azure.ensure_identity(&input.target, &spec).await?;
        Ok(StepOutcome::Done(to_json(&info)))
    }
    async fn compensate(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        input
            .azure
            .delete_identity(&input.target, &input.names.identity, &input.names.tenant_id)
            .await?;
        Ok(StepOutcome::Done(serde_json::Value::Null))
    }
}
