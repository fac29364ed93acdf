//! Deterministic resource names derived from a tenant id, within each resource's limits.
//!
//! Every name a step uses comes from here, so that a retry, a crash-restart or a second worker
//! computes exactly the same names (idempotency), and so that nothing but a validated tenant id
//! reaches an ARM path, a Kubernetes object or an ABAC condition. Where a limit forces hashing
//! (AKS Linux pool names: 1-12 characters), two tenants could in principle meet on one name;
//! [`TenantNames::exclusive`] lists the names to register in the journal, which refuses a name
//! already owned by another tenant instead of letting two tenants share a resource.

use uuid::Uuid;

/// Service account every tenant's workload runs as, inside the tenant's namespace.
pub const SERVICE_ACCOUNT: &str = "tenant-workload";
/// The token audience Entra expects for workload identity federation.
pub const FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} name {value:?} is not valid: {reason}")]
pub struct NameError {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// All names of one tenant's resources.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TenantNames {
    pub tenant_id: String,
    /// DNS-1123 label: `tenant-<id>`.
    pub namespace: String,
    pub service_account: String,
    /// AKS Linux pool: 1-12 lowercase alphanumerics starting with a letter.
    pub node_pool: String,
    /// User-assigned identity: `id-tenant-<id>`.
    pub identity: String,
    pub federated_credential: String,
    /// Blob container: `tenant-<id>` (3-63, lowercase alphanumerics and single hyphens).
    pub blob_container: String,
}

impl TenantNames {
    pub fn derive(tenant_id: &str) -> Result<Self, NameError> {
        validate_tenant_id(tenant_id)?;
        let names = Self {
            tenant_id: tenant_id.to_string(),
            namespace: format!("tenant-{tenant_id}"),
            service_account: SERVICE_ACCOUNT.to_string(),
            node_pool: node_pool_name(tenant_id),
            identity: format!("id-tenant-{tenant_id}"),
            federated_credential: format!("fic-tenant-{tenant_id}"),
            blob_container: format!("tenant-{tenant_id}"),
        };
        // Defence in depth: each derived name must meet its own resource's rules.
        validate_dns_label("namespace", &names.namespace)?;
        validate_node_pool(&names.node_pool)?;
        validate_container(&names.blob_container)?;
        Ok(names)
    }

    /// `system:serviceaccount:<ns>:<sa>`, the subject of the federated credential.
    pub fn federated_subject(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }

    /// The derived names that must belong to this tenant alone: (kind, name) pairs, to be
    /// registered per target so two tenants can never share a resource.
    pub fn exclusive(&self) -> [(&'static str, &str); 4] {
        [
            ("node_pool", &self.node_pool),
            ("namespace", &self.namespace),
            ("identity", &self.identity),
            ("blob_container", &self.blob_container),
        ]
    }
}

/// Why a (well-formed) tenant id may not be used: its namespace would be one the worker must
/// never touch (`reserved`: the worker's own namespace and the configured list), or the id
/// names what Kubernetes reserves (`default`, `kube-*`). `None` when it is free to use.
pub fn reserved_tenant_id(
    id: &str,
    reserved: &std::collections::BTreeSet<String>,
) -> Option<String> {
    let namespace = format!("tenant-{id}");
    if reserved.contains(&namespace) {
        return Some(format!(
            "tenant id {id:?} is reserved: its namespace {namespace:?} belongs to the platform (the worker's own or the configured worker.reserved_namespaces); choose another tenant id"
        ));
    }
    if id == "default" || id.starts_with("kube-") || id == "kube" {
        return Some(format!(
            "tenant id {id:?} is reserved: `default` and `kube-*` name what Kubernetes itself owns; choose another tenant id"
        ));
    }
    None
}

/// Tenant ids: 3-40 lowercase ASCII alphanumerics and single hyphens, starting and ending with
/// an alphanumeric (so every derived name is a DNS-1123 label and a valid container name).
pub fn validate_tenant_id(id: &str) -> Result<(), NameError> {
    let err = |reason| NameError {
        kind: "tenant id",
        value: id.chars().take(80).collect(),
        reason,
    };
    if !(3..=40).contains(&id.len()) {
        return Err(err("must be 3 to 40 characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(err(
            "may contain only lowercase ASCII letters, digits and hyphens",
        ));
    }
    if id.starts_with('-') || id.ends_with('-') {
        return Err(err("must start and end with a letter or digit"));
    }
    if id.contains("--") {
        return Err(err("must not contain consecutive hyphens"));
    }
    Ok(())
}

fn validate_dns_label(kind: &'static str, v: &str) -> Result<(), NameError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(NameError {
            kind,
            value: v.into(),
            reason: "must be a DNS-1123 label",
        })
    }
}

fn validate_node_pool(v: &str) -> Result<(), NameError> {
    let ok = (1..=12).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_lowercase())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(NameError {
            kind: "node pool",
            value: v.into(),
            reason: "must be 1-12 lowercase alphanumerics starting with a letter",
        })
    }
}

/// Blob container names: 3-63 characters, lowercase letters, digits and single hyphens,
/// starting and ending with a letter or digit.
pub fn validate_container(v: &str) -> Result<(), NameError> {
    let ok = (3..=63).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-')
        && !v.contains("--");
    if ok {
        Ok(())
    } else {
        Err(NameError {
            kind: "blob container",
            value: v.chars().take(80).collect(),
            reason: "must be 3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit",
        })
    }
}

/// `t` + up to four alphanumerics of the tenant id + seven base-36 characters of a hash of the
/// whole id. Always hashed, so that a short id and a long id can never produce the same name by
/// one being spelt out and the other hashed.
fn node_pool_name(tenant_id: &str) -> String {
    let prefix: String = tenant_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(4)
        .collect();
    let hash = Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("urn:tenant-onboarding:node-pool:{tenant_id}").as_bytes(),
    );
    let mut n = hash.as_u128();
    let mut suffix = String::with_capacity(7);
    for _ in 0..7 {
        let d = (n % 36) as u32;
        n /= 36;
        suffix.push(char::from_digit(d, 36).unwrap_or('0'));
    }
    format!("t{prefix}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_within_limits() {
        let a = TenantNames::derive("acme-corp").expect("valid");
        assert_eq!(a, TenantNames::derive("acme-corp").expect("valid"));
        assert_eq!(a.namespace, "tenant-acme-corp");
        assert_eq!(a.blob_container, "tenant-acme-corp");
        assert!(a.node_pool.len() <= 12 && a.node_pool.starts_with("tacme"));
        assert_eq!(
            a.federated_subject(),
            "system:serviceaccount:tenant-acme-corp:tenant-workload"
        );
    }

    #[test]
    fn the_longest_tenant_id_still_gives_valid_names() {
        let id = "a".repeat(40);
        let n = TenantNames::derive(&id).expect("valid");
        assert!(n.namespace.len() <= 63);
        assert!(n.node_pool.len() <= 12);
    }

    #[test]
    fn tenants_that_share_a_prefix_get_different_node_pools() {
        let a = TenantNames::derive("acme-one").expect("valid").node_pool;
        let b = TenantNames::derive("acme-two").expect("valid").node_pool;
        assert_ne!(a, b);
        let pools: std::collections::HashSet<_> = (0..20_000)
            .map(|i| node_pool_name(&format!("tenant-{i}")))
            .collect();
        assert_eq!(pools.len(), 20_000, "hash suffix collided within 20k ids");
    }

    #[test]
    fn hostile_tenant_ids_are_refused() {
        for bad in [
            "",
            "ab",
            "-abc",
            "abc-",
            "a--b",
            "ABC",
            "a_b",
            "a.b",
            "a/b",
            "a'b",
            "ä-corp",
            "abc\n",
            "tenant\u{200b}x",
            &"a".repeat(41),
        ] {
            assert!(validate_tenant_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tenant_ids_that_land_on_reserved_names_are_refused() {
        let reserved = std::collections::BTreeSet::from(["tenant-onboarding".to_string()]);
        for id in ["onboarding", "default", "kube-system", "kube-public"] {
            assert!(reserved_tenant_id(id, &reserved).is_some(), "{id} accepted");
        }
        for id in ["acme", "kubelet-fans", "defaults"] {
            assert_eq!(reserved_tenant_id(id, &reserved), None, "{id}");
        }
    }
}
