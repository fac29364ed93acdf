//! What every benchmark needs: two named runtimes (simulators apart from the worker, so CPU time
//! can be split by thread name), the simulators on loopback, a configuration on temp SQLite files,
//! a worker `Context` built like `worker::bootstrap` does (with ARM client options of our
//! choosing), messages shaped like the producer's, and waiting for the queue to drain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use onboarding_azure::{ArmClientOptions, ArmProvisioner};
use onboarding_contract::commands::WorkloadRequest;
use onboarding_contract::{Command, OnboardTenant};
use onboarding_core::{Clock, SystemClock};
use onboarding_journal::Journal;
use onboarding_journal::sqlite::SqliteJournal;
use onboarding_kube::KubeApplier;
use onboarding_transport::envelope;
use onboarding_transport::{OutgoingMessage, Queue, QueueStats};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use worker::config::{Config, JournalConfig, TransportConfig};
use worker::context::Context;
use worker::runner::Runner;

/// Thread-name prefixes of the two runtimes (names are cut to 15 bytes by the kernel).
pub const WORKER_THREADS: &str = "bench-worker";
pub const SIM_THREADS: &str = "bench-sim";

/// The simulators run on one runtime, the worker on another, so that `/proc` tells their CPU
/// time apart. Pool threads are kept alive for the whole run: a thread that ends takes its CPU
/// counters with it.
#[derive(Debug)]
pub struct Runtimes {
    pub sims: Runtime,
    pub work: Runtime,
}

impl Runtimes {
    pub fn new() -> Result<Self> {
        let build = |name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(name)
                .thread_keep_alive(Duration::from_secs(24 * 3600))
                .enable_all()
                .build()
                .with_context(|| format!("cannot build the {name} runtime"))
        };
        Ok(Self {
            sims: build(SIM_THREADS)?,
            work: build(WORKER_THREADS)?,
        })
    }
}

/// Both simulators on free loopback ports, served by the simulator runtime. The benchmarks
/// measure the worker, not the subscription: they run hundreds of pools, far past the
/// simulator's default regional vCPU quota, so the quota is lifted here (and only here).
pub fn start_sims(rts: &Runtimes, mut options: sim::SimOptions) -> Result<sim::Running> {
    options.arm_behaviour.vcpu_quota = None;
    let any: SocketAddr = "127.0.0.1:0"
        .parse()
        .context("parse the loopback address")?;
    rts.sims
        .block_on(sim::start(any, any, options))
        .context("cannot start the simulators on loopback")
}

/// The embedded default with its files in `dir` and its one target at the simulators.
pub fn bench_config(dir: &Path, sims: &sim::Running) -> Result<Config> {
    let mut c = Config {
        transport: TransportConfig::Embedded {
            path: dir.join("queue.db"),
            lock_duration_secs: 60,
            max_delivery_count: 10,
            duplicate_detection_window_secs: 600,
        },
        journal: JournalConfig::Sqlite {
            path: dir.join("journal.db"),
        },
        ..Config::default()
    };
    let target = c
        .targets
        .get_mut(&c.default_target)
        .ok_or_else(|| anyhow!("the default configuration has no default target"))?;
    target.arm_endpoint = sims.arm_url();
    target.kubernetes.server = Some(sims.kube_url());
    let c = c.normalised();
    c.validate()?;
    Ok(c)
}

/// Adds `clusters` targets, copies of the default target each on its own AKS cluster of the
/// same subscription, and returns their names: AKS runs one agent-pool operation per cluster
/// at a time, so a benchmark of the worker's own capacity spreads its tenants over clusters.
pub fn spread_over_clusters(config: &mut Config, clusters: usize) -> Result<Vec<String>> {
    let base = config
        .target(None)
        .cloned()
        .ok_or_else(|| anyhow!("the bench configuration has no default target"))?;
    let names: Vec<String> = (0..clusters).map(|k| format!("cluster-{k}")).collect();
    for (k, name) in names.iter().enumerate() {
        let mut t = base.clone();
        t.cluster_name = format!("aks-{k}");
        config.targets.insert(name.clone(), t);
    }
    Ok(names)
}

/// The configuration as a TOML file the `worker` binary reads with `--config`.
pub fn to_toml(config: &Config) -> Result<String> {
    toml::to_string(config).context("serialise the configuration as TOML")
}

/// The queue and topic of a configuration, opened by this process (to queue a backlog or watch
/// a child worker's progress).
pub async fn open_transport(config: &Config) -> Result<worker::bootstrap::Transport> {
    Ok(worker::bootstrap::open_transport(config, Arc::new(SystemClock)).await?)
}

/// A worker's clients, built as `worker::bootstrap::build_context` does, except that the ARM
/// client options (the write budget) are ours and the journal is kept for its write counter.
#[derive(Debug, Clone)]
pub struct Built {
    pub cx: Context,
    pub journal: SqliteJournal,
}

pub async fn build_context(config: Config, arm: ArmClientOptions) -> Result<Built> {
    let config = Arc::new(config);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (queue, topic) = worker::bootstrap::open_transport(&config, clock.clone()).await?;
    let JournalConfig::Sqlite { path } = &config.journal else {
        anyhow::bail!("the benchmarks run on the SQLite journal; the configuration names another");
    };
    let journal = SqliteJournal::open(path)?;
    let azure = Arc::new(ArmProvisioner::from_targets(&config.targets, arm)?);
    let kube = Arc::new(KubeApplier::from_targets(&config.targets).await?);
    Ok(Built {
        cx: Context {
            config,
            queue,
            topic,
            journal: Arc::new(journal.clone()),
            azure,
            kube,
            clock,
            worker_id: format!("bench-{}", std::process::id()),
            metrics: Default::default(),
        },
        journal,
    })
}

/// ARM client options with a write budget so large it never waits (to measure the worker, not
/// ARM's limits).
pub fn unbudgeted_arm() -> ArmClientOptions {
    let mut o = ArmClientOptions::default();
    o.write_budget.bucket_size = 1_000_000;
    o.write_budget.refill_per_sec = 1_000_000.0;
    o
}

/// A runner working in the background on the worker runtime.
#[derive(Debug)]
pub struct RunningWorker {
    pub runner: Runner,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl RunningWorker {
    /// Must be called from within the worker runtime.
    pub fn start(cx: Context) -> Self {
        let runner = Runner::new(cx);
        let (stop, rx) = watch::channel(false);
        let r = runner.clone();
        let handle = tokio::spawn(async move { r.run(rx).await });
        Self {
            runner,
            stop,
            handle,
        }
    }

    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.handle.await.context("the runner task failed")
    }
}

static SEQ: AtomicU64 = AtomicU64::new(1);

/// A request id unique to this process run.
pub fn request_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The command the seeds' notebook does by hand, with its workload, as `producer send` shapes
/// the message (MessageId = request id, SessionId = tenant id, trace context properties).
pub fn onboard_message(tenant: &str, request_id: &str) -> OutgoingMessage {
    onboard_message_to(tenant, request_id, None)
}

/// [`onboard_message`] for a given target (`None`: the default).
pub fn onboard_message_to(tenant: &str, request_id: &str, target: Option<&str>) -> OutgoingMessage {
    let mut c = OnboardTenant::new(request_id, tenant);
    c.workload = Some(WorkloadRequest { replicas: 1 });
    c.target = target.map(str::to_string);
    command_message(&Command::Onboard(c))
}

pub fn command_message(command: &Command) -> OutgoingMessage {
    envelope::command_message(command, Some(&envelope::new_traceparent()))
}

/// Waits until the queue holds nothing (active, scheduled or locked), looking every `every`.
pub async fn wait_until_drained(
    queue: &dyn Queue,
    limit: Duration,
    every: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let s = queue.stats().await?;
        if s.active + s.scheduled + s.locked == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(anyhow!(
                "the queue did not drain within {limit:?} (still {s:?})"
            ));
        }
        tokio::time::sleep(every).await;
    }
}

/// How many of `tenants` are in each journal state (`Onboarded`, `Onboarding`, ...).
pub async fn tenant_states(
    journal: &dyn Journal,
    tenants: &[String],
) -> Result<BTreeMap<String, usize>> {
    let mut states = BTreeMap::new();
    for t in tenants {
        let state = match journal.load(t).await? {
            Some(v) => v
                .value
                .get("state")
                .and_then(|s| s.as_str())
                .unwrap_or("unreadable")
                .to_string(),
            None => "absent".into(),
        };
        *states.entry(state).or_insert(0) += 1;
    }
    Ok(states)
}

pub fn describe_states(states: &BTreeMap<String, usize>) -> String {
    states
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn queue_total(s: &QueueStats) -> u64 {
    s.active + s.scheduled + s.locked
}

/// The median of some numbers (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `worker` binary built beside this one (`cargo build --release -p worker`).
pub fn worker_binary() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe().context("where is this benchmark binary?")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("the benchmark binary {} has no directory", exe.display()))?;
    let bin = dir.join("worker");
    if !bin.is_file() {
        return Err(anyhow!(
            "the worker binary {} is missing: build it first with `cargo build --release -p worker` (scripts/bench.sh does)",
            bin.display()
        ));
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn the_bench_configuration_survives_the_trip_through_toml() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Absolute paths, as the bench writes them (relative ones would mean beside the file).
        let mut c = Config::default()
            .normalised()
            .with_absolute_paths(dir.path());
        if let Some(t) = c.targets.get_mut("default") {
            t.arm_endpoint = "http://127.0.0.1:1234".into();
        }
        c.saga.message_budget_ms = 2_000;
        let file = dir.path().join("c.toml");
        std::fs::write(&file, to_toml(&c).expect("toml")).expect("write");
        let back = Config::load(Some(&file), Vec::new()).expect("loads");
        assert_eq!(back, c);
    }

    #[test]
    fn messages_are_shaped_like_the_producers() {
        let m = onboard_message("acme", "r-1");
        assert_eq!(m.message_id, "r-1");
        assert_eq!(m.session_id.as_deref(), Some("acme"));
        assert!(m.application_properties[envelope::TRACEPARENT_PROPERTY].starts_with("00-"));
        let v: serde_json::Value = serde_json::from_slice(&m.body).expect("json");
        assert_eq!(v["kind"], "OnboardTenant");
        assert_eq!(v["workload"]["replicas"], 1);
    }
}
