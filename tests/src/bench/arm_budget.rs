//! Benchmark 3: sustained onboardings against ARM's write limit.
//!
//! The ARM simulator enforces a per-subscription write token bucket (429 +
//! `SubscriptionRequestsThrottled` when empty) and the worker's client-side write budget
//! (`onboarding_azure::budget`) is set to the same bucket, so the worker should queue its writes
//! politely: close to the bucket's refill rate and (almost) never throttled. The bucket is small
//! so the run is short. The budget is not a `Config` setting, so the ARM provisioner is built
//! here with `ArmProvisioner::from_targets(targets, ArmClientOptions { write_budget, .. })`.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use onboarding_azure::{ArmClientOptions, WriteBudgetConfig};

use super::harness::{self, Runtimes};
use super::report::{Block, Figure, Goal};

pub const NAME: &str = "arm-budget";
const TITLE: &str = "ARM write budget";
const BUCKET: u32 = 20;
const REFILL_PER_SEC: f64 = 20.0;

pub fn run(rts: &Runtimes, quick: bool) -> Result<Block> {
    let tenants: usize = if quick { 60 } else { 150 };
    let mut block = Block::new(
        NAME,
        TITLE,
        format!(
            "{tenants} onboardings queued at once; ARM simulator write bucket {BUCKET} tokens \
             refilled at {REFILL_PER_SEC}/s per subscription, the worker's client-side budget the \
             same; zero latency otherwise; concurrency 16. The goal figure counts the whole run, \
             from the first write to the last onboarding, against the bucket's burst plus its \
             refill over that time."
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
    let config = harness::bench_config(dir.path(), &sims)?;
    let arm = ArmClientOptions {
        write_budget: WriteBudgetConfig {
            bucket_size: BUCKET,
            refill_per_sec: REFILL_PER_SEC,
        },
        ..ArmClientOptions::default()
    };
    let (done_at, elapsed, states) = rts.work.block_on(async {
        let built = harness::build_context(config, arm).await?;
        let cx = built.cx.clone();
        let mut events = cx.topic.subscribe("bench-arm-budget").await?;
        let names: Vec<String> = (0..tenants).map(|i| format!("ab-{i:05}")).collect();
        for t in &names {
            cx.queue
                .send(harness::onboard_message(t, &harness::request_id("ab")))
                .await?;
        }
        let start = Instant::now();
        let running = harness::RunningWorker::start(cx.clone());
        let limit = Duration::from_secs(60)
            + Duration::from_secs_f64(tenants as f64 * 6.0 / REFILL_PER_SEC);
        let mut done_at = Vec::new();
        while done_at.len() < tenants {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(anyhow!(
                    "only {} of {tenants} onboardings finished within {limit:?}",
                    done_at.len()
                ));
            }
            let Some(ev) = events.next(left).await? else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_slice(&ev.body)?;
            match v["type"].as_str().unwrap_or_default() {
                "tenant.step_completed" => {}
                "tenant.onboarded" => done_at.push(start.elapsed()),
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
        running.stop().await?;
        let states = harness::tenant_states(cx.journal.as_ref(), &names).await?;
        Ok::<_, anyhow::Error>((done_at, elapsed, states))
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
    let (lo, hi) = (tenants / 10, tenants * 9 / 10);
    let sustained = (hi - lo) as f64 / (done_at[hi - 1] - done_at[lo]).as_secs_f64();
    let limit = REFILL_PER_SEC / per_onboarding;
    // What the bucket lets through from the first write to the last onboarding: the burst plus
    // the refill over the run. Conservative: ramp-up and drain count against the worker.
    let allowed = (f64::from(BUCKET) + REFILL_PER_SEC * elapsed.as_secs_f64()) / per_onboarding;
    block.push(
        Figure::new(
            "onboardings / what the bucket allows over the run",
            n / allowed,
            "",
            3,
        )
        .goal(Goal::AtLeast(0.9)),
    );
    block.push(
        Figure::new(
            "throttled share of ARM writes",
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
        "sustained rate (10th–90th percentile) / bucket limit",
        sustained / limit,
        "",
        3,
    ));
    block.push(Figure::new(
        "sustained onboardings per second",
        sustained,
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
        "{} of {tenants} onboarded ({}) in {:.1} s, where the bucket allows {allowed:.1}; {} ARM \
         requests, {writes} writes accepted, {throttled} throttled (429). The percentile rate can \
         exceed the limit a little: sagas finishing inside the window made some of their writes \
         before it.",
        states.get("Onboarded").copied().unwrap_or(0),
        harness::describe_states(&states),
        elapsed.as_secs_f64(),
        inventory.counters.requests,
    ));
    Ok(block)
}
