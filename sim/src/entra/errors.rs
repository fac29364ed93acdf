//! How Entra ID's token endpoint says no: an OAuth error (`invalid_request`, `invalid_client`,
//! …) with an `AADSTSnnnnn` code, in Entra's JSON shape (`error`, `error_description` ending in
//! trace id, correlation id and timestamp, `error_codes`, `timestamp`, `trace_id`,
//! `correlation_id`, `error_uri`). The codes and wording are the ones Entra answers with for the
//! same mistakes, so the worker's error handling meets what it will meet in Azure.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

/// One refusal of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EntraError {
    pub(super) status: StatusCode,
    /// The OAuth 2.0 error, e.g. `invalid_request`.
    pub(super) error: &'static str,
    /// The AADSTS number.
    pub(super) code: u32,
    /// The description after `AADSTSnnnnn: `.
    pub(super) message: String,
}

impl EntraError {
    fn new(status: StatusCode, error: &'static str, code: u32, message: String) -> Self {
        Self {
            status,
            error,
            code,
            message,
        }
    }

    /// What the request log shows: `AADSTS70021`.
    pub(super) fn outcome(&self) -> String {
        format!("AADSTS{}", self.code)
    }

    /// Entra's answer; `correlation_id` is the client's `client-request-id` when it sent one.
    pub(super) fn into_response(self, correlation_id: &str, retry_after: Option<u64>) -> Response {
        let trace_id = Uuid::new_v4().to_string();
        let timestamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
        let body = json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
                self.code, self.message
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&trace_id) {
            headers.insert("x-ms-request-id", v);
        }
        if let Some(secs) = retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            headers.insert("retry-after", v);
        }
        headers.insert(
            "cache-control",
            HeaderValue::from_static("no-store, no-cache"),
        );
        (self.status, headers, axum::Json(body)).into_response()
    }

    /// AADSTS900144: a required form field is missing.
    pub(super) fn missing_parameter(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    /// AADSTS900023: the tenant in the path is neither a GUID nor a domain name.
    pub(super) fn bad_tenant(tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900023,
            format!(
                "Specified tenant identifier '{tenant}' is neither a valid DNS name, nor a valid external domain."
            ),
        )
    }

    /// AADSTS90002: a domain name no tenant has.
    pub(super) fn unknown_tenant(tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        )
    }

    /// AADSTS70003: anything but the client credentials grant.
    pub(super) fn unsupported_grant(grant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        )
    }

    /// AADSTS1002012: a client-credentials scope without `/.default`.
    pub(super) fn scope_not_default(scope: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        )
    }

    /// AADSTS28000: scopes of more than one resource.
    pub(super) fn scope_many_resources(scope: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            28000,
            format!(
                "Provided value for the input parameter scope is not valid because it contains more than one resource. Scope {scope} is not valid."
            ),
        )
    }

    /// AADSTS7000216: no client assertion (the simulator knows no other client credential).
    pub(super) fn no_assertion() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.".into(),
        )
    }

    /// AADSTS7000215: a client secret, which no simulated application has.
    pub(super) fn secret_given() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. The Entra simulator's applications authenticate with federated credentials only.".into(),
        )
    }

    /// AADSTS50027: the assertion is not a JWT with `iss`, `sub`, `aud` and `exp`.
    pub(super) fn malformed_assertion(why: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
            format!("JWT token is invalid or malformed ({why})."),
        )
    }

    /// AADSTS700024: the assertion has expired (or is not valid yet).
    pub(super) fn assertion_out_of_time(now: &str, valid_from: &str, expiry: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {now}, assertion valid from {valid_from}, expiry time of assertion {expiry}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials ."
            ),
        )
    }

    /// AADSTS700016: no application with this client id in this tenant.
    pub(super) fn unknown_client(client_id: &str, tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        )
    }

    /// AADSTS70021: no federated credential (old enough to have propagated) matches.
    pub(super) fn no_matching_federated_credential(
        issuer: &str,
        subject: &str,
        audience: &str,
    ) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            70021,
            format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{audience}'. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
            ),
        )
    }

    /// An injected outage: 503 (or the status asked for) with AADSTS90033, or 90024 for 429.
    pub(super) fn unavailable(status: StatusCode) -> Self {
        let (error, code) = match status.as_u16() {
            429 => ("temporarily_unavailable", 90024),
            503 => ("temporarily_unavailable", 90033),
            _ => ("server_error", 90033),
        };
        Self::new(
            status,
            error,
            code,
            "A transient error has occurred. Please try again. (injected by the Entra simulator)"
                .into(),
        )
    }
}
