//! The Azure side, judged from the JSON ARM answered: the node pool (taint, label, size, count,
//! marker), the identity, its federated credential (issuer, subject, audience), the blob
//! container (marker, private), the tenant's role assignment (principal, role, scope, exact ABAC
//! condition) and, for isolation, who else holds a blob data role on the container.
//!
//! May touch: nothing; pure functions of expected and live documents.

use onboarding_providers::manifests::FIELD_MANAGER;
use onboarding_providers::rbac::role_definition_guid;
use serde_json::{Value, json};

use crate::diff::{Difference, subset};
use crate::expected::{Expected, OtherTenant};
use crate::{Check, Group, Status};

/// The worker's ARM marker (`onboarding_azure::{MANAGED_BY_TAG, TENANT_TAG}`), and its form in a
/// container's metadata (`CONTAINER_MANAGED_BY_KEY`: metadata names cannot hold a hyphen).
pub const MANAGED_BY_TAG: &str = "managed-by";
pub const TENANT_TAG: &str = "tenant";
pub const CONTAINER_MANAGED_BY_KEY: &str = "managed_by";

/// Built-in roles that grant blob data access: Storage Blob Data Owner, Contributor, Reader.
pub const BLOB_DATA_ROLES: [(&str, &str); 3] = [
    (
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        "Storage Blob Data Owner",
    ),
    (
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        "Storage Blob Data Contributor",
    ),
    (
        "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
        "Storage Blob Data Reader",
    ),
];

/// `None` when `marks` carry the worker's marker for the tenant, else who they name.
fn foreign(marks: &Value, managed_key: &str, tenant: &str) -> Option<String> {
    let m = |k: &str| marks.get(k).and_then(Value::as_str);
    match (m(managed_key), m(TENANT_TAG)) {
        (Some(FIELD_MANAGER), Some(t)) if t == tenant => None,
        (manager, owner) => Some(format!(
            "it lacks the worker's marker {managed_key}={FIELD_MANAGER}, {TENANT_TAG}={tenant} (found {managed_key}={}, {TENANT_TAG}={})",
            manager.unwrap_or("-"),
            owner.unwrap_or("-")
        )),
    }
}

fn missing(name: &str, resource: &str) -> Check {
    Check::new(
        name,
        Group::Resource,
        Status::Missing,
        resource,
        "not found",
    )
}

fn sorted_strings(v: &Value) -> Value {
    let mut items: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    items.sort();
    json!(items)
}

pub fn node_pool(exp: &Expected, id: &str, live: Option<&Value>) -> Check {
    let Some(live) = live else {
        return missing("node_pool", id);
    };
    let p = &live["properties"];
    if let Some(who) = foreign(&p["tags"], MANAGED_BY_TAG, &exp.names.tenant_id) {
        return Check::new("node_pool", Group::Resource, Status::NotOurs, id, who);
    }
    let spec = &exp.node_pool;
    let mut want = json!({
        "mode": "User",
        "nodeLabels": spec.labels,
    });
    let mut diffs = subset(&want, p, "properties");
    let taints = sorted_strings(&json!(spec.taints));
    let live_taints = sorted_strings(&p["nodeTaints"]);
    if taints != live_taints {
        diffs.push(Difference {
            path: "properties.nodeTaints".into(),
            expected: taints,
            found: live_taints,
        });
    }
    if exp.request_known {
        let live_size = p["vmSize"].as_str().unwrap_or_default();
        if !live_size.eq_ignore_ascii_case(&spec.vm_size) {
            diffs.push(Difference {
                path: "properties.vmSize".into(),
                expected: json!(spec.vm_size),
                found: p["vmSize"].clone(),
            });
        }
        want = match spec.scale {
            onboarding_providers::NodePoolScale::Fixed { count } => {
                json!({"count": count, "enableAutoScaling": p["enableAutoScaling"].as_bool().filter(|a| *a).map_or(json!(null), |_| json!(false))})
            }
            onboarding_providers::NodePoolScale::Autoscale { min, max } => {
                json!({"enableAutoScaling": true, "minCount": min, "maxCount": max})
            }
        };
        diffs.extend(subset(&want, p, "properties"));
        let zones = sorted_strings(&json!(spec.zones));
        let live_zones = sorted_strings(&p["availabilityZones"]);
        if zones != live_zones {
            diffs.push(Difference {
                path: "properties.availabilityZones".into(),
                expected: zones,
                found: live_zones,
            });
        }
    }
    Check::compared("node_pool", id, diffs)
}

pub fn identity(exp: &Expected, id: &str, live: Option<&Value>) -> Check {
    let Some(live) = live else {
        return missing("identity", id);
    };
    if let Some(who) = foreign(&live["tags"], MANAGED_BY_TAG, &exp.names.tenant_id) {
        return Check::new("identity", Group::Resource, Status::NotOurs, id, who);
    }
    // The ids the journal recorded are what the service account and role assignment name.
    let want = json!({"principalId": exp.principal_id, "clientId": exp.client_id});
    Check::compared(
        "identity",
        id,
        subset(&want, &live["properties"], "properties"),
    )
}

pub fn federated_credential(exp: &Expected, id: &str, live: Option<&Value>) -> Check {
    let Some(live) = live else {
        return missing("federated_credential", id);
    };
    let f = &exp.federated_credential;
    let want = json!({"issuer": f.issuer, "subject": f.subject, "audiences": f.audiences});
    Check::compared(
        "federated_credential",
        id,
        subset(&want, &live["properties"], "properties"),
    )
}

/// Isolation: the only subject that can sign in as the tenant's identity is its ServiceAccount.
pub fn federated_subject(exp: &Expected, id: &str, live: Option<&Value>) -> Check {
    let name = "isolation:federated-subject";
    let want = exp.federated_credential.subject.as_str();
    match live.and_then(|l| l["properties"]["subject"].as_str()) {
        Some(s) if s == want => Check::new(
            name,
            Group::Isolation,
            Status::Ok,
            id,
            format!("only {want} can sign in as the tenant's identity"),
        ),
        Some(s) => Check::new(
            name,
            Group::Isolation,
            Status::Violation,
            id,
            format!("{s} can sign in as the tenant's identity (expected exactly {want})"),
        ),
        None => Check::new(
            name,
            Group::Isolation,
            Status::Missing,
            id,
            "no federated credential",
        ),
    }
}

pub fn blob_container(exp: &Expected, id: &str, live: Option<&Value>) -> Check {
    let Some(live) = live else {
        return missing("blob_container", id);
    };
    let p = &live["properties"];
    if let Some(who) = foreign(
        &p["metadata"],
        CONTAINER_MANAGED_BY_KEY,
        &exp.names.tenant_id,
    ) {
        return Check::new("blob_container", Group::Resource, Status::NotOurs, id, who);
    }
    Check::compared(
        "blob_container",
        id,
        subset(&json!({"publicAccess": "None"}), p, "properties"),
    )
}

fn guid(v: &Value) -> String {
    role_definition_guid(v.as_str().unwrap_or_default()).to_ascii_lowercase()
}

/// The tenant's role assignment among those ARM lists at the container scope.
pub fn role_assignment(exp: &Expected, scope: &str, assignments: &[Value]) -> Check {
    let name = "role_assignment";
    let Some(spec) = &exp.role_assignment else {
        return Check::new(
            name,
            Group::Resource,
            Status::Error,
            scope,
            "the journal records no identity principal id: nothing to compare with",
        );
    };
    let Some(live) = assignments.iter().find(|a| {
        a["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(&spec.name))
    }) else {
        return missing(
            name,
            &format!(
                "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
                spec.name
            ),
        );
    };
    let p = &live["properties"];
    let id = live["id"].as_str().unwrap_or(scope).to_string();
    let mut diffs = Vec::new();
    let mut differs = |path: &str, expected: Value, found: &Value, same: bool| {
        if !same {
            diffs.push(Difference {
                path: format!("properties.{path}"),
                expected,
                found: found.clone(),
            });
        }
    };
    let principal = p["principalId"].as_str().unwrap_or_default();
    differs(
        "principalId",
        json!(spec.principal_id),
        &p["principalId"],
        principal.eq_ignore_ascii_case(&spec.principal_id),
    );
    let role = role_definition_guid(&spec.role_definition_id).to_ascii_lowercase();
    differs(
        "roleDefinitionId",
        json!(spec.role_definition_id),
        &p["roleDefinitionId"],
        guid(&p["roleDefinitionId"]) == role,
    );
    let live_scope = p["scope"].as_str().unwrap_or(scope).trim_end_matches('/');
    differs(
        "scope",
        json!(spec.scope),
        &p["scope"],
        live_scope.eq_ignore_ascii_case(spec.scope.trim_end_matches('/')),
    );
    // Exactly the condition the worker writes: any edit, even one that looks harmless, is drift.
    differs(
        "condition",
        json!(spec.condition),
        &p["condition"],
        p["condition"].as_str() == Some(spec.condition.as_str()),
    );
    differs(
        "conditionVersion",
        json!(spec.condition_version),
        &p["conditionVersion"],
        p["conditionVersion"].as_str() == Some(spec.condition_version.as_str()),
    );
    Check::compared(name, id, diffs)
}

/// Isolation: on the container scope (assigned there or inherited from above), only the
/// tenant's identity holds a blob data role, through the worker's assignment.
pub fn container_data_roles(
    exp: &Expected,
    scope: &str,
    assignments: &[Value],
    others: &[OtherTenant],
) -> Check {
    let name = "isolation:container-data-roles";
    let ours = exp
        .role_assignment
        .as_ref()
        .map(|s| s.name.to_ascii_lowercase());
    let mut foreign = Vec::new();
    for a in assignments {
        let role = guid(&a["properties"]["roleDefinitionId"]);
        let Some((_, role_name)) = BLOB_DATA_ROLES.iter().find(|(g, _)| *g == role) else {
            continue;
        };
        let a_name = a["name"].as_str().unwrap_or_default().to_ascii_lowercase();
        if ours.as_deref() == Some(a_name.as_str()) {
            continue;
        }
        let principal = a["properties"]["principalId"].as_str().unwrap_or("?");
        let whose = others
            .iter()
            .find(|o| {
                o.principal_id
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case(principal))
            })
            .map_or_else(
                || {
                    if exp
                        .principal_id
                        .as_deref()
                        .is_some_and(|p| p.eq_ignore_ascii_case(principal))
                    {
                        "the tenant's own identity, through an assignment the worker did not make"
                            .to_string()
                    } else {
                        "a principal that is no tenant's identity".to_string()
                    }
                },
                |o| format!("tenant {}'s identity", o.tenant_id),
            );
        foreign.push(format!(
            "{role_name} for principal {principal} ({whose}) at {}",
            a["properties"]["scope"].as_str().unwrap_or(scope)
        ));
    }
    if foreign.is_empty() {
        Check::new(
            name,
            Group::Isolation,
            Status::Ok,
            scope,
            "only the tenant's identity holds a blob data role, with the worker's condition",
        )
    } else {
        Check::new(
            name,
            Group::Isolation,
            Status::Violation,
            scope,
            foreign.join("; "),
        )
    }
}
