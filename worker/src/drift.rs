//! Drift over time: with `[drift] interval_secs` set, a background task beside the runner
//! verifies each onboarded tenant on that interval (the checks of `producer verify`, resources
//! and isolation, through `onboarding_verify`) and publishes a `tenant.drifted` CloudEvent on
//! the events topic when a check finds drift or a violation.
//!
//! The same drift is announced once: the event id is UUID v5 of the tenant and a digest of the
//! findings, and each replica remembers the last digest it announced per tenant (in memory; a
//! restarted replica announces a standing drift once more, under the same id, so consumers that
//! deduplicate by id see it once). A clean check forgets the digest, so drift that comes back
//! after a repair is announced again.
//!
//! Only one replica checks a tenant per interval: it first takes the journal lease document
//! `drift:<tenant>` by compare-and-swap (as the cluster turns do); a replica that loses the race,
//! or finds the lease held and unexpired, skips the tenant this round. Tenants with a request
//! in flight are skipped too: a half-built update is not drift.
//!
//! Checks that could not read (status `error`: permissions, network) are logged, not announced:
//! an outage is not a tenant's drift.
//!
//! May touch: the journal (read tenant records; write `drift:<tenant>` leases), the targets'
//! ARM endpoints and API servers (reads and SubjectAccessReviews, through `onboarding_verify`),
//! the events topic (publish).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use onboarding_contract::events::{DriftFinding, drifted_event, findings_digest};
use onboarding_journal::{Journal, JournalError};
use onboarding_saga::record::{TenantRecord, TenantState};
use onboarding_transport::envelope::event_message;
use onboarding_verify::{Live, OtherTenant, Status, TenantReport, others_of, verify_record};
use serde::{Deserialize, Serialize};

use crate::context::Context;

/// The journal key of a tenant's drift lease.
pub fn lease_key(tenant: &str) -> String {
    format!("drift:{tenant}")
}

/// Who checks a tenant until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    pub until: DateTime<Utc>,
}

/// Take the tenant's lease for `interval` from `now`: `true` when this worker may check it now.
/// A held, unexpired lease (even this worker's own, from this round) or a lost race is `false`.
pub async fn take_lease(
    journal: &dyn Journal,
    tenant: &str,
    worker_id: &str,
    now: DateTime<Utc>,
    interval: Duration,
) -> Result<bool, JournalError> {
    let key = lease_key(tenant);
    let stored = journal.load(&key).await?;
    let version = stored.as_ref().map(|s| s.version);
    if let Some(held) = stored.and_then(|s| serde_json::from_value::<Lease>(s.value).ok())
        && held.until > now
    {
        return Ok(false);
    }
    // A little short of the interval, so the holder's own next round finds it expired even if
    // its timer fires a moment early.
    let span = chrono::TimeDelta::from_std(interval.mul_f64(0.9)).unwrap_or(chrono::TimeDelta::MAX);
    let lease = Lease {
        holder: worker_id.to_string(),
        until: now + span,
    };
    let value = serde_json::to_value(&lease).unwrap_or_default();
    match journal.store(&key, &value, version).await {
        Ok(_) => Ok(true),
        Err(JournalError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The findings worth announcing (drift, missing, not ours, violation), and the checks that
/// could not read, as `name: detail`.
pub fn findings(report: &TenantReport) -> (Vec<DriftFinding>, Vec<String>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for c in &report.checks {
        match c.status {
            Status::Ok => {}
            Status::Error => errors.push(format!("{}: {}", c.name, c.detail)),
            status => found.push(DriftFinding {
                name: c.name.clone(),
                status: serde_json::to_value(status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                detail: c.detail.clone(),
            }),
        }
    }
    (found, errors)
}

/// The last digest announced per tenant, so the same drift is not announced twice in a row.
#[derive(Debug, Default)]
pub struct Announced(HashMap<String, String>);

impl Announced {
    /// Whether `findings` of `tenant` should be announced: not when they are what was last
    /// announced. No findings forgets the tenant (and announces nothing).
    pub fn should_announce(&mut self, tenant: &str, findings: &[DriftFinding]) -> bool {
        if findings.is_empty() {
            self.0.remove(tenant);
            return false;
        }
        let mut sorted = findings.to_vec();
        sorted.sort_by(|a, b| (&a.name, &a.status).cmp(&(&b.name, &b.status)));
        let digest = findings_digest(&sorted);
        self.0.insert(tenant.to_string(), digest.clone()) != Some(digest)
    }
}

/// The periodic check's state: the clients per target and what was announced.
struct Checker {
    cx: Context,
    interval: Duration,
    lives: BTreeMap<String, Live>,
    announced: Announced,
}

impl Checker {
    async fn records(&self) -> Result<Vec<TenantRecord>, JournalError> {
        let mut records = Vec::new();
        // Tenant records only: the journal's other documents have a ':' in their key.
        for key in self.cx.journal.keys().await? {
            if key.contains(':') {
                continue;
            }
            if let Some(stored) = self.cx.journal.load(&key).await?
                && let Ok(record) = serde_json::from_value::<TenantRecord>(stored.value)
            {
                records.push(record);
            }
        }
        Ok(records)
    }

    async fn live(&mut self, target: &str) -> Option<Live> {
        if let Some(l) = self.lives.get(target) {
            return Some(l.clone());
        }
        let t = self.cx.config.targets.get(target)?;
        match Live::connect(t).await {
            Ok(l) => {
                self.lives.insert(target.to_string(), l.clone());
                Some(l)
            }
            Err(e) => {
                tracing::warn!(error = %e, target, "drift check: cannot build the target's clients");
                None
            }
        }
    }

    /// One round: every onboarded tenant at rest whose lease this worker takes.
    async fn round(&mut self) {
        let records = match self.records().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "drift check: cannot read the journal");
                return;
            }
        };
        let others = others_of(&records);
        for record in &records {
            if record.state != TenantState::Onboarded || record.active.is_some() {
                continue;
            }
            let now = self.cx.clock.now();
            match take_lease(
                self.cx.journal.as_ref(),
                &record.tenant_id,
                &self.cx.worker_id,
                now,
                self.interval,
            )
            .await
            {
                Ok(true) => self.check(record, &others).await,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, tenant = %record.tenant_id, "drift check: lease")
                }
            }
        }
    }

    async fn check(&mut self, record: &TenantRecord, others: &[OtherTenant]) {
        let config = self.cx.config.clone();
        let target_name = record
            .target
            .clone()
            .unwrap_or_else(|| config.default_target.clone());
        let (Some(target), Some(live)) = (
            config.targets.get(&target_name),
            self.live(&target_name).await,
        ) else {
            return;
        };
        let provisioning = config.provisioning();
        let Ok(report) = verify_record(record, target, &provisioning, others, &live).await else {
            return;
        };
        let (found, errors) = findings(&report);
        if !errors.is_empty() {
            tracing::warn!(tenant = %record.tenant_id, errors = ?errors, "drift check: some checks could not read");
        }
        if !self.announced.should_announce(&record.tenant_id, &found) {
            return;
        }
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        tracing::warn!(tenant = %record.tenant_id, findings = ?names, "tenant drifted");
        let event = drifted_event(&record.tenant_id, &target_name, found, self.cx.clock.now());
        if let Err(e) = self.cx.topic.publish(event_message(&event)).await {
            tracing::warn!(error = %e, tenant = %record.tenant_id, "tenant.drifted not published");
            // Not announced after all: try again next round.
            self.announced.0.remove(&record.tenant_id);
        }
    }
}

/// Run the periodic check until `stop` turns true; returns at once when `[drift]` is off.
pub async fn run(cx: Context, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(interval) = cx.config.drift.interval() else {
        return;
    };
    tracing::info!(interval_secs = interval.as_secs(), "drift check on");
    let mut checker = Checker {
        cx,
        interval,
        lives: BTreeMap::new(),
        announced: Announced::default(),
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        // A round is abandoned mid-way at shutdown: it writes nothing but leases.
        tokio::select! {
            () = checker.round() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Spawn [`run`] when `[drift]` is on.
pub fn spawn(
    cx: &Context,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    cx.config.drift.interval()?;
    Some(tokio::spawn(run(cx.clone(), stop)))
}

#[cfg(test)]
mod tests {
    use onboarding_verify::{Check, Group};

    use super::*;

    fn report(statuses: &[(&str, Status)]) -> TenantReport {
        let checks = statuses
            .iter()
            .map(|(n, s)| Check::new(*n, Group::Resource, *s, "r", format!("{n} detail")))
            .collect();
        TenantReport::new("acme", "default", true, checks)
    }

    #[test]
    fn findings_are_the_failed_checks_and_unreadable_ones_are_set_apart() {
        let (found, errors) = findings(&report(&[
            ("namespace", Status::Ok),
            ("guardrail:NetworkPolicy/default-deny", Status::Missing),
            ("isolation:pod-placement", Status::Violation),
            ("node_pool", Status::Error),
        ]));
        let names: Vec<(&str, &str)> = found
            .iter()
            .map(|f| (f.name.as_str(), f.status.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("guardrail:NetworkPolicy/default-deny", "missing"),
                ("isolation:pod-placement", "violation")
            ]
        );
        assert_eq!(errors, ["node_pool: node_pool detail"]);
    }

    #[test]
    fn the_same_drift_is_announced_once_and_again_after_a_clean_check() {
        let mut announced = Announced::default();
        let (found, _) = findings(&report(&[("namespace", Status::Drifted)]));
        assert!(announced.should_announce("acme", &found));
        assert!(!announced.should_announce("acme", &found));
        let (more, _) = findings(&report(&[
            ("namespace", Status::Drifted),
            ("node_pool", Status::Missing),
        ]));
        assert!(
            announced.should_announce("acme", &more),
            "new drift is news"
        );
        assert!(
            !announced.should_announce("acme", &[]),
            "clean: nothing to say"
        );
        assert!(
            announced.should_announce("acme", &more),
            "back after a clean check"
        );
    }
}
