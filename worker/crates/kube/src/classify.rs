//! What a failed Kubernetes call means for the saga: transient (throttling, server errors,
//! conflicts, a namespace not there yet or being terminated), gone (a 404 naming the object),
//! or permanent (an invalid object, a kind the server does not serve), with the server's
//! `retryAfterSeconds` when it gave one.
//!
//! May touch: nothing; pure functions over errors.

use std::time::Duration;

use kube::core::Status;

use onboarding_core::ErrorClass;
use onboarding_providers::{ObjectRef, ProviderError};

/// A namespaced object applied right after its namespace was created can meet a namespace the
/// API server does not know yet (or one still being deleted): waiting helps. A 404 that is not
/// about the namespace means the API server does not serve the kind at all: waiting does not.
pub(crate) fn namespace_missing_is_transient(
    error: ProviderError,
    object: &ObjectRef,
) -> ProviderError {
    if error.code.as_deref() != Some("NotFound") {
        return error;
    }
    match &object.namespace {
        Some(ns)
            if error
                .message
                .contains(&format!("namespaces \"{ns}\" not found")) =>
        {
            ProviderError {
                class: ErrorClass::Transient,
                message: format!(
                    "namespace {ns} does not exist (yet): {}; will retry once it does",
                    error.message
                ),
                ..error
            }
        }
        _ => not_served(error, object),
    }
}

/// A 404 about the object itself (`deployments.apps "workload" not found`): it is not there.
/// The API server says the same when the object's namespace is gone.
pub(crate) fn is_gone(error: &ProviderError, object: &ObjectRef) -> bool {
    error.code.as_deref() == Some("NotFound")
        && error
            .message
            .contains(&format!("\"{}\" not found", object.name))
}

/// Any other 404 means the API server does not serve the kind at all.
pub(crate) fn not_served(error: ProviderError, object: &ObjectRef) -> ProviderError {
    if error.code.as_deref() != Some("NotFound") {
        return error;
    }
    ProviderError {
        class: ErrorClass::Permanent,
        message: format!(
            "the API server does not serve {} {}: {}; is the cluster's Kubernetes version supported?",
            object.api_version, object.kind, error.message
        ),
        ..error
    }
}

/// What a kube error means for the saga.
pub(crate) fn classify(
    operation: &str,
    object: &ObjectRef,
    server: &str,
    error: kube::Error,
) -> ProviderError {
    let resource = object.to_string();
    match error {
        kube::Error::Api(status) => classify_status(operation, &resource, &status),
        kube::Error::HyperError(e) => ProviderError::transient(
            operation,
            resource,
            format!("the connection to the Kubernetes API server {server} failed: {e}; will retry"),
        )
        .with_code("ConnectionError"),
        kube::Error::Service(e) => ProviderError::transient(
            operation,
            resource,
            format!(
                "cannot reach the Kubernetes API server {server}: {}; will retry",
                error_chain(e.as_ref())
            ),
        )
        .with_code("ConnectionError"),
        kube::Error::Auth(e) => ProviderError::new(
            ErrorClass::Infrastructure,
            operation,
            resource,
            format!(
                "cannot authenticate to the Kubernetes API server {server}: {e}; check the target's kubeconfig or service account"
            ),
        )
        .with_code("AuthError"),
        kube::Error::SerdeError(e) => ProviderError::permanent(
            operation,
            resource,
            format!(
                "the Kubernetes API server {server} answered with something that is not a Kubernetes object ({e}); is `server` really an API server?"
            ),
        ),
        other => ProviderError::permanent(
            operation,
            resource,
            format!("the request to the Kubernetes API server {server} failed: {other}"),
        ),
    }
}

pub(crate) fn classify_status(operation: &str, resource: &str, status: &Status) -> ProviderError {
    let code = if status.reason.is_empty() {
        status.code.to_string()
    } else {
        status.reason.clone()
    };
    let retry_after = status
        .details
        .as_ref()
        .map(|d| d.retry_after_seconds)
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(u64::from(s)));
    let message = &status.message;
    let causes = status
        .details
        .as_ref()
        .map(|d| {
            d.causes
                .iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let (class, text) = match status.code {
        429 => (
            ErrorClass::Transient,
            format!("the API server is throttling requests: {message}; will retry"),
        ),
        408 | 500..=599 => (
            ErrorClass::Transient,
            format!(
                "the API server failed ({} {code}): {message}; will retry",
                status.code
            ),
        ),
        409 => (
            ErrorClass::Transient,
            format!("conflict with a concurrent change: {message}; will retry"),
        ),
        // Raw: the callers tell "gone", "namespace missing" and "kind not served" apart by it.
        404 => (ErrorClass::Permanent, message.clone()),
        403 if message.contains("being terminated") => (
            ErrorClass::Transient,
            format!("the namespace is still being deleted: {message}; will retry"),
        ),
        403 => (
            ErrorClass::Permanent,
            format!(
                "the API server refused the worker: {message}; grant the worker's identity RBAC to {operation} this kind (see k8s)"
            ),
        ),
        // The worker's own credentials: the worker is unwell, the step is not to blame.
        401 => (
            ErrorClass::Infrastructure,
            format!(
                "the API server did not accept the worker's credentials: {message}; check the target's kubeconfig or service account"
            ),
        ),
        422 => (
            ErrorClass::Permanent,
            format!(
                "the API server rejected the object as invalid: {message}{}",
                {
                    // The API server usually repeats its causes in the message already.
                    let extra: Vec<&String> = causes
                        .iter()
                        .filter(|c| !message.contains(c.as_str()))
                        .collect();
                    if extra.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({})",
                            extra
                                .iter()
                                .map(|c| c.as_str())
                                .collect::<Vec<_>>()
                                .join("; ")
                        )
                    }
                }
            ),
        ),
        _ => (
            ErrorClass::Permanent,
            format!(
                "the API server rejected the request ({} {code}): {message}",
                status.code
            ),
        ),
    };
    let mut error = ProviderError::new(class, operation, resource, text).with_code(code);
    if let Some(after) = retry_after {
        error = error.with_retry_after(after);
    }
    error
}

pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use onboarding_core::Classify;

    fn status(code: u16, reason: &str, message: &str, retry_after: u32) -> Status {
        serde_json::from_value(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code,
            "details": {"retryAfterSeconds": retry_after},
        }))
        .expect("a Status")
    }

    #[test]
    fn throttling_is_transient_and_carries_retry_after() {
        let e = classify_status(
            "apply",
            "Namespace/x",
            &status(429, "TooManyRequests", "slow down", 7),
        );
        assert_eq!(e.class, ErrorClass::Transient);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(e.code.as_deref(), Some("TooManyRequests"));
    }

    #[test]
    fn server_errors_and_conflicts_are_transient_invalid_objects_permanent() {
        for (code, reason, class) in [
            (500, "InternalError", ErrorClass::Transient),
            (503, "ServiceUnavailable", ErrorClass::Transient),
            (504, "Timeout", ErrorClass::Transient),
            (409, "Conflict", ErrorClass::Transient),
            (422, "Invalid", ErrorClass::Permanent),
            (400, "BadRequest", ErrorClass::Permanent),
            (403, "Forbidden", ErrorClass::Permanent),
            (401, "Unauthorized", ErrorClass::Infrastructure),
        ] {
            let e = classify_status("apply", "Role/ns/x", &status(code, reason, "m", 0));
            assert_eq!(e.class, class, "{code}");
            assert_eq!(e.retry_after(), None);
        }
    }

    #[test]
    fn a_namespace_being_terminated_is_transient() {
        let e = classify_status(
            "apply",
            "Role/ns/x",
            &status(
                403,
                "Forbidden",
                "unable to create new content in namespace ns because it is being terminated",
                0,
            ),
        );
        assert_eq!(e.class, ErrorClass::Transient);
    }

    #[test]
    fn only_a_missing_namespace_makes_a_not_found_apply_transient() {
        let object = ObjectRef {
            api_version: "v1".into(),
            kind: "ServiceAccount".into(),
            namespace: Some("tenant-a".into()),
            name: "sa".into(),
        };
        let missing_ns = classify_status(
            "apply",
            "x",
            &status(404, "NotFound", "namespaces \"tenant-a\" not found", 0),
        );
        assert_eq!(
            namespace_missing_is_transient(missing_ns, &object).class,
            ErrorClass::Transient
        );
        let unserved = classify_status(
            "apply",
            "x",
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                0,
            ),
        );
        assert_eq!(
            namespace_missing_is_transient(unserved, &object).class,
            ErrorClass::Permanent
        );
    }

    #[test]
    fn only_a_not_found_naming_the_object_means_it_is_gone() {
        let object = ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("tenant-a".into()),
            name: "workload".into(),
        };
        let gone = classify_status(
            "delete",
            "x",
            &status(
                404,
                "NotFound",
                "deployments.apps \"workload\" not found",
                0,
            ),
        );
        assert!(is_gone(&gone, &object));
        let unserved = classify_status(
            "delete",
            "x",
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                0,
            ),
        );
        assert!(!is_gone(&unserved, &object));
        let e = not_served(unserved, &object);
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(
            e.message.contains("does not serve apps/v1 Deployment"),
            "{}",
            e.message
        );
    }
}
