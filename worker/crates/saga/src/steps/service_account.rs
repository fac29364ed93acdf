//! Step `service_account`: the tenant's workload-identity service account, annotated with the
//! tenant identity's client id (and its Entra tenant when that differs from the cluster's).
//! Applied and deleted only when it is the worker's ([`super::owned`]).

use super::owned::{apply_owned, delete_owned};
use crate::record::StepName;
use crate::step::{Step, StepInput, StepOutcome};
use onboarding_providers::manifests;
use onboarding_providers::{KubeObject, PendingOperation, ProviderError};

#[derive(Debug)]
pub struct ServiceAccountStep;

fn object(input: &StepInput, client_id: &str, identity_tenant: Option<&str>) -> KubeObject {
    manifests::service_account(
        &input.names.namespace,
        &input.names.service_account,
        &input.names.tenant_id,
        client_id,
        identity_tenant,
    )
}

#[async_trait::async_trait]
impl Step for ServiceAccountStep {
    fn name(&self) -> StepName {
        StepName::ServiceAccount
    }
    fn needs(&self) -> &'static [StepName] {
        &[StepName::Namespace, StepName::Identity]
    }
    fn resource(&self, input: &StepInput) -> String {
        object(input, "", None).reference().to_string()
    }
    async fn forward(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        let client_id = input.output_str(StepName::Identity, "client_id")?;
        let identity_tenant = input
            .output_str(StepName::Identity, "entra_tenant_id")
            .unwrap_or_else(|_| input.target.identity_entra_tenant_id.clone());
        let cross_tenant = (identity_tenant != input.target.cluster_entra_tenant_id)
            .then_some(identity_tenant.as_str());
        let obj = object(input, &client_id, cross_tenant);
        apply_owned(input, &obj).await?;
        Ok(StepOutcome::Done(serde_json::json!({
            "namespace": input.names.namespace,
            "name": obj.name,
            "client_id": client_id,
        })))
    }
    async fn compensate(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        delete_owned(input, &object(input, "", None).reference()).await?;
        Ok(StepOutcome::Done(serde_json::Value::Null))
    }
}
