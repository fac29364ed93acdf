//! Step `blob_container`: the tenant's container in the target's storage account. It holds
//! tenant data, so offboarding keeps it unless the command asks to purge it (the engine decides).

use std::collections::BTreeMap;

use crate::record::StepName;
use crate::step::{Step, StepInput, StepOutcome, to_json};
use onboarding_providers::{BlobContainerSpec, PendingOperation, ProviderError};

use super::id_or_reason;

#[derive(Debug)]
pub struct BlobContainerStep;

#[async_trait::async_trait]
impl Step for BlobContainerStep {
    fn name(&self) -> StepName {
        StepName::BlobContainer
    }
    fn needs(&self) -> &'static [StepName] {
        &[]
    }
    fn resource(&self, input: &StepInput) -> String {
        id_or_reason(onboarding_providers::arm_ids::blob_container_id(
            &input.target,
            &input.names.blob_container,
        ))
    }
    async fn forward(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        let spec = BlobContainerSpec {
            name: input.names.blob_container.clone(),
            tenant_id: input.names.tenant_id.clone(),
            metadata: BTreeMap::from([("tenant".to_string(), input.names.tenant_id.clone())]),
        };
        let info = input
            .azure
            .ensure_blob_container(&input.target, &spec)
            .await?;
        Ok(StepOutcome::Done(to_json(&info)))
    }
    async fn compensate(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        input
            .azure
            .delete_blob_container(
                &input.target,
                &input.names.blob_container,
                &input.names.tenant_id,
            )
            .await?;
        Ok(StepOutcome::Done(serde_json::Value::Null))
    }
}
