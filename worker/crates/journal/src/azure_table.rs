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
//! [`MAX_RECORD_BYTES`]. A larger record is refused ([`JournalError::Refused`]).
//!
//! # Compare-and-swap
//!
//! `Version` is ours; the service's ETag is what makes the swap atomic. Insert (`expected: None`)
//! is a POST, which the service refuses with 409 if the entity exists. Update (`expected:
//! Some(v)`) is a PUT (replace, so chunks of a longer previous value disappear) with `If-Match`
//! set to the ETag under which version `v` was read; the service refuses it with 412 if the entity
//! changed since. The ETag comes from this instance's last load or store of the key when that was
//! at version `v` (saving a round trip in the usual load-then-store-store pattern), otherwise from
//! a fresh read. The `found` version reported in a [`JournalError::Conflict`] comes from a read
//! after the refusal and is informational.
//!
//! # Name claims
//!
//! Claims are checked by reading each claim entity, then the missing ones are inserted in one
//! entity-group transaction (`$batch`; all claims live in one partition, so this is allowed): the
//! service applies all of them or none. If another writer inserted one of them in between, the
//! batch fails with 409, nothing is applied, and the claim is re-evaluated (a name now held by
//! another tenant is [`JournalError::NameTaken`]). At most [`MAX_CLAIMS`] new names per call.
//!
//! # Errors
//!
//! Timeouts, connection failures, 408, 429 and 5xx are [`JournalError::Unavailable`] (transient);
//! 409/412 on a swap are [`JournalError::Conflict`]; 401/403 and other 4xx are
//! [`JournalError::Refused`] (permanent), a 403 naming the identity and the role it needs. This
//! client does not retry: the saga engine retries transient errors with its own backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use tracing::Instrument;
use url::Url;

use super::{Journal, JournalError, NameClaim, Versioned};
use onboarding_core::ErrorClass;
use onboarding_core::TokenCredential;

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
    /// An Entra bearer token for [`STORAGE_SCOPE`]; the identity needs the "Storage Table Data
    /// Contributor" role on the account or the table.
    Bearer(Arc<dyn TokenCredential>),
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
            TableAuth::Bearer(credential) => f.debug_tuple("Bearer").field(credential).finish(),
        }
    }
}

enum Signer {
    SharedKey { account: String, key: Vec<u8> },
    Bearer(Arc<dyn TokenCredential>),
}

/// The Azure Table journal. See the module docs for the entity layout and the guarantees.
pub struct AzureTableJournal {
    http: reqwest::Client,
    /// The endpoint without a trailing slash: `https://acct.table.core.windows.net` or
    /// `http://127.0.0.1:10002/devstoreaccount1`.
    base: String,
    table: String,
    signer: Signer,
    /// key -> (version, ETag) as last seen by this instance.
    etags: Mutex<HashMap<String, (u64, String)>>,
}

impl std::fmt::Debug for AzureTableJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureTableJournal")
            .field("endpoint", &self.base)
            .field("table", &self.table)
            .field("auth", &self.identity())
            .finish()
    }
}

impl AzureTableJournal {
    /// A journal in `table` at the Table service `endpoint` (e.g.
    /// `https://acct.table.core.windows.net` or `http://127.0.0.1:10002/devstoreaccount1`).
    /// Checks the settings only; nothing is sent until the first call ([`Self::ensure_table`]
    /// creates the table).
    pub fn new(endpoint: Url, table: String, auth: TableAuth) -> Result<Self, JournalError> {
        if !matches!(endpoint.scheme(), "https" | "http") || endpoint.cannot_be_a_base() {
            return Err(JournalError::Refused(format!(
                "the Table service endpoint {endpoint} is not an http(s) URL; use e.g. https://<account>.table.core.windows.net"
            )));
        }
        if endpoint.query().is_some() || endpoint.fragment().is_some() {
            return Err(JournalError::Refused(format!(
                "the Table service endpoint {endpoint} has a query or fragment; give the bare endpoint (authentication is configured separately)"
            )));
        }
        validate_table_name(&table)?;
        let signer = match auth {
            TableAuth::SharedKey { account, key } => {
                if account.is_empty() {
                    return Err(JournalError::Refused(
                        "the storage account name for Shared Key authentication is empty"
                            .to_string(),
                    ));
                }
                let key = BASE64.decode(key.trim()).map_err(|e| {
                    JournalError::Refused(format!(
                        "the Shared Key of storage account {account} is not valid base64 ({e}); copy key1 or key2 of the account"
                    ))
                })?;
                Signer::SharedKey { account, key }
            }
            TableAuth::Bearer(credential) => Signer::Bearer(credential),
        };
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| {
                JournalError::Unavailable(format!(
                    "cannot build the HTTP client for Azure Table: {e}"
                ))
            })?;
        Ok(Self {
            http,
            base: endpoint.as_str().trim_end_matches('/').to_string(),
            table,
            signer,
            etags: Mutex::new(HashMap::new()),
        })
    }

    /// The table this journal uses.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table if it does not exist. Idempotent.
    pub async fn ensure_table(&self) -> Result<(), JournalError> {
        let body = serde_json::to_vec(&json!({ "TableName": self.table })).map_err(|e| {
            JournalError::Refused(format!("cannot encode the table creation request: {e}"))
        })?;
        let response = self
            .send(
                Method::POST,
                "/Tables",
                Some((JSON, body)),
                &[("Prefer", "return-no-content")],
            )
            .await?;
        let status = response.status();
        if status.is_success() {
            tracing::info!(table = %self.table, "created the journal table");
            return Ok(());
        }
        let failure = Failure::read(response).await;
        if status == StatusCode::CONFLICT && failure.code == "TableAlreadyExists" {
            return Ok(());
        }
        Err(self.classify("create table", &self.table, failure))
    }

    fn identity(&self) -> String {
        match &self.signer {
            Signer::SharedKey { account, .. } => {
                format!("Shared Key of storage account {account}")
            }
            Signer::Bearer(credential) => format!("Entra credential {credential:?}"),
        }
    }

    fn table_path(&self) -> String {
        format!("/{}", self.table)
    }

    fn entity_path(&self, partition: &str, row: &str) -> String {
        // Both keys are escaped to `[A-Za-z0-9._~:-]`: no quote to double, nothing to encode.
        format!("/{}(PartitionKey='{partition}',RowKey='{row}')", self.table)
    }

    /// Sends one signed request; any HTTP status is returned, only transport failures are errors.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::Response, JournalError> {
        let url = Url::parse(&format!("{}{path_and_query}", self.base)).map_err(|e| {
            JournalError::Refused(format!(
                "cannot form a request URL from {}{path_and_query}: {e}",
                self.base
            ))
        })?;
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let content_type = body.as_ref().map(|(ct, _)| *ct).unwrap_or("");
        let authorization = match &self.signer {
            Signer::SharedKey { account, key } => {
                let to_sign = string_to_sign(
                    method.as_str(),
                    "",
                    content_type,
                    &date,
                    &canonicalized_resource(account, &url),
                );
                format!("SharedKey {account}:{}", sign(key, &to_sign))
            }
            Signer::Bearer(credential) => {
                let token = credential.token(STORAGE_SCOPE).await.map_err(|e| {
                    if e.class == ErrorClass::Transient {
                        JournalError::Unavailable(e.to_string())
                    } else {
                        JournalError::Refused(e.to_string())
                    }
                })?;
                format!("Bearer {}", token.token)
            }
        };
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .header("x-ms-date", &date)
            .header("x-ms-version", API_VERSION)
            .header("Accept", ACCEPT)
            .header("DataServiceVersion", "3.0;NetFx")
            .header("MaxDataServiceVersion", "3.0;NetFx")
            .header("Authorization", authorization);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("Content-Type", content_type).body(bytes);
        }
        request.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "failed"
            };
            JournalError::Unavailable(format!(
                "Azure Table request {method} {} {what}: {e}",
                url.path()
            ))
        })
    }

    /// Turns a refused request into the error the caller acts on.
    fn classify(&self, operation: &str, target: &str, failure: Failure) -> JournalError {
        let Failure {
            status,
            code,
            message,
        } = failure;
        let what = format!(
            "Azure Table {} at {}: {operation} {target} failed with HTTP {status} {code}: {message}",
            self.table, self.base
        );
        match status {
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
                JournalError::Unavailable(what)
            }
            s if s.is_server_error() => JournalError::Unavailable(what),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                let fix = match &self.signer {
                    Signer::SharedKey { account, .. } => format!(
                        "check that {account} and its key are the storage account's current name and key1/key2 and that Shared Key access is allowed on the account; with Entra authentication the identity needs the \"Storage Table Data Contributor\" role"
                    ),
                    Signer::Bearer(_) => format!(
                        "the identity of the {} needs the \"Storage Table Data Contributor\" role on the storage account or the table {} (a new role assignment can take minutes to apply)",
                        self.identity(),
                        self.table
                    ),
                };
                JournalError::Refused(format!("{what}; {fix}"))
            }
            StatusCode::NOT_FOUND if code == "TableNotFound" => JournalError::Refused(format!(
                "{what}; the table does not exist: create it (AzureTableJournal::ensure_table, or in the storage account)"
            )),
            _ => JournalError::Refused(what),
        }
    }

    fn remember(&self, key: &str, version: u64, etag: Option<String>) {
        let mut etags = self.etags.lock().unwrap_or_else(|p| p.into_inner());
        match etag {
            Some(etag) => {
                if etags.len() >= MAX_CACHED_ETAGS && !etags.contains_key(key) {
                    etags.clear();
                }
                etags.insert(key.to_string(), (version, etag));
            }
            None => {
                etags.remove(key);
            }
        }
    }

    fn forget(&self, key: &str) {
        self.etags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    fn cached_etag(&self, key: &str, version: u64) -> Option<String> {
        let etags = self.etags.lock().unwrap_or_else(|p| p.into_inner());
        etags
            .get(key)
            .filter(|(v, _)| *v == version)
            .map(|(_, etag)| etag.clone())
    }

    /// Reads a record entity: `None` if absent, else the entity's properties and ETag.
    async fn get_record(
        &self,
        key: &str,
        row: &str,
        version_only: bool,
    ) -> Result<Option<(Map<String, Value>, Option<String>)>, JournalError> {
        let mut path = self.entity_path(RECORD_PARTITION, row);
        if version_only {
            path.push_str("?$select=Version");
        }
        let response = self.send(Method::GET, &path, None, &[]).await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            let failure = Failure::read(response).await;
            if failure.code == "TableNotFound" {
                return Err(self.classify("read record", key, failure));
            }
            self.forget(key);
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.classify("read record", key, Failure::read(response).await));
        }
        let etag = etag_of(&response);
        let bytes = response.bytes().await.map_err(|e| {
            JournalError::Unavailable(format!(
                "reading the Azure Table record {key} was cut off: {e}"
            ))
        })?;
        let entity: Map<String, Value> =
            serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt {
                key: key.to_string(),
                message: format!("the Table service returned an entity that is not JSON: {e}"),
            })?;
        Ok(Some((entity, etag)))
    }

    /// The version stored now, for the `found` of a conflict.
    async fn current_version(&self, key: &str, row: &str) -> Result<Option<u64>, JournalError> {
        match self.get_record(key, row, true).await? {
            None => Ok(None),
            Some((entity, etag)) => {
                let version = entity_version(key, &entity)?;
                self.remember(key, version, etag);
                Ok(Some(version))
            }
        }
    }

    async fn get_claim_owner(&self, claim: &NameClaim) -> Result<Option<String>, JournalError> {
        let row = claim_row_key(claim)?;
        let target = format!("{}/{}", claim.kind, claim.name);
        let response = self
            .send(
                Method::GET,
                &self.entity_path(NAME_PARTITION, &row),
                None,
                &[],
            )
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            let failure = Failure::read(response).await;
            if failure.code == "TableNotFound" {
                return Err(self.classify("read name claim", &target, failure));
            }
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.classify("read name claim", &target, Failure::read(response).await));
        }
        let entity: Map<String, Value> = response.json().await.map_err(|e| {
            JournalError::Unavailable(format!("reading the name claim {target} failed: {e}"))
        })?;
        match entity.get("Owner").and_then(Value::as_str) {
            Some(owner) => Ok(Some(owner.to_string())),
            None => Err(JournalError::Corrupt {
                key: format!("name claim {target}"),
                message: "the claim entity has no Owner".to_string(),
            }),
        }
    }

    /// Inserts the claims in one entity-group transaction. `Ok(false)`: one of them exists now
    /// (another writer was faster) and nothing was inserted.
    async fn insert_claims(
        &self,
        tenant: &str,
        claims: &[&NameClaim],
    ) -> Result<bool, JournalError> {
        let batch = format!("batch_{}", uuid::Uuid::new_v4());
        let changeset = format!("changeset_{}", uuid::Uuid::new_v4());
        let table_url = format!("{}{}", self.base, self.table_path());
        let mut body = String::new();
        body.push_str(&format!("--{batch}\r\n"));
        body.push_str(&format!(
            "Content-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
        ));
        for claim in claims {
            let entity = json!({
                "PartitionKey": NAME_PARTITION,
                "RowKey": claim_row_key(claim)?,
                "Kind": claim.kind,
                "Name": claim.name,
                "Owner": tenant,
            });
            body.push_str(&format!("--{changeset}\r\n"));
            body.push_str("Content-Type: application/http\r\n");
            body.push_str("Content-Transfer-Encoding: binary\r\n\r\n");
            body.push_str(&format!("POST {table_url} HTTP/1.1\r\n"));
            body.push_str(&format!("Content-Type: {JSON}\r\n"));
            body.push_str(&format!("Accept: {ACCEPT}\r\n"));
            body.push_str("Prefer: return-no-content\r\n");
            body.push_str("DataServiceVersion: 3.0;\r\n\r\n");
            body.push_str(&entity.to_string());
            body.push_str("\r\n");
        }
        body.push_str(&format!("--{changeset}--\r\n"));
        body.push_str(&format!("--{batch}--\r\n"));
        let content_type = format!("multipart/mixed; boundary={batch}");
        let response = self
            .send(
                Method::POST,
                "/$batch",
                Some((content_type.as_str(), body.into_bytes())),
                &[],
            )
            .await?;
        let target = format!("{} names for tenant {tenant}", claims.len());
        if !response.status().is_success() {
            return Err(self.classify("claim", &target, Failure::read(response).await));
        }
        let text = response.text().await.map_err(|e| {
            JournalError::Unavailable(format!(
                "reading the answer to claiming {target} was cut off: {e}"
            ))
        })?;
        match batch_failure(&text) {
            None => Ok(true),
            Some(failure) if failure.status == StatusCode::CONFLICT => Ok(false),
            Some(failure) => Err(self.classify("claim", &target, failure)),
        }
    }
}

#[async_trait::async_trait]
impl Journal for AzureTableJournal {
    async fn load(&self, key: &str) -> Result<Option<Versioned<Value>>, JournalError> {
        let row = escape_key(key)?;
        let Some((entity, etag)) = self.get_record(key, &row, false).await? else {
            return Ok(None);
        };
        let version = entity_version(key, &entity)?;
        let value = entity_value(key, &entity)?;
        self.remember(key, version, etag);
        Ok(Some(Versioned { version, value }))
    }

    async fn store(
        &self,
        key: &str,
        value: &Value,
        expected: Option<u64>,
    ) -> Result<u64, JournalError> {
        let span =
            tracing::debug_span!("journal.store", journal.key = %key, journal.expected = ?expected);
        async {
            let row = escape_key(key)?;
            let json = serde_json::to_vec(value).map_err(|e| JournalError::Corrupt {
                key: key.to_string(),
                message: format!("value cannot be serialised: {e}"),
            })?;
            let new_version = match expected {
                None => 1,
                Some(v) => v.checked_add(1).ok_or_else(|| JournalError::Corrupt {
                    key: key.to_string(),
                    message: format!("version {v} cannot be incremented"),
                })?,
            };
            let entity = record_entity(key, &row, new_version, &json)?;
            let body = serde_json::to_vec(&entity).map_err(|e| JournalError::Corrupt {
                key: key.to_string(),
                message: format!("entity cannot be serialised: {e}"),
            })?;
            let conflict = |found| JournalError::Conflict {
                key: key.to_string(),
                expected,
                found,
            };
            let response = match expected {
                None => {
                    self.send(
                        Method::POST,
                        &self.table_path(),
                        Some((JSON, body)),
                        &[("Prefer", "return-no-content")],
                    )
                    .await?
                }
                Some(v) => {
                    let etag = match self.cached_etag(key, v) {
                        Some(etag) => etag,
                        None => match self.get_record(key, &row, true).await? {
                            None => return Err(conflict(None)),
                            Some((entity, etag)) => {
                                let found = entity_version(key, &entity)?;
                                self.remember(key, found, etag.clone());
                                match etag {
                                    Some(etag) if found == v => etag,
                                    Some(_) => return Err(conflict(Some(found))),
                                    None => {
                                        return Err(JournalError::Unavailable(format!(
                                            "the Table service returned record {key} without an ETag; cannot update it safely"
                                        )));
                                    }
                                }
                            }
                        },
                    };
                    self.send(
                        Method::PUT,
                        &self.entity_path(RECORD_PARTITION, &row),
                        Some((JSON, body)),
                        &[("If-Match", etag.as_str())],
                    )
                    .await?
                }
            };
            let status = response.status();
            if status.is_success() {
                self.remember(key, new_version, etag_of(&response));
                return Ok(new_version);
            }
            let failure = Failure::read(response).await;
            let lost_race = match expected {
                None => status == StatusCode::CONFLICT,
                Some(_) => {
                    status == StatusCode::PRECONDITION_FAILED
                        || (status == StatusCode::NOT_FOUND && failure.code != "TableNotFound")
                }
            };
            if lost_race {
                self.forget(key);
                let found = self.current_version(key, &row).await?;
                return Err(conflict(found));
            }
            Err(self.classify("store record", key, failure))
        }
        .instrument(span)
        .await
    }

    async fn keys(&self) -> Result<Vec<String>, JournalError> {
        let filter = percent_encode(&format!("PartitionKey eq '{RECORD_PARTITION}'"));
        let mut keys = Vec::new();
        let mut next: Option<(String, String)> = None;
        loop {
            let mut path = format!("{}()?$filter={filter}&$select=RowKey", self.table_path());
            if let Some((partition, row)) = &next {
                path.push_str(&format!(
                    "&NextPartitionKey={}&NextRowKey={}",
                    percent_encode(partition),
                    percent_encode(row)
                ));
            }
            let response = self.send(Method::GET, &path, None, &[]).await?;
            if !response.status().is_success() {
                return Err(self.classify("list", "records", Failure::read(response).await));
            }
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            next = match (
                header("x-ms-continuation-NextPartitionKey"),
                header("x-ms-continuation-NextRowKey"),
            ) {
                (Some(p), Some(r)) => Some((p, r)),
                _ => None,
            };
            let page: Value = response.json().await.map_err(|e| {
                JournalError::Unavailable(format!("reading the list of records failed: {e}"))
            })?;
            let rows = page.get("value").and_then(Value::as_array).ok_or_else(|| {
                JournalError::Corrupt {
                    key: "(list)".to_string(),
                    message: "the Table service's query answer has no value array".to_string(),
                }
            })?;
            for row in rows {
                let row_key = row.get("RowKey").and_then(Value::as_str).ok_or_else(|| {
                    JournalError::Corrupt {
                        key: "(list)".to_string(),
                        message: "a listed entity has no RowKey".to_string(),
                    }
                })?;
                keys.push(unescape_key(row_key)?);
            }
            if next.is_none() {
                break;
            }
        }
        // Escaping does not keep byte order (`~` sorts after letters), so sort the decoded keys.
        keys.sort();
        Ok(keys)
    }

    async fn claim_names(&self, tenant: &str, claims: &[NameClaim]) -> Result<(), JournalError> {
        let span =
            tracing::debug_span!("journal.claim_names", tenant.id = %tenant, claims = claims.len());
        async {
            let mut distinct: Vec<&NameClaim> = Vec::new();
            for claim in claims {
                if !distinct.contains(&claim) {
                    distinct.push(claim);
                }
            }
            for _ in 0..CLAIM_ATTEMPTS {
                let owners =
                    futures::future::try_join_all(distinct.iter().map(|c| self.get_claim_owner(c)))
                        .await?;
                let mut missing = Vec::new();
                for (claim, owner) in distinct.iter().zip(owners) {
                    match owner {
                        Some(owner) if owner != tenant => {
                            return Err(JournalError::NameTaken {
                                kind: claim.kind.clone(),
                                name: claim.name.clone(),
                                tenant: tenant.to_string(),
                                owner,
                            });
                        }
                        Some(_) => {}
                        None => missing.push(*claim),
                    }
                }
                if missing.is_empty() {
                    return Ok(());
                }
                if missing.len() > MAX_CLAIMS {
                    return Err(JournalError::Refused(format!(
                        "tenant {tenant} claims {} new names at once; the Azure Table journal claims at most {MAX_CLAIMS} in one transaction",
                        missing.len()
                    )));
                }
                if self.insert_claims(tenant, &missing).await? {
                    return Ok(());
                }
                // Someone inserted one of these names in between: look again.
            }
            Err(JournalError::Unavailable(format!(
                "claiming names for tenant {tenant} kept racing with other writers; retry"
            )))
        }
        .instrument(span)
        .await
    }

    async fn ping(&self) -> Result<(), JournalError> {
        let path = format!("{}()?$top=1&$select=PartitionKey", self.table_path());
        let response = self.send(Method::GET, &path, None, &[]).await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.classify("ping", "table", Failure::read(response).await))
    }
}

/// A refused request: status and the service's error code and message.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    code: String,
    message: String,
}

impl Failure {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let header_code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.unwrap_or_default();
        Self::parse(status, header_code, &text)
    }

    fn parse(status: StatusCode, header_code: Option<String>, text: &str) -> Self {
        let parsed: Option<Value> = serde_json::from_str(text.trim()).ok();
        let error = parsed.as_ref().and_then(|v| v.get("odata.error"));
        let code = error
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(header_code)
            .unwrap_or_default();
        let message = error
            .and_then(|e| e.get("message"))
            .and_then(|m| m.get("value").or(Some(m)))
            .and_then(Value::as_str)
            .map(|m| m.lines().next().unwrap_or("").to_string())
            .unwrap_or_else(|| text.chars().take(300).collect());
        Self {
            status,
            code,
            message,
        }
    }
}

/// The first failed operation in an entity-group transaction's answer, if any. A failed
/// changeset is answered with the one response that failed (and nothing applied).
fn batch_failure(text: &str) -> Option<Failure> {
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("HTTP/1.1 ") else {
            continue;
        };
        let status = rest
            .split_whitespace()
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::BAD_GATEWAY);
        if status.is_success() {
            continue;
        }
        // The part's body follows its headers and ends at the next boundary.
        let mut body = String::new();
        let mut in_body = false;
        for line in lines.by_ref() {
            if line.starts_with("--") {
                break;
            }
            if in_body {
                body.push_str(line);
            } else if line.trim().is_empty() {
                in_body = true;
            }
        }
        return Some(Failure::parse(status, None, &body));
    }
    None
}

fn etag_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("ETag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn record_entity(
    key: &str,
    row: &str,
    version: u64,
    json: &[u8],
) -> Result<Map<String, Value>, JournalError> {
    if json.len() > MAX_RECORD_BYTES {
        return Err(JournalError::Refused(format!(
            "journal record {key} is {} bytes of JSON, more than the {MAX_RECORD_BYTES} an Azure Table entity holds; the saga record must shrink",
            json.len()
        )));
    }
    let mut entity = Map::new();
    entity.insert("PartitionKey".into(), json!(RECORD_PARTITION));
    entity.insert("RowKey".into(), json!(row));
    entity.insert("Version@odata.type".into(), json!("Edm.Int64"));
    entity.insert("Version".into(), json!(version.to_string()));
    let chunks: Vec<&[u8]> = json.chunks(CHUNK_BYTES).collect();
    entity.insert("Chunks".into(), json!(chunks.len()));
    for (i, chunk) in chunks.iter().enumerate() {
        entity.insert(format!("Data{i}@odata.type"), json!("Edm.Binary"));
        entity.insert(format!("Data{i}"), json!(BASE64.encode(chunk)));
    }
    Ok(entity)
}

fn corrupt(key: &str, message: impl Into<String>) -> JournalError {
    JournalError::Corrupt {
        key: key.to_string(),
        message: message.into(),
    }
}

fn entity_version(key: &str, entity: &Map<String, Value>) -> Result<u64, JournalError> {
    // Without metadata, the service writes an Int64 as a JSON string.
    match entity.get("Version") {
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| corrupt(key, format!("Version {s:?} is not a number"))),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| corrupt(key, format!("Version {n} is not a version"))),
        _ => Err(corrupt(key, "the entity has no Version")),
    }
}

fn entity_value(key: &str, entity: &Map<String, Value>) -> Result<Value, JournalError> {
    let chunks = entity
        .get("Chunks")
        .and_then(Value::as_u64)
        .ok_or_else(|| corrupt(key, "the entity has no Chunks count"))?;
    let mut json = Vec::new();
    for i in 0..chunks {
        let part = entity
            .get(&format!("Data{i}"))
            .and_then(Value::as_str)
            .ok_or_else(|| corrupt(key, format!("chunk Data{i} of {chunks} is missing")))?;
        let bytes = BASE64
            .decode(part)
            .map_err(|e| corrupt(key, format!("chunk Data{i} is not base64: {e}")))?;
        json.extend_from_slice(&bytes);
    }
    serde_json::from_slice(&json)
        .map_err(|e| corrupt(key, format!("stored value is not JSON: {e}")))
}

fn is_kept(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')
}

/// Escapes a key for use as a RowKey (see the module docs).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if is_kept(byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("~{byte:02X}"));
        }
    }
    out
}

fn escape_key(key: &str) -> Result<String, JournalError> {
    let row = escape(key);
    if row.is_empty() || row.len() > MAX_ROW_KEY_BYTES {
        return Err(JournalError::Refused(format!(
            "journal key {key:?} escapes to {} bytes; an Azure Table RowKey holds 1 to {MAX_ROW_KEY_BYTES}",
            row.len()
        )));
    }
    Ok(row)
}

fn claim_row_key(claim: &NameClaim) -> Result<String, JournalError> {
    let row = format!("{}:{}", escape(&claim.kind), escape(&claim.name));
    if row.len() > MAX_ROW_KEY_BYTES {
        return Err(JournalError::Refused(format!(
            "the {} name {:?} is too long to claim in Azure Table",
            claim.kind, claim.name
        )));
    }
    Ok(row)
}

fn unescape_key(row: &str) -> Result<String, JournalError> {
    let bad = || corrupt(row, "the RowKey is not an escaped journal key");
    let bytes = row.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'~' {
            let hex = row.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Percent-encodes a query parameter value (everything but unreserved characters), with `%20`
/// for spaces: the Table service does not read `+` as a space.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn validate_table_name(table: &str) -> Result<(), JournalError> {
    let ok = (3..=63).contains(&table.len())
        && table.starts_with(|c: char| c.is_ascii_alphabetic())
        && table.chars().all(|c| c.is_ascii_alphanumeric())
        && !table.eq_ignore_ascii_case("tables");
    if ok {
        Ok(())
    } else {
        Err(JournalError::Refused(format!(
            "{table:?} is not a valid Azure table name: 3 to 63 letters and digits, starting with a letter"
        )))
    }
}

/// Shared Key for the Table service: `VERB\nContent-MD5\nContent-Type\nDate\nCanonicalizedResource`
/// (no canonicalized headers, unlike Blob and Queue).
fn string_to_sign(
    verb: &str,
    content_md5: &str,
    content_type: &str,
    date: &str,
    canonicalized_resource: &str,
) -> String {
    format!("{verb}\n{content_md5}\n{content_type}\n{date}\n{canonicalized_resource}")
}

/// `/<account><encoded URI path>`, plus `?comp=<value>` when the query has `comp`. With Azurite's
/// path-style URLs the account therefore appears twice (`/devstoreaccount1/devstoreaccount1/t`).
fn canonicalized_resource(account: &str, url: &Url) -> String {
    let mut resource = format!("/{account}{}", url.path());
    if let Some((_, comp)) = url.query_pairs().find(|(name, _)| name == "comp") {
        resource.push_str("?comp=");
        resource.push_str(&comp);
    }
    resource
}

/// Base64 of HMAC-SHA256 of the UTF-8 string under the decoded account key.
fn sign(key: &[u8], string_to_sign: &str) -> String {
    // HMAC takes keys of any length, so this cannot fail; an empty key would only sign wrongly.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(string_to_sign.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AZURITE_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    #[test]
    fn the_string_to_sign_has_the_five_table_service_fields() {
        // The layout of Microsoft's "Authorize with Shared Key", Table service section.
        let url = Url::parse("https://myaccount.table.core.windows.net/Tables").unwrap();
        assert_eq!(
            string_to_sign(
                "GET",
                "",
                "",
                "Sun, 11 Oct 2009 19:52:39 GMT",
                &canonicalized_resource("myaccount", &url)
            ),
            "GET\n\n\nSun, 11 Oct 2009 19:52:39 GMT\n/myaccount/Tables"
        );
    }

    #[test]
    fn the_canonicalized_resource_names_the_account_twice_on_azurite_and_keeps_only_comp() {
        let url = Url::parse(
            "http://127.0.0.1:10002/devstoreaccount1/mytable()?$filter=PartitionKey%20eq%20%27a%27&$top=1",
        )
        .unwrap();
        assert_eq!(
            canonicalized_resource("devstoreaccount1", &url),
            "/devstoreaccount1/devstoreaccount1/mytable()"
        );
        let url =
            Url::parse("https://acct.table.core.windows.net/?restype=service&comp=properties")
                .unwrap();
        assert_eq!(
            canonicalized_resource("acct", &url),
            "/acct/?comp=properties"
        );
    }

    #[test]
    fn an_entity_url_keeps_its_quotes_and_escaped_key_as_signed() {
        // The service signs the path exactly as sent; the URL parser must not re-encode it.
        let url = Url::parse(
            "http://127.0.0.1:10002/devstoreaccount1/t1(PartitionKey='journal',RowKey='a~2Fb~3A.c')",
        )
        .unwrap();
        assert_eq!(
            url.path(),
            "/devstoreaccount1/t1(PartitionKey='journal',RowKey='a~2Fb~3A.c')"
        );
    }

    #[test]
    fn the_signature_matches_an_independent_hmac_sha256() {
        // Computed outside Rust: python3 -c "import hmac,hashlib,base64; print(base64.b64encode(
        //   hmac.new(base64.b64decode(KEY), STRING.encode(), hashlib.sha256).digest()).decode())"
        let key = BASE64.decode(AZURITE_KEY).unwrap();
        let to_sign = "POST\n\napplication/json\nMon, 24 Nov 2025 10:00:00 GMT\n/devstoreaccount1/devstoreaccount1/Tables";
        assert_eq!(sign(&key, to_sign), EXPECTED_SIGNATURE);
    }

    const EXPECTED_SIGNATURE: &str = "rwYu+Fj+8RRNjVMQq8SW3lonwgF9y1dF1H0TNYpfXsM=";

    #[test]
    fn hmac_sha256_matches_rfc_4231_test_case_2() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn keys_escape_to_safe_row_keys_and_back() {
        for key in ["tenant-1", "a/b c", "x#y?z\\w'q", "ünï:~%", "UPPER.lower_9"] {
            let row = escape_key(key).unwrap();
            assert!(
                row.bytes()
                    .all(|b| is_kept(b) || b == b'~' || b.is_ascii_hexdigit()),
                "{row}"
            );
            assert_eq!(unescape_key(&row).unwrap(), key);
        }
        assert_eq!(escape("a/b"), "a~2Fb");
        assert!(escape_key("").is_err());
        assert!(escape_key(&"/".repeat(400)).is_err());
    }

    #[test]
    fn a_claim_row_key_separates_kind_and_name_unambiguously() {
        let a = claim_row_key(&NameClaim {
            kind: "a:b".into(),
            name: "c".into(),
        })
        .unwrap();
        let b = claim_row_key(&NameClaim {
            kind: "a".into(),
            name: "b:c".into(),
        })
        .unwrap();
        assert_ne!(a, b);
        assert_eq!(a, "a~3Ab:c");
    }

    #[test]
    fn a_record_is_split_into_chunks_and_reassembled() {
        // 200 KiB of multi-byte text and escapes, so chunk boundaries fall inside characters.
        let text: String = "ünïcødé ✓ \"quotes\" \\ ".repeat(200 * 1024 / 24);
        let value = json!({ "steps": [text.clone(), text] });
        let json = serde_json::to_vec(&value).unwrap();
        let entity = record_entity("k", "k", 7, &json).unwrap();
        assert_eq!(entity["Chunks"], json!(json.len().div_ceil(CHUNK_BYTES)));
        assert!(entity.len() < 255, "an entity holds at most 255 properties");
        // What the service sends back without metadata: no type annotations.
        let returned: Map<String, Value> = entity
            .into_iter()
            .filter(|(k, _)| !k.contains("@odata"))
            .collect();
        assert_eq!(entity_version("k", &returned).unwrap(), 7);
        assert_eq!(entity_value("k", &returned).unwrap(), value);
    }

    #[test]
    fn a_record_too_large_for_one_entity_is_refused() {
        let json = vec![b' '; MAX_RECORD_BYTES + 1];
        assert!(matches!(
            record_entity("k", "k", 1, &json),
            Err(JournalError::Refused(_))
        ));
    }

    #[test]
    fn a_missing_chunk_is_corruption() {
        let mut entity = record_entity("k", "k", 1, &vec![b'1'; CHUNK_BYTES + 1]).unwrap();
        entity.remove("Data1");
        assert!(matches!(
            entity_value("k", &entity),
            Err(JournalError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_failed_operation_of_a_batch_is_found() {
        let answer = "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n--changesetresponse_2\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 409 Conflict\r\nContent-ID: 1\r\nContent-Type: application/json;odata=nometadata;streaming=true;charset=utf-8\r\n\r\n{\"odata.error\":{\"code\":\"EntityAlreadyExists\",\"message\":{\"lang\":\"en-US\",\"value\":\"1:The specified entity already exists.\\nRequestId:x\"}}}\r\n--changesetresponse_2--\r\n--batchresponse_1--\r\n";
        let failure = batch_failure(answer).unwrap();
        assert_eq!(failure.status, StatusCode::CONFLICT);
        assert_eq!(failure.code, "EntityAlreadyExists");
        assert_eq!(failure.message, "1:The specified entity already exists.");
        let success = "--batchresponse_1\r\n\r\n--changesetresponse_2\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n--changesetresponse_2--\r\n";
        assert!(batch_failure(success).is_none());
    }

    #[test]
    fn table_names_are_checked_before_anything_is_sent() {
        let endpoint = Url::parse("http://127.0.0.1:10002/devstoreaccount1").unwrap();
        let auth = TableAuth::SharedKey {
            account: "devstoreaccount1".into(),
            key: AZURITE_KEY.into(),
        };
        assert!(AzureTableJournal::new(endpoint.clone(), "journal".into(), auth.clone()).is_ok());
        for bad in ["ab", "1abc", "has-dash", "Tables"] {
            assert!(
                AzureTableJournal::new(endpoint.clone(), bad.into(), auth.clone()).is_err(),
                "{bad}"
            );
        }
        let bad_key = TableAuth::SharedKey {
            account: "a".into(),
            key: "not base64!".into(),
        };
        assert!(matches!(
            AzureTableJournal::new(endpoint, "journal".into(), bad_key),
            Err(JournalError::Refused(_))
        ));
    }

    #[test]
    fn the_debug_form_never_shows_the_key() {
        let auth = TableAuth::SharedKey {
            account: "devstoreaccount1".into(),
            key: AZURITE_KEY.into(),
        };
        assert!(!format!("{auth:?}").contains(&AZURITE_KEY[..10]));
    }
}
