//! The request registry: which tenant and which body each request id belongs to, forever.
//!
//! A request id is an idempotency key across the whole worker, not per tenant. The first
//! message with an id registers the tenant and a digest of the parsed command; a later message
//! with that id for another tenant, or with another body, is refused (and its outcome events
//! could otherwise share ids with the first request's). Once the tenant has accepted the request
//! (started or queued it) the entry says so, so that a replay long after the tenant's record has
//! forgotten the request is recognised as superseded instead of being applied again.
//!
//! The entry is written before the tenant's record accepts the request and marked accepted only
//! after the record is saved: a crash in between leaves an entry that is not marked, and the
//! redelivery finds the request in the tenant's record and marks it then.
//!
//! May touch: the journal, under [`request_key`]s.

use onboarding_contract::Command;
use onboarding_contract::validate::{FieldError, RejectReason, Rejection};
use onboarding_journal::JournalError;

use super::{Engine, EngineError};
use crate::record::{RequestEntry, request_key};

fn refusal(command: &Command, reason: RejectReason, message: String) -> Rejection {
    let mut r = Rejection::new(reason, vec![FieldError::new("/requestId", message)]);
    r.request_id = Some(command.request_id().to_string());
    r.tenant_id = Some(command.tenant_id().to_string());
    r
}

/// A request the tenant carried out before, replayed after a later one was accepted.
pub(super) fn superseded(command: &Command, latest: Option<&str>) -> Rejection {
    let since = latest.map_or_else(String::new, |l| format!(" (latest: {l})"));
    refusal(
        command,
        RejectReason::Superseded,
        format!(
            "request {} was already carried out for tenant {} and a later request has been accepted since{since}; applying it again would roll the tenant back. To apply this spec again, send it with a new request id",
            command.request_id(),
            command.tenant_id()
        ),
    )
}

impl Engine {
    /// Register the command's request id, or refuse it when the id belongs to another tenant
    /// or another body. Returns the entry as stored.
    pub(super) async fn register(
        &self,
        command: &Command,
    ) -> Result<Result<RequestEntry, Rejection>, EngineError> {
        let key = request_key(command.request_id());
        let fresh = RequestEntry::new(command, self.cx.clock.now());
        for _ in 0..5 {
            let Some(stored) = self.cx.journal.load(&key).await? else {
                let value = to_value(&key, &fresh)?;
                match self.cx.journal.store(&key, &value, None).await {
                    Ok(_) => return Ok(Ok(fresh)),
                    // Registered meanwhile by another worker: read what it wrote.
                    Err(JournalError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            let entry: RequestEntry =
                serde_json::from_value(stored.value).map_err(|e| EngineError::Corrupt {
                    tenant: key.clone(),
                    message: e.to_string(),
                })?;
            if let Some(reuse) = entry.reuse_by(command) {
                return Ok(Err(refusal(
                    command,
                    RejectReason::RequestIdReused,
                    reuse.describe(command.request_id()),
                )));
            }
            return Ok(Ok(entry));
        }
        Err(EngineError::Journal(JournalError::Conflict {
            key,
            expected: None,
            found: None,
        }))
    }

    /// Note in the registry that the tenant's record has accepted the request.
    pub(super) async fn mark_accepted(&self, request_id: &str) -> Result<(), EngineError> {
        let key = request_key(request_id);
        for _ in 0..5 {
            let Some(stored) = self.cx.journal.load(&key).await? else {
                return Ok(());
            };
            let mut entry: RequestEntry =
                serde_json::from_value(stored.value).map_err(|e| EngineError::Corrupt {
                    tenant: key.clone(),
                    message: e.to_string(),
                })?;
            if entry.accepted {
                return Ok(());
            }
            entry.accepted = true;
            let value = to_value(&key, &entry)?;
            match self
                .cx
                .journal
                .store(&key, &value, Some(stored.version))
                .await
            {
                Ok(_) => return Ok(()),
                Err(JournalError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Journal(JournalError::Conflict {
            key,
            expected: None,
            found: None,
        }))
    }
}

fn to_value(key: &str, entry: &RequestEntry) -> Result<serde_json::Value, EngineError> {
    serde_json::to_value(entry).map_err(|e| EngineError::Corrupt {
        tenant: key.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use onboarding_contract::OnboardTenant;

    use super::*;

    #[test]
    fn a_superseded_refusal_names_the_request_and_what_to_do() {
        let command = Command::Onboard(OnboardTenant::new("r1", "acme"));
        let r = superseded(&command, Some("r9"));
        assert_eq!(r.reason, RejectReason::Superseded);
        assert_eq!(r.errors[0].path, "/requestId");
        assert!(r.errors[0].message.contains("r9"));
        assert!(r.errors[0].message.contains("new request id"));
    }
}
