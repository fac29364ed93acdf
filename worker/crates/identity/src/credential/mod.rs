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
//! everything comes from [`CredentialConfig`] and [`CredentialOptions`].//!
//! One module per credential (`workload_identity`, `azure_cli`) and the token cache they share
//! (`cache`); this module holds their options and picks one from a [`CredentialConfig`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use onboarding_core::CredentialConfig;
use onboarding_core::TokenCredential;

mod azure_cli;
mod cache;
mod workload_identity;

#[cfg(test)]
mod tests;

pub use azure_cli::AzureCliCredential;
pub use workload_identity::WorkloadIdentityCredential;

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
