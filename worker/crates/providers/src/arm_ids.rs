//! ARM resource ids of a tenant's resources in a target: pure functions of the configured target
//! and validated names, shared by the steps (to name a resource in reports) and the ARM
//! provisioner (to address it). Every segment is checked, so nothing but plain names reaches a
//! path. Touches nothing.

use onboarding_core::ErrorClass;

use crate::rbac::validate_container_name;
use crate::{ProviderError, Target};

/// Accepts a plain ARM path segment: letters, digits, `-`, `_`, `.`, `(`, `)`.
pub fn segment<'a>(what: &str, value: &'a str) -> Result<&'a str, ProviderError> {
    let ok = !value.is_empty()
        && value.len() <= 260
        && !value.starts_with('.')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'));
    if ok {
        Ok(value)
    } else {
        Err(ProviderError::new(
            ErrorClass::InvalidInput,
            "build ARM path",
            what,
            format!("{what} {value:?} is not a plain ARM name (letters, digits, - _ . ( ) only)"),
        ))
    }
}

fn resource_group_path(subscription: &str, rg: &str) -> Result<String, ProviderError> {
    Ok(format!(
        "/subscriptions/{}/resourceGroups/{}",
        segment("subscription id", subscription)?,
        segment("resource group", rg)?
    ))
}

/// ARM id of a node pool of the target's cluster.
pub fn node_pool_id(target: &Target, name: &str) -> Result<String, ProviderError> {
    Ok(format!(
        "{}/providers/Microsoft.ContainerService/managedClusters/{}/agentPools/{}",
        resource_group_path(&target.subscription_id, &target.cluster_resource_group)?,
        segment("cluster name", &target.cluster_name)?,
        segment("node pool name", name)?
    ))
}

/// ARM id of a user-assigned identity in the target's identity resource group.
pub fn identity_id(target: &Target, name: &str) -> Result<String, ProviderError> {
    Ok(format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}",
        resource_group_path(&target.subscription_id, &target.resource_group)?,
        segment("identity name", name)?
    ))
}

pub fn federated_credential_id(
    target: &Target,
    identity_name: &str,
    name: &str,
) -> Result<String, ProviderError> {
    Ok(format!(
        "{}/federatedIdentityCredentials/{}",
        identity_id(target, identity_name)?,
        segment("federated credential name", name)?
    ))
}

/// ARM id of the target's storage account.
pub fn storage_account_id(target: &Target) -> Result<String, ProviderError> {
    Ok(format!(
        "{}/providers/Microsoft.Storage/storageAccounts/{}",
        resource_group_path(&target.subscription_id, &target.storage_resource_group)?,
        segment("storage account", &target.storage_account)?
    ))
}

/// ARM id of a blob container of the target's storage account (the role assignment scope).
pub fn blob_container_id(target: &Target, name: &str) -> Result<String, ProviderError> {
    validate_container_name(name).map_err(|e| {
        ProviderError::new(
            ErrorClass::InvalidInput,
            "build ARM path",
            name,
            e.to_string(),
        )
    })?;
    Ok(format!(
        "{}/blobServices/default/containers/{}",
        storage_account_id(target)?,
        name
    ))
}
