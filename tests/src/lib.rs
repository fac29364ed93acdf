//! [`ProcessHarness`], the process-level harness of the end-to-end and reliability suites in
//! `tests/tests/`: the ARM and Kubernetes simulators in process on loopback, the real `worker`
//! and `producer` binaries as child processes on a worker configuration written to a temporary
//! directory with the `toml` crate (embedded SQLite queue and journal in that directory, one
//! target pointing at the simulators, short budgets),
//! and readers of what came out: events from the topic, dead letters, the journal, and the
//! simulators' inventories.
//!
//! # Where the binaries come from
//!
//! An integration test can only use `env!("CARGO_BIN_EXE_…")` for binaries of its own package,
//! and `worker` and `producer` live in other packages. So [`binaries`] derives the target
//! directory from the running test executable (`<target>/<profile>/deps/<test>-<hash>`) and runs
//! `cargo build -p worker -p producer` into that same target directory and profile once per test
//! process: a no-op when `cargo test --workspace` has just built them, and it rebuilds them when
//! only `cargo test -p e2e` was run after a change (so a suite never runs a stale worker).
//! `E2E_BIN_DIR=<dir>` skips the build and takes both binaries from that directory. The build
//! runs without the per-crate variables cargo gives a test process, which some build scripts
//! track: with them, the two builds would keep invalidating each other.
//!
//! Everything is bounded in time: every wait takes a timeout and panics with what it was waiting
//! for; children are SIGKILLed when their handle or the harness is dropped, and a failing test
//! prints the tail of every worker's log (`E2E_LOGS=1`: every test does; `E2E_KEEP=1`: a failing
//! test leaves its temporary directory).

pub mod entra;
pub mod servicebus;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use onboarding_contract::CloudEvent;
use onboarding_contract::events::{REQUEST_REJECTED, TERMINAL_TYPES};
use onboarding_core::SystemClock;
use onboarding_journal::Journal;
use onboarding_saga::record::TenantRecord;
use onboarding_transport::{Queue, ReceivedMessage, Subscription, Topic};
use serde_json::Value;
use sim::faults::{FaultPlan, LatencyProfile};
use worker::config::{Config, SagaConfig, TransportConfig};

/// The `worker` and `producer` executables the suites run.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub worker: PathBuf,
    pub producer: PathBuf,
}

/// Build (once per test process) and locate the `worker` and `producer` binaries.
pub fn binaries() -> &'static Binaries {
    static BINS: OnceLock<Binaries> = OnceLock::new();
    BINS.get_or_init(|| match locate_or_build() {
        Ok(b) => b,
        Err(e) => panic!("cannot provide the worker and producer binaries: {e}"),
    })
}

fn locate_or_build() -> Result<Binaries, String> {
    let exe_suffix = std::env::consts::EXE_SUFFIX;
    if let Some(dir) = std::env::var_os("E2E_BIN_DIR") {
        let dir = PathBuf::from(dir);
        let bins = Binaries {
            worker: dir.join(format!("worker{exe_suffix}")),
            producer: dir.join(format!("producer{exe_suffix}")),
        };
        for b in [&bins.worker, &bins.producer] {
            if !b.is_file() {
                return Err(format!(
                    "E2E_BIN_DIR names {}, which is missing",
                    b.display()
                ));
            }
        }
        return Ok(bins);
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // <target>/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not inside <target>/<profile>/deps", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent target directory", profile_dir.display()))?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.join("Cargo.toml"))
        .ok_or("no workspace root")?;
    let mut cmd = std::process::Command::new(&cargo);
    cmd.arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["-p", "worker", "-p", "producer"])
        .arg("--target-dir")
        .arg(target_dir);
    // Cargo gives a test process the variables it sets for the crate under test
    // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME...). Some build scripts (ring's) ask to be re-run
    // when those change, so passing them on would make this build and the enclosing one
    // invalidate each other's dependencies and recompile the TLS stack every time.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let per_crate = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| key.starts_with(p))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&key.as_str());
        if per_crate {
            cmd.env_remove(&key);
        }
    }
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !status.success() {
        return Err(format!("{cmd:?} failed with {status}"));
    }
    let bins = Binaries {
        worker: profile_dir.join(format!("worker{exe_suffix}")),
        producer: profile_dir.join(format!("producer{exe_suffix}")),
    };
    for b in [&bins.worker, &bins.producer] {
        if !b.is_file() {
            return Err(format!("{} is missing after {cmd:?}", b.display()));
        }
    }
    Ok(bins)
}

/// How a harness sets up the simulators and the worker.
#[derive(Debug, Clone)]
pub struct Settings {
    pub latency: LatencyProfile,
    pub faults: FaultPlan,
    pub saga: SagaConfig,
    pub concurrency: usize,
    pub lock_duration_secs: u64,
    pub max_delivery_count: u32,
    pub receive_wait_ms: u64,
    pub shutdown_grace_ms: u64,
    pub max_message_bytes: usize,
    /// `RUST_LOG` of the worker processes.
    pub log_filter: String,
    /// Provisioning targets: `default`, then `t1`, `t2`... each its own subscription (the
    /// worker's ARM write budget is per subscription, as ARM's is) on the same simulators.
    pub targets: usize,
    /// Which Kubernetes the default target provisions into.
    pub kube: KubeSide,
    /// The default target signs in with workload identity at the Entra simulator, and the ARM
    /// simulator requires its tokens (`None`: no credential, as the other suites run).
    pub entra: Option<entra::EntraSide>,
    /// Serve `/healthz` and `/readyz` on a free port ([`ProcessHarness::health_url`]); for one
    /// worker only.
    pub health: bool,
    /// Carry commands and events over Service Bus: the peer (`servicebus-sim`) in process, the
    /// worker on `[transport] kind = "service_bus"` with its connection string (see
    /// [`servicebus`]). Off: the embedded SQLite queue and topic.
    pub servicebus: bool,
}

/// The Kubernetes side of a harness.
#[derive(Debug, Clone, Default)]
pub enum KubeSide {
    /// The loopback simulator (no authorizer, no admission, no scheduler).
    #[default]
    Simulated,
    /// A real control plane (`scripts/kube.sh`): the worker reaches it with `worker_kubeconfig`
    /// (its own ServiceAccount, see `onboarding_testkit::real_cluster`), and the ARM simulator
    /// registers each agent pool's Nodes there with the admin's client certificate, as AKS does.
    Real {
        worker_kubeconfig: PathBuf,
        server: String,
        ca: PathBuf,
        admin_cert: PathBuf,
        admin_key: PathBuf,
    },
}

impl KubeSide {
    /// The real control plane `cluster`; `None` (saying what is missing) without the admin
    /// certificate the ARM simulator registers Nodes with (`scripts/kube.sh env` exports it).
    pub fn real(cluster: &onboarding_testkit::real_cluster::RealCluster) -> Option<KubeSide> {
        let env = onboarding_testkit::env::require(
            &["ONBOARD_KUBE_ADMIN_CERT", "ONBOARD_KUBE_ADMIN_KEY"],
            "the ARM simulator registering Nodes in the real cluster (scripts/kube.sh env prints them)",
        )?;
        Some(KubeSide::Real {
            worker_kubeconfig: cluster.worker_kubeconfig.clone(),
            server: cluster.server.clone(),
            ca: cluster.ca.clone(),
            admin_cert: env["ONBOARD_KUBE_ADMIN_CERT"].clone().into(),
            admin_key: env["ONBOARD_KUBE_ADMIN_KEY"].clone().into(),
        })
    }
}

impl Default for Settings {
    /// Instant simulators, no faults, and budgets short enough that a crashed worker's message
    /// and journal lease come back within seconds.
    fn default() -> Self {
        Self {
            latency: LatencyProfile::zero(),
            faults: FaultPlan::default(),
            saga: SagaConfig {
                message_budget_ms: 3_000,
                step_retry_budget_ms: 1_000,
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
            concurrency: 8,
            lock_duration_secs: 5,
            max_delivery_count: 10,
            receive_wait_ms: 200,
            shutdown_grace_ms: 2_000,
            max_message_bytes: 64 * 1024,
            log_filter: "info".into(),
            targets: 1,
            kube: KubeSide::Simulated,
            entra: None,
            health: false,
            servicebus: false,
        }
    }
}

/// A latency profile where every simulated call takes long enough (tens to hundreds of
/// milliseconds, the node pool about 1.5 s) for a test to act between two journal writes:
/// the realistic profile scaled by `scale`, with node pools and Kubernetes calls adjusted so
/// that neither dominates nor vanishes.
pub fn slow_latency(scale: f64) -> LatencyProfile {
    let mut p = LatencyProfile::realistic(scale);
    for (op, ms) in p.operations.iter_mut() {
        match op.as_str() {
            // ~1.5 s / ~1 s at scale 0.05 instead of minutes.
            "arm.agent_pools.create" => *ms = 30_000,
            "arm.agent_pools.delete" => *ms = 20_000,
            // ~50 ms at scale 0.05, so Kubernetes steps are not instantaneous.
            "kube." => *ms = 1_000,
            _ => {}
        }
    }
    p
}

/// One worker process.
#[derive(Debug)]
pub struct WorkerProcess {
    child: std::process::Child,
    pub log: PathBuf,
    pub index: usize,
}

impl WorkerProcess {
    /// SIGKILL: no shutdown, no cleanup, as in a crash or an OOM kill.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a producer run printed.
#[derive(Debug, Clone)]
pub struct ProducerOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ProducerOutput {
    /// The last line of stdout as JSON (`--json` prints one document per result).
    pub fn json(&self) -> Value {
        let line = self.stdout.lines().rev().find(|l| !l.trim().is_empty());
        line.and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("producer printed no JSON: {self:?}"))
    }
}

/// The simulators, the configuration, and the worker processes of one test.
pub struct ProcessHarness {
    pub dir: tempfile::TempDir,
    pub sims: sim::Running,
    pub settings: Settings,
    pub config: Config,
    pub config_path: PathBuf,
    pub queue: Arc<dyn Queue>,
    pub topic: Arc<dyn Topic>,
    pub journal: Arc<dyn Journal>,
    /// The Service Bus peer of a harness started with [`Settings::servicebus`].
    pub servicebus: Option<Arc<servicebus_sim::ServiceBusPeer>>,
    events_sub: tokio::sync::Mutex<Box<dyn Subscription>>,
    seen: Mutex<Vec<CloudEvent>>,
    workers: Mutex<Vec<WorkerProcess>>,
    spawned: Mutex<usize>,
}

impl std::fmt::Debug for ProcessHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessHarness")
            .field("dir", &self.dir.path())
            .field("arm", &self.sims.arm_url())
            .field("kube", &self.sims.kube_url())
            .finish_non_exhaustive()
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl ProcessHarness {
    /// A harness whose default target is the real control plane `cluster`, with one worker
    /// running; `None` (saying what is missing) without the admin certificate the ARM simulator
    /// registers Nodes with (`scripts/kube.sh env` exports it).
    pub async fn on_real_cluster(
        cluster: &onboarding_testkit::real_cluster::RealCluster,
    ) -> Option<ProcessHarness> {
        let h = ProcessHarness::start(Settings {
            kube: KubeSide::real(cluster)?,
            ..Settings::default()
        })
        .await;
        h.spawn_worker();
        Some(h)
    }

    /// `producer offboard --tenant T --request-id R --purge-data` (which must be accepted) and
    /// its outcome.
    pub async fn offboard_purging(&self, tenant: &str, request_id: &str) -> CloudEvent {
        self.request(
            &[
                "offboard",
                "--tenant",
                tenant,
                "--request-id",
                request_id,
                "--purge-data",
            ],
            request_id,
        )
        .await
    }

    /// Onboard `tenant` with its workload and an admin group of its own (a group that
    /// administers two tenants may act in both namespaces, which verify rightly reports), and
    /// assert it succeeded.
    pub async fn onboard_with_own_admin_group(&self, tenant: &str) {
        let rid = format!("on-{tenant}");
        let group = own_admin_group(tenant);
        let args = [
            "send",
            "--tenant",
            tenant,
            "--request-id",
            &rid,
            "--admin-group",
            &group,
            "--workload",
            "1",
        ];
        let event = self.request(&args, &rid).await;
        assert_eq!(event.ty, "tenant.onboarded", "{event:?}");
    }

    /// Run `producer ARGS` (which must be accepted) and wait for the outcome of `request_id`.
    pub async fn request(&self, args: &[&str], request_id: &str) -> CloudEvent {
        let out = self.producer(args, Duration::from_secs(30)).await;
        assert_eq!(out.code, Some(0), "producer {args:?}: {out:?}");
        let found = self
            .wait_for_outcomes(&[request_id.to_string()], Duration::from_secs(120))
            .await;
        found[request_id].clone()
    }

    /// Start the simulators and write the configuration; no worker runs yet.
    pub async fn start(settings: Settings) -> ProcessHarness {
        let bins = binaries();
        let _ = bins;
        let sims = sim::start(
            loopback(),
            loopback(),
            sim::SimOptions {
                latency: settings.latency.clone(),
                faults: settings.faults.clone(),
                kube_nodes: match &settings.kube {
                    KubeSide::Simulated => None,
                    KubeSide::Real {
                        server,
                        ca,
                        admin_cert,
                        admin_key,
                        ..
                    } => Some(sim::arm::KubeNodeSink {
                        server: server.clone(),
                        ca_pem: Some(ca.clone()),
                        auth: sim::arm::KubeAuth::ClientCert {
                            cert_pem: admin_cert.clone(),
                            key_pem: admin_key.clone(),
                        },
                    }),
                },
                entra: settings.entra.as_ref().map(|e| sim::entra::EntraOptions {
                    propagation: e.propagation,
                    token_lifetime: e
                        .token_lifetime
                        .unwrap_or(sim::entra::DEFAULT_TOKEN_LIFETIME),
                    ..sim::entra::EntraOptions::default()
                }),
                arm_require_tokens: settings.entra.is_some(),
                ..sim::SimOptions::default()
            },
        )
        .await
        .expect("start the simulators on loopback");
        if let Some(entra) = &sims.entra {
            // Created now, so that it propagates from now like a new federated credential.
            entra
                .register_app(entra::worker_app())
                .expect("register the worker's app");
        }
        let dir = tempfile::Builder::new()
            .prefix("e2e-")
            .tempdir()
            .expect("temp dir");
        let mut config = worker_config(&settings, dir.path(), &sims.arm_url(), &sims.kube_url());
        if let (Some(url), Some(ca)) = (sims.entra_url(), sims.entra_ca_pem()) {
            entra::configure(&mut config, dir.path(), &target_name(0), &url, &ca);
        }
        if settings.health {
            config.health.port = free_port();
        }
        let peer = match settings.servicebus {
            true => Some(Arc::new(servicebus::start_peer(&settings).await)),
            false => None,
        };
        let config_path = match &peer {
            Some(peer) => {
                config.transport = servicebus::transport_config(peer);
                servicebus::write_config(dir.path(), "worker.toml", &config, peer)
            }
            None => onboarding_testkit::config::write_config(dir.path(), "worker.toml", &config),
        };
        let config = Config::load(Some(&config_path), Vec::new()).unwrap_or_else(|e| {
            panic!("the harness wrote a configuration the worker refuses: {e}")
        });
        let (queue, topic) = worker::bootstrap::open_transport(&config, Arc::new(SystemClock))
            .await
            .expect("open the transport");
        let journal = worker::bootstrap::open_journal(&config).expect("open the journal");
        // Subscribe before anything is sent, so no event is missed.
        let sub_name = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        if let Some(peer) = &peer {
            // Service Bus subscriptions are infrastructure: the transport opens existing ones.
            servicebus::create_subscription(peer, &sub_name);
        }
        let sub = topic
            .subscribe(&sub_name)
            .await
            .expect("subscribe to the events topic");
        ProcessHarness {
            dir,
            sims,
            settings,
            config,
            config_path,
            queue,
            topic,
            journal,
            servicebus: peer,
            events_sub: tokio::sync::Mutex::new(sub),
            seen: Mutex::new(Vec::new()),
            workers: Mutex::new(Vec::new()),
            spawned: Mutex::new(0),
        }
    }

    /// The Entra simulator of a harness started with [`Settings::entra`].
    pub fn entra(&self) -> &sim::entra::EntraSim {
        self.sims
            .entra
            .as_deref()
            .expect("the harness was started with Settings::entra")
    }

    /// Replace the worker's projected token, as the kubelet does when it rotates it.
    pub fn rotate_worker_token(&self, valid_for: chrono::Duration) {
        let file = entra::token_file(self.dir.path());
        let next = file.with_extension("next");
        std::fs::write(&next, entra::worker_assertion(valid_for)).expect("write the token");
        // Atomically, as the kubelet's atomic writer does.
        std::fs::rename(&next, &file).expect("replace the token");
    }

    /// `http://127.0.0.1:<port>` of the worker's health server ([`Settings::health`]).
    pub fn health_url(&self) -> String {
        assert!(
            self.settings.health,
            "start the harness with Settings::health"
        );
        format!("http://127.0.0.1:{}", self.config.health.port)
    }

    /// Start one more `worker run` process on this harness's configuration.
    pub fn spawn_worker(&self) -> usize {
        let index = {
            let mut n = lock(&self.spawned);
            *n += 1;
            *n - 1
        };
        let log = self.dir.path().join(format!("worker-{index}.log"));
        let file = std::fs::File::create(&log).expect("worker log file");
        let err = file.try_clone().expect("worker log file");
        let mut cmd = std::process::Command::new(&binaries().worker);
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .env("RUST_LOG", &self.settings.log_filter)
            .current_dir(self.dir.path());
        clear_onboard_env(&mut cmd);
        let child = cmd.spawn().expect("spawn the worker binary");
        lock(&self.workers).push(WorkerProcess { child, log, index });
        index
    }

    /// SIGKILL worker `index` (as returned by [`ProcessHarness::spawn_worker`]).
    pub fn kill_worker(&self, index: usize) {
        let mut workers = lock(&self.workers);
        if let Some(w) = workers.iter_mut().find(|w| w.index == index) {
            w.kill();
        }
        workers.retain(|w| w.index != index);
    }

    /// SIGKILL every worker.
    pub fn kill_workers(&self) {
        let mut workers = lock(&self.workers);
        for w in workers.iter_mut() {
            w.kill();
        }
        workers.clear();
    }

    /// Workers that exited on their own (they never should).
    pub fn dead_workers(&self) -> Vec<usize> {
        lock(&self.workers)
            .iter_mut()
            .filter_map(|w| (!w.is_running()).then_some(w.index))
            .collect()
    }

    /// Run the producer with `args` after `--config <file> --json`, within `timeout`.
    pub async fn producer(&self, args: &[&str], timeout: Duration) -> ProducerOutput {
        let mut cmd = tokio::process::Command::new(&binaries().producer);
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .current_dir(self.dir.path());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ONBOARD") {
                cmd.env_remove(k);
            }
        }
        let child = cmd.spawn().expect("spawn the producer binary");
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("producer {args:?} did not finish within {timeout:?}"))
            .expect("producer output");
        ProducerOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `producer send` of a valid onboarding (no wait); panics unless it was accepted.
    pub async fn send_onboard(&self, tenant: &str, request_id: &str, workload: bool) -> Value {
        let mut args = vec!["send", "--tenant", tenant, "--request-id", request_id];
        if workload {
            args.extend(["--workload", "1"]);
        }
        let out = self.producer(&args, Duration::from_secs(30)).await;
        assert_eq!(out.code, Some(0), "producer send failed: {out:?}");
        out.json()
    }

    /// Every event published since the harness started, in order (drains the subscription).
    pub async fn events(&self) -> Vec<CloudEvent> {
        self.pull_events().await;
        lock(&self.seen).clone()
    }

    /// Read what the topic has for this harness into its list; how many events that was.
    pub async fn pull_events(&self) -> usize {
        let mut sub = self.events_sub.lock().await;
        let mut n = 0;
        loop {
            let next = sub
                .next(Duration::from_millis(20))
                .await
                .expect("read the events topic");
            let Some(msg) = next else { break };
            let event: CloudEvent = serde_json::from_slice(&msg.body).unwrap_or_else(|e| {
                panic!(
                    "the worker published something that is not a CloudEvent ({e}): {}",
                    String::from_utf8_lossy(&msg.body)
                )
            });
            lock(&self.seen).push(event);
            n += 1;
        }
        n
    }

    /// How many events have been read so far.
    pub fn events_seen(&self) -> usize {
        lock(&self.seen).len()
    }

    /// Events of one request.
    pub async fn events_of(&self, request_id: &str) -> Vec<CloudEvent> {
        self.events()
            .await
            .into_iter()
            .filter(|e| e.request_id() == Some(request_id))
            .collect()
    }

    /// Wait until every request has a terminal event (or `request.rejected`); the first such
    /// event of each, by request id.
    pub async fn wait_for_outcomes(
        &self,
        request_ids: &[String],
        timeout: Duration,
    ) -> BTreeMap<String, CloudEvent> {
        let wanted: BTreeSet<&str> = request_ids.iter().map(String::as_str).collect();
        let started = Instant::now();
        let mut found = BTreeMap::new();
        let mut looked_at = 0;
        loop {
            self.pull_events().await;
            let fresh: Vec<CloudEvent> = lock(&self.seen)[looked_at..].to_vec();
            looked_at += fresh.len();
            for e in &fresh {
                let ends = TERMINAL_TYPES.contains(&e.ty.as_str()) || e.ty == REQUEST_REJECTED;
                if let Some(r) = e.request_id()
                    && ends
                    && wanted.contains(r)
                    && !found.contains_key(r)
                {
                    found.insert(r.to_string(), e.clone());
                }
            }
            if found.len() == wanted.len() {
                return found;
            }
            if !fresh.is_empty() {
                continue;
            }
            if started.elapsed() > timeout {
                let missing: Vec<_> = wanted
                    .iter()
                    .filter(|r| !found.contains_key(**r))
                    .take(20)
                    .collect();
                let dead: Vec<_> = self
                    .dead_letters()
                    .await
                    .into_iter()
                    .take(20)
                    .map(|m| {
                        format!(
                            "{} {:?}: {:?}",
                            m.message_id, m.dead_letter_reason, m.dead_letter_description
                        )
                    })
                    .collect();
                panic!(
                    "{} of {} requests have no outcome after {timeout:?} (first: {missing:?}); dead workers: {:?}; dead letters: {dead:?}",
                    wanted.len() - found.len(),
                    wanted.len(),
                    self.dead_workers()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait for the `request.rejected` event of a message (by its MessageId).
    pub async fn wait_for_rejection(&self, message_id: &str, timeout: Duration) -> CloudEvent {
        wait_until(timeout, &format!("request.rejected for {message_id}"), || async {
            self.events().await.into_iter().find(|e| {
                e.ty == REQUEST_REJECTED
                    && matches!(&e.data, onboarding_contract::events::EventData::Rejected(r) if r.message_id == message_id)
            })
        })
        .await
    }

    /// The dead-letter queue once it holds `message_id`, oldest first. The worker announces a
    /// rejection before it dead-letters the message, so the event alone does not say the
    /// letter is there yet.
    pub async fn wait_for_dead_letter(
        &self,
        message_id: &str,
        timeout: Duration,
    ) -> Vec<ReceivedMessage> {
        wait_until(timeout, &format!("{message_id} dead-lettered"), || async {
            let dead = self.dead_letters().await;
            dead.iter()
                .any(|m| m.message_id == message_id)
                .then_some(dead)
        })
        .await
    }

    /// Dead-lettered messages, oldest first.
    pub async fn dead_letters(&self) -> Vec<ReceivedMessage> {
        let mut all = Vec::new();
        let mut from = 0;
        loop {
            let batch = self
                .queue
                .peek_dead_letters(from, 500)
                .await
                .expect("peek dead letters");
            let Some(last) = batch.last() else { break };
            from = last.sequence_number + 1;
            all.extend(batch);
        }
        all
    }

    /// The tenant's journal record and its version.
    pub async fn record(&self, tenant: &str) -> Option<(u64, TenantRecord)> {
        let v = self.journal.load(tenant).await.expect("read the journal")?;
        let rec = serde_json::from_value(v.value).expect("a journal record the engine wrote");
        Some((v.version, rec))
    }

    /// The tenant's journal record version (0: no record yet).
    pub async fn version(&self, tenant: &str) -> u64 {
        self.journal
            .load(tenant)
            .await
            .expect("read the journal")
            .map_or(0, |v| v.version)
    }

    pub fn arm_inventory(&self) -> sim::arm::Inventory {
        self.sims.arm.inventory()
    }

    /// ARM resource ids by type, lowercased (ARM ids are case-insensitive).
    pub fn arm_resources(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.arm_inventory()
            .resources
            .into_iter()
            .map(|(k, ids)| (k, ids.iter().map(|i| i.to_ascii_lowercase()).collect()))
            .collect()
    }

    /// The simulated cluster's objects as `Kind/namespace/name` (`Kind//name` if cluster-scoped).
    pub fn kube_objects(&self) -> BTreeSet<String> {
        let inv = self.sims.kube.inventory();
        let mut out = BTreeSet::new();
        if let Some(kinds) = inv["objects"].as_object() {
            for (kind, by_ns) in kinds {
                for (ns, names) in by_ns.as_object().into_iter().flatten() {
                    for name in names.as_object().into_iter().flat_map(|m| m.keys()) {
                        out.insert(format!("{kind}/{ns}/{name}"));
                    }
                }
            }
        }
        out
    }

    /// Creations per resource type in both simulators (`arm:<type>`, `kube:<Kind>`).
    pub fn creations(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = self
            .arm_inventory()
            .counters
            .created
            .into_iter()
            .map(|(k, v)| (format!("arm:{k}"), v))
            .collect();
        let inv = self.sims.kube.inventory();
        for (k, v) in inv["created"].as_object().into_iter().flatten() {
            out.insert(format!("kube:{k}"), v.as_u64().unwrap_or(0));
        }
        out
    }

    /// Total resources in both simulators.
    pub fn inventory_size(&self) -> usize {
        self.arm_inventory().total + self.kube_objects().len()
    }

    /// GET an ARM resource from the simulator by id: its JSON, or `None` when it does not exist.
    pub async fn arm_get(&self, id: &str, api_version: &str) -> Option<Value> {
        let url = format!("{}{id}?api-version={api_version}", self.sims.arm_url());
        let resp = http()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        Some(resp.json().await.expect("ARM simulator JSON"))
    }

    /// The simulators' inventories as their HTTP endpoints serve them (`GET /_sim/inventory`).
    pub async fn http_inventories(&self) -> (Value, Value) {
        let get = |url: String| async move {
            http()
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"))
                .json::<Value>()
                .await
                .expect("inventory JSON")
        };
        (
            get(format!("{}/_sim/inventory", self.sims.arm_url())).await,
            get(format!("{}/_sim/inventory", self.sims.kube_url())).await,
        )
    }

    /// Wait until the queue holds nothing active, scheduled or locked (dead letters aside).
    pub async fn wait_for_empty_queue(&self, timeout: Duration) {
        wait_until(timeout, "an empty queue", || async {
            // AMQP has no counts: on Service Bus they come from the peer.
            if let Some(peer) = &self.servicebus {
                return (servicebus::pending(peer) == 0).then_some(());
            }
            let s = self.queue.stats().await.expect("queue stats");
            (s.active + s.scheduled + s.locked == 0).then_some(())
        })
        .await;
    }

    /// Change fault injection of both simulators.
    pub fn set_faults(&self, plan: FaultPlan) {
        self.sims.arm.set_faults(plan.clone());
        self.sims.kube.set_faults(plan);
    }

    /// The last `lines` lines of every worker log.
    pub fn worker_logs(&self, lines: usize) -> String {
        let mut out = String::new();
        let n = *lock(&self.spawned);
        for i in 0..n {
            let path = self.dir.path().join(format!("worker-{i}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            out.push_str(&format!("---- worker {i} ({})\n", path.display()));
            for l in tail {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for ProcessHarness {
    fn drop(&mut self) {
        self.kill_workers();
        if std::env::var_os("E2E_LOGS").is_some() && !std::thread::panicking() {
            eprintln!("{}", self.worker_logs(400));
        }
        if std::thread::panicking() {
            eprintln!("{}", self.worker_logs(60));
            if std::env::var_os("E2E_KEEP").is_some() {
                let path = self.dir.path().to_path_buf();
                eprintln!("E2E_KEEP: leaving {}", path.display());
                let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
                let _ = dir.keep();
            }
        }
    }
}

fn clear_onboard_env(cmd: &mut std::process::Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ONBOARD") {
            cmd.env_remove(k);
        }
    }
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client")
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The worker configuration for `settings`, with the queue and journal inside `dir` and every
/// target pointing at the simulators.
pub fn worker_config(settings: &Settings, dir: &Path, arm_url: &str, kube_url: &str) -> Config {
    let mut config = onboarding_testkit::config::embedded(dir, arm_url, kube_url);
    config.default_target = target_name(0);
    if let TransportConfig::Embedded {
        lock_duration_secs,
        max_delivery_count,
        ..
    } = &mut config.transport
    {
        *lock_duration_secs = settings.lock_duration_secs;
        *max_delivery_count = settings.max_delivery_count;
    }
    config.saga = settings.saga.clone();
    config.worker.concurrency = settings.concurrency;
    config.worker.shutdown_grace_ms = settings.shutdown_grace_ms;
    config.worker.max_message_bytes = settings.max_message_bytes;
    config.worker.receive_wait_ms = settings.receive_wait_ms;
    // Off: several workers run side by side, and tests read the files, not /metrics.
    config.health.address = "127.0.0.1".into();
    config.health.port = 0;
    if let KubeSide::Real {
        worker_kubeconfig, ..
    } = &settings.kube
        && let Some(target) = config.targets.get_mut(&target_name(0))
    {
        target.kubernetes = worker::config::KubernetesConfig {
            kubeconfig: Some(worker_kubeconfig.clone()),
            ..worker::config::KubernetesConfig::default()
        };
    }
    for i in 1..settings.targets.max(1) {
        let name = target_name(i);
        let mut target = worker::config::Target::local(&name);
        target.subscription_id = format!("00000000-0000-0000-0001-{i:012x}");
        target.arm_endpoint = arm_url.to_string();
        target.kubernetes.server = Some(kube_url.to_string());
        config.targets.insert(name, target);
    }
    config
}

/// [`worker_config`] as the TOML file the `worker` binary reads, written by the `toml` crate.
pub fn config_toml(settings: &Settings, dir: &Path, arm_url: &str, kube_url: &str) -> String {
    onboarding_testkit::config::to_toml(&worker_config(settings, dir, arm_url, kube_url))
}

/// The name of the `i`-th target (0: `default`).
pub fn target_name(i: usize) -> String {
    if i == 0 {
        "default".into()
    } else {
        format!("t{i}")
    }
}

/// The admin group of `tenant` in the suites: a GUID of its own, derived from its id.
pub fn own_admin_group(tenant: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, tenant.as_bytes()).to_string()
}

/// A port nothing listens on now (the worker binds it moments later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Poll `check` until it yields a value, or panic after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The ids of the distinct terminal events of one request.
pub fn terminal_ids(events: &[CloudEvent], request_id: &str) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e.request_id() == Some(request_id) && TERMINAL_TYPES.contains(&e.ty.as_str()))
        .map(|e| e.id.clone())
        .collect()
}

/// A tenant id no other test (or earlier run on a shared cluster) uses: `prefix` and 8 hex digits.
pub fn unique_tenant(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}
