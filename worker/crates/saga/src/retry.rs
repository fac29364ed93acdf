//! The saga's one retry policy: how long to wait before trying again after a transient error,
//! and when to stop trying.
//!
//! Three uses, one named constructor each: a step call retried in process within the step retry
//! budget ([`RetryPolicy::step_call`]), one call of a multi-call step retried a few times inside
//! the step ([`RetryPolicy::inner_call`]), and the continuations a step waits for once its
//! in-process budget is spent ([`RetryPolicy::continuation`]). The delay doubles per retry up to a
//! cap, is spread by jitter, and respects the server's `Retry-After`.
//!
//! Pure arithmetic: touches nothing but the random number generator (and only in
//! [`RetryPolicy::delay`]; [`RetryPolicy::delay_with`] takes the random draw as an argument).

use std::time::Duration;

use onboarding_config::SagaConfig;
use onboarding_record::Phase;

/// How a delay is spread so that many tenants throttled together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Exactly the backoff.
    None,
    /// Between the backoff and twice the backoff.
    UpToDouble,
    /// Within 20 % either side of the backoff.
    TwentyPercent,
}

impl Jitter {
    /// The factor to multiply the backoff by, for a uniform draw in `[0, 1)`.
    fn factor(self, draw: f64) -> f64 {
        match self {
            Jitter::None => 1.0,
            Jitter::UpToDouble => 1.0 + draw,
            Jitter::TwentyPercent => 0.8 + draw * 0.4,
        }
    }
}

/// What a server's `Retry-After` does to the delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryAfter {
    /// Never retry sooner than the server asked.
    AtLeast,
    /// Wait what the server asked instead of the backoff, but never longer than this.
    InsteadUpTo(Duration),
}

/// When to stop retrying.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// After this many tries in all (the first one included).
    Tries(u32),
    /// When the next try would start later than this after the first one.
    Budget(Duration),
}

/// A retry schedule: `first`, doubled per retry up to `cap`, times the jitter, then adjusted for
/// `Retry-After`; and a limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub first: Duration,
    pub cap: Duration,
    pub jitter: Jitter,
    pub retry_after: RetryAfter,
    pub limit: Limit,
}

impl RetryPolicy {
    /// A step call retried in process: from `retry_initial_delay_ms`, up to 16 times that, with
    /// up to 100 % jitter, never sooner than `Retry-After`, within `step_retry_budget_ms`.
    pub fn step_call(saga: &SagaConfig) -> Self {
        let first = Duration::from_millis(saga.retry_initial_delay_ms.max(1));
        Self {
            first,
            cap: first * 16,
            jitter: Jitter::UpToDouble,
            retry_after: RetryAfter::AtLeast,
            limit: Limit::Budget(Duration::from_millis(saga.step_retry_budget_ms)),
        }
    }

    /// One call of a step made of several calls: four tries, 50 ms doubling, no jitter; a
    /// `Retry-After` replaces the backoff, and no wait is longer than two seconds. Keeps a
    /// throttled seventh call from throwing away the six that succeeded.
    pub fn inner_call() -> Self {
        let cap = Duration::from_secs(2);
        Self {
            first: Duration::from_millis(50),
            cap,
            jitter: Jitter::None,
            retry_after: RetryAfter::InsteadUpTo(cap),
            limit: Limit::Tries(4),
        }
    }

    /// The continuations a step waits for after its in-process budget: from
    /// `continuation_base_delay_ms`, doubling up to `continuation_max_delay_ms`, ±20 % jitter,
    /// never sooner than `Retry-After`, up to the attempt limit of the phase.
    pub fn continuation(saga: &SagaConfig, phase: Phase) -> Self {
        Self {
            first: Duration::from_millis(saga.continuation_base_delay_ms),
            cap: Duration::from_millis(saga.continuation_max_delay_ms),
            jitter: Jitter::TwentyPercent,
            retry_after: RetryAfter::AtLeast,
            limit: Limit::Tries(match phase {
                Phase::Forward => saga.step_attempt_limit,
                Phase::Compensating => saga.compensation_attempt_limit,
            }),
        }
    }

    /// Whether another try is allowed after `tries` tries (a [`Limit::Budget`] policy is limited
    /// by time instead: see [`RetryPolicy::budget`]).
    pub fn allows_another_after(&self, tries: u32) -> bool {
        match self.limit {
            Limit::Tries(max) => tries < max,
            Limit::Budget(_) => true,
        }
    }

    /// The time a [`Limit::Budget`] policy may spend retrying.
    pub fn budget(&self) -> Option<Duration> {
        match self.limit {
            Limit::Budget(b) => Some(b),
            Limit::Tries(_) => None,
        }
    }

    /// The wait before retry number `retry` (1 for the first retry), with a fresh random jitter.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        self.delay_with(retry, retry_after, rand::random::<f64>())
    }

    /// The wait before retry number `retry`, for a jitter draw in `[0, 1)`, in whole milliseconds.
    pub fn delay_with(&self, retry: u32, retry_after: Option<Duration>, draw: f64) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        let backoff = self
            .first
            .checked_mul(1 << doublings)
            .unwrap_or(self.cap)
            .min(self.cap);
        // Whole milliseconds: the journal's times and the test clock count in milliseconds, and a
        // wake time between two of them would never come.
        let millis = backoff.as_millis() as f64 * self.jitter.factor(draw);
        let delay = Duration::from_millis(millis as u64);
        match (self.retry_after, retry_after) {
            (_, None) => delay,
            (RetryAfter::AtLeast, Some(after)) => delay.max(after),
            (RetryAfter::InsteadUpTo(max), Some(after)) => after.min(max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn step_call_retries_double_from_the_initial_delay_up_to_sixteen_times_it() {
        let p = RetryPolicy::step_call(&SagaConfig::default());
        let delays: Vec<_> = (1..=7).map(|n| p.delay_with(n, None, 0.0)).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 1600, 1600].map(ms).to_vec()
        );
        assert_eq!(
            p.delay_with(3, None, 0.5),
            ms(600),
            "jitter adds up to 100 %"
        );
        assert_eq!(p.budget(), Some(ms(5_000)));
    }

    #[test]
    fn step_call_retries_wait_at_least_what_retry_after_asks() {
        let p = RetryPolicy::step_call(&SagaConfig::default());
        assert_eq!(p.delay_with(1, Some(ms(3_000)), 0.0), ms(3_000));
        assert_eq!(p.delay_with(5, Some(ms(10)), 0.0), ms(1_600));
    }

    #[test]
    fn inner_calls_try_four_times_and_never_wait_over_two_seconds() {
        let p = RetryPolicy::inner_call();
        let delays: Vec<_> = (1..=3).map(|n| p.delay_with(n, None, 0.9)).collect();
        assert_eq!(delays, [50, 100, 200].map(ms).to_vec());
        assert_eq!(p.delay_with(1, Some(ms(30_000)), 0.0), ms(2_000));
        assert_eq!(
            p.delay_with(3, Some(ms(10)), 0.0),
            ms(10),
            "Retry-After replaces"
        );
        assert!(p.allows_another_after(3));
        assert!(!p.allows_another_after(4));
    }

    #[test]
    fn continuations_grow_to_the_cap_within_twenty_percent() {
        let saga = SagaConfig::default();
        let p = RetryPolicy::continuation(&saga, Phase::Forward);
        assert_eq!(p.delay_with(1, None, 0.5), ms(2_000));
        assert_eq!(p.delay_with(3, None, 0.5), ms(8_000));
        assert_eq!(p.delay_with(20, None, 0.5), ms(120_000));
        assert_eq!(p.delay_with(1, None, 0.0), ms(1_600));
        assert!(p.delay_with(1, None, 0.999_999) < ms(2_400));
        assert_eq!(p.delay_with(1, Some(ms(9_000)), 0.5), ms(9_000));
    }

    #[test]
    fn continuations_stop_at_the_attempt_limit_of_their_phase() {
        let saga = SagaConfig {
            step_attempt_limit: 3,
            compensation_attempt_limit: 5,
            ..SagaConfig::default()
        };
        let forward = RetryPolicy::continuation(&saga, Phase::Forward);
        assert!(forward.allows_another_after(2));
        assert!(!forward.allows_another_after(3));
        let undo = RetryPolicy::continuation(&saga, Phase::Compensating);
        assert!(undo.allows_another_after(4));
        assert!(!undo.allows_another_after(5));
    }

    #[test]
    fn delays_are_whole_milliseconds() {
        let p = RetryPolicy::step_call(&SagaConfig {
            retry_initial_delay_ms: 3,
            ..SagaConfig::default()
        });
        assert_eq!(p.delay_with(1, None, 0.3), ms(3));
        assert_eq!(p.delay_with(2, None, 0.3), ms(7));
    }

    #[test]
    fn a_huge_retry_number_stays_at_the_cap() {
        let p = RetryPolicy::continuation(&SagaConfig::default(), Phase::Forward);
        assert_eq!(p.delay_with(u32::MAX, None, 0.5), ms(120_000));
    }
}
