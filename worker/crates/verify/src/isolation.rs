//! The Kubernetes isolation proof, judged from what the API server answered: which access
//! probes (SubjectAccessReviews) the tenant's subjects must pass and fail, which RoleBinding
//! subjects of the namespace are outside the tenant, and which of its pods run off its pool.
//!
//! The tenant's ServiceAccount holds no Kubernetes API rights at all by design (its token is not
//! even mounted; the workload identity webhook projects its own), so it is only probed for
//! refusals; the admin group must be allowed in its namespace and refused elsewhere.
//!
//! May touch: nothing; pure functions.

use std::collections::BTreeMap;

use onboarding_providers::manifests::TENANT_LABEL;
use serde_json::Value;

use crate::expected::Expected;
use crate::{Check, Group, Status};

/// One access question for the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `service-account` or `admin-group`.
    pub who: &'static str,
    pub user: String,
    pub groups: Vec<String>,
    pub verb: &'static str,
    /// `(api group, resource)`.
    pub resource: (&'static str, &'static str),
    /// `None`: cluster scope.
    pub namespace: Option<String>,
    pub expect_allowed: bool,
}

impl Probe {
    pub fn check_name(&self) -> String {
        let where_ = self.namespace.as_deref().unwrap_or("cluster");
        format!(
            "isolation:access:{}:{} {} in {where_}",
            self.who, self.verb, self.resource.1
        )
    }
}

/// Synthetic user name for the admin group's probes: membership is what is being asked about.
pub const ADMIN_PROBE_USER: &str = "tenant-onboarding-verify:admin-group-member";

/// The probes for a tenant, given other tenants' namespaces.
pub fn probes(
    exp: &Expected,
    admin_group: Option<&str>,
    other_namespaces: &[String],
) -> Vec<Probe> {
    let ns = &exp.names.namespace;
    let sa = (
        "service-account",
        format!("system:serviceaccount:{ns}:{}", exp.names.service_account),
        vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".to_string(),
        ],
    );
    let mut subjects = vec![sa];
    if let Some(g) = admin_group.filter(|g| !g.is_empty()) {
        subjects.push((
            "admin-group",
            ADMIN_PROBE_USER.to_string(),
            vec![g.to_string(), "system:authenticated".to_string()],
        ));
    }
    let mut out = Vec::new();
    for (who, user, groups) in subjects {
        let probe = |verb, resource, namespace: Option<&str>, expect_allowed| Probe {
            who,
            user: user.clone(),
            groups: groups.clone(),
            verb,
            resource,
            namespace: namespace.map(str::to_string),
            expect_allowed,
        };
        let admin = who == "admin-group";
        if admin {
            out.push(probe("get", ("", "pods"), Some(ns), true));
            out.push(probe("create", ("", "configmaps"), Some(ns), true));
        }
        for other in other_namespaces {
            out.push(probe("get", ("", "pods"), Some(other), false));
            out.push(probe("create", ("", "configmaps"), Some(other), false));
        }
        out.push(probe("list", ("", "namespaces"), None, false));
        out.push(probe("list", ("", "nodes"), None, false));
        out.push(probe("get", ("", "secrets"), Some("kube-system"), false));
        out.push(probe(
            "create",
            ("rbac.authorization.k8s.io", "rolebindings"),
            Some(ns),
            false,
        ));
    }
    out
}

/// What the API server answered for `probe`.
pub fn probe_check(probe: &Probe, answer: Result<bool, String>) -> Check {
    let name = probe.check_name();
    let resource = format!("{} as {}", probe.resource.1, probe.user);
    match answer {
        Err(e) => Check::new(name, Group::Isolation, Status::Error, resource, e),
        Ok(allowed) if allowed == probe.expect_allowed => Check::new(
            name,
            Group::Isolation,
            Status::Ok,
            resource,
            if allowed { "allowed" } else { "refused" },
        ),
        Ok(allowed) => Check::new(
            name,
            Group::Isolation,
            Status::Violation,
            resource,
            if allowed {
                "ALLOWED, and it must be refused"
            } else {
                "refused, and the tenant's admins need it"
            },
        ),
    }
}

/// Isolation: every RoleBinding subject in the namespace is the tenant's (its admin group, or a
/// ServiceAccount of its own namespace).
pub fn role_bindings(exp: &Expected, admin_group: Option<&str>, bindings: &[Value]) -> Check {
    let ns = &exp.names.namespace;
    let mut outside = Vec::new();
    for b in bindings {
        let bname = b["metadata"]["name"].as_str().unwrap_or("?");
        for s in b["subjects"].as_array().into_iter().flatten() {
            let kind = s["kind"].as_str().unwrap_or("?");
            let name = s["name"].as_str().unwrap_or("?");
            let tenants = match kind {
                "Group" => admin_group.is_some_and(|g| g == name),
                "ServiceAccount" => s["namespace"].as_str().unwrap_or(ns) == ns,
                _ => false,
            };
            if !tenants {
                outside.push(format!(
                    "RoleBinding {bname} grants {} to {kind} {name}",
                    b["roleRef"]["name"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    if outside.is_empty() {
        Check::new(
            "isolation:rolebindings",
            Group::Isolation,
            Status::Ok,
            format!("RoleBindings in {ns}"),
            format!("{} binding(s), every subject the tenant's", bindings.len()),
        )
    } else {
        Check::new(
            "isolation:rolebindings",
            Group::Isolation,
            Status::Violation,
            format!("RoleBindings in {ns}"),
            outside.join("; "),
        )
    }
}

/// Whether a node is one of the tenant's pool: its `tenant` label and its `tenant` taint.
fn tenant_node(tenant: &str, node: &Value) -> Result<(), String> {
    if node["metadata"]["labels"][TENANT_LABEL].as_str() != Some(tenant) {
        return Err(format!(
            "label {TENANT_LABEL}={}",
            node["metadata"]["labels"][TENANT_LABEL]
                .as_str()
                .unwrap_or("(none)")
        ));
    }
    let tainted = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| {
            t["key"] == TENANT_LABEL
                && t["value"].as_str() == Some(tenant)
                && t["effect"] == "NoSchedule"
        });
    if !tainted {
        return Err(format!("no taint {TENANT_LABEL}={tenant}:NoSchedule"));
    }
    Ok(())
}

/// Isolation: every scheduled pod of the namespace runs on a node of the tenant's pool.
pub fn pod_placement(exp: &Expected, pods: &[Value], nodes: &BTreeMap<String, Value>) -> Check {
    let tenant = &exp.names.tenant_id;
    let mut off = Vec::new();
    let mut placed = 0;
    for pod in pods {
        let Some(node) = pod["spec"]["nodeName"].as_str() else {
            continue;
        };
        placed += 1;
        let pname = pod["metadata"]["name"].as_str().unwrap_or("?");
        let verdict = nodes
            .get(node)
            .map_or_else(|| Err("not found".to_string()), |n| tenant_node(tenant, n));
        if let Err(why) = verdict {
            off.push(format!(
                "pod {pname} runs on node {node}, which is not of the tenant's pool ({why})"
            ));
        }
    }
    let resource = format!("pods in {}", exp.names.namespace);
    if off.is_empty() {
        Check::new(
            "isolation:pod-placement",
            Group::Isolation,
            Status::Ok,
            resource,
            format!("{placed} scheduled pod(s), all on the tenant's nodes"),
        )
    } else {
        Check::new(
            "isolation:pod-placement",
            Group::Isolation,
            Status::Violation,
            resource,
            off.join("; "),
        )
    }
}
