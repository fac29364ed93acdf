//! The journal conformance suite over SQLite files, and two journals on one file racing the way
//! two worker processes would.

// Test helpers may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use onboarding_journal::sqlite::SqliteJournal;
use onboarding_journal::{Journal, JournalError};
use serde_json::json;

async fn sqlite_journal() -> Option<(Arc<dyn Journal>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let journal = SqliteJournal::open(&dir.path().join("state/journal.db")).unwrap();
    Some((Arc::new(journal), dir))
}

onboarding_testkit::journal_conformance_tests!(sqlite_journal);

/// Two instances on one file, as two processes would have: separate connections, so only
/// SQLite's locking (not an in-process mutex) decides who wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_journals_on_one_file_racing_for_one_version_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let a = SqliteJournal::open(&path).unwrap();
    let b = SqliteJournal::open(&path).unwrap();
    for round in 0..10 {
        let key = format!("tenant-{round}");
        let start = a.store(&key, &json!({"round": round}), None).await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|writer| {
                let journal = if writer % 2 == 0 {
                    a.clone()
                } else {
                    b.clone()
                };
                let barrier = Arc::clone(&barrier);
                let key = key.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let result = journal
                        .store(&key, &json!({"writer": writer}), Some(start))
                        .await;
                    (writer, result)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (writer, Ok(version)) => winners.push((writer, version)),
                (_, Err(JournalError::Conflict { found, .. })) => {
                    assert_eq!(found, Some(start + 1))
                }
                (writer, Err(e)) => panic!("writer {writer}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let (winner, version) = winners[0];
        // Each instance sees the other's write.
        for journal in [&a, &b] {
            let loaded = journal.load(&key).await.unwrap().unwrap();
            assert_eq!(loaded.version, version);
            assert_eq!(loaded.value, json!({"writer": winner}));
        }
    }
    assert_eq!(
        a.writes() + b.writes(),
        20,
        "ten inserts and ten winning updates"
    );
}

#[tokio::test]
async fn name_claims_made_through_one_journal_bind_another_on_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let a = SqliteJournal::open(&path).unwrap();
    let b = SqliteJournal::open(&path).unwrap();
    let claim = onboarding_journal::NameClaim {
        kind: "node_pool".into(),
        name: "npacme".into(),
    };
    a.claim_names("acme", std::slice::from_ref(&claim))
        .await
        .unwrap();
    match b.claim_names("acme2", std::slice::from_ref(&claim)).await {
        Err(JournalError::NameTaken { owner, .. }) => assert_eq!(owner, "acme"),
        other => panic!("expected NameTaken, got {other:?}"),
    }
    b.claim_names("acme", &[claim]).await.unwrap();
}
