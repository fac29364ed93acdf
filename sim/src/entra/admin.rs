//! The Entra simulator's own endpoints under `/_sim/entra/`, for tests and the local run, plus
//! the OpenID discovery document and the 404 of everything else. Each is a thin HTTP face of a
//! method of [`EntraSim`].
//!
//! - `GET /_sim/entra/requests`: `[TokenRequestRecord]`.
//! - `POST /_sim/entra/faults` `{"unavailableForSecs": 5, "status": 503}`: token requests get
//!   `status` (default 503) with Retry-After for that long; `DELETE` ends it at once.
//! - `GET|POST /_sim/entra/apps`: list registrations / add one (`AppRegistration` JSON:
//!   `{"clientId", "issuer", "subject", "tenantId"?, "audiences"?, "objectId"?}`), 201.
//! - `POST /_sim/entra/reset`: no outage, empty log, registrations of run time gone.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{AppRegistration, EntraSim};

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": "invalid_request", "error_description": message})),
    )
        .into_response()
}

pub(super) async fn requests(State(sim): State<Arc<EntraSim>>) -> Response {
    axum::Json(sim.requests()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultRequest {
    unavailable_for_secs: f64,
    #[serde(default = "service_unavailable")]
    status: u16,
}

fn service_unavailable() -> u16 {
    503
}

pub(super) async fn set_faults(State(sim): State<Arc<EntraSim>>, body: Bytes) -> Response {
    let req = match serde_json::from_slice::<FaultRequest>(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(format!(
                "the body must be {{\"unavailableForSecs\": seconds, \"status\"?: 429|500-599}}: {e}"
            ));
        }
    };
    let secs = req.unavailable_for_secs;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return bad_request("unavailableForSecs must be between 0 and 86400".into());
    }
    let status = match StatusCode::from_u16(req.status) {
        Ok(s) if s.as_u16() == 429 || s.is_server_error() => s,
        _ => return bad_request(format!("status {} is not 429 or 5xx", req.status)),
    };
    sim.set_unavailable(Duration::from_secs_f64(secs), status);
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn clear_faults(State(sim): State<Arc<EntraSim>>) -> Response {
    sim.set_unavailable(Duration::ZERO, StatusCode::SERVICE_UNAVAILABLE);
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn list_apps(State(sim): State<Arc<EntraSim>>) -> Response {
    axum::Json(sim.apps()).into_response()
}

pub(super) async fn add_app(State(sim): State<Arc<EntraSim>>, body: Bytes) -> Response {
    let app = match serde_json::from_slice::<AppRegistration>(&body) {
        Ok(a) => a,
        Err(e) => {
            return bad_request(format!(
                "the body must be {{\"clientId\", \"issuer\", \"subject\", \"tenantId\"?, \"audiences\"?, \"objectId\"?}}: {e}"
            ));
        }
    };
    match sim.register_app(app.clone()) {
        Ok(()) => (StatusCode::CREATED, axum::Json(app)).into_response(),
        Err(e) => bad_request(e),
    }
}

pub(super) async fn reset(State(sim): State<Arc<EntraSim>>) -> Response {
    sim.reset();
    StatusCode::NO_CONTENT.into_response()
}

/// The discovery document MSAL-style clients read before their first token request.
pub(super) async fn openid_configuration(
    State(sim): State<Arc<EntraSim>>,
    Path(tenant): Path<String>,
) -> Response {
    let base = format!("{}/{tenant}", sim.url());
    axum::Json(json!({
        "issuer": format!("{base}/v2.0"),
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["HS256"],
        "tenant_region_scope": "EU",
    }))
    .into_response()
}

pub(super) async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({
            "error": "not_found",
            "error_description": format!(
                "The Entra simulator serves POST /{{tenant}}/oauth2/v2.0/token and /_sim/entra/*; not {}.",
                uri.path()
            ),
        })),
    )
        .into_response()
}
