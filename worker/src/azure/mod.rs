//! Azure Resource Manager provider: credentials, the ARM HTTP client, typed models and
//! [`ArmProvisioner`], the production [`crate::providers::AzureProvisioner`].
//!
//! May touch: ARM over HTTPS (or a simulator at the configured endpoint), Entra's token endpoint,
//! the projected token file and the `az` program of a target's credential. Nothing else: no
//! environment reads (settings come through [`ArmClientOptions`] and [`CredentialOptions`]), no
//! simulation branches.

pub mod budget;
pub mod client;
pub mod credential;
pub mod models;
pub mod provisioner;
pub mod rbac;

pub use budget::{WriteBudgetConfig, WriteBudgets};
pub use client::{ArmClient, ArmClientOptions, ArmResponse};
pub use credential::{
    AzureCliCredential, CredentialOptions, WorkloadIdentityCredential, credential_for,
    credential_with,
};
pub use provisioner::{
    ArmProvisioner, TENANT_TAG, agent_pool_body, blob_container_body, blob_container_id,
    federated_credential_body, federated_credential_id, identity_body, identity_id, node_pool_id,
    role_assignment_body, storage_account_id,
};
pub use rbac::{
    CONDITION_VERSION, InvalidContainerName, ROLE_ASSIGNMENT_NAMESPACE,
    STORAGE_BLOB_DATA_CONTRIBUTOR, blob_container_condition, role_assignment_name,
    role_definition_id, validate_container_name,
};

/// The api-versions of the official specs in `shared/azure-rest-specs`.
pub mod api {
    /// `Microsoft.ContainerService` agent pools.
    pub const AGENT_POOLS: &str = "2026-08-01";
    /// `Microsoft.ManagedIdentity` identities and federated identity credentials.
    pub const MANAGED_IDENTITY: &str = "2024-11-30";
    /// `Microsoft.Authorization` role assignments.
    pub const ROLE_ASSIGNMENTS: &str = "2022-04-01";
    /// `Microsoft.Storage` blob containers.
    pub const BLOB_CONTAINERS: &str = "2025-08-01";
}
