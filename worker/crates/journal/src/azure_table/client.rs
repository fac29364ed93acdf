//! The REST client: the [`AzureTableJournal`] value, its settings, one signed request to the
//! Table service, the classification of a refused request into a [`JournalError`], and the
//! per-instance ETag cache behind the compare-and-swap (see the parent module).
//!
//! May touch: the one table at the one endpoint it was built for, over HTTP(S).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use url::Url;

use super::entity::{entity_version, validate_table_name};
use super::signing::Signer;
use super::{
    ACCEPT, API_VERSION, CONNECT_TIMEOUT, JSON, MAX_CACHED_ETAGS, RECORD_PARTITION,
    REQUEST_TIMEOUT, TableAuth,
};
use crate::JournalError;

/// The Azure Table journal. See the module docs for the entity layout and the guarantees.
pub struct AzureTableJournal {
    pub(super) http: reqwest::Client,
    /// The endpoint without a trailing slash: `https://acct.table.core.windows.net` or
    /// `http://127.0.0.1:10002/devstoreaccount1`.
    pub(super) base: String,
    pub(super) table: String,
    pub(super) signer: Signer,
    /// key -> (version, ETag) as last seen by this instance.
    pub(super) etags: Mutex<HashMap<String, (u64, String)>>,
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
            TableAuth::Bearer { credential, scope } => Signer::Bearer { credential, scope },
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

    pub(super) fn identity(&self) -> String {
        match &self.signer {
            Signer::SharedKey { account, .. } => {
                format!("Shared Key of storage account {account}")
            }
            Signer::Bearer { credential, .. } => format!("Entra credential {credential:?}"),
        }
    }

    pub(super) fn table_path(&self) -> String {
        format!("/{}", self.table)
    }

    pub(super) fn entity_path(&self, partition: &str, row: &str) -> String {
        // Both keys are escaped to `[A-Za-z0-9._~:-]`: no quote to double, nothing to encode.
        format!("/{}(PartitionKey='{partition}',RowKey='{row}')", self.table)
    }

    /// Sends one signed request; any HTTP status is returned, only transport failures are errors.
    ///
    /// A 401 to a bearer token means the service refused the token itself (expired by its
    /// clock, or revoked): the credential forgets it and the request goes once more.
    pub(super) async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::Response, JournalError> {
        let retry_body = body.clone();
        let first = self
            .send_once(method.clone(), path_and_query, body, headers)
            .await?;
        match &self.signer {
            Signer::Bearer { credential, scope } if first.status() == StatusCode::UNAUTHORIZED => {
                credential.invalidate(scope);
                self.send_once(method, path_and_query, retry_body, headers)
                    .await
            }
            _ => Ok(first),
        }
    }

    async fn send_once(
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
        let authorization = self
            .signer
            .authorization(method.as_str(), content_type, &date, &url)
            .await?;
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
    pub(super) fn classify(&self, operation: &str, target: &str, failure: Failure) -> JournalError {
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
                    Signer::Bearer { .. } => format!(
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

    pub(super) fn remember(&self, key: &str, version: u64, etag: Option<String>) {
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

    pub(super) fn forget(&self, key: &str) {
        self.etags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    pub(super) fn cached_etag(&self, key: &str, version: u64) -> Option<String> {
        let etags = self.etags.lock().unwrap_or_else(|p| p.into_inner());
        etags
            .get(key)
            .filter(|(v, _)| *v == version)
            .map(|(_, etag)| etag.clone())
    }

    /// Reads a record entity: `None` if absent, else the entity's properties and ETag.
    pub(super) async fn get_record(
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
    pub(super) async fn current_version(
        &self,
        key: &str,
        row: &str,
    ) -> Result<Option<u64>, JournalError> {
        match self.get_record(key, row, true).await? {
            None => Ok(None),
            Some((entity, etag)) => {
                let version = entity_version(key, &entity)?;
                self.remember(key, version, etag);
                Ok(Some(version))
            }
        }
    }
}

/// A refused request: status and the service's error code and message.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) status: StatusCode,
    pub(super) code: String,
    pub(super) message: String,
}

impl Failure {
    pub(super) async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let header_code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.unwrap_or_default();
        Self::parse(status, header_code, &text)
    }

    pub(super) fn parse(status: StatusCode, header_code: Option<String>, text: &str) -> Self {
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
pub(super) fn batch_failure(text: &str) -> Option<Failure> {
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

pub(super) fn etag_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("ETag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::super::AZURITE_KEY;
    use super::*;

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
