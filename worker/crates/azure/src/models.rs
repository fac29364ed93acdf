//! Typed request and response models of the ARM resources the worker touches, in the shape of the
//! official OpenAPI specs (`shared/azure-rest-specs`, api-versions in [`super::api`]).
//!
//! Every model keeps the fields it does not name in `extra`, so that a response read and written
//! back is the same JSON (the official examples round-trip) and nothing ARM adds is lost.
//! Pure data: no I/O here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields a model does not name, kept verbatim.
pub type Extra = Map<String, Value>;

// ---------------------------------------------------------------- AKS agent pool

/// `Microsoft.ContainerService/managedClusters/agentPools` (a proxy resource: no location, tags
/// live in `properties.tags`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentPool {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<AgentPoolProperties>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentPoolProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_auto_scaling: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_size: Option<String>,
    /// `System`, `User` or `Gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `Linux` or `Windows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_taints: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zones: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Read-only: `Creating`, `Updating`, `Deleting`, `Succeeded`, `Failed`, `Canceled`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

// ---------------------------------------------------------------- managed identity

/// `Microsoft.ManagedIdentity/userAssignedIdentities` (a tracked resource).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<IdentityProperties>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// All read-only except `isolationScope` (kept in `extra`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `.../userAssignedIdentities/{name}/federatedIdentityCredentials/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FederatedIdentityCredential {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    pub properties: FederatedIdentityCredentialProperties,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FederatedIdentityCredentialProperties {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

// ---------------------------------------------------------------- blob container

/// `Microsoft.Storage/storageAccounts/blobServices/containers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobContainer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<ContainerProperties>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_access: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

// ---------------------------------------------------------------- role assignment

/// The PUT body of a role assignment (`RoleAssignmentCreateParameters`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignmentCreate {
    pub properties: RoleAssignmentProperties,
}

/// `Microsoft.Authorization/roleAssignments` as returned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    pub properties: RoleAssignmentProperties,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignmentProperties {
    pub role_definition_id: String,
    pub principal_id: String,
    /// `User`, `Group`, `ServicePrincipal` or `ForeignGroup`. Setting it lets ARM skip the
    /// directory lookup that fails right after an identity is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Only `2.0` is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_version: Option<String>,
    /// Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `GET {scope}/providers/Microsoft.Authorization/roleAssignments` answers a page of these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignmentList {
    #[serde(default)]
    pub value: Vec<RoleAssignment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

// ---------------------------------------------------------------- errors and operations

/// ARM's error envelope: `{"error": {"code", "message", "details"}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmErrorBody {
    pub error: ArmErrorDetail,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmErrorDetail {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ArmErrorDetail>,
}

impl ArmErrorDetail {
    /// Parses either the envelope or a bare `{code, message}` (some services answer that).
    pub fn from_body(body: &Value) -> Option<Self> {
        if let Some(inner) = body.get("error")
            && let Ok(detail) = serde_json::from_value::<ArmErrorDetail>(inner.clone())
            && !detail.code.is_empty()
        {
            return Some(detail);
        }
        serde_json::from_value::<ArmErrorDetail>(body.clone())
            .ok()
            .filter(|d| !d.code.is_empty())
    }
}

/// The document an `Azure-AsyncOperation` URL answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AsyncOperationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `InProgress`, `Succeeded`, `Failed`, `Canceled` (services add their own non-terminal ones).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ArmErrorDetail>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_agent_pool_keeps_fields_it_does_not_name() {
        let body = json!({"properties": {"count": 1, "scaleSetPriority": "Spot"}, "eTag": "x"});
        let pool: AgentPool = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(pool.properties.as_ref().unwrap().count, Some(1));
        assert_eq!(serde_json::to_value(&pool).unwrap(), body);
    }

    #[test]
    fn error_bodies_parse_with_or_without_the_envelope() {
        let e = ArmErrorDetail::from_body(&json!({"error": {"code": "Conflict", "message": "m"}}));
        assert_eq!(e.unwrap().code, "Conflict");
        let e = ArmErrorDetail::from_body(&json!({"code": "Bare", "message": "m"}));
        assert_eq!(e.unwrap().code, "Bare");
        assert!(ArmErrorDetail::from_body(&json!({"unrelated": 1})).is_none());
    }
}
