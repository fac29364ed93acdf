//! Step `namespace`: the tenant's namespace, labelled for the tenant, Pod Security `restricted`.
//!
//! Ownership: a namespace that exists without the worker's marker for this tenant
//! (`app.kubernetes.io/managed-by` and the `tenant` label) is never adopted, changed or deleted.
//! Namespace deletion is asynchronous (the namespace stays `Terminating` while its content is
//! removed), so compensation is done only when the namespace is gone, and a forward apply onto a
//! terminating namespace waits for it to go first. Touches the target's API server only.

use onboarding_providers::manifests::{self, FIELD_MANAGER, MANAGED_BY_LABEL, TENANT_LABEL};
use onboarding_providers::{KubeObject, OperationKind, PendingOperation, ProviderError};

use crate::record::StepName;
use crate::step::{Step, StepInput, StepOutcome};

/// How often to look again at a namespace that is being deleted.
const TERMINATING_POLL_SECS: u64 = 2;

#[derive(Debug)]
pub struct NamespaceStep;

fn object(input: &StepInput) -> KubeObject {
    manifests::namespace(&input.names.namespace, &input.names.tenant_id)
}

/// Who a live object says it belongs to.
#[derive(Debug, PartialEq)]
enum Owner {
    /// Ours, for this tenant.
    Us,
    /// Anyone else: unlabelled, another manager, or another tenant.
    Foreign(String),
}

fn owner(live: &serde_json::Value, tenant_id: &str) -> Owner {
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

fn terminating(live: &serde_json::Value) -> bool {
    live.pointer("/status/phase").and_then(|v| v.as_str()) == Some("Terminating")
        || live.pointer("/metadata/deletionTimestamp").is_some()
}

/// Look at the namespace again shortly.
fn wait_for(reference: &str) -> StepOutcome {
    StepOutcome::Pending(PendingOperation {
        url: format!("kubernetes:{reference}"),
        // The object itself is what is looked at again.
        kind: OperationKind::ProvisioningState,
        retry_after_secs: TERMINATING_POLL_SECS,
    })
}

#[async_trait::async_trait]
impl Step for NamespaceStep {
    fn name(&self) -> StepName {
        StepName::Namespace
    }
    fn needs(&self) -> &'static [StepName] {
        &[]
    }
    fn resource(&self, input: &StepInput) -> String {
        object(input).reference().to_string()
    }
    async fn forward(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        let obj = object(input);
        let reference = obj.reference();
        if let Some(live) = input
            .call(|| input.kube.get(&input.target, &reference))
            .await?
        {
            if let Owner::Foreign(who) = owner(&live, &input.names.tenant_id) {
                return Err(ProviderError::permanent(
                    "create namespace",
                    reference.to_string(),
                    format!(
                        "the namespace exists and belongs to {who}; the worker adopts nothing it did not create: choose another tenant id or remove the namespace"
                    ),
                )
                .with_code("ResourceNotOwned"));
            }
            if terminating(&live) {
                // A re-onboarding right after an offboarding: applying now would land the
                // tenant's objects in a namespace about to disappear.
                return Ok(wait_for(&reference.to_string()));
            }
        }
        input.kube.apply(&input.target, &obj).await?;
        Ok(StepOutcome::Done(
            serde_json::json!({ "namespace": obj.name }),
        ))
    }
    async fn compensate(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        let reference = object(input).reference();
        let Some(live) = input
            .call(|| input.kube.get(&input.target, &reference))
            .await?
        else {
            return Ok(StepOutcome::Done(serde_json::Value::Null));
        };
        if let Owner::Foreign(who) = owner(&live, &input.names.tenant_id) {
            // Never delete what the worker does not own; there is nothing of ours to undo.
            tracing::warn!(namespace = %reference, owner = %who, "namespace not ours: left in place");
            return Ok(StepOutcome::Done(serde_json::Value::Null));
        }
        if !terminating(&live) {
            input.kube.delete(&input.target, &reference).await?;
        }
        // Done only once the API server no longer has it (its content is being removed).
        match input
            .call(|| input.kube.get(&input.target, &reference))
            .await?
        {
            None => Ok(StepOutcome::Done(serde_json::Value::Null)),
            Some(_) => Ok(wait_for(&reference.to_string())),
        }
    }
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
    fn a_namespace_being_deleted_is_terminating() {
        assert!(terminating(&json!({"status": {"phase": "Terminating"}})));
        assert!(terminating(
            &json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
        ));
        assert!(!terminating(&json!({"status": {"phase": "Active"}})));
    }
}
