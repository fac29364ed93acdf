//! The Azure Resource Manager HTTP client: bearer tokens, request ids, timeouts, the write budget,
//! error classification and long-running operations.
//!
//! It knows ARM's conventions, not the resources: [`super::provisioner`] builds paths and bodies.
//! It only sends requests to its own endpoint (operation URLs on another origin are refused, so a
//! token never leaves for a host the configuration did not name).//!
//! This module holds the client and one request (`send`, `get`, `put`, `delete`); `lro` follows
//! long-running operations, `classify` turns an ARM error into a [`ProviderError`].
//!
//! May touch: its one ARM endpoint, and the credential's token endpoint through the credential.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use url::Url;
use uuid::Uuid;

use super::budget::{BudgetStore, Feedback, WriteBudgetConfig, WriteBudgets};
use super::models::ArmErrorDetail;
use onboarding_core::TokenCredential;
use onboarding_core::{Clock, ErrorClass, SystemClock};
use onboarding_providers::{Progress, ProviderError};
mod classify;
mod lro;

pub use classify::{classify, parse_retry_after};

/// Settings of one ARM client.
#[derive(Debug, Clone)]
pub struct ArmClientOptions {
    /// Time limit of one HTTP request (connect, send, read the answer).
    pub request_timeout: Duration,
    /// Client-side write budget per subscription.
    pub write_budget: WriteBudgetConfig,
    /// Where the write buckets live: `None` keeps them in this process (tests, benchmarks);
    /// the worker passes its journal-backed store, so that every replica shares one bucket per
    /// subscription.
    pub budget_store: Option<Arc<dyn BudgetStore>>,
    /// Time for the write budget (tests move it).
    pub clock: Arc<dyn Clock>,
    /// Token scope; default `<endpoint origin>/.default`.
    pub token_scope: Option<String>,
    /// How long to wait before polling an operation when ARM sends no `Retry-After`.
    pub default_poll_interval: Duration,
    pub user_agent: String,
    /// Counts throttled (429) answers.
    pub recorder: std::sync::Arc<dyn onboarding_core::Recorder>,
}

impl Default for ArmClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            write_budget: WriteBudgetConfig::default(),
            budget_store: None,
            clock: Arc::new(SystemClock),
            token_scope: None,
            default_poll_interval: Duration::from_secs(10),
            user_agent: format!("tenant-onboarding-worker/{}", env!("CARGO_PKG_VERSION")),
            recorder: std::sync::Arc::new(onboarding_core::NoRecorder),
        }
    }
}

impl ArmClientOptions {
    /// The write budgets these options describe: in `budget_store` when given, else in this
    /// process.
    pub fn write_budgets(&self) -> WriteBudgets {
        match &self.budget_store {
            Some(store) => {
                WriteBudgets::shared(self.write_budget, store.clone(), self.clock.clone())
            }
            None => WriteBudgets::in_process(self.write_budget, self.clock.clone()),
        }
    }
}

/// What is being done to what, for error messages and logs.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    /// E.g. `create node pool`.
    pub operation: &'a str,
    /// E.g. the resource's ARM id.
    pub resource: &'a str,
}

/// An HTTP answer from ARM.
#[derive(Debug, Clone)]
pub struct ArmResponse {
    pub status: u16,
    pub headers: HeaderMap,
    /// The JSON body, if there was one.
    pub body: Option<Value>,
    /// The `x-ms-client-request-id` we sent.
    pub request_id: String,
}

impl ArmResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after").and_then(parse_retry_after)
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The ARM error code of a failed answer, if the body has one.
    pub fn error_code(&self) -> Option<String> {
        self.body
            .as_ref()
            .and_then(ArmErrorDetail::from_body)
            .map(|d| d.code)
    }
}

/// A client of one ARM endpoint with one credential.
#[derive(Debug, Clone)]
pub struct ArmClient {
    endpoint: Url,
    credential: Option<Arc<dyn TokenCredential>>,
    http: reqwest::Client,
    options: ArmClientOptions,
    budgets: Arc<WriteBudgets>,
    scope: String,
}

impl ArmClient {
    /// A client with its own write budgets (in `options.budget_store` when given).
    pub fn new(
        endpoint: Url,
        credential: Option<Arc<dyn TokenCredential>>,
        options: ArmClientOptions,
    ) -> Result<Self, ProviderError> {
        let budgets = Arc::new(options.write_budgets());
        Self::with_budgets(endpoint, credential, options, budgets)
    }

    /// A client sharing this process's write budgets with others.
    pub fn with_budgets(
        endpoint: Url,
        credential: Option<Arc<dyn TokenCredential>>,
        options: ArmClientOptions,
        budgets: Arc<WriteBudgets>,
    ) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(options.request_timeout.min(Duration::from_secs(10)))
            .user_agent(options.user_agent.clone())
            .build()
            .map_err(|e| {
                ProviderError::permanent(
                    "build ARM client",
                    endpoint.as_str(),
                    format!("cannot build an HTTP client: {e}"),
                )
            })?;
        let scope = options
            .token_scope
            .clone()
            .unwrap_or_else(|| format!("{}/.default", endpoint.origin().ascii_serialization()));
        Ok(Self {
            endpoint,
            credential,
            http,
            options,
            budgets,
            scope,
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// `<endpoint><path>?api-version=<v>`.
    pub fn url(&self, path: &str, api_version: &str) -> Result<Url, ProviderError> {
        let base = self.endpoint.as_str().trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}{path}")).map_err(|e| {
            ProviderError::new(
                ErrorClass::InvalidInput,
                "build ARM URL",
                path,
                format!("not a valid path under {}: {e}", self.endpoint),
            )
        })?;
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        Ok(url)
    }

    /// Sends one request and returns whatever ARM answered. Only the failure to get an answer
    /// (connection, timeout, token) is an error here.
    ///
    /// A 401 means ARM refused the worker's token (expired by ARM's clock, or revoked): the
    /// credential forgets it and the request goes once more with a new one. A second 401 is
    /// returned as it is, and classified as the worker's own fault (infrastructure).
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        op: Op<'_>,
    ) -> Result<ArmResponse, ProviderError> {
        let first = self
            .send_once(method.clone(), url.clone(), body, op)
            .await?;
        match &self.credential {
            Some(cred) if first.status == 401 => {
                tracing::info!(request.id = %first.request_id, "ARM refused the token; fetching a new one");
                cred.invalidate(&self.scope);
                self.send_once(method, url, body, op).await
            }
            _ => Ok(first),
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        op: Op<'_>,
    ) -> Result<ArmResponse, ProviderError> {
        self.check_origin(&url, op)?;
        let budget_key = (method != Method::GET && method != Method::HEAD).then(|| {
            format!(
                "{}|{}",
                url.host_str().unwrap_or_default(),
                subscription_of(url.path()).unwrap_or_default()
            )
            .to_ascii_lowercase()
        });
        if let Some(key) = &budget_key {
            self.budgets.take(key).await.map_err(|e| {
                ProviderError::transient(op.operation, op.resource, e.to_string())
                    .with_code("WriteBudgetUnavailable")
            })?;
        }
        let sent_at = self.budgets.now();
        let request_id = Uuid::new_v4().to_string();
        tracing::debug!(request.id = %request_id, http.method = %method, arm.url = %url, "ARM request");
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header("x-ms-client-request-id", &request_id)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(cred) = &self.credential {
            let token = cred.token(&self.scope).await.map_err(|e| {
                ProviderError::new(e.class, op.operation, op.resource, e.to_string())
                    .with_code("AuthenticationFailed")
            })?;
            req = req.bearer_auth(token.token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let response = req.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                format!("no answer within {:?}", self.options.request_timeout)
            } else if e.is_connect() {
                format!("cannot connect to {}", self.endpoint)
            } else {
                "the request failed".to_string()
            };
            tracing::warn!(request.id = %request_id, error = %e, "ARM request failed");
            ProviderError::transient(
                op.operation,
                op.resource,
                format!("{what}: {e} (request id {request_id})"),
            )
            .with_code(if e.is_timeout() {
                "Timeout"
            } else {
                "ConnectionError"
            })
        })?;
        let status = response.status().as_u16();
        if status == 429 {
            self.options.recorder.arm_throttled();
        }
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| {
            ProviderError::transient(
                op.operation,
                op.resource,
                format!("reading ARM's answer ({status}) failed: {e} (request id {request_id})"),
            )
            .with_code("ConnectionError")
        })?;
        let body = if bytes.is_empty() {
            None
        } else {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => Some(v),
                // A non-JSON answer (a proxy's HTML page) still has a status to classify.
                Err(_) => Some(Value::String(String::from_utf8_lossy(&bytes).into_owned())),
            }
        };
        tracing::debug!(request.id = %request_id, http.status = status, "ARM answered");
        if let Some(key) = &budget_key {
            let code = body
                .as_ref()
                .filter(|_| status == 429)
                .and_then(ArmErrorDetail::from_body)
                .map(|d| d.code);
            if let Some(feedback) =
                Feedback::from_answer(status, &headers, code.as_deref(), sent_at)
            {
                self.budgets.report(key, feedback).await;
            }
        }
        Ok(ArmResponse {
            status,
            headers,
            body,
            request_id,
        })
    }

    /// GET a resource: `None` when it does not exist; any other failure is classified.
    pub async fn get(
        &self,
        path: &str,
        api_version: &str,
        op: Op<'_>,
    ) -> Result<Option<ArmResponse>, ProviderError> {
        let url = self.url(path, api_version)?;
        let resp = self.send(Method::GET, url, None, op).await?;
        match resp.status {
            404 => Ok(None),
            _ if resp.is_success() => Ok(Some(resp)),
            _ => Err(classify(&resp, op)),
        }
    }

    /// PUT a body: the answer when 2xx, else the classified error.
    pub async fn put(
        &self,
        path: &str,
        api_version: &str,
        body: &Value,
        op: Op<'_>,
    ) -> Result<ArmResponse, ProviderError> {
        let url = self.url(path, api_version)?;
        let resp = self.send(Method::PUT, url, Some(body), op).await?;
        if resp.is_success() {
            Ok(resp)
        } else {
            Err(classify(&resp, op))
        }
    }

    /// DELETE: gone already (404) or deleted (200/204) is `Done`; 202 is a long-running delete.
    pub async fn delete(
        &self,
        path: &str,
        api_version: &str,
        op: Op<'_>,
    ) -> Result<Progress<()>, ProviderError> {
        let url = self.url(path, api_version)?;
        let resp = self.send(Method::DELETE, url.clone(), None, op).await?;
        match resp.status {
            404 | 200 | 204 => Ok(Progress::Done(())),
            201 | 202 => Ok(Progress::Pending(
                self.pending_from(&resp)
                    .unwrap_or_else(|| self.resource_pending(&url, resp.retry_after())),
            )),
            _ => Err(classify(&resp, op)),
        }
    }
}

/// `/subscriptions/<id>/...` → `<id>`.
fn subscription_of(path: &str) -> Option<&str> {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    while let Some(s) = segments.next() {
        if s.eq_ignore_ascii_case("subscriptions") {
            return segments.next();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subscription_is_read_from_the_path() {
        assert_eq!(
            subscription_of("/subscriptions/abc/resourceGroups/x"),
            Some("abc")
        );
        assert_eq!(subscription_of("/providers/x"), None);
    }
}
