//! [`InProcessStore`]: the buckets in this process's memory. One worker process, one budget:
//! right for tests, benchmarks and a single replica; several replicas need a shared store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use onboarding_core::Clock;

use super::{BudgetError, BudgetStore, Feedback, Grant, SharedBucket, WriteBudgetConfig};

#[derive(Debug)]
pub struct InProcessStore {
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<String, SharedBucket>>,
}

impl InProcessStore {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The bucket of `key` as it was last written, if any.
    pub fn bucket(&self, key: &str) -> Option<SharedBucket> {
        self.lock().get(key).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SharedBucket>> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl BudgetStore for InProcessStore {
    async fn take_slice(
        &self,
        key: &str,
        want: u32,
        config: WriteBudgetConfig,
    ) -> Result<Grant, BudgetError> {
        let now = self.clock.now();
        let mut buckets = self.lock();
        let bucket = buckets
            .entry(key.to_string())
            .or_insert_with(|| SharedBucket::full(config, now));
        Ok(bucket.take(want, config, now))
    }

    async fn report(
        &self,
        key: &str,
        feedback: Feedback,
        config: WriteBudgetConfig,
    ) -> Result<(), BudgetError> {
        let now = self.clock.now();
        let mut buckets = self.lock();
        let bucket = buckets
            .entry(key.to_string())
            .or_insert_with(|| SharedBucket::full(config, now));
        feedback.apply(bucket, config, now);
        Ok(())
    }
}
