//! `Status` error bodies, shaped and worded as the real API server sends them.

use serde_json::{Value, json};

use super::resources::Resource;

/// A failed API call: HTTP code, `reason`, message and optional `details`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Sent as `Retry-After` and `details.retryAfterSeconds`.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after_secs: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// `namespaces "x" not found`, `deployments.apps "workload" not found`.
    pub fn not_found(resource: &Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", resource.qualified()),
        )
        .with_details(details(resource, name, resource.plural))
    }

    /// A path the server does not serve at all.
    pub fn no_such_resource() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 422 with one cause per invalid field.
    pub fn invalid(resource: &Resource, name: &str, causes: Vec<(String, String)>) -> Self {
        let summary = causes
            .iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect::<Vec<_>>()
            .join(", ");
        let causes: Vec<Value> = causes
            .into_iter()
            .map(|(field, message)| {
                json!({"reason": "FieldValueInvalid", "message": message, "field": field})
            })
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {summary}", resource.kind),
        )
        .with_details({
            let mut d = details(resource, name, resource.kind);
            d["causes"] = Value::Array(causes);
            d
        })
    }

    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        )
        .with_details(json!({"retryAfterSeconds": retry_after_secs}));
        e.retry_after_secs = Some(retry_after_secs);
        e
    }

    /// The reason the API server uses for a bare HTTP code.
    pub fn reason_for(code: u16) -> &'static str {
        match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "",
        }
    }

    /// The `Status` body.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            body["details"] = details.clone();
        }
        body
    }
}

/// The `Status` a successful delete answers with.
pub fn deleted(resource: &Resource, name: &str, uid: &str) -> Value {
    let mut d = details(resource, name, resource.plural);
    d["uid"] = json!(uid);
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": d,
    })
}

/// `details` as the API server writes them: the core group's empty name is left out.
fn details(resource: &Resource, name: &str, kind: &str) -> Value {
    let mut d = json!({"name": name, "kind": kind});
    if !resource.group.is_empty() {
        d["group"] = json!(resource.group);
    }
    d
}
