//! The worker signing in as it does in production, against the Entra simulator: a harness with
//! [`EntraSide`] gives the default target a workload-identity credential (a projected
//! service-account token in a file, exchanged at the simulator over TLS with its test CA), and
//! the ARM simulator accepts only tokens the simulator issued. So the worker's real credential
//! code (`azure_identity`, the cache, the classification) runs end to end.
//!
//! May touch: files in the harness's directory (the CA, the token file) and the simulators.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use sim::entra::{AppRegistration, TOKEN_EXCHANGE_AUDIENCE};
use worker::config::{Cloud, Config, CredentialConfig, WorkloadIdentitySettings};

/// The worker's app registration in the simulated Entra: its client id, and the issuer and
/// subject of the service-account token its federated credential trusts.
pub const WORKER_CLIENT_ID: &str = "00000000-0000-0000-0000-00000000c0de";
pub const WORKER_TENANT_ID: &str = "00000000-0000-0000-0000-0000000000e1";
pub const WORKER_ISSUER: &str = "https://oidc.e2e.test/cluster/";
pub const WORKER_SUBJECT: &str = "system:serviceaccount:tenant-onboarding:onboarding-worker";

/// How the simulated Entra behaves for the worker.
#[derive(Debug, Clone, Default)]
pub struct EntraSide {
    /// The worker's federated credential is created when the harness starts, and stays
    /// unmatched this long (Entra's propagation).
    pub propagation: Duration,
    /// Lifetime of the tokens Entra issues (default: an hour).
    pub token_lifetime: Option<Duration>,
}

/// The worker's registration (any tenant, audience `api://AzureADTokenExchange`).
pub fn worker_app() -> AppRegistration {
    AppRegistration::new(WORKER_CLIENT_ID, WORKER_ISSUER, WORKER_SUBJECT)
}

/// A service-account token as the kubelet projects it, valid for `valid_for` from now (negative:
/// expired that long ago).
pub fn worker_assertion(valid_for: chrono::Duration) -> String {
    let now = chrono::Utc::now();
    sim::entra::jwt::unsigned(&json!({
        "iss": WORKER_ISSUER,
        "sub": WORKER_SUBJECT,
        "aud": [TOKEN_EXCHANGE_AUDIENCE],
        "iat": (now - chrono::Duration::minutes(1)).timestamp(),
        "nbf": (now - chrono::Duration::minutes(1)).timestamp(),
        "exp": (now + valid_for).timestamp(),
    }))
}

/// Where the projected token lives in a harness directory.
pub fn token_file(dir: &Path) -> PathBuf {
    dir.join("tokens").join("azure-identity-token")
}

/// Write the CA and a fresh token into `dir`, and make the default target sign in with them at
/// `entra_url`.
pub fn configure(config: &mut Config, dir: &Path, target: &str, entra_url: &str, ca_pem: &str) {
    let ca = dir.join("entra-ca.pem");
    std::fs::write(&ca, ca_pem).expect("write the Entra CA");
    let token = token_file(dir);
    std::fs::create_dir_all(token.parent().expect("a parent")).expect("token dir");
    std::fs::write(&token, worker_assertion(chrono::Duration::hours(1))).expect("write token");
    let t = config
        .targets
        .get_mut(target)
        .expect("the target to sign in for");
    t.credential = CredentialConfig::WorkloadIdentity(WorkloadIdentitySettings {
        tenant_id: WORKER_TENANT_ID.into(),
        client_id: WORKER_CLIENT_ID.into(),
        token_file: Some(token),
        cloud: Cloud {
            authority_host: Some(entra_url.to_string()),
            // The simulator on loopback stands for ARM itself, whose tokens have this audience.
            arm_scope: Some("https://management.azure.com/.default".into()),
            ca_file: Some(ca),
            ..Cloud::default()
        },
    });
}
