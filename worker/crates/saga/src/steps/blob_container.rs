//! Step `blob_container`: the tenant's container in the target's storage account. It holds
//! tenant data, so offboarding keeps it unless the command asks to purge it (the engine decides).
//! A name still being deleted (re-onboarding right after a purge) is waited for, not retried.

use std::collections::BTreeMap;

use crate::record::StepName;
use crate::step::{Step, StepInput, StepOutcome, platform_wait, to_json};
use onboarding_providers::{BlobContainerSpec, OperationKind, PendingOperation, ProviderError};

/// How often to look again at a container name that is still being deleted.
const CONTAINER_WAIT_SECS: u64 = 5;

use super::id_or_reason;

#[derive(Debug)]
pub struct BlobContainerStep;

/// Storage still deleting the name (after a purge, or the delete just sent): a wait, looked at
/// again shortly, with the platform-wait deadline counted from when it began.
fn wait_while_being_deleted(
    input: &StepInput,
    op: Option<&PendingOperation>,
    e: &ProviderError,
) -> Result<StepOutcome, ProviderError> {
    platform_wait(
        input,
        OperationKind::Wait,
        &e.resource,
        op.and_then(|o| o.since),
        None,
        e.retry_after_secs.or(Some(CONTAINER_WAIT_SECS)),
    )
}

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
        op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        let spec = BlobContainerSpec {
            name: input.names.blob_container.clone(),
            tenant_id: input.names.tenant_id.clone(),
            metadata: BTreeMap::from([("tenant".to_string(), input.names.tenant_id.clone())]),
        };
        match input
            .azure
            .ensure_blob_container(&input.target, &spec)
            .await
        {
            Ok(info) => Ok(StepOutcome::Done(to_json(&info))),
            // The name is still being deleted (a re-onboarding right after a purge): it frees
            // up within a minute or so; waiting for it is no failed attempt.
            Err(e) if e.is_being_deleted() => wait_while_being_deleted(input, op, &e),
            Err(e) => Err(e),
        }
    }
    async fn compensate(
        &self,
        input: &StepInput,
        op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        match input
            .azure
            .delete_blob_container(
                &input.target,
                &input.names.blob_container,
                &input.names.tenant_id,
            )
            .await
        {
            Ok(()) => Ok(StepOutcome::Done(serde_json::Value::Null)),
            // Deleted, but still found: wait until it is gone rather than spend attempts.
            Err(e) if e.is_being_deleted() => wait_while_being_deleted(input, op, &e),
            Err(e) => Err(e),
        }
    }
}
