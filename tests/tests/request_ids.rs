//! Request ids through the real binaries: an id names one request of one tenant with one body
//! forever. The producer refuses a reused id before sending; a message that reuses one anyway
//! (raw bytes, another producer) is dead-lettered by the worker and provisions nothing; and
//! `send --wait` for a request that already finished answers from the journal at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::{ProcessHarness, Settings};
use onboarding_contract::events::{self, EventData};
use onboarding_contract::{Command, OnboardTenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_reused_for_another_tenant_is_refused_by_the_producer_and_by_the_worker() {
    let h = ProcessHarness::start(Settings::default()).await;
    h.spawn_worker();
    let first = h
        .request(
            &["send", "--tenant", "acme", "--request-id", "shared-1"],
            "shared-1",
        )
        .await;
    assert_eq!(first.ty, events::ONBOARDED, "{first:?}");

    let out = h
        .producer(
            &["send", "--tenant", "beta", "--request-id", "shared-1"],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(out.code, Some(2), "{out:?}");
    // The harness runs the producer with --json: the failure is a document on stdout.
    let error = out.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("nothing was sent"), "{out:?}");
    assert!(error.contains("tenant acme"), "{out:?}");

    // The same reuse as raw bytes, past the producer's check: the worker refuses it.
    let body = Command::Onboard(OnboardTenant::new("shared-1", "beta")).to_json();
    let file = h.dir.path().join("beta.json");
    std::fs::write(&file, body).unwrap();
    let sent = h
        .producer(
            &["send", "--raw", file.to_str().unwrap()],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(sent.code, Some(0), "{sent:?}");
    let message_id = sent.json()["messageId"].as_str().unwrap().to_string();
    let rejected = h
        .wait_for_rejection(&message_id, Duration::from_secs(60))
        .await;
    let EventData::Rejected(r) = &rejected.data else {
        panic!("{rejected:?}")
    };
    assert_eq!(r.reason, "RequestIdReused", "{r:?}");
    assert_ne!(
        rejected.id, first.id,
        "its event never shares an id with acme's"
    );
    let dead = h
        .wait_for_dead_letter(&message_id, Duration::from_secs(10))
        .await;
    let letter = dead
        .iter()
        .find(|m| m.message_id == message_id)
        .expect("dead-lettered");
    assert_eq!(
        letter.dead_letter_reason.as_deref(),
        Some("RequestIdReused")
    );
    assert!(
        letter
            .dead_letter_description
            .as_deref()
            .unwrap_or_default()
            .contains("tenant acme"),
        "{letter:?}"
    );
    assert!(h.record("beta").await.is_none(), "nothing started for beta");
    assert!(
        !h.kube_objects().iter().any(|o| o.contains("tenant-beta")),
        "{:?}",
        h.kube_objects()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_for_a_request_that_already_finished_answers_from_the_journal() {
    let h = ProcessHarness::start(Settings::default()).await;
    h.spawn_worker();
    let args = ["send", "--tenant", "acme", "--request-id", "on-1", "--wait"];
    let first = h.producer(&args, Duration::from_secs(120)).await;
    assert_eq!(first.code, Some(0), "{first:?}");

    // Inside the queue's duplicate-detection window: the queue drops the resend, and the
    // producer must not wait for events that will never come.
    let again = h
        .producer(
            &[&args[..], &["--timeout", "60"]].concat(),
            Duration::from_secs(50),
        )
        .await;
    assert_eq!(again.code, Some(0), "{again:?}");
    let outcome = again.json();
    assert_eq!(outcome["type"], events::ONBOARDED, "{again:?}");
    assert_eq!(outcome, first.json(), "the very same outcome event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_request_replayed_after_sixty_updates_is_refused_and_changes_nothing() {
    let h = ProcessHarness::start(Settings::default()).await;
    h.spawn_worker();
    let send = |id: String, replicas: &'static str| {
        let h = &h;
        async move {
            let args = [
                "send",
                "--tenant",
                "acme",
                "--request-id",
                &id,
                "--workload",
                replicas,
            ];
            let out = h.producer(&args, Duration::from_secs(30)).await;
            assert_eq!(out.code, Some(0), "{out:?}");
        }
    };
    send("u-0".into(), "1").await;
    h.wait_for_outcomes(&["u-0".to_string()], Duration::from_secs(60))
        .await;
    let updates: Vec<String> = (1..=60).map(|i| format!("u-{i}")).collect();
    for id in &updates {
        send(id.clone(), "2").await;
    }
    let outcomes = h
        .wait_for_outcomes(&updates, Duration::from_secs(300))
        .await;
    assert!(
        outcomes.values().all(|e| e.ty == events::ONBOARDED),
        "{outcomes:?}"
    );
    let (version, record) = h.record("acme").await.unwrap();
    assert!(
        record.finished_event("u-0").is_none(),
        "the record forgot u-0"
    );

    // u-0 again, as `dlq replay --all` after an incident would: a new MessageId, same body.
    let body = onboarding_testkit::fixtures::OnboardBuilder::tenant("acme")
        .request("u-0")
        .replicas(1)
        .build()
        .to_json();
    let file = h.dir.path().join("u-0.json");
    std::fs::write(&file, body).unwrap();
    let sent = h
        .producer(
            &["send", "--raw", file.to_str().unwrap()],
            Duration::from_secs(30),
        )
        .await;
    let message_id = sent.json()["messageId"].as_str().unwrap().to_string();
    let rejected = h
        .wait_for_rejection(&message_id, Duration::from_secs(60))
        .await;
    let EventData::Rejected(r) = &rejected.data else {
        panic!("{rejected:?}")
    };
    assert_eq!(r.reason, "Superseded", "{r:?}");
    assert!(r.errors[0].message.contains("u-60"), "{r:?}");
    assert_eq!(
        h.record("acme").await.unwrap().0,
        version,
        "the tenant's record is untouched"
    );
    assert_eq!(
        h.events_of("u-0")
            .await
            .iter()
            .filter(|e| e.is_terminal())
            .count(),
        1,
        "u-0's old outcome is not published again"
    );
}
