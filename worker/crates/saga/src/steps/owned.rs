//! Applying and deleting a tenant's namespaced Kubernetes objects only when they are the
//! worker's: an object of the same name without the worker's marker for this tenant is never
//! adopted (the step fails permanently, naming it, having changed nothing) and never deleted
//! (left in place, with a warning).
//!
//! May touch: the target's API server, through the step input's Kubernetes provider.

use onboarding_providers::{KubeObject, ObjectRef, ProviderError};

use super::ownership::{Owner, identity, owner};
use crate::step::StepInput;

/// The refusal to adopt `reference`, which belongs to `who`.
pub(crate) fn not_owned(reference: &ObjectRef, who: &str) -> ProviderError {
    ProviderError::permanent(
        format!("create {}", reference.kind),
        reference.to_string(),
        format!(
            "the {} exists and belongs to {who}; the worker adopts nothing it did not create: remove it or choose another tenant id",
            reference.kind
        ),
    )
    .with_code("ResourceNotOwned")
}

/// The live object at `reference`, refused unless it is absent or ours.
pub(crate) async fn live_if_ours(
    input: &StepInput,
    reference: &ObjectRef,
) -> Result<Option<serde_json::Value>, ProviderError> {
    let live = input
        .call(|| input.kube.get(&input.target, reference))
        .await?;
    if let Some(live) = &live
        && let Owner::Foreign(who) = owner(live, &input.names.tenant_id)
    {
        return Err(not_owned(reference, &who));
    }
    Ok(live)
}

/// Apply `obj` unless an object of its name exists that is not ours.
pub(crate) async fn apply_owned(input: &StepInput, obj: &KubeObject) -> Result<(), ProviderError> {
    live_if_ours(input, &obj.reference()).await?;
    input
        .call(|| input.kube.apply(&input.target, obj))
        .await
        .map(|_| ())
}

/// Delete `reference` if it exists and is ours, checked immediately before: the delete carries
/// the uid and resourceVersion of the object judged ours, so an object that changed hands (or
/// was replaced) in between is not deleted; it is looked at again. Returns whether it was
/// deleted.
pub(crate) async fn delete_owned(
    input: &StepInput,
    reference: &ObjectRef,
) -> Result<bool, ProviderError> {
    for _ in 0..3 {
        let Some(live) = input
            .call(|| input.kube.get(&input.target, reference))
            .await?
        else {
            return Ok(false);
        };
        if let Owner::Foreign(who) = owner(&live, &input.names.tenant_id) {
            tracing::warn!(object = %reference, owner = %who, "not the worker's: left in place");
            return Ok(false);
        }
        let (uid, version) = identity(&live);
        if input
            .call(|| {
                input
                    .kube
                    .delete_unchanged(&input.target, reference, &uid, &version)
            })
            .await?
        {
            return Ok(true);
        }
    }
    Err(ProviderError::transient(
        "delete",
        reference.to_string(),
        "the object kept changing between the ownership check and the delete; looking again later",
    )
    .with_code("ChangedSinceChecked"))
}
