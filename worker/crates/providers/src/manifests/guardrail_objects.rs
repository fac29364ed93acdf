//! The guard rails of a tenant's namespace: resource quota, default container limits, network
//! policies (deny by default, allow DNS, the namespace itself and, when configured, the egress
//! the tenant's identity needs: Entra and its storage account) and the admins' RoleBinding.
//!
//! May touch: nothing; pure builders.

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use super::*;
use crate::{EgressRule, FqdnEgress, FqdnEngine, GuardrailDefaults, KubeObject};

/// Quota, default container resources, allowed egress and the admins of one tenant's namespace.
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
    /// Egress beyond DNS and the namespace (validated CIDRs and ports, from the configuration's
    /// `[[guardrails.egress]]`); empty: no `allow-egress-azure` policy.
    #[serde(default)]
    pub egress: Vec<EgressRule>,
    /// Egress by exact host name (names resolved for the target); `None`: no
    /// `allow-egress-fqdn` policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn_egress: Option<FqdnEgress>,
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
            egress: defaults.egress.clone(),
            fqdn_egress: defaults.fqdn_egress.clone(),
        }
    }

    /// The host-name egress narrowed to the tenant's storage account (see
    /// [`FqdnEgress::for_account`]).
    pub fn on_account(mut self, storage_account: &str) -> Self {
        self.fqdn_egress = self.fqdn_egress.map(|f| f.for_account(storage_account));
        self
    }

    /// The quota a request asked for instead of the configured one.
    pub fn with_quota(mut self, cpu: &str, memory: &str, pods: u32) -> Self {
        self.cpu = cpu.to_string();
        self.memory = memory.to_string();
        self.pods = pods;
        self
    }
}

/// The namespace's guard rails: quota, container defaults, network policies (deny everything,
/// then allow DNS and traffic inside the namespace and, when egress rules are given, TCP to
/// their CIDRs and ports) and, when an admin group is given, its RoleBinding to
/// [`TENANT_ADMIN_CLUSTER_ROLE`].
pub fn guardrails(namespace: &str, tenant_id: &str, spec: &GuardrailSpec) -> Vec<KubeObject> {
    let mut objects = vec![
        resource_quota(namespace, tenant_id, spec),
        limit_range(namespace, tenant_id, spec),
        default_deny_policy(namespace, tenant_id),
        allow_dns_policy(namespace, tenant_id),
        allow_same_namespace_policy(namespace, tenant_id),
    ];
    if let Some(policy) = spec
        .fqdn_egress
        .as_ref()
        .and_then(|f| allow_fqdn_policy(namespace, tenant_id, f))
    {
        objects.push(policy);
    }
    if let Some(policy) = allow_egress_policy(namespace, tenant_id, &spec.egress) {
        objects.push(policy);
    }
    if let Some(group) = &spec.admin_group_id {
        objects.push(tenant_admin_binding(namespace, tenant_id, group));
    }
    objects
}

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

/// TCP to the configured CIDRs and ports, one egress rule per configured rule; `None` when
/// nothing is configured. A rule without CIDRs or without ports is left out rather than built:
/// in a NetworkPolicy an empty `to` means every destination and an empty `ports` every port, so
/// it would widen the policy (configuration validation refuses such rules before they get here).
fn allow_egress_policy(
    namespace: &str,
    tenant_id: &str,
    rules: &[EgressRule],
) -> Option<KubeObject> {
    let egress: Vec<NetworkPolicyEgressRule> = rules
        .iter()
        .filter(|r| !r.cidrs.is_empty() && !r.ports.is_empty())
        .map(|r| NetworkPolicyEgressRule {
            to: Some(
                r.cidrs
                    .iter()
                    .map(|cidr| NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: cidr.clone(),
                            except: None,
                        }),
                        ..NetworkPolicyPeer::default()
                    })
                    .collect(),
            ),
            ports: Some(
                r.ports
                    .iter()
                    .map(|port| NetworkPolicyPort {
                        protocol: Some("TCP".into()),
                        port: Some(IntOrString::Int(i32::from(*port))),
                        ..NetworkPolicyPort::default()
                    })
                    .collect(),
            ),
        })
        .collect();
    if egress.is_empty() {
        return None;
    }
    Some(network_policy(
        namespace,
        tenant_id,
        ALLOW_EGRESS_AZURE_POLICY_NAME,
        NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(egress),
            ..NetworkPolicySpec::default()
        },
    ))
}

/// Cilium's policy allowing TCP to exact host names, and the DNS lookups its proxy learns their
/// addresses from (a `toFQDNs` rule matches nothing unless the engine sees the lookup). `None`
/// without names or ports: an empty `toFQDNs` or `toPorts` would not narrow anything.
fn allow_fqdn_policy(namespace: &str, tenant_id: &str, fqdn: &FqdnEgress) -> Option<KubeObject> {
    if fqdn.names.is_empty() || fqdn.ports.is_empty() {
        return None;
    }
    let FqdnEngine::Cilium = fqdn.engine;
    let name = ALLOW_EGRESS_FQDN_POLICY_NAME;
    let manifest = serde_json::json!({
        "apiVersion": CILIUM_POLICY_API_VERSION,
        "kind": CILIUM_POLICY_KIND,
        "metadata": meta(namespace, name, tenant_id),
        "spec": {
            "endpointSelector": {},
            "egress": [
                {
                    "toEndpoints": [{"matchLabels": {
                        "k8s:io.kubernetes.pod.namespace": "kube-system",
                        "k8s:k8s-app": "kube-dns",
                    }}],
                    "toPorts": [{
                        "ports": [{"port": "53", "protocol": "ANY"}],
                        "rules": {"dns": [{"matchPattern": "*"}]},
                    }],
                },
                {
                    "toFQDNs": fqdn.names.iter()
                        .map(|n| serde_json::json!({"matchName": n}))
                        .collect::<Vec<_>>(),
                    "toPorts": [{
                        "ports": fqdn.ports.iter()
                            .map(|p| serde_json::json!({"port": p.to_string(), "protocol": "TCP"}))
                            .collect::<Vec<_>>(),
                    }],
                },
            ],
        },
    });
    Some(KubeObject {
        api_version: CILIUM_POLICY_API_VERSION.into(),
        kind: CILIUM_POLICY_KIND.into(),
        namespace: Some(namespace.into()),
        name: name.into(),
        manifest,
    })
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
