//! Bearer tokens for Azure: the one trait every Azure client (ARM, Table Storage, Service Bus)
//! takes, so that each can be handed its own credential in its own Entra tenant.

use chrono::{DateTime, Utc};

use crate::{Classify, ErrorClass};

#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    pub expires_on: DateTime<Utc>,
}

impl std::fmt::Debug for AccessToken {
    // Tokens must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot get a token for {scope} from {credential}: {message}")]
pub struct AuthError {
    pub credential: String,
    pub scope: String,
    pub message: String,
    pub class: ErrorClass,
}

impl Classify for AuthError {
    fn class(&self) -> ErrorClass {
        self.class
    }
}

/// Something that can produce a bearer token for a scope such as
/// `https://management.azure.com/.default`. Implementations cache and refresh before expiry.
#[async_trait::async_trait]
pub trait TokenCredential: Send + Sync + std::fmt::Debug {
    async fn token(&self, scope: &str) -> Result<AccessToken, AuthError>;

    /// A service refused the token of `scope` as expired (clocks disagree, or it was revoked):
    /// forget it, so that the next [`token`](Self::token) fetches a new one.
    fn invalidate(&self, _scope: &str) {}
}
