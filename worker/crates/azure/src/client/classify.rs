//! What an ARM answer means for the saga: transient (throttling, server errors, busy
//! resources, replication delays) with ARM's `Retry-After`, or permanent (a clear client error,
//! exhausted quota); and how a failed or canceled long-running operation is classified.
//!
//! May touch: nothing; pure functions over answers.

use std::time::Duration;

use serde_json::Value;

use super::{ArmResponse, Op};
use crate::models::ArmErrorDetail;
use onboarding_core::ErrorClass;
use onboarding_providers::ProviderError;

/// Error codes that mean "try again later" whatever the status line says.
const TRANSIENT_CODES: &[&str] = &[
    "OperationNotAllowed",
    "AKSOperationPreempted",
    "OperationPreempted",
    "AnotherOperationInProgress",
    "PrincipalNotFound",
    "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
    "ExpiredAuthenticationToken",
    "RetryableError",
    "TooManyRequests",
    "InternalServerError",
    "InternalOperationError",
    "ServiceUnavailable",
    "GatewayTimeout",
];

/// `Retry-After`: delta seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

fn is_transient_code(code: &str, message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    // Storage deletes a container asynchronously; re-creating the name meanwhile is refused
    // with "The specified container is being deleted. Try operation later." (ARM's code is
    // ContainerOperationFailure, the data plane's ContainerBeingDeleted). It passes by waiting.
    if message.contains("being deleted") {
        return true;
    }
    // Compute reports exhausted quota as OperationNotAllowed too; that will not pass by waiting.
    TRANSIENT_CODES.iter().any(|c| c.eq_ignore_ascii_case(code)) && !message.contains("quota")
}

/// Classifies a non-2xx answer.
pub fn classify(resp: &ArmResponse, op: Op<'_>) -> ProviderError {
    let detail = resp.body.as_ref().and_then(ArmErrorDetail::from_body);
    let (code, message) = match &detail {
        Some(d) => (d.code.clone(), d.message.clone()),
        None => (
            resp.status.to_string(),
            match &resp.body {
                Some(Value::String(s)) => s.chars().take(300).collect(),
                Some(v) => v.to_string().chars().take(300).collect(),
                None => String::new(),
            },
        ),
    };
    let status = resp.status;
    let class = match status {
        408 | 429 => ErrorClass::Transient,
        500..=599 => ErrorClass::Transient,
        409 if is_transient_code(&code, &message) => ErrorClass::Transient,
        400 | 404 if code.eq_ignore_ascii_case("PrincipalNotFound") => ErrorClass::Transient,
        // ARM refused the worker's own token, even a new one: the worker is unwell, not the step.
        401 => ErrorClass::Infrastructure,
        _ => ErrorClass::Permanent,
    };
    let hint = match (status, class) {
        (429, _) => "; ARM is throttling this subscription, the worker backs off",
        (401, _) => {
            "; ARM refused the worker's token: check the target's credential (tenant, client id, federated credential) and that its Entra tenant is the subscription's"
        }
        (403, _) => {
            "; grant the worker's identity the role this operation needs on the target's scope"
        }
        (_, ErrorClass::Transient) => "; this usually passes, the worker retries",
        _ => "",
    };
    let mut err = ProviderError::new(
        class,
        op.operation,
        op.resource,
        format!(
            "ARM answered {status}: {message}{hint} (request id {})",
            resp.request_id
        ),
    )
    .with_code(code);
    if let Some(after) = resp.retry_after() {
        err = err.with_retry_after(after);
    }
    if class == ErrorClass::Transient {
        tracing::info!(request.id = %resp.request_id, http.status = status, error = %err, "transient ARM error");
    } else {
        tracing::warn!(request.id = %resp.request_id, http.status = status, error = %err, "ARM error");
    }
    err
}

pub(super) fn operation_failed(
    status: &str,
    error: Option<ArmErrorDetail>,
    op: Op<'_>,
) -> ProviderError {
    let canceled = !status.eq_ignore_ascii_case("failed");
    let (code, message) = error
        .map(|e| (e.code, e.message))
        .unwrap_or_else(|| (format!("Operation{status}"), String::new()));
    // A canceled operation was usually preempted by a newer one: issuing it again is right.
    let class = if canceled || is_transient_code(&code, &message) {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    };
    ProviderError::new(
        class,
        op.operation,
        op.resource,
        format!("the long-running operation ended {status}: {code} {message}"),
    )
    .with_code(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;
    use serde_json::json;

    fn resp(status: u16, body: Value, retry_after: Option<&str>) -> ArmResponse {
        let mut headers = HeaderMap::new();
        if let Some(r) = retry_after {
            headers.insert("retry-after", r.parse().unwrap());
        }
        ArmResponse {
            status,
            headers,
            body: Some(body),
            request_id: "rid".into(),
        }
    }

    const OP: Op<'static> = Op {
        operation: "create node pool",
        resource: "/x",
    };

    fn err(code: &str, message: &str) -> Value {
        json!({"error": {"code": code, "message": message}})
    }

    #[test]
    fn throttling_and_server_errors_are_transient_with_retry_after() {
        let e = classify(
            &resp(429, err("TooManyRequests", "slow down"), Some("7")),
            OP,
        );
        assert_eq!(e.class, ErrorClass::Transient);
        assert_eq!(e.retry_after_secs, Some(7));
        for s in [500, 502, 503, 504] {
            assert_eq!(
                classify(&resp(s, json!({}), None), OP).class,
                ErrorClass::Transient
            );
        }
    }

    #[test]
    fn busy_cluster_conflicts_and_principal_propagation_are_transient() {
        for code in [
            "OperationNotAllowed",
            "AKSOperationPreempted",
            "AnotherOperationInProgress",
        ] {
            let e = classify(&resp(409, err(code, "busy"), None), OP);
            assert_eq!(e.class, ErrorClass::Transient, "{code}");
            assert_eq!(e.code.as_deref(), Some(code));
        }
        for s in [400, 404] {
            let e = classify(&resp(s, err("PrincipalNotFound", "replication"), None), OP);
            assert_eq!(e.class, ErrorClass::Transient);
        }
    }

    #[test]
    fn a_container_still_being_deleted_is_a_wait_not_a_failure() {
        for code in ["ContainerOperationFailure", "ContainerBeingDeleted"] {
            let e = classify(
                &resp(
                    409,
                    err(
                        code,
                        "The specified container is being deleted. Try operation later.",
                    ),
                    None,
                ),
                OP,
            );
            assert_eq!(e.class, ErrorClass::Transient, "{code}");
        }
        let e = classify(
            &resp(409, err("ContainerOperationFailure", "other"), None),
            OP,
        );
        assert_eq!(e.class, ErrorClass::Permanent);
    }

    #[test]
    fn clear_client_errors_and_quota_are_permanent() {
        let e = classify(&resp(400, err("InvalidParameter", "vmSize bad"), None), OP);
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.to_string().contains("vmSize bad"), "{e}");
        let e = classify(
            &resp(
                409,
                err("OperationNotAllowed", "exceeding approved quota"),
                None,
            ),
            OP,
        );
        assert_eq!(e.class, ErrorClass::Permanent);
        let e = classify(&resp(403, err("AuthorizationFailed", "no"), None), OP);
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("grant the worker's identity"), "{e}");
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after("12"), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn failed_operations_are_classified_by_their_code() {
        let e = operation_failed(
            "Failed",
            Some(ArmErrorDetail {
                code: "QuotaExceeded".into(),
                ..Default::default()
            }),
            OP,
        );
        assert_eq!(e.class, ErrorClass::Permanent);
        let e = operation_failed(
            "Failed",
            Some(ArmErrorDetail {
                code: "InternalOperationError".into(),
                ..Default::default()
            }),
            OP,
        );
        assert_eq!(e.class, ErrorClass::Transient);
        assert_eq!(
            operation_failed("Canceled", None, OP).class,
            ErrorClass::Transient
        );
    }
}
