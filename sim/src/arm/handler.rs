//! One ARM request from arrival to answer: check its bearer token (when tokens are required),
//! route it, record it, check its api-version, take a write token, inject faults, validate the body against the official schema, wait the scaled
//! latency, then hand it to the resource type's module.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;
use std::sync::Arc;
use uuid::Uuid;

use super::responses::{arm_error, with_retry_after};
use super::route::{Route, body_kind, parse_route, query_param};
use super::state::RecordedRequest;
use super::{
    Ctx, MAX_RECORDED, agent_pools, auth, blob_containers, federated_credentials, identities, lock,
    role_assignments,
};
use crate::faults::Fault;

pub(super) async fn handle(
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
    // ARM authenticates before it looks at anything else, so a bad token is a 401 on any path.
    let mut resp = match auth::check(sim, &headers) {
        None => respond(&ctx, &method, &uri, &body).await,
        Some(refused) => refused,
    };
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
        } => agent_pools::handle(ctx, method, sub, rg, cluster, pool, body),
        Route::Operation { id, result } => agent_pools::get_operation(ctx, id, *result),
        Route::Identity { sub, rg, name } => identities::handle(sim, method, sub, rg, name, body),
        Route::Fic {
            sub,
            rg,
            identity,
            name,
        } => federated_credentials::handle(sim, method, sub, rg, identity, name, body),
        Route::Container {
            sub,
            rg,
            account,
            name,
        } => blob_containers::handle(sim, method, sub, rg, account, name, body),
        Route::RoleAssignment { scope, name } => {
            role_assignments::handle(sim, method, scope, name, body)
        }
        Route::RoleAssignments { scope } => role_assignments::list(sim, scope, uri),
    }
}
