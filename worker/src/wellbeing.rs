//! Whether the worker itself is well: the faults of its own (its credential refused, the queue
//! unreachable) with the backoff they impose, and whether the receive loop still turns. The
//! runner writes it; `/readyz` and `/healthz` read it.
//!
//! May touch: nothing but its own memory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Shared between the runner and the health server; clones see the same state.
#[derive(Debug, Clone)]
pub struct Wellbeing {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    recovered: Notify,
    first_delay: Duration,
    max_delay: Duration,
}

#[derive(Debug, Default)]
struct State {
    fault: Option<Fault>,
    receiving_since: Option<Instant>,
}

/// Where a fault showed: receiving from the queue, or doing the work (the worker's credential).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Queue,
    Work,
}

#[derive(Debug, Clone)]
struct Fault {
    source: Source,
    reason: String,
    since: Instant,
    failures: u32,
    retry_at: Instant,
}

impl Wellbeing {
    /// Backoff from `first_delay`, doubling per failure, never above `max_delay`.
    pub fn new(first_delay: Duration, max_delay: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                recovered: Notify::new(),
                first_delay,
                max_delay: max_delay.max(first_delay),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The worker hit a fault of its own: how long to wait before trying again.
    pub fn failed(&self, source: Source, reason: impl Into<String>) -> Duration {
        let now = Instant::now();
        let mut state = self.state();
        let failures = state.fault.as_ref().map_or(0, |f| f.failures) + 1;
        let exponent = (failures - 1).min(16);
        let delay = self
            .inner
            .first_delay
            .saturating_mul(1 << exponent)
            .min(self.inner.max_delay);
        // ±10% jitter, so that replicas do not retry in step.
        let delay = delay.mul_f64(0.9 + rand::random::<f64>() * 0.2);
        let since = state.fault.as_ref().map_or(now, |f| f.since);
        state.fault = Some(Fault {
            source,
            reason: reason.into(),
            since,
            failures,
            retry_at: now + delay,
        });
        delay
    }

    /// `source` works again: a fault that showed there is over.
    pub fn recovered(&self, source: Source) {
        let had_fault = {
            let mut state = self.state();
            match &state.fault {
                Some(f) if f.source == source => state.fault.take(),
                _ => None,
            }
        };
        if let Some(f) = had_fault {
            tracing::info!(
                after_s = f.since.elapsed().as_secs(),
                failures = f.failures,
                "the worker is well again"
            );
            self.inner.recovered.notify_waiters();
        }
    }

    /// Wait until a backoff in force is over, or the worker recovers.
    pub async fn backoff_over(&self) {
        let Some(retry_at) = self.state().fault.as_ref().map(|f| f.retry_at) else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(retry_at) => {}
            _ = self.inner.recovered.notified() => {}
        }
    }

    /// Why the worker is not ready, if it is not.
    pub fn fault(&self) -> Option<String> {
        let state = self.state();
        let f = state.fault.as_ref()?;
        let now = Instant::now();
        Some(format!(
            "backing off after {} failure(s) in {}s: {}; next try in {}s",
            f.failures,
            now.duration_since(f.since).as_secs(),
            f.reason,
            f.retry_at.saturating_duration_since(now).as_secs()
        ))
    }

    /// The receive loop is waiting for the queue (`true`) or back (`false`).
    pub fn receiving(&self, now_receiving: bool) {
        self.state().receiving_since = now_receiving.then(Instant::now);
    }

    /// How long the loop has been waiting for one receive, when that is longer than `limit`.
    pub fn receive_stuck(&self, limit: Duration) -> Option<Duration> {
        let since = self.state().receiving_since?;
        let waited = since.elapsed();
        (waited > limit).then_some(waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_grows_and_stops_at_its_cap() {
        let w = Wellbeing::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..8)
            .map(|_| w.failed(Source::Work, "entra down"))
            .collect();
        assert!(delays[0] < Duration::from_millis(120), "{delays:?}");
        assert!(delays[2] > delays[1] && delays[1] > delays[0], "{delays:?}");
        assert!(delays[7] <= Duration::from_millis(1100), "{delays:?}");
        assert!(delays[7] >= Duration::from_millis(900), "{delays:?}");
    }

    #[test]
    fn the_fault_says_why_until_the_worker_recovers() {
        let w = Wellbeing::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(w.fault(), None);
        w.failed(Source::Work, "cannot get a token from Entra");
        w.failed(Source::Work, "cannot get a token from Entra");
        let why = w.fault().unwrap();
        assert!(why.contains("2 failure(s)"), "{why}");
        assert!(why.contains("cannot get a token from Entra"), "{why}");
        // The queue answering says nothing about the credential.
        w.recovered(Source::Queue);
        assert!(w.fault().is_some());
        w.recovered(Source::Work);
        assert_eq!(w.fault(), None);
        // After a recovery the backoff starts small again.
        assert!(w.failed(Source::Queue, "again") < Duration::from_millis(120));
    }

    #[tokio::test]
    async fn a_recovery_ends_a_backoff_early() {
        let w = Wellbeing::new(Duration::from_secs(30), Duration::from_secs(30));
        w.failed(Source::Queue, "down");
        let waiter = {
            let w = w.clone();
            tokio::spawn(async move { w.backoff_over().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        w.recovered(Source::Queue);
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("the wait ended with the recovery")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_receive_that_does_not_return_is_reported_as_stuck() {
        let w = Wellbeing::new(Duration::from_secs(1), Duration::from_secs(1));
        w.receiving(true);
        assert_eq!(w.receive_stuck(Duration::from_secs(5)), None);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(w.receive_stuck(Duration::from_secs(5)).is_some());
        w.receiving(false);
        assert_eq!(w.receive_stuck(Duration::from_secs(5)), None);
    }
}
