//! Ownership of Kubernetes objects: the worker's marker (`app.kubernetes.io/managed-by` =
//! the worker's field manager, and the `tenant` label) says an object is this tenant's and the
//! worker's; anything else is foreign and is never adopted, changed or deleted. Also the other
//! facts about a live object the steps act on: whether it is being deleted, and whether another
//! field manager (a HorizontalPodAutoscaler) owns a Deployment's replicas.
//!
//! Pure functions over the live object as the API server returned it; touch nothing.

use onboarding_providers::manifests::{FIELD_MANAGER, MANAGED_BY_LABEL, TENANT_LABEL};

/// Who a live object says it belongs to.
#[derive(Debug, PartialEq)]
pub(crate) enum Owner {
    /// Ours, for this tenant.
    Us,
    /// Anyone else: unlabelled, another manager, or another tenant.
    Foreign(String),
}

pub(crate) fn owner(live: &serde_json::Value, tenant_id: &str) -> Owner {
    let label = |key: &str| {
        live.get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(|l| l.get(key))
            .and_then(|v| v.as_str())
    };
    match (label(MANAGED_BY_LABEL), label(TENANT_LABEL)) {
        (Some(FIELD_MANAGER), Some(t)) if t == tenant_id => Owner::Us,
        (Some(FIELD_MANAGER), Some(t)) => Owner::Foreign(format!("tenant {t:?}")),
        (manager, _) => Owner::Foreign(format!(
            "{} (it lacks the worker's {MANAGED_BY_LABEL}={FIELD_MANAGER} and {TENANT_LABEL} labels)",
            manager.map_or("an unmanaged owner".to_string(), |m| format!(
                "manager {m:?}"
            ))
        )),
    }
}

/// The live object's uid and resourceVersion: the preconditions of a delete that must hit
/// exactly the object judged ours.
pub(crate) fn identity(live: &serde_json::Value) -> (String, String) {
    let field = |p: &str| {
        live.pointer(p)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    (field("/metadata/uid"), field("/metadata/resourceVersion"))
}

pub(crate) fn terminating(live: &serde_json::Value) -> bool {
    live.pointer("/status/phase").and_then(|v| v.as_str()) == Some("Terminating")
        || live.pointer("/metadata/deletionTimestamp").is_some()
}

/// Whether a field manager other than the worker owns `spec.replicas` of a live Deployment: an
/// autoscaler scaling it (the HPA controller writes the scale subresource). The worker then
/// leaves replicas out of what it applies, instead of fighting the autoscaler.
pub(crate) fn replicas_managed_elsewhere(live: &serde_json::Value) -> bool {
    live.pointer("/metadata/managedFields")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter(|entry| entry.get("manager").and_then(|m| m.as_str()) != Some(FIELD_MANAGER))
        .any(|entry| entry.pointer("/fieldsV1/f:spec/f:replicas").is_some())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labelled(labels: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": "tenant-acme", "labels": labels}})
    }

    #[test]
    fn a_namespace_with_the_worker_marker_for_this_tenant_is_ours() {
        let live = labelled(json!({MANAGED_BY_LABEL: FIELD_MANAGER, TENANT_LABEL: "acme"}));
        assert_eq!(owner(&live, "acme"), Owner::Us);
    }

    #[test]
    fn an_unlabelled_namespace_is_foreign() {
        assert!(matches!(
            owner(&labelled(json!({})), "acme"),
            Owner::Foreign(_)
        ));
        assert!(matches!(
            owner(&json!({"metadata": {}}), "acme"),
            Owner::Foreign(_)
        ));
    }

    #[test]
    fn a_namespace_of_another_tenant_or_manager_is_foreign() {
        let other = labelled(json!({MANAGED_BY_LABEL: FIELD_MANAGER, TENANT_LABEL: "beta"}));
        assert!(matches!(owner(&other, "acme"), Owner::Foreign(w) if w.contains("beta")));
        let helm = labelled(json!({MANAGED_BY_LABEL: "Helm", TENANT_LABEL: "acme"}));
        assert!(matches!(owner(&helm, "acme"), Owner::Foreign(w) if w.contains("Helm")));
    }

    #[test]
    fn replicas_written_by_an_autoscaler_are_managed_elsewhere() {
        let fields = |manager: &str| {
            json!({"manager": manager, "operation": "Update",
            "fieldsV1": {"f:spec": {"f:replicas": {}}}})
        };
        let live = |entries: serde_json::Value| json!({"metadata": {"managedFields": entries}});
        assert!(replicas_managed_elsewhere(&live(json!([fields(
            "kube-controller-manager"
        )]))));
        assert!(!replicas_managed_elsewhere(&live(json!([fields(
            FIELD_MANAGER
        )]))));
        assert!(!replicas_managed_elsewhere(&live(json!([
            {"manager": "kubectl", "fieldsV1": {"f:metadata": {"f:labels": {}}}}
        ]))));
        assert!(!replicas_managed_elsewhere(&json!({"metadata": {}})));
    }

    #[test]
    fn a_namespace_being_deleted_is_terminating() {
        assert!(terminating(&json!({"status": {"phase": "Terminating"}})));
        assert!(terminating(
            &json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
        ));
        assert!(!terminating(&json!({"status": {"phase": "Active"}})));
    }
}
