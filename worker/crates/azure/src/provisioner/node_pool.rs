//! Node pools: create or update a tenant's AKS agent pool (an update only when the live pool
//! differs from the spec), report a busy pool as pending, and delete it. A pool without the
//! worker's marker for the tenant is neither adopted nor deleted.
//!
//! May touch: agent pools of the target's cluster, through the target's [`ArmClient`].

use std::collections::BTreeMap;

use super::bodies::{agent_pool_body, tagged};
use super::{MANAGED_BY_TAG, foreign_owner, parse, to_json};
use crate::api;
use crate::client::{ArmClient, Op};
use crate::models::{AgentPool, AgentPoolProperties};
use onboarding_providers::arm_ids::node_pool_id;
use onboarding_providers::{
    NodePoolInfo, NodePoolScale, NodePoolSpec, Progress, ProviderError, Target,
};

pub(super) fn is_terminal(state: &str) -> bool {
    ["succeeded", "failed", "canceled", "cancelled"].contains(&state.to_ascii_lowercase().as_str())
}

pub(super) fn sorted(v: &Option<Vec<String>>) -> Vec<String> {
    let mut v = v.clone().unwrap_or_default();
    v.sort();
    v
}

pub(super) fn contains_all(
    have: &Option<BTreeMap<String, String>>,
    want: &BTreeMap<String, String>,
) -> bool {
    let have = have.clone().unwrap_or_default();
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// Whether a live pool already has everything the spec asks for.
pub(super) fn pool_matches(spec: &NodePoolSpec, p: &AgentPoolProperties) -> bool {
    let mut zones = spec.zones.clone();
    zones.sort();
    let mut taints = spec.taints.clone();
    taints.sort();
    let scale = match spec.scale {
        NodePoolScale::Fixed { count } => {
            p.enable_auto_scaling != Some(true) && p.count == Some(count as i32)
        }
        NodePoolScale::Autoscale { min, max } => {
            p.enable_auto_scaling == Some(true)
                && p.min_count == Some(min as i32)
                && p.max_count == Some(max as i32)
        }
    };
    scale
        && p.vm_size
            .as_deref()
            .map(|s| s.eq_ignore_ascii_case(&spec.vm_size))
            == Some(true)
        && p.mode.as_deref().unwrap_or("User") == "User"
        && p.os_type.as_deref().unwrap_or("Linux") == "Linux"
        && sorted(&p.node_taints) == taints
        && sorted(&p.availability_zones) == zones
        && contains_all(&p.node_labels, &spec.labels)
        && contains_all(&p.tags, &tagged(&spec.tags, &spec.tenant_id))
}

/// The live pool, if any.
async fn read(client: &ArmClient, path: &str) -> Result<Option<AgentPool>, ProviderError> {
    super::read_existing(client, path, api::AGENT_POOLS, "read node pool").await
}

pub(super) async fn in_sync(
    client: &ArmClient,
    target: &Target,
    spec: &NodePoolSpec,
) -> Result<Option<NodePoolInfo>, ProviderError> {
    let path = node_pool_id(target, &spec.name)?;
    let Some(pool) = read(client, &path).await? else {
        return Ok(None);
    };
    let props = pool.properties.unwrap_or_default();
    let settled = props
        .provisioning_state
        .as_deref()
        .is_none_or(|s| s.eq_ignore_ascii_case("Succeeded"));
    let ours = foreign_owner(props.tags.as_ref(), MANAGED_BY_TAG, &spec.tenant_id).is_none();
    Ok(
        (ours && settled && pool_matches(spec, &props)).then(|| NodePoolInfo {
            id: pool.id.unwrap_or(path),
            name: spec.name.clone(),
        }),
    )
}

pub(super) async fn has(
    client: &ArmClient,
    target: &Target,
    name: &str,
    tenant_id: &str,
) -> Result<bool, ProviderError> {
    let path = node_pool_id(target, name)?;
    Ok(read(client, &path).await?.is_some_and(|pool| {
        let props = pool.properties.unwrap_or_default();
        foreign_owner(props.tags.as_ref(), MANAGED_BY_TAG, tenant_id).is_none()
            && props.mode.as_deref() != Some("System")
    }))
}

pub(super) async fn ensure(
    client: &ArmClient,
    target: &Target,
    spec: &NodePoolSpec,
) -> Result<Progress<NodePoolInfo>, ProviderError> {
    let path = node_pool_id(target, &spec.name)?;
    let resource_url = client.url(&path, api::AGENT_POOLS)?;
    let read = Op {
        operation: "read node pool",
        resource: &path,
    };
    let info = || NodePoolInfo {
        id: path.clone(),
        name: spec.name.clone(),
    };
    let existing = match client.get(&path, api::AGENT_POOLS, read).await? {
        Some(resp) => Some(parse::<AgentPool>(&resp, read)?),
        None => None,
    };
    if let Some(pool) = &existing {
        let props = pool.properties.clone().unwrap_or_default();
        if let Some(who) = foreign_owner(props.tags.as_ref(), MANAGED_BY_TAG, &spec.tenant_id) {
            return Err(super::not_owned(
                "create node pool",
                &path,
                "node pool",
                &who,
            ));
        }
        let state = props
            .provisioning_state
            .clone()
            .unwrap_or_else(|| "Succeeded".into());
        if !is_terminal(&state) {
            tracing::debug!(node_pool = %spec.name, state = %state, "node pool busy, polling its state");
            return Ok(Progress::Pending(
                client.resource_pending(&resource_url, None),
            ));
        }
        if state.eq_ignore_ascii_case("Succeeded") && pool_matches(spec, &props) {
            return Ok(Progress::Done(NodePoolInfo {
                id: pool.id.clone().unwrap_or_else(|| path.clone()),
                name: spec.name.clone(),
            }));
        }
    }
    let op = Op {
        operation: "create node pool",
        resource: &path,
    };
    let body = to_json(&agent_pool_body(spec, existing.is_some()), op)?;
    let resp = client.put(&path, api::AGENT_POOLS, &body, op).await?;
    if let Some(pending) = client.pending_from(&resp) {
        return Ok(Progress::Pending(pending));
    }
    let pool: AgentPool = parse(&resp, op)?;
    let state = pool
        .properties
        .and_then(|p| p.provisioning_state)
        .unwrap_or_else(|| "Succeeded".into());
    if state.eq_ignore_ascii_case("Succeeded") {
        Ok(Progress::Done(info()))
    } else if !is_terminal(&state) {
        Ok(Progress::Pending(
            client.resource_pending(&resource_url, resp.retry_after()),
        ))
    } else {
        Err(ProviderError::permanent(
            op.operation,
            op.resource,
            format!("the node pool is in state {state}"),
        )
        .with_code("ProvisioningStateFailed"))
    }
}

pub(super) async fn delete(
    client: &ArmClient,
    target: &Target,
    name: &str,
    tenant_id: &str,
) -> Result<Progress<()>, ProviderError> {
    let path = node_pool_id(target, name)?;
    let resource_url = client.url(&path, api::AGENT_POOLS)?;
    let read = Op {
        operation: "read node pool",
        resource: &path,
    };
    let Some(resp) = client.get(&path, api::AGENT_POOLS, read).await? else {
        return Ok(Progress::Done(()));
    };
    let pool: AgentPool = parse(&resp, read)?;
    let props = pool.properties.unwrap_or_default();
    // Checked right before the delete: a pool without the worker's marker for this tenant (a
    // system pool, a hand-made one, another tenant's) is not ours, and there is nothing of ours
    // to delete.
    if let Some(who) = foreign_owner(props.tags.as_ref(), MANAGED_BY_TAG, tenant_id).or_else(|| {
        (props.mode.as_deref() == Some("System")).then(|| "the cluster (a system pool)".into())
    }) {
        tracing::warn!(node_pool = %path, owner = %who, "node pool not ours: left in place");
        return Ok(Progress::Done(()));
    }
    if props
        .provisioning_state
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("Deleting"))
    {
        return Ok(Progress::Pending(
            client.resource_pending(&resource_url, None),
        ));
    }
    client
        .delete(
            &path,
            api::AGENT_POOLS,
            Op {
                operation: "delete node pool",
                resource: &path,
            },
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodePoolSpec {
        NodePoolSpec {
            name: "tacme".into(),
            tenant_id: "acme".into(),
            vm_size: "Standard_D4s_v5".into(),
            scale: NodePoolScale::Autoscale { min: 1, max: 3 },
            zones: vec!["2".into(), "1".into()],
            taints: vec!["tenant=acme:NoSchedule".into()],
            labels: [("tenant".to_string(), "acme".to_string())].into(),
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn a_pool_built_from_the_spec_matches_the_spec_and_carries_the_workers_marker() {
        let body = agent_pool_body(&spec(), false);
        let props = body.properties.unwrap();
        assert_eq!(
            foreign_owner(props.tags.as_ref(), MANAGED_BY_TAG, "acme"),
            None
        );
        assert_eq!(props.count, Some(1));
        assert!(pool_matches(&spec(), &props));
        let mut other = spec();
        other.vm_size = "Standard_D8s_v5".into();
        assert!(!pool_matches(&other, &props));
        // An update leaves an autoscaled pool's count alone.
        assert_eq!(
            agent_pool_body(&spec(), true).properties.unwrap().count,
            None
        );
    }
}
