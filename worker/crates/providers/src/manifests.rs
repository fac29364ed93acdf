//! The tenant's Kubernetes objects, built as k8s-openapi typed structs and turned into manifests.
//!
//! Pure functions: no I/O, no configuration reads. Every input string arrives already validated
//! (DNS-1123 names, tenant ids usable as label values) and is only ever placed into a field value,
//! never formatted into a name, selector expression or path. Object names are fixed constants, so
//! offboarding can find everything from the namespace name alone ([`tenant_object_refs`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, LimitRange, LimitRangeItem,
    LimitRangeSpec, Namespace, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceQuota,
    ResourceQuotaSpec, ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccount,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use crate::{GuardrailDefaults, WorkloadTemplate};
use crate::{KubeObject, ObjectRef};

/// The field manager of every server-side apply, and the `app.kubernetes.io/managed-by` value.
pub const FIELD_MANAGER: &str = "tenant-onboarding-worker";

/// Label carrying the tenant id on every object (and on the tenant's nodes).
pub const TENANT_LABEL: &str = "tenant";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const WORKLOAD_IDENTITY_USE_LABEL: &str = "azure.workload.identity/use";
pub const WORKLOAD_IDENTITY_CLIENT_ID: &str = "azure.workload.identity/client-id";
pub const WORKLOAD_IDENTITY_TENANT_ID: &str = "azure.workload.identity/tenant-id";

pub const RESOURCE_QUOTA_NAME: &str = "tenant-quota";
pub const LIMIT_RANGE_NAME: &str = "tenant-limits";
pub const DEFAULT_DENY_POLICY_NAME: &str = "default-deny";
pub const ALLOW_DNS_POLICY_NAME: &str = "allow-dns";
pub const ALLOW_SAME_NAMESPACE_POLICY_NAME: &str = "allow-same-namespace";
/// Name of the tenant admins' RoleBinding in the tenant's namespace.
pub const TENANT_ADMIN_ROLE_NAME: &str = "tenant-admin";
/// The ClusterRole (shipped in `k8s/base/rbac.yaml`) the admins' RoleBinding grants. The worker
/// may `bind` it by name without holding its rights: it never writes a Role of its own, which
/// Kubernetes would refuse for rights the worker lacks (RBAC escalation prevention).
pub const TENANT_ADMIN_CLUSTER_ROLE: &str = "tenant-onboarding:tenant-admin";
pub const WORKLOAD_NAME: &str = "workload";

/// UID the workload runs as when its image names none: the distroless `nonroot` user, so that
/// `runAsNonRoot` holds for images built without a `USER`.
const WORKLOAD_UID: i64 = 65532;

/// Quota, default container resources and the admins of one tenant's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardrailSpec {
    /// Namespace total of CPU requests and of CPU limits, e.g. `8`.
    pub cpu: String,
    /// Namespace total of memory requests and of memory limits, e.g. `32Gi`.
    pub memory: String,
    pub pods: u32,
    /// What a container that names no resources gets as request and limit.
    pub default_container_cpu: String,
    pub default_container_memory: String,
    /// Object id of the Entra group whose members administer the namespace; `None`: no binding.
    pub admin_group_id: Option<String>,
}

impl GuardrailSpec {
    /// The configured defaults, with the tenant's admin group (if any).
    pub fn from_defaults(defaults: &GuardrailDefaults, admin_group_id: Option<String>) -> Self {
        Self {
            cpu: defaults.cpu.clone(),
            memory: defaults.memory.clone(),
            pods: defaults.pods,
            default_container_cpu: defaults.default_container_cpu.clone(),
            default_container_memory: defaults.default_container_memory.clone(),
            admin_group_id,
        }
    }
}

/// The tenant's namespace: tenant labels and Pod Security Admission `restricted`, enforced,
/// warned and audited at the latest policy version.
pub fn namespace(name: &str, tenant_id: &str) -> KubeObject {
    let mut labels = tenant_labels(tenant_id);
    for mode in ["enforce", "warn", "audit"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".into(),
        );
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}-version"),
            "latest".into(),
        );
    }
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    to_object(&ns, None, name)
}

/// The tenant's service account, bound to its managed identity through workload identity.
///
/// `identity_entra_tenant_id` is `Some` only when the identity lives in another Entra tenant than
/// the one the cluster's workload identity webhook defaults to; the webhook then needs the
/// `azure.workload.identity/tenant-id` annotation. The account's own API token is not mounted:
/// the webhook projects the federated token itself, and tenant pods have no business with the
/// Kubernetes API.
pub fn service_account(
    namespace: &str,
    name: &str,
    tenant_id: &str,
    client_id: &str,
    identity_entra_tenant_id: Option<&str>,
) -> KubeObject {
    let mut labels = tenant_labels(tenant_id);
    labels.insert(WORKLOAD_IDENTITY_USE_LABEL.into(), "true".into());
    let mut annotations = BTreeMap::new();
    annotations.insert(WORKLOAD_IDENTITY_CLIENT_ID.into(), client_id.into());
    if let Some(entra_tenant) = identity_entra_tenant_id {
        annotations.insert(WORKLOAD_IDENTITY_TENANT_ID.into(), entra_tenant.into());
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };
    to_object(&sa, Some(namespace), name)
}

/// The namespace's guard rails: quota, container defaults, network policies (deny everything,
/// then allow DNS and traffic inside the namespace) and, when an admin group is given, its
/// RoleBinding to [`TENANT_ADMIN_CLUSTER_ROLE`].
pub fn guardrails(namespace: &str, tenant_id: &str, spec: &GuardrailSpec) -> Vec<KubeObject> {
    let mut objects = vec![
        resource_quota(namespace, tenant_id, spec),
        limit_range(namespace, tenant_id, spec),
        default_deny_policy(namespace, tenant_id),
        allow_dns_policy(namespace, tenant_id),
        allow_same_namespace_policy(namespace, tenant_id),
    ];
    if let Some(group) = &spec.admin_group_id {
        objects.push(tenant_admin_binding(namespace, tenant_id, group));
    }
    objects
}

/// The tenant's workload: a Deployment running as the tenant's service account on the tenant's
/// own nodes (nodeSelector + toleration of the pool's taint), with the Pod Security `restricted`
/// security context.
pub fn workload(
    namespace: &str,
    tenant_id: &str,
    service_account: &str,
    template: &WorkloadTemplate,
    replicas: u32,
) -> KubeObject {
    let mut selector = BTreeMap::new();
    selector.insert("app.kubernetes.io/name".to_string(), WORKLOAD_NAME.into());
    selector.insert(TENANT_LABEL.to_string(), tenant_id.into());

    let mut pod_labels = selector.clone();
    pod_labels.insert(MANAGED_BY_LABEL.into(), FIELD_MANAGER.into());
    pod_labels.insert(WORKLOAD_IDENTITY_USE_LABEL.into(), "true".into());

    let mut deployment_labels = tenant_labels(tenant_id);
    deployment_labels.insert("app.kubernetes.io/name".into(), WORKLOAD_NAME.into());

    let resources = quantities(&[("cpu", &template.cpu), ("memory", &template.memory)]);
    let container = Container {
        name: WORKLOAD_NAME.into(),
        image: Some(template.image.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(template.port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        // The root filesystem is read-only; most programs still want a scratch directory.
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };

    let mut node_selector = BTreeMap::new();
    node_selector.insert(TENANT_LABEL.to_string(), tenant_id.to_string());

    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some(WORKLOAD_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(deployment_labels),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(service_account.into()),
                    automount_service_account_token: Some(false),
                    node_selector: Some(node_selector),
                    tolerations: Some(vec![Toleration {
                        key: Some(TENANT_LABEL.into()),
                        operator: Some("Equal".into()),
                        value: Some(tenant_id.into()),
                        effect: Some("NoSchedule".into()),
                        ..Toleration::default()
                    }]),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(WORKLOAD_UID),
                        run_as_group: Some(WORKLOAD_UID),
                        seccomp_profile: Some(runtime_default_seccomp()),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    to_object(&deployment, Some(namespace), WORKLOAD_NAME)
}

// ---------------------------------------------------------------- references

pub fn namespace_ref(name: &str) -> ObjectRef {
    object_ref::<Namespace>(None, name)
}

pub fn service_account_ref(namespace: &str, name: &str) -> ObjectRef {
    object_ref::<ServiceAccount>(Some(namespace), name)
}

/// Every object [`guardrails`] can produce, the RoleBinding included (deleting one that was never
/// created is success), in reverse order of creation.
pub fn guardrail_refs(namespace: &str) -> Vec<ObjectRef> {
    let ns = Some(namespace);
    vec![
        object_ref::<RoleBinding>(ns, TENANT_ADMIN_ROLE_NAME),
        object_ref::<NetworkPolicy>(ns, ALLOW_SAME_NAMESPACE_POLICY_NAME),
        object_ref::<NetworkPolicy>(ns, ALLOW_DNS_POLICY_NAME),
        object_ref::<NetworkPolicy>(ns, DEFAULT_DENY_POLICY_NAME),
        object_ref::<LimitRange>(ns, LIMIT_RANGE_NAME),
        object_ref::<ResourceQuota>(ns, RESOURCE_QUOTA_NAME),
    ]
}

pub fn workload_ref(namespace: &str) -> ObjectRef {
    object_ref::<Deployment>(Some(namespace), WORKLOAD_NAME)
}

/// Every object the worker may have created for a tenant, in the order to delete them: the
/// workload, the guard rails, the service account, and the namespace last (deleting it removes
/// whatever else is inside).
pub fn tenant_object_refs(namespace: &str, service_account: &str) -> Vec<ObjectRef> {
    let mut refs = vec![workload_ref(namespace)];
    refs.extend(guardrail_refs(namespace));
    refs.push(service_account_ref(namespace, service_account));
    refs.push(namespace_ref(namespace));
    refs
}

// ---------------------------------------------------------------- guard rails

fn resource_quota(namespace: &str, tenant_id: &str, spec: &GuardrailSpec) -> KubeObject {
    let pods = spec.pods.to_string();
    let hard = quantities(&[
        ("requests.cpu", &spec.cpu),
        ("requests.memory", &spec.memory),
        ("limits.cpu", &spec.cpu),
        ("limits.memory", &spec.memory),
        ("pods", &pods),
    ]);
    let quota = ResourceQuota {
        metadata: meta(namespace, RESOURCE_QUOTA_NAME, tenant_id),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    };
    to_object(&quota, Some(namespace), RESOURCE_QUOTA_NAME)
}

fn limit_range(namespace: &str, tenant_id: &str, spec: &GuardrailSpec) -> KubeObject {
    // The quota covers limits, so every container needs one: the defaults fill them in.
    let defaults = quantities(&[
        ("cpu", &spec.default_container_cpu),
        ("memory", &spec.default_container_memory),
    ]);
    let range = LimitRange {
        metadata: meta(namespace, LIMIT_RANGE_NAME, tenant_id),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: Some(defaults.clone()),
                default_request: Some(defaults),
                ..LimitRangeItem::default()
            }],
        }),
    };
    to_object(&range, Some(namespace), LIMIT_RANGE_NAME)
}

fn default_deny_policy(namespace: &str, tenant_id: &str) -> KubeObject {
    network_policy(
        namespace,
        tenant_id,
        DEFAULT_DENY_POLICY_NAME,
        NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ..NetworkPolicySpec::default()
        },
    )
}

fn allow_dns_policy(namespace: &str, tenant_id: &str) -> KubeObject {
    let kube_system = labels(&[("kubernetes.io/metadata.name", "kube-system")]);
    let kube_dns = labels(&[("k8s-app", "kube-dns")]);
    let dns_port = |protocol: &str| NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(53)),
        ..NetworkPolicyPort::default()
    };
    network_policy(
        namespace,
        tenant_id,
        ALLOW_DNS_POLICY_NAME,
        NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(vec![NetworkPolicyEgressRule {
                // One peer with both selectors: kube-dns pods *in* kube-system, nothing else.
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector {
                        match_labels: Some(kube_system),
                        ..LabelSelector::default()
                    }),
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(kube_dns),
                        ..LabelSelector::default()
                    }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
            }]),
            ..NetworkPolicySpec::default()
        },
    )
}

fn allow_same_namespace_policy(namespace: &str, tenant_id: &str) -> KubeObject {
    // A peer with only a podSelector means pods of this policy's own namespace.
    let same_namespace = || {
        vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        }]
    };
    network_policy(
        namespace,
        tenant_id,
        ALLOW_SAME_NAMESPACE_POLICY_NAME,
        NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(same_namespace()),
                ..NetworkPolicyIngressRule::default()
            }]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(same_namespace()),
                ..NetworkPolicyEgressRule::default()
            }]),
        },
    )
}

fn network_policy(
    namespace: &str,
    tenant_id: &str,
    name: &str,
    spec: NetworkPolicySpec,
) -> KubeObject {
    let policy = NetworkPolicy {
        metadata: meta(namespace, name, tenant_id),
        spec: Some(spec),
    };
    to_object(&policy, Some(namespace), name)
}

fn tenant_admin_binding(namespace: &str, tenant_id: &str, group_object_id: &str) -> KubeObject {
    const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
    let binding = RoleBinding {
        metadata: meta(namespace, TENANT_ADMIN_ROLE_NAME, tenant_id),
        role_ref: RoleRef {
            api_group: RBAC_GROUP.into(),
            kind: "ClusterRole".into(),
            name: TENANT_ADMIN_CLUSTER_ROLE.into(),
        },
        // AKS with Entra integration presents group membership as the groups' object ids.
        subjects: Some(vec![Subject {
            api_group: Some(RBAC_GROUP.into()),
            kind: "Group".into(),
            name: group_object_id.into(),
            ..Subject::default()
        }]),
    };
    to_object(&binding, Some(namespace), TENANT_ADMIN_ROLE_NAME)
}

// ---------------------------------------------------------------- helpers

fn tenant_labels(tenant_id: &str) -> BTreeMap<String, String> {
    labels(&[(TENANT_LABEL, tenant_id), (MANAGED_BY_LABEL, FIELD_MANAGER)])
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn quantities(pairs: &[(&str, &String)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), Quantity((*v).clone())))
        .collect()
}

fn meta(namespace: &str, name: &str, tenant_id: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(tenant_labels(tenant_id)),
        ..ObjectMeta::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

fn object_ref<K: k8s_openapi::Resource>(namespace: Option<&str>, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: K::API_VERSION.into(),
        kind: K::KIND.into(),
        namespace: namespace.map(str::to_string),
        name: name.into(),
    }
}

fn to_object<K>(object: &K, namespace: Option<&str>, name: &str) -> KubeObject
where
    K: k8s_openapi::Resource + Serialize,
{
    // k8s-openapi's Serialize writes apiVersion and kind itself. Its structs hold only strings,
    // numbers, maps with string keys and sequences, so turning one into JSON cannot fail.
    #[allow(clippy::expect_used)]
    let manifest = serde_json::to_value(object).expect("k8s-openapi objects serialise to JSON");
    KubeObject {
        api_version: K::API_VERSION.into(),
        kind: K::KIND.into(),
        namespace: namespace.map(str::to_string),
        name: name.into(),
        manifest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(admin: Option<&str>) -> GuardrailSpec {
        GuardrailSpec::from_defaults(&GuardrailDefaults::default(), admin.map(str::to_string))
    }

    #[test]
    fn every_manifest_carries_its_api_version_kind_and_coordinates() {
        let mut objects = vec![
            namespace("tenant-acme", "acme"),
            service_account("tenant-acme", "acme", "acme", "cid", None),
            workload(
                "tenant-acme",
                "acme",
                "acme",
                &WorkloadTemplate::default(),
                2,
            ),
        ];
        objects.extend(guardrails("tenant-acme", "acme", &spec(Some("g"))));
        for o in &objects {
            assert_eq!(o.manifest["apiVersion"], json!(o.api_version), "{o:?}");
            assert_eq!(o.manifest["kind"], json!(o.kind), "{o:?}");
            assert_eq!(o.manifest["metadata"]["name"], json!(o.name), "{o:?}");
            assert_eq!(
                o.manifest["metadata"]["namespace"].as_str(),
                o.namespace.as_deref(),
                "{o:?}"
            );
            assert_eq!(o.manifest["metadata"]["labels"]["tenant"], "acme", "{o:?}");
            assert_eq!(
                o.manifest["metadata"]["labels"][MANAGED_BY_LABEL],
                FIELD_MANAGER
            );
        }
    }

    #[test]
    fn the_namespace_enforces_the_restricted_pod_security_standard() {
        let ns = namespace("tenant-acme", "acme");
        let labels = &ns.manifest["metadata"]["labels"];
        assert_eq!(ns.namespace, None);
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(
            labels["pod-security.kubernetes.io/enforce-version"],
            "latest"
        );
        assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
        assert_eq!(labels["pod-security.kubernetes.io/audit"], "restricted");
    }

    #[test]
    fn the_service_account_names_the_identity_tenant_only_when_asked() {
        let same = service_account("ns", "sa", "acme", "client-1", None);
        let annotations = &same.manifest["metadata"]["annotations"];
        assert_eq!(annotations[WORKLOAD_IDENTITY_CLIENT_ID], "client-1");
        assert!(annotations.get(WORKLOAD_IDENTITY_TENANT_ID).is_none());
        assert_eq!(
            same.manifest["metadata"]["labels"][WORKLOAD_IDENTITY_USE_LABEL],
            "true"
        );
        assert_eq!(same.manifest["automountServiceAccountToken"], false);

        let cross = service_account("ns", "sa", "acme", "client-1", Some("entra-2"));
        assert_eq!(
            cross.manifest["metadata"]["annotations"][WORKLOAD_IDENTITY_TENANT_ID],
            "entra-2"
        );
    }

    #[test]
    fn guardrails_bind_the_admin_group_only_when_one_is_given() {
        let without = guardrails("ns", "acme", &spec(None));
        assert!(without.iter().all(|o| o.kind != "RoleBinding"));
        assert_eq!(without.len(), 5);
        let with = guardrails("ns", "acme", &spec(Some("0000-group")));
        let binding = with
            .iter()
            .find(|o| o.kind == "RoleBinding")
            .expect("binding");
        assert_eq!(
            binding.manifest["subjects"],
            json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "0000-group"}])
        );
        assert_eq!(
            binding.manifest["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                   "name": TENANT_ADMIN_CLUSTER_ROLE})
        );
        assert!(
            with.iter().all(|o| o.kind != "Role"),
            "the worker writes no Role"
        );
    }

    #[test]
    fn the_quota_caps_requests_limits_and_pods() {
        let objects = guardrails("ns", "acme", &spec(None));
        let quota = objects
            .iter()
            .find(|o| o.kind == "ResourceQuota")
            .expect("quota");
        assert_eq!(
            quota.manifest["spec"]["hard"],
            json!({"requests.cpu": "8", "limits.cpu": "8", "requests.memory": "32Gi",
                   "limits.memory": "32Gi", "pods": "50"})
        );
    }

    #[test]
    fn the_network_policies_deny_by_default_and_allow_dns_and_the_namespace() {
        let objects = guardrails("ns", "acme", &spec(None));
        let policy = |name: &str| {
            objects
                .iter()
                .find(|o| o.kind == "NetworkPolicy" && o.name == name)
                .expect("policy")
                .manifest["spec"]
                .clone()
        };
        assert_eq!(
            policy(DEFAULT_DENY_POLICY_NAME),
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
        );
        let dns = policy(ALLOW_DNS_POLICY_NAME);
        assert_eq!(
            dns["egress"][0]["ports"],
            json!([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}])
        );
        assert_eq!(
            dns["egress"][0]["to"][0],
            json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                   "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}})
        );
        let same = policy(ALLOW_SAME_NAMESPACE_POLICY_NAME);
        assert_eq!(same["ingress"], json!([{"from": [{"podSelector": {}}]}]));
        assert_eq!(same["egress"], json!([{"to": [{"podSelector": {}}]}]));
    }

    /// The admins' ClusterRole ships in `k8s/base/rbac.yaml`; this reads that very file.
    #[test]
    fn the_tenant_admin_cluster_role_cannot_touch_rbac_or_the_guardrails() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../k8s/base/rbac.yaml");
        let text = std::fs::read_to_string(&path).expect("k8s/base/rbac.yaml");
        let role = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde_json::Value::deserialize(d).expect("yaml"))
            .find(|d| {
                d["kind"] == "ClusterRole" && d["metadata"]["name"] == TENANT_ADMIN_CLUSTER_ROLE
            })
            .expect("the tenant admin ClusterRole is shipped");
        let rules = role["rules"].as_array().expect("rules");
        for rule in rules {
            let groups = rule["apiGroups"].as_array().expect("groups");
            assert!(!groups.contains(&json!("rbac.authorization.k8s.io")));
            assert!(!groups.contains(&json!("*")));
            let verbs = rule["verbs"].as_array().expect("verbs");
            assert!(!verbs.contains(&json!("escalate")) && !verbs.contains(&json!("bind")));
            let resources = rule["resources"].as_array().expect("resources");
            let writes = verbs.contains(&json!("create"));
            for guarded in [
                "networkpolicies",
                "resourcequotas",
                "limitranges",
                "serviceaccounts",
            ] {
                assert!(!(writes && resources.contains(&json!(guarded))), "{rule}");
            }
        }
    }

    #[test]
    fn the_workload_runs_on_the_tenant_nodes_as_the_tenant_identity() {
        let template = WorkloadTemplate::default();
        let d = workload("tenant-acme", "acme", "acme-sa", &template, 3);
        assert_eq!(d.kind, "Deployment");
        assert_eq!(d.api_version, "apps/v1");
        let spec = &d.manifest["spec"];
        assert_eq!(spec["replicas"], 3);
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "acme-sa");
        assert_eq!(pod["nodeSelector"], json!({"tenant": "acme"}));
        assert_eq!(
            pod["tolerations"],
            json!([{"key": "tenant", "operator": "Equal", "value": "acme", "effect": "NoSchedule"}])
        );
        assert_eq!(
            spec["template"]["metadata"]["labels"][WORKLOAD_IDENTITY_USE_LABEL],
            "true"
        );
        let labels = spec["template"]["metadata"]["labels"]
            .as_object()
            .expect("labels");
        for (k, v) in spec["selector"]["matchLabels"]
            .as_object()
            .expect("selector")
        {
            assert_eq!(labels.get(k), Some(v), "selector {k} must match the pods");
        }
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let c = &pod["containers"][0];
        assert_eq!(c["image"], json!(template.image));
        assert_eq!(c["ports"][0]["containerPort"], json!(template.port));
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": template.cpu, "memory": template.memory})
        );
    }

    #[test]
    fn tenant_object_refs_cover_every_object_the_builders_make_namespace_last() {
        let mut built = vec![
            namespace("ns", "acme"),
            service_account("ns", "sa", "acme", "cid", None),
            workload("ns", "acme", "sa", &WorkloadTemplate::default(), 1),
        ];
        built.extend(guardrails("ns", "acme", &spec(Some("g"))));
        let refs = tenant_object_refs("ns", "sa");
        assert_eq!(refs.len(), built.len());
        for o in &built {
            assert!(refs.contains(&o.reference()), "{} missing", o.reference());
        }
        assert_eq!(refs.last(), Some(&namespace_ref("ns")));
    }
}
