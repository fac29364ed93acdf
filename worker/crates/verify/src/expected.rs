//! What the worker would have built for a tenant: its derived names, the ARM specs and the
//! Kubernetes manifests, from the tenant's last accepted request (when the journal holds its
//! body), the step outputs the journal recorded (identity ids, which guard rails exist) and the
//! configuration (target, guard-rail defaults, workload template).
//!
//! The manifests come from `onboarding_providers::manifests` and the role assignment from
//! `onboarding_providers::rbac`, exactly as the saga steps call them. The ARM specs
//! (`NodePoolSpec`, `FederatedCredentialSpec`, `RoleAssignmentSpec`) are assembled the way the
//! steps assemble them: the steps build them inline in `onboarding-saga`, which the producer
//! may not link; moving those few lines into `onboarding_providers` would let both share them.
//!
//! May touch: nothing; pure construction.

use std::collections::BTreeMap;

use onboarding_contract::OnboardTenant;
use onboarding_contract::names::{FEDERATION_AUDIENCE, TenantNames};
use onboarding_providers::manifests::{self, GuardrailSpec, TENANT_ADMIN_ROLE_NAME};
use onboarding_providers::rbac::{
    CONDITION_VERSION, STORAGE_BLOB_DATA_CONTRIBUTOR, blob_container_condition,
    role_assignment_name, role_definition_id,
};
use onboarding_providers::{
    FederatedCredentialSpec, KubeObject, NodePoolScale, NodePoolSpec, Provisioning,
    RoleAssignmentSpec, Target,
};
use serde_json::Value;

/// Another tenant the journal knows, for the isolation proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherTenant {
    pub tenant_id: String,
    /// Its identity's principal id, when the journal recorded it.
    pub principal_id: Option<String>,
}

/// What verify is given about one tenant.
#[derive(Debug, Clone)]
pub struct TenantInputs<'a> {
    pub names: TenantNames,
    pub target: &'a Target,
    pub provisioning: &'a Provisioning,
    /// The body of the tenant's last accepted onboarding, if the journal holds it.
    pub request: Option<&'a OnboardTenant>,
    /// The journal's step outputs (`TenantRecord::resources`), by step name.
    pub outputs: &'a BTreeMap<String, Value>,
    pub others: Vec<OtherTenant>,
}

/// The tenant's expected state.
#[derive(Debug, Clone)]
pub struct Expected {
    pub names: TenantNames,
    /// Whether the request body is known; without it, the request-specific values (VM size,
    /// scale, zones, quota, admin group id, replicas) are not compared.
    pub request_known: bool,
    pub node_pool: NodePoolSpec,
    /// From the journal's identity output.
    pub principal_id: Option<String>,
    pub client_id: Option<String>,
    pub federated_credential: FederatedCredentialSpec,
    /// The container's ARM id: the role assignment's scope.
    pub container_scope: Result<String, String>,
    pub role_assignment: Option<RoleAssignmentSpec>,
    pub namespace: KubeObject,
    pub service_account: Option<KubeObject>,
    pub guardrails: Vec<KubeObject>,
    /// The admin group id, when known; `Some("")` when a binding exists but the id is unknown.
    pub admin_group: Option<String>,
    pub workload: Option<KubeObject>,
}

fn output<'a>(outputs: &'a BTreeMap<String, Value>, step: &str, key: &str) -> Option<&'a str> {
    outputs
        .get(step)
        .and_then(|o| o.get(key))
        .and_then(Value::as_str)
}

/// The node pool spec exactly as the `node_pool` step builds it.
fn node_pool_spec(names: &TenantNames, request: Option<&OnboardTenant>) -> NodePoolSpec {
    let tenant = &names.tenant_id;
    let (vm_size, scale, zones) = match request {
        Some(r) => {
            let p = &r.node_pool;
            let scale = match (p.count, p.min_count, p.max_count) {
                (_, Some(min), Some(max)) => NodePoolScale::Autoscale { min, max },
                (count, _, _) => NodePoolScale::Fixed {
                    count: count.unwrap_or(1),
                },
            };
            (p.vm_size.clone(), scale, p.zones.clone())
        }
        None => (String::new(), NodePoolScale::Fixed { count: 0 }, Vec::new()),
    };
    let tenant_map = BTreeMap::from([("tenant".to_string(), tenant.clone())]);
    NodePoolSpec {
        name: names.node_pool.clone(),
        tenant_id: tenant.clone(),
        vm_size,
        scale,
        zones,
        taints: vec![format!("tenant={tenant}:NoSchedule")],
        labels: tenant_map.clone(),
        tags: tenant_map,
    }
}

impl Expected {
    pub fn build(inputs: &TenantInputs<'_>) -> Self {
        let names = inputs.names.clone();
        let target = inputs.target;
        let outputs = inputs.outputs;
        let request = inputs.request;
        let principal_id = output(outputs, "identity", "principal_id").map(str::to_string);
        let client_id = output(outputs, "identity", "client_id").map(str::to_string);
        let container_scope = output(outputs, "blob_container", "id")
            .map(str::to_string)
            .map_or_else(
                || {
                    onboarding_providers::arm_ids::blob_container_id(target, &names.blob_container)
                        .map_err(|e| e.to_string())
                },
                Ok,
            );
        let role_assignment = match (&principal_id, &container_scope) {
            (Some(principal), Ok(scope)) => {
                let role =
                    role_definition_id(&target.subscription_id, STORAGE_BLOB_DATA_CONTRIBUTOR);
                blob_container_condition(&names.blob_container)
                    .ok()
                    .map(|condition| RoleAssignmentSpec {
                        name: role_assignment_name(scope, principal, &role),
                        scope: scope.clone(),
                        role_definition_id: role,
                        principal_id: principal.clone(),
                        principal_type: "ServicePrincipal".into(),
                        condition,
                        condition_version: CONDITION_VERSION.into(),
                    })
            }
            _ => None,
        };
        let service_account = client_id.as_deref().map(|client| {
            let identity_tenant = output(outputs, "identity", "entra_tenant_id")
                .unwrap_or(&target.identity_entra_tenant_id);
            let cross =
                (identity_tenant != target.cluster_entra_tenant_id).then_some(identity_tenant);
            manifests::service_account(
                &names.namespace,
                &names.service_account,
                &names.tenant_id,
                client,
                cross,
            )
        });
        let admin_group = match request {
            Some(r) => r.admin_group_id.clone(),
            None => guardrail_recorded(outputs, TENANT_ADMIN_ROLE_NAME).then(String::new),
        };
        let guardrails = guardrail_objects(inputs, admin_group.clone());
        let workload_wanted = match request {
            Some(r) => r.workload.is_some() && inputs.provisioning.workload.is_some(),
            None => outputs.contains_key("workload"),
        };
        let workload = workload_wanted.then(|| {
            let template = inputs.provisioning.workload.clone().unwrap_or_default();
            let replicas = request
                .and_then(|r| r.workload.as_ref())
                .map_or(1, |w| w.replicas);
            manifests::workload(
                &names.namespace,
                &names.tenant_id,
                &names.service_account,
                &template,
                replicas,
            )
        });
        Self {
            request_known: request.is_some(),
            node_pool: node_pool_spec(&names, request),
            principal_id,
            client_id,
            federated_credential: FederatedCredentialSpec {
                identity_name: names.identity.clone(),
                name: names.federated_credential.clone(),
                issuer: target.oidc_issuer.clone(),
                subject: names.federated_subject(),
                audiences: vec![FEDERATION_AUDIENCE.to_string()],
            },
            container_scope,
            role_assignment,
            namespace: manifests::namespace(&names.namespace, &names.tenant_id),
            service_account,
            guardrails,
            admin_group,
            workload,
            names,
        }
    }
}

/// Whether the journal's guardrails output lists an object of this name.
fn guardrail_recorded(outputs: &BTreeMap<String, Value>, name: &str) -> bool {
    outputs
        .get("guardrails")
        .and_then(|g| g.get("objects"))
        .and_then(Value::as_array)
        .is_some_and(|objects| {
            objects
                .iter()
                .filter_map(Value::as_str)
                .any(|o| o.ends_with(&format!("/{name}")))
        })
}

/// The guard rails as the `guardrails` step builds them. Without the request body the quota is
/// the configured default (and not compared, see `kube_checks`), and an admin binding whose
/// group is unknown is built with an empty group name (not compared either).
fn guardrail_objects(inputs: &TenantInputs<'_>, admin_group: Option<String>) -> Vec<KubeObject> {
    let mut spec = GuardrailSpec::from_defaults(&inputs.provisioning.guardrails, admin_group)
        .on_account(&inputs.target.storage_account);
    if let Some(q) = inputs.request.and_then(|r| r.quota.as_ref()) {
        spec = spec.with_quota(&q.cpu, &q.memory, q.pods);
    }
    manifests::guardrails(&inputs.names.namespace, &inputs.names.tenant_id, &spec)
}
