//! Step `namespace`: the tenant's namespace, labelled for the tenant, Pod Security `restricted`.
//!
//! Ownership: a namespace that exists without the worker's marker for this tenant
//! (`app.kubernetes.io/managed-by` and the `tenant` label) is never adopted, changed or deleted.
//! Namespace deletion is asynchronous (the namespace stays `Terminating` while its content is
//! removed), so compensation is done only when the namespace is gone, and a forward apply onto a
//! terminating namespace waits for it to go first. Touches the target's API server only.

use onboarding_providers::manifests;
use onboarding_providers::{KubeObject, OperationKind, PendingOperation, ProviderError};

use super::owned::not_owned;
use super::ownership::{Owner, identity, owner, terminating};
use crate::record::StepName;
use crate::step::{Step, StepInput, StepOutcome};

/// How often to look again at a namespace that is being deleted.
const TERMINATING_POLL_SECS: u64 = 2;

#[derive(Debug)]
pub struct NamespaceStep;

fn object(input: &StepInput) -> KubeObject {
    manifests::namespace(&input.names.namespace, &input.names.tenant_id)
}

/// Look at the namespace again shortly.
fn wait_for(reference: &str) -> StepOutcome {
    StepOutcome::Pending(PendingOperation {
        url: format!("kubernetes:{reference}"),
        // The object itself is what is looked at again.
        kind: OperationKind::ProvisioningState,
        retry_after_secs: TERMINATING_POLL_SECS,
        since: None,
        place: None,
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
                return Err(not_owned(&reference, &who));
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
            // With the preconditions of the object judged ours: one that changed hands in
            // between is not deleted (it is looked at again on the next call).
            let (uid, version) = identity(&live);
            if !input
                .kube
                .delete_unchanged(&input.target, &reference, &uid, &version)
                .await?
            {
                return Ok(wait_for(&reference.to_string()));
            }
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
