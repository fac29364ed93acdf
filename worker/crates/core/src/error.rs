//! Error classification shared by every part of the worker.
//!
//! Every library error answers one question for the saga engine and the run loop: is it worth
//! trying again (transient), is it final (permanent), was the input itself wrong (invalid
//! input, which is dead-lettered and never retried), or is the worker itself unwell
//! (infrastructure: its own credential; the message waits, nothing is compensated)?

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
    /// The worker itself is unwell: its own credential cannot get a token, or a service refuses
    /// the worker's own token. Never a step outcome: the message is kept and tried again once
    /// the worker has backed off, nothing is compensated, and the worker reports not ready.
    Infrastructure,
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::InvalidInput => "invalid input",
            ErrorClass::Infrastructure => "infrastructure",
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
