//! [`JournalBudgetStore`]: ARM's write buckets in the journal, so that every replica of the worker
//! draws on one bucket per subscription (`onboarding_azure::budget` explains the budget).
//!
//! One document per bucket under `arm-budget:<ARM host>|<subscription id>` (lowercase), shaped
//! as [`SharedBucket`]: `{tokens, last_refill, blocked_until}`. Every change is a
//! compare-and-swap: load, apply, store with the version read; a conflict (another replica wrote
//! in between) loads again. Replicas meet here once per slice of tokens, not once per write.
//! Time comes from the injected clock; replicas' clocks are assumed within milliseconds of each
//! other (a clock ahead refills a little early, one behind refills nothing until it catches up).
//!
//! May touch: the journal, under keys `arm-budget:*`.

use std::sync::Arc;

use onboarding_azure::budget::{
    BudgetError, BudgetStore, Feedback, Grant, SharedBucket, WriteBudgetConfig,
};
use onboarding_core::Clock;
use onboarding_journal::{Journal, JournalError};

/// Journal keys of the buckets start with this (tenant ids never contain ':').
pub const KEY_PREFIX: &str = "arm-budget:";

/// Compare-and-swap attempts before giving way ([`BudgetError::Contended`]).
const ATTEMPTS: usize = 8;

/// The write buckets of every subscription, in the journal.
#[derive(Debug, Clone)]
pub struct JournalBudgetStore {
    journal: Arc<dyn Journal>,
    clock: Arc<dyn Clock>,
}

impl JournalBudgetStore {
    pub fn new(journal: Arc<dyn Journal>, clock: Arc<dyn Clock>) -> Self {
        Self { journal, clock }
    }

    /// The journal key of a bucket.
    pub fn journal_key(key: &str) -> String {
        format!("{KEY_PREFIX}{}", key.to_ascii_lowercase())
    }

    /// The bucket of `key` as stored, if any.
    pub async fn bucket(&self, key: &str) -> Result<Option<SharedBucket>, BudgetError> {
        Ok(self.load(&Self::journal_key(key)).await?.1)
    }

    async fn load(&self, jkey: &str) -> Result<(Option<u64>, Option<SharedBucket>), BudgetError> {
        match self.journal.load(jkey).await.map_err(unavailable)? {
            // A document that does not parse (written by a future version, or damaged) is
            // replaced by a fresh bucket; ARM's feedback corrects it.
            Some(v) => Ok((
                Some(v.version),
                serde_json::from_value::<SharedBucket>(v.value).ok(),
            )),
            None => Ok((None, None)),
        }
    }

    /// Read-modify-write of one bucket: `change` gets the bucket brought up to now and returns
    /// its answer and whether the bucket must be written.
    async fn update<T>(
        &self,
        key: &str,
        config: WriteBudgetConfig,
        mut change: impl FnMut(&mut SharedBucket, chrono::DateTime<chrono::Utc>) -> (T, bool),
    ) -> Result<T, BudgetError> {
        let jkey = Self::journal_key(key);
        for _ in 0..ATTEMPTS {
            let (version, stored) = self.load(&jkey).await?;
            let now = self.clock.now();
            let fresh = stored.is_none();
            let mut bucket = stored.unwrap_or_else(|| SharedBucket::full(config, now));
            let (answer, changed) = change(&mut bucket, now);
            if !changed && !fresh {
                return Ok(answer);
            }
            let value = serde_json::to_value(&bucket)
                .map_err(|e| BudgetError::Unavailable(format!("cannot encode the bucket: {e}")))?;
            match self.journal.store(&jkey, &value, version).await {
                Ok(_) => return Ok(answer),
                Err(JournalError::Conflict { .. }) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(BudgetError::Contended)
    }
}

fn unavailable(e: JournalError) -> BudgetError {
    BudgetError::Unavailable(e.to_string())
}

#[async_trait::async_trait]
impl BudgetStore for JournalBudgetStore {
    async fn take_slice(
        &self,
        key: &str,
        want: u32,
        config: WriteBudgetConfig,
    ) -> Result<Grant, BudgetError> {
        self.update(key, config, |bucket, now| {
            let grant = bucket.take(want, config, now);
            (grant, matches!(grant, Grant::Tokens(_)))
        })
        .await
    }

    async fn report(
        &self,
        key: &str,
        feedback: Feedback,
        config: WriteBudgetConfig,
    ) -> Result<(), BudgetError> {
        self.update(key, config, |bucket, now| {
            ((), feedback.apply(bucket, config, now))
        })
        .await
    }
}
