//! Azure Table Storage journal: the production journal, shared by every worker replica, with
//! compare-and-swap done by the service through ETags. Tested against Azurite.
//!
//! May touch: one table at one Table service endpoint, over HTTPS (HTTP for Azurite) with the
//! Table REST API (`x-ms-version` [`API_VERSION`]). No environment reads: endpoint, table and
//! credential come in through [`AzureTableJournal::new`].
//!
//! # Entities
//!
//! | what | PartitionKey | RowKey | properties |
//! |---|---|---|---|
//! | a record | `journal` | escaped key | `Version` (Int64), `Chunks` (Int32), `Data0`..`DataN` (Binary) |
//! | a name claim | `name` | escaped kind `:` escaped name | `Kind`, `Name`, `Owner` (String) |
//!
//! Escaping keeps `A-Z a-z 0-9 - _ .` and writes every other byte of the UTF-8 key as `~XX`
//! (upper-case hex), so keys with `/`, `#`, `?`, quotes or non-ASCII are safe in a RowKey and in
//! the entity's URL, and `:` is free to separate a claim's kind from its name.
//!
//! A record's JSON is stored as UTF-8 split over Binary properties of [`CHUNK_BYTES`] each, since a
//! single property holds at most 64 KiB; an entity holds at most 1 MiB, so a record may be up to
//! [`MAX_RECORD_BYTES`]. A larger record is refused ([`JournalError::Refused`](crate::JournalError::Refused)).
//!
//! # Compare-and-swap
//!
//! `Version` is ours; the service's ETag is what makes the swap atomic. Insert (`expected: None`)
//! is a POST, which the service refuses with 409 if the entity exists. Update (`expected:
//! Some(v)`) is a PUT (replace, so chunks of a longer previous value disappear) with `If-Match`
//! set to the ETag under which version `v` was read; the service refuses it with 412 if the entity
//! changed since. The ETag comes from this instance's last load or store of the key when that was
//! at version `v` (saving a round trip in the usual load-then-store-store pattern), otherwise from
//! a fresh read. The `found` version reported in a [`JournalError::Conflict`](crate::JournalError::Conflict) comes from a read
//! after the refusal and is informational.
//!
//! # Name claims
//!
//! Claims are checked by reading each claim entity, then the missing ones are inserted in one
//! entity-group transaction (`$batch`; all claims live in one partition, so this is allowed): the
//! service applies all of them or none. If another writer inserted one of them in between, the
//! batch fails with 409, nothing is applied, and the claim is re-evaluated (a name now held by
//! another tenant is [`JournalError::NameTaken`](crate::JournalError::NameTaken)). At most [`MAX_CLAIMS`] new names per call.
//!
//! # Errors
//!
//! Timeouts, connection failures, 408, 429 and 5xx are [`JournalError::Unavailable`](crate::JournalError::Unavailable) (transient);
//! 409/412 on a swap are [`JournalError::Conflict`](crate::JournalError::Conflict); 401/403 and other 4xx are
//! [`JournalError::Refused`](crate::JournalError::Refused) (permanent), a 403 naming the identity and the role it needs. This
//! client does not retry: the saga engine retries transient errors with its own backoff.
//!
//! # Modules
//!
//! - `client`: the [`AzureTableJournal`] itself, one signed REST request, how a refused request
//!   is classified, and the ETag cache behind the compare-and-swap.
//! - `signing`: Shared Key and bearer authorization of a request.
//! - `entity`: how a record and a name claim become entities (escaping, chunking, versions).
//! - `claims`: reading and inserting name-claim entities (the entity-group transaction).
//! - `journal`: the [`Journal`](super::Journal) implementation built on the above.

use std::sync::Arc;
use std::time::Duration;

use onboarding_core::TokenCredential;

mod claims;
mod client;
mod entity;
mod journal;
mod signing;

pub use client::AzureTableJournal;

/// The Table service REST API version this client speaks (the first to accept Entra tokens).
pub const API_VERSION: &str = "2019-02-02";
/// The scope of a bearer token for Azure Storage.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// The bytes of a record's JSON held by one Binary property (the service allows 64 KiB).
pub const CHUNK_BYTES: usize = 60 * 1024;
/// The largest record JSON stored, keeping the entity under the service's 1 MiB.
pub const MAX_RECORD_BYTES: usize = 15 * CHUNK_BYTES;
/// New names one `claim_names` call may insert: an entity-group transaction holds 100 entities.
pub const MAX_CLAIMS: usize = 100;

const RECORD_PARTITION: &str = "journal";
const NAME_PARTITION: &str = "name";
/// A RowKey may be up to 1 KiB.
const MAX_ROW_KEY_BYTES: usize = 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT: &str = "application/json;odata=nometadata";
const JSON: &str = "application/json";
/// Bound on the ETag cache, which holds one entry per key this instance touched.
const MAX_CACHED_ETAGS: usize = 4096;
/// How many times a claim is re-evaluated after racing with another writer's batch.
const CLAIM_ATTEMPTS: usize = 5;

/// How the journal proves who it is to the Table service.
#[derive(Clone)]
pub enum TableAuth {
    /// Shared Key: the storage account's name and one of its keys (base64). For Azurite and for
    /// accounts that allow key access.
    SharedKey { account: String, key: String },
    /// An Entra bearer token for `scope` (the credential's cloud's storage scope,
    /// [`STORAGE_SCOPE`] in all public clouds); the identity needs the "Storage Table Data
    /// Contributor" role on the account or the table.
    Bearer {
        credential: Arc<dyn TokenCredential>,
        scope: String,
    },
}

impl std::fmt::Debug for TableAuth {
    // The key must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableAuth::SharedKey { account, .. } => f
                .debug_struct("SharedKey")
                .field("account", account)
                .field("key", &"<redacted>")
                .finish(),
            TableAuth::Bearer { credential, scope } => f
                .debug_struct("Bearer")
                .field("credential", credential)
                .field("scope", scope)
                .finish(),
        }
    }
}

/// Azurite's well-known development account key, for the unit tests.
#[cfg(test)]
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
