//! Benchmark 2: onboardings per second on the embedded default with instant simulators, and what
//! each onboarding costs: CPU time and journal writes.
//!
//! The backlog is queued first, then the in-process worker drains it. CPU time is read from
//! `/proc` for the worker runtime's threads alone (the simulators run on their own runtime in
//! the same process) and for the whole process. The ARM client's write budget is lifted so the
//! figure is the worker's own capacity, not ARM's write limit (benchmark `arm-budget` covers that).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::harness::{self, Runtimes, WORKER_THREADS};
use super::procstat;
use super::report::{Block, Figure};

pub const NAME: &str = "throughput";
const TITLE: &str = "Throughput and cost";
/// Clusters the tenants are spread over.
const CLUSTERS: usize = 50;

struct Measured {
    concurrency: usize,
    tenants: usize,
    send_secs: f64,
    drain: Duration,
    worker_cpu: Duration,
    process_cpu: Duration,
    journal_writes: u64,
    states: String,
    onboarded: usize,
    queue_messages: u64,
}

fn measure(rts: &Runtimes, concurrency: usize, tenants: usize) -> Result<Measured> {
    let sims = harness::start_sims(rts, sim::SimOptions::default())?;
    let dir = tempfile::tempdir()?;
    let mut config = harness::bench_config(dir.path(), &sims)?;
    config.worker.concurrency = concurrency;
    // The worker's own capacity, not AKS's one pool operation per cluster (benchmark
    // `cluster-burst` covers that): a few tenants per cluster, and a saga in a cluster's line
    // looks again soon (the simulator's pool operations are instant).
    let clusters = harness::spread_over_clusters(&mut config, CLUSTERS)?;
    config.saga.cluster_turn_poll_ms = 50;
    let config = config.normalised();
    rts.work.block_on(async {
        let built = harness::build_context(config, harness::unbudgeted_arm()).await?;
        let cx = built.cx.clone();
        let names: Vec<String> = (0..tenants)
            .map(|i| format!("tp{concurrency}-{i:05}"))
            .collect();
        let sent = Instant::now();
        for (i, t) in names.iter().enumerate() {
            let target = clusters[i % clusters.len()].as_str();
            cx.queue
                .send(harness::onboard_message_to(
                    t,
                    &harness::request_id("tp"),
                    Some(target),
                ))
                .await?;
        }
        let send_secs = sent.elapsed().as_secs_f64();
        let cpu0 = procstat::process_cpu();
        let wcpu0 = procstat::threads_cpu(WORKER_THREADS);
        let writes0 = built.journal.writes();
        let start = Instant::now();
        let running = harness::RunningWorker::start(cx.clone());
        let limit = Duration::from_secs(60 + tenants as u64);
        harness::wait_until_drained(cx.queue.as_ref(), limit, Duration::from_millis(20)).await?;
        let drain = start.elapsed();
        let worker_cpu = procstat::threads_cpu(WORKER_THREADS).since(wcpu0).total();
        let process_cpu = procstat::process_cpu().since(cpu0).total();
        let journal_writes = built.journal.writes() - writes0;
        let received = running.runner.stats().snapshot()[0];
        running.stop().await?;
        let states = harness::tenant_states(cx.journal.as_ref(), &names).await?;
        let onboarded = states.get("Onboarded").copied().unwrap_or(0);
        Ok(Measured {
            concurrency,
            tenants,
            send_secs,
            drain,
            worker_cpu,
            process_cpu,
            journal_writes,
            states: harness::describe_states(&states),
            onboarded,
            queue_messages: received,
        })
    })
}

pub fn run(rts: &Runtimes, quick: bool) -> Result<Block> {
    let tenants = if quick { 100 } else { 300 };
    let levels = [16usize, 32];
    let mut block = Block::new(
        NAME,
        TITLE,
        format!(
            "{tenants} onboardings (all 9 steps) queued first, then drained by the in-process \
             worker on the embedded default (SQLite queue and journal, synchronous=FULL) at \
             concurrency {levels:?}; simulators with zero latency; ARM write budget lifted."
        ),
    );
    for c in levels {
        let m = measure(rts, c, tenants)?;
        if m.onboarded != m.tenants {
            return Err(anyhow!(
                "concurrency {c}: only {} of {} tenants onboarded ({})",
                m.onboarded,
                m.tenants,
                m.states
            ));
        }
        let n = m.tenants as f64;
        block.push(Figure::new(
            format!("onboardings per second (concurrency {})", m.concurrency),
            n / m.drain.as_secs_f64(),
            "/s",
            1,
        ));
        block.push(Figure::new(
            format!("worker CPU per onboarding (concurrency {})", m.concurrency),
            m.worker_cpu.as_secs_f64() * 1000.0 / n,
            "ms",
            1,
        ));
        block.push(Figure::new(
            format!(
                "process CPU per onboarding, simulators included (concurrency {})",
                m.concurrency
            ),
            m.process_cpu.as_secs_f64() * 1000.0 / n,
            "ms",
            1,
        ));
        block.push(Figure::new(
            format!(
                "journal writes per onboarding (concurrency {})",
                m.concurrency
            ),
            m.journal_writes as f64 / n,
            "",
            1,
        ));
        block.note(format!(
            "concurrency {}: drained in {:.1} s, {} queue deliveries ({:.2} per onboarding), \
             worker CPU {:.0} % of one core over the drain; queueing the backlog took {:.1} s \
             ({:.0} sends/s); journal: {}.",
            m.concurrency,
            m.drain.as_secs_f64(),
            m.queue_messages,
            m.queue_messages as f64 / n,
            m.worker_cpu.as_secs_f64() / m.drain.as_secs_f64() * 100.0,
            m.send_secs,
            n / m.send_secs,
            m.states
        ));
        let held = m.concurrency as f64 * m.drain.as_secs_f64() / n;
        block.note(format!(
            "concurrency {}: each onboarding held a worker slot for {held:.2} s on average, \
             most of it waiting for its node pool: the saga holding its cluster's turn looks at \
             the pool operation every saga.cluster_turn_poll_ms (50 ms here), in process as the \
             wait fits the message budget. Tenants are spread over {CLUSTERS} clusters, since \
             AKS runs one pool operation per cluster at a time (benchmark cluster-burst).",
            m.concurrency
        ));
    }
    Ok(block)
}
