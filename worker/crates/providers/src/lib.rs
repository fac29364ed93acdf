//! The provider traits through which saga steps touch the outside world.
//!
//! Steps decide *what* must exist (names, specs, conditions, manifests) from validated input and
//! configuration; providers only carry it out. Production implementations: `onboarding_azure::ArmProvisioner`
//! (Azure Resource Manager over HTTPS) and `onboarding_kube::KubeApplier` (server-side apply). The simulators
//! in `sim/` are servers at other endpoints, so the same implementations run against them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use onboarding_core::{Classify, ErrorClass};

pub mod arm_ids;
pub mod manifests;
pub mod rbac;
mod target;

pub use target::{
    EgressRule, FqdnEgress, FqdnEngine, GuardrailDefaults, KubernetesConfig, Provisioning, Target,
    WorkloadTemplate,
};

/// An error from Azure or Kubernetes, classified for the engine.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize, PartialEq)]
#[error("{operation} {resource} failed ({class}{}): {message}", code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
pub struct ProviderError {
    pub class: ErrorClass,
    /// What was being done, e.g. `create node pool`.
    pub operation: String,
    /// Which resource, e.g. its ARM id or `Namespace/tenant-acme`.
    pub resource: String,
    /// The service's error code (`OperationNotAllowed`, `Conflict`, HTTP status if none).
    pub code: Option<String>,
    pub message: String,
    /// Seconds to wait before trying again, from `Retry-After`.
    pub retry_after_secs: Option<u64>,
}

impl ProviderError {
    pub fn transient(
        operation: impl Into<String>,
        resource: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(ErrorClass::Transient, operation, resource, message)
    }
    pub fn permanent(
        operation: impl Into<String>,
        resource: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(ErrorClass::Permanent, operation, resource, message)
    }
    pub fn new(
        class: ErrorClass,
        operation: impl Into<String>,
        resource: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            class,
            operation: operation.into(),
            resource: resource.into(),
            code: None,
            message: message.into(),
            retry_after_secs: None,
        }
    }
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after_secs = Some(after.as_secs().max(1));
        self
    }

    /// The platform's "another operation is in progress" answer: AKS runs one agent-pool (or
    /// cluster) operation at a time. It passes by waiting, however long the other one takes, so
    /// it is a wait, not a failed attempt.
    pub fn is_busy_cluster(&self) -> bool {
        const BUSY: [&str; 4] = [
            "OperationNotAllowed",
            "AKSOperationPreempted",
            "OperationPreempted",
            "AnotherOperationInProgress",
        ];
        self.class == ErrorClass::Transient
            && self
                .code
                .as_deref()
                .is_some_and(|c| BUSY.iter().any(|b| b.eq_ignore_ascii_case(c)))
    }

    /// Storage's "the container is being deleted" answer (re-creating a name soon after its
    /// delete): it passes when the delete finishes, so it is a wait, not a failed attempt.
    pub fn is_being_deleted(&self) -> bool {
        self.class == ErrorClass::Transient
            && self.message.to_ascii_lowercase().contains("being deleted")
    }
}

impl Classify for ProviderError {
    fn class(&self) -> ErrorClass {
        self.class
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after_secs.map(Duration::from_secs)
    }
}

/// A long-running operation to look at again later, or a wait for the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOperation {
    /// The URL to poll: an `Azure-AsyncOperation` or `Location` URL, or the resource itself;
    /// for [`OperationKind::ClusterTurn`], the cluster's ARM id.
    pub url: String,
    pub kind: OperationKind,
    /// When the service suggests looking again.
    pub retry_after_secs: u64,
    /// When a wait began: waits have a deadline of their own instead of counting attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// For [`OperationKind::ClusterTurn`]: the saga's place in its cluster's line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<QueuePlace>,
}

impl PendingOperation {
    /// An operation to poll at `url`, `retry_after_secs` from now.
    pub fn poll(url: impl Into<String>, kind: OperationKind, retry_after_secs: u64) -> Self {
        Self {
            url: url.into(),
            kind,
            retry_after_secs,
            since: None,
            place: None,
        }
    }
}

/// Where a saga stands in its cluster's line of agent-pool operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePlace {
    /// Operations before this saga's: the one running (if any) and the sagas ahead in line.
    /// 0: it is this saga's turn, and the cluster is busy with something else (an upgrade, a
    /// crashed holder's operation).
    pub ahead: u32,
    /// The expected wait from the recent operations' durations; `None` without history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// `Azure-AsyncOperation`: a status document `{status: InProgress|Succeeded|Failed|Canceled}`.
    AsyncOperation,
    /// `Location`: 202 while running, 200/204 (or 404 after a delete) when done.
    Location,
    /// The resource's own `properties.provisioningState`.
    ProvisioningState,
    /// Not an operation: waiting for the cluster's turn (its line of agent-pool operations, or
    /// the platform saying another operation is in progress). The saga, not the provider,
    /// looks at it again.
    ClusterTurn,
    /// Not an operation: waiting for the platform to finish something it does not report on
    /// (a container name still being deleted); the step simply tries again.
    Wait,
}

/// Either finished, or started and to be polled.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress<T> {
    Done(T),
    Pending(PendingOperation),
}

// ---------------------------------------------------------------- Azure

/// An AKS user node pool dedicated to one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePoolSpec {
    /// 1–12 lowercase alphanumerics, starting with a letter.
    pub name: String,
    pub tenant_id: String,
    pub vm_size: String,
    pub scale: NodePoolScale,
    /// Availability zones, e.g. `["1","2"]`; empty for none.
    pub zones: Vec<String>,
    /// `tenant=<id>:NoSchedule`.
    pub taints: Vec<String>,
    /// `{tenant: <id>}`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// ARM tags, including `tenant` for ownership checks.
    pub tags: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "mode")]
pub enum NodePoolScale {
    Fixed { count: u32 },
    Autoscale { min: u32, max: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePoolInfo {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentitySpec {
    pub name: String,
    pub tenant_id: String,
    pub tags: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityInfo {
    pub id: String,
    pub name: String,
    pub client_id: String,
    pub principal_id: String,
    /// The Entra tenant the identity lives in.
    pub entra_tenant_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederatedCredentialSpec {
    pub identity_name: String,
    pub name: String,
    pub issuer: String,
    /// `system:serviceaccount:<ns>:<sa>`.
    pub subject: String,
    /// `["api://AzureADTokenExchange"]`.
    pub audiences: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobContainerSpec {
    pub name: String,
    pub tenant_id: String,
    pub metadata: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobContainerInfo {
    /// ARM id, the scope of the tenant's role assignment.
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleAssignmentSpec {
    /// The scope: the container's ARM id.
    pub scope: String,
    /// UUID v5 of (scope, principal id, role definition id).
    pub name: String,
    /// Full id: `/subscriptions/<sub>/providers/Microsoft.Authorization/roleDefinitions/<guid>`.
    pub role_definition_id: String,
    pub principal_id: String,
    /// Always `ServicePrincipal` for a managed identity.
    pub principal_type: String,
    pub condition: String,
    pub condition_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleAssignmentInfo {
    pub id: String,
    pub name: String,
}

/// Azure Resource Manager operations the saga needs. Every call is idempotent: create-or-update
/// converges, and deleting something already gone is success. The target carries subscription,
/// resource groups, cluster and storage account; a provider never takes those from a command.
#[async_trait::async_trait]
pub trait AzureProvisioner: Send + Sync + std::fmt::Debug {
    /// Creates or updates the pool, tagged with the worker's marker. Returns `Pending` while
    /// AKS works; poll, then call again. A pool of that name without the worker's marker for
    /// `spec.tenant_id` is refused (permanent, `ResourceNotOwned`) and left unchanged.
    async fn ensure_node_pool(
        &self,
        target: &Target,
        spec: &NodePoolSpec,
    ) -> Result<Progress<NodePoolInfo>, ProviderError>;
    /// The pool's info when it exists, is the worker's for `spec.tenant_id` and already matches
    /// `spec` (nothing to write); `None` otherwise. Read-only: it lets an update that changes
    /// nothing skip the cluster's line of pool operations. The default always says `None`.
    async fn node_pool_in_sync(
        &self,
        _target: &Target,
        _spec: &NodePoolSpec,
    ) -> Result<Option<NodePoolInfo>, ProviderError> {
        Ok(None)
    }
    /// Whether a pool `name` with the worker's marker for `tenant_id` exists (a delete would
    /// write). Read-only. The default always says yes.
    async fn has_node_pool(
        &self,
        _target: &Target,
        _name: &str,
        _tenant_id: &str,
    ) -> Result<bool, ProviderError> {
        Ok(true)
    }
    /// Deletes the pool only if it carries the worker's marker for `tenant_id` (and is not a
    /// system pool), checked right before the delete; anything else is left in place.
    async fn delete_node_pool(
        &self,
        target: &Target,
        name: &str,
        tenant_id: &str,
    ) -> Result<Progress<()>, ProviderError>;

    /// Creates the identity with the worker's marker; an existing one without the marker for
    /// `spec.tenant_id` is refused (permanent, `ResourceNotOwned`) and left unchanged.
    async fn ensure_identity(
        &self,
        target: &Target,
        spec: &IdentitySpec,
    ) -> Result<IdentityInfo, ProviderError>;
    async fn get_identity(
        &self,
        target: &Target,
        name: &str,
    ) -> Result<Option<IdentityInfo>, ProviderError>;
    /// Deletes the identity only if it carries the worker's marker for `tenant_id`, checked
    /// right before the delete; anything else is left in place (there is nothing of ours).
    async fn delete_identity(
        &self,
        target: &Target,
        name: &str,
        tenant_id: &str,
    ) -> Result<(), ProviderError>;

    async fn ensure_federated_credential(
        &self,
        target: &Target,
        spec: &FederatedCredentialSpec,
    ) -> Result<(), ProviderError>;
    /// Deletes the credential only if its identity carries the worker's marker for
    /// `tenant_id` (a credential has no tags of its own), checked right before the delete;
    /// one under anyone else's identity is left in place.
    async fn delete_federated_credential(
        &self,
        target: &Target,
        identity_name: &str,
        name: &str,
        tenant_id: &str,
    ) -> Result<(), ProviderError>;

    /// Creates the container with the worker's marker in its metadata; an existing one without
    /// it for `spec.tenant_id` is refused (permanent, `ResourceNotOwned`) and left unchanged.
    async fn ensure_blob_container(
        &self,
        target: &Target,
        spec: &BlobContainerSpec,
    ) -> Result<BlobContainerInfo, ProviderError>;
    /// Deletes the container only if its metadata carries the worker's marker for `tenant_id`,
    /// checked right before the delete; anything else is left in place.
    async fn delete_blob_container(
        &self,
        target: &Target,
        name: &str,
        tenant_id: &str,
    ) -> Result<(), ProviderError>;

    /// An existing assignment with the same principal, role and condition is success.
    async fn ensure_role_assignment(
        &self,
        target: &Target,
        spec: &RoleAssignmentSpec,
    ) -> Result<RoleAssignmentInfo, ProviderError>;
    /// Deletes the assignment `spec.name` at `spec.scope` only if it is the one `spec`
    /// describes (principal, role and condition), checked right before the delete; a role
    /// assignment has no tags, so that is what identifies it as the worker's. Anything else
    /// under that name is left in place.
    async fn delete_role_assignment(
        &self,
        target: &Target,
        spec: &RoleAssignmentSpec,
    ) -> Result<(), ProviderError>;

    /// Look at a long-running operation once. `Done` when it finished successfully; a failed
    /// operation is an error classified from its error body.
    async fn poll_operation(
        &self,
        target: &Target,
        operation: &PendingOperation,
    ) -> Result<Progress<()>, ProviderError>;
}

// ---------------------------------------------------------------- Kubernetes

/// A Kubernetes object to apply: the full manifest plus its coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeObject {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The whole manifest (apiVersion, kind, metadata, spec...), as sent in the apply patch.
    pub manifest: serde_json::Value,
}

impl KubeObject {
    pub fn reference(&self) -> ObjectRef {
        ObjectRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind, ns, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// Kubernetes operations the saga needs, on the cluster of the given target.
#[async_trait::async_trait]
pub trait KubeProvisioner: Send + Sync + std::fmt::Debug {
    /// Server-side apply with the worker's fixed field manager (force). Returns the live object.
    async fn apply(
        &self,
        target: &Target,
        object: &KubeObject,
    ) -> Result<serde_json::Value, ProviderError>;
    async fn get(
        &self,
        target: &Target,
        object: &ObjectRef,
    ) -> Result<Option<serde_json::Value>, ProviderError>;
    /// Deleting an object already gone (or whose namespace is gone) is success.
    async fn delete(&self, target: &Target, object: &ObjectRef) -> Result<(), ProviderError>;
    /// Delete the object only if it is still exactly the one looked at (its `uid` and
    /// `resourceVersion`, as the API server checks delete preconditions): `Ok(false)` when it
    /// changed or was replaced meanwhile (nothing deleted; look again), `Ok(true)` when deleted
    /// or already gone.
    async fn delete_unchanged(
        &self,
        target: &Target,
        object: &ObjectRef,
        uid: &str,
        resource_version: &str,
    ) -> Result<bool, ProviderError>;
}
