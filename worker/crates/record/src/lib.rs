//! The saga state of one tenant, as stored in the journal (one JSON document per tenant).
//!
//! Everything needed to resume after a crash lives here: which steps are done and their outputs,
//! which long-running operation to poll and when, how many attempts a step has spent, which
//! continuation message is the live one, and the outcome events of finished requests (so a
//! replayed request is answered with the very same event).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use onboarding_contract::events::{CloudEvent, EventError};
use onboarding_contract::{Command, OnboardTenant};
use onboarding_providers::{PendingOperation, ProviderError};

mod requests;
/// What a waiting step's operation says about its place in its cluster's line.
pub use onboarding_providers::QueuePlace;
pub use requests::{RequestEntry, Reuse, digest, request_key};

/// The saga steps, in no particular order (dependencies live in `steps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    Namespace,
    NodePool,
    Identity,
    BlobContainer,
    FederatedCredential,
    RoleAssignment,
    ServiceAccount,
    Guardrails,
    Workload,
}

impl StepName {
    pub const ALL: [StepName; 9] = [
        StepName::Namespace,
        StepName::NodePool,
        StepName::Identity,
        StepName::BlobContainer,
        StepName::FederatedCredential,
        StepName::RoleAssignment,
        StepName::ServiceAccount,
        StepName::Guardrails,
        StepName::Workload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Namespace => "namespace",
            StepName::NodePool => "node_pool",
            StepName::Identity => "identity",
            StepName::BlobContainer => "blob_container",
            StepName::FederatedCredential => "federated_credential",
            StepName::RoleAssignment => "role_assignment",
            StepName::ServiceAccount => "service_account",
            StepName::Guardrails => "guardrails",
            StepName::Workload => "workload",
        }
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one direction (forward or compensation) of a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Nothing to do in this direction.
    #[default]
    NotNeeded,
    Pending,
    /// Started; it may have created something.
    Running,
    /// Waiting for a long-running operation or a retry, until `wake_at`.
    Waiting,
    Done,
    Failed,
    /// Not requested by the command (optional steps).
    Skipped,
    /// Deliberately left in place (tenant data without `purgeData`).
    Kept,
}

impl Status {
    /// No more work will happen in this direction.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            Status::NotNeeded | Status::Done | Status::Failed | Status::Skipped | Status::Kept
        )
    }
    /// The forward action may have created something.
    pub fn was_started(self) -> bool {
        matches!(
            self,
            Status::Running | Status::Waiting | Status::Done | Status::Failed
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StepState {
    pub forward: Status,
    pub compensation: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<PendingOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<DateTime<Utc>>,
    /// Continuations spent on transient failures in the current direction.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ProviderError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Forward,
    Compensating,
}

/// One request being carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRun {
    pub request_id: String,
    pub command: Command,
    pub target: String,
    pub phase: Phase,
    /// Why the run is compensating (a step failure, or a cancelling offboarding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<EventError>,
    pub steps: BTreeMap<StepName, StepState>,
    /// Steps whose resources existed before this run (an update): a failed update leaves them.
    #[serde(default)]
    pub preexisting: BTreeSet<StepName>,
    /// Steps of an update that the new spec no longer asks for but whose resources exist: going
    /// forward, they remove them (their compensation), so that the tenant converges on the spec.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removing: BTreeSet<StepName>,
    /// An offboarding of a tenant the worker has no record of: nothing to do, answered "not
    /// found".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_found: bool,
    /// Continuations sent so far; the next one is `<request-id>:<seq+1>`.
    pub seq: u32,
    /// The live continuation: any other message of this request is a stale duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_continuation: Option<Continuation>,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continuation {
    pub message_id: String,
    pub wake_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedRequest {
    pub command: Command,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedRequest {
    pub request_id: String,
    /// The terminal event, re-published as is when the request is replayed.
    pub event: CloudEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TenantState {
    #[default]
    New,
    Onboarding,
    Onboarded,
    Failed,
    CompensationFailed,
    Offboarding,
    Offboarded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub until: DateTime<Utc>,
}

/// The journal document of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TenantRecord {
    pub tenant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub state: TenantState,
    /// Outputs of every step whose resource exists now.
    #[serde(default)]
    pub resources: BTreeMap<StepName, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<SagaRun>,
    /// Requests for this tenant that arrived while another one was running, in order.
    #[serde(default)]
    pub queued: VecDeque<QueuedRequest>,
    #[serde(default)]
    pub finished: VecDeque<FinishedRequest>,
    /// The request the tenant accepted last (started or queued): a replay of any other request
    /// it carried out is superseded and never applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_accepted: Option<String>,
    /// Outcome events recorded but not yet confirmed published (a transactional outbox): any
    /// later message of the tenant, including the redelivery after a crash, publishes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<CloudEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// The onboarding the tenant's resources were last built to (its last successful
    /// `OnboardTenant`): what `producer verify` and `plan` compare the live state with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<OnboardTenant>,
}

impl TenantRecord {
    pub fn new(tenant_id: &str) -> Self {
        Self {
            tenant_id: tenant_id.to_string(),
            ..Self::default()
        }
    }

    pub fn finished_event(&self, request_id: &str) -> Option<&CloudEvent> {
        self.finished
            .iter()
            .find(|f| f.request_id == request_id)
            .map(|f| &f.event)
    }

    /// The latest request the tenant accepted (records written before `last_accepted` existed:
    /// the latest finished one).
    pub fn latest_request(&self) -> Option<&str> {
        self.last_accepted
            .as_deref()
            .or_else(|| self.finished.back().map(|f| f.request_id.as_str()))
    }

    /// The tenant knows this request: running, queued, or among its recent outcomes.
    pub fn knows(&self, request_id: &str) -> bool {
        self.active
            .as_ref()
            .is_some_and(|r| r.request_id == request_id)
            || self.is_queued(request_id)
            || self.finished_event(request_id).is_some()
    }

    pub fn is_queued(&self, request_id: &str) -> bool {
        self.queued
            .iter()
            .any(|q| q.command.request_id() == request_id)
    }
}
