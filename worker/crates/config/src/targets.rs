//! Checks of the `[targets.<name>]` sections: every provisioning target names its subscription,
//! cluster, storage, Entra tenants and ARM endpoint, and a usable credential. The types
//! themselves belong to `onboarding_providers` (re-exported from the crate root).
//!
//! May touch: nothing; pure validation.

use onboarding_providers::Target;

/// Every problem with target `name`, each naming the setting.
pub(crate) fn problems(name: &str, t: &Target) -> Vec<String> {
    let mut problems = Vec::new();
    let checks: [(&str, &str); 11] = [
        ("subscription_id", &t.subscription_id),
        ("resource_group", &t.resource_group),
        ("location", &t.location),
        ("cluster_resource_group", &t.cluster_resource_group),
        ("cluster_name", &t.cluster_name),
        ("oidc_issuer", &t.oidc_issuer),
        ("storage_resource_group", &t.storage_resource_group),
        ("storage_account", &t.storage_account),
        ("identity_entra_tenant_id", &t.identity_entra_tenant_id),
        ("cluster_entra_tenant_id", &t.cluster_entra_tenant_id),
        ("arm_endpoint", &t.arm_endpoint),
    ];
    for (field, value) in checks {
        if value.trim().is_empty() {
            problems.push(format!("targets.{name}.{field} is empty"));
        }
    }
    // What ARM and Entra would refuse later, said now, naming the setting.
    let guid = |v: &str| uuid::Uuid::parse_str(v).is_ok() && v.len() == 36;
    for (field, value) in [
        ("subscription_id", &t.subscription_id),
        ("identity_entra_tenant_id", &t.identity_entra_tenant_id),
        ("cluster_entra_tenant_id", &t.cluster_entra_tenant_id),
    ] {
        if !value.trim().is_empty() && !guid(value) {
            problems.push(format!(
                "targets.{name}.{field} {value:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
            ));
        }
    }
    let account_ok = (3..=24).contains(&t.storage_account.len())
        && t.storage_account
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !t.storage_account.is_empty() && !account_ok {
        problems.push(format!(
            "targets.{name}.storage_account {:?} is not a storage account name (3-24 lowercase letters and digits)",
            t.storage_account
        ));
    }
    for (field, value) in [
        ("resource_group", &t.resource_group),
        ("cluster_resource_group", &t.cluster_resource_group),
        ("storage_resource_group", &t.storage_resource_group),
    ] {
        let ok = value.len() <= 90
            && !value.ends_with('.')
            && value
                .chars()
                .all(|c| c.is_alphanumeric() || "-_.()".contains(c));
        if !value.is_empty() && !ok {
            problems.push(format!(
                "targets.{name}.{field} {value:?} is not a resource group name (up to 90 letters, digits, - _ . ( ), not ending in a dot)"
            ));
        }
    }
    let cluster_ok = t.cluster_name.len() <= 63
        && t.cluster_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !t.cluster_name.is_empty() && !cluster_ok {
        problems.push(format!(
            "targets.{name}.cluster_name {:?} is not an AKS cluster name (up to 63 letters, digits, - and _)",
            t.cluster_name
        ));
    }
    if !t.location.is_empty()
        && !t
            .location
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        problems.push(format!(
            "targets.{name}.location {:?} is not an Azure region name (lowercase, e.g. westeurope)",
            t.location
        ));
    }
    if let Ok(url) = url::Url::parse(&t.arm_endpoint) {
        let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            problems.push(format!(
                "targets.{name}.arm_endpoint {:?} must be https (plain http only on loopback, for the simulator)",
                t.arm_endpoint
            ));
        }
    }
    if !t.oidc_issuer.starts_with("https://") {
        problems.push(format!(
            "targets.{name}.oidc_issuer must be an https URL, got {:?}",
            t.oidc_issuer
        ));
    }
    if url::Url::parse(&t.arm_endpoint).is_err() {
        problems.push(format!(
            "targets.{name}.arm_endpoint is not a URL: {:?}",
            t.arm_endpoint
        ));
    }
    problems.extend(t.credential.problems(&format!("targets.{name}.credential")));
    problems
}
