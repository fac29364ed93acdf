//! What an azservicebus failure means: [`FailureKind`] from the error's text, and a
//! [`TransportError`] that says what failed, on which namespace, and what to do about it.
//!
//! Pure: reads error values only (no network, no logging).

use onboarding_core::Classify;

use crate::TransportError;

/// What a Service Bus / AMQP failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The message or session lock expired or was already used.
    LockLost,
    /// The queue, topic or subscription does not exist.
    NotFound,
    /// The broker refused the principal (missing data role, wrong namespace).
    Unauthorized,
    /// The request can never succeed as sent (too large, malformed, not allowed).
    Rejected,
    /// Timeouts, busy servers, dropped connections, token acquisition: try again.
    Transient,
}

/// Classify a failure from its text (the error's display and debug forms, which carry the AMQP
/// condition such as `com.microsoft:session-lock-lost` or `NotFound`). `credential` is true when
/// getting a token failed.
pub fn failure_kind(detail: &str, credential: bool) -> FailureKind {
    let d = detail.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| d.contains(n));
    if any(&[
        "lock-lost",
        "locklost",
        "locktokennotfound",
        "lock token",
        "lock supplied is invalid",
        "lock expired",
    ]) {
        FailureKind::LockLost
    } else if credential {
        FailureKind::Transient
    } else if any(&[
        "not-found",
        "notfound",
        "could not be found",
        "entity-not-found",
    ]) {
        FailureKind::NotFound
    } else if any(&["unauthorized", "auth-failed", "forbidden"]) {
        FailureKind::Unauthorized
    } else if any(&[
        "message-size-exceeded",
        "messagesizeexceeded",
        "amqp:not-allowed",
        "notallowed",
        "invalid-field",
        "invalidfield",
        "argument-error",
        "argument-out-of-range",
        "decode-error",
        "decodeerror",
    ]) {
        FailureKind::Rejected
    } else {
        FailureKind::Transient
    }
}

/// True when an accept-next-session attempt ended because no session was free, which is the
/// normal "queue is empty" answer rather than a failure.
pub fn is_no_session_available(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    [
        "com.microsoft:timeout",
        "elapsed",
        "session-cannot-be-locked",
        "sessioncannotbelocked",
        "incomingsourceisnone",
        "source field is none",
        "sessionidnotset",
    ]
    .iter()
    .any(|n| d.contains(n))
}

/// True when a failure says the connection (or its AMQP session) is gone rather than that the
/// broker refused something: the broker dropped it, the socket broke. azservicebus notices
/// only when the connection is next used, so an idle pooled connection fails its first link.
pub fn is_dead_connection(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    [
        "illegalsessionstate",
        "illegalconnectionstate",
        "session has dropped",
        "expectimmediatedetach",
        "connection reset",
        "broken pipe",
        "unexpectedeof",
        "unexpected end of file",
    ]
    .iter()
    .any(|n| d.contains(n))
}

/// The display chain and debug form of an azservicebus error, for classification and messages.
pub(super) fn error_detail(err: &azure_core::Error) -> (String, String) {
    let mut display = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string();
        if !display.contains(&text) {
            display.push_str(": ");
            display.push_str(&text);
        }
        source = s.source();
    }
    (display, format!("{err:?}"))
}

/// The [`AuthError`](onboarding_core::AuthError) our credential returned, wherever azservicebus
/// wrapped it.
pub(super) fn auth_error_in(err: &azure_core::Error) -> Option<&onboarding_core::AuthError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(auth) = e.downcast_ref::<onboarding_core::AuthError>() {
            return Some(auth);
        }
        current = e.source();
    }
    None
}

pub(super) fn is_credential_error(err: &azure_core::Error) -> bool {
    matches!(err.kind(), azure_core::error::ErrorKind::Credential)
}

/// Turn an azservicebus error into a [`TransportError`] that says what failed, on which entity,
/// and what to do. `subject` names the message for lock errors.
pub(super) fn transport_error(
    err: &azure_core::Error,
    action: &str,
    namespace: &str,
    subject: &str,
) -> TransportError {
    // Our credential already knows whether its failure is worth retrying.
    if let Some(auth) = auth_error_in(err) {
        return if auth.is_transient() {
            TransportError::Unavailable(format!(
                "{action} on Service Bus namespace {namespace} failed: {auth}"
            ))
        } else {
            TransportError::Rejected(format!(
                "{action} on Service Bus namespace {namespace} failed: {auth}; check the Service Bus credential \
                 (its Entra tenant id, client id and federated credential, see docs/servicebus.md)"
            ))
        };
    }
    let (display, debug) = error_detail(err);
    let kind = failure_kind(&format!("{display} {debug}"), is_credential_error(err));
    to_transport_error(kind, action, namespace, subject, &display)
}

fn to_transport_error(
    kind: FailureKind,
    action: &str,
    namespace: &str,
    subject: &str,
    detail: &str,
) -> TransportError {
    match kind {
        FailureKind::LockLost => TransportError::LockLost(subject.to_string()),
        FailureKind::NotFound => TransportError::Rejected(format!(
            "{action} on Service Bus namespace {namespace} failed: the entity does not exist ({detail}); \
             queues, topics and subscriptions are created by the infrastructure (infra/ or az servicebus), check the names in the transport configuration"
        )),
        FailureKind::Unauthorized => TransportError::Rejected(format!(
            "{action} on Service Bus namespace {namespace} was refused ({detail}); grant the worker's identity \
             \"Azure Service Bus Data Sender\" and \"Azure Service Bus Data Receiver\" (or Data Owner) on the namespace"
        )),
        FailureKind::Rejected => TransportError::Rejected(format!(
            "{action} on Service Bus namespace {namespace} was rejected: {detail}"
        )),
        FailureKind::Transient => TransportError::Unavailable(format!(
            "{action} on Service Bus namespace {namespace} failed: {detail}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servicebus::SERVICE_BUS_SCOPE;

    #[test]
    fn a_dropped_session_or_connection_is_a_dead_connection_and_a_refusal_is_not() {
        for detail in [
            "Local error: IllegalSessionState: Session has dropped",
            "Local error: ExpectImmediateDetach: Expecting an immediate detach",
            "TransportError(Io(Custom { kind: UnexpectedEof, error: \"Expecting remote close\" }))",
            "IllegalConnectionState",
        ] {
            assert!(is_dead_connection(detail), "{detail}");
        }
        for detail in [
            "com.microsoft:session-lock-lost",
            "amqp:not-found: The messaging entity 'x' could not be found.",
            "StatusError {code: StatusCode(401), description: Some(\"token refused\") }",
        ] {
            assert!(!is_dead_connection(detail), "{detail}");
        }
    }

    #[test]
    fn lock_and_session_lock_failures_are_lock_lost() {
        for detail in [
            "RemoteClosedWithError(Error { condition: Custom(Symbol(\"com.microsoft:session-lock-lost\")) })",
            "com.microsoft:message-lock-lost: The lock supplied is invalid.",
            "LockTokenNotFound",
        ] {
            assert_eq!(
                failure_kind(detail, false),
                FailureKind::LockLost,
                "{detail}"
            );
        }
    }

    #[test]
    fn missing_entities_unauthorised_principals_and_oversized_messages_are_not_retried() {
        assert_eq!(
            failure_kind(
                "ReceiverAttach(RemoteClosedWithError(Error { condition: AmqpError(NotFound), description: Some(\"The messaging entity 'sb://ns/events/subscriptions/x' could not be found.\") }))",
                false
            ),
            FailureKind::NotFound
        );
        assert_eq!(
            failure_kind(
                "CbsAuth: AmqpError(UnauthorizedAccess) Unauthorized access. 'Listen' claim(s) are required",
                false
            ),
            FailureKind::Unauthorized
        );
        assert_eq!(
            failure_kind(
                "NotAccepted(Rejected(Error { condition: LinkError(MessageSizeExceeded) }))",
                false
            ),
            FailureKind::Rejected
        );
    }

    #[test]
    fn timeouts_busy_servers_dropped_connections_and_token_failures_are_transient() {
        for detail in [
            "Elapsed(())",
            "com.microsoft:server-busy",
            "Io(Kind(ConnectionRefused))",
        ] {
            assert_eq!(
                failure_kind(detail, false),
                FailureKind::Transient,
                "{detail}"
            );
        }
        assert_eq!(
            failure_kind(
                "cannot get a token for https://servicebus.azure.net/.default: not found",
                true
            ),
            FailureKind::Transient
        );
    }

    #[test]
    fn errors_say_what_failed_where_and_what_to_do() {
        let e = to_transport_error(
            FailureKind::NotFound,
            "sending message m1 to commands",
            "ns.servicebus.windows.net",
            "m1",
            "amqp:not-found",
        );
        let text = e.to_string();
        assert!(
            text.contains("ns.servicebus.windows.net") && text.contains("infrastructure"),
            "{text}"
        );
        assert_eq!(e.class(), onboarding_core::ErrorClass::InvalidInput);
        let e = to_transport_error(FailureKind::Unauthorized, "receiving", "ns", "", "401");
        assert!(e.to_string().contains("Azure Service Bus Data Receiver"));
        let e = to_transport_error(
            FailureKind::LockLost,
            "completing message m1",
            "ns",
            "m1",
            "x",
        );
        assert!(matches!(&e, TransportError::LockLost(m) if m == "m1"));
        assert!(to_transport_error(FailureKind::Transient, "x", "ns", "", "busy").is_transient());
    }

    fn auth_failure(class: onboarding_core::ErrorClass) -> azure_core::Error {
        azure_core::Error::new(
            azure_core::error::ErrorKind::Credential,
            onboarding_core::AuthError {
                credential: "workload identity (tenant B)".into(),
                scope: SERVICE_BUS_SCOPE.into(),
                message: "AADSTS70021: No matching federated identity record found".into(),
                class,
            },
        )
    }

    #[test]
    fn a_credential_failure_keeps_the_class_the_credential_gave_it() {
        let permanent = transport_error(
            &auth_failure(onboarding_core::ErrorClass::Permanent),
            "opening an AMQP connection",
            "ns.servicebus.windows.net",
            "",
        );
        assert!(
            matches!(permanent, TransportError::Rejected(_)),
            "{permanent}"
        );
        let text = permanent.to_string();
        assert!(
            text.contains("AADSTS70021") && text.contains("federated credential"),
            "{text}"
        );
        let transient = transport_error(
            &auth_failure(onboarding_core::ErrorClass::Transient),
            "opening an AMQP connection",
            "ns.servicebus.windows.net",
            "",
        );
        assert!(transient.is_transient(), "{transient}");
    }

    #[test]
    fn an_empty_queue_answer_to_accept_next_session_is_not_an_error() {
        assert!(is_no_session_available(
            "ReceiverAttach(RemoteClosedWithError(Error { condition: Custom(Symbol(\"com.microsoft:timeout\")) }))"
        ));
        assert!(is_no_session_available(
            "ReceiverAttach(IncomingSourceIsNone)"
        ));
        assert!(!is_no_session_available("AmqpError(NotFound)"));
    }
}
