//! Name claims on the Table service: reading who owns a claimed name, inserting new claims
//! all-or-nothing in one entity-group transaction (`$batch`), and releasing a tenant's own.
//!
//! May touch: the claim entities (PartitionKey `name`) of the journal's table.

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::client::{AzureTableJournal, Failure, batch_failure, etag_of};
use super::entity::claim_row_key;
use super::{ACCEPT, JSON, NAME_PARTITION};
use crate::{JournalError, NameClaim};

impl AzureTableJournal {
    pub(super) async fn get_claim_owner(
        &self,
        claim: &NameClaim,
    ) -> Result<Option<String>, JournalError> {
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

    /// Deletes one claim entity if `tenant` owns it, conditional on the ETag it was read with:
    /// a claim that changed owner in between is left alone.
    pub(super) async fn release_claim(
        &self,
        tenant: &str,
        claim: &NameClaim,
    ) -> Result<(), JournalError> {
        let row = claim_row_key(claim)?;
        let target = format!("{}/{}", claim.kind, claim.name);
        let path = self.entity_path(NAME_PARTITION, &row);
        let response = self.send(Method::GET, &path, None, &[]).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        if !response.status().is_success() {
            return Err(self.classify("read name claim", &target, Failure::read(response).await));
        }
        let etag = etag_of(&response);
        let entity: Map<String, Value> = response.json().await.map_err(|e| {
            JournalError::Unavailable(format!("reading the name claim {target} failed: {e}"))
        })?;
        if entity.get("Owner").and_then(Value::as_str) != Some(tenant) {
            return Ok(());
        }
        let Some(etag) = etag else {
            return Err(JournalError::Unavailable(format!(
                "the name claim {target} was read without an ETag; retry"
            )));
        };
        let response = self
            .send(Method::DELETE, &path, None, &[("If-Match", etag.as_str())])
            .await?;
        let status = response.status();
        if status.is_success()
            || status == StatusCode::NOT_FOUND
            || status == StatusCode::PRECONDITION_FAILED
        {
            return Ok(());
        }
        Err(self.classify("release name claim", &target, Failure::read(response).await))
    }

    /// Inserts the claims in one entity-group transaction. `Ok(false)`: one of them exists now
    /// (another writer was faster) and nothing was inserted.
    pub(super) async fn insert_claims(
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
