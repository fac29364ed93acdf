//! What the ARM simulator holds in memory: the resources by type, the agent-pool operations in
//! flight, and the inventory and counters it reports on `GET /_sim/inventory`.
//!
//! Keys are lower-cased resource ids (ARM ids are case-insensitive). [`ArmState::settle`] moves
//! time forward: it finishes the agent-pool operations whose time has come.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A request as the simulator received it, for contract tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The fault-injection name, e.g. `arm.agent_pools.put`.
    pub operation: String,
    pub body: Option<Value>,
}

/// What exists, plus counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Resource ids by type: `agentPools`, `userAssignedIdentities`,
    /// `federatedIdentityCredentials`, `blobContainers`, `roleAssignments`.
    pub resources: BTreeMap<String, Vec<String>>,
    pub total: usize,
    pub operations_in_progress: usize,
    pub counters: Counters,
    /// Whether request bodies are checked against the official schemas.
    pub schema_validation: bool,
    /// Clusters busy with a cluster-level operation (`POST /_sim/cluster-operation`): cluster id
    /// → operation (e.g. `Upgrading`).
    #[serde(default)]
    pub cluster_operations: BTreeMap<String, String>,
    /// Blob containers deleted but still being deleted: their names cannot be used yet.
    #[serde(default)]
    pub containers_being_deleted: Vec<String>,
    /// vCPUs the agent pools of each subscription hold against its regional quota.
    #[serde(default)]
    pub vcpus_in_use: BTreeMap<String, u64>,
    /// The nodes registered for agent pools, when a Kubernetes API server is configured
    /// (`SimOptions::kube_nodes`), with the failures of doing so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_nodes: Option<super::NodeSinkReport>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub requests: u64,
    /// 429s, from the write bucket or injected.
    pub throttled: u64,
    /// Injected faults of any kind.
    pub faults: u64,
    /// Bodies refused by schema validation.
    pub rejected_bodies: u64,
    /// Resources created (not updated), by the type names of `Inventory::resources`: a
    /// retried or replayed creation that converges shows up as one.
    #[serde(default)]
    pub created: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub(super) struct AtomicCounters {
    pub(super) requests: AtomicU64,
    pub(super) throttled: AtomicU64,
    pub(super) faults: AtomicU64,
    pub(super) rejected_bodies: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone)]
pub(super) struct OpRec {
    pub(super) pool_key: String,
    pub(super) kind: OpKind,
    pub(super) started: chrono::DateTime<chrono::Utc>,
    /// When it began, on the clock `done_at` is on.
    pub(super) begun: Instant,
    pub(super) done_at: Instant,
    pub(super) done: bool,
    pub(super) subscription: String,
}

#[derive(Debug, Clone)]
pub(super) struct PoolRec {
    pub(super) cluster_key: String,
    pub(super) body: Value,
    pub(super) op: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct IdentityRec {
    pub(super) body: Value,
    pub(super) principal_id: String,
    pub(super) created: Instant,
}

#[derive(Debug, Clone)]
pub(super) struct RoleRec {
    pub(super) body: Value,
    pub(super) scope_key: String,
    pub(super) principal_key: String,
    pub(super) role_key: String,
}

/// One agent-pool operation: which pool, what, and when it ran (or runs until).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOperationSpan {
    /// The pool's ARM id, lower-cased.
    pub pool: String,
    /// `create`, `update` or `delete`.
    pub kind: &'static str,
    pub began: Instant,
    pub ends: Instant,
}

/// A cluster-level operation (an upgrade, say) that keeps agent-pool operations out.
#[derive(Debug, Clone)]
pub(super) struct ClusterOp {
    pub(super) id: String,
    pub(super) operation: String,
    pub(super) until: Instant,
}

/// A deleted blob container whose name Storage does not release yet.
#[derive(Debug, Clone)]
pub(super) struct DeletingContainer {
    pub(super) id: String,
    pub(super) until: Instant,
}

#[derive(Debug, Default)]
pub(super) struct ArmState {
    pub(super) pools: BTreeMap<String, PoolRec>,
    pub(super) identities: BTreeMap<String, IdentityRec>,
    pub(super) fics: BTreeMap<String, Value>,
    /// When each federated credential (by lower-cased id) was created or last changed: the
    /// Entra simulator does not honour it before its propagation delay has passed.
    pub(super) fic_changed: BTreeMap<String, Instant>,
    pub(super) containers: BTreeMap<String, Value>,
    pub(super) role_assignments: BTreeMap<String, RoleRec>,
    pub(super) operations: HashMap<String, OpRec>,
    pub(super) created: BTreeMap<String, u64>,
    /// By lower-cased cluster id.
    pub(super) cluster_ops: BTreeMap<String, ClusterOp>,
    /// By lower-cased container id.
    pub(super) deleting_containers: BTreeMap<String, DeletingContainer>,
}

impl ArmState {
    pub(super) fn count_created(&mut self, kind: &str) {
        *self.created.entry(kind.to_string()).or_default() += 1;
    }

    /// Finishes the operations whose time has come, ends cluster operations and container
    /// deletions that are over.
    pub(super) fn settle(&mut self, now: Instant) {
        self.cluster_ops.retain(|_, op| op.until > now);
        self.deleting_containers.retain(|_, c| c.until > now);
        for rec in self.operations.values_mut() {
            if rec.done || rec.done_at > now {
                continue;
            }
            rec.done = true;
            match rec.kind {
                OpKind::Delete => {
                    self.pools.remove(&rec.pool_key);
                }
                OpKind::Create | OpKind::Update => {
                    if let Some(pool) = self.pools.get_mut(&rec.pool_key) {
                        pool.op = None;
                        pool.body["properties"]["provisioningState"] = json!("Succeeded");
                    }
                }
            }
        }
        for pool in self.pools.values_mut() {
            if pool
                .op
                .as_ref()
                .is_some_and(|id| self.operations.get(id).is_none_or(|o| o.done))
            {
                pool.op = None;
            }
        }
    }

    /// The cluster-level operation running on a cluster (after `settle`).
    pub(super) fn cluster_op(&self, cluster_key: &str) -> Option<&ClusterOp> {
        self.cluster_ops.get(cluster_key)
    }

    pub(super) fn busy_op_in_cluster(&self, cluster_key: &str) -> Option<(&str, OpKind)> {
        self.pools.iter().find_map(|(key, p)| {
            if p.cluster_key != cluster_key {
                return None;
            }
            let op = self.operations.get(p.op.as_ref()?)?;
            (!op.done).then_some((key.as_str(), op.kind))
        })
    }
}
