//! The tenant's Kubernetes objects, built as k8s-openapi typed structs and turned into manifests.
//!
//! Pure functions: no I/O, no configuration reads. Every input string arrives already validated
//! (DNS-1123 names, tenant ids usable as label values) and is only ever placed into a field value,
//! never formatted into a name, selector expression or path. Object names are fixed constants, so
//! offboarding can find everything from the namespace name alone ([`tenant_object_refs`]).
//!
//! One module per group of objects: `namespace_objects` (the namespace and its service
//! account), `guardrail_objects` (quota, limits, network policies, the admins' binding) and
//! `workload_objects` (the Deployment); this module holds the names and labels they share, the
//! references used to delete them, and the helpers that turn a typed object into a
//! [`KubeObject`]. Every builder is re-exported here: `manifests::namespace` etc.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, ResourceQuota, SeccompProfile, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::{KubeObject, ObjectRef};

mod guardrail_objects;
mod namespace_objects;
mod workload_objects;

#[cfg(test)]
mod tests;

pub use guardrail_objects::{GuardrailSpec, guardrails};
pub use namespace_objects::{namespace, service_account};
pub use workload_objects::workload;

/// The field manager of every server-side apply, and the `app.kubernetes.io/managed-by` value.
pub const FIELD_MANAGER: &str = "tenant-onboarding-worker";

/// Label carrying the tenant id on every object (and on the tenant's nodes).
pub const TENANT_LABEL: &str = "tenant";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const WORKLOAD_IDENTITY_USE_LABEL: &str = "azure.workload.identity/use";
pub const WORKLOAD_IDENTITY_CLIENT_ID: &str = "azure.workload.identity/client-id";
pub const WORKLOAD_IDENTITY_TENANT_ID: &str = "azure.workload.identity/tenant-id";

pub const RESOURCE_QUOTA_NAME: &str = "tenant-quota";
pub const LIMIT_RANGE_NAME: &str = "tenant-limits";
pub const DEFAULT_DENY_POLICY_NAME: &str = "default-deny";
pub const ALLOW_DNS_POLICY_NAME: &str = "allow-dns";
pub const ALLOW_SAME_NAMESPACE_POLICY_NAME: &str = "allow-same-namespace";
/// The NetworkPolicy allowing the configured egress (Entra, the storage account), built only
/// when `[[guardrails.egress]]` rules are configured.
pub const ALLOW_EGRESS_AZURE_POLICY_NAME: &str = "allow-egress-azure";
/// Name of the `CiliumNetworkPolicy` allowing egress by host name (when configured).
pub const ALLOW_EGRESS_FQDN_POLICY_NAME: &str = "allow-egress-fqdn";
/// API version and kind of Cilium's namespaced network policy.
pub const CILIUM_POLICY_API_VERSION: &str = "cilium.io/v2";
pub const CILIUM_POLICY_KIND: &str = "CiliumNetworkPolicy";
/// Name of the tenant admins' RoleBinding in the tenant's namespace.
pub const TENANT_ADMIN_ROLE_NAME: &str = "tenant-admin";
/// The ClusterRole (shipped in `k8s/base/rbac.yaml`) the admins' RoleBinding grants. The worker
/// may `bind` it by name without holding its rights: it never writes a Role of its own, which
/// Kubernetes would refuse for rights the worker lacks (RBAC escalation prevention).
pub const TENANT_ADMIN_CLUSTER_ROLE: &str = "tenant-onboarding:tenant-admin";
pub const WORKLOAD_NAME: &str = "workload";

pub fn namespace_ref(name: &str) -> ObjectRef {
    object_ref::<Namespace>(None, name)
}

pub fn service_account_ref(namespace: &str, name: &str) -> ObjectRef {
    object_ref::<ServiceAccount>(Some(namespace), name)
}

/// Every object [`guardrails`] can produce, the RoleBinding and the egress policy included
/// (deleting one that was never created is success), in reverse order of creation.
pub fn guardrail_refs(namespace: &str) -> Vec<ObjectRef> {
    let ns = Some(namespace);
    vec![
        object_ref::<RoleBinding>(ns, TENANT_ADMIN_ROLE_NAME),
        object_ref::<NetworkPolicy>(ns, ALLOW_EGRESS_AZURE_POLICY_NAME),
        object_ref::<NetworkPolicy>(ns, ALLOW_SAME_NAMESPACE_POLICY_NAME),
        object_ref::<NetworkPolicy>(ns, ALLOW_DNS_POLICY_NAME),
        object_ref::<NetworkPolicy>(ns, DEFAULT_DENY_POLICY_NAME),
        object_ref::<LimitRange>(ns, LIMIT_RANGE_NAME),
        object_ref::<ResourceQuota>(ns, RESOURCE_QUOTA_NAME),
    ]
}

/// The host-name egress policy [`guardrails`] makes when `fqdn_egress` is configured. Not among
/// [`guardrail_refs`]: on a cluster without Cilium the kind is not served at all.
pub fn fqdn_policy_ref(namespace: &str) -> ObjectRef {
    ObjectRef {
        api_version: CILIUM_POLICY_API_VERSION.into(),
        kind: CILIUM_POLICY_KIND.into(),
        namespace: Some(namespace.into()),
        name: ALLOW_EGRESS_FQDN_POLICY_NAME.into(),
    }
}

pub fn workload_ref(namespace: &str) -> ObjectRef {
    object_ref::<Deployment>(Some(namespace), WORKLOAD_NAME)
}

/// Every object the worker may have created for a tenant, in the order to delete them: the
/// workload, the guard rails, the service account, and the namespace last (deleting it removes
/// whatever else is inside).
pub fn tenant_object_refs(namespace: &str, service_account: &str) -> Vec<ObjectRef> {
    let mut refs = vec![workload_ref(namespace)];
    refs.extend(guardrail_refs(namespace));
    refs.push(service_account_ref(namespace, service_account));
    refs.push(namespace_ref(namespace));
    refs
}

fn tenant_labels(tenant_id: &str) -> BTreeMap<String, String> {
    labels(&[(TENANT_LABEL, tenant_id), (MANAGED_BY_LABEL, FIELD_MANAGER)])
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn quantities(pairs: &[(&str, &String)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), Quantity((*v).clone())))
        .collect()
}

fn meta(namespace: &str, name: &str, tenant_id: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(tenant_labels(tenant_id)),
        ..ObjectMeta::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

fn object_ref<K: k8s_openapi::Resource>(namespace: Option<&str>, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: K::API_VERSION.into(),
        kind: K::KIND.into(),
        namespace: namespace.map(str::to_string),
        name: name.into(),
    }
}

fn to_object<K>(object: &K, namespace: Option<&str>, name: &str) -> KubeObject
where
    K: k8s_openapi::Resource + Serialize,
{
    // k8s-openapi's Serialize writes apiVersion and kind itself. Its structs hold only strings,
    // numbers, maps with string keys and sequences, so turning one into JSON cannot fail.
    #[allow(clippy::expect_used)]
    let manifest = serde_json::to_value(object).expect("k8s-openapi objects serialise to JSON");
    KubeObject {
        api_version: K::API_VERSION.into(),
        kind: K::KIND.into(),
        namespace: namespace.map(str::to_string),
        name: name.into(),
        manifest,
    }
}
