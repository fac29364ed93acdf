//! `plan send …` / `plan offboard …`: what a request would create, change or remove for its
//! tenant against the live state, changing nothing. The request is built and validated exactly
//! as `send` and `offboard` build it (their argument parsing and command building, reused), then
//! judged by `onboarding_verify::plan` with the same expected objects `verify` compares with,
//! taken from the request instead of the record's spec.
//!
//! May touch: the journal (read: the tenant's record, for the ids its steps recorded), the
//! target's ARM endpoint and API server (GETs). Nothing is sent and nothing is written.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use onboarding_config::{Config, JournalConfig};
use onboarding_contract::names::TenantNames;
use onboarding_contract::{Command, OnboardTenant};
use onboarding_record::{TenantRecord, TenantState};
use onboarding_verify::{Live, TenantInputs, TenantPlan, plan_offboard, plan_onboard};
use serde_json::Value;

use crate::output::Output;
use crate::send::{OffboardArgs, SendArgs};
use crate::{EXIT_FAILED, EXIT_INVALID, EXIT_NOT_FOUND, Failure};

/// Show what a request would do to its tenant, against the live state, changing nothing.
///
/// `plan send` takes the flags (or --file) of `send`; `plan offboard` those of `offboard`. A
/// --file may hold either kind of request. Each resource of the tenant gets a verb:
///
///   create     (+) it does not exist; the saga creates it
///   change     (~) it is the worker's and differs; each field is listed as old → new
///   unchanged  (=) it is the worker's and already as asked
///   refuse     (!) it exists without the worker's marker: the saga would fail
///              (ResourceNotOwned)
///   remove     (-) the saga deletes it: an update dropping --admin-group or --workload
///              removes the admin binding or the Deployment; an offboarding removes every
///              resource of the worker's
///   keep       (·) an offboarding leaves the blob container (unless --purge-data)
///   unknown    (?) it could not be read
///
/// Exit codes: 0 the plan was made (whatever it says); 1 the live state could not be read;
/// 2 invalid input or configuration; 4 an offboarding of a tenant that has nothing.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PlanArgs {
    #[command(subcommand)]
    request: PlanRequest,
}

#[derive(Debug, Subcommand)]
enum PlanRequest {
    /// Plan an onboarding or update (the flags of `producer send`; --raw and --wait refused).
    Send(SendArgs),
    /// Plan an offboarding (the flags of `producer offboard`; --wait refused).
    Offboard(OffboardArgs),
}

/// The request the arguments describe, built and validated as `send`/`offboard` would.
fn request(config: &Config, args: &PlanArgs) -> Result<Command, Failure> {
    let refused = |flag: &str| {
        Failure::new(
            EXIT_INVALID,
            format!("plan sends nothing: {flag} does not apply"),
        )
    };
    let body = match &args.request {
        PlanRequest::Send(a) => {
            if a.raw.is_some() {
                return Err(refused("--raw"));
            }
            if a.wait.wait {
                return Err(refused("--wait"));
            }
            crate::send::onboard_body(a)?
        }
        PlanRequest::Offboard(a) => {
            if a.wait.wait {
                return Err(refused("--wait"));
            }
            crate::send::offboard_body(a)
        }
    };
    crate::send::parse_body(config, &body)
}

/// The tenant's record, if the journal has one. A journal file that does not exist yet means
/// no tenant was ever onboarded with this configuration: no record, not an error.
async fn record(config: &Config, tenant: &str) -> Result<Option<TenantRecord>, Failure> {
    if let JournalConfig::Sqlite { path } = &config.journal
        && !path.exists()
    {
        return Ok(None);
    }
    let journal = crate::stores::existing_journal(config)?;
    Ok(
        crate::stores::tenant_records(journal.as_ref(), Some(tenant))
            .await?
            .into_iter()
            .next(),
    )
}

pub async fn plan(config: &Config, out: &Output, args: PlanArgs) -> Result<(), Failure> {
    let command = request(config, &args)?;
    let tenant = command.tenant_id().to_string();
    let record = record(config, &tenant).await?;
    // An onboarded tenant stays on its target; a request naming another is refused by the saga,
    // so the plan looks where the tenant is.
    let target_name = record
        .as_ref()
        .filter(|r| r.state != TenantState::Offboarded)
        .and_then(|r| r.target.clone())
        .or_else(|| match &command {
            Command::Onboard(c) => c.target.clone(),
            Command::Offboard(c) => c.target.clone(),
        })
        .unwrap_or_else(|| config.default_target.clone());
    let target = config.targets.get(&target_name).ok_or_else(|| {
        Failure::new(
            EXIT_INVALID,
            format!("target {target_name:?} is not in this configuration"),
        )
    })?;
    let live = Live::connect(target)
        .await
        .map_err(|e| Failure::new(EXIT_INVALID, e.to_string()))?;
    let names =
        TenantNames::derive(&tenant).map_err(|e| Failure::new(EXIT_INVALID, e.to_string()))?;
    // The ids the steps recorded (identity, container) still describe what exists, unless the
    // tenant was offboarded since.
    let outputs: BTreeMap<String, Value> = record
        .iter()
        .filter(|r| r.state != TenantState::Offboarded)
        .flat_map(|r| r.resources.iter())
        .map(|(k, v)| (k.as_str().to_string(), v.clone()))
        .collect();
    let provisioning = config.provisioning();
    let onboard: Option<&OnboardTenant> = match &command {
        Command::Onboard(c) => Some(c),
        Command::Offboard(_) => None,
    };
    let inputs = TenantInputs {
        names,
        target,
        provisioning: &provisioning,
        request: onboard,
        outputs: &outputs,
        others: Vec::new(),
    };
    let plan = match &command {
        Command::Onboard(_) => plan_onboard(&inputs, &live).await,
        // Without a record the worker answers "not found" and deletes nothing, whatever exists.
        Command::Offboard(_) if record.is_none() => {
            TenantPlan::new(&tenant, &target.name, "offboard", Vec::new())
        }
        Command::Offboard(c) => plan_offboard(&inputs, &live, c.purge_data).await,
    };
    let unknown = plan
        .items
        .iter()
        .any(|i| i.action == onboarding_verify::Action::Unknown);
    out.emit(&plan, || plan.render());
    let nothing = plan.items.is_empty() || record.is_none();
    if matches!(command, Command::Offboard(_)) && nothing {
        if !out.json {
            eprintln!(
                "producer: tenant {tenant} has nothing to offboard{}",
                if record.is_none() {
                    " (the worker has no record of it, so it would delete nothing)"
                } else {
                    ""
                }
            );
        }
        return Err(Failure::reported(EXIT_NOT_FOUND));
    }
    if unknown {
        return Err(Failure::reported(EXIT_FAILED));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_serialises_with_tenant_kind_items_and_a_summary_per_verb() {
        let plan = TenantPlan::new("acme", "default", "offboard", Vec::new());
        let v = serde_json::to_value(&plan).unwrap_or_default();
        assert_eq!(v["tenantId"], "acme");
        assert_eq!(v["kind"], "offboard");
        assert!(v["items"].as_array().is_some_and(Vec::is_empty));
        assert!(v["summary"].is_object());
    }
}
