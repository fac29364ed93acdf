//! The drift check's journal lease (`drift:<tenant>`), on the SQLite journal: one replica takes
//! a tenant per interval, the others skip it until the lease runs out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use onboarding_journal::sqlite::SqliteJournal;
use worker::drift::{lease_key, take_lease};

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

#[tokio::test]
async fn one_replica_takes_a_tenant_per_interval_and_another_takes_it_once_the_lease_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let journal = SqliteJournal::open(&dir.path().join("journal.db")).unwrap();
    let interval = Duration::from_secs(10);
    assert!(
        take_lease(&journal, "acme", "w1", at(0), interval)
            .await
            .unwrap()
    );
    assert!(
        !take_lease(&journal, "acme", "w2", at(1), interval)
            .await
            .unwrap(),
        "held by w1 this interval"
    );
    assert!(
        !take_lease(&journal, "acme", "w1", at(2), interval)
            .await
            .unwrap(),
        "not twice in one interval, even by its holder"
    );
    assert!(
        take_lease(&journal, "beta", "w2", at(2), interval)
            .await
            .unwrap(),
        "each tenant its own lease"
    );
    assert!(
        take_lease(&journal, "acme", "w2", at(10), interval)
            .await
            .unwrap(),
        "the next interval, whoever comes first"
    );
    let keys = onboarding_journal::Journal::keys(&journal).await.unwrap();
    assert!(keys.contains(&lease_key("acme")), "{keys:?}");
}
