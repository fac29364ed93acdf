//! Error classification shared by every part of the worker.
//!
//! Every library error answers one question for the saga engine and the run loop: is it worth
//! trying again (transient), is it final (permanent), or was the input itself wrong (invalid
//! input, which is dead-lettered and never retried)?

use std::time::Duration;

/// How an error should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Throttling, 5xx, timeouts, propagation delays: retry with backoff.
    Transient,
    /// The operation cannot succeed as asked: compensate and report.
    Permanent,
    /// The request itself is malformed: reject without provisioning anything.
    InvalidInput,
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::InvalidInput => "invalid input",
        })
    }
}

/// Implemented by every error type the engine or run loop must act on.
pub trait Classify {
    fn class(&self) -> ErrorClass;
    /// A server-given hint (`Retry-After`) of when trying again makes sense.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }
}
