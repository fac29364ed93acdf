//! What ARM's answer to a write says about the subscription's write bucket.
//!
//! ARM reports the writes left in its bucket on every write answer
//! (`x-ms-ratelimit-remaining-subscription-writes`; `-global-writes` for the limit shared by
//! every principal of the subscription, 15 times the per-principal one; `-deletes` on deletes),
//! and answers 429 `SubscriptionRequestsThrottled` with a `Retry-After` when it is empty. ARM's
//! throttling guide tells its own throttling from a resource provider's by these headers: a 429
//! whose remaining count is not near 0 came from the provider, whose limits are its own.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

use super::{SharedBucket, WriteBudgetConfig};
use crate::client::parse_retry_after;

/// The headers whose lowest value caps the bucket.
pub const REMAINING_HEADERS: [&str; 3] = [
    "x-ms-ratelimit-remaining-subscription-writes",
    "x-ms-ratelimit-remaining-subscription-global-writes",
    "x-ms-ratelimit-remaining-subscription-deletes",
];

/// ARM's error code when a subscription's request bucket is empty.
const SUBSCRIPTION_THROTTLED: &str = "SubscriptionRequestsThrottled";

/// One piece of ARM's word about the bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Feedback {
    /// `writes` were left when ARM answered a request sent at `sent_at`.
    Remaining { writes: u32, sent_at: DateTime<Utc> },
    /// ARM throttled the subscription's writes: none before `retry_after` from now.
    Throttled { retry_after: Duration },
}

impl Feedback {
    /// What the answer to a write says: `status`, its headers, the ARM error code of its body,
    /// and when the request was sent. `None` when it says nothing about the bucket.
    pub fn from_answer(
        status: u16,
        headers: &HeaderMap,
        error_code: Option<&str>,
        sent_at: DateTime<Utc>,
    ) -> Option<Self> {
        let remaining = REMAINING_HEADERS
            .iter()
            .filter_map(|h| headers.get(*h)?.to_str().ok()?.trim().parse::<u32>().ok())
            .min();
        let subscription_throttled =
            error_code.is_some_and(|c| c.eq_ignore_ascii_case(SUBSCRIPTION_THROTTLED));
        if status == 429 && (subscription_throttled || remaining == Some(0)) {
            let retry_after = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after)
                .unwrap_or(Duration::from_secs(1));
            return Some(Feedback::Throttled { retry_after });
        }
        remaining.map(|writes| Feedback::Remaining { writes, sent_at })
    }

    /// Applies this to `bucket`; returns whether the bucket changed (and must be stored).
    pub fn apply(
        self,
        bucket: &mut SharedBucket,
        config: WriteBudgetConfig,
        now: DateTime<Utc>,
    ) -> bool {
        match self {
            Feedback::Remaining { writes, sent_at } => {
                bucket.lower_to(writes, sent_at, config, now)
            }
            Feedback::Throttled { retry_after } => {
                bucket.block(retry_after, config, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("a header value"));
        }
        h
    }

    fn sent() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000).expect("a valid time")
    }

    #[test]
    fn the_lowest_remaining_count_is_the_one_that_counts() {
        let h = headers(&[
            ("x-ms-ratelimit-remaining-subscription-writes", "3"),
            ("x-ms-ratelimit-remaining-subscription-global-writes", "2"),
            ("x-ms-ratelimit-remaining-subscription-reads", "1"),
        ]);
        assert_eq!(
            Feedback::from_answer(201, &h, None, sent()),
            Some(Feedback::Remaining {
                writes: 2,
                sent_at: sent()
            })
        );
    }

    #[test]
    fn subscription_throttling_blocks_for_retry_after() {
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(
            Feedback::from_answer(429, &h, Some("SubscriptionRequestsThrottled"), sent()),
            Some(Feedback::Throttled {
                retry_after: Duration::from_secs(7)
            })
        );
        let h = headers(&[("x-ms-ratelimit-remaining-subscription-writes", "0")]);
        assert_eq!(
            Feedback::from_answer(429, &h, Some("TooManyRequests"), sent()),
            Some(Feedback::Throttled {
                retry_after: Duration::from_secs(1)
            })
        );
    }

    #[test]
    fn a_resource_providers_own_429_does_not_block_the_subscription() {
        let h = headers(&[
            ("retry-after", "30"),
            ("x-ms-ratelimit-remaining-subscription-writes", "150"),
        ]);
        assert_eq!(
            Feedback::from_answer(429, &h, Some("TooManyRequests"), sent()),
            Some(Feedback::Remaining {
                writes: 150,
                sent_at: sent()
            })
        );
        let h = headers(&[("retry-after", "30")]);
        assert_eq!(
            Feedback::from_answer(429, &h, Some("TooManyRequests"), sent()),
            None
        );
    }

    #[test]
    fn an_answer_without_the_headers_says_nothing() {
        let h = headers(&[("x-ms-ratelimit-remaining-subscription-writes", "many")]);
        assert_eq!(Feedback::from_answer(200, &h, None, sent()), None);
    }
}
