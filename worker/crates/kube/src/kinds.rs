//! The kinds the worker manages (how to address each and whether it is namespaced), and the
//! check that a manifest describes the object it is sent as.
//!
//! May touch: nothing; pure functions.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::ApiResource;

use onboarding_providers::{KubeObject, ProviderError};

pub(crate) const KINDS: [&str; 9] = [
    "Namespace",
    "ServiceAccount",
    "ResourceQuota",
    "LimitRange",
    "NetworkPolicy",
    "Role",
    "RoleBinding",
    "Deployment",
    "CiliumNetworkPolicy",
];

/// The kinds the worker manages: how to address them, and whether they live in a namespace.
pub(crate) fn api_resource(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    let (resource, namespaced) = match kind {
        "Namespace" => (ApiResource::erase::<Namespace>(&()), false),
        "ServiceAccount" => (ApiResource::erase::<ServiceAccount>(&()), true),
        "ResourceQuota" => (ApiResource::erase::<ResourceQuota>(&()), true),
        "LimitRange" => (ApiResource::erase::<LimitRange>(&()), true),
        "NetworkPolicy" => (ApiResource::erase::<NetworkPolicy>(&()), true),
        "Role" => (ApiResource::erase::<Role>(&()), true),
        "RoleBinding" => (ApiResource::erase::<RoleBinding>(&()), true),
        "Deployment" => (ApiResource::erase::<Deployment>(&()), true),
        // Served only where Cilium is installed (its CRD); no k8s-openapi type.
        "CiliumNetworkPolicy" => (
            ApiResource {
                group: "cilium.io".into(),
                version: "v2".into(),
                api_version: "cilium.io/v2".into(),
                kind: "CiliumNetworkPolicy".into(),
                plural: "ciliumnetworkpolicies".into(),
            },
            true,
        ),
        _ => return None,
    };
    (resource.api_version == api_version).then_some((resource, namespaced))
}

/// The manifest must describe the object it is sent as; a mismatch is a bug upstream, and the
/// API server would refuse it anyway.
pub(crate) fn check_manifest(object: &KubeObject) -> Result<(), ProviderError> {
    let m = &object.manifest;
    let field = |path: &[&str]| {
        path.iter()
            .try_fold(m, |v, key| v.get(key))
            .and_then(|v| v.as_str())
    };
    let mut problems = Vec::new();
    if field(&["apiVersion"]) != Some(object.api_version.as_str()) {
        problems.push(format!("apiVersion is not {:?}", object.api_version));
    }
    if field(&["kind"]) != Some(object.kind.as_str()) {
        problems.push(format!("kind is not {:?}", object.kind));
    }
    if field(&["metadata", "name"]) != Some(object.name.as_str()) {
        problems.push(format!("metadata.name is not {:?}", object.name));
    }
    if field(&["metadata", "namespace"]) != object.namespace.as_deref() {
        problems.push(format!(
            "metadata.namespace is not {:?}",
            object.namespace.as_deref().unwrap_or("(none)")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ProviderError::permanent(
            "apply",
            object.reference().to_string(),
            format!(
                "the manifest does not match the object it is applied as: {}",
                problems.join("; ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onboarding_core::ErrorClass;

    #[test]
    fn every_managed_kind_resolves_with_its_scope() {
        for kind in KINDS {
            let version = match kind {
                "Deployment" => "apps/v1",
                "NetworkPolicy" => "networking.k8s.io/v1",
                "CiliumNetworkPolicy" => "cilium.io/v2",
                "Role" | "RoleBinding" => "rbac.authorization.k8s.io/v1",
                _ => "v1",
            };
            let (resource, namespaced) = api_resource(version, kind).expect(kind);
            assert_eq!(resource.kind, kind);
            assert_eq!(namespaced, kind != "Namespace");
        }
        assert!(api_resource("apps/v1", "Namespace").is_none());
        assert!(api_resource("v1", "Secret").is_none());
    }

    #[test]
    fn a_manifest_that_contradicts_its_coordinates_is_refused() {
        let mut object = onboarding_providers::manifests::namespace("tenant-a", "a");
        assert!(check_manifest(&object).is_ok());
        object.name = "tenant-b".into();
        let e = check_manifest(&object).expect_err("mismatch");
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("metadata.name"), "{}", e.message);
    }
}
