//! The tenant's namespace (Pod Security Admission `restricted`) and its service account
//! (annotated for Azure workload identity).
//!
//! May touch: nothing; pure builders.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    WORKLOAD_IDENTITY_CLIENT_ID, WORKLOAD_IDENTITY_TENANT_ID, WORKLOAD_IDENTITY_USE_LABEL,
    tenant_labels, to_object,
};
use crate::KubeObject;

/// The tenant's namespace: tenant labels and Pod Security Admission `restricted`, enforced,
/// warned and audited at the latest policy version.
pub fn namespace(name: &str, tenant_id: &str) -> KubeObject {
    let mut labels = tenant_labels(tenant_id);
    for mode in ["enforce", "warn", "audit"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".into(),
        );
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}-version"),
            "latest".into(),
        );
    }
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    to_object(&ns, None, name)
}

/// The tenant's service account, bound to its managed identity through workload identity.
///
/// `identity_entra_tenant_id` is `Some` only when the identity lives in another Entra tenant than
/// the one the cluster's workload identity webhook defaults to; the webhook then needs the
/// `azure.workload.identity/tenant-id` annotation. The account's own API token is not mounted:
/// the webhook projects the federated token itself, and tenant pods have no business with the
/// Kubernetes API.
pub fn service_account(
    namespace: &str,
    name: &str,
    tenant_id: &str,
    client_id: &str,
    identity_entra_tenant_id: Option<&str>,
) -> KubeObject {
    let mut labels = tenant_labels(tenant_id);
    labels.insert(WORKLOAD_IDENTITY_USE_LABEL.into(), "true".into());
    let mut annotations = BTreeMap::new();
    annotations.insert(WORKLOAD_IDENTITY_CLIENT_ID.into(), client_id.into());
    if let Some(entra_tenant) = identity_entra_tenant_id {
        annotations.insert(WORKLOAD_IDENTITY_TENANT_ID.into(), entra_tenant.into());
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };
    to_object(&sa, Some(namespace), name)
}
