//! The Kubernetes Node objects an AKS agent pool stands for, built from the pool's ARM resource:
//! names (`aks-<pool>-<8 digits>-vmss00000N`), labels, taints, capacity and allocatable from the
//! VM size, a Ready condition. Pure functions; the ARM simulator's node sink sends them to an API
//! server.

use serde_json::{Value, json};

use super::SIM_LOCATION;
use super::platform::ArmBehaviour;

/// One node of a pool: what to POST to `/api/v1/nodes` (the API server ignores `status` there)
/// and the status to PATCH onto `/api/v1/nodes/{name}/status` afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeObject {
    pub name: String,
    /// The Node without status.
    pub node: Value,
    /// `{"status": {...}}`, a merge patch for the status subresource.
    pub status: Value,
}

/// The scale set AKS names after the pool and a hash of its cluster: `aks-<pool>-<8 digits>-vmss`.
pub fn vmss_name(cluster_id: &str, pool: &str) -> String {
    format!(
        "aks-{pool}-{:08}-vmss",
        fnv1a(&cluster_id.to_ascii_lowercase()) % 100_000_000
    )
}

/// The node of instance `index` of a pool's scale set: the scale set's name and the instance id
/// in base 36, six wide (`aks-user1-12345678-vmss000000`, ... `vmss00000a`).
pub fn node_name(cluster_id: &str, pool: &str, index: u32) -> String {
    format!("{}{}", vmss_name(cluster_id, pool), base36_6(index))
}

/// How many nodes a pool runs: `count`, 1 if absent (AKS's default).
pub fn node_count(properties: &Value) -> u32 {
    properties
        .get("count")
        .and_then(Value::as_u64)
        .map_or(1, |c| u32::try_from(c).unwrap_or(u32::MAX))
}

/// The nodes of an agent pool resource (`id`, `name`, `properties` as the ARM simulator keeps
/// it), instances `0..count`.
pub fn pool_nodes(pool: &Value, behaviour: &ArmBehaviour) -> Vec<NodeObject> {
    (0..node_count(&pool["properties"]))
        .map(|i| pool_node(pool, behaviour, i))
        .collect()
}

/// Instance `index` of an agent pool.
pub fn pool_node(pool: &Value, behaviour: &ArmBehaviour, index: u32) -> NodeObject {
    let id = pool["id"].as_str().unwrap_or_default();
    let pool_name = pool["name"].as_str().unwrap_or_default();
    let props = &pool["properties"];
    let cluster_id = id
        .rsplit_once("/agentPools/")
        .or_else(|| id.rsplit_once("/agentpools/"))
        .map_or(id, |(c, _)| c);
    let name = node_name(cluster_id, pool_name, index);
    let size = props["vmSize"].as_str().unwrap_or_default();
    let (vcpus, memory_mib) = match behaviour.vm_size(size) {
        Some(s) => (s.vcpus, s.memory_mib),
        // Any size allowed and this one unknown: its name's vCPUs, 4 GiB each.
        None => {
            let v = behaviour.vcpus(size);
            (v, u64::from(v) * 4096)
        }
    };
    let max_pods = props["maxPods"].as_u64().unwrap_or(110);
    let mode = props["mode"]
        .as_str()
        .unwrap_or("User")
        .to_ascii_lowercase();

    let mut labels = serde_json::Map::new();
    if let Some(own) = props["nodeLabels"].as_object() {
        labels.extend(own.clone());
    }
    for (k, v) in [
        ("agentpool", pool_name.to_string()),
        ("kubernetes.azure.com/agentpool", pool_name.to_string()),
        ("kubernetes.azure.com/mode", mode),
        ("kubernetes.azure.com/role", "agent".to_string()),
        ("kubernetes.io/os", "linux".to_string()),
        ("kubernetes.io/arch", "amd64".to_string()),
        ("kubernetes.io/hostname", name.clone()),
        ("kubernetes.io/role", "agent".to_string()),
        ("node.kubernetes.io/instance-type", size.to_string()),
        ("topology.kubernetes.io/region", SIM_LOCATION.to_string()),
    ] {
        labels.insert(k.to_string(), json!(v));
    }
    let zones: Vec<&str> = props["availabilityZones"]
        .as_array()
        .map(|z| z.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !zones.is_empty() {
        let zone = zones[index as usize % zones.len()];
        labels.insert(
            "topology.kubernetes.io/zone".into(),
            json!(format!("{SIM_LOCATION}-{zone}")),
        );
    }
    let taints: Vec<Value> = props["nodeTaints"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(Value::as_str)
                .filter_map(taint)
                .collect()
        })
        .unwrap_or_default();

    let (sub, rg, cluster) = cluster_parts(cluster_id);
    let provider_id = format!(
        "azure:///subscriptions/{sub}/resourceGroups/mc_{rg}_{cluster}_{SIM_LOCATION}/providers/Microsoft.Compute/virtualMachineScaleSets/{}/virtualMachines/{index}",
        vmss_name(cluster_id, pool_name)
    )
    .to_ascii_lowercase();
    let mut spec = json!({ "providerID": provider_id });
    if !taints.is_empty() {
        spec["taints"] = json!(taints);
    }
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "labels": labels },
        "spec": spec,
    });

    let version = props["currentOrchestratorVersion"]
        .as_str()
        .or_else(|| props["orchestratorVersion"].as_str())
        .unwrap_or("1.33.2");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let condition = |ty: &str, status: &str, reason: &str, message: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let memory_ki = memory_mib * 1024;
    let hash = fnv1a(&name);
    let status = json!({"status": {
        "capacity": {
            "cpu": vcpus.to_string(),
            "memory": format!("{memory_ki}Ki"),
            "pods": max_pods.to_string(),
        },
        "allocatable": {
            "cpu": format!("{}m", u64::from(vcpus) * 1000 - reserved_cpu_millis(vcpus)),
            "memory": format!("{}Ki", allocatable_memory_mib(memory_mib, max_pods) * 1024),
            "pods": max_pods.to_string(),
        },
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": format!("10.224.{}.{}", (hash >> 8) % 250, 4 + (index % 250))},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": format!("{hash:032x}"),
            "systemUUID": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string(),
            "bootID": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string(),
            "kernelVersion": "5.15.0-1089-azure",
            "osImage": "Ubuntu 22.04.5 LTS",
            "containerRuntimeVersion": "containerd://1.7.27-1",
            "kubeletVersion": format!("v{version}"),
            "kubeProxyVersion": format!("v{version}"),
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }});
    NodeObject { name, node, status }
}

/// A taint from AKS's `key=value:Effect` (or `key:Effect`) notation; `None` if malformed.
pub fn taint(spec: &str) -> Option<Value> {
    let (kv, effect) = spec.rsplit_once(':')?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return None;
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    if key.is_empty() {
        return None;
    }
    let mut t = json!({"key": key, "effect": effect});
    if !value.is_empty() {
        t["value"] = json!(value);
    }
    Some(t)
}

/// CPU AKS reserves for the kubelet and system daemons, by core count (AKS's resource
/// reservation table: 60m for 1 core, 100m for 2, 140m for 4, 180m for 8, 260m for 16, 420m for
/// 32, 740m for 64).
pub fn reserved_cpu_millis(vcpus: u32) -> u64 {
    const TABLE: [(u32, u64); 7] = [
        (1, 60),
        (2, 100),
        (4, 140),
        (8, 180),
        (16, 260),
        (32, 420),
        (64, 740),
    ];
    TABLE
        .iter()
        .rev()
        .find(|(cores, _)| vcpus >= *cores)
        .map_or(60, |(_, m)| *m)
        .min(u64::from(vcpus) * 1000)
}

/// Memory left for pods: AKS (1.29 and later) reserves 20 MiB per pod the node may run plus
/// 50 MiB, at most 25 % of the memory, and evicts below 100 MiB free.
pub fn allocatable_memory_mib(memory_mib: u64, max_pods: u64) -> u64 {
    let reserved = (20 * max_pods + 50).min(memory_mib / 4);
    memory_mib.saturating_sub(reserved + 100)
}

fn cluster_parts(cluster_id: &str) -> (String, String, String) {
    let segs: Vec<&str> = cluster_id.trim_matches('/').split('/').collect();
    let at = |i: usize| segs.get(i).copied().unwrap_or_default().to_string();
    (at(1), at(3), at(7))
}

fn base36_6(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// FNV-1a, 64 bits: a stable hash (unlike `DefaultHasher`, the same in every build).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL_ID: &str = "/subscriptions/s1/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/aks/agentPools/tacme";

    fn pool(props: Value) -> Value {
        json!({"id": POOL_ID, "name": "tacme", "properties": props})
    }

    #[test]
    fn nodes_are_named_like_aks_names_scale_set_instances() {
        let cluster = POOL_ID.rsplit_once("/agentPools/").unwrap().0;
        let name = node_name(cluster, "tacme", 0);
        let digits = name
            .strip_prefix("aks-tacme-")
            .and_then(|r| r.strip_suffix("-vmss000000"))
            .unwrap();
        assert!(
            digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()),
            "{name}"
        );
        assert!(node_name(cluster, "tacme", 10).ends_with("-vmss00000a"));
        assert!(node_name(cluster, "tacme", 36).ends_with("-vmss000010"));
        // Stable, case-insensitive in the cluster id, different per cluster.
        assert_eq!(name, node_name(&cluster.to_ascii_uppercase(), "tacme", 0));
        assert_ne!(
            name,
            node_name(&cluster.replace("/aks", "/aks2"), "tacme", 0)
        );
    }

    #[test]
    fn a_pool_becomes_count_nodes_with_its_labels_taints_and_size() {
        let nodes = pool_nodes(
            &pool(json!({
                "count": 2, "vmSize": "Standard_D4s_v5", "mode": "User", "maxPods": 110,
                "nodeLabels": {"tenant": "acme"},
                "nodeTaints": ["tenant=acme:NoSchedule", "dedicated:NoExecute"],
                "availabilityZones": ["1", "2"],
                "currentOrchestratorVersion": "1.33.2",
            })),
            &ArmBehaviour::default(),
        );
        assert_eq!(nodes.len(), 2);
        let n = &nodes[1];
        let labels = &n.node["metadata"]["labels"];
        assert_eq!(labels["tenant"], "acme");
        assert_eq!(labels["kubernetes.azure.com/agentpool"], "tacme");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/hostname"], n.name.as_str());
        assert_eq!(
            labels["node.kubernetes.io/instance-type"],
            "Standard_D4s_v5"
        );
        assert_eq!(labels["topology.kubernetes.io/zone"], "westeurope-2");
        assert_eq!(
            n.node["spec"]["taints"],
            json!([
                {"key": "tenant", "value": "acme", "effect": "NoSchedule"},
                {"key": "dedicated", "effect": "NoExecute"}
            ])
        );
        assert!(
            n.node.get("status").is_none(),
            "status goes to the subresource"
        );
        assert!(
            n.node["spec"]["providerID"]
                .as_str()
                .unwrap()
                .starts_with("azure:///subscriptions/s1/resourcegroups/mc_rg-aks_aks_westeurope/")
        );
        let status = &n.status["status"];
        assert_eq!(
            status["capacity"],
            json!({"cpu": "4", "memory": "16777216Ki", "pods": "110"})
        );
        // 4 cores: 140m reserved; 16 GiB: 2,250 MiB kube-reserved and 100 MiB eviction.
        assert_eq!(status["allocatable"]["cpu"], "3860m");
        assert_eq!(
            status["allocatable"]["memory"],
            format!("{}Ki", (16_384 - 2_350) * 1024)
        );
        let ready = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(status["nodeInfo"]["kubeletVersion"], "v1.33.2");
    }

    #[test]
    fn a_pool_without_zones_or_taints_or_count_has_one_plain_node() {
        let nodes = pool_nodes(
            &pool(json!({"vmSize": "Standard_B2s"})),
            &ArmBehaviour::default(),
        );
        assert_eq!(nodes.len(), 1);
        let labels = nodes[0].node["metadata"]["labels"].as_object().unwrap();
        assert!(!labels.contains_key("topology.kubernetes.io/zone"));
        assert!(nodes[0].node["spec"].get("taints").is_none());
        // 2 GiB for pods' share: B2s has 4 GiB, 25 % reserved, 100 MiB eviction threshold.
        assert_eq!(
            nodes[0].status["status"]["allocatable"]["memory"],
            format!("{}Ki", (4096 - 1024 - 100) * 1024)
        );
    }

    #[test]
    fn taints_parse_like_aks_writes_them() {
        assert_eq!(
            taint("sku=gpu:PreferNoSchedule"),
            Some(json!({"key": "sku", "value": "gpu", "effect": "PreferNoSchedule"}))
        );
        assert_eq!(taint("nokind"), None);
        assert_eq!(taint("a=b:Sometimes"), None);
        assert_eq!(taint("=b:NoSchedule"), None);
    }

    #[test]
    fn reservations_follow_the_aks_tables() {
        assert_eq!(reserved_cpu_millis(2), 100);
        assert_eq!(reserved_cpu_millis(48), 420);
        assert_eq!(allocatable_memory_mib(65_536, 110), 65_536 - 2_250 - 100);
    }
}
