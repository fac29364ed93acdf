//! Benchmark: 32 onboardings sent at once to one cluster, three worker replicas in this process
//! sharing the embedded queue and journal, pool operations of 2.4 s (4 minutes at 1/100 of real
//! time) that the simulator runs one at a time per cluster, as AKS does. Prints the share of the
//! run during which the cluster had a pool operation running (the line keeps it busy while
//! tenants wait) and the makespan over the sum of the pool operations (no time lost between
//! them).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use sim::faults::LatencyProfile;

use super::harness::{self, Runtimes};
use super::report::{Block, Figure, Goal};

pub const NAME: &str = "cluster-burst";
const TITLE: &str = "One cluster, a burst of onboardings";
const REPLICAS: usize = 3;
/// Simulated time: 1/100 of real time.
const SCALE: f64 = 0.01;

pub fn run(rts: &Runtimes, quick: bool) -> Result<Block> {
    let tenants = if quick { 12 } else { 32 };
    let mut block = Block::new(
        NAME,
        TITLE,
        format!(
            "{tenants} onboardings queued at once for one cluster, {REPLICAS} in-process worker \
             replicas on one embedded queue and journal, simulator latencies at {SCALE} of real \
             time (a pool operation 2.4 s), the shipped saga settings except the line's poll \
             interval, scaled the same way (50 ms for 5 s)"
        ),
    );
    let sims = harness::start_sims(
        rts,
        sim::SimOptions {
            latency: LatencyProfile::realistic(SCALE),
            ..sim::SimOptions::default()
        },
    )?;
    let dir = tempfile::tempdir()?;
    let mut config = harness::bench_config(dir.path(), &sims)?;
    config.saga.cluster_turn_poll_ms = 50;
    let (sent, finished) = rts.work.block_on(async {
        let mut replicas = Vec::new();
        for i in 0..REPLICAS {
            let mut built =
                harness::build_context(config.clone(), harness::unbudgeted_arm()).await?;
            built.cx.worker_id = format!("bench-{}-burst-{i}", std::process::id());
            replicas.push(built.cx);
        }
        let cx = replicas[0].clone();
        let names: Vec<String> = (0..tenants).map(|i| format!("burst-{i:03}")).collect();
        let sent = Instant::now();
        for t in &names {
            cx.queue
                .send(harness::onboard_message(t, &harness::request_id("burst")))
                .await?;
        }
        let running: Vec<_> = replicas
            .iter()
            .map(|r| harness::RunningWorker::start(r.clone()))
            .collect();
        let limit = Duration::from_secs(120 + 10 * tenants as u64);
        harness::wait_until_drained(cx.queue.as_ref(), limit, Duration::from_millis(50)).await?;
        let finished = Instant::now();
        for r in running {
            r.stop().await?;
        }
        let states = harness::tenant_states(cx.journal.as_ref(), &names).await?;
        if states.get("Onboarded") != Some(&tenants) {
            return Err(anyhow!(
                "not every tenant onboarded: {}",
                harness::describe_states(&states)
            ));
        }
        Ok::<_, anyhow::Error>((sent, finished))
    })?;
    let spans = sims.arm.pool_operations();
    if spans.len() != tenants {
        block.note(format!(
            "{} pool operations for {tenants} tenants: a pool was written more than once",
            spans.len()
        ));
    }
    let busy: Duration = spans.iter().map(|s| s.ends - s.began).sum();
    let first = spans
        .iter()
        .map(|s| s.began)
        .min()
        .ok_or_else(|| anyhow!("no pool operation ran"))?;
    let last = spans.iter().map(|s| s.ends).max().unwrap_or(first);
    let run = last.max(finished) - sent;
    block.push(
        Figure::new(
            "share of the run with a pool operation running on the cluster",
            busy.as_secs_f64() / run.as_secs_f64(),
            "",
            3,
        )
        .goal(Goal::AtLeast(0.95)),
    );
    block.push(
        Figure::new(
            "makespan of the pool operations ÷ their sum",
            (last - first).as_secs_f64() / busy.as_secs_f64(),
            "",
            3,
        )
        .goal(Goal::AtMost(1.05)),
    );
    block.push(Figure::new(
        "run, from sending to the last tenant onboarded",
        run.as_secs_f64(),
        "s",
        1,
    ));
    block.note(
        "The run includes the first saga's steps before its pool (identity, container) and the \
         last one's after it (service account, guard rails, workload): a few hundred ms at this \
         scale, well under 1 % at real time.",
    );
    Ok(block)
}
