//! The [`Journal`] implementation: load, compare-and-swap store, key listing, name claims and
//! ping, built on the client, the entity encoding and the claims (see the parent module for
//! the guarantees).
//!
//! May touch: the journal's table, through the client only.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tracing::Instrument;

use super::client::{AzureTableJournal, Failure, etag_of};
use super::entity::{
    entity_value, entity_version, escape_key, percent_encode, record_entity, unescape_key,
};
use super::{CLAIM_ATTEMPTS, JSON, MAX_CLAIMS, RECORD_PARTITION};
use crate::{Journal, JournalError, NameClaim, Versioned};

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

    async fn release_names(&self, tenant: &str, claims: &[NameClaim]) -> Result<(), JournalError> {
        let span = tracing::debug_span!("journal.release_names", tenant.id = %tenant, claims = claims.len());
        async {
            for claim in claims {
                self.release_claim(tenant, claim).await?;
            }
            Ok(())
        }
        .instrument(span)
        .await
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
