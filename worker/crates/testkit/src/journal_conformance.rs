//! Journal conformance suite: the properties every [`Journal`] implementation must have, written
//! once and run against each (SQLite, Azure Table on Azurite, Azure Table live).
//!
//! Each property is a `pub async fn` taking the journal under test; it panics, like a test, when
//! the property does not hold. Every property uses keys and tenant ids made from a fresh UUID, so
//! the suite can run in parallel against one shared store (a live table) without interference.
//! [`journal_conformance_tests!`](crate::journal_conformance_tests) expands to one `#[tokio::test]`
//! per property.

use std::sync::Arc;

use serde_json::json;

use onboarding_journal::{Journal, JournalError, NameClaim};

/// How many writers race in [`of_concurrent_writers_at_one_version_exactly_one_wins`].
pub const CONCURRENT_WRITERS: usize = 16;

/// The size of the value in [`a_value_of_200_kib_round_trips`].
pub const LARGE_VALUE_BYTES: usize = 200 * 1024;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

fn ok<T>(result: Result<T, JournalError>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

fn expect_conflict<T: std::fmt::Debug>(
    result: Result<T, JournalError>,
    key: &str,
    want_expected: Option<u64>,
    want_found: Option<u64>,
) {
    match result {
        Err(JournalError::Conflict {
            key: k,
            expected,
            found,
        }) => {
            assert_eq!(k, key, "the conflict names the key");
            assert_eq!(
                expected, want_expected,
                "the conflict reports the expected version"
            );
            assert_eq!(found, want_found, "the conflict reports the stored version");
        }
        other => panic!("expected a Conflict on {key}, got {other:?}"),
    }
}

/// A JSON document of about `bytes` bytes with varied content (not one repeated character), the
/// shape a saga record grows into: many steps with outputs.
pub fn large_value(bytes: usize) -> serde_json::Value {
    let mut steps = Vec::new();
    let mut size = 0;
    let mut i = 0u64;
    while size < bytes {
        let step = json!({
            "step": format!("step-{i}"),
            "state": if i.is_multiple_of(3) { "done" } else { "pending" },
            "output": format!("/subscriptions/{}/resourceGroups/rg-{i}/providers/X/y-{}", uuid::Uuid::new_v4(), i * 7919),
            "note": "ünïcødé ✓ and \"quotes\" and \\ backslashes",
            "attempt": i,
        });
        size += step.to_string().len() + 1;
        steps.push(step);
        i += 1;
    }
    json!({ "tenant": "large", "steps": steps })
}

pub async fn load_of_a_missing_key_is_none(journal: Arc<dyn Journal>) {
    let key = unique("missing");
    assert_eq!(ok(journal.load(&key).await, "load of a missing key"), None);
}

pub async fn an_inserted_value_loads_back_with_its_version(journal: Arc<dyn Journal>) {
    let key = unique("insert");
    let value =
        json!({"tenant": key, "steps": {"namespace": "done"}, "n": 1.5, "list": [1, null, true]});
    let version = ok(journal.store(&key, &value, None).await, "insert");
    let loaded = ok(journal.load(&key).await, "load").expect("the inserted record is there");
    assert_eq!(loaded.version, version);
    assert_eq!(loaded.value, value);
}

pub async fn an_update_with_the_current_version_succeeds_and_bumps_the_version(
    journal: Arc<dyn Journal>,
) {
    let key = unique("update");
    let v1 = ok(journal.store(&key, &json!({"n": 1}), None).await, "insert");
    let v2 = ok(
        journal.store(&key, &json!({"n": 2}), Some(v1)).await,
        "update",
    );
    assert!(v2 > v1, "the version grows: {v1} then {v2}");
    let v3 = ok(
        journal.store(&key, &json!({"n": 3}), Some(v2)).await,
        "second update",
    );
    assert!(v3 > v2, "the version grows: {v2} then {v3}");
    let loaded = ok(journal.load(&key).await, "load").expect("record present");
    assert_eq!(loaded.version, v3);
    assert_eq!(loaded.value, json!({"n": 3}));
}

pub async fn a_stale_version_is_a_conflict_and_leaves_the_value_unchanged(
    journal: Arc<dyn Journal>,
) {
    let key = unique("stale");
    let v1 = ok(journal.store(&key, &json!({"n": 1}), None).await, "insert");
    let v2 = ok(
        journal.store(&key, &json!({"n": 2}), Some(v1)).await,
        "update",
    );
    expect_conflict(
        journal.store(&key, &json!({"n": "stale"}), Some(v1)).await,
        &key,
        Some(v1),
        Some(v2),
    );
    let loaded = ok(journal.load(&key).await, "load").expect("record present");
    assert_eq!(loaded.version, v2);
    assert_eq!(loaded.value, json!({"n": 2}));
}

pub async fn inserting_a_key_that_exists_is_a_conflict(journal: Arc<dyn Journal>) {
    let key = unique("present");
    let v1 = ok(
        journal.store(&key, &json!({"first": true}), None).await,
        "insert",
    );
    expect_conflict(
        journal.store(&key, &json!({"second": true}), None).await,
        &key,
        None,
        Some(v1),
    );
    let loaded = ok(journal.load(&key).await, "load").expect("record present");
    assert_eq!(loaded.value, json!({"first": true}));
}

pub async fn an_update_of_a_missing_key_is_a_conflict(journal: Arc<dyn Journal>) {
    let key = unique("absent");
    expect_conflict(
        journal.store(&key, &json!({"n": 1}), Some(1)).await,
        &key,
        Some(1),
        None,
    );
    assert_eq!(ok(journal.load(&key).await, "load"), None);
}

pub async fn of_concurrent_writers_at_one_version_exactly_one_wins(journal: Arc<dyn Journal>) {
    let key = unique("race");
    let start = ok(
        journal.store(&key, &json!({"writer": null}), None).await,
        "insert",
    );
    let barrier = Arc::new(tokio::sync::Barrier::new(CONCURRENT_WRITERS));
    let tasks: Vec<_> = (0..CONCURRENT_WRITERS)
        .map(|writer| {
            let journal = Arc::clone(&journal);
            let barrier = Arc::clone(&barrier);
            let key = key.clone();
            tokio::spawn(async move {
                // Every writer has read version `start`; they all try to move it on at once.
                barrier.wait().await;
                let result = journal
                    .store(&key, &json!({ "writer": writer }), Some(start))
                    .await;
                (writer, result)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (writer, result) = task.await.expect("writer task finished");
        match result {
            Ok(version) => winners.push((writer, version)),
            Err(JournalError::Conflict {
                expected, found, ..
            }) => {
                assert_eq!(expected, Some(start));
                assert_ne!(found, Some(start), "a loser saw the version move on");
            }
            Err(e) => panic!("writer {writer} failed with something other than a conflict: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins: {winners:?}");
    let (winner, version) = winners[0];
    let loaded = ok(journal.load(&key).await, "load").expect("record present");
    assert_eq!(loaded.version, version);
    assert_eq!(loaded.value, json!({ "writer": winner }));
}

pub async fn keys_are_listed_sorted(journal: Arc<dyn Journal>) {
    let prefix = unique("keys");
    // Out of order on purpose, with characters whose byte order differs from "natural" order.
    let names = [
        "tenant-9",
        "tenant-10",
        "Tenant-b",
        "tenant-a",
        "a/b c",
        "z",
    ];
    for name in names {
        let key = format!("{prefix}/{name}");
        ok(
            journal.store(&key, &json!({"k": name}), None).await,
            "insert",
        );
    }
    let all = ok(journal.keys().await, "keys");
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "keys are strictly sorted: {all:?}"
    );
    let ours: Vec<String> = all
        .into_iter()
        .filter(|k| k.starts_with(&format!("{prefix}/")))
        .collect();
    let mut expected: Vec<String> = names.iter().map(|n| format!("{prefix}/{n}")).collect();
    expected.sort();
    assert_eq!(ours, expected);
}

fn claims(tag: &str) -> Vec<NameClaim> {
    vec![
        NameClaim {
            kind: "node_pool".into(),
            name: format!("np{tag}"),
        },
        NameClaim {
            kind: "namespace".into(),
            name: format!("ns-{tag}"),
        },
        NameClaim {
            kind: "identity".into(),
            name: format!("id-{tag}"),
        },
    ]
}

pub async fn claiming_names_again_for_their_owner_succeeds(journal: Arc<dyn Journal>) {
    let tenant = unique("owner");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let batch = claims(&tag);
    ok(journal.claim_names(&tenant, &batch).await, "first claim");
    ok(
        journal.claim_names(&tenant, &batch).await,
        "the same claim again",
    );
    // A batch mixing names the tenant owns with new ones also succeeds.
    let mut more = batch.clone();
    more.push(NameClaim {
        kind: "container".into(),
        name: format!("c-{tag}"),
    });
    ok(journal.claim_names(&tenant, &more).await, "a larger batch");
    ok(journal.claim_names(&tenant, &[]).await, "an empty batch");
    // And the names are really held: another tenant is refused each of them.
    let other = unique("other");
    for claim in &more {
        assert!(
            matches!(
                journal
                    .claim_names(&other, std::slice::from_ref(claim))
                    .await,
                Err(JournalError::NameTaken { .. })
            ),
            "{claim:?} is held by {tenant}"
        );
    }
}

pub async fn released_names_are_free_for_others_and_only_the_owner_can_release(
    journal: Arc<dyn Journal>,
) {
    let owner = unique("purged");
    let other = unique("next");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let batch = claims(&tag);
    ok(
        journal.claim_names(&owner, &batch).await,
        "the owner's claim",
    );
    // Another tenant cannot release what it does not own.
    ok(
        journal.release_names(&other, &batch).await,
        "a release by a non-owner",
    );
    assert!(
        matches!(
            journal.claim_names(&other, &batch).await,
            Err(JournalError::NameTaken { .. })
        ),
        "still held by {owner}"
    );
    ok(journal.release_names(&owner, &batch).await, "the release");
    ok(
        journal.release_names(&owner, &batch).await,
        "releasing again",
    );
    ok(
        journal.claim_names(&other, &batch).await,
        "claiming released names",
    );
    assert!(
        matches!(
            journal.claim_names(&owner, &batch).await,
            Err(JournalError::NameTaken { .. })
        ),
        "now held by {other}"
    );
}

pub async fn a_name_owned_by_another_tenant_is_refused_and_nothing_of_the_batch_is_claimed(
    journal: Arc<dyn Journal>,
) {
    let owner = unique("first");
    let intruder = unique("second");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let taken = NameClaim {
        kind: "node_pool".into(),
        name: format!("np{tag}"),
    };
    ok(
        journal
            .claim_names(&owner, std::slice::from_ref(&taken))
            .await,
        "the owner's claim",
    );
    let fresh = vec![
        NameClaim {
            kind: "namespace".into(),
            name: format!("ns-{tag}"),
        },
        NameClaim {
            kind: "identity".into(),
            name: format!("id-{tag}"),
        },
    ];
    let mut batch = fresh.clone();
    batch.insert(1, taken.clone());
    match journal.claim_names(&intruder, &batch).await {
        Err(JournalError::NameTaken {
            kind,
            name,
            tenant,
            owner: o,
        }) => {
            assert_eq!(kind, taken.kind);
            assert_eq!(name, taken.name);
            assert_eq!(tenant, intruder);
            assert_eq!(o, owner);
        }
        other => panic!("expected NameTaken, got {other:?}"),
    }
    // None of the batch's free names went to the intruder: a third tenant can claim them all.
    let third = unique("third");
    ok(
        journal.claim_names(&third, &fresh).await,
        "claiming the names the refused batch did not take",
    );
}

pub async fn of_tenants_racing_for_one_name_exactly_one_gets_it(journal: Arc<dyn Journal>) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let contested = NameClaim {
        kind: "node_pool".into(),
        name: format!("np{tag}"),
    };
    let tenants: Vec<String> = (0..8).map(|i| format!("racer{i}-{tag}")).collect();
    let own = |tenant: &str| NameClaim {
        kind: "namespace".into(),
        name: format!("ns-{tenant}"),
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(tenants.len()));
    let tasks: Vec<_> = tenants
        .iter()
        .map(|tenant| {
            let journal = Arc::clone(&journal);
            let barrier = Arc::clone(&barrier);
            let batch = vec![own(tenant), contested.clone()];
            let tenant = tenant.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let result = journal.claim_names(&tenant, &batch).await;
                (tenant, result)
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("claiming task finished"));
    }
    let winners: Vec<&String> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one tenant gets the name: {results:?}"
    );
    let winner = winners[0].clone();
    for (tenant, result) in &results {
        match result {
            Ok(()) => {}
            Err(JournalError::NameTaken { owner, name, .. }) => {
                assert_eq!(owner, &winner);
                assert_eq!(name, &contested.name);
                // All or nothing: the loser's own name was not claimed either.
                ok(
                    journal
                        .claim_names(&format!("later-{tenant}"), &[own(tenant)])
                        .await,
                    "claiming a refused batch's free name",
                );
            }
            Err(e) => panic!("{tenant} failed with something other than NameTaken: {e}"),
        }
    }
}

pub async fn one_tenant_claiming_the_same_names_concurrently_succeeds_every_time(
    journal: Arc<dyn Journal>,
) {
    let tenant = unique("eager");
    let batch = claims(&uuid::Uuid::new_v4().simple().to_string());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let journal = Arc::clone(&journal);
            let batch = batch.clone();
            let tenant = tenant.clone();
            tokio::spawn(async move { journal.claim_names(&tenant, &batch).await })
        })
        .collect();
    for task in tasks {
        ok(
            task.await.expect("claiming task finished"),
            "a concurrent claim of own names",
        );
    }
}

pub async fn a_value_of_200_kib_round_trips(journal: Arc<dyn Journal>) {
    let key = unique("large");
    let value = large_value(LARGE_VALUE_BYTES);
    assert!(value.to_string().len() >= LARGE_VALUE_BYTES);
    let v1 = ok(
        journal.store(&key, &value, None).await,
        "insert of a large value",
    );
    let loaded = ok(journal.load(&key).await, "load").expect("record present");
    assert_eq!(loaded.version, v1);
    assert_eq!(loaded.value, value);
    let bigger = large_value(LARGE_VALUE_BYTES + 10 * 1024);
    let v2 = ok(
        journal.store(&key, &bigger, Some(v1)).await,
        "update of a large value",
    );
    let loaded = ok(journal.load(&key).await, "load").expect("record present");
    assert_eq!(loaded.version, v2);
    assert_eq!(loaded.value, bigger);
}

pub async fn a_large_value_replaced_by_a_small_one_loads_the_small_one(journal: Arc<dyn Journal>) {
    let key = unique("shrink");
    let v1 = ok(
        journal
            .store(&key, &large_value(LARGE_VALUE_BYTES), None)
            .await,
        "insert",
    );
    let small = json!({"small": true});
    let v2 = ok(journal.store(&key, &small, Some(v1)).await, "shrink");
    let loaded = ok(journal.load(&key).await, "load").expect("record present");
    assert_eq!(loaded.version, v2);
    assert_eq!(loaded.value, small);
}

pub async fn ping_succeeds(journal: Arc<dyn Journal>) {
    ok(journal.ping().await, "ping");
}

/// Expands to one `#[tokio::test]` per conformance property.
///
/// `$factory` is an async fn (or closure returning a future) giving
/// `Option<(Arc<dyn Journal>, Guard)>`: the journal under test and anything that must live as long
/// as the test (a temporary directory); `None` skips the test (the factory prints why). Invoke it
/// inside a module of its own when a test file runs the suite more than once.
#[macro_export]
macro_rules! journal_conformance_tests {
    ($factory:expr) => {
        $crate::journal_conformance_tests!(@tests $factory;
            load_of_a_missing_key_is_none,
            an_inserted_value_loads_back_with_its_version,
            an_update_with_the_current_version_succeeds_and_bumps_the_version,
            a_stale_version_is_a_conflict_and_leaves_the_value_unchanged,
            inserting_a_key_that_exists_is_a_conflict,
            an_update_of_a_missing_key_is_a_conflict,
            of_concurrent_writers_at_one_version_exactly_one_wins,
            keys_are_listed_sorted,
            claiming_names_again_for_their_owner_succeeds,
            released_names_are_free_for_others_and_only_the_owner_can_release,
            a_name_owned_by_another_tenant_is_refused_and_nothing_of_the_batch_is_claimed,
            of_tenants_racing_for_one_name_exactly_one_gets_it,
            one_tenant_claiming_the_same_names_concurrently_succeeds_every_time,
            a_value_of_200_kib_round_trips,
            a_large_value_replaced_by_a_small_one_loads_the_small_one,
            ping_succeeds,
        );
    };
    (@tests $factory:expr; $($property:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $property() {
                let Some((journal, _guard)) = ($factory)().await else {
                    return;
                };
                $crate::journal_conformance::$property(journal).await;
            }
        )+
    };
}
