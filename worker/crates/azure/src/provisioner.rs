//! [`ArmProvisioner`]: the production [`AzureProvisioner`], over Azure Resource Manager.
//!
//! Every ARM path is built from the target's configuration (subscription, resource groups,
//! cluster, storage account) plus the spec's names, and every name is checked to be a plain path
//! segment first; a role assignment's scope must lie inside the target's storage account. So a
//! command can never steer a request to a subscription, scope or resource the configuration did
//! not name. Bodies are built by the pub `*_body` functions, which the contract tests validate
//! against the official OpenAPI schemas.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use url::Url;
use uuid::Uuid;

use super::api;
use super::budget::WriteBudgets;
use super::client::{ArmClient, ArmClientOptions, ArmResponse, Op};
use super::models::{
    AgentPool, AgentPoolProperties, BlobContainer, ContainerProperties,
    FederatedIdentityCredential, FederatedIdentityCredentialProperties, Identity, RoleAssignment,
    RoleAssignmentCreate, RoleAssignmentList, RoleAssignmentProperties,
};
use onboarding_core::ErrorClass;
use onboarding_identity::{CredentialOptions, credential_with};
use onboarding_providers::Target;
use onboarding_providers::arm_ids::{
    blob_container_id, federated_credential_id, identity_id, node_pool_id, segment,
    storage_account_id,
};
use onboarding_providers::rbac::role_definition_guid;
use onboarding_providers::{
    AzureProvisioner, BlobContainerInfo, BlobContainerSpec, FederatedCredentialSpec, IdentityInfo,
    IdentitySpec, NodePoolInfo, NodePoolScale, NodePoolSpec, PendingOperation, Progress,
    ProviderError, RoleAssignmentInfo, RoleAssignmentSpec,
};

/// The ARM tag (on the pool: `properties.tags`) naming the tenant that owns a resource.
pub const TENANT_TAG: &str = "tenant";

/// One [`ArmClient`] per configured target.
#[derive(Debug, Clone)]
pub struct ArmProvisioner {
    clients: BTreeMap<String, ArmClient>,
}

impl ArmProvisioner {
    /// Builds a client for every target (its `arm_endpoint` and `credential`), all sharing one
    /// write budget per subscription.
    pub fn from_targets(
        targets: &BTreeMap<String, Target>,
        options: ArmClientOptions,
    ) -> Result<Self, ProviderError> {
        Self::from_targets_with(targets, options, &CredentialOptions::default())
    }

    /// [`Self::from_targets`] with explicit credential options (authority host, `az` path).
    pub fn from_targets_with(
        targets: &BTreeMap<String, Target>,
        options: ArmClientOptions,
        credential_options: &CredentialOptions,
    ) -> Result<Self, ProviderError> {
        let budgets = Arc::new(WriteBudgets::new(options.write_budget));
        let mut clients = BTreeMap::new();
        for (name, target) in targets {
            let endpoint = Url::parse(&target.arm_endpoint).map_err(|e| {
                ProviderError::new(
                    ErrorClass::InvalidInput,
                    "configure ARM client",
                    format!("target {name}"),
                    format!(
                        "targets.{name}.arm_endpoint {:?} is not a URL: {e}",
                        target.arm_endpoint
                    ),
                )
            })?;
            let credential = credential_with(&target.credential, credential_options);
            let client =
                ArmClient::with_budgets(endpoint, credential, options.clone(), budgets.clone())?;
            clients.insert(name.clone(), client);
        }
        Ok(Self { clients })
    }

    /// From ready-made clients, keyed by target name.
    pub fn from_clients(clients: BTreeMap<String, ArmClient>) -> Self {
        Self { clients }
    }

    fn client(&self, target: &Target) -> Result<&ArmClient, ProviderError> {
        let client = self.clients.get(&target.name).ok_or_else(|| {
            ProviderError::permanent(
                "select ARM client",
                format!("target {:?}", target.name),
                format!(
                    "target {:?} is not configured (configured: {})",
                    target.name,
                    self.clients.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let same = Url::parse(&target.arm_endpoint)
            .map(|u| u.origin() == client.endpoint().origin())
            .unwrap_or(false);
        if !same {
            return Err(ProviderError::permanent(
                "select ARM client",
                format!("target {}", target.name),
                format!(
                    "the target's arm_endpoint {} is not the one the provisioner was built with ({})",
                    target.arm_endpoint,
                    client.endpoint()
                ),
            ));
        }
        Ok(client)
    }
}

/// Checks that a role assignment scope lies inside the target's storage account.
fn checked_scope<'a>(target: &Target, scope: &'a str) -> Result<&'a str, ProviderError> {
    let account = storage_account_id(target)?.to_ascii_lowercase();
    let lower = scope.trim_end_matches('/').to_ascii_lowercase();
    let inside = lower == account || lower.starts_with(&format!("{account}/"));
    let plain = scope
        .trim_start_matches('/')
        .split('/')
        .all(|s| segment("scope segment", s).is_ok());
    if inside && plain && scope.starts_with('/') {
        Ok(scope.trim_end_matches('/'))
    } else {
        Err(ProviderError::new(
            ErrorClass::InvalidInput,
            "check role assignment scope",
            scope,
            format!("the scope must be the target's storage account {account} or a resource in it"),
        ))
    }
}

fn role_assignment_path(scope: &str, name: &str) -> String {
    format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}")
}

// ---------------------------------------------------------------- bodies

fn tagged(tags: &BTreeMap<String, String>, tenant_id: &str) -> BTreeMap<String, String> {
    let mut tags = tags.clone();
    tags.insert(TENANT_TAG.to_string(), tenant_id.to_string());
    tags
}

/// The agent pool PUT body: a Linux user pool with the tenant's taints, labels and tags.
/// `exists`: on an update, an autoscaled pool's `count` is left to the autoscaler.
pub fn agent_pool_body(spec: &NodePoolSpec, exists: bool) -> AgentPool {
    let mut p = AgentPoolProperties {
        vm_size: Some(spec.vm_size.clone()),
        mode: Some("User".into()),
        os_type: Some("Linux".into()),
        node_taints: Some(spec.taints.clone()),
        node_labels: Some(spec.labels.clone()),
        tags: Some(tagged(&spec.tags, &spec.tenant_id)),
        availability_zones: (!spec.zones.is_empty()).then(|| spec.zones.clone()),
        ..AgentPoolProperties::default()
    };
    match spec.scale {
        NodePoolScale::Fixed { count } => {
            p.count = Some(count as i32);
            p.enable_auto_scaling = Some(false);
        }
        NodePoolScale::Autoscale { min, max } => {
            p.enable_auto_scaling = Some(true);
            p.min_count = Some(min as i32);
            p.max_count = Some(max as i32);
            if !exists {
                p.count = Some(min as i32);
            }
        }
    }
    AgentPool {
        properties: Some(p),
        ..AgentPool::default()
    }
}

pub fn identity_body(target: &Target, spec: &IdentitySpec) -> Identity {
    Identity {
        location: target.location.clone(),
        tags: Some(tagged(&spec.tags, &spec.tenant_id)),
        ..Identity::default()
    }
}

pub fn federated_credential_body(spec: &FederatedCredentialSpec) -> FederatedIdentityCredential {
    FederatedIdentityCredential {
        properties: FederatedIdentityCredentialProperties {
            issuer: spec.issuer.clone(),
            subject: spec.subject.clone(),
            audiences: spec.audiences.clone(),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn blob_container_body(spec: &BlobContainerSpec) -> BlobContainer {
    BlobContainer {
        properties: Some(ContainerProperties {
            metadata: Some(tagged(&spec.metadata, &spec.tenant_id)),
            public_access: Some("None".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn role_assignment_body(spec: &RoleAssignmentSpec) -> RoleAssignmentCreate {
    RoleAssignmentCreate {
        properties: RoleAssignmentProperties {
            role_definition_id: spec.role_definition_id.clone(),
            principal_id: spec.principal_id.clone(),
            principal_type: Some(spec.principal_type.clone()),
            condition: (!spec.condition.is_empty()).then(|| spec.condition.clone()),
            condition_version: (!spec.condition.is_empty()).then(|| spec.condition_version.clone()),
            ..Default::default()
        },
    }
}

fn to_json<T: serde::Serialize>(value: &T, op: Op<'_>) -> Result<Value, ProviderError> {
    serde_json::to_value(value).map_err(|e| {
        ProviderError::permanent(
            op.operation,
            op.resource,
            format!("cannot encode the body: {e}"),
        )
    })
}

fn parse<T: serde::de::DeserializeOwned>(
    resp: &ArmResponse,
    op: Op<'_>,
) -> Result<T, ProviderError> {
    let body = resp.body.clone().unwrap_or(Value::Null);
    serde_json::from_value(body).map_err(|e| {
        ProviderError::transient(
            op.operation,
            op.resource,
            format!(
                "ARM's answer ({}) is not the expected resource: {e} (request id {})",
                resp.status, resp.request_id
            ),
        )
    })
}

// ---------------------------------------------------------------- node pool helpers

fn is_terminal(state: &str) -> bool {
    ["succeeded", "failed", "canceled", "cancelled"].contains(&state.to_ascii_lowercase().as_str())
}

fn sorted(v: &Option<Vec<String>>) -> Vec<String> {
    let mut v = v.clone().unwrap_or_default();
    v.sort();
    v
}

fn contains_all(have: &Option<BTreeMap<String, String>>, want: &BTreeMap<String, String>) -> bool {
    let have = have.clone().unwrap_or_default();
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// Whether a live pool already has everything the spec asks for.
fn pool_matches(spec: &NodePoolSpec, p: &AgentPoolProperties) -> bool {
    let mut zones = spec.zones.clone();
    zones.sort();
    let mut taints = spec.taints.clone();
    taints.sort();
    let scale = match spec.scale {
        NodePoolScale::Fixed { count } => {
            p.enable_auto_scaling != Some(true) && p.count == Some(count as i32)
        }
        NodePoolScale::Autoscale { min, max } => {
            p.enable_auto_scaling == Some(true)
                && p.min_count == Some(min as i32)
                && p.max_count == Some(max as i32)
        }
    };
    scale
        && p.vm_size
            .as_deref()
            .map(|s| s.eq_ignore_ascii_case(&spec.vm_size))
            == Some(true)
        && p.mode.as_deref().unwrap_or("User") == "User"
        && p.os_type.as_deref().unwrap_or("Linux") == "Linux"
        && sorted(&p.node_taints) == taints
        && sorted(&p.availability_zones) == zones
        && contains_all(&p.node_labels, &spec.labels)
        && contains_all(&p.tags, &tagged(&spec.tags, &spec.tenant_id))
}

fn owner_of(p: &AgentPoolProperties) -> Option<&str> {
    p.tags
        .as_ref()
        .and_then(|t| t.get(TENANT_TAG))
        .map(String::as_str)
}

// ---------------------------------------------------------------- role assignment helpers

/// The existing assignment's name in ARM's `RoleAssignmentExists` message ("... The ID of the
/// existing role assignment is 0a1b...").
fn existing_assignment_name(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("existing role assignment is")? + "existing role assignment is".len();
    let candidate: String = message[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
        .collect();
    Uuid::parse_str(&candidate).ok().map(|u| u.to_string())
}

fn same_assignment(spec: &RoleAssignmentSpec, p: &RoleAssignmentProperties) -> bool {
    let condition = |c: Option<&str>| {
        c.map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
    };
    p.principal_id.eq_ignore_ascii_case(&spec.principal_id)
        && role_definition_guid(&p.role_definition_id)
            .eq_ignore_ascii_case(role_definition_guid(&spec.role_definition_id))
        && condition(p.condition.as_deref()) == condition(Some(&spec.condition))
        && (spec.condition.is_empty()
            || p.condition_version.as_deref() == Some(spec.condition_version.as_str()))
}

fn check_role_assignment_spec(
    target: &Target,
    spec: &RoleAssignmentSpec,
) -> Result<(), ProviderError> {
    let bad = |m: String| {
        Err(ProviderError::new(
            ErrorClass::InvalidInput,
            "check role assignment",
            &spec.name,
            m,
        ))
    };
    if Uuid::parse_str(&spec.name).is_err() {
        return bad(format!(
            "the role assignment name {:?} is not a UUID",
            spec.name
        ));
    }
    if Uuid::parse_str(&spec.principal_id).is_err() {
        return bad(format!(
            "the principal id {:?} is not a UUID",
            spec.principal_id
        ));
    }
    let role = &spec.role_definition_id;
    let guid = role_definition_guid(role);
    let sub_form = format!(
        "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
        target.subscription_id
    );
    let tenant_form = format!("/providers/Microsoft.Authorization/roleDefinitions/{guid}");
    if Uuid::parse_str(guid).is_err()
        || !(role.eq_ignore_ascii_case(&sub_form) || role.eq_ignore_ascii_case(&tenant_form))
    {
        return bad(format!(
            "the role definition id {role:?} is not a role definition of the target's subscription"
        ));
    }
    if !spec.condition.is_empty() && spec.condition_version != "2.0" {
        return bad(format!(
            "condition version {:?} is not supported; use \"2.0\"",
            spec.condition_version
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- the trait

#[async_trait::async_trait]
impl AzureProvisioner for ArmProvisioner {
    async fn ensure_node_pool(
        &self,
        target: &Target,
        spec: &NodePoolSpec,
    ) -> Result<Progress<NodePoolInfo>, ProviderError> {
        let client = self.client(target)?;
        let path = node_pool_id(target, &spec.name)?;
        let resource_url = client.url(&path, api::AGENT_POOLS)?;
        let read = Op {
            operation: "read node pool",
            resource: &path,
        };
        let info = || NodePoolInfo {
            id: path.clone(),
            name: spec.name.clone(),
        };
        let existing = match client.get(&path, api::AGENT_POOLS, read).await? {
            Some(resp) => Some(parse::<AgentPool>(&resp, read)?),
            None => None,
        };
        if let Some(pool) = &existing {
            let props = pool.properties.clone().unwrap_or_default();
            if owner_of(&props) != Some(spec.tenant_id.as_str()) {
                return Err(ProviderError::permanent(
                    "create node pool",
                    &path,
                    format!(
                        "a node pool named {} already exists and belongs to {}; choose another name",
                        spec.name,
                        owner_of(&props).map(|o| format!("tenant {o:?}")).unwrap_or_else(|| "no tenant (it is not one the worker made)".into())
                    ),
                )
                .with_code("ResourceOwnedByAnotherTenant"));
            }
            let state = props
                .provisioning_state
                .clone()
                .unwrap_or_else(|| "Succeeded".into());
            if !is_terminal(&state) {
                tracing::debug!(node_pool = %spec.name, state = %state, "node pool busy, polling its state");
                return Ok(Progress::Pending(
                    client.resource_pending(&resource_url, None),
                ));
            }
            if state.eq_ignore_ascii_case("Succeeded") && pool_matches(spec, &props) {
                return Ok(Progress::Done(NodePoolInfo {
                    id: pool.id.clone().unwrap_or_else(|| path.clone()),
                    name: spec.name.clone(),
                }));
            }
        }
        let op = Op {
            operation: "create node pool",
            resource: &path,
        };
        let body = to_json(&agent_pool_body(spec, existing.is_some()), op)?;
        let resp = client.put(&path, api::AGENT_POOLS, &body, op).await?;
        if let Some(pending) = client.pending_from(&resp) {
            return Ok(Progress::Pending(pending));
        }
        let pool: AgentPool = parse(&resp, op)?;
        let state = pool
            .properties
            .and_then(|p| p.provisioning_state)
            .unwrap_or_else(|| "Succeeded".into());
        if state.eq_ignore_ascii_case("Succeeded") {
            Ok(Progress::Done(info()))
        } else if !is_terminal(&state) {
            Ok(Progress::Pending(
                client.resource_pending(&resource_url, resp.retry_after()),
            ))
        } else {
            Err(ProviderError::permanent(
                op.operation,
                op.resource,
                format!("the node pool is in state {state}"),
            )
            .with_code("ProvisioningStateFailed"))
        }
    }

    async fn delete_node_pool(
        &self,
        target: &Target,
        name: &str,
    ) -> Result<Progress<()>, ProviderError> {
        let client = self.client(target)?;
        let path = node_pool_id(target, name)?;
        let resource_url = client.url(&path, api::AGENT_POOLS)?;
        let read = Op {
            operation: "read node pool",
            resource: &path,
        };
        let Some(resp) = client.get(&path, api::AGENT_POOLS, read).await? else {
            return Ok(Progress::Done(()));
        };
        let pool: AgentPool = parse(&resp, read)?;
        let props = pool.properties.unwrap_or_default();
        // The trait gives no tenant id here, but a pool the worker made always carries the tenant
        // tag and is a User pool: never delete anything else (a system pool, a hand-made one).
        if owner_of(&props).is_none() || props.mode.as_deref() == Some("System") {
            return Err(ProviderError::permanent(
                "delete node pool",
                &path,
                format!("refusing to delete node pool {name}: it is not a tenant pool (no {TENANT_TAG:?} tag, or mode System)"),
            )
            .with_code("ResourceNotOwned"));
        }
        if props
            .provisioning_state
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("Deleting"))
        {
            return Ok(Progress::Pending(
                client.resource_pending(&resource_url, None),
            ));
        }
        client
            .delete(
                &path,
                api::AGENT_POOLS,
                Op {
                    operation: "delete node pool",
                    resource: &path,
                },
            )
            .await
    }

    async fn ensure_identity(
        &self,
        target: &Target,
        spec: &IdentitySpec,
    ) -> Result<IdentityInfo, ProviderError> {
        let client = self.client(target)?;
        let path = identity_id(target, &spec.name)?;
        let op = Op {
            operation: "create managed identity",
            resource: &path,
        };
        let body = to_json(&identity_body(target, spec), op)?;
        let resp = client.put(&path, api::MANAGED_IDENTITY, &body, op).await?;
        identity_info(&resp, &path, &spec.name, op)
    }

    async fn get_identity(
        &self,
        target: &Target,
        name: &str,
    ) -> Result<Option<IdentityInfo>, ProviderError> {
        let client = self.client(target)?;
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

    async fn delete_identity(&self, target: &Target, name: &str) -> Result<(), ProviderError> {
        let client = self.client(target)?;
        let path = identity_id(target, name)?;
        let op = Op {
            operation: "delete managed identity",
            resource: &path,
        };
        sync_delete(client.delete(&path, api::MANAGED_IDENTITY, op).await?, op)
    }

    async fn ensure_federated_credential(
        &self,
        target: &Target,
        spec: &FederatedCredentialSpec,
    ) -> Result<(), ProviderError> {
        let client = self.client(target)?;
        let path = federated_credential_id(target, &spec.identity_name, &spec.name)?;
        let op = Op {
            operation: "create federated identity credential",
            resource: &path,
        };
        let body = to_json(&federated_credential_body(spec), op)?;
        client.put(&path, api::MANAGED_IDENTITY, &body, op).await?;
        Ok(())
    }

    async fn delete_federated_credential(
        &self,
        target: &Target,
        identity_name: &str,
        name: &str,
    ) -> Result<(), ProviderError> {
        let client = self.client(target)?;
        let path = federated_credential_id(target, identity_name, name)?;
        let op = Op {
            operation: "delete federated identity credential",
            resource: &path,
        };
        sync_delete(client.delete(&path, api::MANAGED_IDENTITY, op).await?, op)
    }

    async fn ensure_blob_container(
        &self,
        target: &Target,
        spec: &BlobContainerSpec,
    ) -> Result<BlobContainerInfo, ProviderError> {
        let client = self.client(target)?;
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

    async fn delete_blob_container(
        &self,
        target: &Target,
        name: &str,
    ) -> Result<(), ProviderError> {
        let client = self.client(target)?;
        let path = blob_container_id(target, name)?;
        let op = Op {
            operation: "delete blob container",
            resource: &path,
        };
        sync_delete(client.delete(&path, api::BLOB_CONTAINERS, op).await?, op)
    }

    async fn ensure_role_assignment(
        &self,
        target: &Target,
        spec: &RoleAssignmentSpec,
    ) -> Result<RoleAssignmentInfo, ProviderError> {
        let client = self.client(target)?;
        let scope = checked_scope(target, &spec.scope)?;
        check_role_assignment_spec(target, spec)?;
        let path = role_assignment_path(scope, &spec.name);
        let op = Op {
            operation: "create role assignment",
            resource: &path,
        };
        let body = to_json(&role_assignment_body(spec), op)?;
        match client.put(&path, api::ROLE_ASSIGNMENTS, &body, op).await {
            Ok(resp) => {
                let ra: RoleAssignment = parse(&resp, op)?;
                Ok(RoleAssignmentInfo {
                    id: ra.id.unwrap_or(path.clone()),
                    name: ra.name.unwrap_or_else(|| spec.name.clone()),
                })
            }
            Err(e) if e.code.as_deref() == Some("RoleAssignmentExists") => {
                let existing = self
                    .find_existing_assignment(client, scope, spec, &e.message)
                    .await?;
                match existing {
                    Some(ra) if same_assignment(spec, &ra.properties) => {
                        tracing::info!(role_assignment = ?ra.name, "an identical role assignment exists under another name; using it");
                        let name = ra.name.clone().unwrap_or_else(|| spec.name.clone());
                        Ok(RoleAssignmentInfo {
                            id: ra.id.unwrap_or_else(|| role_assignment_path(scope, &name)),
                            name,
                        })
                    }
                    Some(ra) => Err(ProviderError::permanent(
                        op.operation,
                        op.resource,
                        format!(
                            "the principal already has this role on this scope through assignment {} with a different condition; remove it or align it",
                            ra.id.unwrap_or_default()
                        ),
                    )
                    .with_code("RoleAssignmentConflict")),
                    None => Err(ProviderError::transient(
                        op.operation,
                        op.resource,
                        format!("ARM says the assignment exists but it cannot be found yet: {}", e.message),
                    )
                    .with_code("RoleAssignmentExists")),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_role_assignment(
        &self,
        target: &Target,
        scope: &str,
        name: &str,
    ) -> Result<(), ProviderError> {
        let client = self.client(target)?;
        let scope = checked_scope(target, scope)?;
        if Uuid::parse_str(name).is_err() {
            return Err(ProviderError::new(
                ErrorClass::InvalidInput,
                "delete role assignment",
                name,
                format!("the role assignment name {name:?} is not a UUID"),
            ));
        }
        let path = role_assignment_path(scope, name);
        let op = Op {
            operation: "delete role assignment",
            resource: &path,
        };
        sync_delete(client.delete(&path, api::ROLE_ASSIGNMENTS, op).await?, op)
    }

    async fn poll_operation(
        &self,
        target: &Target,
        operation: &PendingOperation,
    ) -> Result<Progress<()>, ProviderError> {
        let client = self.client(target)?;
        client
            .poll(
                operation,
                Op {
                    operation: "poll operation",
                    resource: &operation.url,
                },
            )
            .await
    }
}

impl ArmProvisioner {
    /// The assignment ARM's `RoleAssignmentExists` refers to: named in its message, or else the
    /// one of the same principal and role found by listing the scope.
    async fn find_existing_assignment(
        &self,
        client: &ArmClient,
        scope: &str,
        spec: &RoleAssignmentSpec,
        message: &str,
    ) -> Result<Option<RoleAssignment>, ProviderError> {
        if let Some(name) = existing_assignment_name(message) {
            let path = role_assignment_path(scope, &name);
            let op = Op {
                operation: "read role assignment",
                resource: &path,
            };
            if let Some(resp) = client.get(&path, api::ROLE_ASSIGNMENTS, op).await? {
                return parse::<RoleAssignment>(&resp, op).map(Some);
            }
        }
        let path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments");
        let op = Op {
            operation: "list role assignments",
            resource: &path,
        };
        let mut url = client.url(&path, api::ROLE_ASSIGNMENTS)?;
        url.query_pairs_mut()
            .append_pair("$filter", &format!("assignedTo('{}')", spec.principal_id));
        let resp = client.send(reqwest::Method::GET, url, None, op).await?;
        if !resp.is_success() {
            return Err(super::client::classify(&resp, op));
        }
        let list: RoleAssignmentList = parse(&resp, op)?;
        let want = role_definition_guid(&spec.role_definition_id).to_ascii_lowercase();
        Ok(list.value.into_iter().find(|ra| {
            ra.properties
                .principal_id
                .eq_ignore_ascii_case(&spec.principal_id)
                && role_definition_guid(&ra.properties.role_definition_id)
                    .eq_ignore_ascii_case(&want)
                && ra
                    .properties
                    .scope
                    .as_deref()
                    .is_none_or(|s| s.trim_end_matches('/').eq_ignore_ascii_case(scope))
        }))
    }
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

/// Identity, credential, container and role assignment deletes are synchronous; a 202 means
/// "not yet": say so and let the caller come back.
fn sync_delete(progress: Progress<()>, op: Op<'_>) -> Result<(), ProviderError> {
    match progress {
        Progress::Done(()) => Ok(()),
        Progress::Pending(p) => Err(ProviderError::transient(
            op.operation,
            op.resource,
            "ARM accepted the delete and is still working on it",
        )
        .with_retry_after(std::time::Duration::from_secs(p.retry_after_secs))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodePoolSpec {
        NodePoolSpec {
            name: "tacme".into(),
            tenant_id: "acme".into(),
            vm_size: "Standard_D4s_v5".into(),
            scale: NodePoolScale::Autoscale { min: 1, max: 3 },
            zones: vec!["2".into(), "1".into()],
            taints: vec!["tenant=acme:NoSchedule".into()],
            labels: [("tenant".to_string(), "acme".to_string())].into(),
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn a_pool_built_from_the_spec_matches_the_spec_and_carries_the_tenant_tag() {
        let body = agent_pool_body(&spec(), false);
        let props = body.properties.unwrap();
        assert_eq!(owner_of(&props), Some("acme"));
        assert_eq!(props.count, Some(1));
        assert!(pool_matches(&spec(), &props));
        let mut other = spec();
        other.vm_size = "Standard_D8s_v5".into();
        assert!(!pool_matches(&other, &props));
        // An update leaves an autoscaled pool's count alone.
        assert_eq!(
            agent_pool_body(&spec(), true).properties.unwrap().count,
            None
        );
    }

    #[test]
    fn names_with_path_characters_never_reach_a_path() {
        let t = Target::local("default");
        assert!(node_pool_id(&t, "ok1").is_ok());
        for bad in ["../x", "a/b", "a?b", "", "a b", ".hidden"] {
            assert!(node_pool_id(&t, bad).is_err(), "{bad:?}");
            assert!(identity_id(&t, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn role_assignment_scopes_must_lie_in_the_targets_storage_account() {
        let t = Target::local("default");
        let inside = blob_container_id(&t, "tenant-acme").unwrap();
        assert!(checked_scope(&t, &inside).is_ok());
        assert!(checked_scope(&t, &inside.to_uppercase()).is_ok());
        for bad in [
            "/subscriptions/00000000-0000-0000-0000-000000000001".to_string(),
            inside.replace("sttenantdata", "otheraccount"),
            format!("{inside}/../../x"),
            format!("{}x", storage_account_id(&t).unwrap()),
        ] {
            assert!(checked_scope(&t, &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_existing_assignment_is_found_in_arms_message() {
        let m = "The role assignment already exists. The ID of the existing role assignment is 0a1b2c3d4e5f60718293a4b5c6d7e8f9.";
        assert_eq!(
            existing_assignment_name(m).as_deref(),
            Some("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9")
        );
        assert_eq!(
            existing_assignment_name("The role assignment already exists."),
            None
        );
    }
}
