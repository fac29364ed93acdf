//! The Azure CLI: a developer's `az login`, asked for a token with
//! `az account get-access-token`.
//!
//! May touch: runs the configured `az` program; nothing else.

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use onboarding_core::ErrorClass;
use onboarding_core::{AccessToken, AuthError, TokenCredential};

use super::CredentialOptions;
use super::cache::TokenCache;

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

pub(super) fn parse_cli_local_time(s: &str) -> Option<DateTime<Utc>> {
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
