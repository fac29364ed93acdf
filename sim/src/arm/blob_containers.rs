//! Blob containers (`Microsoft.Storage/storageAccounts/{account}/blobServices/default/containers`),
//! through the storage resource provider: PUT creates or updates synchronously, DELETE takes the
//! role assignments at the container's scope with it.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use uuid::Uuid;

use super::responses::{arm_error, deleted, json_response, now_rfc3339};
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
        "DELETE" => {
            let mut st = lock(&sim.state);
            let key = id.to_ascii_lowercase();
            // Role assignments are extension resources: they go with their scope.
            st.role_assignments
                .retain(|_, r| r.scope_key != key && !r.scope_key.starts_with(&format!("{key}/")));
            deleted(st.containers.remove(&key).is_some())
        }
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
