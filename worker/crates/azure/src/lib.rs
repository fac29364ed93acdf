//! Azure Resource Manager provider: credentials, the ARM HTTP client, typed models and
//! [`ArmProvisioner`], the production [`onboarding_providers::AzureProvisioner`].
//!
//! May touch: ARM over HTTPS (or a simulator at the configured endpoint), Entra's token endpoint,
//! the projected token file and the `az` program of a target's credential. Nothing else: no
//! environment reads (settings come through [`ArmClientOptions`] and [`CredentialOptions`]), no
//! simulation branches.

pub mod budget;
pub mod client;
pub mod models;
pub mod provisioner;

pub use budget::{
    BudgetError, BudgetStore, Feedback, Grant, InProcessStore, SharedBucket, WriteBudgetConfig,
    WriteBudgets,
};
pub use client::{ArmClient, ArmClientOptions, ArmResponse};
pub use provisioner::{
    ArmProvisioner, CONTAINER_MANAGED_BY_KEY, MANAGED_BY_TAG, MANAGER, TENANT_TAG, agent_pool_body,
    blob_container_body, federated_credential_body, identity_body, role_assignment_body,
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
