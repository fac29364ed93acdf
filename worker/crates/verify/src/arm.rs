//! [`ArmReader`]: a GET-only client of a target's ARM endpoint, with the target's credential.
//! It has no other method than [`ArmReader::get`], so verify cannot write to Azure.
//!
//! May touch: GET requests to the target's `arm_endpoint`; the credential's token endpoint.

use std::sync::Arc;
use std::time::Duration;

use onboarding_core::TokenCredential;
use onboarding_providers::Target;
use serde_json::Value;
use url::Url;

/// The api-versions the worker's ARM provisioner uses (`onboarding_azure::api`, which the
/// producer may not link: it is the write path).
pub mod api {
    pub const AGENT_POOLS: &str = "2026-08-01";
    pub const MANAGED_IDENTITY: &str = "2024-11-30";
    pub const ROLE_ASSIGNMENTS: &str = "2022-04-01";
    pub const BLOB_CONTAINERS: &str = "2025-08-01";
}

/// A read failed (not "not found", which is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
#[error("GET {path}: {message}")]
pub struct ReadError {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct ArmReader {
    endpoint: Url,
    credential: Option<Arc<dyn TokenCredential>>,
    scope: String,
    http: reqwest::Client,
}

impl ArmReader {
    /// A reader of `target`'s ARM endpoint with its configured credential.
    pub fn for_target(target: &Target) -> Result<Self, String> {
        let endpoint = Url::parse(&target.arm_endpoint)
            .map_err(|e| format!("arm_endpoint {:?} is not a URL: {e}", target.arm_endpoint))?;
        let credential = onboarding_identity::credential_for(&target.credential)
            .map_err(|e| format!("credential: {e}"))?;
        let scope = target
            .credential
            .cloud()
            .arm_scope
            .unwrap_or_else(|| format!("{}/.default", endpoint.origin().ascii_serialization()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self {
            endpoint,
            credential,
            scope,
            http,
        })
    }

    /// The resource at `path` (an ARM id, or a collection), `None` when ARM says 404.
    pub async fn get(&self, path: &str, api_version: &str) -> Result<Option<Value>, ReadError> {
        let fail = |message: String| ReadError {
            path: path.to_string(),
            message,
        };
        let base = self.endpoint.as_str().trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}{path}")).map_err(|e| fail(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        let mut req = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(cred) = &self.credential {
            let token = cred
                .token(&self.scope)
                .await
                .map_err(|e| fail(format!("no token: {e}")))?;
            req = req.bearer_auth(token.token);
        }
        let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = resp.text().await.map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("{status}: {body}")));
        }
        serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| fail(format!("not JSON: {e}")))
    }
}
