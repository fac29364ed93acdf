//! Verifying a tenant from its journal record: the inputs the producer's `verify` and the
//! worker's drift check both build from a [`TenantRecord`] (its derived names, the onboarding it
//! was built to, its step outputs, the other tenants' identities), so that both check the same.
//!
//! May touch: what [`verify_tenant`] touches (read-only live state); the records are given.

use std::collections::BTreeMap;

use onboarding_contract::names::TenantNames;
use onboarding_contract::{Command, OnboardTenant};
use onboarding_providers::{Provisioning, Target};
use onboarding_record::{StepName, TenantRecord, TenantState};
use serde_json::Value;

use crate::{Live, OtherTenant, TenantInputs, TenantReport, verify_tenant};

/// The onboarding the tenant's resources were built to: the last one that succeeded (kept in
/// the record), or the running request's command.
pub fn onboarding_of(record: &TenantRecord) -> Option<OnboardTenant> {
    if let Some(spec) = &record.spec {
        return Some(spec.clone());
    }
    match record.active.as_ref().map(|r| &r.command) {
        Some(Command::Onboard(c)) => Some(c.clone()),
        _ => None,
    }
}

/// Every onboarded tenant of `records` with its identity's principal, for the isolation checks.
pub fn others_of(records: &[TenantRecord]) -> Vec<OtherTenant> {
    records
        .iter()
        .filter(|r| r.state == TenantState::Onboarded)
        .map(|r| OtherTenant {
            tenant_id: r.tenant_id.clone(),
            principal_id: r
                .resources
                .get(&StepName::Identity)
                .and_then(|i| i.get("principal_id"))
                .and_then(Value::as_str)
                .map(str::to_string),
        })
        .collect()
}

/// Verify the tenant of `record` on `target` (the record's, resolved by the caller) against the
/// live state; `others` as [`others_of`] gives them (the tenant itself is left out here).
pub async fn verify_record(
    record: &TenantRecord,
    target: &Target,
    provisioning: &Provisioning,
    others: &[OtherTenant],
    live: &Live,
) -> Result<TenantReport, String> {
    let names = TenantNames::derive(&record.tenant_id).map_err(|e| e.to_string())?;
    let request = onboarding_of(record);
    let outputs: BTreeMap<String, Value> = record
        .resources
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.clone()))
        .collect();
    let inputs = TenantInputs {
        names,
        target,
        provisioning,
        request: request.as_ref(),
        outputs: &outputs,
        others: others
            .iter()
            .filter(|o| o.tenant_id != record.tenant_id)
            .cloned()
            .collect(),
    };
    Ok(verify_tenant(&inputs, live).await)
}
