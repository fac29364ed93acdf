//! The Kubernetes API simulator: enough of the API server over HTTP for `kube::Client`.
//!
//! Serves the kinds the worker applies ([`resources::RESOURCES`]) at their real paths:
//! server-side apply (`PATCH`, `application/apply-patch+yaml`, `fieldManager` required, `force`,
//! `dryRun`), `GET` of one object or a list (`labelSelector`, equality-based), `DELETE` (a
//! namespace takes everything inside with it, at once), discovery (`/api`, `/apis`, `/api/v1`,
//! `/apis/<group>/<version>`) and `/version`. Errors are `Status` bodies as the real server
//! sends them. It keeps everything in memory and answers only on the address it is bound to.
//!
//! Every API call is an operation named `kube.<plural>.<verb>` (verb: apply, get, list, delete)
//! and goes through latency and [`Faults`]: 429 (with `Retry-After` and
//! `details.retryAfterSeconds`), 500, 503, a stall (the call takes effect, then after `stall_ms`
//! the server answers 504 `Timeout`, as the API server does when a request outlives its
//! deadline) or a permanent 400. Tests can also script exact answers (`POST /_sim/script`).
//!
//! Test endpoints: `GET /_sim/inventory` (objects, call counters, injected faults and creations
//! per kind), `GET /_sim/requests` (every API request received, in
//! order, at most [`REQUEST_LOG_LIMIT`]), `POST /_sim/faults` (a `FaultPlan`), `POST /_sim/script`
//! (a list of [`ScriptedFault`]), `POST /_sim/reset`.

pub mod resources;
pub mod status;
pub mod store;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::SimOptions;
use crate::faults::{Fault, FaultPlan, Faults, LatencyProfile};
use resources::Resource;
use status::ApiError;
use store::{Key, Store};

/// The request log keeps at most this many entries, dropping the oldest: long throughput runs
/// must not grow without bound.
pub const REQUEST_LOG_LIMIT: usize = 10_000;

/// One API request as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    pub content_type: Option<String>,
    /// The body as JSON when it parses as JSON (or YAML), else as a string; null when empty.
    pub body: Value,
}

/// An exact answer for the next calls whose operation name contains `op`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedFault {
    /// Operation-name fragment, e.g. `serviceaccounts.apply` or `kube.` (every call).
    pub op: String,
    /// HTTP status to answer with; nothing is performed.
    pub code: u16,
    /// `Status.reason`; defaults to the API server's reason for `code`.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// Sent as `Retry-After` and `details.retryAfterSeconds`.
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    /// How many matching calls get this answer.
    #[serde(default = "one")]
    pub times: u32,
    /// Hold the answer back this long (to make a client time out).
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Default)]
struct State_ {
    store: Store,
    requests: VecDeque<RecordedRequest>,
    /// Calls per operation name, faulted ones included.
    counters: BTreeMap<String, u64>,
    /// Injected faults per operation name.
    faulted: BTreeMap<String, u64>,
    /// Objects created (not updated) per kind: a retried creation that converges counts once.
    created: BTreeMap<String, u64>,
    script: Vec<ScriptedFault>,
}

/// The simulated API server's state. Cheap to share: everything sits behind one lock.
#[derive(Debug)]
pub struct KubeSim {
    state: Mutex<State_>,
    faults: Faults,
    initial_plan: FaultPlan,
    latency: LatencyProfile,
}

impl KubeSim {
    pub fn new(options: &SimOptions) -> Self {
        Self {
            state: Mutex::new(State_::default()),
            faults: Faults::new(options.faults.clone()),
            initial_plan: options.faults.clone(),
            latency: options.latency.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State_> {
        // Every critical section leaves the state consistent before anything can panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Objects by kind, namespace ("" for cluster-scoped) and name; request counters by
    /// operation; injected faults by operation; the store's current resourceVersion.
    pub fn inventory(&self) -> Value {
        let state = self.lock();
        let mut objects = serde_json::Map::new();
        for (kind, namespace, name, live) in state.store.all() {
            let by_ns = objects.entry(kind.to_string()).or_insert_with(|| json!({}));
            by_ns[namespace][name] = live.clone();
        }
        json!({
            "resourceVersion": state.store.revision().to_string(),
            "objects": objects,
            "counters": state.counters,
            "faults": state.faulted,
            "created": state.created,
        })
    }

    /// Every live object, cluster-scoped and namespaced.
    pub fn objects(&self) -> Vec<Value> {
        self.lock()
            .store
            .all()
            .map(|(_, _, _, live)| live.clone())
            .collect()
    }

    /// One live object by apiVersion, kind, namespace and name.
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let resource = resources::by_kind(api_version, kind)?;
        self.lock()
            .store
            .get(&Key::new(resource, namespace, name))
            .cloned()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.iter().cloned().collect()
    }

    pub fn set_faults(&self, plan: FaultPlan) {
        self.faults.set_plan(plan);
    }

    pub fn script(&self, faults: Vec<ScriptedFault>) {
        self.lock().script.extend(faults);
    }

    /// Forgets every object, request, counter and scripted fault, and restores the fault plan
    /// the simulator started with.
    pub fn reset(&self) {
        let mut state = self.lock();
        *state = State_::default();
        self.faults.set_plan(self.initial_plan.clone());
    }

    fn record(&self, request: RecordedRequest) {
        let mut state = self.lock();
        if state.requests.len() >= REQUEST_LOG_LIMIT {
            state.requests.pop_front();
        }
        state.requests.push_back(request);
    }

    /// Counts the call and decides whether it is faulted, scripted answers first.
    fn decide(&self, operation: &str) -> Option<Injected> {
        let mut state = self.lock();
        *state.counters.entry(operation.to_string()).or_default() += 1;
        let scripted = state
            .script
            .iter_mut()
            .find(|s| s.times > 0 && operation.contains(s.op.as_str()))
            .map(|s| {
                s.times -= 1;
                s.clone()
            });
        state.script.retain(|s| s.times > 0);
        let injected = match scripted {
            Some(s) => Some(match s.delay_ms {
                Some(ms) => Injected::Late(
                    scripted_error(&s, operation),
                    std::time::Duration::from_millis(ms),
                ),
                None => Injected::Error(scripted_error(&s, operation)),
            }),
            None => match self.faults.decide(operation) {
                Fault::None => None,
                Fault::Throttle { retry_after_secs } => Some(Injected::Error(
                    ApiError::too_many_requests(retry_after_secs),
                )),
                Fault::ServerError(503) => Some(Injected::Error(ApiError::new(
                    503,
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request",
                ))),
                Fault::ServerError(code) => Some(Injected::Error(ApiError::new(
                    code,
                    ApiError::reason_for(code),
                    format!("Internal error occurred: simulated failure of {operation}"),
                ))),
                Fault::Stall(d) => Some(Injected::Stall(d)),
                Fault::Permanent => Some(Injected::Error(ApiError::bad_request(format!(
                    "simulated permanent failure of {operation}"
                )))),
            },
        };
        if injected.is_some() {
            *state.faulted.entry(operation.to_string()).or_default() += 1;
        }
        injected
    }
}

enum Injected {
    Error(ApiError),
    /// An error answered only after a delay.
    Late(ApiError, std::time::Duration),
    Stall(std::time::Duration),
}

fn scripted_error(s: &ScriptedFault, operation: &str) -> ApiError {
    // Reasons are 'static: a known one is used as given, anything else becomes the code's.
    let reason: &'static str = match s.reason.as_deref() {
        Some(r) => known_reason(r).unwrap_or_else(|| ApiError::reason_for(s.code)),
        None => ApiError::reason_for(s.code),
    };
    let message = s
        .message
        .clone()
        .unwrap_or_else(|| format!("scripted {} answer to {operation}", s.code));
    let mut e = ApiError::new(s.code, reason, message);
    if let Some(after) = s.retry_after_secs {
        e = e.with_details(json!({"retryAfterSeconds": after}));
        e.retry_after_secs = Some(after);
    }
    e
}

fn known_reason(reason: &str) -> Option<&'static str> {
    [
        "BadRequest",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "Timeout",
        "TooManyRequests",
        "MethodNotAllowed",
        "UnsupportedMediaType",
        "InternalError",
        "ServiceUnavailable",
        "Expired",
    ]
    .into_iter()
    .find(|r| *r == reason)
}

/// The simulator's HTTP interface.
pub fn router(sim: Arc<KubeSim>) -> Router {
    Router::new()
        .route("/_sim/inventory", get(inventory))
        .route("/_sim/requests", get(requests))
        .route("/_sim/faults", post(set_faults).get(get_faults))
        .route("/_sim/script", post(set_script))
        .route("/_sim/reset", post(reset))
        .fallback(api)
        .with_state(sim)
}

async fn inventory(State(sim): State<Arc<KubeSim>>) -> Json<Value> {
    Json(sim.inventory())
}

async fn requests(State(sim): State<Arc<KubeSim>>) -> Json<Vec<RecordedRequest>> {
    Json(sim.requests())
}

async fn set_faults(State(sim): State<Arc<KubeSim>>, Json(plan): Json<FaultPlan>) -> StatusCode {
    sim.set_faults(plan);
    StatusCode::NO_CONTENT
}

async fn get_faults(State(sim): State<Arc<KubeSim>>) -> Json<FaultPlan> {
    Json(sim.faults.plan())
}

async fn set_script(
    State(sim): State<Arc<KubeSim>>,
    Json(script): Json<Vec<ScriptedFault>>,
) -> StatusCode {
    sim.script(script);
    StatusCode::NO_CONTENT
}

async fn reset(State(sim): State<Arc<KubeSim>>) -> StatusCode {
    sim.reset();
    StatusCode::NO_CONTENT
}

// ---------------------------------------------------------------- the API

/// What a path addresses.
enum Target {
    Version,
    CoreVersions,
    Groups,
    ResourceList {
        group: String,
        version: String,
    },
    Collection {
        resource: &'static Resource,
        namespace: Option<String>,
    },
    Object {
        resource: &'static Resource,
        namespace: Option<String>,
        name: String,
    },
}

fn route(path: &str) -> Result<Target, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Ok(Target::Version),
        ["api"] => return Ok(Target::CoreVersions),
        ["apis"] => return Ok(Target::Groups),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_such_resource()),
    };
    let resource = |plural: &str| {
        resources::lookup(group, version, plural).ok_or_else(ApiError::no_such_resource)
    };
    match rest {
        [] => Ok(Target::ResourceList {
            group: group.into(),
            version: version.into(),
        }),
        [plural] => Ok(Target::Collection {
            resource: resource(plural)?,
            namespace: None,
        }),
        [plural, name] => {
            let resource = resource(plural)?;
            if resource.namespaced {
                return Err(ApiError::no_such_resource());
            }
            Ok(Target::Object {
                resource,
                namespace: None,
                name: (*name).into(),
            })
        }
        ["namespaces", namespace, plural] => {
            let resource = resource(plural)?;
            if !resource.namespaced {
                return Err(ApiError::no_such_resource());
            }
            Ok(Target::Collection {
                resource,
                namespace: Some((*namespace).into()),
            })
        }
        ["namespaces", namespace, plural, name] => {
            let resource = resource(plural)?;
            if !resource.namespaced {
                return Err(ApiError::no_such_resource());
            }
            Ok(Target::Object {
                resource,
                namespace: Some((*namespace).into()),
                name: (*name).into(),
            })
        }
        _ => Err(ApiError::no_such_resource()),
    }
}

async fn api(
    State(sim): State<Arc<KubeSim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    sim.record(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        content_type: content_type.clone(),
        body: body_value(&body),
    });
    let params: BTreeMap<String, String> = match Query::try_from_uri(&uri) {
        Ok(Query(p)) => p,
        Err(e) => return error(ApiError::bad_request(format!("invalid query: {e}"))),
    };
    let target = match route(uri.path()) {
        Ok(t) => t,
        Err(e) => return error(e),
    };
    let (resource, verb) = match (&target, &method) {
        (Target::Version, &Method::GET) => return ok(resources::version()),
        (Target::CoreVersions, &Method::GET) => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            return ok(resources::core_versions(host));
        }
        (Target::Groups, &Method::GET) => return ok(resources::groups()),
        (Target::ResourceList { group, version }, &Method::GET) => {
            return match resources::resource_list(group, version) {
                Some(list) => ok(list),
                None => error(ApiError::no_such_resource()),
            };
        }
        (Target::Collection { resource, .. }, &Method::GET) => (*resource, "list"),
        (Target::Object { resource, .. }, &Method::GET) => (*resource, "get"),
        (Target::Object { resource, .. }, &Method::PATCH) => (*resource, "apply"),
        (Target::Object { resource, .. }, &Method::DELETE) => (*resource, "delete"),
        _ => {
            return error(ApiError::method_not_allowed(format!(
                "the simulator does not support {method} on {}; it serves GET, server-side apply (PATCH) and DELETE of objects, and GET of lists",
                uri.path()
            )));
        }
    };
    let operation = format!("kube.{}.{verb}", resource.plural);

    let delay = sim.latency.latency(&operation);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let stall = match sim.decide(&operation) {
        Some(Injected::Error(e)) => return error(e),
        Some(Injected::Late(e, delay)) => {
            tokio::time::sleep(delay).await;
            return error(e);
        }
        Some(Injected::Stall(d)) => Some(d),
        None => None,
    };
    let answer = match target {
        Target::Collection {
            resource,
            namespace,
        } => list(&sim, resource, namespace.as_deref(), &params),
        Target::Object {
            resource,
            namespace,
            name,
        } => {
            let key = Key::new(resource, namespace.as_deref(), &name);
            match verb {
                "get" => sim
                    .lock()
                    .store
                    .get(&key)
                    .cloned()
                    .map(ok)
                    .unwrap_or_else(|| error(ApiError::not_found(resource, &name))),
                "apply" => apply(
                    &sim,
                    resource,
                    &key,
                    content_type.as_deref(),
                    &params,
                    &body,
                ),
                _ => delete(&sim, resource, &key, &body),
            }
        }
        _ => error(ApiError::no_such_resource()),
    };
    if let Some(stall) = stall {
        // The call took effect; the answer never makes it back in time.
        tokio::time::sleep(stall).await;
        return error(ApiError::new(
            504,
            "Timeout",
            "Timeout: request did not complete within the allotted timeout",
        ));
    }
    answer
}

fn list(
    sim: &KubeSim,
    resource: &'static Resource,
    namespace: Option<&str>,
    params: &BTreeMap<String, String>,
) -> Response {
    if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return error(ApiError::method_not_allowed(
            "the simulator does not support watches",
        ));
    }
    let selector =
        match store::parse_selector(params.get("labelSelector").map_or("", String::as_str)) {
            Ok(s) => s,
            Err(e) => return error(e),
        };
    let state = sim.lock();
    let items: Vec<Value> = state
        .store
        .list(resource, namespace, &selector)
        .into_iter()
        .map(|live| {
            // The API server leaves apiVersion and kind off list items.
            let mut item = live.clone();
            if let Value::Object(map) = &mut item {
                map.remove("apiVersion");
                map.remove("kind");
            }
            item
        })
        .collect();
    ok(json!({
        "kind": format!("{}List", resource.kind),
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": state.store.revision().to_string()},
        "items": items,
    }))
}

fn apply(
    sim: &KubeSim,
    resource: &'static Resource,
    key: &Key,
    content_type: Option<&str>,
    params: &BTreeMap<String, String>,
    body: &Bytes,
) -> Response {
    let media_type = content_type
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    if media_type != "application/apply-patch+yaml" {
        return error(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/apply-patch+yaml (the simulator supports server-side apply only; got {media_type:?})"
            ),
        ));
    }
    let Some(manager) = params.get("fieldManager").filter(|m| !m.is_empty()) else {
        return error(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    };
    let force = match params.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return error(ApiError::bad_request(format!(
                "force must be true or false, got {other:?}"
            )));
        }
    };
    let dry_run = params.get("dryRun").is_some_and(|d| d == "All");
    let parsed = match parse_body(body) {
        Some(v) => v,
        None => {
            return error(ApiError::bad_request(
                "error decoding YAML: the apply body is neither JSON nor YAML",
            ));
        }
    };
    let mut state = sim.lock();
    let result = state
        .store
        .apply(resource, key, parsed, manager, force, dry_run);
    if let Ok(applied) = &result
        && applied.created
        && !dry_run
    {
        *state.created.entry(resource.kind.to_string()).or_default() += 1;
    }
    drop(state);
    match result {
        Ok(applied) => {
            let code = if applied.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (code, Json(applied.object)).into_response()
        }
        Err(e) => error(e),
    }
}

fn delete(sim: &KubeSim, resource: &'static Resource, key: &Key, body: &Bytes) -> Response {
    let options = body_value(body);
    let preconditions = options.get("preconditions").cloned().unwrap_or(Value::Null);
    match sim.lock().store.delete(resource, key, &preconditions) {
        Ok((mut live, uid)) => {
            if resource.kind == "Namespace" {
                // The real server answers with the namespace, now terminating; the simulator
                // has already removed it and everything inside.
                live["metadata"]["deletionTimestamp"] =
                    json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string());
                live["status"] = json!({"phase": "Terminating"});
                ok(live)
            } else {
                ok(status::deleted(resource, &key.name, &uid))
            }
        }
        Err(e) => error(e),
    }
}

fn parse_body(body: &Bytes) -> Option<Value> {
    serde_json::from_slice(body)
        .ok()
        .or_else(|| serde_yaml::from_slice(body).ok())
}

fn body_value(body: &Bytes) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    parse_body(body).unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, Json(body)).into_response()
}

fn error(e: ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (code, Json(e.body())).into_response();
    if let Some(after) = e.retry_after_secs
        && let Ok(value) = HeaderValue::from_str(&after.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}
