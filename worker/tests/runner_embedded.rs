//! The runner on the embedded default: real SQLite queue, topic and journal files, with the
//! cloud played by the test double. Proves the message flow of DESIGN.md end to end: bad input
//! dead-lettered with a reason and an event, continuations, exactly one outcome per request
//! across worker restarts on the same files, duplicates, and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use onboarding_contract::CloudEvent;
use onboarding_contract::events;
use onboarding_core::SystemClock;
use onboarding_journal::Journal;
use onboarding_journal::sqlite::SqliteJournal;
use onboarding_testkit::engine::test_config;
use onboarding_testkit::fakes::{CloudFaults, FakeCloud};
use onboarding_testkit::fixtures::{MessageBuilder, OnboardBuilder};
use onboarding_transport::sqlite::{SqliteTransport, SqliteTransportOptions};
use onboarding_transport::{OutgoingMessage, Queue, Subscription, Topic};
use worker::context::Context;
use worker::runner::Runner;

/// 5 cloud resources (node pool, identity, federated credential, container, role assignment) +
/// namespace, service account, workload and 6 guard-rail objects (quota, limit range, three
/// network policies, the admin RoleBinding; no Role since admins bind a shipped ClusterRole).
const OBJECTS_PER_TENANT: usize = 14;

struct Files {
    dir: tempfile::TempDir,
    cloud: Arc<FakeCloud>,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            cloud: FakeCloud::new(),
        }
    }
    fn transport(&self) -> Arc<SqliteTransport> {
        let options = SqliteTransportOptions {
            lock_duration: Duration::from_secs(3),
            ..SqliteTransportOptions::default()
        };
        Arc::new(
            SqliteTransport::open(
                &self.dir.path().join("queue.db"),
                options,
                Arc::new(SystemClock),
            )
            .unwrap(),
        )
    }
    fn journal(&self) -> Arc<SqliteJournal> {
        Arc::new(SqliteJournal::open(&self.dir.path().join("journal.db")).unwrap())
    }
    /// A fresh worker process, as far as the files are concerned.
    fn runner(&self, id: &str) -> Runner {
        self.runner_with(id, |_| {})
    }
    fn runner_with(&self, id: &str, tune: impl FnOnce(&mut worker::config::Config)) -> Runner {
        let mut cfg = test_config();
        cfg.saga.message_budget_ms = 1_500;
        cfg.saga.step_retry_budget_ms = 500;
        cfg.saga.continuation_base_delay_ms = 100;
        cfg.worker.receive_wait_ms = 50;
        cfg.worker.shutdown_grace_ms = 3_000;
        tune(&mut cfg);
        let t = self.transport();
        Runner::new(Context {
            config: Arc::new(cfg),
            queue: t.clone(),
            topic: t,
            journal: self.journal(),
            azure: self.cloud.clone(),
            kube: self.cloud.clone(),
            clock: Arc::new(SystemClock),
            worker_id: id.into(),
            metrics: Default::default(),
        })
    }
}

/// Run a worker until `done` says the events seen so far are enough (or 90 s pass). The
/// slowest use, four onboardings through killed workers, takes about 10 s on an idle machine;
/// the limit only bounds a failing run.
async fn run_until(
    runner: &Runner,
    sub: &mut Box<dyn Subscription>,
    seen: &mut Vec<CloudEvent>,
    done: impl Fn(&[CloudEvent]) -> bool,
) {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let r = runner.clone();
    let task = tokio::spawn(async move { r.run(rx).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !done(seen) && tokio::time::Instant::now() < deadline {
        if let Some(m) = sub.next(Duration::from_millis(100)).await.unwrap() {
            seen.push(serde_json::from_slice(&m.body).unwrap());
        }
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    assert!(
        done(seen),
        "timed out; events so far: {:?}",
        seen.iter().map(|e| &e.ty).collect::<Vec<_>>()
    );
}

fn terminal_ids(seen: &[CloudEvent], request_id: &str) -> BTreeSet<String> {
    seen.iter()
        .filter(|e| e.is_terminal() && e.request_id() == Some(request_id))
        .map(|e| e.id.clone())
        .collect()
}

async fn queue_is_empty(files: &Files) -> bool {
    let s = files.transport().stats().await.unwrap();
    s.active + s.scheduled + s.locked == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onboarding_through_the_embedded_queue_ends_with_one_event_and_an_empty_queue() {
    let f = Files::new();
    let t = f.transport();
    let mut sub = t.subscribe("test").await.unwrap();
    let cmd = OnboardBuilder::tenant("acme")
        .request("req-1")
        .with_workload()
        .with_admin_group()
        .build();
    t.send(MessageBuilder::command(&cmd).build()).await.unwrap();
    let mut seen = Vec::new();
    run_until(&f.runner("w1"), &mut sub, &mut seen, |s| {
        !terminal_ids(s, "req-1").is_empty()
    })
    .await;
    let outcome = seen.iter().find(|e| e.is_terminal()).unwrap();
    assert_eq!(outcome.ty, events::ONBOARDED);
    // Progress events came before the outcome, one per step.
    let steps = seen
        .iter()
        .filter(|e| e.ty == events::STEP_COMPLETED)
        .count();
    assert_eq!(steps, 9);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        queue_is_empty(&f).await,
        "{:?}",
        f.transport().stats().await
    );
    let rec = f.journal().load("acme").await.unwrap().unwrap();
    assert_eq!(rec.value["state"], "Onboarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_dead_lettered_with_a_reason_and_an_event_and_the_worker_keeps_serving() {
    let f = Files::new();
    let t = f.transport();
    let mut sub = t.subscribe("test").await.unwrap();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("MalformedJson", b"{not json".to_vec()),
        ("UnsupportedSchemaVersion", br#"{"schemaVersion":"9.9","kind":"OnboardTenant"}"#.to_vec()),
        ("UnknownCommandKind", br#"{"schemaVersion":"1.0","kind":"DropTables"}"#.to_vec()),
        ("SchemaViolation", br#"{"schemaVersion":"1.0","kind":"OnboardTenant","requestId":"r","tenantId":"ACME/../x","nodePool":{"vmSize":"Standard_D4s_v5","count":"two"}}"#.to_vec()),
        ("UnknownTarget", br#"{"schemaVersion":"1.0","kind":"OffboardTenant","requestId":"r2","tenantId":"acme","target":"someone-else"}"#.to_vec()),
        ("MessageTooLarge", vec![b' '; 70 * 1024]),
    ];
    for (i, (_, body)) in bad.iter().enumerate() {
        t.send(OutgoingMessage {
            message_id: format!("bad-{i}"),
            session_id: Some(format!("s{i}")),
            body: body.clone(),
            ..OutgoingMessage::default()
        })
        .await
        .unwrap();
    }
    let good = OnboardBuilder::tenant("good")
        .request("req-ok")
        .with_workload()
        .with_admin_group()
        .build();
    t.send(MessageBuilder::command(&good).build())
        .await
        .unwrap();
    let mut seen = Vec::new();
    run_until(&f.runner("w1"), &mut sub, &mut seen, |s| {
        !terminal_ids(s, "req-ok").is_empty()
            && s.iter()
                .filter(|e| e.ty == events::REQUEST_REJECTED)
                .count()
                == 6
    })
    .await;
    let dead = f.transport().peek_dead_letters(0, 100).await.unwrap();
    let mut reasons: Vec<_> = dead
        .iter()
        .map(|m| {
            (
                m.message_id.clone(),
                m.dead_letter_reason.clone().unwrap_or_default(),
            )
        })
        .collect();
    reasons.sort();
    for (i, (want, _)) in bad.iter().enumerate() {
        assert_eq!(reasons[i], (format!("bad-{i}"), want.to_string()));
    }
    let schema = dead.iter().find(|m| m.message_id == "bad-3").unwrap();
    let description = schema.dead_letter_description.clone().unwrap();
    assert!(
        description.contains("/tenantId") && description.contains("/nodePool/count"),
        "{description}"
    );
    // Nothing was provisioned for any of them, only for the good one.
    let inventory = f.cloud.inventory();
    assert_eq!(inventory.len(), OBJECTS_PER_TENANT, "{inventory:?}");
    assert!(
        inventory
            .iter()
            .filter(|k| !k.starts_with("role_assignment/"))
            .all(|k| k.contains("good")),
        "{inventory:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_mid_saga_and_restarted_on_the_same_files_converge_with_one_outcome() {
    let f = Files::new();
    let t = f.transport();
    let mut sub = t.subscribe("test").await.unwrap();
    let tenants: Vec<String> = (0..4).map(|i| format!("tenant-{i}")).collect();
    for (i, tenant) in tenants.iter().enumerate() {
        t.send(
            OnboardBuilder::tenant(tenant)
                .request(format!("req-{i}"))
                .with_workload()
                .with_admin_group()
                .message()
                .build(),
        )
        .await
        .unwrap();
    }
    // Three workers in a row are killed (their task aborted, like SIGKILL: no settling) after a
    // short while; the fourth is left to finish. The four wait in one cluster's line; looking
    // at it every 200 ms rather than 5 s keeps more messages in flight when a kill lands.
    let worker = |id: String| f.runner_with(&id, |c| c.saga.cluster_turn_poll_ms = 200);
    for (i, life_ms) in [150u64, 400, 700].into_iter().enumerate() {
        let runner = worker(format!("doomed-{i}"));
        let (_stop, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move { runner.run(rx).await });
        tokio::time::sleep(Duration::from_millis(life_ms)).await;
        task.abort();
        let _ = task.await;
    }
    let mut seen = Vec::new();
    let all_done =
        |s: &[CloudEvent]| (0..4).all(|i| !terminal_ids(s, &format!("req-{i}")).is_empty());
    run_until(&worker("survivor".into()), &mut sub, &mut seen, all_done).await;
    for i in 0..4 {
        let ids = terminal_ids(&seen, &format!("req-{i}"));
        assert_eq!(ids.len(), 1, "req-{i}: {ids:?}");
    }
    assert!(
        f.cloud.creations().values().all(|n| *n == 1),
        "{:?}",
        f.cloud.creations()
    );
    assert_eq!(
        f.cloud.inventory().len(),
        4 * OBJECTS_PER_TENANT,
        "{:?}",
        f.cloud.inventory()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_a_call_hangs_leaves_its_message_to_the_next_worker_once_its_lock_expires()
 {
    let f = Files::new();
    f.cloud.set_faults(CloudFaults {
        hang: vec!["create:identity".into()],
        ..CloudFaults::default()
    });
    let t = f.transport();
    let mut sub = t.subscribe("test").await.unwrap();
    let cmd = OnboardBuilder::tenant("acme").request("req-1").build();
    t.send(MessageBuilder::command(&cmd).build()).await.unwrap();
    let runner = f.runner("doomed");
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { runner.run(rx).await });
    // Killed while its message waits on the call that never answers (like SIGKILL: the task
    // and everything it started end, nothing is settled).
    while f.transport().stats().await.unwrap().locked == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.abort();
    let _ = task.await;
    f.cloud.set_faults(CloudFaults::default());
    let mut seen = Vec::new();
    run_until(&f.runner("survivor"), &mut sub, &mut seen, |s| {
        !terminal_ids(s, "req-1").is_empty()
    })
    .await;
    let outcome = seen.iter().find(|e| e.is_terminal()).unwrap();
    assert_eq!(outcome.ty, events::ONBOARDED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_sent_five_times_to_two_workers_provisions_once() {
    let f = Files::new();
    let t = f.transport();
    let mut sub = t.subscribe("test").await.unwrap();
    let cmd = OnboardBuilder::tenant("acme")
        .request("req-dup")
        .with_workload()
        .with_admin_group()
        .build();
    let mut outcomes = Vec::new();
    for i in 0..5 {
        // The same MessageId is dropped by duplicate detection; a different one (a resend by a
        // confused producer) is caught by the request id in the journal.
        let mut m = MessageBuilder::command(&cmd).build();
        if i % 2 == 1 {
            m.message_id = format!("req-dup-resend-{i}");
        }
        outcomes.push(t.send(m).await.unwrap());
    }
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == onboarding_transport::SendOutcome::Duplicate)
            .count(),
        2
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    let second = f.runner("w2");
    let task = tokio::spawn(async move { second.run(rx).await });
    let mut seen = Vec::new();
    run_until(&f.runner("w1"), &mut sub, &mut seen, |s| {
        !terminal_ids(s, "req-dup").is_empty()
    })
    .await;
    // Let the copies that were absorbed while the saga ran drain too.
    for _ in 0..50 {
        if queue_is_empty(&f).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    assert!(queue_is_empty(&f).await);
    assert!(
        f.cloud.creations().values().all(|n| *n == 1),
        "{:?}",
        f.cloud.creations()
    );
    assert_eq!(
        terminal_ids(&seen, "req-dup").len(),
        1,
        "one outcome event id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_receiving_and_leaves_unfinished_work_to_the_next_worker() {
    let f = Files::new();
    let t = f.transport();
    let mut sub = t.subscribe("test").await.unwrap();
    t.send(
        OnboardBuilder::tenant("acme")
            .request("req-1")
            .with_workload()
            .with_admin_group()
            .message()
            .build(),
    )
    .await
    .unwrap();
    let runner = f.runner("w1");
    let (stop, rx) = tokio::sync::watch::channel(false);
    let r = runner.clone();
    let task = tokio::spawn(async move { r.run(rx).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("shut down within the grace period")
        .unwrap();
    // Whatever was in flight was settled (completed with a continuation, or abandoned), so a
    // new worker finishes the saga at once rather than after a lock expiry.
    assert_eq!(f.transport().stats().await.unwrap().locked, 0);
    let mut seen = Vec::new();
    run_until(&f.runner("w2"), &mut sub, &mut seen, |s| {
        !terminal_ids(s, "req-1").is_empty()
    })
    .await;
    assert_eq!(terminal_ids(&seen, "req-1").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_workers_own_credential_is_refused_no_saga_fails_and_every_message_is_processed_afterwards()
 {
    let f = Files::new();
    // Entra is down: every call that needs the worker's token fails as an infrastructure fault.
    f.cloud.set_faults(CloudFaults {
        unwell: vec!["create:identity".into()],
        ..CloudFaults::default()
    });
    let t = f.transport();
    let mut sub = t.subscribe("test").await.unwrap();
    for (tenant, request) in [("acme", "req-a"), ("beta", "req-b")] {
        let cmd = OnboardBuilder::tenant(tenant).request(request).build();
        t.send(MessageBuilder::command(&cmd).build()).await.unwrap();
    }
    let runner = f.runner_with("w1", |cfg| {
        cfg.worker.unwell_backoff_first_ms = 50;
        cfg.worker.unwell_backoff_max_ms = 200;
    });
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = {
        let r = runner.clone();
        tokio::spawn(async move { r.run(rx).await })
    };
    let mut seen: Vec<CloudEvent> = Vec::new();
    let outage_ends = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < outage_ends {
        if let Some(m) = sub.next(Duration::from_millis(100)).await.unwrap() {
            seen.push(serde_json::from_slice(&m.body).unwrap());
        }
    }
    // Meanwhile: the worker says why it is not ready, and no saga was failed or compensated.
    let why = runner
        .wellbeing()
        .fault()
        .expect("the worker reports itself unwell");
    assert!(why.contains("Entra answered 503"), "{why}");
    assert!(
        seen.iter().all(|e| !e.is_terminal()),
        "{:?}",
        seen.iter().map(|e| &e.ty).collect::<Vec<_>>()
    );
    for tenant in ["acme", "beta"] {
        let rec = f.journal().load(tenant).await.unwrap().unwrap().value;
        let run = &rec["active"];
        assert_eq!(run["phase"], "forward", "{tenant}: {rec}");
        assert!(run["failure"].is_null(), "{tenant}: {rec}");
        assert_eq!(run["steps"]["identity"]["attempts"], 0, "{tenant}: {rec}");
    }
    // Entra is back: every message is processed, each to its one outcome.
    f.cloud.set_faults(CloudFaults::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline
        && (terminal_ids(&seen, "req-a").is_empty() || terminal_ids(&seen, "req-b").is_empty())
    {
        if let Some(m) = sub.next(Duration::from_millis(100)).await.unwrap() {
            seen.push(serde_json::from_slice(&m.body).unwrap());
        }
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    let outcomes: Vec<&str> = seen
        .iter()
        .filter(|e| e.is_terminal())
        .map(|e| e.ty.as_str())
        .collect();
    assert_eq!(
        outcomes,
        [events::ONBOARDED, events::ONBOARDED],
        "{outcomes:?}"
    );
    assert_eq!(runner.wellbeing().fault(), None);
    // The messages were held, not handed back: no delivery was spent on the outage.
    assert_eq!(runner.stats().snapshot()[3], 0, "abandoned");
    assert!(
        f.transport()
            .peek_dead_letters(0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
