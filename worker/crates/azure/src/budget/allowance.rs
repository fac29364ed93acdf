//! [`WriteBudgets`]: this process's side of the write budget. Each bucket key has a local
//! allowance of tokens already taken from the [`BudgetStore`]; a write spends one, and when none
//! is left one task (the others queue behind it) takes the next slice from the store: as many
//! tokens as writes are waiting, up to [`WriteBudgets::slice`]. Tokens not spent within
//! [`LOCAL_TTL`] are dropped: a token held back while the shared bucket refills to its brim would
//! let a later burst exceed ARM's bucket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use onboarding_core::{Clock, SystemClock};

use super::{
    BudgetError, BudgetStore, Feedback, Grant, InProcessStore, WriteBudgetConfig, allowed_after,
};

/// The most tokens one slice takes from the shared bucket.
pub const MAX_SLICE: u32 = 10;

/// How long tokens taken from the shared bucket stay spendable here.
pub const LOCAL_TTL: Duration = Duration::from_secs(2);

/// The write budgets of every subscription, shared by every ARM client of one process.
#[derive(Debug)]
pub struct WriteBudgets {
    config: WriteBudgetConfig,
    store: Arc<dyn BudgetStore>,
    clock: Arc<dyn Clock>,
    allowances: Mutex<HashMap<String, Arc<Allowance>>>,
}

impl Default for WriteBudgets {
    fn default() -> Self {
        Self::new(WriteBudgetConfig::default())
    }
}

#[derive(Debug, Default)]
struct Allowance {
    local: Mutex<Local>,
    /// One refill from the store at a time.
    gate: tokio::sync::Mutex<()>,
    /// Writes waiting for a token here: the size of the next slice.
    waiting: AtomicU32,
}

#[derive(Debug, Default)]
struct Local {
    tokens: u32,
    taken_at: Option<DateTime<Utc>>,
}

impl Allowance {
    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spends a local token, if one is left and still fresh.
    fn spend(&self, now: DateTime<Utc>) -> bool {
        let mut l = self.lock();
        if l.taken_at
            .is_some_and(|t| (now - t).to_std().unwrap_or(Duration::ZERO) > LOCAL_TTL)
        {
            l.tokens = 0;
        }
        if l.tokens > 0 {
            l.tokens -= 1;
            true
        } else {
            false
        }
    }

    fn keep(&self, tokens: u32, now: DateTime<Utc>) {
        let mut l = self.lock();
        l.tokens = tokens;
        l.taken_at = Some(now);
    }
}

/// Counts a write as waiting while it is alive.
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn enter(counter: &'a AtomicU32) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WriteBudgets {
    /// Buckets in this process, on the system clock.
    pub fn new(config: WriteBudgetConfig) -> Self {
        Self::in_process(config, Arc::new(SystemClock))
    }

    /// Buckets in this process ([`InProcessStore`]).
    pub fn in_process(config: WriteBudgetConfig, clock: Arc<dyn Clock>) -> Self {
        let store = Arc::new(InProcessStore::new(clock.clone()));
        Self::shared(config, store, clock)
    }

    /// Buckets in `store`, shared with whoever else uses it.
    pub fn shared(
        config: WriteBudgetConfig,
        store: Arc<dyn BudgetStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            config,
            store,
            clock,
            allowances: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> WriteBudgetConfig {
        self.config
    }

    /// The largest slice: [`MAX_SLICE`], or a tenth of a small bucket (at least one), so that
    /// what replicas hold locally stays a small part of the bucket.
    pub fn slice(&self) -> u32 {
        (self.config.bucket_size / 10).clamp(1, MAX_SLICE)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Tokens this process holds for `key`, unspent.
    pub fn local_tokens(&self, key: &str) -> u32 {
        self.allowance(key).lock().tokens
    }

    fn allowance(&self, key: &str) -> Arc<Allowance> {
        let mut map = self.allowances.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.to_ascii_lowercase()).or_default().clone()
    }

    /// Waits for a write token of `key` (endpoint host and subscription id).
    pub async fn take(&self, key: &str) -> Result<(), BudgetError> {
        let key = key.to_ascii_lowercase();
        let allowance = self.allowance(&key);
        let _waiting = Waiting::enter(&allowance.waiting);
        let mut contended = 0u32;
        loop {
            if allowance.spend(self.clock.now()) {
                return Ok(());
            }
            let _gate = allowance.gate.lock().await;
            if allowance.spend(self.clock.now()) {
                return Ok(());
            }
            let want = allowance
                .waiting
                .load(Ordering::SeqCst)
                .clamp(1, self.slice());
            match self.store.take_slice(&key, want, self.config).await {
                Ok(Grant::Tokens(n)) => {
                    allowance.keep(n.saturating_sub(1), self.clock.now());
                    return Ok(());
                }
                Ok(Grant::Wait(wait)) => {
                    tracing::debug!(
                        budget.key = %key,
                        wait_ms = wait.as_millis() as u64,
                        "ARM write budget empty, waiting"
                    );
                    self.clock.sleep(wait.max(Duration::from_millis(1))).await;
                }
                Err(BudgetError::Contended) => {
                    // Others got there first; step aside a little longer each time.
                    contended = contended.saturating_add(1);
                    let ms = rand::random_range(1..=5 * u64::from(contended.min(20)));
                    self.clock.sleep(Duration::from_millis(ms)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Feeds what ARM said back into the bucket of `key`. Best effort: a store that cannot be
    /// written is logged, and the next answer tells again.
    pub async fn report(&self, key: &str, feedback: Feedback) {
        let key = key.to_ascii_lowercase();
        let now = self.clock.now();
        let allowance = self.allowance(&key);
        match feedback {
            Feedback::Throttled { .. } => allowance.keep(0, now),
            Feedback::Remaining { writes, sent_at } => {
                let allowed = allowed_after(writes, sent_at, self.config, now);
                {
                    let mut l = allowance.lock();
                    // `allowed` is below the bucket size, a u32.
                    l.tokens = l.tokens.min(allowed.floor() as u32);
                }
                if allowed >= f64::from(self.config.bucket_size) {
                    // ARM's bucket is full: nothing to lower.
                    return;
                }
            }
        }
        if let Err(e) = self.store.report(&key, feedback, self.config).await {
            tracing::warn!(budget.key = %key, error = %e, "cannot record ARM's throttling feedback");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_clock::ManualClock;
    use super::*;

    const KEY: &str = "management.azure.com|sub";

    fn budgets(
        bucket_size: u32,
        refill_per_sec: f64,
    ) -> (WriteBudgets, Arc<InProcessStore>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        let store = Arc::new(InProcessStore::new(clock.clone()));
        let config = WriteBudgetConfig {
            bucket_size,
            refill_per_sec,
        };
        (
            WriteBudgets::shared(config, store.clone(), clock.clone()),
            store,
            clock,
        )
    }

    fn shared_tokens(store: &InProcessStore) -> f64 {
        store.bucket(KEY).expect("the bucket exists").tokens
    }

    #[tokio::test]
    async fn a_lone_write_takes_one_token_from_the_shared_bucket() {
        let (b, store, _) = budgets(200, 10.0);
        b.take(KEY).await.unwrap();
        assert_eq!(shared_tokens(&store), 199.0);
        assert_eq!(b.local_tokens(KEY), 0);
    }

    #[tokio::test]
    async fn waiting_writes_take_one_slice_and_spend_it_locally() {
        let (b, store, _) = budgets(200, 10.0);
        let b = Arc::new(b);
        // Hold the gate so that twelve writes queue up behind it.
        let allowance = b.allowance(KEY);
        let gate = allowance.gate.lock().await;
        let writes: Vec<_> = (0..12)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.take(KEY).await })
            })
            .collect();
        while allowance.waiting.load(Ordering::SeqCst) < 12 {
            tokio::task::yield_now().await;
        }
        drop(gate);
        for w in writes {
            w.await.unwrap().unwrap();
        }
        // Twelve writes, two slices: ten, then the two still waiting.
        assert_eq!(shared_tokens(&store), 188.0);
        assert_eq!(b.local_tokens(KEY), 0);
    }

    #[tokio::test]
    async fn an_empty_bucket_makes_a_write_wait_for_the_refill() {
        let (b, _, clock) = budgets(2, 4.0);
        let start = clock.now();
        b.take(KEY).await.unwrap();
        b.take(KEY).await.unwrap();
        assert_eq!(clock.now(), start);
        b.take(KEY).await.unwrap();
        assert_eq!(
            (clock.now() - start).to_std().unwrap(),
            Duration::from_millis(250)
        );
    }

    #[tokio::test]
    async fn subscriptions_have_separate_buckets() {
        let (b, store, _) = budgets(1, 0.001);
        b.take("h|a").await.unwrap();
        b.take("H|B").await.unwrap();
        assert_eq!(store.bucket("h|a").unwrap().tokens, 0.0);
        assert_eq!(store.bucket("h|b").unwrap().tokens, 0.0);
    }

    #[tokio::test]
    async fn tokens_held_too_long_are_dropped() {
        let (b, store, clock) = budgets(200, 10.0);
        b.take(KEY).await.unwrap();
        // Nine tokens of a slice left here, then nobody writes for a while.
        b.allowance(KEY).keep(9, clock.now());
        clock.advance(LOCAL_TTL + Duration::from_millis(100));
        b.take(KEY).await.unwrap();
        assert_eq!(b.local_tokens(KEY), 0);
        // The write took a fresh token from the shared bucket, refilled to the brim meanwhile.
        assert_eq!(shared_tokens(&store), 199.0);
    }

    #[tokio::test]
    async fn a_429_drops_the_local_allowance_and_blocks_until_retry_after() {
        let (b, _, clock) = budgets(200, 10.0);
        b.take(KEY).await.unwrap();
        b.allowance(KEY).keep(5, clock.now());
        b.report(
            KEY,
            Feedback::Throttled {
                retry_after: Duration::from_secs(3),
            },
        )
        .await;
        assert_eq!(b.local_tokens(KEY), 0);
        let before = clock.now();
        b.take(KEY).await.unwrap();
        // Three seconds blocked, then a tenth of a second for the first token.
        assert_eq!(
            (clock.now() - before).to_std().unwrap(),
            Duration::from_millis(3_100)
        );
    }

    #[tokio::test]
    async fn a_remaining_count_lowers_both_the_shared_bucket_and_the_local_allowance() {
        let (b, store, clock) = budgets(200, 10.0);
        b.take(KEY).await.unwrap();
        b.allowance(KEY).keep(9, clock.now());
        b.report(
            KEY,
            Feedback::Remaining {
                writes: 3,
                sent_at: clock.now(),
            },
        )
        .await;
        assert_eq!(shared_tokens(&store), 3.0);
        assert_eq!(b.local_tokens(KEY), 3);
    }
}
