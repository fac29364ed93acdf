//! The `[drift]` section: how often `worker run` verifies each onboarded tenant's live state
//! against its spec (the checks of `producer verify`) and announces drift as `tenant.drifted`.
//!
//! May touch: nothing; pure data.

use serde::{Deserialize, Serialize};

/// The periodic drift check.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftConfig {
    /// Seconds between two checks of a tenant; 0 (the default) turns the check off. Every
    /// check reads each tenant's resources and asks the API server a few dozen
    /// SubjectAccessReviews, so minutes, not seconds, in production.
    pub interval_secs: u64,
}

impl DriftConfig {
    /// The interval, when the check is on.
    pub fn interval(&self) -> Option<std::time::Duration> {
        (self.interval_secs > 0).then(|| std::time::Duration::from_secs(self.interval_secs))
    }
}
