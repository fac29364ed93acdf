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
    /// How often a saga waiting for its cluster's turn (the line of agent-pool operations, or
    /// AKS saying another operation is in progress) looks again. AKS pool operations take
    /// minutes, so a few seconds here keeps the cluster busy while tenants wait.
    pub cluster_turn_poll_ms: u64,
    /// How long a turn stays with a saga that stops renewing it (a crashed worker) before the
    /// next in line may take it; also how long a waiter that stops looking keeps its place.
    pub cluster_turn_lease_ms: u64,
    /// How long a step may wait for the platform (its cluster's turn for a pool operation, a
    /// container name still being deleted) before it fails: hours, because a burst of
    /// onboardings to one cluster, or a cluster upgrade, legitimately takes that long. Waits
    /// are not attempts: the attempt limits do not apply to them.
    pub wait_limit_ms: u64,
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
            cluster_turn_poll_ms: 5_000,
            cluster_turn_lease_ms: 600_000,
            wait_limit_ms: 4 * 3_600_000,
        }
    }
}
