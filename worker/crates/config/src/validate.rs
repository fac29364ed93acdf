//! Validation of a whole configuration: every problem at once, each naming the setting, so an
//! operator fixes a file in one pass. Section checks live with their sections; this module
//! checks what spans sections (the default target, the saga budget against the lock duration).
//!
//! May touch: nothing; pure validation.

use crate::{Config, ConfigError, TransportConfig, targets};

impl Config {
    /// Every problem at once, each naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if !self.targets.contains_key(&self.default_target) {
            problems.push(format!(
                "default_target {:?} is not one of the configured targets ({})",
                self.default_target,
                self.targets.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        for (name, t) in &self.targets {
            problems.extend(targets::problems(name, t));
        }
        let s = &self.saga;
        if s.message_budget_ms == 0 {
            problems.push("saga.message_budget_ms must be above 0".into());
        }
        if let TransportConfig::Embedded {
            lock_duration_secs, ..
        } = &self.transport
            && s.message_budget_ms >= lock_duration_secs.saturating_mul(1000)
        {
            problems.push(format!(
                "saga.message_budget_ms ({}) must be shorter than transport.lock_duration_secs ({}s)",
                s.message_budget_ms, lock_duration_secs
            ));
        }
        problems.extend(self.transport.problems());
        if self.worker.concurrency == 0 {
            problems.push("worker.concurrency must be at least 1".into());
        }
        problems.extend(self.journal.problems());
        if self.telemetry.service_name.trim().is_empty() {
            problems.push(
                "telemetry.service_name is empty (it names the worker in traces and metrics)"
                    .into(),
            );
        }
        if self.health.port != 0 && self.health.address.parse::<std::net::IpAddr>().is_err() {
            problems.push(format!(
                "health.address {:?} is not an IP address (0.0.0.0 listens on every interface, 127.0.0.1 on loopback only)",
                self.health.address
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}
