//! The request registry's documents: which tenant and which body each request id belongs to.
//!
//! A request id is an idempotency key across the whole worker, not per tenant. The saga engine
//! registers every request id it receives (`saga::engine::requests`); the producer reads the
//! registry to refuse a reused id before sending it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use onboarding_contract::Command;

/// Where the registry keeps a request id's entry in the journal (tenant ids cannot contain
/// `:`, so these keys never meet a tenant's record).
pub fn request_key(request_id: &str) -> String {
    format!("request:{request_id}")
}

/// One request id's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEntry {
    pub tenant_id: String,
    /// [`digest`] of the command first received under this id.
    pub digest: String,
    pub first_seen: DateTime<Utc>,
    /// The tenant's record has accepted the request (started or queued it).
    #[serde(default)]
    pub accepted: bool,
}

/// How `command` differs from what its request id was registered with, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reuse {
    OtherTenant(String),
    OtherBody(DateTime<Utc>),
}

impl RequestEntry {
    pub fn new(command: &Command, now: DateTime<Utc>) -> Self {
        Self {
            tenant_id: command.tenant_id().to_string(),
            digest: digest(command),
            first_seen: now,
            accepted: false,
        }
    }

    /// Whether `command` may use this entry's request id: same tenant, same body.
    pub fn reuse_by(&self, command: &Command) -> Option<Reuse> {
        if self.tenant_id != command.tenant_id() {
            Some(Reuse::OtherTenant(self.tenant_id.clone()))
        } else if self.digest != digest(command) {
            Some(Reuse::OtherBody(self.first_seen))
        } else {
            None
        }
    }
}

impl Reuse {
    /// What is wrong and what to do, naming the request id.
    pub fn describe(&self, request_id: &str) -> String {
        match self {
            Reuse::OtherTenant(tenant) => format!(
                "request id {request_id} already belongs to a request for tenant {tenant}; a request id names one request forever: send this one with a new request id"
            ),
            Reuse::OtherBody(first_seen) => format!(
                "request id {request_id} was first received (at {}) with a different body; a request id names one request forever: send the changed request with a new request id",
                first_seen.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        }
    }
}

/// SHA-256 of the parsed command as JSON: formatting and key order of the message do not
/// matter, any difference in what it asks for does.
pub fn digest(command: &Command) -> String {
    let bytes = serde_json::to_vec(command).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use onboarding_contract::{OffboardTenant, OnboardTenant};

    use super::*;

    #[test]
    fn the_digest_depends_on_the_body_not_on_how_it_was_written() {
        let a = Command::Onboard(OnboardTenant::new("r1", "acme"));
        let parsed: Command =
            serde_json::from_str(&serde_json::to_string_pretty(&a).unwrap()).unwrap();
        assert_eq!(digest(&a), digest(&parsed));
        let mut other = OnboardTenant::new("r1", "acme");
        other.node_pool.count = Some(7);
        assert_ne!(digest(&a), digest(&Command::Onboard(other)));
        assert_ne!(
            digest(&a),
            digest(&Command::Offboard(OffboardTenant::new("r1", "acme")))
        );
    }

    #[test]
    fn a_request_id_may_be_reused_only_by_the_same_tenant_with_the_same_body() {
        let now = Utc::now();
        let first = Command::Onboard(OnboardTenant::new("r1", "acme"));
        let entry = RequestEntry::new(&first, now);
        assert_eq!(entry.reuse_by(&first), None);
        let beta = Command::Onboard(OnboardTenant::new("r1", "beta"));
        assert_eq!(
            entry.reuse_by(&beta),
            Some(Reuse::OtherTenant("acme".into()))
        );
        let mut changed = OnboardTenant::new("r1", "acme");
        changed.admin_group_id = Some("11111111-2222-3333-4444-555555555555".into());
        assert_eq!(
            entry.reuse_by(&Command::Onboard(changed)),
            Some(Reuse::OtherBody(now))
        );
        assert!(
            Reuse::OtherTenant("acme".into())
                .describe("r1")
                .contains("tenant acme")
        );
    }
}
