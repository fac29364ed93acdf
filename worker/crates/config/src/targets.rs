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
