//! Step `guardrails`: quota, limit range, network policies and the tenant admins' role binding
//! in the tenant's namespace.

use crate::k8s::manifests::{self, GuardrailSpec};
use crate::providers::{KubeObject, PendingOperation, ProviderError};
use crate::saga::record::StepName;
use crate::saga::step::{Step, StepInput, StepOutcome};

#[derive(Debug)]
pub struct GuardrailsStep;

fn objects(input: &StepInput) -> Vec<KubeObject> {
    let d = &input.config.guardrails;
    let quota = input.spec.as_ref().and_then(|s| s.quota.clone());
    let spec = GuardrailSpec {
        cpu: quota
            .as_ref()
            .map_or_else(|| d.cpu.clone(), |q| q.cpu.clone()),
        memory: quota
            .as_ref()
            .map_or_else(|| d.memory.clone(), |q| q.memory.clone()),
        pods: quota.as_ref().map_or(d.pods, |q| q.pods),
        default_container_cpu: d.default_container_cpu.clone(),
        default_container_memory: d.default_container_memory.clone(),
        // When offboarding there is no spec: include the binding so it is deleted too.
        admin_group_id: match &input.spec {
            Some(s) => s.admin_group_id.clone(),
            None => Some("00000000-0000-0000-0000-000000000000".into()),
        },
    };
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
        objects(input)
            .iter()
            .map(|o| o.reference().to_string())
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
            input.kube.apply(&input.target, obj).await?;
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
        for obj in objects(input).iter().rev() {
            input.kube.delete(&input.target, &obj.reference()).await?;
        }
        Ok(StepOutcome::Done(serde_json::Value::Null))
    }
}
