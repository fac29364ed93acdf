//! Managed identities and their federated identity credentials: create, read and delete, each
//! a synchronous ARM call.
//!
//! May touch: user-assigned identities (and their federated credentials) in the target's
//! resource group, through the target's [`ArmClient`].

use super::bodies::{federated_credential_body, identity_body};
use super::{MANAGED_BY_TAG, foreign_owner, not_owned, parse, sync_delete, to_json};
use crate::api;
use crate::client::ArmResponse;
use crate::client::{ArmClient, Op};
use crate::models::Identity;
use onboarding_providers::arm_ids::{federated_credential_id, identity_id};
use onboarding_providers::{
    FederatedCredentialSpec, IdentityInfo, IdentitySpec, ProviderError, Target,
};

pub(super) async fn ensure(
    client: &ArmClient,
    target: &Target,
    spec: &IdentitySpec,
) -> Result<IdentityInfo, ProviderError> {
    let path = identity_id(target, &spec.name)?;
    let op = Op {
        operation: "create managed identity",
        resource: &path,
    };
    if let Some(existing) = read(client, &path).await?
        && let Some(who) = foreign_owner(existing.tags.as_ref(), MANAGED_BY_TAG, &spec.tenant_id)
    {
        return Err(not_owned(op.operation, &path, "managed identity", &who));
    }
    let body = to_json(&identity_body(target, spec), op)?;
    let resp = client.put(&path, api::MANAGED_IDENTITY, &body, op).await?;
    identity_info(&resp, &path, &spec.name, op)
}

pub(super) async fn get(
    client: &ArmClient,
    target: &Target,
    name: &str,
) -> Result<Option<IdentityInfo>, ProviderError> {
    let path = identity_id(target, name)?;
    let op = Op {
        operation: "read managed identity",
        resource: &path,
    };
    match client.get(&path, api::MANAGED_IDENTITY, op).await? {
        Some(resp) => identity_info(&resp, &path, name, op).map(Some),
        None => Ok(None),
    }
}

/// The identity at `path` as ARM has it now, if any.
async fn read(client: &ArmClient, path: &str) -> Result<Option<Identity>, ProviderError> {
    super::read_existing(client, path, api::MANAGED_IDENTITY, "read managed identity").await
}

pub(super) async fn delete(
    client: &ArmClient,
    target: &Target,
    name: &str,
    tenant_id: &str,
) -> Result<(), ProviderError> {
    let path = identity_id(target, name)?;
    let op = Op {
        operation: "delete managed identity",
        resource: &path,
    };
    // Verified immediately before the delete: only ours, for this tenant, is ever deleted.
    let Some(existing) = read(client, &path).await? else {
        return Ok(());
    };
    if let Some(who) = foreign_owner(existing.tags.as_ref(), MANAGED_BY_TAG, tenant_id) {
        tracing::warn!(identity = %path, owner = %who, "managed identity not ours: left in place");
        return Ok(());
    }
    sync_delete(client.delete(&path, api::MANAGED_IDENTITY, op).await?, op)
}

pub(super) async fn ensure_federated_credential(
    client: &ArmClient,
    target: &Target,
    spec: &FederatedCredentialSpec,
) -> Result<(), ProviderError> {
    let path = federated_credential_id(target, &spec.identity_name, &spec.name)?;
    let op = Op {
        operation: "create federated identity credential",
        resource: &path,
    };
    let body = to_json(&federated_credential_body(spec), op)?;
    client.put(&path, api::MANAGED_IDENTITY, &body, op).await?;
    Ok(())
}

pub(super) async fn delete_federated_credential(
    client: &ArmClient,
    target: &Target,
    identity_name: &str,
    name: &str,
    tenant_id: &str,
) -> Result<(), ProviderError> {
    let path = federated_credential_id(target, identity_name, name)?;
    let op = Op {
        operation: "delete federated identity credential",
        resource: &path,
    };
    // A credential has no tags: it is the worker's when its identity is, checked immediately
    // before the delete. Under no identity, or someone else's, nothing is deleted.
    let identity_path = identity_id(target, identity_name)?;
    let Some(identity) = read(client, &identity_path).await? else {
        return Ok(());
    };
    if let Some(who) = foreign_owner(identity.tags.as_ref(), MANAGED_BY_TAG, tenant_id) {
        tracing::warn!(credential = %path, owner = %who, "federated credential under an identity not ours: left in place");
        return Ok(());
    }
    sync_delete(client.delete(&path, api::MANAGED_IDENTITY, op).await?, op)
}

fn identity_info(
    resp: &ArmResponse,
    path: &str,
    name: &str,
    op: Op<'_>,
) -> Result<IdentityInfo, ProviderError> {
    let identity: Identity = parse(resp, op)?;
    let props = identity.properties.unwrap_or_default();
    match (props.client_id, props.principal_id, props.tenant_id) {
        (Some(client_id), Some(principal_id), Some(tenant)) => Ok(IdentityInfo {
            id: identity.id.unwrap_or_else(|| path.to_string()),
            name: name.to_string(),
            client_id,
            principal_id,
            entra_tenant_id: tenant,
        }),
        _ => Err(ProviderError::transient(
            op.operation,
            op.resource,
            format!(
                "ARM's answer lacks the identity's clientId, principalId or tenantId (request id {})",
                resp.request_id
            ),
        )),
    }
}
