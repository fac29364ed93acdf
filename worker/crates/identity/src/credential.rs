//! Azure credentials for ARM: workload identity (a projected Kubernetes token exchanged at Entra)
//! and the Azure CLI (a developer's `az login`), both with an explicit tenant.
//!
//! Why not `azure_identity`: the release on the `azure_core` 0.25 line (0.25.0) depends on
//! `azure_core` with its default features, which turn on reqwest 0.12's `default-tls`, so it
//! always pulls native-tls and OpenSSL (checked with `cargo tree -i native-tls`); it also reads
//! `AZURE_*` environment variables in its defaults and would bring a second HTTP stack. The two
//! flows we need are small, so they are implemented here over the workspace's reqwest (rustls).
//!
//! Both cache one token per scope and fetch a new one [`CredentialOptions::refresh_before`]
//! (5 minutes) before it expires; concurrent callers share one fetch. No environment reads:
//! everything comes from [`CredentialConfig`] and [`CredentialOptions`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use url::Url;

use onboarding_core::CredentialConfig;
use onboarding_core::ErrorClass;
use onboarding_core::{AccessToken, AuthError, TokenCredential};

/// Entra's public-cloud authority.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// Settings shared by the credentials.
#[derive(Debug, Clone)]
pub struct CredentialOptions {
    /// Where tokens are exchanged; tests point it at a local fake.
    pub authority_host: Url,
    /// A cached token is replaced this long before it expires.
    pub refresh_before: Duration,
    /// Time limit of one token request (HTTP or `az`).
    pub timeout: Duration,
    /// The Azure CLI program (`az`).
    pub az_program: PathBuf,
}

impl Default for CredentialOptions {
    fn default() -> Self {
        Self {
            // A constant that parses: nothing outside can break it.
            authority_host: Url::parse(DEFAULT_AUTHORITY_HOST).expect("constant URL"),
            refresh_before: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
            az_program: PathBuf::from("az"),
        }
    }
}

/// The credential a target's configuration asks for, with default options; `None` for
/// [`CredentialConfig::None`] (simulators on loopback).
pub fn credential_for(cfg: &CredentialConfig) -> Option<Arc<dyn TokenCredential>> {
    credential_with(cfg, &CredentialOptions::default())
}

/// [`credential_for`] with explicit options.
pub fn credential_with(
    cfg: &CredentialConfig,
    options: &CredentialOptions,
) -> Option<Arc<dyn TokenCredential>> {
    match cfg {
        CredentialConfig::None => None,
        CredentialConfig::AzureCli { tenant_id } => Some(Arc::new(AzureCliCredential::new(
            tenant_id.clone(),
            options.clone(),
        ))),
        CredentialConfig::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => Some(Arc::new(WorkloadIdentityCredential::new(
            tenant_id.clone(),
            client_id.clone(),
            token_file.clone(),
            options.clone(),
        ))),
    }
}

/// One token per scope; a fetch holds the lock so that concurrent callers wait for it.
#[derive(Debug, Default)]
struct TokenCache {
    tokens: tokio::sync::Mutex<HashMap<String, AccessToken>>,
}

impl TokenCache {
    async fn get_or_fetch<F, Fut>(
        &self,
        scope: &str,
        refresh_before: Duration,
        fetch: F,
    ) -> Result<AccessToken, AuthError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<AccessToken, AuthError>>,
    {
        let mut tokens = self.tokens.lock().await;
        if let Some(t) = tokens.get(scope) {
            let margin = chrono::Duration::from_std(refresh_before).unwrap_or_default();
            if t.expires_on - margin > Utc::now() {
                return Ok(t.clone());
            }
        }
        let token = fetch().await?;
        tokens.insert(scope.to_string(), token.clone());
        Ok(token)
    }
}

// ---------------------------------------------------------------- workload identity

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

// ---------------------------------------------------------------- Azure CLI

/// A developer's `az login`: `az account get-access-token --scope <scope> [--tenant <id>]`.
#[derive(Debug)]
pub struct AzureCliCredential {
    tenant_id: Option<String>,
    options: CredentialOptions,
    cache: TokenCache,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CliToken {
    access_token: String,
    /// Local time, `2024-01-01 12:00:00.000000` (all versions).
    #[serde(default)]
    expires_on: Option<String>,
    /// Unix seconds (az 2.54 and later).
    #[serde(default, rename = "expires_on")]
    expires_on_unix: Option<i64>,
}

impl AzureCliCredential {
    pub fn new(tenant_id: Option<String>, options: CredentialOptions) -> Self {
        Self {
            tenant_id,
            options,
            cache: TokenCache::default(),
        }
    }

    fn err(&self, scope: &str, class: ErrorClass, message: impl Into<String>) -> AuthError {
        AuthError {
            credential: match &self.tenant_id {
                Some(t) => format!("Azure CLI (tenant {t})"),
                None => "Azure CLI".into(),
            },
            scope: scope.to_string(),
            message: message.into(),
            class,
        }
    }

    async fn fetch(&self, scope: &str) -> Result<AccessToken, AuthError> {
        let mut cmd = tokio::process::Command::new(&self.options.az_program);
        cmd.args(["account", "get-access-token", "--output", "json"]);
        // `--resource` takes the bare resource; `--scope` takes `<resource>/.default`.
        if let Some(resource) = scope.strip_suffix("/.default") {
            cmd.args(["--resource", resource]);
        } else {
            cmd.args(["--scope", scope]);
        }
        if let Some(t) = &self.tenant_id {
            cmd.args(["--tenant", t]);
        }
        cmd.kill_on_drop(true);
        let output = tokio::time::timeout(self.options.timeout, cmd.output())
            .await
            .map_err(|_| {
                self.err(
                    scope,
                    ErrorClass::Transient,
                    format!(
                        "`az account get-access-token` did not answer within {:?}",
                        self.options.timeout
                    ),
                )
            })?
            .map_err(|e| {
                self.err(
                    scope,
                    ErrorClass::Permanent,
                    format!(
                        "cannot run {}: {e}; install the Azure CLI and run `az login`",
                        self.options.az_program.display()
                    ),
                )
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(self.err(
                scope,
                ErrorClass::Permanent,
                format!(
                    "`az account get-access-token` failed ({}): {}; run `az login{}`",
                    output.status,
                    stderr.trim(),
                    self.tenant_id
                        .as_ref()
                        .map(|t| format!(" --tenant {t}"))
                        .unwrap_or_default()
                ),
            ));
        }
        let token: CliToken = serde_json::from_slice(&output.stdout).map_err(|e| {
            self.err(
                scope,
                ErrorClass::Permanent,
                format!("`az account get-access-token` printed something that is not a token: {e}"),
            )
        })?;
        let expires_on = match (token.expires_on_unix, token.expires_on.as_deref()) {
            (Some(unix), _) => Utc.timestamp_opt(unix, 0).single(),
            (None, Some(local)) => parse_cli_local_time(local),
            (None, None) => None,
        }
        .ok_or_else(|| {
            self.err(
                scope,
                ErrorClass::Permanent,
                "`az account get-access-token` gave no expiry time",
            )
        })?;
        Ok(AccessToken {
            token: token.access_token,
            expires_on,
        })
    }
}

fn parse_cli_local_time(s: &str) -> Option<DateTime<Utc>> {
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    chrono::Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

#[async_trait::async_trait]
impl TokenCredential for AzureCliCredential {
    async fn token(&self, scope: &str) -> Result<AccessToken, AuthError> {
        self.cache
            .get_or_fetch(scope, self.options.refresh_before, || self.fetch(scope))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::{Path, State};
    use axum::routing::post;

    #[derive(Default)]
    struct Fake {
        calls: AtomicUsize,
        last_form: std::sync::Mutex<Vec<(String, String)>>,
        expires_in: i64,
        fail: bool,
    }

    async fn token_endpoint(
        State(fake): State<Arc<Fake>>,
        Path(tenant): Path<String>,
        body: String,
    ) -> (axum::http::StatusCode, String) {
        fake.calls.fetch_add(1, Ordering::SeqCst);
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        *fake.last_form.lock().unwrap() = form.clone();
        if fake.fail {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_client","error_description":"AADSTS70021: No matching federated identity record found"}"#.into(),
            );
        }
        let assertion = form
            .iter()
            .find(|(k, _)| k == "client_assertion")
            .map(|(_, v)| v.clone());
        (
            axum::http::StatusCode::OK,
            serde_json::json!({
                "token_type": "Bearer",
                "expires_in": fake.expires_in,
                "access_token": format!("token-for-{tenant}-{}", assertion.unwrap_or_default()),
            })
            .to_string(),
        )
    }

    async fn serve(fake: Arc<Fake>) -> Url {
        let app = axum::Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token_endpoint))
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Url::parse(&format!("http://{addr}")).unwrap()
    }

    fn credential(authority: Url, file: &std::path::Path) -> WorkloadIdentityCredential {
        WorkloadIdentityCredential::new(
            "tenant-1".into(),
            "client-1".into(),
            file.to_path_buf(),
            CredentialOptions {
                authority_host: authority,
                ..CredentialOptions::default()
            },
        )
    }

    #[tokio::test]
    async fn workload_identity_exchanges_the_projected_token_in_its_own_tenant() {
        let fake = Arc::new(Fake {
            expires_in: 3600,
            ..Fake::default()
        });
        let authority = serve(fake.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "projected-jwt\n").unwrap();
        let cred = credential(authority, &file);
        let t = cred
            .token("https://management.azure.com/.default")
            .await
            .unwrap();
        assert_eq!(t.token, "token-for-tenant-1-projected-jwt");
        assert!(t.expires_on > Utc::now() + chrono::Duration::minutes(50));
        let form = fake.last_form.lock().unwrap().clone();
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("client_id"), Some("client-1"));
        assert_eq!(get("grant_type"), Some("client_credentials"));
        assert_eq!(get("scope"), Some("https://management.azure.com/.default"));
        assert_eq!(
            get("client_assertion_type"),
            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        );
        // Cached: a second call does not reach Entra.
        cred.token("https://management.azure.com/.default")
            .await
            .unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_token_close_to_expiry_is_refreshed_and_the_file_is_read_again() {
        // Expires in 4 minutes: inside the 5-minute refresh margin, so never reused.
        let fake = Arc::new(Fake {
            expires_in: 240,
            ..Fake::default()
        });
        let authority = serve(fake.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "first").unwrap();
        let cred = credential(authority, &file);
        let a = cred.token("s/.default").await.unwrap();
        std::fs::write(&file, "rotated").unwrap();
        let b = cred.token("s/.default").await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        assert!(a.token.ends_with("first") && b.token.ends_with("rotated"));
    }

    #[tokio::test]
    async fn a_rejected_exchange_is_a_permanent_error_that_names_the_cause() {
        let fake = Arc::new(Fake {
            fail: true,
            ..Fake::default()
        });
        let authority = serve(fake).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "jwt").unwrap();
        let err = credential(authority, &file)
            .token("s/.default")
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent);
        assert!(err.message.contains("AADSTS70021"), "{err}");
        assert!(err.to_string().contains("tenant-1"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_token_file_says_which_file() {
        let cred = credential(
            Url::parse("http://127.0.0.1:9").unwrap(),
            std::path::Path::new("/nonexistent/token"),
        );
        let err = cred.token("s/.default").await.unwrap_err();
        assert!(err.message.contains("/nonexistent/token"), "{err}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn azure_cli_tokens_come_from_az_account_get_access_token() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let args_file = dir.path().join("args");
        let az = dir.path().join("az");
        std::fs::write(
            &az,
            format!(
                "#!/bin/sh\necho \"$@\" > {}\necho '{{\"accessToken\":\"cli-token\",\"expiresOn\":\"2999-01-01 00:00:00.000000\",\"expires_on\":32472144000,\"tenant\":\"t\",\"tokenType\":\"Bearer\"}}'\n",
                args_file.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cred = AzureCliCredential::new(
            Some("tenant-9".into()),
            CredentialOptions {
                az_program: az,
                ..CredentialOptions::default()
            },
        );
        let t = cred
            .token("https://management.azure.com/.default")
            .await
            .unwrap();
        assert_eq!(t.token, "cli-token");
        assert_eq!(t.expires_on.timestamp(), 32472144000);
        let args = std::fs::read_to_string(&args_file).unwrap();
        assert!(
            args.contains("--resource https://management.azure.com"),
            "{args}"
        );
        assert!(args.contains("--tenant tenant-9"), "{args}");
    }

    #[test]
    fn cli_local_times_parse() {
        assert!(parse_cli_local_time("2024-05-01 10:11:12.123456").is_some());
        assert!(parse_cli_local_time("garbage").is_none());
    }

    #[test]
    fn no_credential_for_the_simulator() {
        assert!(credential_for(&CredentialConfig::None).is_none());
        assert!(credential_for(&CredentialConfig::AzureCli { tenant_id: None }).is_some());
    }
}
