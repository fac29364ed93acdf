//! Benchmark 3: sustained onboardings by three replicas against ARM's write limit.
//!
//! The ARM simulator enforces ARM's per-subscription write bucket (200 tokens refilled at 10 a
//! second; 429 `SubscriptionRequestsThrottled` when empty). Three replicas of the worker run in
//! this process, each as a replica runs under KEDA: its own queue and journal connections on the
//! shared SQLite files, its own ARM provisioner with its own local allowance, and the ARM write
//! budget of its configuration (`[arm]`, ARM's 200 / 10) kept in the shared journal
//! (`worker::arm_budget`), built as `worker::bootstrap` builds it. Together they should use
//! ARM's budget (almost) fully and (almost) never be throttled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use onboarding_contract::commands::WorkloadRequest;
use onboarding_contract::{Command, OnboardTenant};
use onboarding_core::{Clock, NoRecorder, SystemClock};
use onboarding_journal::Journal;
use onboarding_journal::sqlite::SqliteJournal;
use worker::config::JournalConfig;

use super::harness::{self, Runtimes};
use super::report::{Block, Figure, Goal};

pub const NAME: &str = "arm-budget";
const TITLE: &str = "ARM write budget";
const BUCKET: u32 = 200;
const REFILL_PER_SEC: f64 = 10.0;
const REPLICAS: usize = 3;
/// AKS runs one agent-pool operation per cluster at a time, and the worker lines its sagas up
/// per cluster (`onboarding_saga::cluster_turns`): on one cluster the line, not ARM's budget,
/// would set the pace. The tenants are spread over this many clusters of the one subscription.
const CLUSTERS: usize = 8;

pub fn run(rts: &Runtimes, quick: bool) -> Result<Block> {
    let tenants: usize = if quick { 100 } else { 200 };
    let mut block = Block::new(
        NAME,
        TITLE,
        format!(
            "{tenants} onboardings queued at once, worked by {REPLICAS} replicas (each its own \
             queue and journal connections, ARM provisioner and local allowance; one ARM write \
             budget shared through the SQLite journal, `[arm]` {BUCKET} / {REFILL_PER_SEC}/s); \
             ARM simulator write bucket {BUCKET} tokens refilled at {REFILL_PER_SEC}/s per \
             subscription; the tenants spread over {CLUSTERS} clusters of that subscription (AKS \
             runs one pool operation per cluster at a time; cluster_turn_poll_ms 250); zero \
             latency otherwise; concurrency 16 per replica. The budget figure \
             counts the whole run, from the replicas' start to the last onboarding, against the \
             bucket's burst plus its refill over that time."
        ),
    );
    let sims = harness::start_sims(
        rts,
        sim::SimOptions {
            arm_write_bucket: Some((BUCKET, REFILL_PER_SEC)),
            ..sim::SimOptions::default()
        },
    )?;
    let dir = tempfile::tempdir()?;
    let mut config = harness::bench_config(dir.path(), &sims)?;
    config.arm.write_bucket = BUCKET;
    config.arm.write_refill_per_sec = REFILL_PER_SEC;
    // A saga waiting for its cluster's turn looks again soon: the simulator's pool operations
    // are instant.
    config.saga.cluster_turn_poll_ms = 250;
    let targets = harness::spread_over_clusters(&mut config, CLUSTERS)?;
    let config = config.normalised();
    config.validate()?;
    let JournalConfig::Sqlite { path: journal_path } = config.journal.clone() else {
        return Err(anyhow!("the benchmark runs on the SQLite journal"));
    };
    let (elapsed, states, budget) = rts.work.block_on(async {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut replicas = Vec::new();
        for i in 0..REPLICAS {
            // The budget's own connection to the journal file, as a separate process has.
            let journal: Arc<dyn Journal> = Arc::new(SqliteJournal::open(&journal_path)?);
            let arm = worker::bootstrap::arm_client_options(
                &config,
                journal,
                clock.clone(),
                Arc::new(NoRecorder),
            );
            let mut built = harness::build_context(config.clone(), arm).await?;
            built.cx.worker_id = format!("bench-{}-replica-{i}", std::process::id());
            replicas.push(built.cx);
        }
        let cx = replicas[0].clone();
        let mut events = cx.topic.subscribe("bench-arm-budget").await?;
        let names: Vec<String> = (0..tenants).map(|i| format!("ab-{i:05}")).collect();
        for (i, t) in names.iter().enumerate() {
            let mut c = OnboardTenant::new(harness::request_id("ab"), t);
            c.workload = Some(WorkloadRequest { replicas: 1 });
            c.target = Some(targets[i % CLUSTERS].clone());
            cx.queue
                .send(harness::command_message(&Command::Onboard(c)))
                .await?;
        }
        let start = Instant::now();
        let running: Vec<_> = replicas
            .iter()
            .map(|r| harness::RunningWorker::start(r.clone()))
            .collect();
        let limit = Duration::from_secs(60)
            + Duration::from_secs_f64(tenants as f64 * 6.0 / REFILL_PER_SEC);
        let mut done = 0;
        while done < tenants {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(anyhow!(
                    "only {} of {tenants} onboardings finished within {limit:?}",
                    done
                ));
            }
            let Some(ev) = events.next(left).await? else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_slice(&ev.body)?;
            match v["type"].as_str().unwrap_or_default() {
                "tenant.step_completed" => {}
                "tenant.onboarded" => done += 1,
                other => {
                    return Err(anyhow!(
                        "tenant {}: unexpected outcome {other}: {}",
                        v["subject"],
                        v["data"]
                    ));
                }
            }
        }
        let elapsed = start.elapsed();
        for r in running {
            r.stop().await?;
        }
        let states = harness::tenant_states(cx.journal.as_ref(), &names).await?;
        let budget = cx
            .journal
            .keys()
            .await?
            .into_iter()
            .filter(|k| k.starts_with(worker::arm_budget::KEY_PREFIX))
            .collect::<Vec<_>>();
        Ok::<_, anyhow::Error>((elapsed, states, budget))
    })?;

    let inventory = sims.arm.inventory();
    let recorded = sims.arm.recorded_requests();
    let write_attempts = recorded
        .iter()
        .filter(|r| r.method == "PUT" || r.method == "DELETE")
        .count() as f64;
    let throttled = inventory.counters.throttled as f64;
    let writes = write_attempts - throttled;
    let n = tenants as f64;
    let per_onboarding = writes / n;
    let limit = REFILL_PER_SEC / per_onboarding;
    // What ARM's bucket lets through from the replicas' start to the last onboarding: the burst
    // plus the refill over the run. Conservative: ramp-up and drain count against the worker.
    let allowed_writes = f64::from(BUCKET) + REFILL_PER_SEC * elapsed.as_secs_f64();
    block.push(
        Figure::new(
            "share of ARM's write budget used (writes accepted ÷ (bucket + refill × run))",
            writes / allowed_writes,
            "",
            3,
        )
        .goal(Goal::AtLeast(0.9)),
    );
    block.push(
        Figure::new(
            "throttled share of ARM writes (429s ÷ writes sent)",
            throttled / write_attempts * 100.0,
            "%",
            2,
        )
        .goal(Goal::AtMost(1.0)),
    );
    block.push(Figure::new(
        "throttled share of all ARM requests",
        throttled / inventory.counters.requests as f64 * 100.0,
        "%",
        2,
    ));
    block.push(Figure::new(
        "onboardings per second over the run",
        n / elapsed.as_secs_f64(),
        "/s",
        2,
    ));
    block.push(Figure::new(
        "bucket limit (refill ÷ writes per onboarding)",
        limit,
        "/s",
        2,
    ));
    block.push(Figure::new(
        "ARM writes per onboarding",
        per_onboarding,
        "",
        2,
    ));
    block.note(format!(
        "{} of {tenants} onboarded ({}) by {REPLICAS} replicas in {:.1} s, where ARM's bucket \
         allows {allowed_writes:.0} writes; {} ARM requests, {writes} writes accepted, \
         {throttled} throttled (429); shared budget documents in the journal: {}. The \
         burst lets the first onboardings through at once, so the rate over the run is above the \
         bucket's limit, by the burst's share.",
        states.get("Onboarded").copied().unwrap_or(0),
        harness::describe_states(&states),
        elapsed.as_secs_f64(),
        inventory.counters.requests,
        budget.join(", "),
    ));
    Ok(block)
}
