//! Workload identity: the Kubernetes service-account token projected into the pod, exchanged at
//! Entra for a token of one app registration / managed identity in one tenant.
//!
//! May touch: the projected token file and Entra's token endpoint at the configured authority.

use std::path::PathBuf;

use chrono::Utc;
use serde::Deserialize;
use url::Url;

use onboarding_core::ErrorClass;
use onboarding_core::{AccessToken, AuthError, TokenCredential};

use super::CredentialOptions;
use super::cache::TokenCache;

/// Exchanges the Kubernetes service account token projected into the pod (the file the workload
/// identity webhook mounts) for an Entra token of one app registration / managed identity in one
/// tenant (`client_credentials` grant with a `jwt-bearer` client assertion).
#[derive(Debug)]
pub struct WorkloadIdentityCredential {
    tenant_id: String,
    client_id: String,
    token_file: PathBuf,
    options: CredentialOptions,
    http: Result<reqwest::Client, String>,
    cache: TokenCache,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct TokenErrorResponse {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl WorkloadIdentityCredential {
    pub fn new(
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
        options: CredentialOptions,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"));
        Self {
            tenant_id,
            client_id,
            token_file,
            options,
            http,
            cache: TokenCache::default(),
        }
    }

    fn name(&self) -> String {
        format!(
            "workload identity (tenant {}, client {})",
            self.tenant_id, self.client_id
        )
    }

    fn err(&self, scope: &str, class: ErrorClass, message: impl Into<String>) -> AuthError {
        AuthError {
            credential: self.name(),
            scope: scope.to_string(),
            message: message.into(),
            class,
        }
    }

    fn token_url(&self) -> Result<Url, String> {
        let mut url = self.options.authority_host.clone();
        url.path_segments_mut()
            .map_err(|_| {
                format!(
                    "authority host {} cannot take a path",
                    self.options.authority_host
                )
            })?
            .pop_if_empty()
            .extend([self.tenant_id.as_str(), "oauth2", "v2.0", "token"]);
        Ok(url)
    }

    async fn fetch(&self, scope: &str) -> Result<AccessToken, AuthError> {
        let http = self
            .http
            .as_ref()
            .map_err(|e| self.err(scope, ErrorClass::Permanent, e.clone()))?;
        // Read on every fetch: the kubelet rotates the projected token, and fetches are rare.
        let assertion = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|e| {
                self.err(
                    scope,
                    ErrorClass::Permanent,
                    format!(
                        "cannot read the federated token file {}: {e}; is the pod labelled azure.workload.identity/use=true with a service account that has the client-id annotation?",
                        self.token_file.display()
                    ),
                )
            })?;
        let url = self
            .token_url()
            .map_err(|e| self.err(scope, ErrorClass::Permanent, e))?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.client_id)
            .append_pair("scope", scope)
            .append_pair("grant_type", "client_credentials")
            .append_pair(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            )
            .append_pair("client_assertion", assertion.trim())
            .finish();
        let response = http
            .post(url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| {
                self.err(
                    scope,
                    ErrorClass::Transient,
                    format!("token request to {url} failed: {e}"),
                )
            })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            self.err(
                scope,
                ErrorClass::Transient,
                format!("reading the token response from {url} failed: {e}"),
            )
        })?;
        if !status.is_success() {
            let body: TokenErrorResponse = serde_json::from_str(&text).unwrap_or_default();
            // AADSTS700024: the assertion expired (the kubelet had not yet rotated the file).
            let class = if status.as_u16() == 429
                || status.is_server_error()
                || body.error_description.contains("AADSTS700024")
            {
                ErrorClass::Transient
            } else {
                ErrorClass::Permanent
            };
            return Err(self.err(
                scope,
                class,
                format!(
                    "Entra answered {status} {}: {}; check the identity's federated credential (issuer and subject) and the client and tenant ids",
                    body.error, body.error_description
                ),
            ));
        }
        let body: TokenResponse = serde_json::from_str(&text).map_err(|e| {
            self.err(
                scope,
                ErrorClass::Transient,
                format!("the token response from {url} is not a token: {e}"),
            )
        })?;
        let secs = match body.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(3600),
            Some(serde_json::Value::String(s)) => s.parse().unwrap_or(3600),
            _ => 3600,
        };
        Ok(AccessToken {
            token: body.access_token,
            expires_on: Utc::now() + chrono::Duration::seconds(secs),
        })
    }
}

#[async_trait::async_trait]
impl TokenCredential for WorkloadIdentityCredential {
    async fn token(&self, scope: &str) -> Result<AccessToken, AuthError> {
        self.cache
            .get_or_fetch(scope, self.options.refresh_before, || self.fetch(scope))
            .await
    }
}
