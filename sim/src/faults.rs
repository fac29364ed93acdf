//! Latency and fault injection shared by both simulators.
//!
//! Every simulated operation has a name like `arm.agent_pools.put` or `kube.namespaces.apply`.
//! Before answering, a simulator asks [`Faults::decide`] what to do with it: answer normally,
//! throttle (429 + Retry-After), fail with 500/503, stall (a timeout), or fail permanently. Tests
//! change the plan at run time through `POST /_sim/faults` on either simulator.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What the simulator should do to matching operations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultPlan {
    /// Share (0.0–1.0) of operations that fail transiently (429, 500, 503 or a stall, evenly).
    pub transient_rate: f64,
    /// Only operations whose name contains one of these are subject to `transient_rate`
    /// (empty: all).
    pub transient_ops: Vec<String>,
    /// Operations whose name contains one of these fail permanently (400 with a clear code).
    pub fail_ops: Vec<String>,
    /// Seconds sent in `Retry-After` on 429s.
    pub retry_after_secs: u64,
    /// How long a stalled request hangs before the simulator drops it.
    pub stall_ms: u64,
    /// RNG seed for reproducible runs.
    pub seed: Option<u64>,
}

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Throttle { retry_after_secs: u64 },
    ServerError(u16),
    Stall(Duration),
    Permanent,
}

#[derive(Debug)]
pub struct Faults {
    plan: Mutex<FaultPlan>,
    rng: Mutex<StdRng>,
}

impl Faults {
    pub fn new(plan: FaultPlan) -> Self {
        let rng = match plan.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            plan: Mutex::new(plan),
            rng: Mutex::new(rng),
        }
    }

    pub fn plan(&self) -> FaultPlan {
        lock(&self.plan).clone()
    }

    pub fn set_plan(&self, plan: FaultPlan) {
        if let Some(seed) = plan.seed {
            *lock(&self.rng) = StdRng::seed_from_u64(seed);
        }
        *lock(&self.plan) = plan;
    }

    pub fn decide(&self, operation: &str) -> Fault {
        let plan = lock(&self.plan).clone();
        if plan.fail_ops.iter().any(|p| operation.contains(p.as_str())) {
            return Fault::Permanent;
        }
        let applies = plan.transient_ops.is_empty()
            || plan
                .transient_ops
                .iter()
                .any(|p| operation.contains(p.as_str()));
        if !applies || plan.transient_rate <= 0.0 {
            return Fault::None;
        }
        let mut rng = lock(&self.rng);
        if rng.random::<f64>() >= plan.transient_rate {
            return Fault::None;
        }
        match rng.random_range(0..4u8) {
            0 => Fault::Throttle {
                retry_after_secs: plan.retry_after_secs.max(1),
            },
            1 => Fault::ServerError(500),
            2 => Fault::ServerError(503),
            _ => Fault::Stall(Duration::from_millis(plan.stall_ms.max(1))),
        }
    }
}

/// How long each kind of operation takes, scaled from real durations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyProfile {
    /// Multiplies every duration below; 0 makes the simulators instant.
    pub scale: f64,
    /// Real-world durations in milliseconds, by operation-name fragment; first match wins.
    pub operations: Vec<(String, u64)>,
}

impl LatencyProfile {
    /// Instant answers, for throughput runs and most tests.
    pub fn zero() -> Self {
        Self {
            scale: 0.0,
            operations: Vec::new(),
        }
    }

    /// Durations as seen in a real subscription (node pools take minutes, identities seconds),
    /// to be scaled down, e.g. by 0.01.
    pub fn realistic(scale: f64) -> Self {
        let ops = [
            ("arm.agent_pools.create", 240_000),
            ("arm.agent_pools.delete", 180_000),
            ("arm.identities", 3_000),
            ("arm.federated_credentials", 2_000),
            ("arm.blob_containers", 1_500),
            ("arm.role_assignments", 2_500),
            ("kube.", 100),
        ];
        Self {
            scale,
            operations: ops.iter().map(|(k, v)| ((*k).to_string(), *v)).collect(),
        }
    }

    pub fn latency(&self, operation: &str) -> Duration {
        if self.scale <= 0.0 {
            return Duration::ZERO;
        }
        self.operations
            .iter()
            .find(|(fragment, _)| operation.contains(fragment.as_str()))
            .map(|(_, ms)| Duration::from_secs_f64(*ms as f64 * self.scale / 1000.0))
            .unwrap_or(Duration::ZERO)
    }
}

impl Default for LatencyProfile {
    fn default() -> Self {
        Self::zero()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the plan half-written, so poisoning is moot.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_failures_match_by_operation_fragment() {
        let f = Faults::new(FaultPlan {
            fail_ops: vec!["agent_pools.put".into()],
            ..FaultPlan::default()
        });
        assert_eq!(f.decide("arm.agent_pools.put"), Fault::Permanent);
        assert_eq!(f.decide("arm.identities.put"), Fault::None);
    }

    #[test]
    fn transient_rate_is_roughly_honoured_with_a_seed() {
        let f = Faults::new(FaultPlan {
            transient_rate: 0.3,
            seed: Some(7),
            ..FaultPlan::default()
        });
        let faults = (0..10_000)
            .filter(|_| f.decide("arm.identities.put") != Fault::None)
            .count();
        assert!((2_500..3_500).contains(&faults), "{faults} faults");
    }

    #[test]
    fn realistic_profile_scales_node_pools_to_minutes_times_scale() {
        let p = LatencyProfile::realistic(0.01);
        assert_eq!(
            p.latency("arm.agent_pools.create"),
            Duration::from_millis(2_400)
        );
        assert_eq!(
            LatencyProfile::zero().latency("arm.agent_pools.create"),
            Duration::ZERO
        );
    }
}
