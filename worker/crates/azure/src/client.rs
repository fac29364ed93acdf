//! The Azure Resource Manager HTTP client: bearer tokens, request ids, timeouts, the write budget,
//! error classification and long-running operations.
//!
//! It knows ARM's conventions, not the resources: [`super::provisioner`] builds paths and bodies.
//! It only sends requests to its own endpoint (operation URLs on another origin are refused, so a
//! token never leaves for a host the configuration did not name).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use url::Url;
use uuid::Uuid;

use super::budget::{WriteBudgetConfig, WriteBudgets};
use super::models::{ArmErrorDetail, AsyncOperationStatus};
use onboarding_core::ErrorClass;
use onboarding_core::TokenCredential;
use onboarding_providers::{OperationKind, PendingOperation, Progress, ProviderError};

/// Error codes that mean "try again later" whatever the status line says.
const TRANSIENT_CODES: &[&str] = &[
    "OperationNotAllowed",
    "AKSOperationPreempted",
    "OperationPreempted",
    "AnotherOperationInProgress",
    "PrincipalNotFound",
    "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
    "ExpiredAuthenticationToken",
    "RetryableError",
    "TooManyRequests",
    "InternalServerError",
    "InternalOperationError",
    "ServiceUnavailable",
    "GatewayTimeout",
];

/// Settings of one ARM client.
#[derive(Debug, Clone)]
pub struct ArmClientOptions {
    /// Time limit of one HTTP request (connect, send, read the answer).
    pub request_timeout: Duration,
    /// Client-side write budget per subscription.
    pub write_budget: WriteBudgetConfig,
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
            token_scope: None,
            default_poll_interval: Duration::from_secs(10),
            user_agent: format!("tenant-onboarding-worker/{}", env!("CARGO_PKG_VERSION")),
            recorder: std::sync::Arc::new(onboarding_core::NoRecorder),
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
    /// A client with its own write budget.
    pub fn new(
        endpoint: Url,
        credential: Option<Arc<dyn TokenCredential>>,
        options: ArmClientOptions,
    ) -> Result<Self, ProviderError> {
        let budgets = Arc::new(WriteBudgets::new(options.write_budget));
        Self::with_budgets(endpoint, credential, options, budgets)
    }

    /// A client sharing write budgets with others (one bucket per subscription per process).
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
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        op: Op<'_>,
    ) -> Result<ArmResponse, ProviderError> {
        self.check_origin(&url, op)?;
        if method != Method::GET && method != Method::HEAD {
            let key = format!(
                "{}|{}",
                url.host_str().unwrap_or_default(),
                subscription_of(url.path()).unwrap_or_default()
            );
            self.budgets.bucket(&key).take().await;
        }
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

    /// The operation to poll that an answer announces: `Azure-AsyncOperation` first, then
    /// `Location`. `None` when it names neither.
    pub fn pending_from(&self, resp: &ArmResponse) -> Option<PendingOperation> {
        let retry = resp
            .retry_after()
            .unwrap_or(self.options.default_poll_interval)
            .as_secs();
        if let Some(url) = resp.header("azure-asyncoperation") {
            return Some(PendingOperation {
                url: url.to_string(),
                kind: OperationKind::AsyncOperation,
                retry_after_secs: retry,
            });
        }
        resp.header("location").map(|url| PendingOperation {
            url: url.to_string(),
            kind: OperationKind::Location,
            retry_after_secs: retry,
        })
    }

    /// Poll the resource itself (its `provisioningState`).
    pub fn resource_pending(
        &self,
        resource_url: &Url,
        retry_after: Option<Duration>,
    ) -> PendingOperation {
        PendingOperation {
            url: resource_url.to_string(),
            kind: OperationKind::ProvisioningState,
            retry_after_secs: retry_after
                .unwrap_or(self.options.default_poll_interval)
                .as_secs(),
        }
    }

    /// Look at a long-running operation once.
    ///
    /// `Done` means the operation is over and did not fail; the caller then calls its forward
    /// action again (create-or-update is idempotent) to read the final state. An operation
    /// record that vanished (404) is also `Done` for that reason: the forward action will find
    /// out where things stand.
    pub async fn poll(
        &self,
        pending: &PendingOperation,
        op: Op<'_>,
    ) -> Result<Progress<()>, ProviderError> {
        let url = Url::parse(&pending.url).map_err(|e| {
            ProviderError::permanent(
                op.operation,
                op.resource,
                format!("the operation URL {:?} is not a URL: {e}", pending.url),
            )
        })?;
        let resp = self.send(Method::GET, url, None, op).await?;
        let again = |resp: &ArmResponse| {
            Progress::Pending(PendingOperation {
                url: pending.url.clone(),
                kind: pending.kind,
                retry_after_secs: resp
                    .retry_after()
                    .map(|d| d.as_secs())
                    .unwrap_or(pending.retry_after_secs),
            })
        };
        if resp.status == 404 {
            return Ok(Progress::Done(()));
        }
        if !resp.is_success() {
            return Err(classify(&resp, op));
        }
        match pending.kind {
            OperationKind::Location => Ok(if resp.status == 202 {
                again(&resp)
            } else {
                Progress::Done(())
            }),
            OperationKind::AsyncOperation => {
                let status: AsyncOperationStatus = resp
                    .body
                    .clone()
                    .and_then(|b| serde_json::from_value(b).ok())
                    .ok_or_else(|| {
                        ProviderError::transient(
                            op.operation,
                            op.resource,
                            format!(
                                "the operation status at {} is not a status document (request id {})",
                                pending.url, resp.request_id
                            ),
                        )
                    })?;
                match status.status.to_ascii_lowercase().as_str() {
                    "succeeded" => Ok(Progress::Done(())),
                    "failed" | "canceled" | "cancelled" => {
                        Err(operation_failed(&status.status, status.error, op))
                    }
                    _ => Ok(again(&resp)),
                }
            }
            OperationKind::ProvisioningState => {
                let state = resp
                    .body
                    .as_ref()
                    .and_then(|b| b.pointer("/properties/provisioningState"))
                    .and_then(Value::as_str)
                    .unwrap_or("Succeeded");
                match state.to_ascii_lowercase().as_str() {
                    "succeeded" => Ok(Progress::Done(())),
                    "failed" | "canceled" | "cancelled" => Err(operation_failed(state, None, op)),
                    _ => Ok(again(&resp)),
                }
            }
        }
    }

    fn check_origin(&self, url: &Url, op: Op<'_>) -> Result<(), ProviderError> {
        if url.origin() == self.endpoint.origin() {
            Ok(())
        } else {
            Err(ProviderError::permanent(
                op.operation,
                op.resource,
                format!(
                    "refusing to send a request to {} : it is not on the configured ARM endpoint {}",
                    url.origin().ascii_serialization(),
                    self.endpoint
                ),
            )
            .with_code("ForeignOperationUrl"))
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

/// `Retry-After`: delta seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

fn is_transient_code(code: &str, message: &str) -> bool {
    // Compute reports exhausted quota as OperationNotAllowed too; that will not pass by waiting.
    TRANSIENT_CODES.iter().any(|c| c.eq_ignore_ascii_case(code))
        && !message.to_ascii_lowercase().contains("quota")
}

/// Classifies a non-2xx answer.
pub fn classify(resp: &ArmResponse, op: Op<'_>) -> ProviderError {
    let detail = resp.body.as_ref().and_then(ArmErrorDetail::from_body);
    let (code, message) = match &detail {
        Some(d) => (d.code.clone(), d.message.clone()),
        None => (
            resp.status.to_string(),
            match &resp.body {
                Some(Value::String(s)) => s.chars().take(300).collect(),
                Some(v) => v.to_string().chars().take(300).collect(),
                None => String::new(),
            },
        ),
    };
    let status = resp.status;
    let class = match status {
        408 | 429 => ErrorClass::Transient,
        500..=599 => ErrorClass::Transient,
        409 if is_transient_code(&code, &message) => ErrorClass::Transient,
        400 | 404 if code.eq_ignore_ascii_case("PrincipalNotFound") => ErrorClass::Transient,
        401 if code.eq_ignore_ascii_case("ExpiredAuthenticationToken") => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    };
    let hint = match (status, class) {
        (429, _) => "; ARM is throttling this subscription, the worker backs off",
        (401, ErrorClass::Permanent) => {
            "; check the target's credential (tenant, client id, federated credential)"
        }
        (403, _) => {
            "; grant the worker's identity the role this operation needs on the target's scope"
        }
        (_, ErrorClass::Transient) => "; this usually passes, the worker retries",
        _ => "",
    };
    let mut err = ProviderError::new(
        class,
        op.operation,
        op.resource,
        format!(
            "ARM answered {status}: {message}{hint} (request id {})",
            resp.request_id
        ),
    )
    .with_code(code);
    if let Some(after) = resp.retry_after() {
        err = err.with_retry_after(after);
    }
    if class == ErrorClass::Transient {
        tracing::info!(request.id = %resp.request_id, http.status = status, error = %err, "transient ARM error");
    } else {
        tracing::warn!(request.id = %resp.request_id, http.status = status, error = %err, "ARM error");
    }
    err
}

fn operation_failed(status: &str, error: Option<ArmErrorDetail>, op: Op<'_>) -> ProviderError {
    let canceled = !status.eq_ignore_ascii_case("failed");
    let (code, message) = error
        .map(|e| (e.code, e.message))
        .unwrap_or_else(|| (format!("Operation{status}"), String::new()));
    // A canceled operation was usually preempted by a newer one: issuing it again is right.
    let class = if canceled || is_transient_code(&code, &message) {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    };
    ProviderError::new(
        class,
        op.operation,
        op.resource,
        format!("the long-running operation ended {status}: {code} {message}"),
    )
    .with_code(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resp(status: u16, body: Value, retry_after: Option<&str>) -> ArmResponse {
        let mut headers = HeaderMap::new();
        if let Some(r) = retry_after {
            headers.insert("retry-after", r.parse().unwrap());
        }
        ArmResponse {
            status,
            headers,
            body: Some(body),
            request_id: "rid".into(),
        }
    }

    const OP: Op<'static> = Op {
        operation: "create node pool",
        resource: "/x",
    };

    fn err(code: &str, message: &str) -> Value {
        json!({"error": {"code": code, "message": message}})
    }

    #[test]
    fn throttling_and_server_errors_are_transient_with_retry_after() {
        let e = classify(
            &resp(429, err("TooManyRequests", "slow down"), Some("7")),
            OP,
        );
        assert_eq!(e.class, ErrorClass::Transient);
        assert_eq!(e.retry_after_secs, Some(7));
        for s in [500, 502, 503, 504] {
            assert_eq!(
                classify(&resp(s, json!({}), None), OP).class,
                ErrorClass::Transient
            );
        }
    }

    #[test]
    fn busy_cluster_conflicts_and_principal_propagation_are_transient() {
        for code in [
            "OperationNotAllowed",
            "AKSOperationPreempted",
            "AnotherOperationInProgress",
        ] {
            let e = classify(&resp(409, err(code, "busy"), None), OP);
            assert_eq!(e.class, ErrorClass::Transient, "{code}");
            assert_eq!(e.code.as_deref(), Some(code));
        }
        for s in [400, 404] {
            let e = classify(&resp(s, err("PrincipalNotFound", "replication"), None), OP);
            assert_eq!(e.class, ErrorClass::Transient);
        }
    }

    #[test]
    fn clear_client_errors_and_quota_are_permanent() {
        let e = classify(&resp(400, err("InvalidParameter", "vmSize bad"), None), OP);
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.to_string().contains("vmSize bad"), "{e}");
        let e = classify(
            &resp(
                409,
                err("OperationNotAllowed", "exceeding approved quota"),
                None,
            ),
            OP,
        );
        assert_eq!(e.class, ErrorClass::Permanent);
        let e = classify(&resp(403, err("AuthorizationFailed", "no"), None), OP);
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("grant the worker's identity"), "{e}");
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after("12"), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn failed_operations_are_classified_by_their_code() {
        let e = operation_failed(
            "Failed",
            Some(ArmErrorDetail {
                code: "QuotaExceeded".into(),
                ..Default::default()
            }),
            OP,
        );
        assert_eq!(e.class, ErrorClass::Permanent);
        let e = operation_failed(
            "Failed",
            Some(ArmErrorDetail {
                code: "InternalOperationError".into(),
                ..Default::default()
            }),
            OP,
        );
        assert_eq!(e.class, ErrorClass::Transient);
        assert_eq!(
            operation_failed("Canceled", None, OP).class,
            ErrorClass::Transient
        );
    }

    #[test]
    fn the_subscription_is_read_from_the_path() {
        assert_eq!(
            subscription_of("/subscriptions/abc/resourceGroups/x"),
            Some("abc")
        );
        assert_eq!(subscription_of("/providers/x"), None);
    }

    #[tokio::test]
    async fn operation_urls_on_another_host_are_refused() {
        let c = ArmClient::new(
            Url::parse("http://127.0.0.1:1").unwrap(),
            None,
            ArmClientOptions::default(),
        )
        .unwrap();
        let pending = PendingOperation {
            url: "https://evil.example/op".into(),
            kind: OperationKind::AsyncOperation,
            retry_after_secs: 1,
        };
        let e = c.poll(&pending, OP).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(e.code.as_deref(), Some("ForeignOperationUrl"));
    }
}
