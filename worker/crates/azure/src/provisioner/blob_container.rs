//! Blob containers: create (private, tagged with the tenant in its metadata) and delete a
//! tenant's container in the target's storage account.
//!
//! May touch: blob containers of the target's storage account, through the target's
//! [`ArmClient`].

use super::bodies::blob_container_body;
use super::{parse, sync_delete, to_json};
use crate::api;
use crate::client::{ArmClient, Op};
use crate::models::BlobContainer;
use onboarding_providers::arm_ids::blob_container_id;
use onboarding_providers::{BlobContainerInfo, BlobContainerSpec, ProviderError, Target};

pub(super) async fn ensure(
    client: &ArmClient,
    target: &Target,
    spec: &BlobContainerSpec,
) -> Result<BlobContainerInfo, ProviderError> {
    let path = blob_container_id(target, &spec.name)?;
    let op = Op {
        operation: "create blob container",
        resource: &path,
    };
    let body = to_json(&blob_container_body(spec), op)?;
    let resp = client.put(&path, api::BLOB_CONTAINERS, &body, op).await?;
    let container: BlobContainer = parse(&resp, op)?;
    Ok(BlobContainerInfo {
        id: container.id.unwrap_or(path.clone()),
        name: spec.name.clone(),
    })
}

pub(super) async fn delete(
    client: &ArmClient,
    target: &Target,
    name: &str,
) -> Result<(), ProviderError> {
    let path = blob_container_id(target, name)?;
    let op = Op {
        operation: "delete blob container",
        resource: &path,
    };
    sync_delete(client.delete(&path, api::BLOB_CONTAINERS, op).await?, op)
}
