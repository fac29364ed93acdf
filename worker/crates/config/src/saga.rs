//! The saga's timing and retry settings (`[saga]` in the configuration). Pure data.

use serde::{Deserialize, Serialize};

/// Timing and retry policy of the saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SagaConfig {
    /// How long one message may advance a saga; well under the lock duration.
    pub message_budget_ms: u64,
    /// In-process retry budget of one step call before yielding with a continuation.
    pub step_retry_budget_ms: u64,
    /// First delay of in-process retries.
    pub retry_initial_delay_ms: u64,
    /// Delay of the first continuation after a transient failure; doubles per attempt.
    pub continuation_base_delay_ms: u64,
    pub continuation_max_delay_ms: u64,
    /// Continuations a step may spend on transient failures before it is treated as permanent.
    pub step_attempt_limit: u32,
    /// The same, for compensations (which then end in `CompensationFailed`).
    pub compensation_attempt_limit: u32,
    /// Finished requests remembered per tenant for idempotent replays.
    pub remembered_requests: usize,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            message_budget_ms: 20_000,
            step_retry_budget_ms: 5_000,
            retry_initial_delay_ms: 100,
            continuation_base_delay_ms: 2_000,
            continuation_max_delay_ms: 120_000,
            step_attempt_limit: 8,
            compensation_attempt_limit: 8,
            remembered_requests: 50,
        }
    }
}
