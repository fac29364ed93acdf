//! Each cluster's line of agent-pool operations. AKS runs one agent-pool operation per cluster
//! at a time and answers every other PUT or DELETE with 409 `OperationNotAllowed`; a burst of
//! onboardings that all try at once spends its attempts on those answers and fails. So a saga
//! takes its cluster's turn before a pool PUT or DELETE and keeps it until the operation ends;
//! the others wait in line, in order of arrival. The line is one journal document per cluster,
//! written with compare-and-swap, so every replica shares it.
//!
//! A turn is a lease: its holder renews it whenever it looks at its operation, and one that
//! stops (a crashed worker) loses it after `cluster_turn_lease_ms`. The operation it started is
//! still followed to its end by its own saga when that resumes; whoever holds the turn
//! meanwhile meets AKS's "busy" answer and waits. A waiter that stops looking (its saga failed
//! elsewhere and compensated) loses its place after the same time; one that leaves says so.
//!
//! Writes are kept to state changes and to refreshing a lease halfway through its life, so
//! thirty waiters looking every few seconds do not contend on the document.
//!
//! May touch: the journal, under keys `cluster-turns:<cluster ARM id>`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use onboarding_config::SagaConfig;
use onboarding_core::Clock;
use onboarding_journal::{Journal, JournalError};
use onboarding_providers::{ProviderError, QueuePlace};

/// Operation durations remembered for estimates.
const REMEMBERED_DURATIONS: usize = 20;

/// Where a saga stands when it asks for its cluster's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Its turn: it may write to the cluster's pools.
    Mine,
    /// Others are ahead.
    Wait(QueuePlace),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Holder {
    ticket: String,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Waiter {
    ticket: String,
    since: DateTime<Utc>,
    seen: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holder: Option<Holder>,
    #[serde(default)]
    waiting: Vec<Waiter>,
    /// How long the last turns lasted, in seconds.
    #[serde(default)]
    recent_secs: VecDeque<u64>,
}

impl Line {
    /// Drop an expired holder and waiters that stopped looking. Returns whether anything changed.
    fn prune(&mut self, now: DateTime<Utc>, lease: chrono::TimeDelta) -> bool {
        let before = (self.holder.clone(), self.waiting.len());
        if self.holder.as_ref().is_some_and(|h| h.until <= now) {
            self.holder = None;
        }
        self.waiting.retain(|w| w.seen + lease > now);
        before != (self.holder.clone(), self.waiting.len())
    }

    fn estimate(&self, ahead: u32, now: DateTime<Utc>) -> Option<u64> {
        if self.recent_secs.is_empty() {
            return None;
        }
        let mean = self.recent_secs.iter().sum::<u64>() / self.recent_secs.len() as u64;
        // The running one is partly done; each one in line takes a whole turn.
        let running = self.holder.as_ref().map_or(0, |h| {
            mean.saturating_sub(u64::try_from((now - h.since).num_seconds()).unwrap_or(0))
        });
        let queued = u64::from(ahead.saturating_sub(u32::from(self.holder.is_some())));
        Some(running + queued * mean)
    }
}

/// Each cluster's line of agent-pool operations, in the journal.
#[derive(Debug, Clone)]
pub struct ClusterTurns {
    journal: Arc<dyn Journal>,
    clock: Arc<dyn Clock>,
    lease: Duration,
}

impl ClusterTurns {
    pub fn new(journal: Arc<dyn Journal>, clock: Arc<dyn Clock>, settings: &SagaConfig) -> Self {
        Self {
            journal,
            clock,
            lease: Duration::from_millis(settings.cluster_turn_lease_ms.max(1_000)),
        }
    }

    fn key(cluster: &str) -> String {
        format!("cluster-turns:{}", cluster.to_ascii_lowercase())
    }

    fn lease(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.lease).unwrap_or(chrono::TimeDelta::MAX)
    }

    /// Take `cluster`'s turn for `ticket` (a saga run), or join (or keep) its place in line.
    /// The holder asking again renews its turn.
    pub async fn take(&self, cluster: &str, ticket: &str) -> Result<Turn, ProviderError> {
        self.update(cluster, |line, now, lease| {
            let mut changed = line.prune(now, lease);
            if let Some(h) = line.holder.as_mut().filter(|h| h.ticket == ticket) {
                if h.until - now < lease / 2 {
                    h.until = now + lease;
                    changed = true;
                }
                return (Turn::Mine, changed);
            }
            let first_in_line = line.waiting.first().is_none_or(|w| w.ticket == ticket);
            if line.holder.is_none() && first_in_line {
                line.waiting.retain(|w| w.ticket != ticket);
                line.holder = Some(Holder {
                    ticket: ticket.to_string(),
                    since: now,
                    until: now + lease,
                });
                return (Turn::Mine, true);
            }
            let index = match line.waiting.iter().position(|w| w.ticket == ticket) {
                Some(i) => {
                    let w = &mut line.waiting[i];
                    if now - w.seen > lease / 4 {
                        w.seen = now;
                        changed = true;
                    }
                    i
                }
                None => {
                    line.waiting.push(Waiter {
                        ticket: ticket.to_string(),
                        since: now,
                        seen: now,
                    });
                    changed = true;
                    line.waiting.len() - 1
                }
            };
            let ahead = u32::try_from(index).unwrap_or(u32::MAX) + u32::from(line.holder.is_some());
            let place = QueuePlace {
                ahead,
                estimate_secs: line.estimate(ahead, now),
            };
            (Turn::Wait(place), changed)
        })
        .await
    }

    /// Give up the turn (the operation ended: `finished` records how long it took) or the
    /// place in line.
    pub async fn leave(
        &self,
        cluster: &str,
        ticket: &str,
        finished: bool,
    ) -> Result<(), ProviderError> {
        self.update(cluster, |line, now, lease| {
            let mut changed = line.prune(now, lease);
            if let Some(h) = line.holder.take_if(|h| h.ticket == ticket) {
                if finished {
                    let secs = u64::try_from((now - h.since).num_seconds()).unwrap_or(0);
                    line.recent_secs.push_back(secs);
                    while line.recent_secs.len() > REMEMBERED_DURATIONS {
                        line.recent_secs.pop_front();
                    }
                }
                changed = true;
            }
            let before = line.waiting.len();
            line.waiting.retain(|w| w.ticket != ticket);
            ((), changed || line.waiting.len() != before)
        })
        .await
    }

    /// Read-modify-write of the line with compare-and-swap; `change` returns its answer and
    /// whether the line must be written.
    async fn update<T>(
        &self,
        cluster: &str,
        mut change: impl FnMut(&mut Line, DateTime<Utc>, chrono::TimeDelta) -> (T, bool),
    ) -> Result<T, ProviderError> {
        let key = Self::key(cluster);
        let failed = |e: JournalError| {
            let error = ProviderError::new(
                onboarding_core::Classify::class(&e),
                "take the cluster's turn",
                cluster,
                e.to_string(),
            );
            error.with_code("ClusterTurnJournal")
        };
        for _ in 0..20 {
            let stored = self.journal.load(&key).await.map_err(failed)?;
            let (version, mut line) = match stored {
                Some(v) => (
                    Some(v.version),
                    serde_json::from_value::<Line>(v.value).unwrap_or_default(),
                ),
                None => (None, Line::default()),
            };
            let (answer, changed) = change(&mut line, self.clock.now(), self.lease());
            if !changed {
                return Ok(answer);
            }
            let value = serde_json::to_value(&line).unwrap_or_default();
            match self.journal.store(&key, &value, version).await {
                Ok(_) => return Ok(answer),
                Err(JournalError::Conflict { .. }) => continue,
                Err(e) => return Err(failed(e)),
            }
        }
        Err(ProviderError::transient(
            "take the cluster's turn",
            cluster,
            "the cluster's line kept changing underneath this worker; trying again shortly",
        )
        .with_code("ClusterTurnContended"))
    }
}

#[cfg(test)]
mod tests {
    use doubles::*;

    use super::*;

    /// Small in-crate doubles: the saga crate cannot use the testkit (it depends on us).
    mod doubles {
        pub use std::collections::BTreeMap;
        pub use std::sync::Mutex;

        use super::super::*;
        use onboarding_journal::{NameClaim, Versioned};

        #[derive(Debug, Default)]
        pub struct Docs(pub Mutex<BTreeMap<String, (u64, serde_json::Value)>>);

        #[async_trait::async_trait]
        impl Journal for Docs {
            async fn load(
                &self,
                key: &str,
            ) -> Result<Option<Versioned<serde_json::Value>>, JournalError> {
                Ok(self.0.lock().unwrap().get(key).map(|(v, value)| Versioned {
                    version: *v,
                    value: value.clone(),
                }))
            }
            async fn store(
                &self,
                key: &str,
                value: &serde_json::Value,
                expected: Option<u64>,
            ) -> Result<u64, JournalError> {
                let mut docs = self.0.lock().unwrap();
                let found = docs.get(key).map(|(v, _)| *v);
                if found != expected {
                    return Err(JournalError::Conflict {
                        key: key.into(),
                        expected,
                        found,
                    });
                }
                let next = found.unwrap_or(0) + 1;
                docs.insert(key.into(), (next, value.clone()));
                Ok(next)
            }
            async fn keys(&self) -> Result<Vec<String>, JournalError> {
                Ok(self.0.lock().unwrap().keys().cloned().collect())
            }
            async fn claim_names(&self, _: &str, _: &[NameClaim]) -> Result<(), JournalError> {
                Ok(())
            }
            async fn release_names(&self, _: &str, _: &[NameClaim]) -> Result<(), JournalError> {
                Ok(())
            }
            async fn ping(&self) -> Result<(), JournalError> {
                Ok(())
            }
        }

        #[derive(Debug)]
        pub struct Fixed(pub Mutex<DateTime<Utc>>);

        #[async_trait::async_trait]
        impl Clock for Fixed {
            fn now(&self) -> DateTime<Utc> {
                *self.0.lock().unwrap()
            }
            async fn sleep(&self, d: Duration) {
                let mut t = self.0.lock().unwrap();
                *t += chrono::TimeDelta::from_std(d).unwrap();
            }
        }
    }

    const CLUSTER: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks";

    fn turns() -> (ClusterTurns, Arc<Fixed>, Arc<Docs>) {
        let clock = Arc::new(Fixed(Mutex::new(Utc::now())));
        let docs = Arc::new(Docs::default());
        let settings = SagaConfig {
            cluster_turn_lease_ms: 60_000,
            ..SagaConfig::default()
        };
        (
            ClusterTurns::new(docs.clone(), clock.clone(), &settings),
            clock,
            docs,
        )
    }

    fn ahead(turn: Turn) -> u32 {
        match turn {
            Turn::Wait(place) => place.ahead,
            Turn::Mine => 0,
        }
    }

    #[tokio::test]
    async fn the_first_saga_gets_the_turn_and_the_others_wait_in_order_of_arrival() {
        let (t, _, _) = turns();
        assert_eq!(t.take(CLUSTER, "a").await.unwrap(), Turn::Mine);
        assert_eq!(ahead(t.take(CLUSTER, "b").await.unwrap()), 1);
        assert_eq!(ahead(t.take(CLUSTER, "c").await.unwrap()), 2);
        // Asking again keeps one's place; the holder asking again keeps the turn.
        assert_eq!(ahead(t.take(CLUSTER, "c").await.unwrap()), 2);
        assert_eq!(t.take(CLUSTER, "a").await.unwrap(), Turn::Mine);
        t.leave(CLUSTER, "a", true).await.unwrap();
        // c asks first, but b is ahead of it.
        assert_eq!(ahead(t.take(CLUSTER, "c").await.unwrap()), 1);
        assert_eq!(t.take(CLUSTER, "b").await.unwrap(), Turn::Mine);
        assert_eq!(ahead(t.take(CLUSTER, "c").await.unwrap()), 1);
        t.leave(CLUSTER, "b", true).await.unwrap();
        assert_eq!(t.take(CLUSTER, "c").await.unwrap(), Turn::Mine);
    }

    #[tokio::test]
    async fn clusters_have_separate_lines() {
        let (t, _, _) = turns();
        assert_eq!(t.take(CLUSTER, "a").await.unwrap(), Turn::Mine);
        assert_eq!(t.take("/other", "b").await.unwrap(), Turn::Mine);
    }

    #[tokio::test]
    async fn a_crashed_holders_turn_expires_and_the_next_in_line_takes_it() {
        let (t, clock, _) = turns();
        assert_eq!(t.take(CLUSTER, "a").await.unwrap(), Turn::Mine);
        assert_eq!(ahead(t.take(CLUSTER, "b").await.unwrap()), 1);
        clock.sleep(Duration::from_secs(30)).await;
        assert_eq!(ahead(t.take(CLUSTER, "b").await.unwrap()), 1);
        clock.sleep(Duration::from_secs(31)).await;
        assert_eq!(t.take(CLUSTER, "b").await.unwrap(), Turn::Mine);
    }

    #[tokio::test]
    async fn a_holder_that_keeps_looking_keeps_its_turn_past_the_lease() {
        let (t, clock, _) = turns();
        assert_eq!(t.take(CLUSTER, "a").await.unwrap(), Turn::Mine);
        for _ in 0..5 {
            clock.sleep(Duration::from_secs(40)).await;
            assert_eq!(t.take(CLUSTER, "a").await.unwrap(), Turn::Mine);
            assert_ne!(t.take(CLUSTER, "b").await.unwrap(), Turn::Mine);
        }
    }

    #[tokio::test]
    async fn a_waiter_that_left_or_stopped_looking_loses_its_place() {
        let (t, clock, _) = turns();
        assert_eq!(t.take(CLUSTER, "a").await.unwrap(), Turn::Mine);
        assert_eq!(ahead(t.take(CLUSTER, "b").await.unwrap()), 1);
        assert_eq!(ahead(t.take(CLUSTER, "c").await.unwrap()), 2);
        assert_eq!(ahead(t.take(CLUSTER, "d").await.unwrap()), 3);
        t.leave(CLUSTER, "b", false).await.unwrap();
        assert_eq!(ahead(t.take(CLUSTER, "d").await.unwrap()), 2);
        // c stops looking; a and d keep at it.
        for _ in 0..3 {
            clock.sleep(Duration::from_secs(25)).await;
            t.take(CLUSTER, "a").await.unwrap();
            t.take(CLUSTER, "d").await.unwrap();
        }
        assert_eq!(ahead(t.take(CLUSTER, "d").await.unwrap()), 1);
    }

    #[tokio::test]
    async fn the_estimate_follows_the_recent_turns() {
        let (t, clock, _) = turns();
        for ticket in ["a", "b"] {
            assert_eq!(t.take(CLUSTER, ticket).await.unwrap(), Turn::Mine);
            // Looking at its operation halfway renews the turn.
            clock.sleep(Duration::from_secs(50)).await;
            assert_eq!(t.take(CLUSTER, ticket).await.unwrap(), Turn::Mine);
            clock.sleep(Duration::from_secs(50)).await;
            t.leave(CLUSTER, ticket, true).await.unwrap();
        }
        assert_eq!(t.take(CLUSTER, "c").await.unwrap(), Turn::Mine);
        clock.sleep(Duration::from_secs(40)).await;
        t.take(CLUSTER, "c").await.unwrap();
        t.take(CLUSTER, "d").await.unwrap();
        let Turn::Wait(place) = t.take(CLUSTER, "e").await.unwrap() else {
            panic!("e waits")
        };
        // c has about 60 s left, then d's whole turn.
        assert_eq!(place.ahead, 2);
        assert_eq!(place.estimate_secs, Some(160));
    }

    #[tokio::test]
    async fn looking_again_without_news_writes_nothing() {
        let (t, _, docs) = turns();
        t.take(CLUSTER, "a").await.unwrap();
        t.take(CLUSTER, "b").await.unwrap();
        let version = |docs: &Docs| docs.0.lock().unwrap().values().next().unwrap().0;
        let before = version(&docs);
        for _ in 0..10 {
            t.take(CLUSTER, "a").await.unwrap();
            t.take(CLUSTER, "b").await.unwrap();
        }
        assert_eq!(version(&docs), before);
    }
}
