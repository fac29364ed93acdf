//! The cache in front of every credential: one token per scope, each scope with its own lock so
//! that concurrent callers of a scope share one fetch while other scopes go on; a failed fetch is
//! remembered for [`CredentialOptions::failure_memory`] so that waiting callers and those who
//! come right after get it instead of asking Entra again; and a token a service refused is
//! forgotten (the SDK credential is built anew, so that its own cache is dropped too).
//!
//! May touch: the wrapped `azure_identity` credential; its own memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use azure_core_v1::credentials::TokenCredential as AzureTokenCredential;
use chrono::{DateTime, Utc};

use onboarding_core::{AccessToken, AuthError, ErrorClass, TokenCredential};

use super::CredentialOptions;
use super::classify;

/// Builds the `azure_identity` credential (again, after [`TokenCredential::invalidate`]).
pub(super) type Factory =
    Box<dyn Fn() -> azure_core_v1::Result<Arc<dyn AzureTokenCredential>> + Send + Sync>;

#[derive(Debug, Default)]
struct Slot {
    token: Option<AccessToken>,
    failure: Option<(AuthError, Instant)>,
}

/// An `azure_identity` credential behind our [`TokenCredential`] trait.
pub struct CachedCredential {
    name: String,
    make: Factory,
    sdk: Mutex<Arc<dyn AzureTokenCredential>>,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    options: CredentialOptions,
}

impl std::fmt::Debug for CachedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedCredential")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CachedCredential {
    pub(super) fn new(
        name: String,
        first: Arc<dyn AzureTokenCredential>,
        make: Factory,
        options: CredentialOptions,
    ) -> Self {
        Self {
            name,
            make,
            sdk: Mutex::new(first),
            slots: Mutex::default(),
            options,
        }
    }

    fn slot(&self, scope: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(scope.to_string()).or_default().clone()
    }

    fn sdk(&self) -> Arc<dyn AzureTokenCredential> {
        self.sdk.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn failure(&self, scope: &str, message: String) -> AuthError {
        AuthError {
            credential: self.name.clone(),
            scope: scope.to_string(),
            message,
            // The worker's own credential: never a step's failure (see ErrorClass).
            class: ErrorClass::Infrastructure,
        }
    }

    async fn fetch(&self, scope: &str) -> Result<AccessToken, AuthError> {
        let sdk = self.sdk();
        let fetched = tokio::time::timeout(self.options.timeout, sdk.get_token(&[scope], None))
            .await
            .map_err(|_| {
                self.failure(
                    scope,
                    format!(
                        "no answer within {:?}; the worker tries again",
                        self.options.timeout
                    ),
                )
            })?;
        let token = fetched.map_err(|e| {
            let reading = classify::read(&e);
            self.failure(scope, reading.detail)
        })?;
        let expires_on = DateTime::<Utc>::from_timestamp(token.expires_on.unix_timestamp(), 0)
            .unwrap_or_else(Utc::now);
        Ok(AccessToken {
            token: token.token.secret().to_string(),
            expires_on,
        })
    }
}

#[async_trait::async_trait]
impl TokenCredential for CachedCredential {
    async fn token(&self, scope: &str) -> Result<AccessToken, AuthError> {
        let slot = self.slot(scope);
        // Held across the fetch: callers of this scope wait for it and share its result.
        let mut slot = slot.lock().await;
        let margin = chrono::Duration::from_std(self.options.refresh_before).unwrap_or_default();
        if let Some(t) = &slot.token
            && t.expires_on - margin > Utc::now()
        {
            return Ok(t.clone());
        }
        if let Some((e, at)) = &slot.failure
            && at.elapsed() < self.options.failure_memory
        {
            return Err(e.clone());
        }
        match self.fetch(scope).await {
            Ok(t) => {
                slot.token = Some(t.clone());
                slot.failure = None;
                Ok(t)
            }
            Err(e) => {
                slot.failure = Some((e.clone(), Instant::now()));
                Err(e)
            }
        }
    }

    fn invalidate(&self, scope: &str) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(scope);
        match (self.make)() {
            Ok(fresh) => *self.sdk.lock().unwrap_or_else(|e| e.into_inner()) = fresh,
            Err(e) => {
                tracing::warn!(credential = %self.name, error = %e, "cannot rebuild the credential; keeping the old one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use azure_core_v1::credentials::{AccessToken as SdkToken, TokenRequestOptions};
    use azure_core_v1::error::ErrorKind;
    use azure_core_v1::time::OffsetDateTime;

    use super::*;

    /// An SDK credential that counts its fetches, answers slowly, and fails while told to.
    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        failing: Arc<std::sync::atomic::AtomicBool>,
        lifetime_secs: i64,
    }

    #[async_trait::async_trait]
    impl AzureTokenCredential for Counting {
        async fn get_token(
            &self,
            scopes: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core_v1::Result<SdkToken> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            if self.failing.load(Ordering::SeqCst) {
                return Err(azure_core_v1::Error::with_message(
                    ErrorKind::Connection,
                    "connection refused",
                ));
            }
            Ok(SdkToken::new(
                format!("{}#{n}", scopes.join(" ")),
                OffsetDateTime::now_utc()
                    + azure_core_v1::time::Duration::seconds(self.lifetime_secs),
            ))
        }
    }

    struct Fixture {
        calls: Arc<AtomicUsize>,
        failing: Arc<std::sync::atomic::AtomicBool>,
        credential: Arc<CachedCredential>,
    }

    fn fixture(failure_memory: Duration) -> Fixture {
        let calls = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, f) = (calls.clone(), failing.clone());
        let make: Factory = Box::new(move || {
            let sdk: Arc<dyn AzureTokenCredential> = Arc::new(Counting {
                calls: c.clone(),
                failing: f.clone(),
                lifetime_secs: 3600,
            });
            Ok(sdk)
        });
        let first = make().unwrap();
        let options = CredentialOptions {
            failure_memory,
            ..CredentialOptions::default()
        };
        Fixture {
            calls,
            failing,
            credential: Arc::new(CachedCredential::new("test".into(), first, make, options)),
        }
    }

    #[tokio::test]
    async fn concurrent_callers_of_one_scope_share_one_fetch() {
        let f = fixture(Duration::from_secs(2));
        let calls = (0..8).map(|_| {
            let c = f.credential.clone();
            tokio::spawn(async move { c.token("arm/.default").await.unwrap().token })
        });
        let tokens: Vec<String> = futures_join(calls).await;
        assert!(tokens.iter().all(|t| t == "arm/.default#0"), "{tokens:?}");
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn one_scope_being_fetched_does_not_hold_up_another() {
        let f = fixture(Duration::from_secs(2));
        let (a, b) = tokio::join!(f.credential.token("a"), f.credential.token("b"));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(f.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failure_is_remembered_for_a_moment_and_is_an_infrastructure_fault() {
        let f = fixture(Duration::from_millis(300));
        f.failing.store(true, Ordering::SeqCst);
        for _ in 0..5 {
            let e = f.credential.token("arm").await.unwrap_err();
            assert_eq!(e.class, ErrorClass::Infrastructure);
            assert!(e.message.contains("tries again"), "{}", e.message);
        }
        assert_eq!(
            f.calls.load(Ordering::SeqCst),
            1,
            "asked Entra again within the memory"
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
        f.failing.store(false, Ordering::SeqCst);
        assert!(f.credential.token("arm").await.is_ok());
        assert_eq!(f.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_token_is_fetched_anew_once() {
        let f = fixture(Duration::from_secs(2));
        let first = f.credential.token("arm").await.unwrap();
        assert_eq!(f.credential.token("arm").await.unwrap(), first);
        f.credential.invalidate("arm");
        let second = f.credential.token("arm").await.unwrap();
        assert_ne!(second.token, first.token);
        assert_eq!(f.calls.load(Ordering::SeqCst), 2);
    }

    async fn futures_join<T: Send + 'static>(
        handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
