//! Benchmark 5: cold start, from spawning the release `worker` binary to its first message
//! settled, on the embedded default with instant simulators and the message already queued.
//!
//! The goal case is a message the worker settles in one pass: an update (a new request id) for a
//! tenant that is already onboarded, so every step runs and converges (create-or-update) but no
//! long-running operation is started. Two more cases for context: an invalid message (settled by
//! dead-lettering: start-up alone), and a brand-new tenant, whose node pool is a long-running
//! operation that the worker polls no sooner than one second after it starts.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use onboarding_transport::{OutgoingMessage, Queue};
use worker::config::Config;

use super::harness::{self, Runtimes};
use super::report::{Block, Figure, Goal};

pub const NAME: &str = "cold-start";
const TITLE: &str = "Cold start";
const GOAL_MS: f64 = 200.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Settled {
    /// Nothing left on the queue.
    Drained,
    /// One more dead letter than before.
    DeadLettered(u64),
}

struct Child {
    process: std::process::Child,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Spawn the worker and time until the queued message is settled.
fn time_one(
    rts: &Runtimes,
    worker_bin: &std::path::Path,
    config_file: &std::path::Path,
    log: &std::path::Path,
    queue: &Arc<dyn Queue>,
    message: OutgoingMessage,
    settled: Settled,
) -> Result<(Duration, Option<Duration>)> {
    rts.work.block_on(queue.send(message))?;
    let log_path = log;
    let log_from = std::fs::metadata(log_path).map_or(0, |m| m.len());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)?;
    let spawned_at = std::time::SystemTime::now();
    let start = Instant::now();
    let process = std::process::Command::new(worker_bin)
        .arg("--config")
        .arg(config_file)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", worker_bin.display()))?;
    let mut child = Child { process };
    let limit = Duration::from_secs(30);
    let settled_after = rts.work.block_on(async {
        loop {
            let s = queue.stats().await?;
            let done = match settled {
                Settled::Drained => harness::queue_total(&s) == 0,
                Settled::DeadLettered(before) => s.dead_lettered > before,
            };
            if done {
                return Ok(start.elapsed());
            }
            if let Ok(Some(status)) = child.process.try_wait() {
                return Err(anyhow!("the worker exited early ({status})"));
            }
            if start.elapsed() > limit {
                return Err(anyhow!(
                    "no message settled within {limit:?} (queue: {s:?})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })?;
    drop(child);
    let text = std::fs::read(log_path).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(log_from as usize..).unwrap_or_default());
    let started = text
        .lines()
        .find(|l| l.contains("worker started"))
        .and_then(log_time)
        .and_then(|t| t.duration_since(spawned_at).ok());
    Ok((settled_after, started))
}

/// The UTC timestamp that opens a line of the worker's text log
/// (`2026-11-24T11:39:52.582935Z`, possibly wrapped in colour codes).
fn log_time(line: &str) -> Option<std::time::SystemTime> {
    let bytes = line.as_bytes();
    let start = (0..=bytes.len().checked_sub(26)?).find(|&i| {
        bytes[i..i + 4].iter().all(u8::is_ascii_digit)
            && bytes[i + 4] == b'-'
            && bytes[i + 10] == b'T'
    })?;
    let stamp = line.get(start..start + 26)?;
    let num = |a: usize, b: usize| stamp.get(a..b).and_then(|v| v.parse::<i64>().ok());
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss, micros) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 26)?);
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + hh * 3_600 + mm * 60 + ss;
    let micros = u64::try_from(secs).ok()? * 1_000_000 + u64::try_from(micros).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_micros(micros))
}

async fn finished_as(
    cx_journal: &dyn onboarding_journal::Journal,
    tenant: &str,
    request: &str,
) -> Result<String> {
    let rec = cx_journal
        .load(tenant)
        .await?
        .ok_or_else(|| anyhow!("tenant {tenant} has no journal record"))?;
    let finished = rec.value["finished"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    finished
        .iter()
        .find(|f| f["request_id"] == request || f["requestId"] == request)
        .and_then(|f| f["event"]["type"].as_str().map(str::to_string))
        .ok_or_else(|| anyhow!("request {request} of tenant {tenant} did not finish"))
}

pub fn run(rts: &Runtimes, quick: bool) -> Result<Block> {
    let runs = if quick { 3 } else { 7 };
    let worker_bin = harness::worker_binary()?;
    let sims = harness::start_sims(rts, sim::SimOptions::default())?;
    let dir = tempfile::tempdir()?;
    let config: Config = harness::bench_config(dir.path(), &sims)?;
    let config_file = dir.path().join("worker.toml");
    std::fs::write(&config_file, harness::to_toml(&config)?)?;
    let log = dir.path().join("worker.log");

    // The tenant that the update case updates: onboarded once by an in-process worker.
    let tenant = "cold-existing";
    rts.work.block_on(async {
        let mut c = config.clone();
        c.worker.receive_wait_ms = 50;
        let built =
            harness::build_context(c, onboarding_azure::ArmClientOptions::default()).await?;
        let running = harness::RunningWorker::start(built.cx.clone());
        built
            .cx
            .queue
            .send(harness::onboard_message(
                tenant,
                &harness::request_id("cold"),
            ))
            .await?;
        harness::wait_until_drained(
            built.cx.queue.as_ref(),
            Duration::from_secs(30),
            Duration::from_millis(10),
        )
        .await?;
        running.stop().await
    })?;

    let (queue, _topic) = rts.work.block_on(harness::open_transport(&config))?;
    let journal = onboarding_journal::sqlite::SqliteJournal::open(&dir.path().join("journal.db"))?;
    let mut update = Vec::new();
    let mut started = Vec::new();
    let mut invalid = Vec::new();
    let mut fresh = Vec::new();
    for i in 0..runs {
        let request = harness::request_id("cold-update");
        let (d, up) = time_one(
            rts,
            &worker_bin,
            &config_file,
            &log,
            &queue,
            harness::onboard_message(tenant, &request),
            Settled::Drained,
        )?;
        if let Some(up) = up {
            started.push(up.as_secs_f64() * 1000.0);
        }
        let outcome = rts.work.block_on(finished_as(&journal, tenant, &request))?;
        if outcome != "tenant.onboarded" {
            return Err(anyhow!("the update of {tenant} ended in {outcome}"));
        }
        update.push(d.as_secs_f64() * 1000.0);

        let before = rts.work.block_on(queue.stats())?.dead_lettered;
        let mut bad =
            harness::onboard_message(&format!("cold-bad-{i}"), &harness::request_id("cold-bad"));
        bad.body = br#"{"schemaVersion": "1.0", "kind": "OnboardTenant", "tenantId": 42}"#.to_vec();
        let (d, _) = time_one(
            rts,
            &worker_bin,
            &config_file,
            &log,
            &queue,
            bad,
            Settled::DeadLettered(before),
        )?;
        invalid.push(d.as_secs_f64() * 1000.0);

        let new_tenant = format!("cold-new-{i}");
        let request = harness::request_id("cold-new");
        let (d, _) = time_one(
            rts,
            &worker_bin,
            &config_file,
            &log,
            &queue,
            harness::onboard_message(&new_tenant, &request),
            Settled::Drained,
        )?;
        let outcome = rts
            .work
            .block_on(finished_as(&journal, &new_tenant, &request))?;
        if outcome != "tenant.onboarded" {
            return Err(anyhow!("the onboarding of {new_tenant} ended in {outcome}"));
        }
        fresh.push(d.as_secs_f64() * 1000.0);
    }

    let mut block = Block::new(
        NAME,
        TITLE,
        format!(
            "The release `worker` binary spawned {runs} times per case on the embedded default \
             (configuration file with the temp paths and the simulators' addresses, default log \
             level) with one message already queued; time from spawn to the message settled, \
             read by polling the queue every millisecond. Median."
        ),
    );
    block.push(
        Figure::new(
            "spawn → first message settled (update of an onboarded tenant)",
            harness::median(&update),
            "ms",
            0,
        )
        .goal(Goal::AtMost(GOAL_MS)),
    );
    block.push(Figure::new(
        "spawn → \"worker started\" logged (configuration, runtime, SQLite files, clients)",
        harness::median(&started),
        "ms",
        0,
    ));
    block.push(Figure::new(
        "spawn → invalid message dead-lettered (start-up alone)",
        harness::median(&invalid),
        "ms",
        0,
    ));
    block.push(Figure::new(
        "spawn → new tenant onboarded (node pool polled after ≥ 1 s)",
        harness::median(&fresh),
        "ms",
        0,
    ));
    block.push(Figure::new(
        "slowest update run",
        update.iter().copied().fold(f64::NAN, f64::max),
        "ms",
        0,
    ));
    block.note(format!(
        "runs in order (ms), the cases interleaved, so a slow start shows in all three: update {:?}; invalid {:?}; new tenant {:?}",
        update.iter().map(|v| v.round()).collect::<Vec<_>>(),
        invalid.iter().map(|v| v.round()).collect::<Vec<_>>(),
        fresh.iter().map(|v| v.round()).collect::<Vec<_>>()
    ));
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_are_read_as_utc() {
        let t = log_time("\u{1b}[2m2026-11-24T11:39:52.582935Z\u{1b}[0m  INFO worker started")
            .expect("parses");
        let secs = t.duration_since(std::time::UNIX_EPOCH).expect("after 1970");
        assert_eq!(secs, Duration::from_micros(1_795_520_392_582_935));
        assert!(log_time("no time here").is_none());
    }
}
