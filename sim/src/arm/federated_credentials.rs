//! Federated identity credentials of a user-assigned identity
//! (`.../userAssignedIdentities/{identity}/federatedIdentityCredentials`): the identity must
//! exist, the issuer must be https, exactly one audience, at most 20 per identity. When each was
//! created or changed is kept for the Entra simulator's propagation delay.

use std::time::Instant;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::responses::{arm_error, deleted, json_response, not_found, valid_name};
use super::{ArmSim, lock};

/// PUT, GET or DELETE of one federated identity credential.
pub(super) fn handle(
    sim: &ArmSim,
    method: &Method,
    sub: &str,
    rg: &str,
    identity: &str,
    name: &str,
    body: Value,
) -> Response {
    let parent = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{identity}"
    );
    let id = format!("{parent}/federatedIdentityCredentials/{name}");
    match method.as_str() {
        "PUT" => put_fic(sim, &parent, &id, name, body),
        "DELETE" => {
            let key = id.to_ascii_lowercase();
            let mut st = lock(&sim.state);
            st.fic_changed.remove(&key);
            deleted(st.fics.remove(&key).is_some())
        }
        _ => match lock(&sim.state).fics.get(&id.to_ascii_lowercase()) {
            Some(v) => json_response(StatusCode::OK, v),
            None => not_found(
                "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
                &format!("{identity}/{name}"),
                rg,
            ),
        },
    }
}

fn put_fic(sim: &ArmSim, parent: &str, id: &str, name: &str, body: Value) -> Response {
    if !valid_name(name, 3, 120, &['-', '_']) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidResourceName",
            &format!(
                "Federated identity credential name '{name}' is invalid: 3-120 letters, digits, hyphens and underscores, starting with a letter or digit."
            ),
        );
    }
    let props = &body["properties"];
    let issuer = props["issuer"].as_str().unwrap_or_default();
    if !issuer.starts_with("https://") {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Issuer '{issuer}' must be an https URL."),
        );
    }
    if props["subject"].as_str().is_none_or(str::is_empty) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Subject must not be empty.",
        );
    }
    if props["audiences"].as_array().is_none_or(|a| a.len() != 1) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Exactly one audience is supported.",
        );
    }
    let mut st = lock(&sim.state);
    if !st.identities.contains_key(&parent.to_ascii_lowercase()) {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ParentResourceNotFound",
            &format!(
                "Failed to perform 'write' on resource(s) of type 'userAssignedIdentities/federatedIdentityCredentials', because the parent resource '{parent}' could not be found."
            ),
        );
    }
    let key = id.to_ascii_lowercase();
    let prefix = format!("{}/", parent.to_ascii_lowercase());
    let siblings = st
        .fics
        .keys()
        .filter(|k| k.starts_with(&prefix) && **k != key)
        .count();
    if siblings >= 20 {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "An identity can have at most 20 federated identity credentials.",
        );
    }
    let status = if st.fics.contains_key(&key) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let resource = json!({
        "id": id,
        "name": name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        "properties": {
            "issuer": props["issuer"],
            "subject": props["subject"],
            "audiences": props["audiences"],
        }
    });
    if status == StatusCode::CREATED {
        st.count_created("federatedIdentityCredentials");
    }
    // A new or changed credential has to propagate through Entra again; a replayed PUT does not.
    if st
        .fics
        .get(&key)
        .is_none_or(|old| old["properties"] != resource["properties"])
    {
        st.fic_changed.insert(key.clone(), Instant::now());
    }
    st.fics.insert(key, resource.clone());
    json_response(status, &resource)
}
