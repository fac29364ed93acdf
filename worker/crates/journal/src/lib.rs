//! The journal: durable, versioned saga state per tenant, written with compare-and-swap.
//!
//! The journal is a small document store. The saga engine owns the document's shape (see
//! `saga::record`); the journal only guarantees that a write based on a stale version fails, so
//! that two workers can never both advance one tenant's saga. It also keeps a registry of
//! derived resource names, so two tenants whose names shorten to the same string are refused
//! instead of sharing a resource. Implementations: SQLite ([`sqlite`]) for the embedded default,
//! Azure Table Storage in production; both pass `onboarding_testkit::journal_conformance`.

use serde::Serialize;

use onboarding_core::{Classify, ErrorClass};

pub mod azure_table;

pub mod sqlite;

/// A stored document and the version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub version: u64,
    pub value: T,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "journal record {key} changed underneath us (expected version {expected:?}, found {found:?}); another worker holds it, reload and retry"
    )]
    Conflict {
        key: String,
        expected: Option<u64>,
        found: Option<u64>,
    },
    #[error(
        "the {kind} name {name:?} derived for tenant {tenant} is already used by tenant {owner}; choose another tenant id"
    )]
    NameTaken {
        kind: String,
        name: String,
        tenant: String,
        owner: String,
    },
    #[error("journal storage is unavailable: {0}; retry shortly")]
    Unavailable(String),
    #[error("journal record {key} cannot be read: {message}")]
    Corrupt { key: String, message: String },
    /// The storage refused the request for a reason retrying will not fix (missing permission,
    /// missing table, a record too large for the store). The message says what to change.
    #[error("journal storage refused the request: {0}")]
    Refused(String),
}

impl Classify for JournalError {
    fn class(&self) -> ErrorClass {
        match self {
            JournalError::Conflict { .. } | JournalError::Unavailable(_) => ErrorClass::Transient,
            JournalError::NameTaken { .. } => ErrorClass::InvalidInput,
            JournalError::Corrupt { .. } | JournalError::Refused(_) => ErrorClass::Permanent,
        }
    }
}

/// A claim on a derived resource name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameClaim {
    /// Resource kind, e.g. `node_pool`.
    pub kind: String,
    pub name: String,
}

#[async_trait::async_trait]
pub trait Journal: Send + Sync + std::fmt::Debug {
    async fn load(&self, key: &str) -> Result<Option<Versioned<serde_json::Value>>, JournalError>;

    /// Write `value` if the stored version equals `expected` (`None`: the key must not exist).
    /// Returns the new version. Any other stored version is a [`JournalError::Conflict`].
    async fn store(
        &self,
        key: &str,
        value: &serde_json::Value,
        expected: Option<u64>,
    ) -> Result<u64, JournalError>;

    /// Every key, sorted.
    async fn keys(&self) -> Result<Vec<String>, JournalError>;

    /// Claim every name for `tenant`, all or nothing. Claiming a name the tenant already owns
    /// succeeds; a name owned by another tenant is [`JournalError::NameTaken`] and claims none.
    async fn claim_names(&self, tenant: &str, claims: &[NameClaim]) -> Result<(), JournalError>;

    /// Release the claims `tenant` owns among `claims` (a purged tenant's names become free
    /// for others); a claim owned by anyone else, or by no one, is left as it is.
    async fn release_names(&self, tenant: &str, claims: &[NameClaim]) -> Result<(), JournalError>;

    /// Cheap reachability check for readiness probes.
    async fn ping(&self) -> Result<(), JournalError>;
}
