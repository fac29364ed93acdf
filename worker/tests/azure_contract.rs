//! Contract with the official Azure REST specs (`shared/azure-rest-specs`): every request body the
//! provisioner sends validates against the OpenAPI schema of its operation, and every official
//! example response parses into our models and round-trips unchanged.
#![allow(clippy::unwrap_used)] // tests may unwrap (developers' guide)

mod azure_support;

use std::path::PathBuf;

use onboarding_azure::models::{
    AgentPool, BlobContainer, FederatedIdentityCredential, Identity, RoleAssignment,
};
use onboarding_providers::NodePoolScale;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sim::SimOptions;
use sim::arm::schema::{BodyKind, SpecSchemas};

use azure_support::*;

fn specs_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/azure-rest-specs");
    if dir.join("specification").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: the official Azure REST specs are not at {} (expected shared/azure-rest-specs beside the workspace)",
            dir.display()
        );
        None
    }
}

fn example(dir: &std::path::Path, rel: &str) -> Value {
    let path = dir.join("specification").join(rel);
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// Parses a response body into `T`, checks a field, and checks that writing it back gives the
/// same JSON.
fn round_trip<T: DeserializeOwned + Serialize>(body: &Value, what: &str) -> T {
    let parsed: T = serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        &serde_json::to_value(&parsed).unwrap(),
        body,
        "{what} did not round-trip"
    );
    parsed
}

const AKS: &str =
    "containerservice/resource-manager/Microsoft.ContainerService/aks/stable/2026-08-01/examples";
const MSI: &str = "msi/resource-manager/Microsoft.ManagedIdentity/stable/2024-11-30/examples";
const STORAGE: &str = "storage/resource-manager/Microsoft.Storage/stable/2025-08-01/examples";
const AUTHZ: &str =
    "authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01/examples";

#[test]
fn every_official_example_response_parses_into_the_models_and_round_trips() {
    let Some(dir) = specs_dir() else { return };
    let responses = |rel: &str| -> Vec<(String, Value)> {
        let ex = example(&dir, rel);
        ex["responses"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(status, r)| {
                r.get("body")
                    .map(|b| (format!("{rel} {status}"), b.clone()))
            })
            .collect()
    };
    let mut checked = 0;
    for f in ["AgentPoolsCreate_Update.json", "AgentPoolsGet.json"] {
        for (what, body) in responses(&format!("{AKS}/{f}")) {
            let pool: AgentPool = round_trip(&body, &what);
            let p = pool.properties.unwrap();
            assert_eq!(p.vm_size.as_deref(), Some("Standard_DS1_v2"), "{what}");
            assert!(p.provisioning_state.is_some(), "{what}");
            checked += 1;
        }
    }
    for f in ["IdentityCreate.json", "IdentityGet.json"] {
        for (what, body) in responses(&format!("{MSI}/{f}")) {
            let id: Identity = round_trip(&body, &what);
            let p = id.properties.unwrap();
            assert_eq!(
                p.principal_id.as_deref(),
                Some("25cc773c-7f05-40fc-a104-32d2300754ad"),
                "{what}"
            );
            assert!(p.client_id.is_some() && p.tenant_id.is_some(), "{what}");
            checked += 1;
        }
    }
    for f in [
        "FederatedIdentityCredentialCreate.json",
        "FederatedIdentityCredentialGet.json",
    ] {
        for (what, body) in responses(&format!("{MSI}/{f}")) {
            let fic: FederatedIdentityCredential = round_trip(&body, &what);
            assert_eq!(
                fic.properties.subject, "system:serviceaccount:ns:svcaccount",
                "{what}"
            );
            checked += 1;
        }
    }
    for f in ["BlobContainersPut.json", "BlobContainersGet.json"] {
        for (what, body) in responses(&format!("{STORAGE}/{f}")) {
            let c: BlobContainer = round_trip(&body, &what);
            assert!(
                c.id.unwrap().contains("/blobServices/default/containers/"),
                "{what}"
            );
            checked += 1;
        }
    }
    for f in [
        "RoleAssignments_CreateForResourceGroup.json",
        "RoleAssignments_CreateForSubscription.json",
        "RoleAssignments_Get.json",
        "RoleAssignments_Delete.json",
    ] {
        for (what, body) in responses(&format!("{AUTHZ}/{f}")) {
            let ra: RoleAssignment = round_trip(&body, &what);
            assert_eq!(
                ra.properties.principal_id, "ce2ce14e-85d7-4629-bdbc-454d0519d987",
                "{what}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 18);
}

#[test]
fn the_body_builders_produce_bodies_the_official_schemas_accept() {
    let Some(dir) = specs_dir() else { return };
    let schemas = SpecSchemas::load(&dir).unwrap();
    let target = worker::config::Target::local("default");
    let mut fixed = TenantResources::tenant("acme").pool();
    fixed.scale = NodePoolScale::Fixed { count: 2 };
    fixed.zones.clear();
    let scope = onboarding_providers::arm_ids::blob_container_id(&target, "tenant-acme").unwrap();
    let bodies = [
        (
            BodyKind::AgentPool,
            serde_json::to_value(onboarding_azure::agent_pool_body(
                &TenantResources::tenant("acme").pool(),
                false,
            ))
            .unwrap(),
        ),
        (
            BodyKind::AgentPool,
            serde_json::to_value(onboarding_azure::agent_pool_body(
                &TenantResources::tenant("acme").pool(),
                true,
            ))
            .unwrap(),
        ),
        (
            BodyKind::AgentPool,
            serde_json::to_value(onboarding_azure::agent_pool_body(&fixed, false)).unwrap(),
        ),
        (
            BodyKind::Identity,
            serde_json::to_value(onboarding_azure::identity_body(
                &target,
                &TenantResources::tenant("acme").identity(),
            ))
            .unwrap(),
        ),
        (
            BodyKind::FederatedIdentityCredential,
            serde_json::to_value(onboarding_azure::federated_credential_body(
                &TenantResources::tenant("acme").federated_credential(&target),
            ))
            .unwrap(),
        ),
        (
            BodyKind::BlobContainer,
            serde_json::to_value(onboarding_azure::blob_container_body(
                &TenantResources::tenant("acme").container(),
            ))
            .unwrap(),
        ),
        (
            BodyKind::RoleAssignmentCreate,
            serde_json::to_value(onboarding_azure::role_assignment_body(
                &TenantResources::role_assignment(
                    &target,
                    &scope,
                    "8e0c8a3c-5c49-4a37-9b7e-1d0b3c1f2a11",
                    "tenant-acme",
                ),
            ))
            .unwrap(),
        ),
    ];
    for (kind, body) in bodies {
        assert_eq!(schemas.validate(kind, &body), Ok(()), "{kind:?}: {body}");
    }
}

#[tokio::test]
async fn every_body_the_provisioner_sends_validates_against_the_official_schema() {
    let Some(dir) = specs_dir() else { return };
    let schemas = SpecSchemas::load(&dir).unwrap();
    let env = start(SimOptions::default()).await;
    let created = create_all(&env.arm, &env.target, "acme").await.unwrap();
    // An update of the pool too (a new spec), so both PUT shapes are captured.
    let mut bigger = TenantResources::tenant("acme").pool();
    bigger.scale = NodePoolScale::Autoscale { min: 2, max: 5 };
    drive_pool(&env.arm, &env.target, &bigger, false)
        .await
        .unwrap();
    delete_all(&env.arm, &env.target, "acme", &created)
        .await
        .unwrap();
    let puts: Vec<_> = env
        .running
        .arm
        .recorded_requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    let kinds: std::collections::BTreeSet<&str> =
        puts.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    assert_eq!(puts.len(), 6, "{puts:?}");
    for r in puts {
        let kind = match r.operation.as_str() {
            "arm.agent_pools.put" => BodyKind::AgentPool,
            "arm.identities.put" => BodyKind::Identity,
            "arm.federated_credentials.put" => BodyKind::FederatedIdentityCredential,
            "arm.blob_containers.put" => BodyKind::BlobContainer,
            "arm.role_assignments.put" => BodyKind::RoleAssignmentCreate,
            other => panic!("unexpected PUT {other}"),
        };
        let body = r.body.unwrap();
        assert_eq!(schemas.validate(kind, &body), Ok(()), "{} {body}", r.path);
    }
}

#[tokio::test]
async fn the_simulators_answers_have_the_shape_of_the_official_schemas_and_parse_into_the_models() {
    let Some(dir) = specs_dir() else { return };
    let schemas = SpecSchemas::load(&dir).unwrap();
    let env = start(SimOptions::default()).await;
    let created = create_all(&env.arm, &env.target, "acme").await.unwrap();
    let ids = [
        (BodyKind::AgentPool, created.pool_id.clone(), "2026-08-01"),
        (
            BodyKind::Identity,
            onboarding_providers::arm_ids::identity_id(&env.target, "id-acme").unwrap(),
            "2024-11-30",
        ),
        (
            BodyKind::FederatedIdentityCredential,
            onboarding_providers::arm_ids::federated_credential_id(
                &env.target,
                "id-acme",
                "fic-acme",
            )
            .unwrap(),
            "2024-11-30",
        ),
        (
            BodyKind::BlobContainer,
            created.container_id.clone(),
            "2025-08-01",
        ),
        (
            BodyKind::RoleAssignmentCreate,
            created.role_assignment_id.clone(),
            "2022-04-01",
        ),
    ];
    for (kind, id, api) in ids {
        let url = format!("{}{id}?api-version={api}", env.running.arm_url());
        let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        assert_eq!(schemas.validate(kind, &body), Ok(()), "{kind:?}: {body}");
        assert_eq!(body["id"], id.as_str());
        match kind {
            BodyKind::AgentPool => drop(round_trip::<AgentPool>(&body, "pool")),
            BodyKind::Identity => drop(round_trip::<Identity>(&body, "identity")),
            BodyKind::FederatedIdentityCredential => {
                drop(round_trip::<FederatedIdentityCredential>(&body, "fic"))
            }
            BodyKind::BlobContainer => drop(round_trip::<BlobContainer>(&body, "container")),
            BodyKind::RoleAssignmentCreate => {
                drop(round_trip::<RoleAssignment>(&body, "role assignment"))
            }
        }
    }
}
