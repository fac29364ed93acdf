//! Step `role_assignment`: Storage Blob Data Contributor for the tenant's identity on the
//! tenant's container, narrowed by an ABAC condition to that container's name.

use crate::record::StepName;
use crate::step::{Step, StepInput, StepOutcome};
use onboarding_core::ErrorClass;
use onboarding_providers::rbac::{
    STORAGE_BLOB_DATA_CONTRIBUTOR, blob_container_condition, role_assignment_name,
};
use onboarding_providers::{PendingOperation, ProviderError, RoleAssignmentSpec};

use super::id_or_reason;

#[derive(Debug)]
pub struct RoleAssignmentStep;

fn scope(input: &StepInput) -> Result<String, ProviderError> {
    match input.output_str(StepName::BlobContainer, "id") {
        Ok(id) => Ok(id),
        Err(_) => onboarding_providers::arm_ids::blob_container_id(
            &input.target,
            &input.names.blob_container,
        ),
    }
}

fn role_definition(input: &StepInput) -> String {
    onboarding_providers::rbac::role_definition_id(
        &input.target.subscription_id,
        STORAGE_BLOB_DATA_CONTRIBUTOR,
    )
}

/// The ABAC condition narrowing the assignment to the tenant's container.
fn condition(input: &StepInput, scope: &str) -> Result<String, ProviderError> {
    blob_container_condition(&input.names.blob_container).map_err(|e| {
        ProviderError::new(
            ErrorClass::InvalidInput,
            "build ABAC condition",
            scope,
            e.to_string(),
        )
    })
}

#[async_trait::async_trait]
impl Step for RoleAssignmentStep {
    fn name(&self) -> StepName {
        StepName::RoleAssignment
    }
    fn needs(&self) -> &'static [StepName] {
        &[StepName::Identity, StepName::BlobContainer]
    }
    fn resource(&self, input: &StepInput) -> String {
        match input.output_str(StepName::RoleAssignment, "id") {
            Ok(id) => id,
            Err(_) => format!(
                "{}/providers/Microsoft.Authorization/roleAssignments/(for {})",
                id_or_reason(scope(input)),
                input.names.identity
            ),
        }
    }
    async fn forward(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        let principal = input.output_str(StepName::Identity, "principal_id")?;
        let scope = input.output_str(StepName::BlobContainer, "id")?;
        let role = role_definition(input);
        let condition = condition(input, &scope)?;
        let spec = RoleAssignmentSpec {
            name: role_assignment_name(&scope, &principal, &role),
            scope: scope.clone(),
            role_definition_id: role,
            principal_id: principal,
            principal_type: "ServicePrincipal".into(),
            condition,
            condition_version: "2.0".into(),
        };
        let info = input
            .azure
            .ensure_role_assignment(&input.target, &spec)
            .await?;
        Ok(StepOutcome::Done(serde_json::json!({
            "id": info.id,
            "name": info.name,
            "scope": scope,
            "principal_id": spec.principal_id,
        })))
    }
    async fn compensate(
        &self,
        input: &StepInput,
        _op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        // Prefer what the journal recorded; an offboarding of a tenant the journal lost falls
        // back to asking Azure for the identity's principal.
        let (scope, name, principal) = match (
            input.output_str(StepName::RoleAssignment, "scope"),
            input.output_str(StepName::RoleAssignment, "name"),
            input.output_str(StepName::RoleAssignment, "principal_id"),
        ) {
            (Ok(scope), Ok(name), Ok(principal)) => (scope, name, principal),
            _ => {
                let principal = match input.output_str(StepName::Identity, "principal_id") {
                    Ok(p) => p,
                    Err(_) => match input
                        .call(|| {
                            input
                                .azure
                                .get_identity(&input.target, &input.names.identity)
                        })
                        .await?
                    {
                        Some(identity) => identity.principal_id,
                        // No identity, so no assignment can name it.
                        None => return Ok(StepOutcome::Done(serde_json::Value::Null)),
                    },
                };
                let scope = scope(input)?;
                let name = role_assignment_name(&scope, &principal, &role_definition(input));
                (scope, name, principal)
            }
        };
        // The provisioner deletes it only if it still is this principal's, with this role and
        // condition: a role assignment has no tags to say whose it is.
        let spec = RoleAssignmentSpec {
            name,
            scope: scope.clone(),
            role_definition_id: role_definition(input),
            principal_id: principal,
            principal_type: "ServicePrincipal".into(),
            condition: condition(input, &scope)?,
            condition_version: "2.0".into(),
        };
        input
            .azure
            .delete_role_assignment(&input.target, &spec)
            .await?;
        Ok(StepOutcome::Done(serde_json::Value::Null))
    }
}
