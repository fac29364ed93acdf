//! The journal-backed ARM write budget (`worker::arm_budget`) on one SQLite file shared by three
//! replicas, each with its own journal connection and its own local allowance, the way three
//! worker processes would run: together they never take more than the bucket plus its refill,
//! a 429 reported by one blocks all three until `Retry-After`, and ARM's remaining-writes count
//! lowers the shared bucket. Time is a manual clock: the budget's waits move it.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use onboarding_azure::{BudgetStore, Feedback, WriteBudgetConfig, WriteBudgets};
use onboarding_core::Clock;
use onboarding_journal::Journal;
use onboarding_journal::sqlite::SqliteJournal;
use onboarding_testkit::fakes::ManualClock;
use worker::arm_budget::JournalBudgetStore;

const KEY: &str = "management.azure.com|00000000-0000-0000-0000-000000000001";

struct Replica {
    budgets: Arc<WriteBudgets>,
    store: JournalBudgetStore,
}

fn replicas(path: &Path, clock: &Arc<ManualClock>, config: WriteBudgetConfig) -> Vec<Replica> {
    (0..3)
        .map(|_| {
            let journal: Arc<dyn Journal> = Arc::new(SqliteJournal::open(path).unwrap());
            let store = JournalBudgetStore::new(journal, clock.clone());
            let budgets = WriteBudgets::shared(config, Arc::new(store.clone()), clock.clone());
            Replica {
                budgets: Arc::new(budgets),
                store,
            }
        })
        .collect()
}

async fn shared_tokens(r: &Replica) -> f64 {
    r.store.bucket(KEY).await.unwrap().unwrap().tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_together_never_take_more_than_the_bucket_and_its_refill() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let config = WriteBudgetConfig {
        bucket_size: 20,
        refill_per_sec: 10.0,
    };
    let replicas = replicas(&dir.path().join("journal.db"), &clock, config);
    let start = clock.now();
    const WRITES_PER_WRITER: usize = 10;
    const WRITERS_PER_REPLICA: usize = 6;
    let taken: Arc<Mutex<Vec<DateTime<Utc>>>> = Arc::default();
    let mut tasks = Vec::new();
    for r in &replicas {
        for _ in 0..WRITERS_PER_REPLICA {
            let budgets = r.budgets.clone();
            let clock = clock.clone();
            let taken = taken.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..WRITES_PER_WRITER {
                    budgets.take(KEY).await.unwrap();
                    taken.lock().unwrap().push(clock.now());
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut taken = taken.lock().unwrap().clone();
    taken.sort();
    assert_eq!(taken.len(), 3 * WRITERS_PER_REPLICA * WRITES_PER_WRITER);
    for (i, at) in taken.iter().enumerate() {
        let elapsed = (*at - start).to_std().unwrap().as_secs_f64();
        let allowed = f64::from(config.bucket_size) + config.refill_per_sec * elapsed;
        assert!(
            (i + 1) as f64 <= allowed + 1e-9,
            "{} writes by {elapsed:.3} s, where the bucket allows {allowed:.1}",
            i + 1
        );
    }
    // Every replica drew on the one bucket: none is left over for a fourth.
    assert!(shared_tokens(&replicas[0]).await < 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_reported_by_one_replica_blocks_all_three_until_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let replicas = replicas(
        &dir.path().join("journal.db"),
        &clock,
        WriteBudgetConfig::default(),
    );
    for r in &replicas {
        r.budgets.take(KEY).await.unwrap();
    }
    let throttled_at = clock.now();
    replicas[1]
        .budgets
        .report(
            KEY,
            Feedback::Throttled {
                retry_after: Duration::from_secs(5),
            },
        )
        .await;
    let bucket = replicas[0].store.bucket(KEY).await.unwrap().unwrap();
    assert_eq!(bucket.tokens, 0.0);
    assert_eq!(
        bucket.blocked_until,
        Some(throttled_at + chrono::TimeDelta::seconds(5))
    );
    let writes: Vec<_> = replicas
        .iter()
        .map(|r| {
            let budgets = r.budgets.clone();
            let clock = clock.clone();
            tokio::spawn(async move {
                budgets.take(KEY).await.unwrap();
                clock.now()
            })
        })
        .collect();
    for w in writes {
        let wrote_at = w.await.unwrap();
        assert!(
            wrote_at >= throttled_at + chrono::TimeDelta::seconds(5),
            "a replica wrote {:?} after the 429, before its Retry-After of 5 s",
            (wrote_at - throttled_at).to_std().unwrap()
        );
    }
}

#[tokio::test]
async fn arms_remaining_count_lowers_the_bucket_every_replica_draws_on() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let replicas = replicas(
        &dir.path().join("journal.db"),
        &clock,
        WriteBudgetConfig::default(),
    );
    replicas[0].budgets.take(KEY).await.unwrap();
    assert_eq!(shared_tokens(&replicas[0]).await, 199.0);
    // x-ms-ratelimit-remaining-subscription-writes: 3, on the answer to a request sent now.
    replicas[0]
        .store
        .report(
            KEY,
            Feedback::Remaining {
                writes: 3,
                sent_at: clock.now(),
            },
            WriteBudgetConfig::default(),
        )
        .await
        .unwrap();
    assert_eq!(shared_tokens(&replicas[2]).await, 3.0);
    // Three more writes go out at once, one from each replica; the fourth waits for the refill.
    let before = clock.now();
    for r in &replicas {
        r.budgets.take(KEY).await.unwrap();
    }
    assert_eq!(clock.now(), before);
    replicas[0].budgets.take(KEY).await.unwrap();
    assert_eq!(
        (clock.now() - before).to_std().unwrap(),
        Duration::from_millis(100)
    );
}

#[tokio::test]
async fn the_buckets_live_under_their_own_journal_keys() {
    let dir = tempfile::tempdir().unwrap();
    let journal: Arc<dyn Journal> =
        Arc::new(SqliteJournal::open(&dir.path().join("journal.db")).unwrap());
    let store = JournalBudgetStore::new(journal.clone(), ManualClock::new());
    store
        .take_slice("Management.Azure.com|SUB", 1, WriteBudgetConfig::default())
        .await
        .unwrap();
    assert_eq!(
        journal.keys().await.unwrap(),
        vec!["arm-budget:management.azure.com|sub".to_string()]
    );
}
