//! Shared set-up of the Azure integration tests: a simulator on loopback, a target pointing at
//! it, an `ArmProvisioner`, and a driver for long-running operations. The tenant's five resource
//! specs come from the test kit's [`TenantResources`] builder (re-exported here).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use onboarding_azure::{ArmClientOptions, ArmProvisioner};
use onboarding_providers::{AzureProvisioner, NodePoolInfo, NodePoolSpec, Progress, ProviderError};
pub use onboarding_testkit::fixtures::TenantResources;
use sim::SimOptions;
use worker::config::Target;

pub struct Env {
    pub running: sim::Running,
    pub target: Target,
    pub arm: ArmProvisioner,
}

pub async fn start(options: SimOptions) -> Env {
    start_with(options, ArmClientOptions::default()).await
}

pub async fn start_with(options: SimOptions, client: ArmClientOptions) -> Env {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let running = sim::start(any, any, options).await.unwrap();
    let mut target = Target::local("default");
    target.arm_endpoint = running.arm_url();
    let targets: BTreeMap<String, Target> = [("default".to_string(), target.clone())].into();
    let arm = ArmProvisioner::from_targets(&targets, client).unwrap();
    Env {
        running,
        target,
        arm,
    }
}

/// Calls `ensure_node_pool`, polls whatever it returns until done, and calls it again, as the
/// saga does. `wait` sleeps between polls (zero for the instant simulator).
pub async fn drive_pool(
    arm: &ArmProvisioner,
    target: &Target,
    spec: &NodePoolSpec,
    wait: bool,
) -> Result<NodePoolInfo, ProviderError> {
    for _ in 0..500 {
        match arm.ensure_node_pool(target, spec).await? {
            Progress::Done(info) => return Ok(info),
            Progress::Pending(mut op) => loop {
                if wait {
                    tokio::time::sleep(Duration::from_secs(op.retry_after_secs.clamp(1, 30))).await;
                }
                match arm.poll_operation(target, &op).await? {
                    Progress::Done(()) => break,
                    Progress::Pending(next) => op = next,
                }
            },
        }
    }
    panic!("the node pool never finished");
}

pub async fn drive_pool_delete(
    arm: &ArmProvisioner,
    target: &Target,
    name: &str,
    tenant_id: &str,
    wait: bool,
) -> Result<(), ProviderError> {
    for _ in 0..500 {
        match arm.delete_node_pool(target, name, tenant_id).await? {
            Progress::Done(()) => return Ok(()),
            Progress::Pending(mut op) => loop {
                if wait {
                    tokio::time::sleep(Duration::from_secs(op.retry_after_secs.clamp(1, 30))).await;
                }
                match arm.poll_operation(target, &op).await? {
                    Progress::Done(()) => break,
                    Progress::Pending(next) => op = next,
                }
            },
        }
    }
    panic!("the node pool delete never finished");
}

/// What the tests create for one tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub pool_id: String,
    pub identity_principal: String,
    pub identity_client: String,
    pub container_id: String,
    pub role_assignment_id: String,
    pub role_assignment_name: String,
}

/// Creates all five resources of a tenant, in the saga's dependency order.
pub async fn create_all(
    arm: &ArmProvisioner,
    target: &Target,
    tenant: &str,
) -> Result<Created, ProviderError> {
    let specs = TenantResources::tenant(tenant);
    let pool = drive_pool(arm, target, &specs.pool(), false).await?;
    let id = arm.ensure_identity(target, &specs.identity()).await?;
    arm.ensure_federated_credential(target, &specs.federated_credential(target))
        .await?;
    let c = arm
        .ensure_blob_container(target, &specs.container())
        .await?;
    let ra = arm
        .ensure_role_assignment(
            target,
            &TenantResources::role_assignment(target, &c.id, &id.principal_id, &c.name),
        )
        .await?;
    Ok(Created {
        pool_id: pool.id,
        identity_principal: id.principal_id,
        identity_client: id.client_id,
        container_id: c.id,
        role_assignment_id: ra.id,
        role_assignment_name: ra.name,
    })
}

/// Deletes all five, in reverse order.
pub async fn delete_all(
    arm: &ArmProvisioner,
    target: &Target,
    tenant: &str,
    created: &Created,
) -> Result<(), ProviderError> {
    let specs = TenantResources::tenant(tenant);
    let mut assignment = TenantResources::role_assignment(
        target,
        &created.container_id,
        &created.identity_principal,
        &specs.container().name,
    );
    assignment.name = created.role_assignment_name.clone();
    arm.delete_role_assignment(target, &assignment).await?;
    arm.delete_blob_container(target, &specs.container().name, tenant)
        .await?;
    arm.delete_federated_credential(
        target,
        &specs.identity().name,
        &specs.federated_credential(target).name,
        tenant,
    )
    .await?;
    arm.delete_identity(target, &specs.identity().name, tenant)
        .await?;
    drive_pool_delete(arm, target, &specs.pool().name, tenant, false).await
}
