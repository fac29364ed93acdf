//! ARM's write throttling: a token bucket per subscription (ARM's is 200 writes refilled at 10 a
//! second, per subscription and principal). An empty bucket answers 429
//! `SubscriptionRequestsThrottled` with the wait in `Retry-After`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct Bucket {
    pub(super) size: f64,
    pub(super) refill: f64,
    pub(super) tokens: HashMap<String, (f64, Instant)>,
}

impl Bucket {
    /// Takes a write token for a subscription, or says how long until there is one.
    pub(super) fn take(&mut self, subscription: &str, now: Instant) -> Result<u64, Duration> {
        let (size, refill) = (self.size, self.refill);
        let entry = self
            .tokens
            .entry(subscription.to_ascii_lowercase())
            .or_insert((size, now));
        let elapsed = now.saturating_duration_since(entry.1).as_secs_f64();
        entry.0 = (entry.0 + elapsed * refill).min(size);
        entry.1 = now;
        if entry.0 >= 1.0 {
            entry.0 -= 1.0;
            Ok(entry.0.floor() as u64)
        } else if refill > 0.0 {
            Err(Duration::from_secs_f64((1.0 - entry.0) / refill))
        } else {
            Err(Duration::from_secs(60))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_bucket_refuses_when_empty_and_names_the_wait() {
        let mut b = Bucket {
            size: 1.0,
            refill: 2.0,
            tokens: HashMap::new(),
        };
        let now = Instant::now();
        assert!(b.take("s", now).is_ok());
        let wait = b.take("s", now).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(b.take("other", now).is_ok());
    }
}
