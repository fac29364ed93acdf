//! The PUT bodies of the resources the provisioner writes, one function per resource. They are
//! pub so the contract tests can validate them against the official OpenAPI schemas.
//!
//! May touch: nothing; pure functions from a spec to a typed ARM model.

use std::collections::BTreeMap;

use super::{CONTAINER_MANAGED_BY_KEY, MANAGED_BY_TAG, MANAGER, TENANT_TAG};
use crate::models::{
    AgentPool, AgentPoolProperties, BlobContainer, ContainerProperties,
    FederatedIdentityCredential, FederatedIdentityCredentialProperties, Identity,
    RoleAssignmentCreate, RoleAssignmentProperties,
};
use onboarding_providers::{
    BlobContainerSpec, FederatedCredentialSpec, IdentitySpec, NodePoolScale, NodePoolSpec,
    RoleAssignmentSpec, Target,
};

/// `tags` plus the worker's ownership marker (`managed-by`, `tenant`), which wins over any
/// caller-supplied value of those keys.
pub(super) fn tagged(tags: &BTreeMap<String, String>, tenant_id: &str) -> BTreeMap<String, String> {
    marked(tags, MANAGED_BY_TAG, tenant_id)
}

fn marked(
    marks: &BTreeMap<String, String>,
    managed_key: &str,
    tenant_id: &str,
) -> BTreeMap<String, String> {
    let mut marks = marks.clone();
    marks.insert(managed_key.to_string(), MANAGER.to_string());
    marks.insert(TENANT_TAG.to_string(), tenant_id.to_string());
    marks
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
            metadata: Some(marked(
                &spec.metadata,
                CONTAINER_MANAGED_BY_KEY,
                &spec.tenant_id,
            )),
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
