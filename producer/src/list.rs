//! `list`: every tenant the journal knows, its state, its latest request and when it last
//! changed; filters by state and target.

use chrono::{DateTime, Utc};
use serde::Serialize;

use onboarding_config::Config;
use onboarding_record::{TenantRecord, TenantState};

use crate::output::Output;
use crate::{EXIT_INVALID, Failure};

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only tenants in this state (new, onboarding, onboarded, failed, compensation_failed,
    /// offboarding, offboarded).
    #[arg(long)]
    state: Option<String>,
    /// Only tenants of this target.
    #[arg(long)]
    target: Option<String>,
}

/// One line of the list.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantLine {
    pub tenant_id: String,
    pub state: String,
    pub target: Option<String>,
    /// The request the tenant accepted last.
    pub last_request: Option<String>,
    /// When the tenant last changed: its running request's start, else its latest outcome.
    pub when: Option<DateTime<Utc>>,
}

fn state_name(state: TenantState) -> &'static str {
    match state {
        TenantState::New => "new",
        TenantState::Onboarding => "onboarding",
        TenantState::Onboarded => "onboarded",
        TenantState::Failed => "failed",
        TenantState::CompensationFailed => "compensation_failed",
        TenantState::Offboarding => "offboarding",
        TenantState::Offboarded => "offboarded",
    }
}

const STATES: [&str; 7] = [
    "new",
    "onboarding",
    "onboarded",
    "failed",
    "compensation_failed",
    "offboarding",
    "offboarded",
];

pub fn line(r: &TenantRecord) -> TenantLine {
    TenantLine {
        tenant_id: r.tenant_id.clone(),
        state: state_name(r.state).to_string(),
        target: r.target.clone(),
        last_request: r.latest_request().map(str::to_string),
        when: r
            .active
            .as_ref()
            .map(|a| a.started_at)
            .or_else(|| r.finished.back().map(|f| f.event.time)),
    }
}

pub async fn list(config: &Config, out: &Output, args: ListArgs) -> Result<(), Failure> {
    if let Some(state) = &args.state
        && !STATES.contains(&state.as_str())
    {
        return Err(Failure::new(
            EXIT_INVALID,
            format!(
                "--state {state:?} is not a state; one of: {}",
                STATES.join(", ")
            ),
        ));
    }
    let journal = crate::stores::existing_journal(config)?;
    let mut lines = Vec::new();
    for record in crate::stores::tenant_records(journal.as_ref(), None).await? {
        let l = line(&record);
        if args.state.as_ref().is_some_and(|s| *s != l.state)
            || args
                .target
                .as_ref()
                .is_some_and(|t| l.target.as_ref() != Some(t))
        {
            continue;
        }
        lines.push(l);
    }
    if out.json {
        out.emit(&lines, String::new);
        return Ok(());
    }
    if lines.is_empty() {
        out.emit(&lines, || "no tenant matches".to_string());
        return Ok(());
    }
    out.emit(&lines, || {
        format!(
            "{:<40} {:<20} {:<12} {:<38} when (UTC)",
            "tenant", "state", "target", "last request"
        )
    });
    for l in &lines {
        out.emit(l, || {
            format!(
                "{:<40} {:<20} {:<12} {:<38} {}",
                l.tenant_id,
                l.state,
                l.target.as_deref().unwrap_or("-"),
                l.last_request.as_deref().unwrap_or("-"),
                l.when
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| "-".into())
            )
        });
    }
    Ok(())
}
