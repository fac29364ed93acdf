//! Crash-point sweep: the real `worker` binary is SIGKILLed at every journal write of an
//! onboarding (and of an onboarding that fails and compensates), and at random moments, then
//! restarted; every run must converge to the end state of a clean run.
//!
//! How a kill lands on a journal boundary: the test polls the tenant's journal record version
//! (`journal.load`) every millisecond and SIGKILLs the worker as soon as it reaches `k`, for
//! every `k` of a clean run. The simulators run with a slowed latency profile (tens to hundreds
//! of milliseconds per call, the node pool about 1.5 s), so most writes are followed by a step
//! call and the kill lands before the next write; writes that follow each other with no call in
//! between (a result and the release of the lease) cannot be split by a poller, and the kill
//! then lands on the next one: each case prints the version it really killed at and which steps
//! were in flight (`started`: killed in the middle of those steps), and the sweep prints its
//! coverage.
//!
//! The end state compared: the outcome event's type and its one distinct id, the simulators'
//! inventories (ARM resource ids, Kubernetes objects), no resource created twice (the
//! simulators' creation counters), nothing orphaned (the role assignment and the service
//! account point at the identity that exists), the journal's tenant state, an empty queue and
//! no dead letters.
//!
//! Each case runs in its own harness (simulators, SQLite files, worker), several at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{ProcessHarness, Settings, slow_latency, terminal_ids};
use onboarding_providers::rbac::role_assignment_name;
use onboarding_saga::record::{Lease, Status, StepName, TenantRecord, TenantState};
use rand::{Rng, SeedableRng};
use sim::faults::FaultPlan;
use worker::config::SagaConfig;

const TENANT: &str = "crashco";
const REQUEST: &str = "req-crash-1";
/// Cases run at once (each its own worker process and simulators) on a 2-core machine.
const PARALLEL: usize = 4;

fn settings(fail_ops: &[&str]) -> Settings {
    Settings {
        latency: slow_latency(0.05),
        faults: FaultPlan {
            fail_ops: fail_ops.iter().map(|s| s.to_string()).collect(),
            ..FaultPlan::default()
        },
        // A short lock brings a killed worker's message back within 3 s; the dead worker's
        // journal lease (budget + retry budget + 5 s) then runs out a few seconds later.
        lock_duration_secs: 3,
        saga: SagaConfig {
            message_budget_ms: 2_000,
            step_retry_budget_ms: 500,
            retry_initial_delay_ms: 50,
            continuation_base_delay_ms: 200,
            continuation_max_delay_ms: 2_000,
            step_attempt_limit: 8,
            compensation_attempt_limit: 8,
            remembered_requests: 50,
            // Simulated pool operations take well under a second.
            cluster_turn_poll_ms: 200,
            cluster_turn_lease_ms: 10_000,
            wait_limit_ms: 600_000,
        },
        ..Settings::default()
    }
}

#[derive(Debug, Clone)]
enum Kill {
    Never,
    /// SIGKILL as soon as the journal record reaches this version.
    AtVersion(u64),
    /// SIGKILL after each delay (from the previous restart), restarting every time.
    After(Vec<Duration>),
}

/// Where one kill landed.
#[derive(Debug, Clone)]
struct Landed {
    version: u64,
    /// Steps running or waiting (direction:step) when the worker died.
    in_flight: Vec<String>,
}

#[derive(Debug, Clone)]
struct EndState {
    outcome: String,
    outcome_ids: BTreeSet<String>,
    arm: BTreeMap<String, BTreeSet<String>>,
    kube: BTreeSet<String>,
    creations: BTreeMap<String, u64>,
    state: TenantState,
    last_version: u64,
}

#[derive(Debug)]
struct Case {
    kill: Kill,
    landed: Vec<Landed>,
    end: EndState,
    elapsed: Duration,
}

async fn in_flight(h: &ProcessHarness) -> Vec<String> {
    let Some((_, rec)) = h.record(TENANT).await else {
        return vec!["(no record)".into()];
    };
    let Some(run) = rec.active else {
        return vec![format!("(no active run, state {:?})", rec.state)];
    };
    let mut out = Vec::new();
    for (name, st) in &run.steps {
        for (dir, status) in [("forward", st.forward), ("compensation", st.compensation)] {
            if matches!(status, Status::Running | Status::Waiting) {
                out.push(format!("{dir}:{name}:{status:?}"));
            }
        }
    }
    out
}

async fn finished(h: &ProcessHarness) -> bool {
    h.record(TENANT)
        .await
        .is_some_and(|(_, r)| r.active.is_none() && r.outbox.is_empty() && !r.finished.is_empty())
}

async fn run_case(fail_ops: Vec<&'static str>, kill: Kill) -> Case {
    let started = Instant::now();
    let h = ProcessHarness::start(settings(&fail_ops)).await;
    let mut worker = h.spawn_worker();
    h.send_onboard(TENANT, REQUEST, true).await;
    let mut landed = Vec::new();
    match &kill {
        Kill::Never => {}
        Kill::AtVersion(k) => {
            let give_up = Instant::now() + Duration::from_secs(60);
            let mut polls = 0u64;
            loop {
                let v = h.version(TENANT).await;
                if v >= *k {
                    h.kill_worker(worker);
                    landed.push(Landed {
                        version: h.version(TENANT).await,
                        in_flight: in_flight(&h).await,
                    });
                    worker = h.spawn_worker();
                    break;
                }
                polls += 1;
                // This run wrote fewer records than the clean one: nothing left to kill.
                if polls.is_multiple_of(200) && finished(&h).await && h.version(TENANT).await < *k {
                    break;
                }
                assert!(
                    Instant::now() < give_up,
                    "the journal never reached version {k}"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Kill::After(delays) => {
            for d in delays {
                tokio::time::sleep(*d).await;
                h.kill_worker(worker);
                landed.push(Landed {
                    version: h.version(TENANT).await,
                    in_flight: in_flight(&h).await,
                });
                worker = h.spawn_worker();
            }
        }
    }
    let _ = worker;
    h.wait_for_outcomes(&[REQUEST.to_string()], Duration::from_secs(120))
        .await;
    h.wait_for_empty_queue(Duration::from_secs(60)).await;
    // Let a stale continuation or replay that was already being handled settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = h.events().await;
    let outcome_ids = terminal_ids(&events, REQUEST);
    let outcome = events
        .iter()
        .find(|e| e.is_terminal() && e.request_id() == Some(REQUEST))
        .map(|e| e.ty.clone())
        .unwrap_or_default();
    let (last_version, rec) = h.record(TENANT).await.expect("a journal record");
    let dead = h.dead_letters().await;
    assert!(
        dead.is_empty(),
        "kill {kill:?} (landed {landed:?}) dead-lettered: {:?}",
        dead.iter()
            .map(|m| (
                &m.message_id,
                &m.dead_letter_reason,
                &m.dead_letter_description
            ))
            .collect::<Vec<_>>()
    );
    assert!(h.dead_workers().is_empty(), "a worker exited on its own");
    // A lease may remain: a worker killed after recording the outcome but before releasing
    // its lease leaves it behind, and the replay that publishes the outcome needs no lease. It
    // only runs out (a later request for the tenant waits for it).
    assert!(
        rec.active.is_none() && rec.outbox.is_empty(),
        "kill {kill:?}: the journal record is not at rest: {rec:?}"
    );
    if matches!(kill, Kill::Never) {
        assert!(rec.lease.is_none(), "a clean run left its lease: {rec:?}");
    }
    if rec.state == TenantState::Onboarded {
        assert_nothing_orphaned(&h).await;
    }
    let end = EndState {
        outcome,
        outcome_ids,
        arm: comparable_arm(h.arm_resources()),
        kube: h.kube_objects(),
        creations: h.creations(),
        state: rec.state,
        last_version,
    };
    Case {
        kill,
        landed,
        end,
        elapsed: started.elapsed(),
    }
}

/// ARM ids as comparable across harnesses: a role assignment's name is UUID v5 of its scope,
/// principal and role, and every harness's identity gets its own principal id, so the name is
/// replaced by `*` (the orphan check verifies it against this harness's principal).
fn comparable_arm(arm: BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    arm.into_iter()
        .map(|(kind, ids)| {
            let ids = if kind == "roleAssignments" {
                ids.into_iter()
                    .map(|id| match id.rsplit_once('/') {
                        Some((scope, _)) => format!("{scope}/*"),
                        None => id,
                    })
                    .collect()
            } else {
                ids
            };
            (kind, ids)
        })
        .collect()
}

/// The role assignment and the service account point at the identity that exists, and the
/// journal's outputs are the simulators' truth.
async fn assert_nothing_orphaned(h: &ProcessHarness) {
    let (_, rec) = h.record(TENANT).await.expect("record");
    let out = |s: StepName, f: &str| -> String {
        rec.resources[&s][f]
            .as_str()
            .unwrap_or_else(|| panic!("journal output {s}.{f} missing: {:?}", rec.resources))
            .to_string()
    };
    let identity = h
        .arm_get(&out(StepName::Identity, "id"), sim::arm::MSI_API_VERSION)
        .await
        .expect("the journalled identity exists");
    let principal = identity["properties"]["principalId"].as_str().unwrap();
    let client = identity["properties"]["clientId"].as_str().unwrap();
    assert_eq!(principal, out(StepName::Identity, "principal_id"));
    let assignment = h
        .arm_get(
            &out(StepName::RoleAssignment, "id"),
            sim::arm::AUTHORIZATION_API_VERSION,
        )
        .await
        .expect("the journalled role assignment exists");
    assert_eq!(
        assignment["properties"]["principalId"].as_str(),
        Some(principal),
        "the role assignment names another principal than the identity's"
    );
    let scope = out(StepName::BlobContainer, "id");
    let role = assignment["properties"]["roleDefinitionId"]
        .as_str()
        .unwrap();
    assert_eq!(
        assignment["name"].as_str(),
        Some(role_assignment_name(&scope, principal, role).as_str()),
        "the role assignment is not the deterministic one for this identity"
    );
    let sa = h
        .sims
        .kube
        .object(
            "v1",
            "ServiceAccount",
            Some(&format!("tenant-{TENANT}")),
            "tenant-workload",
        )
        .expect("service account");
    assert_eq!(
        sa["metadata"]["annotations"]["azure.workload.identity/client-id"].as_str(),
        Some(client),
        "the service account names another client id than the identity's"
    );
}

/// Most objects one onboarding may create, per `creations()` key.
fn most_created(key: &str) -> u64 {
    if key == "kube:NetworkPolicy" { 3 } else { 1 }
}

fn compare(clean: &EndState, case: &Case, exact_creations: bool) {
    let ctx = format!(
        "kill {:?} landed at {:?} ({:?})",
        case.kill, case.landed, case.end
    );
    assert_eq!(
        case.end.outcome, clean.outcome,
        "outcome type differs: {ctx}"
    );
    assert_eq!(
        case.end.outcome_ids, clean.outcome_ids,
        "terminal event ids differ: {ctx}"
    );
    assert_eq!(case.end.outcome_ids.len(), 1, "{ctx}");
    assert_eq!(case.end.arm, clean.arm, "ARM inventory differs: {ctx}");
    assert_eq!(
        case.end.kube, clean.kube,
        "Kubernetes inventory differs: {ctx}"
    );
    assert_eq!(case.end.state, clean.state, "tenant state differs: {ctx}");
    for (k, n) in &case.end.creations {
        assert!(*n <= most_created(k), "{k} created {n} times: {ctx}");
    }
    if exact_creations {
        assert_eq!(
            case.end.creations, clean.creations,
            "creations differ: {ctx}"
        );
    }
}

async fn run_all(fail_ops: Vec<&'static str>, kills: Vec<Kill>) -> Vec<Case> {
    let gate = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut tasks = Vec::new();
    for kill in kills {
        let gate = gate.clone();
        let ops = fail_ops.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            run_case(ops, kill).await
        }));
    }
    let mut cases = Vec::new();
    for t in tasks {
        match t.await {
            Ok(c) => cases.push(c),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    cases
}

fn report(name: &str, clean: &EndState, cases: &[Case]) {
    let hit: BTreeSet<u64> = cases
        .iter()
        .flat_map(|c| c.landed.iter().map(|l| l.version))
        .collect();
    for c in cases {
        eprintln!(
            "{name}: {:?} -> landed {:?} in {:.1}s",
            c.kill,
            c.landed
                .iter()
                .map(|l| format!("v{} {:?}", l.version, l.in_flight))
                .collect::<Vec<_>>(),
            c.elapsed.as_secs_f64()
        );
    }
    eprintln!(
        "{name}: clean run wrote {} journal versions; kills landed on {} distinct versions {:?}",
        clean.last_version,
        hit.len(),
        hit
    );
}

async fn sweep(fail_ops: Vec<&'static str>, exact_creations: bool) -> (EndState, Vec<Case>) {
    let clean = run_case(fail_ops.clone(), Kill::Never).await.end;
    let kills = (1..=clean.last_version).map(Kill::AtVersion).collect();
    let cases = run_all(fail_ops, kills).await;
    for c in &cases {
        compare(&clean, c, exact_creations);
    }
    (clean, cases)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_every_journal_write_of_an_onboarding_converges_to_the_clean_end_state()
{
    let (clean, cases) = sweep(vec![], true).await;
    assert_eq!(clean.outcome, "tenant.onboarded");
    assert_eq!(clean.state, TenantState::Onboarded);
    assert_eq!(clean.arm.values().map(BTreeSet::len).sum::<usize>(), 5);
    report("onboarding", &clean, &cases);
    // Kills in the middle of steps: the sweep must have caught steps in flight.
    assert!(
        cases
            .iter()
            .flat_map(|c| &c.landed)
            .any(|l| l.in_flight.iter().any(|s| s.starts_with("forward:"))),
        "no kill landed while a step was running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_every_journal_write_of_a_compensation_converges_to_the_clean_end_state()
{
    // The role assignment is refused: every step done by then is compensated.
    let (clean, cases) = sweep(vec!["role_assignments.put"], false).await;
    assert_eq!(clean.outcome, "tenant.onboarding_failed");
    assert_eq!(clean.state, TenantState::Failed);
    assert!(
        clean.arm.values().all(BTreeSet::is_empty),
        "{:?}",
        clean.arm
    );
    assert!(clean.kube.is_empty(), "{:?}", clean.kube);
    report("compensation", &clean, &cases);
    assert!(
        cases
            .iter()
            .flat_map(|c| &c.landed)
            .any(|l| l.in_flight.iter().any(|s| s.starts_with("compensation:"))),
        "no kill landed while a compensation was running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_random_moments_again_and_again_converges_to_the_clean_end_state() {
    let seed: u64 = onboarding_testkit::env::optional("E2E_SEED")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("random kills: seed {seed} (E2E_SEED={seed} repeats this run)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let clean = run_case(vec![], Kill::Never).await.end;
    let mut kills = Vec::new();
    for case in 0..4 {
        // One to three kills, each 0-2.5 s after the previous (re)start.
        let n = 1 + case % 3;
        kills.push(Kill::After(
            (0..n)
                .map(|_| Duration::from_millis(rng.random_range(0..2_500)))
                .collect(),
        ));
    }
    let cases = run_all(vec![], kills).await;
    report("random", &clean, &cases);
    for c in &cases {
        compare(&clean, c, true);
    }
}

/// Regression: a redelivered message met the dead worker's journal lease, was abandoned, came
/// straight back, and within milliseconds ran through its whole delivery count into the
/// dead-letter queue, stranding the saga. The runner now holds the message until the lease
/// runs out before giving it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_meets_a_dead_workers_lease_waits_for_it_instead_of_being_dead_lettered() {
    let h = ProcessHarness::start(Settings {
        max_delivery_count: 3,
        ..Settings::default()
    })
    .await;
    // What a worker killed in the middle of a message leaves behind: its lease on the record.
    let mut rec = TenantRecord::new(TENANT);
    rec.lease = Some(Lease {
        owner: "worker-that-was-killed".into(),
        until: chrono::Utc::now() + chrono::Duration::seconds(4),
    });
    h.journal
        .store(TENANT, &serde_json::to_value(&rec).unwrap(), None)
        .await
        .unwrap();
    h.send_onboard(TENANT, REQUEST, false).await;
    h.spawn_worker();
    let outcome = h
        .wait_for_outcomes(&[REQUEST.to_string()], Duration::from_secs(60))
        .await;
    assert_eq!(outcome[REQUEST].ty, "tenant.onboarded");
    assert!(h.dead_letters().await.is_empty());
}
