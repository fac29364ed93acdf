//! Reading the live state of one target and running every check on it: [`Live`] holds the
//! target's GET-only ARM reader and a Kubernetes client built from the target's `kubernetes`
//! settings (as the worker builds its own), and [`verify_tenant`] reads and judges one tenant.
//!
//! May touch: GETs on the target's ARM endpoint; GET/LIST and SubjectAccessReview creation on
//! the target's API server; the kubeconfig file the target names. Nothing is written.

use std::collections::BTreeMap;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use onboarding_providers::arm_ids::{federated_credential_id, identity_id, node_pool_id};
use onboarding_providers::{KubeObject, Target};
use serde_json::Value;

use crate::arm::{ArmReader, api};
use crate::expected::{Expected, TenantInputs};
use crate::{Check, Group, Status, TenantReport, VerifyError, arm_checks, isolation, kube_checks};

/// The read-only clients of one target.
#[derive(Clone)]
pub struct Live {
    pub arm: ArmReader,
    pub kube: kube::Client,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("arm", &self.arm)
            .finish_non_exhaustive()
    }
}

impl Live {
    /// Clients for `target`, from the same settings the worker's clients are built from.
    pub async fn connect(target: &Target) -> Result<Self, VerifyError> {
        let setup = |message: String| VerifyError::Setup {
            target: target.name.clone(),
            message,
        };
        let arm = ArmReader::for_target(target).map_err(setup)?;
        // More than one rustls provider is linked (as in the worker): one must be chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let k = &target.kubernetes;
        let config = if let Some(server) = &k.server {
            let url = server
                .parse()
                .map_err(|e| setup(format!("kubernetes.server {server:?}: {e}")))?;
            kube::Config::new(url)
        } else if k.in_cluster {
            kube::Config::incluster().map_err(|e| setup(format!("kubernetes.in_cluster: {e}")))?
        } else if let Some(path) = &k.kubeconfig {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| setup(format!("kubeconfig {}: {e}", path.display())))?;
            let options = KubeConfigOptions {
                context: k.context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| setup(format!("kubeconfig {}: {e}", path.display())))?
        } else {
            return Err(setup("kubernetes names no API server".into()));
        };
        let kube = kube::Client::try_from(config).map_err(|e| setup(e.to_string()))?;
        Ok(Self { arm, kube })
    }

    pub(crate) async fn arm_get(
        &self,
        path: &Result<String, String>,
        version: &str,
    ) -> Result<Option<Value>, String> {
        match path {
            Ok(p) => self.arm.get(p, version).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        }
    }

    /// The object `object` names, as the API server has it.
    pub async fn kube_get(&self, object: &KubeObject) -> Result<Option<Value>, String> {
        let (group, version) = match object.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", object.api_version.as_str()),
        };
        let lower = object.kind.to_ascii_lowercase();
        let plural = match lower.strip_suffix('y') {
            Some(stem) => format!("{stem}ies"),
            None => format!("{lower}s"),
        };
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, &object.kind),
            &plural,
        );
        let api: Api<DynamicObject> = match &object.namespace {
            Some(ns) => Api::namespaced_with(self.kube.clone(), ns, &resource),
            None => Api::all_with(self.kube.clone(), &resource),
        };
        let found = api.get_opt(&object.name).await.map_err(|e| e.to_string())?;
        found
            .map(|o| serde_json::to_value(o).map_err(|e| e.to_string()))
            .transpose()
    }

    async fn allowed(&self, probe: &isolation::Probe) -> Result<bool, String> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(probe.user.clone()),
                groups: Some(probe.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(probe.resource.0.into()),
                    resource: Some(probe.resource.1.into()),
                    verb: Some(probe.verb.into()),
                    namespace: probe.namespace.clone(),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.kube.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| e.to_string())?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

fn errored(name: &str, group: Group, resource: &str, e: String) -> Check {
    Check::new(name, group, Status::Error, resource, e)
}

fn to_values<T: serde::Serialize>(items: Vec<T>) -> Vec<Value> {
    items
        .into_iter()
        .filter_map(|i| serde_json::to_value(i).ok())
        .collect()
}

/// What reading a tenant's resources found: one check per resource (plus the isolation checks
/// those same reads decide: the federated subject and the container's data roles), the
/// Kubernetes objects found by kind, and the node pool as ARM answered.
#[derive(Debug, Clone)]
pub struct Resources {
    pub checks: Vec<Check>,
    pub found: BTreeMap<String, Value>,
    pub pool: Result<Option<Value>, String>,
}

/// Reads and judges each of the tenant's resources against `exp` (no isolation probes): what
/// both `verify` and `plan` need.
pub async fn read_resources(exp: &Expected, inputs: &TenantInputs<'_>, live: &Live) -> Resources {
    let target = inputs.target;
    let mut checks = Vec::new();

    // Azure.
    let pool_id = node_pool_id(target, &exp.names.node_pool).map_err(|e| e.to_string());
    let pool = live.arm_get(&pool_id, api::AGENT_POOLS).await;
    let pool_res = pool_id.clone().unwrap_or_default();
    checks.push(match &pool {
        Ok(p) => arm_checks::node_pool(exp, &pool_res, p.as_ref()),
        Err(e) => errored("node_pool", Group::Resource, &pool_res, e.clone()),
    });
    let ident_id = identity_id(target, &exp.names.identity).map_err(|e| e.to_string());
    let ident_res = ident_id.clone().unwrap_or_default();
    checks.push(match live.arm_get(&ident_id, api::MANAGED_IDENTITY).await {
        Ok(i) => arm_checks::identity(exp, &ident_res, i.as_ref()),
        Err(e) => errored("identity", Group::Resource, &ident_res, e),
    });
    let fic_id =
        federated_credential_id(target, &exp.names.identity, &exp.names.federated_credential)
            .map_err(|e| e.to_string());
    let fic_res = fic_id.clone().unwrap_or_default();
    match live.arm_get(&fic_id, api::MANAGED_IDENTITY).await {
        Ok(f) => {
            checks.push(arm_checks::federated_credential(exp, &fic_res, f.as_ref()));
            checks.push(arm_checks::federated_subject(exp, &fic_res, f.as_ref()));
        }
        Err(e) => checks.push(errored(
            "federated_credential",
            Group::Resource,
            &fic_res,
            e,
        )),
    }
    let scope = exp.container_scope.clone();
    let scope_res = scope.clone().unwrap_or_default();
    checks.push(match live.arm_get(&scope, api::BLOB_CONTAINERS).await {
        Ok(c) => arm_checks::blob_container(exp, &scope_res, c.as_ref()),
        Err(e) => errored("blob_container", Group::Resource, &scope_res, e),
    });
    let list = scope
        .as_ref()
        .map(|s| format!("{s}/providers/Microsoft.Authorization/roleAssignments"))
        .map_err(Clone::clone);
    match live.arm_get(&list, api::ROLE_ASSIGNMENTS).await {
        Ok(l) => {
            let all = l
                .and_then(|v| v["value"].as_array().cloned())
                .unwrap_or_default();
            checks.push(arm_checks::role_assignment(exp, &scope_res, &all));
            checks.push(arm_checks::container_data_roles(
                exp,
                &scope_res,
                &all,
                &inputs.others,
            ));
        }
        Err(e) => checks.push(errored("role_assignment", Group::Resource, &scope_res, e)),
    }

    // Kubernetes objects.
    let mut objects = vec![exp.namespace.clone()];
    objects.extend(exp.service_account.clone());
    objects.extend(exp.guardrails.clone());
    objects.extend(exp.workload.clone());
    let mut found: BTreeMap<String, Value> = BTreeMap::new();
    for object in &objects {
        match live.kube_get(object).await {
            Ok(l) => {
                checks.push(kube_checks::object(object, exp.request_known, l.as_ref()));
                if let Some(l) = l {
                    found.insert(object.kind.clone(), l);
                }
            }
            Err(e) => checks.push(errored(
                &kube_checks::check_name(object),
                Group::Resource,
                &object.reference().to_string(),
                e,
            )),
        }
    }

    Resources {
        checks,
        found,
        pool,
    }
}

/// Reads and judges one tenant.
pub async fn verify_tenant(inputs: &TenantInputs<'_>, live: &Live) -> TenantReport {
    let exp = Expected::build(inputs);
    let target = inputs.target;
    let Resources {
        mut checks,
        found,
        pool,
    } = read_resources(&exp, inputs, live).await;

    // Isolation in the cluster. The admin group: from the request, else as the binding says.
    let observed = kube_checks::observed(
        found.get("ResourceQuota"),
        found.get("RoleBinding"),
        found.get("Deployment"),
    );
    let admin_group = match exp.admin_group.as_deref() {
        Some("") => observed["adminGroupId"].as_str().map(str::to_string),
        other => other.map(str::to_string),
    };
    let ns = exp.names.namespace.clone();
    match Api::<RoleBinding>::namespaced(live.kube.clone(), &ns)
        .list(&ListParams::default())
        .await
    {
        Ok(l) => checks.push(isolation::role_bindings(
            &exp,
            admin_group.as_deref(),
            &to_values(l.items),
        )),
        Err(e) => checks.push(errored(
            "isolation:rolebindings",
            Group::Isolation,
            &ns,
            e.to_string(),
        )),
    }
    match Api::<Pod>::namespaced(live.kube.clone(), &ns)
        .list(&ListParams::default())
        .await
    {
        Ok(l) => {
            let pods = to_values(l.items);
            let mut nodes = BTreeMap::new();
            for name in pods.iter().filter_map(|p| p["spec"]["nodeName"].as_str()) {
                if nodes.contains_key(name) {
                    continue;
                }
                if let Ok(Some(n)) = Api::<Node>::all(live.kube.clone()).get_opt(name).await
                    && let Ok(v) = serde_json::to_value(n)
                {
                    nodes.insert(name.to_string(), v);
                }
            }
            checks.push(isolation::pod_placement(&exp, &pods, &nodes));
        }
        Err(e) => checks.push(errored(
            "isolation:pod-placement",
            Group::Isolation,
            &ns,
            e.to_string(),
        )),
    }
    let others: Vec<String> = inputs
        .others
        .iter()
        .take(3)
        .filter_map(|o| onboarding_contract::names::TenantNames::derive(&o.tenant_id).ok())
        .map(|n| n.namespace)
        .collect();
    for probe in isolation::probes(&exp, admin_group.as_deref(), &others) {
        let answer = live.allowed(&probe).await;
        checks.push(isolation::probe_check(&probe, answer));
    }

    let mut report = TenantReport::new(
        &exp.names.tenant_id,
        &target.name,
        exp.request_known,
        checks,
    );
    let mut observed = observed;
    if let Ok(Some(p)) = &pool {
        observed["nodePool"] = p["properties"].clone();
    }
    report.observed = observed;
    report
}
