//! Client-side write budget per subscription, shaped like ARM's own token bucket (200 writes,
//! refilled at 10 a second, per subscription and principal, per region), so that a burst of
//! onboardings queues politely instead of setting off a storm of 429s. Reads are not budgeted.
//!
//! Every replica of the worker writes with the same principal to the same subscriptions, so the
//! bucket must be one for all of them, not one per process: N replicas under KEDA with a bucket
//! each would send N times what ARM allows. Hence two layers:
//!
//! - a [`BudgetStore`] keeps one [`SharedBucket`] document per `<ARM host>|<subscription>`
//!   (`{tokens, last_refill, blocked_until}`). The worker's is journal-backed (compare-and-swap
//!   on `arm-budget:<key>`, `worker::arm_budget`), so all replicas share it; [`InProcessStore`]
//!   keeps the buckets in memory, for one process (tests, benchmarks, the default when no store
//!   is given).
//! - [`WriteBudgets`], one per process, hands out tokens from a small local allowance and refills
//!   it from the store in slices: as many tokens as writes are waiting, at most
//!   [`WriteBudgets::slice`] (10 for ARM's bucket), so replicas meet on the shared document once
//!   per slice rather than on every write, and a slice is spent as soon as it is taken.
//!
//! ARM's answers feed the bucket back ([`Feedback`]): after a write, the lowest of its
//! `x-ms-ratelimit-remaining-subscription-{writes,global-writes,deletes}` headers caps the
//! shared tokens (plus what refilled since the request was sent: the bucket never rises on ARM's
//! word); ARM's subscription throttling (429 `SubscriptionRequestsThrottled`, or a remaining
//! count of 0) empties the bucket and blocks every replica until its `Retry-After` has passed.
//! A 429 of a resource provider's own limits (another code, remaining writes above 0) is left to
//! the step that met it, which waits its `Retry-After` as before.
//!
//! Writes and deletes share one bucket here; ARM keeps a bucket for each, so this budget is
//! conservative when a worker both creates and deletes at full speed.
//!
//! May touch: the [`BudgetStore`] it is given, and the [`onboarding_core::Clock`] for time.

use std::time::Duration;

mod allowance;
mod bucket;
mod feedback;
mod local;

pub use allowance::WriteBudgets;
pub use bucket::{SharedBucket, allowed_after};
pub use feedback::{Feedback, REMAINING_HEADERS};
pub use local::InProcessStore;

/// Bucket size and refill rate (`[arm] write_bucket`, `write_refill_per_sec`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WriteBudgetConfig {
    /// Writes that may go out at once after a quiet period.
    pub bucket_size: u32,
    /// Tokens added per second.
    pub refill_per_sec: f64,
}

impl Default for WriteBudgetConfig {
    /// ARM's documented per-subscription write bucket (200, refilled at 10/s).
    fn default() -> Self {
        Self {
            bucket_size: 200,
            refill_per_sec: 10.0,
        }
    }
}

/// What a store hands out from a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// This many tokens (at least one), taken from the bucket.
    Tokens(u32),
    /// None now: look again after this long (the next token, or ARM's `Retry-After`).
    Wait(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// Other replicas kept changing the bucket between our read and our write; try again.
    #[error("the shared ARM write budget kept changing underneath this worker")]
    Contended,
    /// The store cannot be read or written (the journal is down).
    #[error("the shared ARM write budget is unavailable: {0}")]
    Unavailable(String),
}

/// Where the buckets live. Keys are `<ARM host>|<subscription id>`, lowercase.
#[async_trait::async_trait]
pub trait BudgetStore: Send + Sync + std::fmt::Debug {
    /// Takes up to `want` tokens (at least one) from the bucket of `key`, creating it full when
    /// it does not exist yet.
    async fn take_slice(
        &self,
        key: &str,
        want: u32,
        config: WriteBudgetConfig,
    ) -> Result<Grant, BudgetError>;

    /// Applies what ARM said about the bucket of `key`.
    async fn report(
        &self,
        key: &str,
        feedback: Feedback,
        config: WriteBudgetConfig,
    ) -> Result<(), BudgetError>;
}

#[cfg(test)]
pub(crate) mod test_clock {
    //! A clock the tests move; sleeping moves it.

    use std::sync::Mutex;
    use std::time::Duration;

    use chrono::{DateTime, TimeDelta, Utc};
    use onboarding_core::Clock;

    #[derive(Debug)]
    pub struct ManualClock(Mutex<DateTime<Utc>>);

    impl ManualClock {
        pub fn new() -> Self {
            Self(Mutex::new(
                DateTime::from_timestamp_millis(1_700_000_000_000).expect("a valid time"),
            ))
        }

        pub fn advance(&self, by: Duration) {
            let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
            *t += TimeDelta::from_std(by).expect("a short duration");
        }
    }

    #[async_trait::async_trait]
    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        async fn sleep(&self, duration: Duration) {
            self.advance(duration);
            tokio::task::yield_now().await;
        }
    }
}
