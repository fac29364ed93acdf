//! `verify TENANT | --all [--repair]`: reads each tenant's live state (ARM and Kubernetes,
//! read-only, through `onboarding_verify`) and compares it with what the worker would build for
//! the tenant's last accepted request, then proves its isolation. With `--repair`, a tenant that
//! is not clean is sent an update carrying its current spec under a new request id, followed to
//! its outcome, and verified again.
//!
//! May touch: the journal (read), the targets' ARM endpoints and API servers (read, plus
//! SubjectAccessReviews), and with `--repair` the queue (one update per unclean tenant).

use std::collections::BTreeMap;

use clap::Args;
use onboarding_config::Config;
use onboarding_contract::commands::{QuotaRequest, WorkloadRequest};
use onboarding_contract::{Command, OnboardTenant, parse_command};
use onboarding_record::{TenantRecord, TenantState};
use onboarding_verify::{
    Check, Group, Live, OtherTenant, Status, TenantReport, onboarding_of, others_of, verify_record,
};
use serde_json::{Value, json};

use crate::output::Output;
use crate::{EXIT_FAILED, EXIT_INVALID, EXIT_NOT_FOUND, Failure};

/// Verify tenants against their spec and prove their isolation (read-only).
///
/// Per resource: present and the worker's, as the spec says, or drifted (naming what differs):
/// the node pool's taint, label, size and count; the identity; the federated credential's
/// issuer, subject and audience; the container; the role assignment's principal, role, scope and
/// exact ABAC condition; the namespace's labels and Pod Security level; the ServiceAccount's
/// annotations; each guard rail; the admin binding's subjects; the Deployment's placement.
///
/// Isolation: SubjectAccessReviews on the API server (the tenant's ServiceAccount and admin group
/// are refused in other tenants' namespaces and at cluster scope; the admins may act in their
/// own namespace); no RoleBinding of the namespace grants anything outside the tenant; every
/// pod runs on a node of the tenant's pool; on the container only the tenant's identity holds a
/// blob data role; the federated credential trusts exactly the tenant's ServiceAccount.
///
/// The Kubernetes identity of the target's `kubernetes` settings needs get/list on nodes, pods
/// and rolebindings and create on subjectaccessreviews, besides what the worker holds.
///
/// Exit codes: 0 clean; 1 drift or violation (or a check could not read); 2 invalid input;
/// 3 --repair timed out; 4 the journal does not know the tenant.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The tenant id.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    tenant: Option<String>,
    /// Every onboarded tenant the journal knows.
    #[arg(long)]
    all: bool,
    /// Send each unclean tenant an update with its current spec, wait for it, verify again.
    #[arg(long)]
    repair: bool,
    /// Seconds to wait for each repair.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

fn state_report(record: &TenantRecord, target: &str) -> TenantReport {
    let check = Check::new(
        "state",
        Group::Resource,
        Status::Error,
        format!("tenant {}", record.tenant_id),
        format!(
            "the tenant is {:?}, not Onboarded: there is no settled spec to verify",
            record.state
        ),
    );
    TenantReport::new(&record.tenant_id, target, false, vec![check])
}

/// Everything needed to verify the chosen tenants.
struct Plan {
    records: Vec<TenantRecord>,
    others: Vec<OtherTenant>,
}

async fn load_plan(config: &Config, args: &VerifyArgs) -> Result<Plan, Failure> {
    if let Some(t) = &args.tenant {
        onboarding_contract::names::validate_tenant_id(t)
            .map_err(|e| Failure::new(EXIT_INVALID, e.to_string()))?;
    }
    let journal = crate::stores::existing_journal(config)?;
    let all = crate::stores::tenant_records(journal.as_ref(), None).await?;
    let others = others_of(&all);
    let chosen: Vec<TenantRecord> = all
        .into_iter()
        .filter(|r| match &args.tenant {
            Some(t) => &r.tenant_id == t,
            None => r.state != TenantState::Offboarded,
        })
        .collect();
    if let Some(t) = &args.tenant
        && chosen.is_empty()
    {
        return Err(Failure::new(
            EXIT_NOT_FOUND,
            format!("the journal has no tenant {t:?}; nothing was ever requested for it"),
        ));
    }
    Ok(Plan {
        records: chosen,
        others,
    })
}

async fn verify_one(
    config: &Config,
    lives: &mut BTreeMap<String, Live>,
    record: &TenantRecord,
    others: &[OtherTenant],
) -> Result<TenantReport, Failure> {
    let target_name = record
        .target
        .clone()
        .unwrap_or_else(|| config.default_target.clone());
    if record.state != TenantState::Onboarded {
        return Ok(state_report(record, &target_name));
    }
    let target = config.targets.get(&target_name).ok_or_else(|| {
        Failure::new(
            EXIT_INVALID,
            format!(
                "tenant {} lives on target {target_name:?}, which this configuration does not name",
                record.tenant_id
            ),
        )
    })?;
    if !lives.contains_key(&target_name) {
        let live = Live::connect(target)
            .await
            .map_err(|e| Failure::new(EXIT_INVALID, e.to_string()))?;
        lives.insert(target_name.clone(), live);
    }
    let live = lives
        .get(&target_name)
        .ok_or_else(|| Failure::new(EXIT_FAILED, "no client for the target"))?;
    verify_record(record, target, &config.provisioning(), others, live)
        .await
        .map_err(|e| Failure::new(EXIT_FAILED, e))
}

/// The update `--repair` sends: the known request body under a new request id, else one built
/// from the request-specific values found live (the journal keeps no body to take them from).
fn repair_command(report: &TenantReport, record: &TenantRecord) -> OnboardTenant {
    let request_id = uuid::Uuid::new_v4().to_string();
    if let Some(mut c) = onboarding_of(record) {
        c.request_id = request_id;
        return c;
    }
    let o = &report.observed;
    let mut c = OnboardTenant::new(request_id, record.tenant_id.clone());
    c.target = record.target.clone();
    let pool = &o["nodePool"];
    if let Some(size) = pool["vmSize"].as_str() {
        c.node_pool.vm_size = size.to_string();
    }
    let as_u32 = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    if pool["enableAutoScaling"].as_bool() == Some(true) {
        c.node_pool.count = None;
        c.node_pool.min_count = as_u32(&pool["minCount"]);
        c.node_pool.max_count = as_u32(&pool["maxCount"]);
    } else if let Some(count) = as_u32(&pool["count"]) {
        c.node_pool.count = Some(count);
    }
    c.node_pool.zones = pool["availabilityZones"]
        .as_array()
        .map(|z| {
            z.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let q = &o["quota"];
    if let (Some(cpu), Some(memory), Some(pods)) = (
        q["cpu"].as_str(),
        q["memory"].as_str(),
        q["pods"].as_str().and_then(|p| p.parse().ok()),
    ) {
        c.quota = Some(QuotaRequest {
            cpu: cpu.into(),
            memory: memory.into(),
            pods,
        });
    }
    c.admin_group_id = o["adminGroupId"].as_str().map(str::to_string);
    c.workload = as_u32(&o["replicas"]).map(|replicas| WorkloadRequest { replicas });
    c
}

async fn repair(
    config: &Config,
    out: &Output,
    args: &VerifyArgs,
    report: &TenantReport,
    record: &TenantRecord,
) -> Result<(), Failure> {
    let command = Command::Onboard(repair_command(report, record));
    let body = command.to_json();
    let command = parse_command(&body, &crate::send::validation(config)).map_err(|r| {
        Failure::new(
            EXIT_FAILED,
            format!(
                "the repair of {} would be an invalid request: {r}",
                record.tenant_id
            ),
        )
    })?;
    let wait = crate::send::WaitArgs {
        wait: true,
        timeout: args.timeout,
    };
    crate::send::submit(config, out, command, body, &wait).await
}

pub async fn verify(config: &Config, out: &Output, args: VerifyArgs) -> Result<(), Failure> {
    let plan = load_plan(config, &args).await?;
    let mut lives = BTreeMap::new();
    let mut reports = Vec::new();
    for record in &plan.records {
        let mut report = verify_one(config, &mut lives, record, &plan.others).await?;
        if args.repair && !report.clean && record.state == TenantState::Onboarded {
            if !out.json {
                println!("{}\nrepairing {}...", report.render(), record.tenant_id);
            }
            repair(config, out, &args, &report, record).await?;
            let plan_after = load_plan(config, &args).await?;
            if let Some(after) = plan_after
                .records
                .iter()
                .find(|r| r.tenant_id == record.tenant_id)
            {
                report = verify_one(config, &mut lives, after, &plan_after.others).await?;
            }
        }
        reports.push(report);
    }
    let clean = reports.iter().all(|r| r.clean);
    out.emit(&json!({"clean": clean, "tenants": reports}), || {
        reports
            .iter()
            .map(TenantReport::render)
            .collect::<Vec<_>>()
            .join("\n")
    });
    if clean {
        Ok(())
    } else {
        Err(Failure::reported(EXIT_FAILED))
    }
}
