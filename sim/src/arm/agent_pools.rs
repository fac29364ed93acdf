//! AKS agent pools (`Microsoft.ContainerService/managedClusters/agentPools`) and the operation
//! status URLs their long-running PUTs and DELETEs hand out.
//!
//! A PUT or DELETE starts an operation that takes the (scaled) latency of
//! `arm.agent_pools.create`/`.delete`; while it runs, every other pool operation on the same
//! cluster is refused with 409 `OperationNotAllowed`, like AKS does, and so is every pool
//! operation while a cluster-level operation (`POST /_sim/cluster-operation`) runs.
//! `Azure-AsyncOperation` answers the operation's status document, `Location` 202 until done,
//! then the result. A PUT is also checked against the VM size list and the subscription's
//! regional vCPU quota ([`super::platform`]).

use std::time::{Duration, Instant};

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::platform;
use super::responses::{arm_error, json_response, not_found, now_rfc3339};
use super::state::{ArmState, OpKind, OpRec, PoolRec};
use super::{AKS_API_VERSION, ArmSim, Ctx, SIM_LOCATION, lock};

/// PUT, GET or DELETE of one agent pool.
pub(super) fn handle(
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    rg: &str,
    cluster: &str,
    pool: &str,
    body: Value,
) -> Response {
    let id = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{cluster}/agentPools/{pool}"
    );
    match method.as_str() {
        "PUT" => put_pool(ctx, sub, &id, pool, body),
        "DELETE" => delete_pool(ctx, sub, &id, pool),
        _ => get_pool(&ctx.sim, &id, cluster, pool, rg),
    }
}

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

/// AKS's 409 while another operation runs on the cluster: the wording of
/// cilium/cilium#25944 ("Another agentpool operation (nodepool1 - Creating) is in progress"),
/// Azure/azure-workload-identity#417 ("Another operation (nodepool1 - Updating)") and
/// Azure/terraform-azurerm-avm-ptn-aks-production#25 ("Another operation (Updating)", a
/// cluster-level one).
fn busy(what: &str) -> Response {
    arm_error(
        StatusCode::CONFLICT,
        "OperationNotAllowed",
        &format!(
            "Operation is not allowed: {what} is in progress, please wait for it to finish before starting a new operation. See https://aka.ms/aks-pending-operation for more details"
        ),
    )
}

fn state_word(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Create => "Creating",
        OpKind::Update => "Updating",
        OpKind::Delete => "Deleting",
    }
}

/// The 409 for a pool operation on a cluster that is busy: with a cluster-level operation, or
/// (if the behaviour is on) with another pool operation.
fn refuse_if_busy(sim: &ArmSim, st: &ArmState, cluster_key: &str, key: &str) -> Option<Response> {
    if let Some(op) = st.cluster_op(cluster_key) {
        return Some(busy(&format!("Another operation ({})", op.operation)));
    }
    if !sim.behaviour.one_pool_operation_per_cluster {
        return None;
    }
    let (busy_key, kind) = st.busy_op_in_cluster(cluster_key)?;
    let pool = busy_key.rsplit('/').next().unwrap_or_default();
    let what = if busy_key == key {
        format!("Another operation ({pool} - {})", state_word(kind))
    } else {
        format!(
            "Another agentpool operation ({pool} - {})",
            state_word(kind)
        )
    };
    Some(busy(&what))
}

/// The 400 when the pool would take its subscription over the regional vCPU quota.
fn refuse_over_quota(
    sim: &ArmSim,
    st: &ArmState,
    sub: &str,
    key: &str,
    properties: &Value,
) -> Option<Response> {
    let limit = u64::from(sim.behaviour.vcpu_quota?);
    let prefix = format!("/subscriptions/{}/", sub.to_ascii_lowercase());
    let usage: u64 = st
        .pools
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix) && k.as_str() != key)
        .map(|(_, p)| sim.behaviour.pool_vcpus(&p.body["properties"]))
        .sum();
    let required = sim.behaviour.pool_vcpus(properties);
    (usage + required > limit).then(|| platform::quota_exceeded(limit, usage, required))
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
    let size = props["vmSize"].as_str().unwrap_or_default();
    if let Some(refused) = platform::check_vm_size(&sim.behaviour, name, size) {
        return refused;
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
    if let Some(refused) = refuse_if_busy(sim, &st, &cluster_key, &key) {
        return refused;
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
    if let Some(refused) = refuse_over_quota(sim, &st, sub, &key, &properties) {
        return refused;
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
            begun: now,
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
    if let Some(refused) = refuse_if_busy(sim, &st, &pool.cluster_key, &key) {
        return refused;
    }
    let duration = sim.latency.latency("arm.agent_pools.delete");
    let op_id = Uuid::new_v4().to_string();
    st.operations.insert(
        op_id.clone(),
        OpRec {
            pool_key: key.clone(),
            kind: OpKind::Delete,
            started: chrono::Utc::now(),
            begun: now,
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

pub(super) fn get_operation(ctx: &Ctx, op_id: &str, result: bool) -> Response {
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
