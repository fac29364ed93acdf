//! `onboarding-verify`: reads a tenant's live state (ARM and Kubernetes, read-only) and compares
//! it with what the worker would build for the tenant's last accepted request, then proves the
//! tenant's isolation: SubjectAccessReviews against the real API server, the namespace's
//! RoleBindings, where its pods run, and who holds data roles on its blob container.
//!
//! The expected objects come from the same builders the saga steps use
//! (`onboarding_providers::manifests`, `rbac`, `arm_ids`), so a change there changes what verify
//! expects. The producer may not link the provider crates' write paths (`onboarding-azure`,
//! `onboarding-kube`; `tests/tests/architecture.rs` enforces it), so this crate has its own
//! GET-only ARM reader ([`arm::ArmReader`]) and builds its own `kube::Client` from the same target
//! settings; neither can write anything but SubjectAccessReviews, which change nothing.
//!
//! May touch: GETs to the target's ARM endpoint (with the target's credential), GET/LIST and
//! SubjectAccessReview creation on the target's API server. Nothing else; no environment reads.
//!
//! [`plan`] uses the same expected objects and checks to say what a request would do.
//!
//! Pure evaluation lives in `arm_checks`, `kube_checks`, `isolation` and `diff` (unit-tested);
//! `live` does the reads and calls them.

use serde::Serialize;
use serde_json::Value;

pub mod arm;
pub mod arm_checks;
pub mod diff;
pub mod expected;
pub mod isolation;
pub mod kube_checks;
pub mod live;
pub mod plan;
pub mod record;

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod tests;

pub use diff::Difference;
pub use expected::{Expected, OtherTenant, TenantInputs};
pub use live::{Live, Resources, read_resources, verify_tenant};
pub use plan::{Action, PlanItem, TenantPlan, plan_offboard, plan_onboard};
pub use record::{onboarding_of, others_of, verify_record};

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// Present, ours, and as the spec says; or the isolation property holds.
    Ok,
    /// Present and ours, but it differs from the spec (see `differences`).
    Drifted,
    /// Not there.
    Missing,
    /// There, without the worker's marker for this tenant.
    NotOurs,
    /// An isolation property does not hold.
    Violation,
    /// It could not be read (permissions, network): nothing is known.
    Error,
}

impl Status {
    pub fn symbol(self) -> &'static str {
        if self == Status::Ok { "✔" } else { "✘" }
    }
}

/// Whether a check is about one resource matching its spec, or about isolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Group {
    Resource,
    Isolation,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Stable name scripts can match: `node_pool`, `guardrail:NetworkPolicy/default-deny`,
    /// `isolation:pod-placement`, `isolation:access:admin-group:list nodes`...
    pub name: String,
    pub group: Group,
    pub status: Status,
    /// The resource looked at (an ARM id, `Kind/namespace/name`, a scope).
    pub resource: String,
    /// What was found, for people.
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<Difference>,
}

impl Check {
    pub fn ok(name: impl Into<String>, group: Group, resource: impl Into<String>) -> Self {
        Self::new(name, group, Status::Ok, resource, "as expected")
    }
    pub fn new(
        name: impl Into<String>,
        group: Group,
        status: Status,
        resource: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            group,
            status,
            resource: resource.into(),
            detail: detail.into(),
            differences: Vec::new(),
        }
    }
    /// `Ok` without differences, `Drifted` naming them otherwise.
    pub fn compared(
        name: impl Into<String>,
        resource: impl Into<String>,
        differences: Vec<Difference>,
    ) -> Self {
        let mut c = Self::ok(name, Group::Resource, resource);
        if !differences.is_empty() {
            c.status = Status::Drifted;
            c.detail = differences
                .iter()
                .map(Difference::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            c.differences = differences;
        }
        c
    }
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// Everything verify found about one tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantReport {
    pub tenant_id: String,
    pub target: String,
    /// Whether the body of the last accepted request was known (from the journal): without it,
    /// what only the request says (VM size, node count, quota, admin group id, replicas) is taken
    /// as found and not compared.
    pub spec_known: bool,
    pub clean: bool,
    pub checks: Vec<Check>,
    /// What the live state says about the request-specific values, for `--repair` when the
    /// journal holds no request body.
    #[serde(skip_serializing_if = "Value::is_null")]
    pub observed: Value,
}

impl TenantReport {
    pub fn new(tenant_id: &str, target: &str, spec_known: bool, checks: Vec<Check>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            target: target.into(),
            spec_known,
            clean: checks.iter().all(Check::is_ok),
            checks,
            observed: Value::Null,
        }
    }

    /// A line per check: `✔/✘ name — detail`.
    pub fn render(&self) -> String {
        let mut s = format!(
            "tenant {} (target {}): {}\n",
            self.tenant_id,
            self.target,
            if self.clean {
                "clean"
            } else {
                "DRIFT OR VIOLATION"
            }
        );
        if !self.spec_known {
            s.push_str("  (the journal holds no request body: VM size, node count, quota, admin group and replicas are taken as found)\n");
        }
        for c in &self.checks {
            s.push_str(&format!(
                "  {} {} — {}\n",
                c.status.symbol(),
                c.name,
                c.detail
            ));
        }
        s.trim_end().to_string()
    }
}

/// Verify could not even start for a tenant.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("target {target}: {message}")]
    Setup { target: String, message: String },
}
