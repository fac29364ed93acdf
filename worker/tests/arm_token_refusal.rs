//! ARM refusing the worker's token although the credential still holds it (ARM's clock says it
//! expired, or it was revoked): the ARM client makes the credential forget it and sends the
//! request once more with a new one, and a second refusal is the worker's own fault
//! (infrastructure), never the step's. Against the ARM simulator requiring the tokens of the
//! Entra simulator, with the worker's real workload-identity credential behind a wrapper that
//! hands out a stale token first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onboarding_azure::ArmClient;
use onboarding_azure::client::Op;
use onboarding_core::{
    AccessToken, AuthError, Cloud, CredentialConfig, ErrorClass, TokenCredential,
    WorkloadIdentitySettings,
};
use serde_json::json;
use sim::entra::{AppRegistration, EntraOptions};

const ARM_SCOPE: &str = "https://management.azure.com/.default";
const CLIENT: &str = "00000000-0000-0000-0000-00000000c0de";
const ISSUER: &str = "https://oidc.test/cluster/";
const SUBJECT: &str = "system:serviceaccount:tenant-onboarding:onboarding-worker";

/// The real credential, but the first token it hands out is one that has already expired.
#[derive(Debug)]
struct StaleFirst {
    inner: Arc<dyn TokenCredential>,
    stale: Mutex<Option<AccessToken>>,
    invalidated: AtomicUsize,
    /// Stay stale after an invalidation too (a token that cannot be renewed).
    always_stale: bool,
}

#[async_trait::async_trait]
impl TokenCredential for StaleFirst {
    async fn token(&self, scope: &str) -> Result<AccessToken, AuthError> {
        let stale = self.stale.lock().unwrap().clone();
        match stale {
            Some(t) if self.always_stale || self.invalidated.load(Ordering::SeqCst) == 0 => Ok(t),
            _ => self.inner.token(scope).await,
        }
    }
    fn invalidate(&self, scope: &str) {
        self.invalidated.fetch_add(1, Ordering::SeqCst);
        self.inner.invalidate(scope);
    }
}

struct Setup {
    _sims: sim::Running,
    _dir: tempfile::TempDir,
    arm_url: url::Url,
    credential: Arc<dyn TokenCredential>,
}

async fn setup() -> Setup {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sims = sim::start(
        any,
        any,
        sim::SimOptions {
            entra: Some(EntraOptions {
                apps: vec![AppRegistration::new(CLIENT, ISSUER, SUBJECT)],
                token_lifetime: Duration::from_secs(1),
                ..EntraOptions::default()
            }),
            arm_require_tokens: true,
            ..sim::SimOptions::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sims.entra_ca_pem().unwrap()).unwrap();
    let token = dir.path().join("token");
    let now = chrono::Utc::now().timestamp();
    std::fs::write(
        &token,
        sim::entra::jwt::unsigned(&json!({"iss": ISSUER, "sub": SUBJECT,
            "aud": ["api://AzureADTokenExchange"], "iat": now, "nbf": now, "exp": now + 3600})),
    )
    .unwrap();
    let config = CredentialConfig::WorkloadIdentity(WorkloadIdentitySettings {
        tenant_id: "00000000-0000-0000-0000-0000000000e1".into(),
        client_id: CLIENT.into(),
        token_file: Some(token),
        cloud: Cloud {
            authority_host: sims.entra_url(),
            ca_file: Some(ca),
            ..Cloud::default()
        },
    });
    let credential = onboarding_identity::credential_for(&config)
        .unwrap()
        .unwrap();
    Setup {
        arm_url: url::Url::parse(&sims.arm_url()).unwrap(),
        _sims: sims,
        _dir: dir,
        credential,
    }
}

async fn stale_first(s: &Setup, always_stale: bool) -> Arc<StaleFirst> {
    let old = s.credential.token(ARM_SCOPE).await.unwrap();
    // The simulator's tokens last a second: this one is now refused as expired.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    Arc::new(StaleFirst {
        inner: s.credential.clone(),
        stale: Mutex::new(Some(AccessToken {
            token: old.token,
            expires_on: chrono::Utc::now() + chrono::Duration::hours(1),
        })),
        invalidated: AtomicUsize::new(0),
        always_stale,
    })
}

fn client(s: &Setup, credential: Arc<StaleFirst>) -> ArmClient {
    let options = onboarding_azure::ArmClientOptions {
        token_scope: Some(ARM_SCOPE.into()),
        ..Default::default()
    };
    ArmClient::new(s.arm_url.clone(), Some(credential), options).unwrap()
}

const IDENTITY: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-tenants/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-nobody";

#[tokio::test]
async fn a_token_arm_refuses_is_forgotten_and_the_request_sent_once_more_with_a_new_one() {
    let s = setup().await;
    let credential = stale_first(&s, false).await;
    let arm = client(&s, credential.clone());
    let op = Op {
        operation: "read managed identity",
        resource: IDENTITY,
    };
    // Authorized on the second try: the identity does not exist, which is a 404, not a 401.
    let found = arm
        .get(IDENTITY, onboarding_azure::api::MANAGED_IDENTITY, op)
        .await
        .unwrap();
    assert!(found.is_none());
    assert_eq!(credential.invalidated.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_token_refused_twice_is_an_infrastructure_fault_not_the_steps() {
    let s = setup().await;
    let credential = stale_first(&s, true).await;
    let arm = client(&s, credential.clone());
    let op = Op {
        operation: "read managed identity",
        resource: IDENTITY,
    };
    let err = arm
        .get(IDENTITY, onboarding_azure::api::MANAGED_IDENTITY, op)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Infrastructure, "{err}");
    assert_eq!(
        err.code.as_deref(),
        Some("ExpiredAuthenticationToken"),
        "{err}"
    );
    // Once more, and no more than that.
    assert_eq!(credential.invalidated.load(Ordering::SeqCst), 1);
}
