//! One write bucket as a document: `{tokens, last_refill, blocked_until}`, and the arithmetic every
//! [`super::BudgetStore`] applies to it (refill, take a slice, lower to what ARM says remains,
//! block after a 429). Pure: the caller passes the time, so the arithmetic is tested without a
//! clock and a store only has to load, apply and store the document.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::{Grant, WriteBudgetConfig};

/// A token bucket at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedBucket {
    /// Tokens left at `last_refill` (fractional: the refill is continuous).
    pub tokens: f64,
    /// When `tokens` was last brought up to date. In the future while the bucket is blocked:
    /// no tokens accrue before ARM's `Retry-After` has passed.
    pub last_refill: DateTime<Utc>,
    /// ARM answered 429: nobody writes before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_until: Option<DateTime<Utc>>,
}

impl SharedBucket {
    /// A full bucket, as ARM's is after a quiet period.
    pub fn full(config: WriteBudgetConfig, now: DateTime<Utc>) -> Self {
        Self {
            tokens: capacity(config),
            last_refill: now,
            blocked_until: None,
        }
    }

    /// Adds what accrued since `last_refill`, up to the bucket size.
    pub fn refill(&mut self, config: WriteBudgetConfig, now: DateTime<Utc>) {
        let elapsed = (now - self.last_refill).to_std().unwrap_or(Duration::ZERO);
        let rate = config.refill_per_sec.max(0.0);
        // A bucket size lowered in the configuration applies at once.
        self.tokens = (self.tokens + elapsed.as_secs_f64() * rate).clamp(0.0, capacity(config));
        if now > self.last_refill {
            self.last_refill = now;
        }
        if self.blocked_until.is_some_and(|b| b <= now) {
            self.blocked_until = None;
        }
    }

    /// Takes up to `want` whole tokens (at least one), or says how long until one is there.
    pub fn take(&mut self, want: u32, config: WriteBudgetConfig, now: DateTime<Utc>) -> Grant {
        self.refill(config, now);
        if let Some(until) = self.blocked_until {
            return Grant::Wait(until_then(now, until));
        }
        let whole = self.tokens.floor();
        if whole >= 1.0 {
            // `whole` is at most the bucket size, a u32.
            let n = want.max(1).min(whole as u32);
            self.tokens -= f64::from(n);
            return Grant::Tokens(n);
        }
        let rate = config.refill_per_sec;
        if rate <= 0.0 || !rate.is_finite() {
            // A bucket that never refills would wait forever; look again in a minute.
            return Grant::Wait(Duration::from_secs(60));
        }
        Grant::Wait(Duration::from_secs_f64((1.0 - self.tokens) / rate))
    }

    /// ARM said `remaining` writes were left when it answered a request sent at `sent_at`: the
    /// bucket keeps at most that plus what refilled since. Returns whether anything changed.
    pub fn lower_to(
        &mut self,
        remaining: u32,
        sent_at: DateTime<Utc>,
        config: WriteBudgetConfig,
        now: DateTime<Utc>,
    ) -> bool {
        self.refill(config, now);
        let allowed = allowed_after(remaining, sent_at, config, now);
        if self.tokens > allowed {
            self.tokens = allowed;
            true
        } else {
            false
        }
    }

    /// ARM answered 429 with `retry_after`: no tokens now and none accrue before then. A wait
    /// beyond an hour is taken as an hour (a broken header must not stop writes for good).
    pub fn block(&mut self, retry_after: Duration, config: WriteBudgetConfig, now: DateTime<Utc>) {
        self.refill(config, now);
        let wait = retry_after.min(MAX_BLOCK);
        let until = now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::hours(1));
        let until = self.blocked_until.map_or(until, |b| b.max(until));
        self.tokens = 0.0;
        self.blocked_until = Some(until);
        self.last_refill = self.last_refill.max(until);
    }
}

/// The most ARM can have now after saying `remaining` for a request sent at `sent_at` (it
/// answered at some point after that, and has refilled since).
pub fn allowed_after(
    remaining: u32,
    sent_at: DateTime<Utc>,
    config: WriteBudgetConfig,
    now: DateTime<Utc>,
) -> f64 {
    let since = (now - sent_at).to_std().unwrap_or(Duration::ZERO);
    (f64::from(remaining) + since.as_secs_f64() * config.refill_per_sec.max(0.0))
        .min(capacity(config))
}

/// The longest a 429 blocks the bucket.
const MAX_BLOCK: Duration = Duration::from_secs(3600);

fn capacity(config: WriteBudgetConfig) -> f64 {
    f64::from(config.bucket_size.max(1))
}

fn until_then(now: DateTime<Utc>, until: DateTime<Utc>) -> Duration {
    (until - now).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: WriteBudgetConfig = WriteBudgetConfig {
        bucket_size: 20,
        refill_per_sec: 10.0,
    };

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).expect("a valid time")
    }

    #[test]
    fn a_slice_is_what_was_asked_for_or_what_is_left() {
        let mut b = SharedBucket::full(CONFIG, at(0));
        assert_eq!(b.take(10, CONFIG, at(0)), Grant::Tokens(10));
        assert_eq!(b.take(10, CONFIG, at(0)), Grant::Tokens(10));
        // Empty: the next token is a tenth of a second away.
        assert_eq!(
            b.take(10, CONFIG, at(0)),
            Grant::Wait(Duration::from_millis(100))
        );
        // Half a second refilled five.
        assert_eq!(b.take(10, CONFIG, at(500)), Grant::Tokens(5));
    }

    #[test]
    fn the_refill_stops_at_the_bucket_size() {
        let mut b = SharedBucket::full(CONFIG, at(0));
        assert_eq!(b.take(20, CONFIG, at(0)), Grant::Tokens(20));
        b.refill(CONFIG, at(3_600_000));
        assert_eq!(b.tokens, 20.0);
    }

    #[test]
    fn a_remaining_header_lowers_the_tokens_to_what_arm_has_left() {
        let mut b = SharedBucket::full(CONFIG, at(0));
        assert!(b.lower_to(3, at(0), CONFIG, at(0)));
        assert_eq!(b.tokens, 3.0);
        // ARM having more than we think changes nothing: the bucket never rises on its word.
        assert!(!b.lower_to(15, at(0), CONFIG, at(0)));
        assert_eq!(b.tokens, 3.0);
    }

    #[test]
    fn a_remaining_header_counts_what_arm_refilled_since_the_request_was_sent() {
        let mut b = SharedBucket::full(CONFIG, at(0));
        // Sent at 0, answered "0 left"; 300 ms later ARM has had 3 more.
        assert!(b.lower_to(0, at(0), CONFIG, at(300)));
        assert!((b.tokens - 3.0).abs() < 1e-9, "{}", b.tokens);
    }

    #[test]
    fn a_429_empties_the_bucket_and_nothing_accrues_before_retry_after() {
        let mut b = SharedBucket::full(CONFIG, at(0));
        b.block(Duration::from_secs(2), CONFIG, at(0));
        assert_eq!(
            b.take(1, CONFIG, at(0)),
            Grant::Wait(Duration::from_secs(2))
        );
        assert_eq!(
            b.take(1, CONFIG, at(1_500)),
            Grant::Wait(Duration::from_millis(500))
        );
        // At Retry-After the bucket starts refilling from empty.
        assert_eq!(
            b.take(1, CONFIG, at(2_000)),
            Grant::Wait(Duration::from_millis(100))
        );
        assert_eq!(b.take(5, CONFIG, at(2_300)), Grant::Tokens(3));
    }

    #[test]
    fn a_shorter_retry_after_does_not_cut_a_longer_block() {
        let mut b = SharedBucket::full(CONFIG, at(0));
        b.block(Duration::from_secs(5), CONFIG, at(0));
        b.block(Duration::from_secs(1), CONFIG, at(100));
        assert_eq!(b.blocked_until, Some(at(5_000)));
    }

    #[test]
    fn the_document_reads_back_as_it_was_written() {
        let mut b = SharedBucket::full(CONFIG, at(0));
        b.block(Duration::from_secs(1), CONFIG, at(0));
        let json = serde_json::to_value(&b).expect("serialises");
        assert_eq!(json["tokens"], 0.0);
        let back: SharedBucket = serde_json::from_value(json).expect("parses");
        assert_eq!(back, b);
    }
}
