//! Blob containers (`Microsoft.Storage/storageAccounts/{account}/blobServices/default/containers`),
//! through the storage resource provider: PUT creates or updates synchronously, DELETE takes the
//! role assignments at the container's scope with it.
//!
//! Storage deletes containers asynchronously: after a DELETE (200) the container is gone for
//! GET (404) but its name stays taken while it is "being deleted" (the behaviour's
//! `container_deletion_secs`, 30 s by default, scaled), and a PUT of that name meanwhile gets 409.

use std::time::Instant;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::responses::{arm_error, deleted, json_response, now_rfc3339};
use super::state::DeletingContainer;
use super::{ArmSim, lock};

/// PUT, GET or DELETE of one container.
pub(super) fn handle(
    sim: &ArmSim,
    method: &Method,
    sub: &str,
    rg: &str,
    account: &str,
    name: &str,
    body: Value,
) -> Response {
    let id = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{account}/blobServices/default/containers/{name}"
    );
    match method.as_str() {
        "PUT" => put_container(sim, &id, name, body),
        "DELETE" => delete_container(sim, &id),
        _ => match lock(&sim.state).containers.get(&id.to_ascii_lowercase()) {
            Some(v) => json_response(StatusCode::OK, v),
            None => arm_error(
                StatusCode::NOT_FOUND,
                "ContainerNotFound",
                "The specified container does not exist.",
            ),
        },
    }
}

fn valid_container_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

fn put_container(sim: &ArmSim, id: &str, name: &str, body: Value) -> Response {
    if !valid_container_name(name) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "ContainerOperationFailure",
            &format!(
                "The specified resource name '{name}' contains invalid characters or has an invalid length."
            ),
        );
    }
    let key = id.to_ascii_lowercase();
    let mut st = lock(&sim.state);
    st.settle(Instant::now());
    if st.deleting_containers.contains_key(&key) {
        return being_deleted();
    }
    let status = if st.containers.contains_key(&key) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let props = &body["properties"];
    let resource = json!({
        "id": id,
        "name": name,
        "type": "Microsoft.Storage/storageAccounts/blobServices/containers",
        "etag": format!("\"0x{}\"", &Uuid::new_v4().simple().to_string()[..15].to_ascii_uppercase()),
        "properties": {
            "metadata": props.get("metadata").cloned().unwrap_or_else(|| json!({})),
            "publicAccess": props.get("publicAccess").cloned().unwrap_or_else(|| json!("None")),
            "defaultEncryptionScope": "$account-encryption-key",
            "denyEncryptionScopeOverride": false,
            "leaseStatus": "Unlocked",
            "leaseState": "Available",
            "lastModifiedTime": now_rfc3339(),
            "hasImmutabilityPolicy": false,
            "hasLegalHold": false,
            "deleted": false,
            "remainingRetentionDays": 0,
        }
    });
    if status == StatusCode::CREATED {
        st.count_created("blobContainers");
    }
    st.containers.insert(key, resource.clone());
    json_response(status, &resource)
}

/// 200 and the container is gone, its name held for the deletion window; 204 if there was
/// nothing (or it is already being deleted).
fn delete_container(sim: &ArmSim, id: &str) -> Response {
    let key = id.to_ascii_lowercase();
    let now = Instant::now();
    let window = sim.container_deletion_window();
    let mut st = lock(&sim.state);
    st.settle(now);
    // Role assignments are extension resources: they go with their scope.
    st.role_assignments
        .retain(|_, r| r.scope_key != key && !r.scope_key.starts_with(&format!("{key}/")));
    let Some(container) = st.containers.remove(&key) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    if !window.is_zero() {
        let id = container["id"].as_str().unwrap_or(id).to_string();
        st.deleting_containers.insert(
            key,
            DeletingContainer {
                id,
                until: now + window,
            },
        );
    }
    deleted(true)
}

/// What ARM answers for a PUT of a container that is still being deleted:
/// Azure/azure-rest-api-specs#30456 quotes it through the storage resource provider ("409
/// Conflict ... ContainerOperationFailure: The specified container is being deleted. Try
/// operation later."). The Blob service's own code for it is `ContainerBeingDeleted` (Blob
/// service error codes, learn.microsoft.com/rest/api/storageservices/blob-service-error-codes;
/// Azure/azure-sdk#710), which the resource provider reports as `ContainerOperationFailure`.
fn being_deleted() -> Response {
    arm_error(
        StatusCode::CONFLICT,
        "ContainerOperationFailure",
        "The specified container is being deleted. Try operation later.",
    )
}
