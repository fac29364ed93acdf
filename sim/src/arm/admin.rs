//! The simulator's own endpoints under `/_sim/`, for tests and the local run: the inventory, the
//! fault plan, a reset, and cluster-level operations that keep agent-pool operations out.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::Ctx;
use super::responses::{arm_error, json_response};
use crate::faults::FaultPlan;

pub(super) async fn inventory(State(ctx): State<Arc<Ctx>>) -> Response {
    axum::Json(ctx.sim.inventory()).into_response()
}

pub(super) async fn set_faults(State(ctx): State<Arc<Ctx>>, body: Bytes) -> Response {
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

pub(super) async fn reset(State(ctx): State<Arc<Ctx>>) -> Response {
    ctx.sim.reset();
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_sim/cluster-operation`: the cluster by id or by its parts, how long (wall-clock
/// seconds, not scaled) and which operation (default `Upgrading`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClusterOperationRequest {
    cluster_id: Option<String>,
    #[serde(alias = "subscriptionId")]
    subscription: Option<String>,
    #[serde(alias = "resourceGroupName")]
    resource_group: Option<String>,
    #[serde(alias = "name", alias = "clusterName")]
    cluster: Option<String>,
    seconds: f64,
    operation: Option<String>,
}

pub(super) async fn cluster_operation(State(ctx): State<Arc<Ctx>>, body: Bytes) -> Response {
    let req = match serde_json::from_slice::<ClusterOperationRequest>(&body) {
        Ok(r) => r,
        Err(e) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidClusterOperation",
                &format!(
                    "the body must be {{\"clusterId\" | \"subscription\", \"resourceGroup\", \"cluster\"; \"seconds\"; \"operation\"?}}: {e}"
                ),
            );
        }
    };
    let id = match (
        &req.cluster_id,
        &req.subscription,
        &req.resource_group,
        &req.cluster,
    ) {
        (Some(id), None, None, None) => id.clone(),
        (None, Some(sub), Some(rg), Some(name)) => format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{name}"
        ),
        _ => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidClusterOperation",
                "name the cluster either by clusterId or by subscription, resourceGroup and cluster",
            );
        }
    };
    if !req.seconds.is_finite() || req.seconds < 0.0 || req.seconds > 86_400.0 {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidClusterOperation",
            "seconds must be between 0 and 86400",
        );
    }
    let operation = req.operation.unwrap_or_else(|| "Upgrading".to_string());
    match ctx
        .sim
        .start_cluster_operation(&id, &operation, Duration::from_secs_f64(req.seconds))
    {
        Ok(id) => json_response(
            StatusCode::OK,
            &json!({"clusterId": id, "operation": operation, "seconds": req.seconds}),
        ),
        Err(e) => arm_error(StatusCode::BAD_REQUEST, "InvalidClusterOperation", &e),
    }
}
