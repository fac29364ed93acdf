//! The platform's limits the ARM simulator enforces, each on by default because real Azure has it:
//! one agent-pool operation per cluster at a time, blob containers that stay "being deleted" for
//! a while after a DELETE, a list of VM sizes agent pools may use, and a regional vCPU quota per
//! subscription. [`ArmBehaviour`] switches and sizes them; the error answers AKS gives when they
//! bite are built here too.

use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::SIM_LOCATION;
use super::responses::arm_error;

/// How closely the ARM simulator follows the platform's limits. `Default` turns every behaviour
/// on with realistic values; [`ArmBehaviour::permissive`] turns them all off (for throughput and
/// memory benchmarks that create thousands of pools in one subscription).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArmBehaviour {
    /// AKS runs one agent-pool operation per managed cluster at a time and refuses others with
    /// 409 `OperationNotAllowed`. Off: pool operations on one cluster overlap freely.
    pub one_pool_operation_per_cluster: bool,
    /// Real-world seconds a deleted blob container stays "being deleted" (Storage deletes
    /// containers asynchronously and refuses to re-create the name for at least 30 s), scaled by
    /// the latency profile's `scale` like every other duration: the zero profile makes it
    /// instant. 0 turns it off.
    pub container_deletion_secs: f64,
    /// The VM sizes agent pools may use, with their vCPUs and memory (`None`: any size; vCPUs
    /// are then read from the size's name, `Standard_D4s_v5` has 4).
    pub vm_sizes: Option<Vec<VmSize>>,
    /// Regional vCPU quota per subscription: the vCPUs of every agent pool in the subscription
    /// (size's vCPUs × node count, × maxCount for autoscaling pools) may not exceed it
    /// (`None`: unlimited).
    pub vcpu_quota: Option<u32>,
}

impl Default for ArmBehaviour {
    fn default() -> Self {
        Self {
            one_pool_operation_per_cluster: true,
            container_deletion_secs: DEFAULT_CONTAINER_DELETION_SECS,
            vm_sizes: Some(VmSize::common()),
            vcpu_quota: Some(DEFAULT_VCPU_QUOTA),
        }
    }
}

impl ArmBehaviour {
    /// Every limit off: overlapping pool operations, containers gone at once, any VM size, no
    /// quota.
    pub fn permissive() -> Self {
        Self {
            one_pool_operation_per_cluster: false,
            container_deletion_secs: 0.0,
            vm_sizes: None,
            vcpu_quota: None,
        }
    }

    /// The size of this name (case-insensitive), if the list is on and has it.
    pub fn vm_size(&self, name: &str) -> Option<&VmSize> {
        self.vm_sizes
            .as_ref()?
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// vCPUs of one VM of this size: from the list, else from the name.
    pub fn vcpus(&self, name: &str) -> u32 {
        self.vm_size(name)
            .map(|s| s.vcpus)
            .unwrap_or_else(|| vcpus_from_name(name))
    }

    /// vCPUs an agent pool's properties hold against the quota: size × nodes, the maximum for
    /// an autoscaling pool (what it may grow to).
    pub fn pool_vcpus(&self, properties: &Value) -> u64 {
        let size = properties
            .get("vmSize")
            .and_then(Value::as_str)
            .unwrap_or_default();
        u64::from(self.vcpus(size)) * pool_nodes_at_most(properties)
    }
}

/// Storage's documented minimum before a deleted container's name can be used again.
pub const DEFAULT_CONTAINER_DELETION_SECS: f64 = 30.0;
/// A regional vCPU quota of a modest production subscription.
pub const DEFAULT_VCPU_QUOTA: u32 = 200;

/// A VM size agent pools may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmSize {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
}

impl VmSize {
    pub fn new(name: &str, vcpus: u32, memory_mib: u64) -> Self {
        Self {
            name: name.to_string(),
            vcpus,
            memory_mib,
        }
    }

    /// Common general-purpose, memory- and compute-optimised sizes (vCPUs and memory from the
    /// Azure VM size tables).
    pub fn common() -> Vec<VmSize> {
        const GIB: u64 = 1024;
        [
            ("Standard_B2s", 2, 4 * GIB),
            ("Standard_B2ms", 2, 8 * GIB),
            ("Standard_B4ms", 4, 16 * GIB),
            ("Standard_DS1_v2", 1, 3584),
            ("Standard_DS2_v2", 2, 7 * GIB),
            ("Standard_DS3_v2", 4, 14 * GIB),
            ("Standard_DS4_v2", 8, 28 * GIB),
            ("Standard_D2s_v3", 2, 8 * GIB),
            ("Standard_D4s_v3", 4, 16 * GIB),
            ("Standard_D8s_v3", 8, 32 * GIB),
            ("Standard_D2s_v5", 2, 8 * GIB),
            ("Standard_D4s_v5", 4, 16 * GIB),
            ("Standard_D8s_v5", 8, 32 * GIB),
            ("Standard_D16s_v5", 16, 64 * GIB),
            ("Standard_D32s_v5", 32, 128 * GIB),
            ("Standard_D2ds_v5", 2, 8 * GIB),
            ("Standard_D4ds_v5", 4, 16 * GIB),
            ("Standard_D2as_v5", 2, 8 * GIB),
            ("Standard_D4as_v5", 4, 16 * GIB),
            ("Standard_D8as_v5", 8, 32 * GIB),
            ("Standard_E2s_v5", 2, 16 * GIB),
            ("Standard_E4s_v5", 4, 32 * GIB),
            ("Standard_E8s_v5", 8, 64 * GIB),
            ("Standard_E16s_v5", 16, 128 * GIB),
            ("Standard_F2s_v2", 2, 4 * GIB),
            ("Standard_F4s_v2", 4, 8 * GIB),
            ("Standard_F8s_v2", 8, 16 * GIB),
            ("Standard_F16s_v2", 16, 32 * GIB),
        ]
        .iter()
        .map(|(n, c, m)| VmSize::new(n, *c, *m))
        .collect()
    }
}

/// Azure's naming convention: the first number after the family letters is the vCPU count
/// (`Standard_D4s_v5` → 4, `Standard_E16-4s_v5` → 16); 1 if there is none.
pub fn vcpus_from_name(name: &str) -> u32 {
    let tail = name.split_once('_').map_or(name, |(_, t)| t);
    let digits: String = tail
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or(1)
}

/// The most nodes a pool's properties ask for: `maxCount` when autoscaling, else `count`
/// (AKS's default is 1).
pub fn pool_nodes_at_most(properties: &Value) -> u64 {
    let autoscale = properties.get("enableAutoScaling").and_then(Value::as_bool) == Some(true);
    let field = if autoscale { "maxCount" } else { "count" };
    properties.get(field).and_then(Value::as_u64).unwrap_or(1)
}

/// Checks an agent pool's VM size against the list: `None` if it may be used, else AKS's 400.
pub fn check_vm_size(behaviour: &ArmBehaviour, pool: &str, size: &str) -> Option<Response> {
    let sizes = behaviour.vm_sizes.as_ref()?;
    let Some(found) = behaviour.vm_size(size) else {
        // What AKS answers for a size the subscription may not use in the region, e.g.
        // dotnet/core#8000 and MicrosoftDocs/mslearn-aspnet-core#106: "(BadRequest) The VM size
        // of AgentPoolProfile:nodepool1 is not allowed in your subscription in location
        // 'westus'. The available VM sizes are '...'", with https://aka.ms/aks/quotas-skus-regions.
        let available = sizes
            .iter()
            .filter(|s| s.vcpus >= 2)
            .map(|s| s.name.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(",");
        return Some(arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "The VM size of AgentPoolProfile:{pool} is not allowed in your subscription in location '{SIM_LOCATION}'. The available VM sizes are '{available}'. For more details, please visit https://aka.ms/aks/quotas-skus-regions"
            ),
        ));
    };
    // AKS refuses sizes under 2 vCPUs (https://aka.ms/aks/restricted-skus); the wording is
    // the one quoted in Azure/azure-rest-api-specs#7153.
    (found.vcpus < 2).then(|| {
        arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "The VM SKU chosen for this cluster `{}` does not have enough CPU/memory to run as an AKS node. Please see https://aka.ms/aks/restricted-skus for more details.",
                found.name
            ),
        )
    })
}

/// AKS's answer when a pool would take the subscription over its regional vCPU quota.
///
/// The code and first sentence are AKS's quota preflight ("ErrCode_InsufficientVCPUQuota:
/// Insufficient vcpu quota requested 2, remaining 0 for family ... for region eastus", quoted in
/// 1ChristianAlex/motordesk#14); the usage figures follow Compute's `QuotaExceeded` wording
/// ("Current Limit: 4, Current Usage: 4, Additional Required: 2, (Minimum) New Limit Required:
/// 6", MicrosoftDocs/azure-docs#62378, Azure/AKS#5808). The message says "quota", so clients
/// that treat `OperationNotAllowed`-style codes as transient still see it is not.
pub fn quota_exceeded(limit: u64, usage: u64, required: u64) -> Response {
    let remaining = limit.saturating_sub(usage);
    arm_error(
        StatusCode::BAD_REQUEST,
        "ErrCode_InsufficientVCPUQuota",
        &format!(
            "Insufficient vcpu quota requested {required}, remaining {remaining} for family Total Regional vCPUs for region {SIM_LOCATION}. Operation could not be completed as it results in exceeding approved Total Regional Cores quota. Additional details - Deployment Model: Resource Manager, Location: {SIM_LOCATION}, Current Limit: {limit}, Current Usage: {usage}, Additional Required: {required}, (Minimum) New Limit Required: {}. Submit a request for Quota increase at https://aka.ms/ProdportalCRP",
            usage + required
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vcpus_come_from_the_list_or_the_name() {
        let b = ArmBehaviour::default();
        assert_eq!(b.vcpus("standard_d8s_v5"), 8);
        assert_eq!(b.vcpus("Standard_E16-4s_v5"), 16);
        assert_eq!(vcpus_from_name("Standard_NC24ads_A100_v4"), 24);
        assert_eq!(vcpus_from_name("nonsense"), 1);
    }

    #[test]
    fn an_autoscaling_pool_counts_its_maximum() {
        let b = ArmBehaviour::default();
        let fixed = json!({"vmSize": "Standard_D4s_v5", "count": 3});
        let auto = json!({"vmSize": "Standard_D4s_v5", "count": 1, "enableAutoScaling": true, "minCount": 1, "maxCount": 5});
        assert_eq!(b.pool_vcpus(&fixed), 12);
        assert_eq!(b.pool_vcpus(&auto), 20);
        assert_eq!(b.pool_vcpus(&json!({"vmSize": "Standard_B2s"})), 2);
    }

    #[test]
    fn sizes_are_checked_case_insensitively_and_small_ones_are_restricted() {
        let b = ArmBehaviour::default();
        assert!(check_vm_size(&b, "p", "standard_D4S_v5").is_none());
        assert_eq!(
            check_vm_size(&b, "p", "Standard_Bogus_v9").map(|r| r.status()),
            Some(StatusCode::BAD_REQUEST)
        );
        assert!(check_vm_size(&b, "p", "Standard_DS1_v2").is_some());
        assert!(check_vm_size(&ArmBehaviour::permissive(), "p", "Standard_Bogus_v9").is_none());
    }
}
