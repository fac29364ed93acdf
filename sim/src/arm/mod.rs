//! The Azure Resource Manager simulator: exactly the operations the worker uses, with ARM's
//! behaviour (status codes, error codes, long-running operations, api-version checks) and every
//! request body validated against the official OpenAPI schema ([`schema`]).
//!
//! Implemented: AKS agent pools (PUT/GET/DELETE as long-running operations, one operation per
//! cluster at a time), user-assigned identities and their federated identity credentials, blob
//! containers, role assignments (PUT/GET/DELETE and list at a scope), and the operation status
//! URLs it hands out. Subscriptions, resource groups, clusters and storage accounts exist
//! implicitly under any name. Latency and faults come from [`crate::faults`]; an optional token
//! bucket throttles writes per subscription like ARM does. `GET /_sim/inventory`,
//! `POST /_sim/faults` and `POST /_sim/reset` serve tests. State lives in memory only.
//!
//! Authentication is off by default. With [`ArmSim::require_tokens`] every ARM request (not the
//! `/_sim/` ones) needs a bearer token the Entra simulator ([`crate::entra`]) issued for ARM's
//! audience, and gets ARM's 401s otherwise (`auth`). The Entra simulator in turn reads the
//! identities and federated credentials made here ([`ArmSim::federated_identity`]).
//!
//! The platform's limits are on by default ([`ArmBehaviour`]): one agent-pool operation per
//! cluster, cluster-level operations (`POST /_sim/cluster-operation`) that keep pool operations
//! out, containers that stay "being deleted", a VM size list and a regional vCPU quota. With a
//! Kubernetes API server configured ([`KubeNodeSink`]), agent pools become Node objects there.
//!
//! Layout: `route` parses paths into routes, `auth` checks bearer tokens, `handler` takes a
//! request through the common checks and hands it to one module per resource type (`agent_pools`, `identities`,
//! `federated_credentials`, `blob_containers`, `role_assignments`); `state` holds what exists,
//! `bucket` the write budget, `platform` the limits, `responses` ARM's error envelope and shared
//! helpers, `admin` the `/_sim/` endpoints, [`nodes`] and `node_sink` the Node objects.

mod admin;
mod agent_pools;
mod auth;
mod blob_containers;
mod bucket;
mod federated_credentials;
mod handler;
mod identities;
mod node_sink;
pub mod nodes;
mod platform;
mod responses;
mod role_assignments;
mod route;
pub mod schema;
mod state;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use serde_json::Value;

use crate::SimOptions;
use crate::entra::TokenVerifier;
use crate::faults::{FaultPlan, Faults, LatencyProfile};
use bucket::Bucket;
pub use identities::{FederatedCredential, FederatedIdentity};
pub(crate) use node_sink::run as run_node_sink;
pub use node_sink::{KubeAuth, KubeNodeSink, NodeSinkReport};
pub use platform::{ArmBehaviour, DEFAULT_CONTAINER_DELETION_SECS, DEFAULT_VCPU_QUOTA, VmSize};
use schema::SpecSchemas;
use state::{ArmState, AtomicCounters, ClusterOp};
pub use state::{Counters, Inventory, PoolOperationSpan, RecordedRequest};

/// The Entra tenant every simulated identity lives in (the local target's
/// `identity_entra_tenant_id`).
pub const SIM_TENANT_ID: &str = "00000000-0000-0000-0000-0000000000e1";
/// Region named in the operation URLs the simulator hands out.
pub const SIM_LOCATION: &str = "westeurope";
/// The object id the simulator records as the caller of every write.
pub const SIM_CALLER_ID: &str = "00000000-0000-0000-0000-00000000a11c";

pub const AKS_API_VERSION: &str = "2026-08-01";
pub const MSI_API_VERSION: &str = "2024-11-30";
pub const STORAGE_API_VERSION: &str = "2025-08-01";
pub const AUTHORIZATION_API_VERSION: &str = "2022-04-01";

const MAX_RECORDED: usize = 10_000;

/// The simulator's state and settings; share it with [`router`].
#[derive(Debug)]
pub struct ArmSim {
    faults: Faults,
    initial_plan: FaultPlan,
    latency: LatencyProfile,
    schemas: Option<SpecSchemas>,
    bucket: Option<Mutex<Bucket>>,
    behaviour: ArmBehaviour,
    node_sink: Option<node_sink::NodeSink>,
    principal_propagation: Mutex<Duration>,
    /// `Some`: ARM requests need a token this verifier accepts.
    token_check: Mutex<Option<TokenVerifier>>,
    state: Mutex<ArmState>,
    counters: AtomicCounters,
    recorded: Mutex<Vec<RecordedRequest>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the state consistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ArmSim {
    pub fn new(options: &SimOptions) -> Self {
        let dir = options
            .specs_dir
            .clone()
            .unwrap_or_else(SpecSchemas::default_dir);
        let schemas = match SpecSchemas::load(&dir) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "ARM simulator runs WITHOUT request schema validation");
                None
            }
        };
        Self {
            faults: Faults::new(options.faults.clone()),
            initial_plan: options.faults.clone(),
            latency: options.latency.clone(),
            schemas,
            bucket: options.arm_write_bucket.map(|(size, refill)| {
                Mutex::new(Bucket {
                    size: f64::from(size.max(1)),
                    refill,
                    tokens: HashMap::new(),
                })
            }),
            behaviour: options.arm_behaviour.clone(),
            node_sink: options.kube_nodes.clone().map(node_sink::NodeSink::new),
            principal_propagation: Mutex::new(Duration::ZERO),
            token_check: Mutex::new(None),
            state: Mutex::new(ArmState::default()),
            counters: AtomicCounters::default(),
            recorded: Mutex::new(Vec::new()),
        }
    }

    /// The schema directory in use, if validation is on.
    pub fn specs_dir(&self) -> Option<&Path> {
        self.schemas.as_ref().map(SpecSchemas::dir)
    }

    pub fn set_faults(&self, plan: FaultPlan) {
        self.faults.set_plan(plan);
    }

    /// A role assignment for a principal created less than this long ago fails with
    /// `PrincipalNotFound`, like Entra's replication delay.
    pub fn set_principal_propagation(&self, delay: Duration) {
        *lock(&self.principal_propagation) = delay;
    }

    /// With a verifier, every ARM request needs `Authorization: Bearer <token>` with a token it
    /// accepts for ARM's audience (401 `AuthenticationFailed`, `InvalidAuthenticationToken`,
    /// `InvalidAuthenticationTokenAudience` or `ExpiredAuthenticationToken` otherwise); `None`
    /// lets every request in (the default). `/_sim/` endpoints stay open either way.
    pub fn require_tokens(&self, verifier: Option<TokenVerifier>) {
        *lock(&self.token_check) = verifier;
    }

    /// Forget every resource, operation, counter and recorded request; restore the initial
    /// fault plan.
    pub fn reset(&self) {
        *lock(&self.state) = ArmState::default();
        lock(&self.recorded).clear();
        self.faults.set_plan(self.initial_plan.clone());
        if let Some(b) = &self.bucket {
            lock(b).tokens.clear();
        }
        for c in [
            &self.counters.requests,
            &self.counters.throttled,
            &self.counters.faults,
            &self.counters.rejected_bodies,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Whether agent pools become nodes in a Kubernetes API server.
    pub fn registers_nodes(&self) -> bool {
        self.node_sink.is_some()
    }

    /// The platform limits in force.
    pub fn behaviour(&self) -> &ArmBehaviour {
        &self.behaviour
    }

    /// Marks a managed cluster busy with a cluster-level operation (`operation`, e.g.
    /// `Upgrading`) for `duration` of wall-clock time: agent-pool PUTs and DELETEs on it get 409
    /// `OperationNotAllowed` meanwhile. `cluster_id` is the cluster's ARM id; the answer is the
    /// id as the simulator keys it, or why it is not a cluster id.
    pub fn start_cluster_operation(
        &self,
        cluster_id: &str,
        operation: &str,
        duration: Duration,
    ) -> Result<String, String> {
        let Some((sub, rg, cluster)) = route::parse_cluster_id(cluster_id) else {
            return Err(format!(
                "'{cluster_id}' is not a managed cluster id (/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.ContainerService/managedClusters/{{name}})"
            ));
        };
        let id = format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{cluster}"
        );
        let now = Instant::now();
        let mut st = lock(&self.state);
        st.settle(now);
        st.cluster_ops.insert(
            id.to_ascii_lowercase(),
            ClusterOp {
                id: id.clone(),
                operation: operation.to_string(),
                until: now + duration,
            },
        );
        Ok(id)
    }

    /// How long a deleted container stays "being deleted": the behaviour's real-world seconds
    /// times the latency profile's scale.
    fn container_deletion_window(&self) -> Duration {
        let secs = self.behaviour.container_deletion_secs * self.latency.scale;
        if secs.is_finite() && secs > 0.0 {
            Duration::from_secs_f64(secs)
        } else {
            Duration::ZERO
        }
    }

    /// Every agent-pool operation since start or reset, in the order they began: how busy each
    /// cluster was (the benchmarks' measure of how well the worker uses a cluster).
    pub fn pool_operations(&self) -> Vec<PoolOperationSpan> {
        let st = lock(&self.state);
        let mut spans: Vec<PoolOperationSpan> = st
            .operations
            .values()
            .map(|op| PoolOperationSpan {
                pool: op.pool_key.clone(),
                kind: match op.kind {
                    state::OpKind::Create => "create",
                    state::OpKind::Update => "update",
                    state::OpKind::Delete => "delete",
                },
                began: op.begun,
                ends: op.done_at,
            })
            .collect();
        spans.sort_by_key(|s| s.began);
        spans
    }

    /// Every request received since start or reset (the last 10 000).
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        lock(&self.recorded).clone()
    }

    pub fn inventory(&self) -> Inventory {
        let mut state = lock(&self.state);
        state.settle(Instant::now());
        let ids = |values: Vec<&Value>| -> Vec<String> {
            values
                .into_iter()
                .filter_map(|v| v["id"].as_str().map(str::to_string))
                .collect()
        };
        let mut resources = BTreeMap::new();
        resources.insert(
            "agentPools".into(),
            ids(state.pools.values().map(|p| &p.body).collect()),
        );
        resources.insert(
            "userAssignedIdentities".into(),
            ids(state.identities.values().map(|i| &i.body).collect()),
        );
        resources.insert(
            "federatedIdentityCredentials".into(),
            ids(state.fics.values().collect()),
        );
        resources.insert(
            "blobContainers".into(),
            ids(state.containers.values().collect()),
        );
        resources.insert(
            "roleAssignments".into(),
            ids(state.role_assignments.values().map(|r| &r.body).collect()),
        );
        let total = resources.values().map(Vec::len).sum();
        let mut vcpus_in_use = BTreeMap::<String, u64>::new();
        for pool in state.pools.values() {
            let sub = pool.body["id"]
                .as_str()
                .and_then(|id| id.split('/').nth(2))
                .unwrap_or_default()
                .to_string();
            *vcpus_in_use.entry(sub).or_default() +=
                self.behaviour.pool_vcpus(&pool.body["properties"]);
        }
        Inventory {
            resources,
            total,
            operations_in_progress: state.operations.values().filter(|o| !o.done).count(),
            counters: Counters {
                requests: self.counters.requests.load(Ordering::Relaxed),
                throttled: self.counters.throttled.load(Ordering::Relaxed),
                faults: self.counters.faults.load(Ordering::Relaxed),
                rejected_bodies: self.counters.rejected_bodies.load(Ordering::Relaxed),
                created: state.created.clone(),
            },
            schema_validation: self.schemas.is_some(),
            cluster_operations: state
                .cluster_ops
                .values()
                .map(|op| (op.id.clone(), op.operation.clone()))
                .collect(),
            containers_being_deleted: state
                .deleting_containers
                .values()
                .map(|c| c.id.clone())
                .collect(),
            vcpus_in_use,
            kube_nodes: self.node_sink.as_ref().map(node_sink::NodeSink::report),
        }
    }
}

/// The simulator's HTTP API. `addr` is where it listens: operation URLs point back at it.
pub fn router(sim: Arc<ArmSim>, addr: SocketAddr) -> axum::Router {
    let ctx = Arc::new(Ctx {
        sim,
        base: format!("http://{addr}"),
    });
    axum::Router::new()
        .route("/_sim/inventory", get(admin::inventory))
        .route("/_sim/faults", post(admin::set_faults))
        .route("/_sim/reset", post(admin::reset))
        .route("/_sim/cluster-operation", post(admin::cluster_operation))
        .fallback(handler::handle)
        .with_state(ctx)
}

#[derive(Debug)]
struct Ctx {
    sim: Arc<ArmSim>,
    base: String,
}
