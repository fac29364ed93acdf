//! What a request would do to a tenant, read from the live state and changing nothing: for an
//! onboarding (or update), each resource the saga would build compared with what exists
//! (`create`, `change` with each field's old and new value, `unchanged`, `refuse` when it exists
//! without the worker's marker), plus `remove` for what the tenant has that the new spec leaves
//! out (the admin binding, the Deployment); for an offboarding, `remove` for each resource that
//! is the worker's, and `keep` for the blob container unless the data is purged.
//!
//! The expected objects are the ones verify compares with ([`Expected`]), built from the request
//! instead of the record's spec, and judged by the same checks ([`read_resources`]); a check's
//! status maps onto a verb ([`action_of`]).
//!
//! May touch: what [`Live`] reads (GETs on ARM and the API server); nothing is written.

use std::collections::BTreeMap;

use onboarding_contract::OnboardTenant;
use onboarding_contract::commands::WorkloadRequest;
use onboarding_providers::manifests::{FIELD_MANAGER, MANAGED_BY_LABEL};
use onboarding_providers::{KubeObject, arm_ids};
use serde::Serialize;
use serde_json::{Value, json};

use crate::arm::api;
use crate::expected::{Expected, TenantInputs};
use crate::kube_checks::check_name;
use crate::live::{Live, read_resources};
use crate::{Check, Group, Status, arm_checks};

/// What the request would do to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// It does not exist: the saga creates it.
    Create,
    /// It is the worker's and differs: the saga updates the fields listed.
    Change,
    /// It is the worker's and as the request asks: nothing happens to it.
    Unchanged,
    /// It exists without the worker's marker: the saga stops there (ResourceNotOwned).
    Refuse,
    /// The saga deletes it.
    Remove,
    /// An offboarding leaves it in place (the blob container, without `--purge-data`).
    Keep,
    /// It could not be read: what would happen is not known.
    Unknown,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Change => "~",
            Action::Unchanged => "=",
            Action::Refuse => "!",
            Action::Remove => "-",
            Action::Keep => "·",
            Action::Unknown => "?",
        }
    }
}

/// One field a `change` would set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// Dotted path, as in verify's differences: `properties.count`.
    pub path: String,
    /// What the live resource holds (`null` when absent).
    pub old: Value,
    /// What the request makes it.
    pub new: Value,
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanItem {
    /// The check's name in `producer verify`: `node_pool`, `guardrail:NetworkPolicy/default-deny`.
    pub name: String,
    pub action: Action,
    pub resource: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
}

/// Everything a request would do to one tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantPlan {
    pub tenant_id: String,
    pub target: String,
    /// `onboard` or `offboard`.
    pub kind: String,
    pub items: Vec<PlanItem>,
    /// How many items per action.
    pub summary: BTreeMap<String, usize>,
}

impl TenantPlan {
    pub fn new(tenant_id: &str, target: &str, kind: &str, items: Vec<PlanItem>) -> Self {
        let mut summary = BTreeMap::new();
        for i in &items {
            let key = serde_json::to_value(i.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *summary.entry(key).or_insert(0) += 1;
        }
        Self {
            tenant_id: tenant_id.into(),
            target: target.into(),
            kind: kind.into(),
            items,
            summary,
        }
    }

    /// Whether nothing would happen: every item unchanged (or kept).
    pub fn is_noop(&self) -> bool {
        self.items
            .iter()
            .all(|i| matches!(i.action, Action::Unchanged | Action::Keep))
    }

    /// A line per item, `~ node_pool  change  properties.count: 1 → 2`.
    pub fn render(&self) -> String {
        let mut s = format!(
            "plan for tenant {} (target {}), {}:\n",
            self.tenant_id, self.target, self.kind
        );
        let width = self.items.iter().map(|i| i.name.len()).max().unwrap_or(0);
        for i in &self.items {
            let verb = serde_json::to_value(i.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            s.push_str(&format!(
                "  {} {:<width$}  {:<9} {}\n",
                i.action.symbol(),
                i.name,
                verb,
                i.detail
            ));
            for c in &i.changes {
                s.push_str(&format!("      {}: {} → {}\n", c.path, c.old, c.new));
            }
        }
        let counts: Vec<String> = self
            .summary
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        s.push_str(&format!("  ({})", counts.join(", ")));
        s
    }
}

/// The verb a resource check of an onboarding plan maps to.
pub fn action_of(check: &Check) -> Action {
    match check.status {
        Status::Ok => Action::Unchanged,
        Status::Drifted => Action::Change,
        Status::Missing => Action::Create,
        Status::NotOurs => Action::Refuse,
        Status::Violation | Status::Error => Action::Unknown,
    }
}

/// An onboarding plan's line for one resource check.
pub fn onboard_item(check: &Check) -> PlanItem {
    let action = action_of(check);
    let detail = match action {
        Action::Create => "not found: created".to_string(),
        Action::Unchanged => "as asked".to_string(),
        Action::Change => format!("{} field(s) updated", check.differences.len()),
        Action::Refuse => format!(
            "exists and is not the worker's: the saga fails ({})",
            check.detail
        ),
        _ => check.detail.clone(),
    };
    PlanItem {
        name: check.name.clone(),
        action,
        resource: check.resource.clone(),
        detail,
        changes: check
            .differences
            .iter()
            .map(|d| FieldChange {
                path: d.path.clone(),
                old: d.found.clone(),
                new: d.expected.clone(),
            })
            .collect(),
    }
}

/// An offboarding plan's line for one resource check: `None` when there is nothing to do (the
/// resource is absent, or not the worker's and so left alone).
pub fn offboard_item(check: &Check, purge_data: bool) -> Option<PlanItem> {
    let ours = matches!(check.status, Status::Ok | Status::Drifted);
    let (action, detail) = match check.status {
        _ if ours && check.name == "blob_container" && !purge_data => (
            Action::Keep,
            "the tenant's data is kept (--purge-data deletes it)".to_string(),
        ),
        _ if ours => (Action::Remove, "deleted".to_string()),
        Status::Error => (Action::Unknown, check.detail.clone()),
        _ => return None,
    };
    Some(PlanItem {
        name: check.name.clone(),
        action,
        resource: check.resource.clone(),
        detail,
        changes: Vec::new(),
    })
}

/// Whether a live Kubernetes object carries the worker's manager label.
pub fn is_ours(live: &Value) -> bool {
    live["metadata"]["labels"][MANAGED_BY_LABEL].as_str() == Some(FIELD_MANAGER)
}

/// The objects a spec with every option (admin group, workload) would have that `exp` has not:
/// what an update that drops an option removes.
pub fn optional_objects(inputs: &TenantInputs<'_>, exp: &Expected) -> Vec<KubeObject> {
    let mut wide = inputs
        .request
        .cloned()
        .unwrap_or_else(|| OnboardTenant::new(String::new(), inputs.names.tenant_id.clone()));
    wide.admin_group_id
        .get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".into());
    wide.workload.get_or_insert(WorkloadRequest { replicas: 1 });
    let wide_inputs = TenantInputs {
        request: Some(&wide),
        ..inputs.clone()
    };
    let full = Expected::build(&wide_inputs);
    let have: Vec<String> = exp
        .guardrails
        .iter()
        .chain(&exp.workload)
        .map(|o| o.reference().to_string())
        .collect();
    full.guardrails
        .into_iter()
        .chain(full.workload)
        .filter(|o| !have.contains(&o.reference().to_string()))
        .collect()
}

/// Placeholder identity ids, for an identity the saga has yet to create: whatever names them
/// (the ServiceAccount's annotation, the role assignment) is then planned as created or changed.
const NEW_PRINCIPAL: &str = "(the new identity's principal id)";
const NEW_CLIENT: &str = "(the new identity's client id)";

/// The step outputs to build the expected state from: the journal's, with the identity's ids
/// taken from the live identity (if it is the worker's) when the journal has none.
async fn outputs_with_identity(inputs: &TenantInputs<'_>, live: &Live) -> BTreeMap<String, Value> {
    let mut outputs = inputs.outputs.clone();
    let known = outputs
        .get("identity")
        .is_some_and(|i| i.get("principal_id").is_some());
    if known {
        return outputs;
    }
    let id = arm_ids::identity_id(inputs.target, &inputs.names.identity).map_err(|e| e.to_string());
    let found = live
        .arm_get(&id, api::MANAGED_IDENTITY)
        .await
        .ok()
        .flatten();
    let ours = found.as_ref().is_some_and(|f| {
        f["tags"][arm_checks::MANAGED_BY_TAG].as_str() == Some(FIELD_MANAGER)
            && f["tags"][arm_checks::TENANT_TAG].as_str() == Some(&inputs.names.tenant_id)
    });
    let (principal, client) = match found.filter(|_| ours) {
        Some(f) => (
            f["properties"]["principalId"].clone(),
            f["properties"]["clientId"].clone(),
        ),
        None => (json!(NEW_PRINCIPAL), json!(NEW_CLIENT)),
    };
    outputs.insert(
        "identity".into(),
        json!({"principal_id": principal, "client_id": client}),
    );
    outputs
}

/// What onboarding `inputs.request` (which must be set) would do to the tenant.
pub async fn plan_onboard(inputs: &TenantInputs<'_>, live: &Live) -> TenantPlan {
    let outputs = outputs_with_identity(inputs, live).await;
    let inputs = TenantInputs {
        outputs: &outputs,
        ..inputs.clone()
    };
    let exp = Expected::build(&inputs);
    let read = read_resources(&exp, &inputs, live).await;
    let mut items: Vec<PlanItem> = read
        .checks
        .iter()
        .filter(|c| c.group == Group::Resource)
        .map(onboard_item)
        .collect();
    for object in optional_objects(&inputs, &exp) {
        let name = check_name(&object);
        match live.kube_get(&object).await {
            Ok(Some(found)) if is_ours(&found) => items.push(PlanItem {
                name,
                action: Action::Remove,
                resource: object.reference().to_string(),
                detail: "the request no longer asks for it: deleted".into(),
                changes: Vec::new(),
            }),
            // Absent, or someone else's (which the saga leaves alone): nothing happens.
            Ok(_) => {}
            Err(e) => items.push(PlanItem {
                name,
                action: Action::Unknown,
                resource: object.reference().to_string(),
                detail: e,
                changes: Vec::new(),
            }),
        }
    }
    TenantPlan::new(&exp.names.tenant_id, &inputs.target.name, "onboard", items)
}

/// What offboarding the tenant would do: every resource of the worker's removed, the container
/// kept unless `purge_data`. Every optional object is looked for, whatever the record says.
pub async fn plan_offboard(inputs: &TenantInputs<'_>, live: &Live, purge_data: bool) -> TenantPlan {
    let outputs = outputs_with_identity(inputs, live).await;
    let mut wide = OnboardTenant::new(String::new(), inputs.names.tenant_id.clone());
    wide.admin_group_id = Some(String::new());
    wide.workload = Some(WorkloadRequest { replicas: 1 });
    let inputs = TenantInputs {
        outputs: &outputs,
        request: Some(&wide),
        ..inputs.clone()
    };
    let exp = Expected::build(&inputs);
    let read = read_resources(&exp, &inputs, live).await;
    let items = read
        .checks
        .iter()
        .filter(|c| c.group == Group::Resource)
        .filter_map(|c| offboard_item(c, purge_data))
        .collect();
    TenantPlan::new(&exp.names.tenant_id, &inputs.target.name, "offboard", items)
}
