//! [`ManualClock`]: time that moves only when a test (or a sleeping engine) moves it.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use onboarding_core::Clock;

/// Time that moves only when someone sleeps (instantly) or the test advances it.
#[derive(Debug)]
pub struct ManualClock {
    base: DateTime<Utc>,
    offset_ms: AtomicI64,
}

impl ManualClock {
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            offset_ms: AtomicI64::new(0),
        })
    }
    pub fn advance(&self, d: Duration) {
        self.offset_ms
            .fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
    pub fn advance_to(&self, t: DateTime<Utc>) {
        let now = self.now();
        if t > now {
            self.advance((t - now).to_std().unwrap());
        }
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + chrono::TimeDelta::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
    async fn sleep(&self, d: Duration) {
        // Whole milliseconds, rounded up and at least one: time must move on every sleep, or a
        // caller that sleeps until a sub-millisecond deadline (or sleeps zero in a loop) would
        // spin forever on a clock that never reaches it.
        let ms = d.as_micros().div_ceil(1000).max(1);
        self.advance(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)));
        tokio::task::yield_now().await;
    }
}
