//! The Kubernetes side, judged from the objects the API server returned: the namespace (labels,
//! Pod Security level), the ServiceAccount (annotations), each guard rail (the admin binding's
//! subjects among them) and the Deployment's placement, each compared with the manifest the
//! worker applies (`onboarding_providers::manifests`).
//!
//! May touch: nothing; pure functions of expected and live documents.

use onboarding_providers::KubeObject;
use onboarding_providers::manifests::{FIELD_MANAGER, MANAGED_BY_LABEL};
use serde_json::{Value, json};

use crate::diff::{forget, subset};
use crate::{Check, Group, Status};

/// The name of an object's check: `namespace`, `service_account`, `workload`, or
/// `guardrail:<Kind>/<name>` for a guard rail.
pub fn check_name(object: &KubeObject) -> String {
    match object.kind.as_str() {
        "Namespace" => "namespace".into(),
        "ServiceAccount" => "service_account".into(),
        "Deployment" => "workload".into(),
        kind => format!("guardrail:{kind}/{}", object.name),
    }
}

/// What of `object`'s manifest is compared: all of it except what only the request says when
/// its body is unknown (the quota's amounts, the replicas, the admin group's id).
pub fn comparable(object: &KubeObject, request_known: bool) -> Value {
    let mut want = object.manifest.clone();
    if !request_known {
        match object.kind.as_str() {
            "ResourceQuota" => forget(&mut want, "spec.hard"),
            "Deployment" => forget(&mut want, "spec.replicas"),
            "RoleBinding" => {
                if let Some(subjects) = want.get_mut("subjects").and_then(Value::as_array_mut) {
                    for s in subjects {
                        forget(s, "name");
                    }
                }
            }
            _ => {}
        }
    }
    want
}

/// One object: missing, not the worker's for this tenant, drifted, or as the manifest says.
pub fn object(expected: &KubeObject, request_known: bool, live: Option<&Value>) -> Check {
    let name = check_name(expected);
    let resource = expected.reference().to_string();
    let Some(live) = live else {
        return Check::new(
            name,
            Group::Resource,
            Status::Missing,
            resource,
            "not found",
        );
    };
    // An object without the worker's manager label is not ours at all; a changed tenant label
    // on our own object is drift, reported by the comparison below.
    let manager = &live["metadata"]["labels"][MANAGED_BY_LABEL];
    if manager.as_str() != Some(FIELD_MANAGER) {
        return Check::new(
            name,
            Group::Resource,
            Status::NotOurs,
            resource,
            format!(
                "it lacks the worker's label {MANAGED_BY_LABEL}={FIELD_MANAGER} (found {manager})"
            ),
        );
    }
    let want = comparable(expected, request_known);
    let mut diffs = subset(&want["metadata"], &live["metadata"], "metadata");
    for (k, v) in want.as_object().into_iter().flatten() {
        if !matches!(k.as_str(), "metadata" | "apiVersion" | "kind") {
            diffs.extend(subset(v, &live[k], k));
        }
    }
    let mut check = Check::compared(name, resource, diffs);
    if check.is_ok() && expected.kind == "Namespace" {
        check.detail = format!(
            "labels as expected, Pod Security {}",
            live["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        );
    }
    check
}

/// The request-specific values the live objects hold: the quota, the admin group, replicas.
pub fn observed(
    quota: Option<&Value>,
    binding: Option<&Value>,
    deployment: Option<&Value>,
) -> Value {
    let hard = quota.map(|q| &q["spec"]["hard"]);
    json!({
        "quota": hard.map(|h| json!({
            "cpu": h["requests.cpu"], "memory": h["requests.memory"], "pods": h["pods"],
        })),
        "adminGroupId": binding.and_then(|b| b["subjects"].as_array())
            .and_then(|s| s.iter().find(|s| s["kind"] == "Group"))
            .map(|s| s["name"].clone()),
        "replicas": deployment.map(|d| d["spec"]["replicas"].clone()),
    })
}
