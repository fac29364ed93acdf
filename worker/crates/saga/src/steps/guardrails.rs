//! Step `guardrails`: quota, limit range, network policies and the tenant admins' role binding
//! in the tenant's namespace.
//!
//! Every object is applied and deleted only when it is the worker's ([`super::owned`]). Updates
//! converge: what the spec no longer asks for (the admins' role binding without an admin group:
//! access revoked) is deleted, if it carries the worker's marker for this tenant.

use super::owned::{apply_owned, delete_owned};
use crate::record::StepName;
use crate::step::{Step, StepInput, StepOutcome};
use onboarding_providers::manifests::{self, GuardrailSpec};
use onboarding_providers::{KubeObject, ObjectRef, PendingOperation, ProviderError};

#[derive(Debug)]
pub struct GuardrailsStep;

/// Every object the step can make under this configuration: the built-in kinds, and the
/// host-name policy where the cluster's engine serves it (on other clusters its kind does not
/// exist, so it is neither made nor looked for).
fn refs(input: &StepInput) -> Vec<ObjectRef> {
    let mut refs = manifests::guardrail_refs(&input.names.namespace);
    if input.provisioning.guardrails.fqdn_egress.is_some() {
        refs.insert(1, manifests::fqdn_policy_ref(&input.names.namespace));
    }
    refs
}

fn objects(input: &StepInput) -> Vec<KubeObject> {
    let admin_group = input.spec.as_ref().and_then(|s| s.admin_group_id.clone());
    let mut spec = GuardrailSpec::from_defaults(&input.provisioning.guardrails, admin_group)
        .on_account(&input.target.storage_account);
    if let Some(q) = input.spec.as_ref().and_then(|s| s.quota.as_ref()) {
        spec = spec.with_quota(&q.cpu, &q.memory, q.pods);
    }
    manifests::guardrails(&input.names.namespace, &input.names.tenant_id, &spec)
}

#[async_trait::async_trait]
impl Step for GuardrailsStep {
    fn name(&self) -> StepName {
        StepName::Guardrails
    }
    fn needs(&self) -> &'static [StepName] {
        &[StepName::Namespace]
    }
    fn resource(&self, input: &StepInput) -> String {
        refs(input)
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
    async fn forward(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        let objects = objects(input);
        for obj in &objects {
            apply_owned(input, obj).await?;
        }
        // Whatever the step can create that this spec no longer asks for (the admins' binding
        // without an admin group, the egress policy without egress rules) is removed, if ours.
        for stale in refs(input)
            .into_iter()
            .filter(|r| !objects.iter().any(|o| o.reference() == *r))
        {
            delete_owned(input, &stale).await?;
        }
        Ok(StepOutcome::Done(serde_json::json!({
            "objects": objects.iter().map(|o| o.reference().to_string()).collect::<Vec<_>>(),
        })))
    }
    async fn compensate(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        // Every object the step can create, whatever this command asked for (an offboarding
        // has no spec, and an earlier run may have created the admin binding).
        for r in refs(input).iter().rev() {
            delete_owned(input, r).await?;
        }
        Ok(StepOutcome::Done(serde_json::Value::Null))
    }
}
