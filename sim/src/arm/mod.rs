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

pub mod schema;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::SimOptions;
use crate::faults::{Fault, FaultPlan, Faults, LatencyProfile};
use schema::{BodyKind, SpecSchemas};

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
struct AtomicCounters {
    requests: AtomicU64,
    throttled: AtomicU64,
    faults: AtomicU64,
    rejected_bodies: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone)]
struct OpRec {
    pool_key: String,
    kind: OpKind,
    started: chrono::DateTime<chrono::Utc>,
    done_at: Instant,
    done: bool,
    subscription: String,
}

#[derive(Debug, Clone)]
struct PoolRec {
    cluster_key: String,
    body: Value,
    op: Option<String>,
}

#[derive(Debug, Clone)]
struct IdentityRec {
    body: Value,
    principal_id: String,
    created: Instant,
}

#[derive(Debug, Clone)]
struct RoleRec {
    body: Value,
    scope_key: String,
    principal_key: String,
    role_key: String,
}

#[derive(Debug, Default)]
struct ArmState {
    pools: BTreeMap<String, PoolRec>,
    identities: BTreeMap<String, IdentityRec>,
    fics: BTreeMap<String, Value>,
    containers: BTreeMap<String, Value>,
    role_assignments: BTreeMap<String, RoleRec>,
    operations: HashMap<String, OpRec>,
    created: BTreeMap<String, u64>,
}

impl ArmState {
    fn count_created(&mut self, kind: &str) {
        *self.created.entry(kind.to_string()).or_default() += 1;
    }
}

impl ArmState {
    /// Finishes the operations whose time has come.
    fn settle(&mut self, now: Instant) {
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

    fn busy_op_in_cluster(&self, cluster_key: &str) -> Option<(&str, OpKind)> {
        self.pools.iter().find_map(|(key, p)| {
            if p.cluster_key != cluster_key {
                return None;
            }
            let op = self.operations.get(p.op.as_ref()?)?;
            (!op.done).then_some((key.as_str(), op.kind))
        })
    }
}

#[derive(Debug)]
struct Bucket {
    size: f64,
    refill: f64,
    tokens: HashMap<String, (f64, Instant)>,
}

impl Bucket {
    /// Takes a write token for a subscription, or says how long until there is one.
    fn take(&mut self, subscription: &str, now: Instant) -> Result<u64, Duration> {
        let (size, refill) = (self.size, self.refill);
        let entry = self
            .tokens
            .entry(subscription.to_ascii_lowercase())
            .or_insert((size, now));
        let elapsed = now.saturating_duration_since(entry.1).as_secs_f64();
        entry.0 = (entry.0 + elapsed * refill).min(size);
        entry.1 = now;
        if entry.0 >= 1.0 {
            entry.0 -= 1.0;
            Ok(entry.0.floor() as u64)
        } else if refill > 0.0 {
            Err(Duration::from_secs_f64((1.0 - entry.0) / refill))
        } else {
            Err(Duration::from_secs(60))
        }
    }
}

/// The simulator's state and settings; share it with [`router`].
#[derive(Debug)]
pub struct ArmSim {
    faults: Faults,
    initial_plan: FaultPlan,
    latency: LatencyProfile,
    schemas: Option<SpecSchemas>,
    bucket: Option<Mutex<Bucket>>,
    principal_propagation: Mutex<Duration>,
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
            principal_propagation: Mutex::new(Duration::ZERO),
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
        .route("/_sim/inventory", get(inventory))
        .route("/_sim/faults", post(set_faults))
        .route("/_sim/reset", post(reset))
        .fallback(handle)
        .with_state(ctx)
}

#[derive(Debug)]
struct Ctx {
    sim: Arc<ArmSim>,
    base: String,
}

async fn inventory(State(ctx): State<Arc<Ctx>>) -> Response {
    axum::Json(ctx.sim.inventory()).into_response()
}

async fn set_faults(State(ctx): State<Arc<Ctx>>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultPlan>(&body) {
        Ok(plan) => {
            ctx.sim.set_faults(plan);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidFaultPlan",
            &format!("the body is not a FaultPlan: {e}"),
        ),
    }
}

async fn reset(State(ctx): State<Arc<Ctx>>) -> Response {
    ctx.sim.reset();
    StatusCode::NO_CONTENT.into_response()
}

// ---------------------------------------------------------------- routing

#[derive(Debug, Clone, PartialEq)]
enum Route {
    AgentPool {
        sub: String,
        rg: String,
        cluster: String,
        pool: String,
    },
    Identity {
        sub: String,
        rg: String,
        name: String,
    },
    Fic {
        sub: String,
        rg: String,
        identity: String,
        name: String,
    },
    Container {
        sub: String,
        rg: String,
        account: String,
        name: String,
    },
    RoleAssignment {
        scope: String,
        name: String,
    },
    RoleAssignments {
        scope: String,
    },
    Operation {
        id: String,
        result: bool,
    },
}

fn is(segment: &str, literal: &str) -> bool {
    segment.eq_ignore_ascii_case(literal)
}

fn matches(segs: &[&str], pattern: &[&str]) -> bool {
    segs.len() == pattern.len() && segs.iter().zip(pattern).all(|(s, p)| *p == "*" || is(s, p))
}

fn parse_route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let s = |i: usize| segs[i].to_string();
    // Role assignments may hang off any scope, so look for them first.
    if let Some(i) = (0..segs.len().saturating_sub(2)).rev().find(|&i| {
        is(segs[i], "providers")
            && is(segs[i + 1], "Microsoft.Authorization")
            && is(segs[i + 2], "roleAssignments")
    }) {
        let scope = format!("/{}", segs[..i].join("/"));
        if i == 0 {
            return None;
        }
        return match segs.len() - (i + 3) {
            0 => Some(Route::RoleAssignments { scope }),
            1 => Some(Route::RoleAssignment {
                scope,
                name: s(i + 3),
            }),
            _ => None,
        };
    }
    let rg = ["subscriptions", "*", "resourceGroups", "*", "providers"];
    let with =
        |tail: &[&'static str]| -> Vec<&'static str> { rg.iter().chain(tail).copied().collect() };
    if matches(
        &segs,
        &with(&[
            "Microsoft.ContainerService",
            "managedClusters",
            "*",
            "agentPools",
            "*",
        ]),
    ) {
        return Some(Route::AgentPool {
            sub: s(1),
            rg: s(3),
            cluster: s(7),
            pool: s(9),
        });
    }
    if matches(
        &segs,
        &with(&["Microsoft.ManagedIdentity", "userAssignedIdentities", "*"]),
    ) {
        return Some(Route::Identity {
            sub: s(1),
            rg: s(3),
            name: s(7),
        });
    }
    if matches(
        &segs,
        &with(&[
            "Microsoft.ManagedIdentity",
            "userAssignedIdentities",
            "*",
            "federatedIdentityCredentials",
            "*",
        ]),
    ) {
        return Some(Route::Fic {
            sub: s(1),
            rg: s(3),
            identity: s(7),
            name: s(9),
        });
    }
    if matches(
        &segs,
        &with(&[
            "Microsoft.Storage",
            "storageAccounts",
            "*",
            "blobServices",
            "default",
            "containers",
            "*",
        ]),
    ) {
        return Some(Route::Container {
            sub: s(1),
            rg: s(3),
            account: s(7),
            name: s(11),
        });
    }
    if matches(
        &segs,
        &[
            "subscriptions",
            "*",
            "providers",
            "Microsoft.ContainerService",
            "locations",
            "*",
            "operations",
            "*",
        ],
    ) {
        return Some(Route::Operation {
            id: s(7),
            result: false,
        });
    }
    if matches(
        &segs,
        &[
            "subscriptions",
            "*",
            "providers",
            "Microsoft.ContainerService",
            "locations",
            "*",
            "operationresults",
            "*",
        ],
    ) {
        return Some(Route::Operation {
            id: s(7),
            result: true,
        });
    }
    None
}

impl Route {
    /// Fault-injection family, e.g. `arm.agent_pools`.
    fn family(&self) -> &'static str {
        match self {
            Route::AgentPool { .. } => "arm.agent_pools",
            Route::Identity { .. } => "arm.identities",
            Route::Fic { .. } => "arm.federated_credentials",
            Route::Container { .. } => "arm.blob_containers",
            Route::RoleAssignment { .. } | Route::RoleAssignments { .. } => "arm.role_assignments",
            Route::Operation { .. } => "arm.operations",
        }
    }

    fn api_version(&self) -> &'static str {
        match self {
            Route::AgentPool { .. } | Route::Operation { .. } => AKS_API_VERSION,
            Route::Identity { .. } | Route::Fic { .. } => MSI_API_VERSION,
            Route::Container { .. } => STORAGE_API_VERSION,
            Route::RoleAssignment { .. } | Route::RoleAssignments { .. } => {
                AUTHORIZATION_API_VERSION
            }
        }
    }

    fn subscription(&self) -> String {
        match self {
            Route::AgentPool { sub, .. }
            | Route::Identity { sub, .. }
            | Route::Fic { sub, .. }
            | Route::Container { sub, .. } => sub.clone(),
            Route::RoleAssignment { scope, .. } | Route::RoleAssignments { scope } => scope
                .trim_start_matches('/')
                .split('/')
                .nth(1)
                .unwrap_or_default()
                .to_string(),
            Route::Operation { .. } => String::new(),
        }
    }
}

// ---------------------------------------------------------------- responses

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn with_retry_after(mut resp: Response, after: Duration) -> Response {
    let secs = after.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, axum::Json(body.clone())).into_response()
}

fn not_found(kind: &str, name: &str, rg: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!(
            "The Resource '{kind}/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query().and_then(|q| {
        url_decode_pairs(q)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    })
}

fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------- the handler

async fn handle(
    State(ctx): State<Arc<Ctx>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sim = &ctx.sim;
    sim.counters.requests.fetch_add(1, Ordering::Relaxed);
    let client_request_id = headers
        .get("x-ms-client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut resp = respond(&ctx, &method, &uri, &body).await;
    let h = resp.headers_mut();
    let request_id = Uuid::new_v4().to_string();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-ms-request-id", v.clone());
        h.insert("x-ms-correlation-request-id", v);
    }
    if let Some(id) = client_request_id.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert("x-ms-client-request-id", id);
    }
    tracing::debug!(http.method = %method, path = %uri.path(), http.status = resp.status().as_u16(), "ARM sim");
    resp
}

async fn respond(ctx: &Ctx, method: &Method, uri: &Uri, body: &Bytes) -> Response {
    let sim = &ctx.sim;
    let Some(route) = parse_route(uri.path()) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            &format!(
                "The resource type of '{}' could not be found; the ARM simulator implements agent pools, user-assigned identities, federated identity credentials, blob containers and role assignments only.",
                uri.path()
            ),
        );
    };
    let verb = match (method.as_str(), &route) {
        ("GET", Route::RoleAssignments { .. }) => "list",
        ("GET", _) => "get",
        ("PUT", Route::RoleAssignments { .. } | Route::Operation { .. }) => "",
        ("PUT", _) => "put",
        ("DELETE", Route::RoleAssignments { .. } | Route::Operation { .. }) => "",
        ("DELETE", _) => "delete",
        _ => "",
    };
    if verb.is_empty() {
        return arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "HttpMethodNotSupported",
            &format!("{method} is not supported on {}", uri.path()),
        );
    }
    let operation = format!("{}.{verb}", route.family());
    let parsed_body = if method == Method::PUT {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => Some(v),
            Err(e) => {
                sim.counters.rejected_bodies.fetch_add(1, Ordering::Relaxed);
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContent",
                    &format!("The request content was invalid and could not be deserialized: {e}"),
                );
            }
        }
    } else {
        None
    };
    {
        let mut rec = lock(&sim.recorded);
        if rec.len() >= MAX_RECORDED {
            rec.remove(0);
        }
        rec.push(RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_string(),
            operation: operation.clone(),
            body: parsed_body.clone(),
        });
    }
    let expected = route.api_version();
    match query_param(uri, "api-version") {
        None => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                &format!(
                    "The api-version query parameter (?api-version=) is required for all requests. The supported api-version is '{expected}'."
                ),
            );
        }
        Some(v) if v != expected => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                &format!(
                    "The api-version '{v}' is invalid. The supported versions are '{expected}'."
                ),
            );
        }
        Some(_) => {}
    }
    let is_write = method == Method::PUT || method == Method::DELETE;
    if is_write && let Some(bucket) = &sim.bucket {
        let taken = lock(bucket).take(&route.subscription(), Instant::now());
        match taken {
            Ok(remaining) => {
                let mut resp =
                    Box::pin(dispatch(ctx, method, uri, &route, &operation, parsed_body)).await;
                if let Ok(v) = HeaderValue::from_str(&remaining.to_string()) {
                    resp.headers_mut()
                        .insert("x-ms-ratelimit-remaining-subscription-writes", v);
                }
                return resp;
            }
            Err(wait) => {
                sim.counters.throttled.fetch_add(1, Ordering::Relaxed);
                return with_retry_after(
                    arm_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "SubscriptionRequestsThrottled",
                        "Number of 'write' requests for subscription exceeded the limit. Please try again after the time in the Retry-After header.",
                    ),
                    wait,
                );
            }
        }
    }
    dispatch(ctx, method, uri, &route, &operation, parsed_body).await
}

async fn dispatch(
    ctx: &Ctx,
    method: &Method,
    uri: &Uri,
    route: &Route,
    operation: &str,
    body: Option<Value>,
) -> Response {
    let sim = &ctx.sim;
    match sim.faults.decide(operation) {
        Fault::None => {}
        Fault::Throttle { retry_after_secs } => {
            sim.counters.faults.fetch_add(1, Ordering::Relaxed);
            sim.counters.throttled.fetch_add(1, Ordering::Relaxed);
            return with_retry_after(
                arm_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    &format!("{operation}: too many requests (injected)"),
                ),
                Duration::from_secs(retry_after_secs),
            );
        }
        Fault::ServerError(code) => {
            sim.counters.faults.fetch_add(1, Ordering::Relaxed);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let name = if code == 503 {
                "ServiceUnavailable"
            } else {
                "InternalServerError"
            };
            return arm_error(
                status,
                name,
                &format!("{operation}: injected server error {code}"),
            );
        }
        Fault::Stall(d) => {
            sim.counters.faults.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(d).await;
            return arm_error(
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeout",
                &format!(
                    "{operation}: the request stalled for {} ms (injected)",
                    d.as_millis()
                ),
            );
        }
        Fault::Permanent => {
            sim.counters.faults.fetch_add(1, Ordering::Relaxed);
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InjectedPermanentFailure",
                &format!("{operation} fails permanently (injected by the simulator's fault plan)"),
            );
        }
    }
    if let (Some(schemas), Some(body), Some(kind)) = (&sim.schemas, &body, body_kind(route))
        && let Err(errors) = schemas.validate(kind, body)
    {
        sim.counters.rejected_bodies.fetch_add(1, Ordering::Relaxed);
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            &format!(
                "The request content does not match the {kind:?} schema of the official spec: {}",
                errors.join("; ")
            ),
        );
    }
    // Synchronous writes take their (scaled) time; agent pools take theirs as an operation.
    if (*method == Method::PUT || *method == Method::DELETE)
        && !matches!(route, Route::AgentPool { .. })
    {
        let d = sim.latency.latency(operation);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
    let body = body.unwrap_or(Value::Null);
    match route {
        Route::AgentPool {
            sub,
            rg,
            cluster,
            pool,
        } => {
            let id = format!(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{cluster}/agentPools/{pool}"
            );
            match method.as_str() {
                "PUT" => put_pool(ctx, sub, &id, pool, body),
                "DELETE" => delete_pool(ctx, sub, &id, pool),
                _ => get_pool(sim, &id, cluster, pool, rg),
            }
        }
        Route::Operation { id, result } => get_operation(ctx, id, *result),
        Route::Identity { sub, rg, name } => {
            let id = format!(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
            );
            match method.as_str() {
                "PUT" => put_identity(sim, &id, name, body),
                "DELETE" => {
                    let mut st = lock(&sim.state);
                    let prefix = format!("{}/", id.to_ascii_lowercase());
                    st.fics.retain(|k, _| !k.starts_with(&prefix));
                    deleted(st.identities.remove(&id.to_ascii_lowercase()).is_some())
                }
                _ => match lock(&sim.state).identities.get(&id.to_ascii_lowercase()) {
                    Some(rec) => json_response(StatusCode::OK, &rec.body),
                    None => not_found("Microsoft.ManagedIdentity/userAssignedIdentities", name, rg),
                },
            }
        }
        Route::Fic {
            sub,
            rg,
            identity,
            name,
        } => {
            let parent = format!(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{identity}"
            );
            let id = format!("{parent}/federatedIdentityCredentials/{name}");
            match method.as_str() {
                "PUT" => put_fic(sim, &parent, &id, name, body),
                "DELETE" => deleted(
                    lock(&sim.state)
                        .fics
                        .remove(&id.to_ascii_lowercase())
                        .is_some(),
                ),
                _ => match lock(&sim.state).fics.get(&id.to_ascii_lowercase()) {
                    Some(v) => json_response(StatusCode::OK, v),
                    None => not_found(
                        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
                        &format!("{identity}/{name}"),
                        rg,
                    ),
                },
            }
        }
        Route::Container {
            sub,
            rg,
            account,
            name,
        } => {
            let id = format!(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{account}/blobServices/default/containers/{name}"
            );
            match method.as_str() {
                "PUT" => put_container(sim, &id, name, body),
                "DELETE" => {
                    let mut st = lock(&sim.state);
                    let key = id.to_ascii_lowercase();
                    // Role assignments are extension resources: they go with their scope.
                    st.role_assignments.retain(|_, r| {
                        r.scope_key != key && !r.scope_key.starts_with(&format!("{key}/"))
                    });
                    deleted(st.containers.remove(&key).is_some())
                }
                _ => match lock(&sim.state).containers.get(&id.to_ascii_lowercase()) {
                    Some(v) => json_response(StatusCode::OK, v),
                    None => arm_error(
                        StatusCode::NOT_FOUND,
                        "ContainerNotFound",
                        "The specified container does not exist.",
                    ),
                },
            }
        }
        Route::RoleAssignment { scope, name } => {
            let id = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
            match method.as_str() {
                "PUT" => put_role_assignment(sim, scope, &id, name, body),
                "DELETE" => match lock(&sim.state)
                    .role_assignments
                    .remove(&id.to_ascii_lowercase())
                {
                    Some(rec) => json_response(StatusCode::OK, &rec.body),
                    None => StatusCode::NO_CONTENT.into_response(),
                },
                _ => match lock(&sim.state)
                    .role_assignments
                    .get(&id.to_ascii_lowercase())
                {
                    Some(rec) => json_response(StatusCode::OK, &rec.body),
                    None => arm_error(
                        StatusCode::NOT_FOUND,
                        "RoleAssignmentNotFound",
                        &format!("The role assignment '{name}' is not found."),
                    ),
                },
            }
        }
        Route::RoleAssignments { scope } => list_role_assignments(sim, scope, uri),
    }
}

fn body_kind(route: &Route) -> Option<BodyKind> {
    match route {
        Route::AgentPool { .. } => Some(BodyKind::AgentPool),
        Route::Identity { .. } => Some(BodyKind::Identity),
        Route::Fic { .. } => Some(BodyKind::FederatedIdentityCredential),
        Route::Container { .. } => Some(BodyKind::BlobContainer),
        Route::RoleAssignment { .. } => Some(BodyKind::RoleAssignmentCreate),
        _ => None,
    }
}

/// 200 when something was deleted, 204 when there was nothing (ARM's synchronous deletes).
fn deleted(existed: bool) -> Response {
    if existed {
        StatusCode::OK.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn valid_name(name: &str, min: usize, max: usize, extra: &[char]) -> bool {
    (min..=max).contains(&name.len())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

// ---------------------------------------------------------------- agent pools

/// The fields of a pool's properties a PUT may change (everything but read-only ones).
fn desired(props: &Value) -> Value {
    let mut p = props.clone();
    if let Some(o) = p.as_object_mut() {
        for k in [
            "provisioningState",
            "currentOrchestratorVersion",
            "nodeImageVersion",
            "powerState",
            "eTag",
            "maxPods",
            "type",
            "orchestratorVersion",
            "status",
        ] {
            o.remove(k);
        }
        o.retain(|_, v| !v.is_null());
    }
    p
}

fn lro_headers(ctx: &Ctx, sub: &str, op_id: &str, after: Duration, mut resp: Response) -> Response {
    let base = format!(
        "{}/subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{SIM_LOCATION}",
        ctx.base
    );
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{base}/operations/{op_id}?api-version={AKS_API_VERSION}"
    )) {
        h.insert("azure-asyncoperation", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{base}/operationresults/{op_id}?api-version={AKS_API_VERSION}"
    )) {
        h.insert("location", v);
    }
    let secs = (after.as_secs_f64().ceil() as u64).min(15);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        h.insert("retry-after", v);
    }
    resp
}

fn busy(what: &str) -> Response {
    arm_error(
        StatusCode::CONFLICT,
        "OperationNotAllowed",
        &format!(
            "Operation is not allowed because there's an in progress {what} operation. Please wait for it to finish before starting a new operation."
        ),
    )
}

fn op_word(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Create => "create agent pool",
        OpKind::Update => "update agent pool",
        OpKind::Delete => "delete agent pool",
    }
}

fn put_pool(ctx: &Ctx, sub: &str, id: &str, name: &str, body: Value) -> Response {
    let sim = &ctx.sim;
    let valid = name.len() <= 12
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !valid {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            &format!(
                "The agent pool name '{name}' is invalid: a Linux agent pool name must be 1-12 lowercase letters and digits, starting with a letter."
            ),
        );
    }
    let props = body.get("properties").cloned().unwrap_or_else(|| json!({}));
    if props
        .get("vmSize")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "The value of parameter agentPoolProfile.vmSize is invalid: it is required.",
        );
    }
    let autoscale = props.get("enableAutoScaling").and_then(Value::as_bool) == Some(true);
    if autoscale {
        let (min, max) = (
            props.get("minCount").and_then(Value::as_i64),
            props.get("maxCount").and_then(Value::as_i64),
        );
        match (min, max) {
            (Some(a), Some(b)) if a >= 0 && a <= b && b <= 1000 => {}
            _ => {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameter",
                    "enableAutoScaling needs minCount and maxCount with 0 <= minCount <= maxCount <= 1000.",
                );
            }
        }
    } else if props.get("minCount").is_some() || props.get("maxCount").is_some() {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "minCount and maxCount may only be set when enableAutoScaling is true.",
        );
    }
    if props.get("mode").and_then(Value::as_str) == Some("Gateway") {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "The simulator only creates System and User agent pools.",
        );
    }
    let key = id.to_ascii_lowercase();
    let cluster_key = key
        .rsplit_once("/agentpools/")
        .map(|(c, _)| c.to_string())
        .unwrap_or_default();
    let now = Instant::now();
    let mut st = lock(&sim.state);
    st.settle(now);
    if let Some((busy_key, kind)) = st.busy_op_in_cluster(&cluster_key) {
        let whose = if busy_key == key {
            "this agent pool's"
        } else {
            "another agent pool's"
        };
        return busy(&format!("{} ({whose})", op_word(kind)));
    }
    let existing = st.pools.get(&key).cloned();
    let (kind, status) = match &existing {
        Some(pool) => {
            let old = &pool.body["properties"];
            for immutable in ["vmSize", "availabilityZones", "osType"] {
                let (a, b) = (old.get(immutable), props.get(immutable));
                if b.is_some() && a != b {
                    return arm_error(
                        StatusCode::BAD_REQUEST,
                        "PropertyChangeNotAllowed",
                        &format!("Changing property '{immutable}' is not allowed."),
                    );
                }
            }
            let mut merged = desired(old);
            if let (Some(m), Some(new)) = (merged.as_object_mut(), desired(&props).as_object()) {
                for (k, v) in new {
                    m.insert(k.clone(), v.clone());
                }
            }
            if merged == desired(old) && old["provisioningState"] == "Succeeded" {
                return json_response(StatusCode::OK, &pool.body);
            }
            (OpKind::Update, StatusCode::OK)
        }
        None => (OpKind::Create, StatusCode::CREATED),
    };
    let mut properties = match &existing {
        Some(pool) => pool.body["properties"].clone(),
        None => json!({
            "mode": "User",
            "osType": "Linux",
            "osSKU": "Ubuntu",
            "type": "VirtualMachineScaleSets",
            "maxPods": 110,
            "orchestratorVersion": "1.33.2",
            "currentOrchestratorVersion": "1.33.2",
            "nodeImageVersion": "AKSUbuntu-2204gen2containerd-202508.20.1",
            "powerState": {"code": "Running"},
        }),
    };
    if let (Some(p), Some(new)) = (properties.as_object_mut(), desired(&props).as_object()) {
        for (k, v) in new {
            p.insert(k.clone(), v.clone());
        }
    }
    if autoscale && properties.get("count").is_none() {
        properties["count"] = props["minCount"].clone();
    }
    properties["provisioningState"] = json!(if kind == OpKind::Create {
        "Creating"
    } else {
        "Updating"
    });
    properties["eTag"] = json!(Uuid::new_v4().simple().to_string());
    let resource = json!({
        "id": id,
        "name": name,
        "type": "Microsoft.ContainerService/managedClusters/agentPools",
        "properties": properties,
    });
    let duration = sim.latency.latency("arm.agent_pools.create");
    let op_id = Uuid::new_v4().to_string();
    st.operations.insert(
        op_id.clone(),
        OpRec {
            pool_key: key.clone(),
            kind,
            started: chrono::Utc::now(),
            done_at: now + duration,
            done: false,
            subscription: sub.to_string(),
        },
    );
    if kind == OpKind::Create {
        st.count_created("agentPools");
    }
    st.pools.insert(
        key,
        PoolRec {
            cluster_key,
            body: resource.clone(),
            op: Some(op_id.clone()),
        },
    );
    lro_headers(ctx, sub, &op_id, duration, json_response(status, &resource))
}

fn get_pool(sim: &ArmSim, id: &str, cluster: &str, name: &str, rg: &str) -> Response {
    let mut st = lock(&sim.state);
    st.settle(Instant::now());
    match st.pools.get(&id.to_ascii_lowercase()) {
        Some(p) => json_response(StatusCode::OK, &p.body),
        None => not_found(
            "Microsoft.ContainerService/managedClusters/agentPools",
            &format!("{cluster}/{name}"),
            rg,
        ),
    }
}

fn delete_pool(ctx: &Ctx, sub: &str, id: &str, _name: &str) -> Response {
    let sim = &ctx.sim;
    let key = id.to_ascii_lowercase();
    let now = Instant::now();
    let mut st = lock(&sim.state);
    st.settle(now);
    let Some(pool) = st.pools.get(&key).cloned() else {
        return StatusCode::NO_CONTENT.into_response();
    };
    if let Some((busy_key, kind)) = st.busy_op_in_cluster(&pool.cluster_key) {
        let whose = if busy_key == key {
            "this agent pool's"
        } else {
            "another agent pool's"
        };
        return busy(&format!("{} ({whose})", op_word(kind)));
    }
    let duration = sim.latency.latency("arm.agent_pools.delete");
    let op_id = Uuid::new_v4().to_string();
    st.operations.insert(
        op_id.clone(),
        OpRec {
            pool_key: key.clone(),
            kind: OpKind::Delete,
            started: chrono::Utc::now(),
            done_at: now + duration,
            done: false,
            subscription: sub.to_string(),
        },
    );
    if let Some(p) = st.pools.get_mut(&key) {
        p.body["properties"]["provisioningState"] = json!("Deleting");
        p.op = Some(op_id.clone());
    }
    lro_headers(
        ctx,
        sub,
        &op_id,
        duration,
        StatusCode::ACCEPTED.into_response(),
    )
}

fn get_operation(ctx: &Ctx, op_id: &str, result: bool) -> Response {
    let sim = &ctx.sim;
    let now = Instant::now();
    let mut st = lock(&sim.state);
    st.settle(now);
    let Some(op) = st.operations.get(op_id).cloned() else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Operation '{op_id}' was not found."),
        );
    };
    let remaining = op.done_at.saturating_duration_since(now);
    if result {
        if !op.done {
            return lro_headers(
                ctx,
                &op.subscription,
                op_id,
                remaining,
                StatusCode::ACCEPTED.into_response(),
            );
        }
        return match (op.kind, st.pools.get(&op.pool_key)) {
            (OpKind::Delete, _) | (_, None) => StatusCode::NO_CONTENT.into_response(),
            (_, Some(p)) => json_response(StatusCode::OK, &p.body),
        };
    }
    let mut doc = json!({
        "id": format!("/subscriptions/{}/providers/Microsoft.ContainerService/locations/{SIM_LOCATION}/operations/{op_id}", op.subscription),
        "name": op_id,
        "status": if op.done { "Succeeded" } else { "InProgress" },
        "startTime": op.started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    if op.done {
        doc["endTime"] = json!(now_rfc3339());
        return json_response(StatusCode::OK, &doc);
    }
    let mut resp = json_response(StatusCode::OK, &doc);
    let secs = (remaining.as_secs_f64().ceil() as u64).min(15);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

// ---------------------------------------------------------------- identities

fn put_identity(sim: &ArmSim, id: &str, name: &str, body: Value) -> Response {
    if !valid_name(name, 3, 128, &['-', '_']) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidResourceName",
            &format!(
                "Resource name '{name}' is invalid. The name can contain only letters, numbers, underscores and hyphens, must start with a letter or number, and be 3 to 128 characters long."
            ),
        );
    }
    let key = id.to_ascii_lowercase();
    let mut st = lock(&sim.state);
    let (principal_id, client_id, status, created) = match st.identities.get(&key) {
        Some(rec) => (
            rec.principal_id.clone(),
            rec.body["properties"]["clientId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            StatusCode::OK,
            rec.created,
        ),
        None => (
            Uuid::new_v4().to_string(),
            Uuid::new_v4().to_string(),
            StatusCode::CREATED,
            Instant::now(),
        ),
    };
    let resource = json!({
        "id": id,
        "name": name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
        "location": body["location"],
        "tags": body.get("tags").cloned().unwrap_or_else(|| json!({})),
        "properties": {
            "tenantId": SIM_TENANT_ID,
            "principalId": principal_id,
            "clientId": client_id,
            "isolationScope": body.pointer("/properties/isolationScope").cloned().unwrap_or_else(|| json!("None")),
        }
    });
    if status == StatusCode::CREATED {
        st.count_created("userAssignedIdentities");
    }
    st.identities.insert(
        key,
        IdentityRec {
            body: resource.clone(),
            principal_id,
            created,
        },
    );
    json_response(status, &resource)
}

fn put_fic(sim: &ArmSim, parent: &str, id: &str, name: &str, body: Value) -> Response {
    if !valid_name(name, 3, 120, &['-', '_']) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidResourceName",
            &format!(
                "Federated identity credential name '{name}' is invalid: 3-120 letters, digits, hyphens and underscores, starting with a letter or digit."
            ),
        );
    }
    let props = &body["properties"];
    let issuer = props["issuer"].as_str().unwrap_or_default();
    if !issuer.starts_with("https://") {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Issuer '{issuer}' must be an https URL."),
        );
    }
    if props["subject"].as_str().is_none_or(str::is_empty) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Subject must not be empty.",
        );
    }
    if props["audiences"].as_array().is_none_or(|a| a.len() != 1) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Exactly one audience is supported.",
        );
    }
    let mut st = lock(&sim.state);
    if !st.identities.contains_key(&parent.to_ascii_lowercase()) {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ParentResourceNotFound",
            &format!(
                "Failed to perform 'write' on resource(s) of type 'userAssignedIdentities/federatedIdentityCredentials', because the parent resource '{parent}' could not be found."
            ),
        );
    }
    let key = id.to_ascii_lowercase();
    let prefix = format!("{}/", parent.to_ascii_lowercase());
    let siblings = st
        .fics
        .keys()
        .filter(|k| k.starts_with(&prefix) && **k != key)
        .count();
    if siblings >= 20 {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "An identity can have at most 20 federated identity credentials.",
        );
    }
    let status = if st.fics.contains_key(&key) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let resource = json!({
        "id": id,
        "name": name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        "properties": {
            "issuer": props["issuer"],
            "subject": props["subject"],
            "audiences": props["audiences"],
        }
    });
    if status == StatusCode::CREATED {
        st.count_created("federatedIdentityCredentials");
    }
    st.fics.insert(key, resource.clone());
    json_response(status, &resource)
}

// ---------------------------------------------------------------- containers

fn valid_container_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

fn put_container(sim: &ArmSim, id: &str, name: &str, body: Value) -> Response {
    if !valid_container_name(name) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "ContainerOperationFailure",
            &format!(
                "The specified resource name '{name}' contains invalid characters or has an invalid length."
            ),
        );
    }
    let key = id.to_ascii_lowercase();
    let mut st = lock(&sim.state);
    let status = if st.containers.contains_key(&key) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let props = &body["properties"];
    let resource = json!({
        "id": id,
        "name": name,
        "type": "Microsoft.Storage/storageAccounts/blobServices/containers",
        "etag": format!("\"0x{}\"", &Uuid::new_v4().simple().to_string()[..15].to_ascii_uppercase()),
        "properties": {
            "metadata": props.get("metadata").cloned().unwrap_or_else(|| json!({})),
            "publicAccess": props.get("publicAccess").cloned().unwrap_or_else(|| json!("None")),
            "defaultEncryptionScope": "$account-encryption-key",
            "denyEncryptionScopeOverride": false,
            "leaseStatus": "Unlocked",
            "leaseState": "Available",
            "lastModifiedTime": now_rfc3339(),
            "hasImmutabilityPolicy": false,
            "hasLegalHold": false,
            "deleted": false,
            "remainingRetentionDays": 0,
        }
    });
    if status == StatusCode::CREATED {
        st.count_created("blobContainers");
    }
    st.containers.insert(key, resource.clone());
    json_response(status, &resource)
}

// ---------------------------------------------------------------- role assignments

fn role_guid(role_definition_id: &str) -> Option<String> {
    let segs: Vec<&str> = role_definition_id.trim_matches('/').split('/').collect();
    let ok = matches!(segs.as_slice(),
        ["subscriptions", _, "providers", p, r, _] | ["providers", p, r, _]
        if is(p, "Microsoft.Authorization") && is(r, "roleDefinitions"));
    let guid = segs.last()?;
    (ok && Uuid::parse_str(guid).is_ok()).then(|| guid.to_ascii_lowercase())
}

fn put_role_assignment(sim: &ArmSim, scope: &str, id: &str, name: &str, body: Value) -> Response {
    if Uuid::parse_str(name).is_err() {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRoleAssignmentId",
            &format!(
                "The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."
            ),
        );
    }
    let props = &body["properties"];
    let role_id = props["roleDefinitionId"].as_str().unwrap_or_default();
    let Some(role_key) = role_guid(role_id) else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRoleDefinitionId",
            &format!("The role definition ID '{role_id}' is not valid."),
        );
    };
    let condition = props.get("condition").and_then(Value::as_str);
    let version = props.get("conditionVersion").and_then(Value::as_str);
    match (condition, version) {
        (Some(_), Some("2.0")) | (None, None) => {}
        (Some(_), _) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidConditionVersion",
                "The conditionVersion must be '2.0' when a condition is set.",
            );
        }
        (None, Some(_)) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidConditionVersion",
                "A conditionVersion was given without a condition.",
            );
        }
    }
    let principal = props["principalId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let principal_key = principal.to_ascii_lowercase();
    let scope_key = scope.trim_end_matches('/').to_ascii_lowercase();
    let key = id.to_ascii_lowercase();
    let propagation = *lock(&sim.principal_propagation);
    let mut st = lock(&sim.state);
    if let Some(Route::Container { .. }) = parse_route(scope)
        && !st.containers.contains_key(&scope_key)
    {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("The scope '{scope}' of the role assignment does not exist."),
        );
    }
    let known = st
        .identities
        .values()
        .find(|i| i.principal_id.eq_ignore_ascii_case(&principal))
        .map(|i| i.created.elapsed() >= propagation);
    if known != Some(true) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "PrincipalNotFound",
            &format!(
                "Principal {} does not exist in the directory {SIM_TENANT_ID}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group. See https://aka.ms/docs-principaltype",
                principal.replace('-', "")
            ),
        );
    }
    if let Some((other, _)) = st.role_assignments.iter().find(|(k, r)| {
        **k != key
            && r.scope_key == scope_key
            && r.principal_key == principal_key
            && r.role_key == role_key
    }) {
        let other_name = other
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .replace('-', "");
        return arm_error(
            StatusCode::CONFLICT,
            "RoleAssignmentExists",
            &format!(
                "The role assignment already exists. The ID of the existing role assignment is {other_name}."
            ),
        );
    }
    let (status, created_on) = match st.role_assignments.get(&key) {
        Some(r) if r.principal_key != principal_key || r.role_key != role_key => {
            return arm_error(
                StatusCode::CONFLICT,
                "RoleAssignmentUpdateNotPermitted",
                "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
            );
        }
        Some(r) => (StatusCode::OK, r.body["properties"]["createdOn"].clone()),
        None => (StatusCode::CREATED, json!(now_rfc3339())),
    };
    let mut properties = json!({
        "roleDefinitionId": role_id,
        "principalId": principal,
        "principalType": props.get("principalType").cloned().unwrap_or_else(|| json!("User")),
        "scope": scope,
        "createdOn": created_on,
        "updatedOn": now_rfc3339(),
        "createdBy": SIM_CALLER_ID,
        "updatedBy": SIM_CALLER_ID,
    });
    if let Some(c) = condition {
        properties["condition"] = json!(c);
        properties["conditionVersion"] = json!("2.0");
    }
    if let Some(d) = props.get("description") {
        properties["description"] = d.clone();
    }
    let resource = json!({
        "id": id,
        "name": name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": properties,
    });
    if status == StatusCode::CREATED {
        st.count_created("roleAssignments");
    }
    st.role_assignments.insert(
        key,
        RoleRec {
            body: resource.clone(),
            scope_key,
            principal_key,
            role_key,
        },
    );
    json_response(status, &resource)
}

/// `$filter=assignedTo('<id>')` or `principalId eq '<id>'`; assignments at, above or below the
/// scope, like ARM's ListForScope.
fn list_role_assignments(sim: &ArmSim, scope: &str, uri: &Uri) -> Response {
    let filter = query_param(uri, "$filter").unwrap_or_default();
    let principal = filter
        .split('\'')
        .nth(1)
        .filter(|_| filter.starts_with("assignedTo(") || filter.starts_with("principalId eq"))
        .map(str::to_ascii_lowercase);
    if !filter.is_empty() && principal.is_none() && filter != "atScope()" {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "UnsupportedQuery",
            &format!(
                "The filter '{filter}' is not supported; use assignedTo('<id>'), principalId eq '<id>' or atScope()."
            ),
        );
    }
    let scope_key = scope.trim_end_matches('/').to_ascii_lowercase();
    let st = lock(&sim.state);
    let value: Vec<Value> = st
        .role_assignments
        .values()
        .filter(|r| {
            let related = r.scope_key == scope_key
                || scope_key.starts_with(&format!("{}/", r.scope_key))
                || (filter != "atScope()" && r.scope_key.starts_with(&format!("{scope_key}/")));
            related && principal.as_ref().is_none_or(|p| *p == r.principal_key)
        })
        .map(|r| r.body.clone())
        .collect();
    json_response(StatusCode::OK, &json!({ "value": value }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_recognised_case_insensitively() {
        assert_eq!(
            parse_route(
                "/subscriptions/s/resourcegroups/rg/providers/microsoft.containerservice/managedClusters/c/agentPools/p"
            ),
            Some(Route::AgentPool {
                sub: "s".into(),
                rg: "rg".into(),
                cluster: "c".into(),
                pool: "p".into()
            })
        );
        let scope = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a/blobServices/default/containers/c";
        assert_eq!(
            parse_route(&format!(
                "{scope}/providers/Microsoft.Authorization/roleAssignments/n"
            )),
            Some(Route::RoleAssignment {
                scope: scope.into(),
                name: "n".into()
            })
        );
        assert_eq!(
            parse_route(&format!(
                "{scope}/providers/Microsoft.Authorization/roleAssignments"
            )),
            Some(Route::RoleAssignments {
                scope: scope.into()
            })
        );
        assert_eq!(parse_route("/subscriptions/s/resourceGroups/rg"), None);
        assert_eq!(parse_route("/subscriptions//x"), None);
    }

    #[test]
    fn query_parameters_are_decoded() {
        let uri: Uri = "/x?api-version=2022-04-01&%24filter=assignedTo(%27abc%27)"
            .parse()
            .unwrap();
        assert_eq!(
            query_param(&uri, "$filter").as_deref(),
            Some("assignedTo('abc')")
        );
        assert_eq!(
            query_param(&uri, "api-version").as_deref(),
            Some("2022-04-01")
        );
    }

    #[test]
    fn the_write_bucket_refuses_when_empty_and_names_the_wait() {
        let mut b = Bucket {
            size: 1.0,
            refill: 2.0,
            tokens: HashMap::new(),
        };
        let now = Instant::now();
        assert!(b.take("s", now).is_ok());
        let wait = b.take("s", now).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(b.take("other", now).is_ok());
    }
}
