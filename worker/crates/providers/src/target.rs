//! Where tenants are provisioned and with what defaults: the configured targets (subscription,
//! resource groups, cluster, storage account, OIDC issuer, Entra tenants, credential) and the
//! guard-rail and workload templates. A command may name a target, never a subscription, tenant,
//! scope or identity (no confused deputy).
//!
//! Pure data read from configuration by the binary; touches nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use onboarding_core::CredentialConfig;
use serde::{Deserialize, Serialize};

/// Where and how a tenant is provisioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    #[serde(default)]
    pub name: String,
    pub subscription_id: String,
    /// Resource group of the tenants' managed identities.
    pub resource_group: String,
    pub location: String,
    pub cluster_resource_group: String,
    pub cluster_name: String,
    /// The cluster's OIDC issuer URL, trusted by every tenant's federated credential.
    pub oidc_issuer: String,
    pub storage_resource_group: String,
    pub storage_account: String,
    /// Entra tenant of the tenants' identities.
    pub identity_entra_tenant_id: String,
    /// Entra tenant the cluster's workload identity webhook defaults to. When it differs from
    /// `identity_entra_tenant_id`, service accounts carry `azure.workload.identity/tenant-id`.
    pub cluster_entra_tenant_id: String,
    /// ARM endpoint: `https://management.azure.com`, or a simulator.
    pub arm_endpoint: String,
    pub credential: CredentialConfig,
    pub kubernetes: KubernetesConfig,
}

impl Target {
    /// A target pointing at simulators on loopback, for the local run and tests.
    pub fn local(name: &str) -> Self {
        Self {
            name: name.into(),
            subscription_id: "00000000-0000-0000-0000-000000000001".into(),
            resource_group: "rg-tenants".into(),
            location: "westeurope".into(),
            cluster_resource_group: "rg-aks".into(),
            cluster_name: "aks-shared".into(),
            oidc_issuer: "https://oidc.sim.local/00000000-0000-0000-0000-00000000000c/".into(),
            storage_resource_group: "rg-data".into(),
            storage_account: "sttenantdata".into(),
            identity_entra_tenant_id: "00000000-0000-0000-0000-0000000000e1".into(),
            cluster_entra_tenant_id: "00000000-0000-0000-0000-0000000000e1".into(),
            arm_endpoint: "http://127.0.0.1:8780".into(),
            credential: CredentialConfig::None,
            kubernetes: KubernetesConfig {
                server: Some("http://127.0.0.1:8781".into()),
                ..KubernetesConfig::default()
            },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// API server URL without credentials (simulators, `kubectl proxy`).
    pub server: Option<String>,
    /// Path to a kubeconfig; with `context`, which of its contexts.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Use the pod's service account.
    pub in_cluster: bool,
}

/// Quota and limits a tenant gets when its command does not say, and the egress every tenant's
/// pods are allowed beyond DNS and their own namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardrailDefaults {
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub default_container_cpu: String,
    pub default_container_memory: String,
    /// Egress the tenant's pods need outside the cluster, one `[[guardrails.egress]]` table per
    /// purpose; all of them go into the NetworkPolicy `allow-egress-azure`. Empty (the default):
    /// no such policy, and the namespace's default deny leaves the tenant's pods DNS and their
    /// own namespace only, so they can reach neither Entra (the workload identity token
    /// exchange) nor their storage account: the identity and the blob container onboarding made
    /// are unusable from inside the cluster (`worker config check` warns).
    ///
    /// A Kubernetes NetworkPolicy matches addresses, not host names, so each rule gives CIDRs.
    /// On AKS take them from the Azure service tags (`az network list-service-tags --location
    /// <region>`, or the weekly "Azure IP Ranges and Service Tags" file): `AzureActiveDirectory`
    /// for Entra (login.microsoftonline.com), `Storage.<region>` (e.g. `Storage.WestEurope`) for
    /// the storage account's blob endpoint. Service tags change: refresh the rules when they do.
    /// Traffic that leaves through a firewall or a private endpoint needs the firewall's or the
    /// private endpoint's addresses instead.
    ///
    /// ```toml
    /// [[guardrails.egress]]
    /// name = "entra"
    /// cidrs = ["20.190.128.0/18", "40.126.0.0/18"]
    ///
    /// [[guardrails.egress]]
    /// name = "storage"
    /// cidrs = ["20.60.0.0/16"]
    /// ports = [443]
    /// ```
    pub egress: Vec<EgressRule>,
    /// Egress by host name where the cluster's engine supports it (`[guardrails.fqdn_egress]
    /// engine = "cilium"`); `None`: no such policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn_egress: Option<FqdnEgress>,
}

/// One purpose the tenant's pods may reach outside the cluster: TCP to these ports of these
/// address ranges, nothing else. Becomes one egress rule of the NetworkPolicy
/// `allow-egress-azure` (`ipBlock` peers, TCP ports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    /// What the rule is for (`entra`, `storage`): names it in validation messages.
    pub name: String,
    /// Destination address ranges, IPv4 or IPv6 CIDR notation (`20.190.128.0/18`), each with
    /// its host bits zero. On AKS: the service tag's `addressPrefixes` (see
    /// [`GuardrailDefaults::egress`]).
    pub cidrs: Vec<String>,
    /// Destination TCP ports, 1 to 65535; 443 (HTTPS) unless set.
    #[serde(default = "https_port")]
    pub ports: Vec<u16>,
}

fn https_port() -> Vec<u16> {
    vec![443]
}

/// The network policy engines that can match egress by host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FqdnEngine {
    /// Cilium (AKS with Azure CNI powered by Cilium and Advanced Container Networking
    /// Services): a `CiliumNetworkPolicy` with `toFQDNs`.
    Cilium,
}

/// Egress by host name, for clusters whose network policy engine matches names: one policy
/// `allow-egress-fqdn` allowing TCP to these exact names (no wildcards: a wildcard storage
/// name would reach every account), plus the DNS lookups the engine learns the addresses from.
/// Plain NetworkPolicy cannot name hosts; this is what keeps the allowance to the tenant's own
/// storage account instead of the whole `Storage` service tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FqdnEgress {
    pub engine: FqdnEngine,
    /// Exact host names. `{storage_account}` stands for the target's storage account, so the
    /// default reaches Entra and the tenant's blob endpoint only. Sovereign clouds: use their
    /// authority host and blob suffix (`login.microsoftonline.us`, `blob.core.usgovcloudapi.net`).
    #[serde(default = "default_fqdns")]
    pub names: Vec<String>,
    /// Destination TCP ports; 443 unless set.
    #[serde(default = "https_port")]
    pub ports: Vec<u16>,
}

fn default_fqdns() -> Vec<String> {
    vec![
        "login.microsoftonline.com".into(),
        "{storage_account}.blob.core.windows.net".into(),
    ]
}

impl FqdnEgress {
    /// The names with `{storage_account}` resolved for `account`.
    pub fn for_account(&self, account: &str) -> Self {
        Self {
            names: self
                .names
                .iter()
                .map(|n| n.replace("{storage_account}", account))
                .collect(),
            ..self.clone()
        }
    }
}

impl Default for GuardrailDefaults {
    fn default() -> Self {
        Self {
            cpu: "8".into(),
            memory: "32Gi".into(),
            pods: 50,
            default_container_cpu: "250m".into(),
            default_container_memory: "256Mi".into(),
            egress: Vec::new(),
            fqdn_egress: None,
        }
    }
}

/// The tenant workload's Deployment template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkloadTemplate {
    /// `false` turns workloads off: a command asking for one is refused as invalid input
    /// (`[workload] enabled = false`; the template is a default of every configuration).
    pub enabled: bool,
    pub image: String,
    pub port: u16,
    pub cpu: String,
    pub memory: String,
}

impl Default for WorkloadTemplate {
    fn default() -> Self {
        Self {
            enabled: true,
            image: "mcr.microsoft.com/azuredocs/aks-helloworld:v1".into(),
            // The port the sample image serves on (its Flask app binds 80).
            port: 80,
            cpu: "250m".into(),
            memory: "256Mi".into(),
        }
    }
}

/// Everything the saga and the providers need to know about where and how to provision: the
/// configured targets and the templates. Built by the binary from its configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Provisioning {
    /// The target a command gets when it names none.
    pub default_target: String,
    pub targets: BTreeMap<String, Target>,
    pub guardrails: GuardrailDefaults,
    /// When set, a command may ask for its workload to be deployed from this template.
    pub workload: Option<WorkloadTemplate>,
}

impl Provisioning {
    /// The target a command names, or the default one.
    pub fn target(&self, name: Option<&str>) -> Option<&Target> {
        self.targets.get(name.unwrap_or(&self.default_target))
    }
}
