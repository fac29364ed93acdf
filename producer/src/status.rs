//! `status <tenant>`: the tenant's saga as the journal has it.

use onboarding_config::Config;
use onboarding_contract::events::EventData;
use onboarding_record::{Status, TenantRecord, TenantState};

use crate::output::Output;
use crate::{EXIT_FAILED, EXIT_INVALID, EXIT_NOT_FOUND, Failure};

pub async fn status(config: &Config, out: &Output, tenant: &str) -> Result<(), Failure> {
    onboarding_contract::names::validate_tenant_id(tenant)
        .map_err(|e| Failure::new(EXIT_INVALID, e.to_string()))?;
    let journal = crate::stores::existing_journal(config)?;
    let stored = journal
        .load(tenant)
        .await
        .map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?
        .ok_or_else(|| {
            Failure::new(
                EXIT_NOT_FOUND,
                format!("the journal has no tenant {tenant:?}; nothing was ever requested for it"),
            )
        })?;
    let record: TenantRecord = serde_json::from_value(stored.value.clone()).map_err(|e| {
        Failure::new(
            EXIT_FAILED,
            format!("the journal record of {tenant} cannot be read: {e}"),
        )
    })?;
    out.emit(&stored.value, || render(&record, stored.version));
    Ok(())
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::NotNeeded => "-",
        Status::Pending => "pending",
        Status::Running => "running",
        Status::Waiting => "waiting",
        Status::Done => "done",
        Status::Failed => "FAILED",
        Status::Skipped => "skipped",
        Status::Kept => "kept",
    }
}

/// A saga waiting for its cluster's agent-pool operations: its place and the estimate.
fn waiting_for_cluster(
    place: onboarding_record::QueuePlace,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    let place_text = match place.ahead {
        0 => "its turn; AKS is finishing another operation on the cluster".to_string(),
        1 => "waiting for the cluster: 1 pool operation ahead".to_string(),
        n => format!("waiting for the cluster: {n} pool operations ahead"),
    };
    let estimate = place
        .estimate_secs
        .map(|s| format!(", about {} min {} s left", s / 60, s % 60))
        .unwrap_or_default();
    let since = since
        .map(|t| format!(", since {}", t.format("%H:%M:%S UTC")))
        .unwrap_or_default();
    format!("{place_text}{estimate}{since} ")
}

/// Why the tenant's latest request failed, and what it left, for a tenant in a failed state.
fn last_failure(r: &TenantRecord) -> Option<String> {
    if !matches!(
        r.state,
        TenantState::Failed | TenantState::CompensationFailed
    ) {
        return None;
    }
    let finished = r.finished.back()?;
    let EventData::Outcome(o) = &finished.event.data else {
        return None;
    };
    let mut s = format!("request {} failed", o.request_id);
    if let Some(e) = &o.error {
        s.push_str(&format!(
            " at {}({}{}): {}",
            e.step
                .as_deref()
                .map(|st| format!("step {st} "))
                .unwrap_or_default(),
            e.class,
            e.code
                .as_deref()
                .map(|c| format!(", {c}"))
                .unwrap_or_default(),
            e.message
        ));
    }
    s.push('\n');
    for left in &o.remaining {
        s.push_str(&format!(
            "  left in place ({}): {} {}\n",
            left.reason, left.step, left.resource
        ));
    }
    Some(s)
}

fn render(r: &TenantRecord, version: u64) -> String {
    let mut s = format!(
        "tenant {}  state {:?}  target {}  (journal version {version})\n",
        r.tenant_id,
        r.state,
        r.target.as_deref().unwrap_or("-")
    );
    if let Some(cause) = last_failure(r) {
        s.push_str(&cause);
    }
    if let Some(run) = &r.active {
        s.push_str(&format!(
            "active request {} ({}), phase {:?}, started {}\n",
            run.request_id,
            run.command.kind(),
            run.phase,
            run.started_at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
        if let Some(f) = &run.failure {
            s.push_str(&format!("  compensating because: {}\n", f.message));
        }
        s.push_str(&format!(
            "  {:<22} {:<9} {:<13} {}\n",
            "step", "forward", "compensation", "detail"
        ));
        for (name, st) in &run.steps {
            let mut detail = String::new();
            if let Some(w) = st.wake_at {
                detail.push_str(&format!("next look {} ", w.format("%H:%M:%S UTC")));
            }
            if let Some(op) = &st.operation
                && let Some(place) = op.place
            {
                detail.push_str(&waiting_for_cluster(place, op.since));
            }
            if st.attempts > 0 {
                detail.push_str(&format!("attempts {} ", st.attempts));
            }
            if let Some(e) = &st.last_error {
                detail.push_str(&format!("last error: {e}"));
            }
            s.push_str(&format!(
                "  {:<22} {:<9} {:<13} {}\n",
                name.as_str(),
                status_name(st.forward),
                status_name(st.compensation),
                detail.trim_end()
            ));
        }
        if let Some(c) = &run.next_continuation {
            s.push_str(&format!(
                "  continuation {} due {}\n",
                c.message_id,
                c.wake_at.format("%H:%M:%S UTC")
            ));
        }
    }
    if !r.resources.is_empty() {
        s.push_str("resources\n");
        for (step, outputs) in &r.resources {
            s.push_str(&format!("  {:<22} {}\n", step.as_str(), outputs));
        }
    }
    if !r.queued.is_empty() {
        s.push_str(&format!(
            "queued: {}\n",
            r.queued
                .iter()
                .map(|q| q.command.request_id().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !r.finished.is_empty() {
        s.push_str("finished requests (newest last)\n");
        for f in r.finished.iter().rev().take(5).rev() {
            s.push_str(&format!(
                "  {:<38} {:<28} {}\n",
                f.request_id,
                f.event.ty,
                f.event.time.format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
    }
    s.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saga_waiting_for_its_cluster_shows_its_place_and_the_estimate() {
        let since = chrono::DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let text = waiting_for_cluster(
            onboarding_record::QueuePlace {
                ahead: 3,
                estimate_secs: Some(430),
            },
            Some(since),
        );
        assert_eq!(
            text.trim_end(),
            "waiting for the cluster: 3 pool operations ahead, about 7 min 10 s left, since 10:00:00 UTC"
        );
        let turn = waiting_for_cluster(
            onboarding_record::QueuePlace {
                ahead: 0,
                estimate_secs: None,
            },
            None,
        );
        assert!(turn.contains("its turn"), "{turn}");
    }
}
