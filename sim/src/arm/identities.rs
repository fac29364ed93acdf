//! User-assigned managed identities (`Microsoft.ManagedIdentity/userAssignedIdentities`): a PUT
//! creates one with a fresh principal and client id (kept on update); deleting one deletes its
//! federated identity credentials. [`ArmSim::federated_identity`] shows an identity and its
//! credentials to the Entra simulator, which exchanges workload tokens for them.

use std::time::Instant;

use serde::Serialize;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use uuid::Uuid;

use super::responses::{arm_error, deleted, json_response, not_found, valid_name};
use super::state::IdentityRec;
use super::{ArmSim, SIM_TENANT_ID, lock};

/// PUT, GET or DELETE of one identity.
pub(super) fn handle(
    sim: &ArmSim,
    method: &Method,
    sub: &str,
    rg: &str,
    name: &str,
    body: Value,
) -> Response {
    let id = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    );
    match method.as_str() {
        "PUT" => put_identity(sim, &id, name, body),
        "DELETE" => {
            let mut st = lock(&sim.state);
            let prefix = format!("{}/", id.to_ascii_lowercase());
            st.fics.retain(|k, _| !k.starts_with(&prefix));
            st.fic_changed.retain(|k, _| !k.starts_with(&prefix));
            deleted(st.identities.remove(&id.to_ascii_lowercase()).is_some())
        }
        _ => match lock(&sim.state).identities.get(&id.to_ascii_lowercase()) {
            Some(rec) => json_response(StatusCode::OK, &rec.body),
            None => not_found("Microsoft.ManagedIdentity/userAssignedIdentities", name, rg),
        },
    }
}

fn put_identity(sim: &ArmSim, id: &str, name: &str, body: Value) -> Response {
    if !valid_name(name, 3, 128, &['-', '_']) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidResourceName",
            &format!(
                "Resource name '{name}' is invalid. The name can contain only letters, numbers, underscores and hyphens, must start with a letter or number, and be 3 to 128 characters long."
            ),
        );
    }
    let key = id.to_ascii_lowercase();
    let mut st = lock(&sim.state);
    let (principal_id, client_id, status, created) = match st.identities.get(&key) {
        Some(rec) => (
            rec.principal_id.clone(),
            rec.body["properties"]["clientId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            StatusCode::OK,
            rec.created,
        ),
        None => (
            Uuid::new_v4().to_string(),
            Uuid::new_v4().to_string(),
            StatusCode::CREATED,
            Instant::now(),
        ),
    };
    let resource = json!({
        "id": id,
        "name": name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
        "location": body["location"],
        "tags": body.get("tags").cloned().unwrap_or_else(|| json!({})),
        "properties": {
            "tenantId": SIM_TENANT_ID,
            "principalId": principal_id,
            "clientId": client_id,
            "isolationScope": body.pointer("/properties/isolationScope").cloned().unwrap_or_else(|| json!("None")),
        }
    });
    if status == StatusCode::CREATED {
        st.count_created("userAssignedIdentities");
    }
    st.identities.insert(
        key,
        IdentityRec {
            body: resource.clone(),
            principal_id,
            created,
        },
    );
    json_response(status, &resource)
}

/// A user-assigned identity as Entra sees it: the application the Entra simulator issues tokens
/// to, and the federated credentials it honours.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FederatedIdentity {
    /// The identity's ARM id (the `xms_mirid` of its tokens).
    pub id: String,
    pub client_id: String,
    pub tenant_id: String,
    pub principal_id: String,
    pub credentials: Vec<FederatedCredential>,
}

/// One federated identity credential of a [`FederatedIdentity`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FederatedCredential {
    pub id: String,
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    /// When it was created or last changed (Entra's propagation delay counts from here).
    #[serde(skip)]
    pub changed: Instant,
}

impl ArmSim {
    /// The user-assigned identity whose client id this is (case-insensitive), with its
    /// federated credentials; `None` when no identity has it.
    pub fn federated_identity(&self, client_id: &str) -> Option<FederatedIdentity> {
        let st = lock(&self.state);
        let (key, rec) = st.identities.iter().find(|(_, rec)| {
            rec.body["properties"]["clientId"]
                .as_str()
                .is_some_and(|c| c.eq_ignore_ascii_case(client_id))
        })?;
        let prop = |v: &Value, name: &str| {
            v["properties"][name]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let prefix = format!("{key}/federatedidentitycredentials/");
        let credentials = st
            .fics
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, fic)| FederatedCredential {
                id: fic["id"].as_str().unwrap_or_default().to_string(),
                issuer: prop(fic, "issuer"),
                subject: prop(fic, "subject"),
                audiences: fic["properties"]["audiences"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                // Every PUT records the time; a credential without one is treated as brand new.
                changed: st.fic_changed.get(k).copied().unwrap_or_else(Instant::now),
            })
            .collect();
        Some(FederatedIdentity {
            id: rec.body["id"].as_str().unwrap_or_default().to_string(),
            client_id: prop(&rec.body, "clientId"),
            tenant_id: prop(&rec.body, "tenantId"),
            principal_id: rec.principal_id.clone(),
            credentials,
        })
    }
}
