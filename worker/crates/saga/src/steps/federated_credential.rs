//! Step `federated_credential`: lets the tenant's service account, with tokens issued by the
//! cluster's OIDC issuer, sign in as the tenant's identity.

use crate::record::StepName;
use crate::step::{Step, StepInput, StepOutcome};
use onboarding_contract::names::FEDERATION_AUDIENCE;
use onboarding_providers::{FederatedCredentialSpec, PendingOperation, ProviderError};

use super::id_or_reason;

#[derive(Debug)]
pub struct FederatedCredentialStep;

#[async_trait::async_trait]
impl Step for FederatedCredentialStep {
    fn name(&self) -> StepName {
        StepName::FederatedCredential
    }
    fn needs(&self) -> &'static [StepName] {
        &[StepName::Identity]
    }
    fn resource(&self, input: &StepInput) -> String {
        id_or_reason(onboarding_providers::arm_ids::federated_credential_id(
            &input.target,
            &input.names.identity,
            &input.names.federated_credential,
        ))
    }
    async fn forward(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        let spec = FederatedCredentialSpec {
            identity_name: input.names.identity.clone(),
            name: input.names.federated_credential.clone(),
            issuer: input.target.oidc_issuer.clone(),
            subject: input.names.federated_subject(),
            audiences: vec![FEDERATION_AUDIENCE.to_string()],
        };
        input
            .azure
            .ensure_federated_credential(&input.target, &spec)
            .await?;
        Ok(StepOutcome::Done(serde_json::json!({
            "name": spec.name,
            "issuer": spec.issuer,
            "subject": spec.subject,
        })))
    }
    async fn compensate(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        input
            .azure
            .delete_federated_credential(
                &input.target,
                &input.names.identity,
                &input.names.federated_credential,
                &input.names.tenant_id,
            )
            .await?;
        Ok(StepOutcome::Done(serde_json::Value::Null))
    }
}
