//! Client-side write budget per subscription, shaped like ARM's own token bucket (a bucket of
//! write tokens refilled at a steady rate), so that a burst of onboardings queues politely
//! instead of setting off a storm of 429s.
//!
//! A write takes a token, waiting for one when the bucket is empty. Reads are not budgeted.
//! In-memory only; each worker process keeps its own buckets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Bucket size and refill rate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WriteBudgetConfig {
    /// Writes that may go out at once after a quiet period.
    pub bucket_size: u32,
    /// Tokens added per second.
    pub refill_per_sec: f64,
}

impl Default for WriteBudgetConfig {
    /// ARM's documented per-subscription, per-region write bucket (200, refilled at 10/s).
    /// Generous: a single worker rarely reaches it, but it keeps a burst inside ARM's limits.
    fn default() -> Self {
        Self {
            bucket_size: 200,
            refill_per_sec: 10.0,
        }
    }
}

/// One token bucket.
#[derive(Debug)]
pub struct WriteBudget {
    config: WriteBudgetConfig,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    last: Instant,
}

impl WriteBudget {
    pub fn new(config: WriteBudgetConfig) -> Self {
        Self {
            config,
            state: Mutex::new(BucketState {
                tokens: f64::from(config.bucket_size),
                last: Instant::now(),
            }),
        }
    }

    /// Takes a token now, or says how long until one is there.
    pub fn try_take(&self) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let capacity = f64::from(self.config.bucket_size.max(1));
        let refill = self.config.refill_per_sec.max(0.0);
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * refill).min(capacity);
        s.last = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            return Ok(());
        }
        if refill <= 0.0 {
            // A bucket that never refills would block forever; treat it as one token a minute.
            return Err(Duration::from_secs(60));
        }
        Err(Duration::from_secs_f64((1.0 - s.tokens) / refill))
    }

    /// Waits for a token.
    pub async fn take(&self) {
        while let Err(wait) = self.try_take() {
            tracing::debug!(
                wait_ms = wait.as_millis() as u64,
                "ARM write budget empty, waiting"
            );
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

/// The buckets of every subscription, shared by every ARM client of one process.
#[derive(Debug, Default)]
pub struct WriteBudgets {
    config: WriteBudgetConfig,
    buckets: Mutex<HashMap<String, Arc<WriteBudget>>>,
}

impl WriteBudgets {
    pub fn new(config: WriteBudgetConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> WriteBudgetConfig {
        self.config
    }

    /// The bucket of one key (endpoint host and subscription id, lowercase).
    pub fn bucket(&self, key: &str) -> Arc<WriteBudget> {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.to_ascii_lowercase())
            .or_insert_with(|| Arc::new(WriteBudget::new(self.config)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_empty_bucket_makes_a_write_wait_for_the_refill() {
        let b = WriteBudget::new(WriteBudgetConfig {
            bucket_size: 2,
            refill_per_sec: 4.0,
        });
        b.take().await;
        b.take().await;
        let wait = b.try_take().expect_err("bucket is empty");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(250),
            "{wait:?}"
        );
        let before = Instant::now();
        b.take().await;
        assert!(Instant::now() - before >= Duration::from_millis(249));
    }

    #[test]
    fn subscriptions_have_separate_buckets() {
        let budgets = WriteBudgets::new(WriteBudgetConfig {
            bucket_size: 1,
            refill_per_sec: 0.001,
        });
        assert!(budgets.bucket("a").try_take().is_ok());
        assert!(budgets.bucket("A").try_take().is_err());
        assert!(budgets.bucket("b").try_take().is_ok());
    }
}
