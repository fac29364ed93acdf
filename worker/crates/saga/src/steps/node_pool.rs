//! Step `node_pool`: the tenant's own AKS user pool, tainted and labelled for the tenant.
//! The slowest operation of the saga (minutes): it is polled across continuations.
//!
//! AKS runs one agent-pool operation per cluster at a time, so every PUT and DELETE is made in
//! the cluster's turn ([`crate::cluster_turns`]), held until the operation ends. Waiting for
//! the turn, and AKS's "another operation is in progress" answers, are waits with a deadline
//! of their own (`saga.wait_limit_ms`), never failed attempts. An update that leaves
//! the pool as it is, and a compensation with no pool to delete, write nothing and need no turn.

use std::collections::BTreeMap;

use crate::cluster_turns::Turn;
use crate::record::StepName;
use crate::step::{Step, StepInput, StepOutcome, platform_wait, poll_first, to_json};
use onboarding_core::Classify;
use onboarding_providers::{
    NodePoolScale, NodePoolSpec, OperationKind, PendingOperation, ProviderError, QueuePlace,
};

use super::id_or_reason;

#[derive(Debug)]
pub struct NodePoolStep;

fn spec(input: &StepInput) -> Result<NodePoolSpec, ProviderError> {
    let req = &input.spec()?.node_pool;
    let tenant = &input.names.tenant_id;
    let scale = match (req.count, req.min_count, req.max_count) {
        (_, Some(min), Some(max)) => NodePoolScale::Autoscale { min, max },
        (count, _, _) => NodePoolScale::Fixed {
            count: count.unwrap_or(1),
        },
    };
    let tenant_map = BTreeMap::from([("tenant".to_string(), tenant.clone())]);
    Ok(NodePoolSpec {
        name: input.names.node_pool.clone(),
        tenant_id: tenant.clone(),
        vm_size: req.vm_size.clone(),
        scale,
        zones: req.zones.clone(),
        taints: vec![format!("tenant={tenant}:NoSchedule")],
        labels: tenant_map.clone(),
        tags: tenant_map,
    })
}

/// The cluster whose line of pool operations this step waits in: its ARM id.
fn cluster(input: &StepInput) -> String {
    let pool = onboarding_providers::arm_ids::node_pool_id(&input.target, &input.names.node_pool)
        .unwrap_or_default();
    pool.split("/agentPools/")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// This saga run, in the cluster's line.
fn ticket(input: &StepInput) -> String {
    format!("{}/{}", input.names.tenant_id, input.request_id)
}

/// Marks a running pool operation as the cluster's current turn: the engine then looks at it
/// as often as the line does.
fn holding_turn(outcome: StepOutcome) -> StepOutcome {
    match outcome {
        StepOutcome::Pending(mut op) => {
            op.place = Some(QueuePlace {
                ahead: 0,
                estimate_secs: None,
            });
            StepOutcome::Pending(op)
        }
        done => done,
    }
}

/// Where a call of this step starts from.
enum Resume<'a> {
    /// Nothing under way yet.
    Fresh,
    /// Waiting for the cluster since then.
    Waiting(Option<chrono::DateTime<chrono::Utc>>),
    /// Our pool operation is running.
    Running(&'a PendingOperation),
}

fn resume(op: Option<&PendingOperation>) -> Resume<'_> {
    match op {
        None => Resume::Fresh,
        Some(op) if op.kind == OperationKind::ClusterTurn => Resume::Waiting(op.since),
        Some(op) => Resume::Running(op),
    }
}

impl NodePoolStep {
    /// Carry out one pool write (`write`) in the cluster's turn: follow an operation already
    /// running, else take the turn (or wait for it), then write. The turn is given up when the
    /// operation ends, or fails for good; a transient failure keeps it (the lease lapses if the
    /// saga does not come back).
    async fn in_turn<F, Fut, T>(
        &self,
        input: &StepInput,
        op: Option<&PendingOperation>,
        write: F,
    ) -> Result<StepOutcome, ProviderError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<onboarding_providers::Progress<T>, ProviderError>>,
        T: serde::Serialize,
    {
        let (cluster, ticket) = (cluster(input), ticket(input));
        let since = match resume(op) {
            Resume::Running(running) => {
                match poll_first(input, Some(running)).await {
                    Ok(Some(pending)) => {
                        // Still running: keep the turn alive.
                        input.cluster_turns.take(&cluster, &ticket).await?;
                        return Ok(holding_turn(pending));
                    }
                    Ok(None) => None,
                    Err(e) => return Err(self.given_up(input, e).await),
                }
            }
            Resume::Waiting(since) => since,
            Resume::Fresh => None,
        };
        if let Turn::Wait(place) = input.cluster_turns.take(&cluster, &ticket).await? {
            return platform_wait(
                input,
                OperationKind::ClusterTurn,
                &cluster,
                since,
                Some(place),
                None,
            );
        }
        match write().await {
            Ok(onboarding_providers::Progress::Done(value)) => {
                input.cluster_turns.leave(&cluster, &ticket, true).await?;
                Ok(StepOutcome::Done(to_json(&value)))
            }
            Ok(onboarding_providers::Progress::Pending(op)) => {
                Ok(holding_turn(StepOutcome::Pending(op)))
            }
            Err(e) if e.is_busy_cluster() => {
                // Our turn, but AKS is still busy (an upgrade, a crashed holder's operation).
                let place = QueuePlace {
                    ahead: 0,
                    estimate_secs: None,
                };
                platform_wait(
                    input,
                    OperationKind::ClusterTurn,
                    &cluster,
                    since,
                    Some(place),
                    e.retry_after_secs,
                )
            }
            Err(e) => Err(self.given_up(input, e).await),
        }
    }

    /// A failure: a permanent one gives up the turn (a transient one keeps it for the retry).
    async fn given_up(&self, input: &StepInput, e: ProviderError) -> ProviderError {
        if !e.is_transient()
            && let Err(leave) = input
                .cluster_turns
                .leave(&cluster(input), &ticket(input), false)
                .await
        {
            tracing::warn!(error = %leave, "could not give up the cluster's turn; its lease will lapse");
        }
        e
    }
}

#[async_trait::async_trait]
impl Step for NodePoolStep {
    fn name(&self) -> StepName {
        StepName::NodePool
    }
    fn needs(&self) -> &'static [StepName] {
        &[]
    }
    fn resource(&self, input: &StepInput) -> String {
        id_or_reason(onboarding_providers::arm_ids::node_pool_id(
            &input.target,
            &input.names.node_pool,
        ))
    }
    async fn forward(
        &self,
        input: &StepInput,
        op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        let spec = spec(input)?;
        if op.is_none()
            && let Some(info) = input.azure.node_pool_in_sync(&input.target, &spec).await?
        {
            // An update that does not touch the pool: no write, no turn needed. Yet this run
            // may hold the turn: a worker that took it for this run and crashed before it
            // journaled the operation, which then finished. Give it back, or the cluster's
            // line would wait for the lease to lapse (10 minutes by default). Its duration,
            // crash included, is not one to estimate from.
            input
                .cluster_turns
                .leave(&cluster(input), &ticket(input), false)
                .await?;
            return Ok(StepOutcome::Done(to_json(&info)));
        }
        self.in_turn(input, op, || {
            input.azure.ensure_node_pool(&input.target, &spec)
        })
        .await
    }
    async fn compensate(
        &self,
        input: &StepInput,
        op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        let (name, tenant) = (&input.names.node_pool, &input.names.tenant_id);
        if !matches!(resume(op), Resume::Running(_))
            && !input
                .azure
                .has_node_pool(&input.target, name, tenant)
                .await?
        {
            // Nothing to delete (never created, or gone): leave the line if we were in it.
            input
                .cluster_turns
                .leave(&cluster(input), &ticket(input), false)
                .await?;
            return Ok(StepOutcome::Done(serde_json::Value::Null));
        }
        self.in_turn(input, op, || {
            input.azure.delete_node_pool(&input.target, name, tenant)
        })
        .await
    }
}
