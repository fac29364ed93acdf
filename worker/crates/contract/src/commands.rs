//! The commands upstream systems and operators put on the queue: `OnboardTenant` and
//! `OffboardTenant`, version 1.0, camelCase JSON.
//!
//! The types are the source of the committed JSON Schema (`worker/schema/`); validation runs that
//! schema first, so its patterns are the first line of defence for every name that later reaches
//! an ARM path, a Kubernetes object or an ABAC condition.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only command schema version this worker understands.
pub const SCHEMA_VERSION: &str = "1.0";

/// Tenant ids become namespaces, container and identity names: lowercase alphanumerics and
/// single hyphens, starting and ending with an alphanumeric, 3-40 characters.
pub const TENANT_ID_PATTERN: &str = r"^[a-z0-9](?:[a-z0-9]|-(?:[a-z0-9])){2,39}$";
/// Request ids end up in MessageIds (`<request-id>:<seq>`, at most 128 characters).
pub const REQUEST_ID_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$";
pub const TARGET_PATTERN: &str = r"^[a-z0-9][a-z0-9-]{0,62}$";
pub const VM_SIZE_PATTERN: &str = r"^Standard_[A-Za-z0-9_]{1,40}$";
pub const QUANTITY_PATTERN: &str = r"^[0-9]{1,6}(?:\.[0-9]{1,3})?(?:m|Ki|Mi|Gi|Ti)?$";
pub const GUID_PATTERN: &str =
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OnboardKind {
    OnboardTenant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OffboardKind {
    OffboardTenant,
}

/// Provision (or update to this spec) everything a tenant needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "OnboardTenant")]
pub struct OnboardTenant {
    /// Must be "1.0".
    #[schemars(regex(pattern = r"^1\.0$"))]
    pub schema_version: String,
    pub kind: OnboardKind,
    /// Idempotency key: the same request id is never provisioned twice.
    #[schemars(regex(pattern = REQUEST_ID_PATTERN))]
    pub request_id: String,
    #[schemars(regex(pattern = TENANT_ID_PATTERN), length(min = 3, max = 40))]
    pub tenant_id: String,
    /// A configured provisioning target; the worker's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TARGET_PATTERN))]
    pub target: Option<String>,
    pub node_pool: NodePoolRequest,
    /// Namespace quota; the worker's configured defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaRequest>,
    /// Object id of the Entra group that gets edit rights in the tenant's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub admin_group_id: Option<String>,
    /// Deploy the tenant's workload from the worker's template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRequest>,
}

/// The tenant's dedicated AKS node pool: a fixed `count`, or `minCount`..`maxCount` autoscaling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePoolRequest {
    #[schemars(regex(pattern = VM_SIZE_PATTERN))]
    pub vm_size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub min_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3), inner(regex(pattern = r"^[1-3]$")))]
    pub zones: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaRequest {
    /// CPU quantity, e.g. "8" or "500m".
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub cpu: String,
    /// Memory quantity, e.g. "32Gi".
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub memory: String,
    #[schemars(range(min = 1, max = 10000))]
    pub pods: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadRequest {
    #[schemars(range(min = 0, max = 50))]
    pub replicas: u32,
}

/// Remove everything the worker provisioned for a tenant. Its blob container (the tenant's data)
/// is kept unless `purgeData` is true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "OffboardTenant")]
pub struct OffboardTenant {
    #[schemars(regex(pattern = r"^1\.0$"))]
    pub schema_version: String,
    pub kind: OffboardKind,
    #[schemars(regex(pattern = REQUEST_ID_PATTERN))]
    pub request_id: String,
    #[schemars(regex(pattern = TENANT_ID_PATTERN), length(min = 3, max = 40))]
    pub tenant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TARGET_PATTERN))]
    pub target: Option<String>,
    #[serde(default)]
    pub purge_data: bool,
}

/// A validated command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Command {
    Onboard(OnboardTenant),
    Offboard(OffboardTenant),
}

impl Command {
    pub fn request_id(&self) -> &str {
        match self {
            Command::Onboard(c) => &c.request_id,
            Command::Offboard(c) => &c.request_id,
        }
    }
    pub fn tenant_id(&self) -> &str {
        match self {
            Command::Onboard(c) => &c.tenant_id,
            Command::Offboard(c) => &c.tenant_id,
        }
    }
    pub fn target(&self) -> Option<&str> {
        match self {
            Command::Onboard(c) => c.target.as_deref(),
            Command::Offboard(c) => c.target.as_deref(),
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Onboard(_) => "OnboardTenant",
            Command::Offboard(_) => "OffboardTenant",
        }
    }
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl OnboardTenant {
    /// A minimal valid command, for the CLI and tests.
    pub fn new(request_id: impl Into<String>, tenant_id: impl Into<String>) -> Self {
        Self {
            schema_version: SCHEMA_VERSION.into(),
            kind: OnboardKind::OnboardTenant,
            request_id: request_id.into(),
            tenant_id: tenant_id.into(),
            target: None,
            node_pool: NodePoolRequest {
                vm_size: "Standard_D4s_v5".into(),
                count: Some(1),
                min_count: None,
                max_count: None,
                zones: Vec::new(),
            },
            quota: None,
            admin_group_id: None,
            workload: None,
        }
    }
}

impl OffboardTenant {
    pub fn new(request_id: impl Into<String>, tenant_id: impl Into<String>) -> Self {
        Self {
            schema_version: SCHEMA_VERSION.into(),
            kind: OffboardKind::OffboardTenant,
            request_id: request_id.into(),
            tenant_id: tenant_id.into(),
            target: None,
            purge_data: false,
        }
    }
}
