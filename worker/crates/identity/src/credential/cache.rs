//! The token cache both credentials share: one token per scope, refreshed
//! [`CredentialOptions::refresh_before`](super::CredentialOptions::refresh_before) before it
//! expires, one fetch at a time.
//!
//! May touch: nothing but its own memory.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;

use onboarding_core::{AccessToken, AuthError};

/// One token per scope; a fetch holds the lock so that concurrent callers wait for it.
#[derive(Debug, Default)]
pub(super) struct TokenCache {
    tokens: tokio::sync::Mutex<HashMap<String, AccessToken>>,
}

impl TokenCache {
    pub(super) async fn get_or_fetch<F, Fut>(
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
