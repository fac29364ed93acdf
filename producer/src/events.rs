//! `events [--tenant T] [--follow]`: the outcome events of requests, as the journal records
//! them (each tenant's recent ones, oldest first), and with `--follow` each new one as it is
//! recorded. Read from the journal, not the topic: a reader of the topic needs a subscription
//! of its own, which on Service Bus only the infrastructure may create, and taking events from
//! a shared one would steal them from their reader.
//!
//! May touch: the journal, read-only.

use std::collections::BTreeSet;
use std::time::Duration;

use onboarding_config::Config;
use onboarding_contract::events::{CloudEvent, EventData};
use onboarding_journal::Journal;

use crate::output::Output;
use crate::{EXIT_INVALID, Failure};

/// How often `--follow` looks at the journal again.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only this tenant's events.
    #[arg(long)]
    tenant: Option<String>,
    /// Keep printing new outcome events as they are recorded (until interrupted).
    #[arg(long)]
    follow: bool,
}

fn line(e: &CloudEvent) -> String {
    let (tenant, request, state) = match &e.data {
        EventData::Outcome(o) => (
            o.tenant_id.as_str(),
            o.request_id.as_str(),
            o.state.as_str(),
        ),
        EventData::Rejected(r) => (
            r.tenant_id.as_deref().unwrap_or("-"),
            r.request_id.as_deref().unwrap_or("-"),
            r.reason.as_str(),
        ),
        EventData::Step(s) => (s.tenant_id.as_str(), s.request_id.as_str(), s.step.as_str()),
        EventData::Drifted(d) => (d.tenant_id.as_str(), "-", "drifted"),
    };
    format!(
        "{}  {:<28} {:<40} {:<38} {}",
        e.time.format("%Y-%m-%d %H:%M:%S UTC"),
        e.ty,
        tenant,
        request,
        state
    )
}

/// Every outcome event the journal holds for `tenant` (or every tenant), oldest first.
async fn recorded(journal: &dyn Journal, tenant: Option<&str>) -> Result<Vec<CloudEvent>, Failure> {
    let mut events: Vec<CloudEvent> = crate::stores::tenant_records(journal, tenant)
        .await?
        .into_iter()
        .flat_map(|r| r.finished.into_iter().map(|f| f.event))
        .collect();
    events.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
    Ok(events)
}

pub async fn events(config: &Config, out: &Output, args: EventsArgs) -> Result<(), Failure> {
    if let Some(t) = &args.tenant {
        onboarding_contract::names::validate_tenant_id(t)
            .map_err(|e| Failure::new(EXIT_INVALID, e.to_string()))?;
    }
    let journal = crate::stores::existing_journal(config)?;
    let mut seen = BTreeSet::new();
    let first = recorded(journal.as_ref(), args.tenant.as_deref()).await?;
    if first.is_empty() && !args.follow && !out.json {
        out.emit(&(), || "no outcome events recorded".to_string());
    }
    for e in first {
        seen.insert(e.id.clone());
        out.emit(&e, || line(&e));
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        for e in recorded(journal.as_ref(), args.tenant.as_deref()).await? {
            if seen.insert(e.id.clone()) {
                out.emit(&e, || line(&e));
            }
        }
    }
}
