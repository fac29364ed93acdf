//! The saga engine driven end to end with test doubles: full onboarding, replays, crashes at
//! every journal boundary, permanent failures at every step, transient storms, racing
//! duplicates, offboarding, cancellation and compensation failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use onboarding_contract::events;
use onboarding_contract::events::EventData;
use onboarding_saga::StepName;
use onboarding_saga::record::TenantState;
use onboarding_testkit::engine::{EngineHarness, test_config};
use onboarding_testkit::fakes::CloudFaults;
use onboarding_testkit::fixtures::{OffboardBuilder, OnboardBuilder};

const EVERYTHING: [&str; 12] = [
    "Namespace/tenant-acme",
    "ServiceAccount/tenant-acme/tenant-workload",
    "ResourceQuota/tenant-acme/tenant-quota",
    "NetworkPolicy/tenant-acme/default-deny",
    "RoleBinding/tenant-acme/tenant-admin",
    "Deployment/tenant-acme/workload",
    "identity/id-tenant-acme",
    "federated_credential/fic-tenant-acme",
    "blob_container/tenant-acme",
    "node_pool/",
    "role_assignment/",
    "",
];

/// A budget too short to wait for the node pool in process, so the saga must yield.
fn short_budget() -> worker::config::Config {
    let mut cfg = test_config();
    cfg.saga.message_budget_ms = 2_500;
    cfg
}

fn has_everything(inventory: &[String]) -> bool {
    EVERYTHING[..11]
        .iter()
        .all(|want| inventory.iter().any(|have| have.starts_with(want)))
}

fn outcome_state(e: &onboarding_contract::CloudEvent) -> String {
    match &e.data {
        EventData::Outcome(o) => o.state.clone(),
        other => panic!("not an outcome: {other:?}"),
    }
}

#[tokio::test]
async fn a_full_onboarding_provisions_every_resource_and_publishes_one_outcome() {
    let h = EngineHarness::new();
    let engine = h.engine("w1");
    let cmd = OnboardBuilder::tenant("acme")
        .request("req-1")
        .with_workload()
        .with_admin_group()
        .build();
    h.drive(&engine, EngineHarness::first_message(&cmd)).await;

    let terminal = h.terminal_events("req-1");
    assert_eq!(terminal.len(), 1, "{terminal:?}");
    assert_eq!(terminal[0].ty, events::ONBOARDED);
    assert_eq!(terminal[0].subject.as_deref(), Some("acme"));
    let inventory = h.cloud.inventory();
    assert!(has_everything(&inventory), "{inventory:?}");
    let rec = h.record("acme");
    assert_eq!(rec.state, TenantState::Onboarded);
    assert!(rec.active.is_none() && rec.outbox.is_empty() && rec.lease.is_none());
    assert_eq!(rec.resources.len(), 9);
    // Progress: one step_completed per step, each with a deterministic id.
    let progress: BTreeSet<_> = h
        .topic
        .events()
        .into_iter()
        .filter(|e| e.ty == events::STEP_COMPLETED)
        .map(|e| e.id)
        .collect();
    assert_eq!(progress.len(), 9);
}

#[tokio::test]
async fn independent_steps_run_in_the_same_message_while_the_node_pool_is_polled() {
    let h = EngineHarness::new();
    let engine = h.engine("w1");
    let cmd = OnboardBuilder::tenant("acme")
        .request("req-1")
        .with_workload()
        .with_admin_group()
        .build();
    let deadline = h.clock.now() + std::time::Duration::from_millis(100);
    // A tiny budget: only the first wave can start; the node pool goes pending.
    let handled = engine
        .handle(
            EngineHarness::first_message(&cmd),
            deadline + std::time::Duration::from_secs(3),
            &Default::default(),
        )
        .await
        .unwrap();
    let rec = h.record("acme");
    let run = rec.active.expect("still running");
    let done: Vec<_> = run
        .steps
        .iter()
        .filter(|(_, s)| s.forward == onboarding_saga::record::Status::Done)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        done.contains(&StepName::Identity) && done.contains(&StepName::Namespace),
        "{done:?}"
    );
    assert!(
        handled.continuation.is_some(),
        "a waiting saga must schedule a continuation"
    );
    let c = handled.continuation.unwrap();
    assert_eq!(c.message_id, "req-1:1");
    assert_eq!(c.command.tenant_id(), "acme");
    assert!(c.wake_at > h.clock.now() - chrono::Duration::seconds(1));
}

#[tokio::test]
async fn a_replayed_request_changes_nothing_and_republishes_the_same_event_id() {
    let h = EngineHarness::new();
    let engine = h.engine("w1");
    let cmd = OnboardBuilder::tenant("acme")
        .request("req-1")
        .with_workload()
        .with_admin_group()
        .build();
    h.drive(&engine, EngineHarness::first_message(&cmd)).await;
    let calls = h.cloud.calls.load(std::sync::atomic::Ordering::SeqCst);
    let first = h.terminal_events("req-1");

    h.drive(&engine, EngineHarness::first_message(&cmd)).await;

    assert_eq!(
        h.cloud.calls.load(std::sync::atomic::Ordering::SeqCst),
        calls,
        "replay called the cloud"
    );
    let all = h.terminal_events("req-1");
    assert_eq!(all.len(), 2, "the outcome is re-published once");
    assert_eq!(all[0], all[1], "same event, same id, same time");
    assert_eq!(all[0].id, first[0].id);
}

/// Runs `cmd` with the journal failing after `k` stores (the worker dies), then a new worker
/// picks the same message up after its lock expired. Returns false when `k` is past the end.
async fn crash_then_recover(h: &EngineHarness, cmd: &onboarding_contract::Command, k: u64) -> bool {
    let dying = h.engine("dying");
    h.journal.crash_after(Some(k));
    let mut next = Some(EngineHarness::first_message(cmd));
    let mut crashed_on = None;
    while let Some(m) = next.take() {
        match h.step(&dying, m.clone()).await {
            Ok(n) => next = n,
            Err(_) => crashed_on = Some(m),
        }
    }
    h.journal.crash_after(None);
    let Some(redelivered) = crashed_on else {
        return false;
    };
    // The message comes back once its lock (and so the dead worker's lease) has expired.
    h.manual
        .as_ref()
        .unwrap()
        .advance(std::time::Duration::from_secs(120));
    h.drive(&h.engine("fresh"), redelivered).await;
    true
}

#[tokio::test]
async fn a_crash_at_every_journal_boundary_converges_to_the_same_end_state() {
    let clean = EngineHarness::new();
    let cmd = OnboardBuilder::tenant("acme")
        .request("req-1")
        .with_workload()
        .with_admin_group()
        .build();
    clean
        .drive(&clean.engine("w"), EngineHarness::first_message(&cmd))
        .await;
    let want = clean.cloud.inventory();
    let mut boundaries = 0;
    for k in 0.. {
        let h = EngineHarness::new();
        if !crash_then_recover(&h, &cmd, k).await {
            break;
        }
        boundaries += 1;
        assert_eq!(h.cloud.inventory(), want, "crash after {k} journal writes");
        assert!(
            h.cloud.creations().values().all(|n| *n == 1),
            "duplicate creation after {k}: {:?}",
            h.cloud.creations()
        );
        let ids: BTreeSet<_> = h
            .terminal_events("req-1")
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids.len(), 1, "crash after {k}: terminal event ids {ids:?}");
        assert_eq!(h.record("acme").state, TenantState::Onboarded);
    }
    assert!(
        boundaries >= 10,
        "only {boundaries} journal boundaries exercised"
    );
}

#[tokio::test]
async fn a_crash_at_every_journal_boundary_during_compensation_converges_too() {
    let cmd = OnboardBuilder::tenant("acme")
        .request("req-1")
        .with_workload()
        .with_admin_group()
        .build();
    let faults = CloudFaults {
        permanent: vec!["create:role_assignment".into()],
        ..Default::default()
    };
    let clean = EngineHarness::new();
    clean.cloud.set_faults(faults.clone());
    clean
        .drive(&clean.engine("w"), EngineHarness::first_message(&cmd))
        .await;
    assert!(clean.cloud.inventory().is_empty());
    for k in 0.. {
        let h = EngineHarness::new();
        h.cloud.set_faults(faults.clone());
        if !crash_then_recover(&h, &cmd, k).await {
            break;
        }
        assert!(
            h.cloud.inventory().is_empty(),
            "crash after {k}: left {:?}",
            h.cloud.inventory()
        );
        let terminal = h.terminal_events("req-1");
        let ids: BTreeSet<_> = terminal.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids.len(), 1, "crash after {k}");
        assert_eq!(terminal[0].ty, events::ONBOARDING_FAILED);
    }
}

#[tokio::test]
async fn a_permanent_failure_at_each_step_compensates_everything_before_it() {
    let ops = [
        (StepName::Namespace, "apply:Namespace"),
        (StepName::NodePool, "create:node_pool"),
        (StepName::Identity, "create:identity"),
        (StepName::BlobContainer, "create:blob_container"),
        (StepName::FederatedCredential, "create:federated_credential"),
        (StepName::RoleAssignment, "create:role_assignment"),
        (StepName::ServiceAccount, "apply:ServiceAccount"),
        (StepName::Guardrails, "apply:ResourceQuota"),
        (StepName::Workload, "apply:Deployment"),
    ];
    for (step, op) in ops {
        let h = EngineHarness::new();
        h.cloud.set_faults(CloudFaults {
            permanent: vec![op.into()],
            ..Default::default()
        });
        h.drive(
            &h.engine("w"),
            EngineHarness::first_message(
                &OnboardBuilder::tenant("acme")
                    .request("req-1")
                    .with_workload()
                    .with_admin_group()
                    .build(),
            ),
        )
        .await;
        let terminal = h.terminal_events("req-1");
        assert_eq!(terminal.len(), 1, "{step}");
        assert_eq!(terminal[0].ty, events::ONBOARDING_FAILED, "{step}");
        let EventData::Outcome(o) = &terminal[0].data else {
            panic!()
        };
        assert_eq!(
            o.error.as_ref().and_then(|e| e.step.clone()).as_deref(),
            Some(step.as_str())
        );
        assert!(
            h.cloud.inventory().is_empty(),
            "failure at {step} left {:?}",
            h.cloud.inventory()
        );
        let rec = h.record("acme");
        assert_eq!(rec.state, TenantState::Failed, "{step}");
        assert!(rec.resources.is_empty(), "{step}: {:?}", rec.resources);
        // Every step that created something published its compensation.
        let compensated: BTreeSet<String> = h
            .topic
            .events()
            .into_iter()
            .filter_map(|e| match e.data {
                EventData::Step(s) if s.phase == "compensation" => Some(s.step),
                _ => None,
            })
            .collect();
        let forward_done: BTreeSet<String> = h
            .topic
            .events()
            .into_iter()
            .filter_map(|e| match e.data {
                EventData::Step(s) if s.phase == "forward" => Some(s.step),
                _ => None,
            })
            .collect();
        assert!(
            forward_done.is_subset(&compensated),
            "{step}: done {forward_done:?} but compensated only {compensated:?}"
        );
    }
}

#[tokio::test]
async fn a_transient_storm_eventually_succeeds() {
    let h = EngineHarness::new();
    h.cloud.set_faults(CloudFaults {
        transient_rate: 0.5,
        seed: 42,
        ..Default::default()
    });
    h.drive(
        &h.engine("w"),
        EngineHarness::first_message(
            &OnboardBuilder::tenant("acme")
                .request("req-1")
                .with_workload()
                .with_admin_group()
                .build(),
        ),
    )
    .await;
    let terminal = h.terminal_events("req-1");
    assert_eq!(terminal.len(), 1);
    assert_eq!(terminal[0].ty, events::ONBOARDED, "{:?}", terminal[0]);
    assert!(has_everything(&h.cloud.inventory()));
}

#[tokio::test]
async fn transient_failures_past_the_attempt_limit_fail_and_compensate() {
    let mut cfg = test_config();
    cfg.saga.step_attempt_limit = 2;
    cfg.saga.step_retry_budget_ms = 100;
    let h = EngineHarness::with_config(cfg);
    h.cloud.set_faults(CloudFaults {
        transient_rate: 1.0,
        seed: 1,
        ..Default::default()
    });
    h.drive(
        &h.engine("w"),
        EngineHarness::first_message(
            &OnboardBuilder::tenant("acme")
                .request("req-1")
                .with_workload()
                .with_admin_group()
                .build(),
        ),
    )
    .await;
    let terminal = h.terminal_events("req-1");
    assert_eq!(terminal.len(), 1);
    // Compensation meets the same storm, so it ends in CompensationFailed or Failed; either way
    // the event says which.
    assert!(
        [events::ONBOARDING_FAILED, events::COMPENSATION_FAILED].contains(&terminal[0].ty.as_str()),
        "{:?}",
        terminal[0].ty
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_of_one_request_provision_once() {
    let h = std::sync::Arc::new(EngineHarness::with_system_clock());
    let cmd = OnboardBuilder::tenant("acme")
        .request("req-1")
        .with_workload()
        .with_admin_group()
        .build();
    let mut tasks = Vec::new();
    for w in 0..3 {
        let h = h.clone();
        let cmd = cmd.clone();
        tasks.push(tokio::spawn(async move {
            let engine = h.engine(&format!("w{w}"));
            let mut next = Some(EngineHarness::first_message(&cmd));
            let mut guard = 0;
            while let Some(m) = next.take() {
                guard += 1;
                if guard > 200 {
                    break;
                }
                match h.step(&engine, m.clone()).await {
                    Ok(n) => next = n,
                    // Busy or lost the compare-and-swap: the message goes back, try again.
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        next = Some(m);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        h.cloud.creations().values().all(|n| *n == 1),
        "{:?}",
        h.cloud.creations()
    );
    assert!(has_everything(&h.cloud.inventory()));
    let ids: BTreeSet<_> = h
        .terminal_events("req-1")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[tokio::test]
async fn offboarding_removes_everything_but_keeps_the_data_unless_purged() {
    let h = EngineHarness::new();
    let engine = h.engine("w");
    h.drive(
        &engine,
        EngineHarness::first_message(
            &OnboardBuilder::tenant("acme")
                .request("req-1")
                .with_workload()
                .with_admin_group()
                .build(),
        ),
    )
    .await;
    h.drive(
        &engine,
        EngineHarness::first_message(&OffboardBuilder::tenant("acme").request("req-2").build()),
    )
    .await;
    let terminal = h.terminal_events("req-2");
    assert_eq!(terminal[0].ty, events::OFFBOARDED);
    let EventData::Outcome(o) = &terminal[0].data else {
        panic!()
    };
    assert_eq!(o.remaining.len(), 1);
    assert_eq!(o.remaining[0].reason, "kept");
    assert_eq!(
        h.cloud.inventory(),
        vec!["blob_container/tenant-acme".to_string()]
    );
    assert_eq!(h.record("acme").state, TenantState::Offboarded);

    h.drive(
        &engine,
        EngineHarness::first_message(
            &OffboardBuilder::tenant("acme")
                .request("req-3")
                .purge_data()
                .build(),
        ),
    )
    .await;
    assert_eq!(outcome_state(&h.terminal_events("req-3")[0]), "Offboarded");
    assert!(h.cloud.inventory().is_empty(), "{:?}", h.cloud.inventory());
}

#[tokio::test]
async fn an_offboarding_during_onboarding_cancels_it_then_offboards() {
    let h = EngineHarness::with_config(short_budget());
    let engine = h.engine("w");
    let on = OnboardBuilder::tenant("acme")
        .request("req-1")
        .with_workload()
        .with_admin_group()
        .build();
    // First message only: the node pool is still creating.
    let continuation = h
        .step(&engine, EngineHarness::first_message(&on))
        .await
        .unwrap();
    assert!(continuation.is_some());
    h.drive(
        &engine,
        EngineHarness::first_message(
            &OffboardBuilder::tenant("acme")
                .request("req-2")
                .purge_data()
                .build(),
        ),
    )
    .await;
    // The onboarding's own continuation arrives later and changes nothing.
    h.drive(&engine, continuation.unwrap()).await;

    let on_events = h.terminal_events("req-1");
    assert_eq!(on_events.len(), 1);
    assert_eq!(on_events[0].ty, events::ONBOARDING_FAILED);
    let EventData::Outcome(o) = &on_events[0].data else {
        panic!()
    };
    assert_eq!(
        o.error.as_ref().and_then(|e| e.code.clone()).as_deref(),
        Some("CancelledByOffboarding")
    );
    assert_eq!(h.terminal_events("req-2")[0].ty, events::OFFBOARDED);
    assert!(h.cloud.inventory().is_empty(), "{:?}", h.cloud.inventory());
}

#[tokio::test]
async fn a_failing_compensation_ends_in_compensation_failed_listing_what_remains() {
    let h = EngineHarness::new();
    h.cloud.set_faults(CloudFaults {
        permanent: vec!["create:role_assignment".into(), "delete:identity".into()],
        ..Default::default()
    });
    h.drive(
        &h.engine("w"),
        EngineHarness::first_message(
            &OnboardBuilder::tenant("acme")
                .request("req-1")
                .with_workload()
                .with_admin_group()
                .build(),
        ),
    )
    .await;
    let terminal = h.terminal_events("req-1");
    assert_eq!(terminal[0].ty, events::COMPENSATION_FAILED);
    let EventData::Outcome(o) = &terminal[0].data else {
        panic!()
    };
    let remaining: Vec<_> = o
        .remaining
        .iter()
        .map(|r| (r.step.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(remaining, vec![("identity", "failed")]);
    assert!(
        o.remaining[0]
            .resource
            .ends_with("/userAssignedIdentities/id-tenant-acme")
    );
    assert_eq!(
        h.cloud.inventory(),
        vec!["identity/id-tenant-acme".to_string()]
    );
    assert_eq!(h.record("acme").state, TenantState::CompensationFailed);
}

#[tokio::test]
async fn a_failed_update_leaves_the_tenant_as_it_was() {
    let h = EngineHarness::new();
    let engine = h.engine("w");
    h.drive(
        &engine,
        EngineHarness::first_message(
            &OnboardBuilder::tenant("acme")
                .request("req-1")
                .with_workload()
                .with_admin_group()
                .build(),
        ),
    )
    .await;
    let before = h.cloud.inventory();
    h.cloud.set_faults(CloudFaults {
        permanent: vec!["apply:Deployment".into()],
        ..Default::default()
    });
    h.drive(
        &engine,
        EngineHarness::first_message(
            &OnboardBuilder::tenant("acme")
                .request("req-2")
                .with_workload()
                .with_admin_group()
                .build(),
        ),
    )
    .await;
    assert_eq!(h.terminal_events("req-2")[0].ty, events::ONBOARDING_FAILED);
    assert_eq!(
        h.cloud.inventory(),
        before,
        "an update failure must not delete what existed"
    );
    assert_eq!(h.record("acme").state, TenantState::Onboarded);
}

#[tokio::test]
async fn requests_for_a_busy_tenant_wait_their_turn_in_order() {
    let h = EngineHarness::with_config(short_budget());
    let engine = h.engine("w");
    let first = h
        .step(
            &engine,
            EngineHarness::first_message(
                &OnboardBuilder::tenant("acme")
                    .request("req-1")
                    .with_workload()
                    .with_admin_group()
                    .build(),
            ),
        )
        .await
        .unwrap();
    // A second onboarding arrives while the first waits on its node pool: it is queued.
    let queued = h
        .step(
            &engine,
            EngineHarness::first_message(
                &OnboardBuilder::tenant("acme")
                    .request("req-2")
                    .with_workload()
                    .with_admin_group()
                    .build(),
            ),
        )
        .await
        .unwrap();
    assert!(
        queued.is_none(),
        "a queued request has no continuation of its own"
    );
    assert!(h.record("acme").is_queued("req-2"));
    h.drive(&engine, first.unwrap()).await;
    assert_eq!(h.terminal_events("req-1")[0].ty, events::ONBOARDED);
    assert_eq!(h.terminal_events("req-2")[0].ty, events::ONBOARDED);
}

#[tokio::test]
async fn two_tenants_whose_names_collide_are_refused_not_shared() {
    let h = EngineHarness::new();
    let engine = h.engine("w");
    // Claim the second tenant's node pool name for the first, as a hash collision would.
    let names = onboarding_contract::TenantNames::derive("beta").unwrap();
    use onboarding_journal::Journal as _;
    h.journal
        .claim_names(
            "alpha",
            &onboarding_saga::name_claims(&names, "default")[..1],
        )
        .await
        .unwrap();
    let deadline = h.clock.now() + std::time::Duration::from_secs(20);
    let handled = engine
        .handle(
            EngineHarness::first_message(
                &OnboardBuilder::tenant("beta")
                    .request("req-b")
                    .with_workload()
                    .with_admin_group()
                    .build(),
            ),
            deadline,
            &Default::default(),
        )
        .await
        .unwrap();
    let rejection = handled.rejection.expect("refused");
    assert_eq!(rejection.reason.code(), "NameCollision");
    assert!(
        rejection.description().contains("alpha"),
        "{}",
        rejection.description()
    );
    assert_eq!(h.cloud.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// Onboard acme with a workload and an admin group, then update it with `update`.
async fn onboard_then_update(h: &EngineHarness, update: OnboardBuilder) {
    let engine = h.engine("w");
    h.drive(
        &engine,
        EngineHarness::first_message(
            &OnboardBuilder::tenant("acme")
                .request("req-1")
                .with_workload()
                .with_admin_group()
                .build(),
        ),
    )
    .await;
    assert!(has_everything(&h.cloud.inventory()));
    h.drive(
        &engine,
        EngineHarness::first_message(&update.request("req-2").build()),
    )
    .await;
}

fn listed(o: &onboarding_contract::events::OutcomeData, what: &str) -> bool {
    serde_json::Value::Object(o.resources.clone())
        .to_string()
        .contains(what)
}

#[tokio::test]
async fn dropping_the_admin_group_revokes_its_binding() {
    let h = EngineHarness::new();
    onboard_then_update(&h, OnboardBuilder::tenant("acme").with_workload()).await;
    let terminal = h.terminal_events("req-2");
    assert_eq!(terminal[0].ty, events::ONBOARDED);
    let inventory = h.cloud.inventory();
    assert!(
        !inventory.iter().any(|r| r.starts_with("RoleBinding/")),
        "the admin binding must be revoked: {inventory:?}"
    );
    assert!(inventory.iter().any(|r| r.starts_with("Deployment/")));
    let EventData::Outcome(o) = &terminal[0].data else {
        panic!()
    };
    assert!(!listed(o, "RoleBinding"), "{:?}", o.resources);
    let rec = h.record("acme");
    assert!(
        !rec.resources[&StepName::Guardrails]
            .to_string()
            .contains("RoleBinding")
    );
    assert_eq!(rec.state, TenantState::Onboarded);
}

#[tokio::test]
async fn dropping_the_workload_deletes_it_and_the_record_no_longer_lists_it() {
    let h = EngineHarness::new();
    onboard_then_update(&h, OnboardBuilder::tenant("acme").with_admin_group()).await;
    let terminal = h.terminal_events("req-2");
    assert_eq!(terminal[0].ty, events::ONBOARDED);
    let inventory = h.cloud.inventory();
    assert!(
        !inventory.iter().any(|r| r.starts_with("Deployment/")),
        "the workload must be deleted: {inventory:?}"
    );
    assert!(inventory.iter().any(|r| r.starts_with("RoleBinding/")));
    let EventData::Outcome(o) = &terminal[0].data else {
        panic!()
    };
    assert!(!o.resources.contains_key("workload"), "{:?}", o.resources);
    assert!(!listed(o, "Deployment"));
    let rec = h.record("acme");
    assert!(!rec.resources.contains_key(&StepName::Workload));
    assert_eq!(rec.state, TenantState::Onboarded);

    // Asking for it again brings it back, and the record lists it again.
    let engine = h.engine("w");
    h.drive(
        &engine,
        EngineHarness::first_message(
            &OnboardBuilder::tenant("acme")
                .request("req-3")
                .with_workload()
                .with_admin_group()
                .build(),
        ),
    )
    .await;
    assert!(has_everything(&h.cloud.inventory()));
    assert!(h.record("acme").resources.contains_key(&StepName::Workload));
}

#[tokio::test]
async fn a_foreign_admin_binding_is_not_deleted_by_an_update() {
    use onboarding_providers::KubeProvisioner;
    let h = EngineHarness::new();
    onboard_then_update(&h, OnboardBuilder::tenant("acme").with_workload()).await;
    // Someone else puts a binding of that name in the namespace.
    let mut binding = onboarding_providers::KubeObject {
        api_version: "rbac.authorization.k8s.io/v1".into(),
        kind: "RoleBinding".into(),
        namespace: Some("tenant-acme".into()),
        name: "tenant-admin".into(),
        manifest: serde_json::json!({"metadata": {"name": "tenant-admin", "labels": {"app.kubernetes.io/managed-by": "Helm"}}}),
    };
    binding.manifest["metadata"]["namespace"] = "tenant-acme".into();
    let target = worker::config::Target::local("default");
    h.cloud.apply(&target, &binding).await.unwrap();
    let engine = h.engine("w");
    h.drive(
        &engine,
        EngineHarness::first_message(
            &OnboardBuilder::tenant("acme")
                .request("req-3")
                .with_workload()
                .build(),
        ),
    )
    .await;
    assert_eq!(h.terminal_events("req-3")[0].ty, events::ONBOARDED);
    assert!(
        h.cloud
            .inventory()
            .contains(&"RoleBinding/tenant-acme/tenant-admin".to_string()),
        "{:?}",
        h.cloud.inventory()
    );
}

#[tokio::test]
async fn offboarding_an_unknown_tenant_is_answered_not_found_and_deletes_nothing() {
    use onboarding_providers::KubeProvisioner;
    let h = EngineHarness::new();
    // A namespace that happens to carry the unknown tenant's name, not the worker's.
    let ns = onboarding_providers::KubeObject {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: "tenant-ghost".into(),
        manifest: serde_json::json!({"metadata": {"name": "tenant-ghost"}}),
    };
    h.cloud
        .apply(&worker::config::Target::local("default"), &ns)
        .await
        .unwrap();
    let before = h.cloud.inventory();
    let calls = h.cloud.calls.load(std::sync::atomic::Ordering::SeqCst);
    let engine = h.engine("w");
    let cmd = OffboardBuilder::tenant("ghost")
        .request("req-1")
        .purge_data()
        .build();
    h.drive(&engine, EngineHarness::first_message(&cmd)).await;
    let terminal = h.terminal_events("req-1");
    assert_eq!(terminal.len(), 1);
    assert_eq!(terminal[0].ty, events::OFFBOARDED);
    assert_eq!(
        terminal[0].id,
        events::event_id("req-1", events::OFFBOARDED, "")
    );
    let EventData::Outcome(o) = &terminal[0].data else {
        panic!()
    };
    assert!(o.not_found);
    assert_eq!(o.state, "NotFound");
    assert!(o.resources.is_empty() && o.remaining.is_empty());
    assert_eq!(h.cloud.inventory(), before);
    assert_eq!(
        h.cloud.calls.load(std::sync::atomic::Ordering::SeqCst),
        calls,
        "nothing may be touched"
    );
    assert_eq!(h.record("ghost").state, TenantState::New);

    // A replay answers the same.
    h.drive(&engine, EngineHarness::first_message(&cmd)).await;
    assert_eq!(h.terminal_events("req-1")[0].id, terminal[0].id);
}

#[tokio::test]
async fn an_update_whose_pool_a_crashed_worker_already_wrote_in_its_turn_gives_the_turn_back() {
    use onboarding_journal::Journal as _;
    use onboarding_saga::cluster_turns::{ClusterTurns, Turn};
    let h = EngineHarness::new();
    let engine = h.engine("w");
    h.drive(
        &engine,
        EngineHarness::first_message(&OnboardBuilder::tenant("acme").request("req-1").build()),
    )
    .await;
    let key = h
        .journal
        .keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.starts_with("cluster-turns:"))
        .expect("the onboarding waited in its cluster's line");
    let cluster = key.trim_start_matches("cluster-turns:").to_string();
    // A worker took the turn for update req-2, wrote the pool (which is then as req-2 wants
    // it) and was killed before it journaled the operation.
    let turns = ClusterTurns::new(h.journal.clone(), h.clock.clone(), &h.config.saga);
    assert_eq!(
        turns.take(&cluster, "acme/req-2").await.unwrap(),
        Turn::Mine
    );
    h.drive(
        &engine,
        EngineHarness::first_message(&OnboardBuilder::tenant("acme").request("req-2").build()),
    )
    .await;
    assert_eq!(h.terminal_events("req-2")[0].ty, events::ONBOARDED);
    assert_eq!(
        turns.take(&cluster, "beta/req-3").await.unwrap(),
        Turn::Mine,
        "the next onboarding on the cluster has its turn at once, not after the lease"
    );
}
