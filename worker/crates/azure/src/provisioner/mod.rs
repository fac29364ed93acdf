//! [`ArmProvisioner`]: the production [`AzureProvisioner`], over Azure Resource Manager.
//!
//! Every ARM path is built from the target's configuration (subscription, resource groups,
//! cluster, storage account) plus the spec's names, and every name is checked to be a plain path
//! segment first; a role assignment's scope must lie inside the target's storage account. So a
//! command can never steer a request to a subscription, scope or resource the configuration did
//! not name. Bodies are built by the pub `*_body` functions, which the contract tests validate
//! against the official OpenAPI schemas.
//!
//! One module per resource operation group (`node_pool`, `identity` with its federated
//! credentials, `blob_container`, `role_assignment`), the request bodies in `bodies`; this module
//! holds the provisioner, its per-target clients and the [`AzureProvisioner`] implementation,
//! which hands each call to its resource module.
//!
//! May touch: ARM, through the per-target [`ArmClient`]s only.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use url::Url;

use super::client::{ArmClient, ArmClientOptions, ArmResponse, Op};
use onboarding_core::ErrorClass;
use onboarding_identity::{CredentialOptions, credential_with};
use onboarding_providers::Target;
use onboarding_providers::{
    AzureProvisioner, BlobContainerInfo, BlobContainerSpec, FederatedCredentialSpec, IdentityInfo,
    IdentitySpec, NodePoolInfo, NodePoolSpec, PendingOperation, Progress, ProviderError,
    RoleAssignmentInfo, RoleAssignmentSpec,
};

mod blob_container;
mod bodies;
mod identity;
mod node_pool;
mod role_assignment;

pub use bodies::{
    agent_pool_body, blob_container_body, federated_credential_body, identity_body,
    role_assignment_body,
};

/// The ARM tag (on the pool: `properties.tags`) naming the tenant that owns a resource.
pub const TENANT_TAG: &str = "tenant";

/// The ARM tag saying the worker made a resource; its value is [`MANAGER`].
pub const MANAGED_BY_TAG: &str = "managed-by";

/// The same marker in a blob container's metadata. Blob metadata names must be C# identifiers
/// (Blob service, "Naming and referencing containers, blobs, and metadata"), so no hyphen.
pub const CONTAINER_MANAGED_BY_KEY: &str = "managed_by";

/// The value of the worker's marker: the same name as its Kubernetes field manager.
pub const MANAGER: &str = onboarding_providers::manifests::FIELD_MANAGER;

/// `None` when `marks` (ARM tags, or a container's metadata) carry the worker's marker for
/// `tenant_id`; otherwise who the resource belongs to, for an error message.
pub(crate) fn foreign_owner(
    marks: Option<&BTreeMap<String, String>>,
    managed_key: &str,
    tenant_id: &str,
) -> Option<String> {
    let mark = |k: &str| marks.and_then(|m| m.get(k)).map(String::as_str);
    match (mark(managed_key), mark(TENANT_TAG)) {
        (Some(MANAGER), Some(t)) if t == tenant_id => None,
        (Some(MANAGER), Some(t)) => Some(format!("tenant {t:?}")),
        (manager, _) => Some(format!(
            "{} (it lacks the worker's {managed_key}={MANAGER} and {TENANT_TAG}={tenant_id} marker)",
            manager.map_or("an owner unknown to the worker".to_string(), |m| format!(
                "manager {m:?}"
            ))
        )),
    }
}

/// The permanent error of a forward step that found `resource` existing and not its own.
pub(crate) fn not_owned(operation: &str, resource: &str, kind: &str, who: &str) -> ProviderError {
    ProviderError::permanent(
        operation,
        resource,
        format!(
            "the {kind} exists and belongs to {who}; the worker adopts nothing it did not create: choose another tenant id or remove it"
        ),
    )
    .with_code("ResourceNotOwned")
}

/// One [`ArmClient`] per configured target.
#[derive(Debug, Clone)]
pub struct ArmProvisioner {
    clients: BTreeMap<String, ArmClient>,
}

impl ArmProvisioner {
    /// Builds a client for every target (its `arm_endpoint` and `credential`), all sharing one
    /// write budget per subscription (in `options.budget_store`, shared with other replicas,
    /// when given).
    pub fn from_targets(
        targets: &BTreeMap<String, Target>,
        options: ArmClientOptions,
    ) -> Result<Self, ProviderError> {
        Self::from_targets_with(targets, options, &CredentialOptions::default())
    }

    /// [`Self::from_targets`] with explicit credential options (timeouts, cache).
    pub fn from_targets_with(
        targets: &BTreeMap<String, Target>,
        options: ArmClientOptions,
        credential_options: &CredentialOptions,
    ) -> Result<Self, ProviderError> {
        let budgets = Arc::new(options.write_budgets());
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
            let credential =
                credential_with(&target.credential, credential_options).map_err(|e| {
                    ProviderError::new(
                        ErrorClass::Infrastructure,
                        "configure ARM client",
                        format!("target {name}"),
                        format!("targets.{name}.credential: {e}"),
                    )
                })?;
            let mut options = options.clone();
            if let Some(scope) = target.credential.cloud().arm_scope {
                options.token_scope = Some(scope);
            }
            let client = ArmClient::with_budgets(endpoint, credential, options, budgets.clone())?;
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

pub(super) fn to_json<T: serde::Serialize>(value: &T, op: Op<'_>) -> Result<Value, ProviderError> {
    serde_json::to_value(value).map_err(|e| {
        ProviderError::permanent(
            op.operation,
            op.resource,
            format!("cannot encode the body: {e}"),
        )
    })
}

/// The resource at `path` as ARM has it now, if any: the read before an ownership decision.
pub(super) async fn read_existing<T: serde::de::DeserializeOwned>(
    client: &ArmClient,
    path: &str,
    api_version: &str,
    operation: &'static str,
) -> Result<Option<T>, ProviderError> {
    let op = Op {
        operation,
        resource: path,
    };
    match client.get(path, api_version, op).await? {
        Some(resp) => parse(&resp, op).map(Some),
        None => Ok(None),
    }
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(
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

#[async_trait::async_trait]
impl AzureProvisioner for ArmProvisioner {
    async fn ensure_node_pool(
        &self,
        target: &Target,
        spec: &NodePoolSpec,
    ) -> Result<Progress<NodePoolInfo>, ProviderError> {
        node_pool::ensure(self.client(target)?, target, spec).await
    }

    async fn node_pool_in_sync(
        &self,
        target: &Target,
        spec: &NodePoolSpec,
    ) -> Result<Option<NodePoolInfo>, ProviderError> {
        node_pool::in_sync(self.client(target)?, target, spec).await
    }

    async fn has_node_pool(
        &self,
        target: &Target,
        name: &str,
        tenant_id: &str,
    ) -> Result<bool, ProviderError> {
        node_pool::has(self.client(target)?, target, name, tenant_id).await
    }

    async fn delete_node_pool(
        &self,
        target: &Target,
        name: &str,
        tenant_id: &str,
    ) -> Result<Progress<()>, ProviderError> {
        node_pool::delete(self.client(target)?, target, name, tenant_id).await
    }

    async fn ensure_identity(
        &self,
        target: &Target,
        spec: &IdentitySpec,
    ) -> Result<IdentityInfo, ProviderError> {
        identity::ensure(self.client(target)?, target, spec).await
    }

    async fn get_identity(
        &self,
        target: &Target,
        name: &str,
    ) -> Result<Option<IdentityInfo>, ProviderError> {
        identity::get(self.client(target)?, target, name).await
    }

    async fn delete_identity(
        &self,
        target: &Target,
        name: &str,
        tenant_id: &str,
    ) -> Result<(), ProviderError> {
        identity::delete(self.client(target)?, target, name, tenant_id).await
    }

    async fn ensure_federated_credential(
        &self,
        target: &Target,
        spec: &FederatedCredentialSpec,
    ) -> Result<(), ProviderError> {
        identity::ensure_federated_credential(self.client(target)?, target, spec).await
    }

    async fn delete_federated_credential(
        &self,
        target: &Target,
        identity_name: &str,
        name: &str,
        tenant_id: &str,
    ) -> Result<(), ProviderError> {
        identity::delete_federated_credential(
            self.client(target)?,
            target,
            identity_name,
            name,
            tenant_id,
        )
        .await
    }

    async fn ensure_blob_container(
        &self,
        target: &Target,
        spec: &BlobContainerSpec,
    ) -> Result<BlobContainerInfo, ProviderError> {
        blob_container::ensure(self.client(target)?, target, spec).await
    }

    async fn delete_blob_container(
        &self,
        target: &Target,
        name: &str,
        tenant_id: &str,
    ) -> Result<(), ProviderError> {
        blob_container::delete(self.client(target)?, target, name, tenant_id).await
    }

    async fn ensure_role_assignment(
        &self,
        target: &Target,
        spec: &RoleAssignmentSpec,
    ) -> Result<RoleAssignmentInfo, ProviderError> {
        role_assignment::ensure(self.client(target)?, target, spec).await
    }

    async fn delete_role_assignment(
        &self,
        target: &Target,
        spec: &RoleAssignmentSpec,
    ) -> Result<(), ProviderError> {
        role_assignment::delete(self.client(target)?, target, spec).await
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

/// Identity, credential, container and role assignment deletes are synchronous; a 202 means
/// "not yet": say so and let the caller come back.
pub(super) fn sync_delete(progress: Progress<()>, op: Op<'_>) -> Result<(), ProviderError> {
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
    use onboarding_providers::Target;
    use onboarding_providers::arm_ids::{identity_id, node_pool_id};

    #[test]
    fn names_with_path_characters_never_reach_a_path() {
        let t = Target::local("default");
        assert!(node_pool_id(&t, "ok1").is_ok());
        for bad in ["../x", "a/b", "a?b", "", "a b", ".hidden"] {
            assert!(node_pool_id(&t, bad).is_err(), "{bad:?}");
            assert!(identity_id(&t, bad).is_err(), "{bad:?}");
        }
    }

    fn marks(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_resource_with_the_workers_marker_for_this_tenant_is_ours() {
        let tags = marks(&[(MANAGED_BY_TAG, MANAGER), (TENANT_TAG, "acme")]);
        assert_eq!(foreign_owner(Some(&tags), MANAGED_BY_TAG, "acme"), None);
        let metadata = marks(&[(CONTAINER_MANAGED_BY_KEY, MANAGER), (TENANT_TAG, "acme")]);
        assert_eq!(
            foreign_owner(Some(&metadata), CONTAINER_MANAGED_BY_KEY, "acme"),
            None
        );
    }

    #[test]
    fn a_resource_without_the_marker_or_of_another_tenant_or_manager_is_foreign() {
        assert!(foreign_owner(None, MANAGED_BY_TAG, "acme").is_some());
        let tenant_only = marks(&[(TENANT_TAG, "acme")]);
        assert!(foreign_owner(Some(&tenant_only), MANAGED_BY_TAG, "acme").is_some());
        let beta = marks(&[(MANAGED_BY_TAG, MANAGER), (TENANT_TAG, "beta")]);
        assert!(
            foreign_owner(Some(&beta), MANAGED_BY_TAG, "acme").is_some_and(|w| w.contains("beta"))
        );
        let terraform = marks(&[(MANAGED_BY_TAG, "terraform"), (TENANT_TAG, "acme")]);
        assert!(
            foreign_owner(Some(&terraform), MANAGED_BY_TAG, "acme")
                .is_some_and(|w| w.contains("terraform"))
        );
        // The tag's key in a container's metadata does not count there, and vice versa.
        let tag_key = marks(&[(MANAGED_BY_TAG, MANAGER), (TENANT_TAG, "acme")]);
        assert!(foreign_owner(Some(&tag_key), CONTAINER_MANAGED_BY_KEY, "acme").is_some());
    }

    #[test]
    fn identity_and_container_bodies_carry_the_marker_over_any_caller_value() {
        use onboarding_providers::{BlobContainerSpec, IdentitySpec};
        let t = Target::local("default");
        let identity = super::identity_body(
            &t,
            &IdentitySpec {
                name: "id-tenant-acme".into(),
                tenant_id: "acme".into(),
                tags: marks(&[(MANAGED_BY_TAG, "someone"), ("cost", "1")]),
            },
        );
        let tags = identity.tags.unwrap();
        assert_eq!(foreign_owner(Some(&tags), MANAGED_BY_TAG, "acme"), None);
        assert_eq!(tags["cost"], "1");
        let container = super::blob_container_body(&BlobContainerSpec {
            name: "tenant-acme".into(),
            tenant_id: "acme".into(),
            metadata: marks(&[(TENANT_TAG, "beta")]),
        });
        let metadata = container.properties.unwrap().metadata.unwrap();
        assert_eq!(
            foreign_owner(Some(&metadata), CONTAINER_MANAGED_BY_KEY, "acme"),
            None
        );
        // Blob metadata names are C# identifiers: no hyphen.
        assert!(
            metadata
                .keys()
                .all(|k| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        );
    }
}
