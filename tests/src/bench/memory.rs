//! Benchmark 4: resident memory of a worker process with thousands of sagas waiting.
//!
//! A worker runs as a child process (so its memory is its own) on the embedded default, against
//! simulators in this process where creating an agent pool takes 10 minutes. The backlog of
//! onboardings is queued first; the worker advances each saga once: every step but the node pool
//! (and the workload, which needs it) completes, and the saga parks on a scheduled continuation.
//! The simulator, like AKS, runs one agent-pool operation per cluster at a time, so one saga polls
//! the 10-minute operation and the others wait out `OperationNotAllowed` (409, transient) on
//! continuations an hour away; either way the saga lives in the journal and the queue, not in
//! the worker's memory. When every saga is parked (the queue holds one scheduled message per
//! tenant and nothing is locked), VmRSS of the child is read.
//!
//! The child is this benchmark binary re-run as `bench worker-process --config FILE`, which does
//! what `worker run` does (load the configuration, build the clients, run the message loop) with
//! one difference: the ARM client's write budget is lifted. The embedded default keeps ARM's own
//! limit of 10 writes a second, which would stretch parking 10,000 sagas (five writes each) to
//! over an hour; the budget is not a configuration setting, so the real binary cannot be told.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use sim::faults::LatencyProfile;

use super::harness::{self, Runtimes};
use super::procstat;
use super::report::{Block, Figure, Goal};

pub const NAME: &str = "memory";
const TITLE: &str = "Memory at scale";
const GOAL_MB: f64 = 100.0;
/// The hidden subcommand that makes this binary a worker process.
pub const WORKER_PROCESS: &str = "worker-process";

/// Clusters the sagas are spread over: few, as in production (every target holds its own
/// clients), yet lines short enough to stay small journal documents.
const CLUSTERS: usize = 10;

/// `bench worker-process --config FILE`: what `worker run` does (configuration from the file and
/// `ONBOARD__*`, clients, the message loop until killed), with the ARM write budget lifted.
pub fn worker_process(config_file: &std::path::Path) -> Result<()> {
    let config = worker::config::Config::load(Some(config_file), std::env::vars())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let built = harness::build_context(config, harness::unbudgeted_arm()).await?;
        // Never told to stop: the benchmark kills this process when it has its figures.
        let (_stop, rx) = tokio::sync::watch::channel(false);
        worker::runner::Runner::new(built.cx).run(rx).await;
        Ok(())
    })
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn run(rts: &Runtimes, quick: bool) -> Result<Block> {
    let sagas: usize = std::env::var("BENCH_MEMORY_SAGAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1_000 } else { 10_000 });
    let this = std::env::current_exe()?;
    let mut profile = LatencyProfile::zero();
    profile.scale = 1.0;
    profile.operations = vec![("arm.agent_pools.create".into(), 600_000)];
    let sims = harness::start_sims(
        rts,
        sim::SimOptions {
            latency: profile,
            ..sim::SimOptions::default()
        },
    )?;
    let mut dir = tempfile::tempdir()?;
    if std::env::var_os("BENCH_KEEP").is_some() {
        dir.disable_cleanup(true);
        println!("bench: memory: files kept in {}", dir.path().display());
    }
    let mut config = harness::bench_config(dir.path(), &sims)?;
    // One short pass per message; transient waits an hour away, so nothing wakes during the run.
    config.saga.message_budget_ms = 2_000;
    config.saga.step_retry_budget_ms = 100;
    config.saga.continuation_base_delay_ms = 3_600_000;
    config.saga.continuation_max_delay_ms = 7_200_000;
    // Spread over a few clusters (AKS runs one pool operation per cluster at a time); those in a
    // cluster's line look again only after the run.
    let clusters = harness::spread_over_clusters(&mut config, CLUSTERS)?;
    config.saga.cluster_turn_poll_ms = 3_600_000;
    let config = config.normalised();
    let concurrency = config.worker.concurrency;
    let file = dir.path().join("worker.toml");
    std::fs::write(&file, harness::to_toml(&config)?)?;

    let (queue, _topic) = rts.work.block_on(harness::open_transport(&config))?;
    let names: Vec<String> = (0..sagas).map(|i| format!("mem-{i:05}")).collect();
    let sent = Instant::now();
    rts.work.block_on(async {
        for (i, t) in names.iter().enumerate() {
            let target = clusters[i % clusters.len()].as_str();
            queue
                .send(harness::onboard_message_to(
                    t,
                    &harness::request_id("mem"),
                    Some(target),
                ))
                .await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let send_secs = sent.elapsed().as_secs_f64();

    let log = std::fs::File::create(dir.path().join("worker.log"))?;
    let start = Instant::now();
    let mut child = std::process::Command::new(&this)
        .arg(WORKER_PROCESS)
        .arg("--config")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {} {WORKER_PROCESS}", this.display()))?;
    let pid = child.id();
    let limit = Duration::from_secs(
        std::env::var("BENCH_MEMORY_LIMIT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 300 } else { 1_800 }),
    );
    let mut peak_while_filling = 0u64;
    // Does parking slow down as the backlog of parked sagas grows, and whose CPU time grows?
    let mut progress: Vec<Sample> = Vec::new();
    let outcome = rts.work.block_on(async {
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(anyhow!(
                    "the worker exited early ({status}); see its log in {}",
                    dir.path().join("worker.log").display()
                ));
            }
            if let Some(m) = procstat::memory(pid) {
                peak_while_filling = peak_while_filling.max(m.rss);
            }
            let s = queue.stats().await?;
            progress.push(Sample {
                secs: start.elapsed().as_secs_f64(),
                parked: s.scheduled,
                worker_cpu: procstat::pid_cpu(pid)
                    .unwrap_or_default()
                    .total()
                    .as_secs_f64(),
                sim_cpu: procstat::threads_cpu(harness::SIM_THREADS)
                    .total()
                    .as_secs_f64(),
            });
            if s.scheduled + s.active + s.locked >= sagas as u64 && s.active + s.locked <= 1 {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                return Err(anyhow!(
                    "not every saga parked within {limit:?} (queue: {s:?})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let parked_after = match outcome {
        Ok(d) => d,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(e.context(format!(
                "last lines of the worker's log:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
    };
    // Let the allocator settle, then sample a few times.
    let mut rss = 0u64;
    let mut peak = 0u64;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        if let Some(m) = procstat::memory(pid) {
            rss = rss.max(m.rss);
            peak = peak.max(m.peak);
        }
    }
    let cpu = procstat::pid_cpu(pid).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();

    // What the journal says about the parked sagas (read after the worker is gone).
    let journal = onboarding_journal::sqlite::SqliteJournal::open(&dir.path().join("journal.db"))?;
    let (waiting, other) = rts.work.block_on(pool_waits(&journal, &names))?;
    let db_bytes: u64 = ["journal.db", "journal.db-wal", "queue.db", "queue.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();

    let mut block = Block::new(
        NAME,
        TITLE,
        format!(
            "{sagas} onboardings queued, then a worker child process (`bench {WORKER_PROCESS}`: \
             what `worker run` does, on the embedded default, concurrency {concurrency}, ARM \
             write budget lifted) advances each once; agent pool creation takes 10 minutes in the \
             simulator. RSS read from /proc/<pid>/status once every saga is parked."
        ),
    );
    block.push(
        Figure::new(
            format!("worker RSS with {sagas} sagas parked"),
            mb(rss),
            "MB",
            1,
        )
        .goal(Goal::AtMost(GOAL_MB)),
    );
    block.push(Figure::new("worker peak RSS (VmHWM)", mb(peak), "MB", 1));
    block.push(Figure::new(
        "time to park every saga",
        parked_after.as_secs_f64(),
        "s",
        1,
    ));
    block.push(Figure::new(
        "parking rate",
        sagas as f64 / parked_after.as_secs_f64(),
        "sagas/s",
        1,
    ));
    let at = |share: f64| {
        progress
            .iter()
            .find(|p| p.parked as f64 >= share * sagas as f64)
            .or(progress.last())
            .copied()
            .unwrap_or_default()
    };
    let (q1, q3, end) = (at(0.25), at(0.75), at(1.0));
    let begin = Sample {
        sim_cpu: progress.first().map_or(0.0, |p| p.sim_cpu),
        ..Sample::default()
    };
    let per_saga = |a: &Sample, b: &Sample| {
        let n = (b.parked as f64 - a.parked as f64).max(1.0);
        (
            n / (b.secs - a.secs).max(1e-9),
            (b.worker_cpu - a.worker_cpu) * 1000.0 / n,
            (b.sim_cpu - a.sim_cpu) * 1000.0 / n,
        )
    };
    let (r1, w1, s1) = per_saga(&begin, &q1);
    let (r4, w4, s4) = per_saga(&q3, &end);
    let cause = if s4 - s1 > (w4 - w1).max(0.0) * 2.0 {
        "the simulators' CPU per saga grew, the worker's did not: the slowdown is the test \
         rig's (the ARM simulator scans every identity and role assignment on each role \
         assignment PUT and shifts its full 10,000-entry request log on every request)"
    } else if w4 > w1 * 1.5 {
        "the worker's CPU per saga grew with the number of parked sagas"
    } else {
        "CPU per saga stayed flat: the time went to waiting (SQLite fsyncs, other load)"
    };
    block.note(format!(
        "first quarter: {r1:.1} sagas/s, worker CPU {w1:.1} ms and simulators' CPU {s1:.1} ms per \
         saga; last quarter: {r4:.1} sagas/s, {w4:.1} ms and {s4:.1} ms: {cause}."
    ));
    block.note(format!(
        "journal: {waiting} sagas parked with the node pool waiting (operation or retry) and every other step but the workload done, {other} otherwise; \
         queueing {sagas} messages took {send_secs:.1} s; worker CPU {:.1} s ({:.2} ms per saga); \
         SQLite files {:.1} MB; peak RSS sampled while filling {:.1} MB.",
        cpu.total().as_secs_f64(),
        cpu.total().as_secs_f64() * 1000.0 / sagas as f64,
        mb(db_bytes),
        mb(peak_while_filling),
    ));
    Ok(block)
}

/// One look at the filling queue.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    secs: f64,
    parked: u64,
    /// Seconds of CPU time so far.
    worker_cpu: f64,
    sim_cpu: f64,
}

/// Sagas parked as expected (node pool waiting, every step but the workload done), and the rest.
async fn pool_waits(
    journal: &onboarding_journal::sqlite::SqliteJournal,
    names: &[String],
) -> Result<(usize, usize)> {
    use onboarding_journal::Journal;
    let mut parked = 0;
    let mut other = 0;
    for t in names {
        let rec = journal.load(t).await?;
        let steps = rec
            .as_ref()
            .and_then(|v| v.value.pointer("/active/steps"))
            .and_then(|s| s.as_object());
        let ok = steps.is_some_and(|steps| {
            steps.iter().all(|(name, st)| {
                let forward = st["forward"].as_str().unwrap_or_default();
                match name.as_str() {
                    "node_pool" => forward == "waiting",
                    "workload" => forward == "pending",
                    _ => forward == "done",
                }
            })
        });
        if ok {
            parked += 1;
        } else {
            other += 1;
        }
    }
    Ok((parked, other))
}
