//! The `[worker]` section: concurrency, shutdown grace, message size and receive timing of the
//! worker's runner.
//!
//! May touch: nothing; pure data.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Messages (so tenants) worked on at once.
    pub concurrency: usize,
    /// Time given to in-flight work after SIGTERM before it is abandoned.
    pub shutdown_grace_ms: u64,
    /// Bodies larger than this are dead-lettered unread.
    pub max_message_bytes: usize,
    /// How long one receive call waits for a message.
    pub receive_wait_ms: u64,
    /// The worker exits once the queue has been empty this long (0: never). For batch runs.
    pub exit_when_idle_ms: u64,
    /// Namespaces no tenant may land on: the worker's own (`tenant-onboarding`, so tenant id
    /// `onboarding` is refused) and any the platform keeps for itself. `default` and `kube-*`
    /// are always refused.
    pub reserved_namespaces: Vec<String>,
    /// After a fault of the worker's own (its credential refused, the queue unreachable), the
    /// first wait before trying again; it doubles with each further failure…
    pub unwell_backoff_first_ms: u64,
    /// …up to this.
    pub unwell_backoff_max_ms: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            shutdown_grace_ms: 30_000,
            max_message_bytes: 64 * 1024,
            receive_wait_ms: 1_000,
            exit_when_idle_ms: 0,
            reserved_namespaces: vec!["tenant-onboarding".into()],
            unwell_backoff_first_ms: 1_000,
            unwell_backoff_max_ms: 60_000,
        }
    }
}
