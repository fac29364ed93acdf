//! Tenant manifests (minimal placeholder; replaced by the typed builders of the Kubernetes
//! provider).

use serde_json::json;

use crate::config::WorkloadTemplate;
use crate::providers::KubeObject;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardrailSpec {
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub default_container_cpu: String,
    pub default_container_memory: String,
    pub admin_group_id: Option<String>,
}

fn object(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    manifest: serde_json::Value,
) -> KubeObject {
    KubeObject {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: namespace.map(str::to_string),
        name: name.into(),
        manifest,
    }
}

pub fn namespace(name: &str, tenant_id: &str) -> KubeObject {
    object(
        "v1",
        "Namespace",
        None,
        name,
        json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":name,"labels":{"tenant":tenant_id,"pod-security.kubernetes.io/enforce":"restricted"}}}),
    )
}

pub fn service_account(
    namespace: &str,
    name: &str,
    tenant_id: &str,
    client_id: &str,
    identity_entra_tenant_id: Option<&str>,
) -> KubeObject {
    let mut annotations = json!({"azure.workload.identity/client-id": client_id});
    if let Some(t) = identity_entra_tenant_id {
        annotations["azure.workload.identity/tenant-id"] = json!(t);
    }
    object(
        "v1",
        "ServiceAccount",
        Some(namespace),
        name,
        json!({"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":name,"namespace":namespace,"labels":{"tenant":tenant_id,"azure.workload.identity/use":"true"},"annotations":annotations}}),
    )
}

pub fn guardrails(namespace: &str, tenant_id: &str, spec: &GuardrailSpec) -> Vec<KubeObject> {
    let mut v = vec![
        object(
            "v1",
            "ResourceQuota",
            Some(namespace),
            "tenant-quota",
            json!({"apiVersion":"v1","kind":"ResourceQuota","metadata":{"name":"tenant-quota","namespace":namespace,"labels":{"tenant":tenant_id}},"spec":{"hard":{"requests.cpu":spec.cpu,"requests.memory":spec.memory,"pods":spec.pods.to_string()}}}),
        ),
        object(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            Some(namespace),
            "default-deny",
            json!({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"default-deny","namespace":namespace},"spec":{"podSelector":{},"policyTypes":["Ingress","Egress"]}}),
        ),
    ];
    if let Some(group) = &spec.admin_group_id {
        v.push(object("rbac.authorization.k8s.io/v1", "RoleBinding", Some(namespace), "tenant-admin", json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"tenant-admin","namespace":namespace},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"edit"},"subjects":[{"kind":"Group","name":group}]})));
    }
    v
}

pub fn workload(
    namespace: &str,
    tenant_id: &str,
    service_account: &str,
    template: &WorkloadTemplate,
    replicas: u32,
) -> KubeObject {
    object(
        "apps/v1",
        "Deployment",
        Some(namespace),
        "workload",
        json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"workload","namespace":namespace},"spec":{"replicas":replicas,"selector":{"matchLabels":{"app":"workload"}},"template":{"metadata":{"labels":{"app":"workload","azure.workload.identity/use":"true"}},"spec":{"serviceAccountName":service_account,"nodeSelector":{"tenant":tenant_id},"tolerations":[{"key":"tenant","operator":"Equal","value":tenant_id,"effect":"NoSchedule"}],"containers":[{"name":"app","image":template.image}]}}}}),
    )
}
