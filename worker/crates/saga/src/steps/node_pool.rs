//! Step `node_pool`: the tenant's own AKS user pool, tainted and labelled for the tenant.
//! The slowest operation of the saga (minutes): it is polled across continuations.

use std::collections::BTreeMap;

use crate::record::StepName;
use crate::step::{Step, StepInput, StepOutcome, from_progress, poll_first};
use onboarding_providers::{NodePoolScale, NodePoolSpec, PendingOperation, ProviderError};

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
        if let Some(waiting) = poll_first(input, op).await? {
            return Ok(waiting);
        }
        let progress = input
            .azure
            .ensure_node_pool(&input.target, &spec(input)?)
            .await?;
        Ok(from_progress(progress))
    }
    async fn compensate(
        &self,
        input: &StepInput,
        op: Option<&PendingOperation>,
    ) -> Result<StepOutcome, ProviderError> {
        if let Some(waiting) = poll_first(input, op).await? {
            return Ok(waiting);
        }
        let progress = input
            .azure
            .delete_node_pool(
                &input.target,
                &input.names.node_pool,
                &input.names.tenant_id,
            )
            .await?;
        Ok(from_progress(progress))
    }
}
