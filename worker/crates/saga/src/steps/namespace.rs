//! Step `namespace`: the tenant's namespace, labelled for the tenant, Pod Security `restricted`.

use crate::record::StepName;
use crate::step::{Step, StepInput, StepOutcome};
use onboarding_providers::manifests;
use onboarding_providers::{KubeObject, ProviderError};

#[derive(Debug)]
pub struct NamespaceStep;

fn object(input: &StepInput) -> KubeObject {
    manifests::namespace(&input.names.namespace, &input.names.tenant_id)
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
        _op: Option<&onboarding_providers::PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        let obj = object(input);
        // A namespace of that name belonging to someone else must never be adopted.
        let reference = obj.reference();
        if let Some(live) = input
            .call(|| input.kube.get(&input.target, &reference))
            .await?
            && let Some(owner) = live
                .pointer("/metadata/labels/tenant")
                .and_then(|v| v.as_str())
            && owner != input.names.tenant_id
        {
            return Err(ProviderError::permanent(
                "create namespace",
                obj.reference().to_string(),
                format!("the namespace exists and belongs to tenant {owner:?}"),
            )
            .with_code("ResourceOwnedByAnotherTenant"));
        }
        input.kube.apply(&input.target, &obj).await?;
        Ok(StepOutcome::Done(
            serde_json::json!({ "namespace": obj.name }),
        ))
    }
    async fn compensate(
        &self,
        input: &StepInput,
        _op: Option<&onboarding_providers::PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        input
            .kube
            .delete(&input.target, &object(input).reference())
            .await?;
        Ok(StepOutcome::Done(serde_json::Value::Null))
    }
}
