//! Blob containers: create (private, tagged with the tenant in its metadata) and delete a
//! tenant's container in the target's storage account.
//!
//! May touch: blob containers of the target's storage account, through the target's
//! [`ArmClient`].

use super::bodies::blob_container_body;
use super::{CONTAINER_MANAGED_BY_KEY, foreign_owner, not_owned, parse, sync_delete, to_json};
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
    if let Some(existing) = read(client, &path).await?
        && let Some(who) = foreign_owner(
            metadata(&existing),
            CONTAINER_MANAGED_BY_KEY,
            &spec.tenant_id,
        )
    {
        return Err(not_owned(op.operation, &path, "blob container", &who));
    }
    let body = to_json(&blob_container_body(spec), op)?;
    let resp = client.put(&path, api::BLOB_CONTAINERS, &body, op).await?;
    let container: BlobContainer = parse(&resp, op)?;
    Ok(BlobContainerInfo {
        id: container.id.unwrap_or(path.clone()),
        name: spec.name.clone(),
    })
}

fn metadata(c: &BlobContainer) -> Option<&std::collections::BTreeMap<String, String>> {
    c.properties.as_ref().and_then(|p| p.metadata.as_ref())
}

/// The container at `path` as ARM has it now, if any.
async fn read(client: &ArmClient, path: &str) -> Result<Option<BlobContainer>, ProviderError> {
    super::read_existing(client, path, api::BLOB_CONTAINERS, "read blob container").await
}

pub(super) async fn delete(
    client: &ArmClient,
    target: &Target,
    name: &str,
    tenant_id: &str,
) -> Result<(), ProviderError> {
    let path = blob_container_id(target, name)?;
    let op = Op {
        operation: "delete blob container",
        resource: &path,
    };
    // Verified immediately before the delete: only ours, for this tenant, is ever deleted
    // (a container holds data; someone else's is never touched).
    let Some(existing) = read(client, &path).await? else {
        return Ok(());
    };
    if let Some(who) = foreign_owner(metadata(&existing), CONTAINER_MANAGED_BY_KEY, tenant_id) {
        tracing::warn!(container = %path, owner = %who, "blob container not ours: left in place");
        return Ok(());
    }
    sync_delete(client.delete(&path, api::BLOB_CONTAINERS, op).await?, op)?;
    // Storage deletes asynchronously: the delete is done when a GET says 404.
    if read(client, &path).await?.is_some() {
        return Err(ProviderError::transient(
            op.operation,
            op.resource,
            "the container is being deleted; its delete is done when it is no longer found",
        )
        .with_code("ContainerBeingDeleted"));
    }
    Ok(())
}
