//! `ArmProvisioner` against a real Azure subscription, with the developer's Azure CLI login.
//! Skipped (with the list of what it needs) unless the `ONBOARD_LIVE_*` variables are set.
//! It creates and then deletes one throw-away tenant's identity, federated credential, blob
//! container and role assignment; with `ONBOARD_LIVE_NODE_POOL=1` also a node pool (minutes, and
//! VMs that cost money).
#![allow(clippy::unwrap_used)] // tests may unwrap (developers' guide)

mod azure_support;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use azure_support::*;
use onboarding_azure::{ArmClientOptions, ArmProvisioner};
use onboarding_core::ErrorClass;
use onboarding_providers::{AzureProvisioner, NodePoolScale, ProviderError};
use worker::config::{CredentialConfig, KubernetesConfig, Target};

const REQUIRED: [(&str, &str); 9] = [
    (
        "ONBOARD_LIVE_SUBSCRIPTION_ID",
        "subscription to provision in",
    ),
    (
        "ONBOARD_LIVE_RESOURCE_GROUP",
        "resource group for the tenant identity",
    ),
    (
        "ONBOARD_LIVE_LOCATION",
        "region of that resource group, e.g. westeurope",
    ),
    (
        "ONBOARD_LIVE_CLUSTER_RESOURCE_GROUP",
        "resource group of the AKS cluster",
    ),
    ("ONBOARD_LIVE_CLUSTER", "AKS cluster name"),
    ("ONBOARD_LIVE_OIDC_ISSUER", "the cluster's OIDC issuer URL"),
    (
        "ONBOARD_LIVE_STORAGE_RESOURCE_GROUP",
        "resource group of the storage account",
    ),
    (
        "ONBOARD_LIVE_STORAGE_ACCOUNT",
        "storage account for the tenant container",
    ),
    (
        "ONBOARD_LIVE_ENTRA_TENANT_ID",
        "Entra tenant of the subscription (az login --tenant ...)",
    ),
];

fn live_target() -> Option<Target> {
    let names: Vec<&str> = REQUIRED.iter().map(|(k, _)| *k).collect();
    let Some(values) = onboarding_testkit::env::require(
        &names,
        "the live Azure test (a real subscription, signed in with `az login`)",
    ) else {
        for (k, what) in REQUIRED {
            eprintln!("  {k}  - {what}");
        }
        eprintln!(
            "  optional: ONBOARD_LIVE_NODE_POOL=1 to also create/delete a node pool, ONBOARD_LIVE_VM_SIZE (default Standard_D2s_v5)"
        );
        return None;
    };
    let v = |k: &str| values[k].clone();
    let tenant = v("ONBOARD_LIVE_ENTRA_TENANT_ID");
    Some(Target {
        name: "live".into(),
        subscription_id: v("ONBOARD_LIVE_SUBSCRIPTION_ID"),
        resource_group: v("ONBOARD_LIVE_RESOURCE_GROUP"),
        location: v("ONBOARD_LIVE_LOCATION"),
        cluster_resource_group: v("ONBOARD_LIVE_CLUSTER_RESOURCE_GROUP"),
        cluster_name: v("ONBOARD_LIVE_CLUSTER"),
        oidc_issuer: v("ONBOARD_LIVE_OIDC_ISSUER"),
        storage_resource_group: v("ONBOARD_LIVE_STORAGE_RESOURCE_GROUP"),
        storage_account: v("ONBOARD_LIVE_STORAGE_ACCOUNT"),
        identity_entra_tenant_id: tenant.clone(),
        cluster_entra_tenant_id: tenant.clone(),
        arm_endpoint: "https://management.azure.com".into(),
        credential: CredentialConfig::AzureCli(onboarding_core::AzureCliSettings {
            tenant_id: Some(tenant),
            ..Default::default()
        }),
        kubernetes: KubernetesConfig::default(),
    })
}

/// Whether `ONBOARD_LIVE_NODE_POOL=1` asks for a node pool too.
fn live_node_pool() -> bool {
    onboarding_testkit::env::optional("ONBOARD_LIVE_NODE_POOL").as_deref() == Some("1")
}

/// Retries transient errors (role assignment propagation, throttling) for a few minutes.
async fn retrying<T, F, Fut>(what: &str, mut f: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if e.class == ErrorClass::Transient && attempt < 30 => {
                attempt += 1;
                let wait = e.retry_after_secs.unwrap_or(5).clamp(1, 30);
                eprintln!("{what}: transient ({e}); again in {wait}s");
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn a_throwaway_tenant_is_provisioned_and_removed_in_a_real_subscription() {
    let Some(target) = live_target() else { return };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let targets: BTreeMap<String, Target> = [("live".to_string(), target.clone())].into();
    let arm = ArmProvisioner::from_targets(&targets, ArmClientOptions::default()).unwrap();
    let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
    let tenant = format!("live{suffix}");

    let specs = TenantResources::tenant(&tenant);
    let (id_spec, fic_spec, c_spec) = (
        specs.identity(),
        specs.federated_credential(&target),
        specs.container(),
    );
    let outcome: Result<(), ProviderError> = async {
        let id = retrying("identity", || arm.ensure_identity(&target, &id_spec)).await?;
        assert_eq!(
            id.entra_tenant_id.to_lowercase(),
            target.identity_entra_tenant_id.to_lowercase()
        );
        let again = arm.ensure_identity(&target, &id_spec).await?;
        assert_eq!(
            again.principal_id, id.principal_id,
            "identity PUT is idempotent"
        );
        retrying("federated credential", || {
            arm.ensure_federated_credential(&target, &fic_spec)
        })
        .await?;
        let c = retrying("container", || arm.ensure_blob_container(&target, &c_spec)).await?;
        let spec = TenantResources::role_assignment(&target, &c.id, &id.principal_id, &c.name);
        let ra = retrying("role assignment", || {
            arm.ensure_role_assignment(&target, &spec)
        })
        .await?;
        let ra2 = retrying("role assignment again", || {
            arm.ensure_role_assignment(&target, &spec)
        })
        .await?;
        assert_eq!(ra.name, ra2.name);
        if live_node_pool() {
            let mut p = TenantResources::tenant(&suffix).pool();
            p.scale = NodePoolScale::Fixed { count: 1 };
            p.zones.clear();
            p.vm_size = onboarding_testkit::env::optional("ONBOARD_LIVE_VM_SIZE")
                .unwrap_or_else(|| "Standard_D2s_v5".into());
            drive_pool(&arm, &target, &p, true).await?;
        }
        Ok(())
    }
    .await;

    // Clean up whatever exists, whatever happened above.
    let c = c_spec;
    let scope = onboarding_providers::arm_ids::blob_container_id(&target, &c.name).unwrap();
    let mut cleanup = Vec::new();
    if let Ok(Some(id)) = arm.get_identity(&target, &id_spec.name).await {
        let spec = TenantResources::role_assignment(&target, &scope, &id.principal_id, &c.name);
        cleanup.push(
            retrying("delete role assignment", || {
                arm.delete_role_assignment(&target, &spec)
            })
            .await,
        );
    }
    cleanup.push(
        retrying("delete container", || {
            arm.delete_blob_container(&target, &c.name, &c.tenant_id)
        })
        .await,
    );
    cleanup.push(
        retrying("delete federated credential", || {
            arm.delete_federated_credential(
                &target,
                &id_spec.name,
                &fic_spec.name,
                &id_spec.tenant_id,
            )
        })
        .await,
    );
    cleanup.push(
        retrying("delete identity", || {
            arm.delete_identity(&target, &id_spec.name, &id_spec.tenant_id)
        })
        .await,
    );
    if live_node_pool() {
        cleanup.push(
            drive_pool_delete(
                &arm,
                &target,
                &TenantResources::tenant(&suffix).pool().name,
                &suffix,
                true,
            )
            .await,
        );
    }
    outcome.unwrap();
    for r in cleanup {
        r.unwrap();
    }
    assert!(
        arm.get_identity(&target, &id_spec.name)
            .await
            .unwrap()
            .is_none()
    );
}
