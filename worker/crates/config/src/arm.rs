//! The `[arm]` section: the client-side write budget every replica of the worker shares per
//! subscription (`write_bucket` tokens, refilled at `write_refill_per_sec`), sized like ARM's own
//! write bucket so that a burst of onboardings waits its turn instead of meeting 429s. Lower it
//! when other clients (deployments, other automation with the same principal) write to the same
//! subscriptions.
//!
//! May touch: nothing; pure data.

use serde::{Deserialize, Serialize};

/// The largest `write_bucket` or `write_refill_per_sec` accepted: far above any ARM limit, so a
/// value past it is a typo.
pub const ARM_BUDGET_LIMIT: f64 = 100_000.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArmConfig {
    /// Writes that may go out at once after a quiet period (ARM: 200 per subscription).
    pub write_bucket: u32,
    /// Write tokens added per second (ARM: 10 per subscription).
    pub write_refill_per_sec: f64,
}

impl Default for ArmConfig {
    /// ARM's documented per-subscription write bucket: 200, refilled at 10 a second.
    fn default() -> Self {
        Self {
            write_bucket: 200,
            write_refill_per_sec: 10.0,
        }
    }
}

impl ArmConfig {
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.write_bucket == 0 {
            problems.push(
                "arm.write_bucket is 0: no write could ever go out (ARM's bucket is 200)".into(),
            );
        } else if f64::from(self.write_bucket) > ARM_BUDGET_LIMIT {
            problems.push(format!(
                "arm.write_bucket {} is above {ARM_BUDGET_LIMIT}: ARM's bucket is 200",
                self.write_bucket
            ));
        }
        let rate = self.write_refill_per_sec;
        if !rate.is_finite() || rate <= 0.0 {
            problems.push(format!(
                "arm.write_refill_per_sec {rate} must be above 0 (ARM refills 10 a second)"
            ));
        } else if rate > ARM_BUDGET_LIMIT {
            problems.push(format!(
                "arm.write_refill_per_sec {rate} is above {ARM_BUDGET_LIMIT}: ARM refills 10 a second"
            ));
        }
        problems
    }
}
