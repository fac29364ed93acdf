//! Picks and builds the credential a [`CredentialConfig`] names: one module per credential
//! (`workload_identity`, and the Azure CLI and managed identity straight from `azure_identity`),
//! the cloud's HTTP settings (`cloud`), the cache every credential shares (`cached`) and the
//! reading of Entra's errors (`classify`).
//!
//! May touch: nothing by itself; the credentials it builds touch what the crate doc lists.

use std::sync::Arc;
use std::time::Duration;

use azure_core_v1::credentials::TokenCredential as AzureTokenCredential;
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId,
};

use onboarding_core::{CredentialConfig, TokenCredential};

mod cached;
mod classify;
mod cloud;
mod workload_identity;

pub use cached::CachedCredential;

/// Settings shared by the credentials.
#[derive(Debug, Clone)]
pub struct CredentialOptions {
    /// A cached token is replaced this long before it expires.
    pub refresh_before: Duration,
    /// Time limit of one token request (HTTP, or `az`).
    pub timeout: Duration,
    /// After a failed fetch, callers of that scope get the same failure for this long instead of
    /// asking Entra again: an outage costs one request per scope per interval, not one per call.
    pub failure_memory: Duration,
}

impl Default for CredentialOptions {
    fn default() -> Self {
        Self {
            refresh_before: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
            failure_memory: Duration::from_secs(2),
        }
    }
}

/// A credential cannot even be built: its settings are unusable (a tenant id Entra would refuse,
/// an authority that is not https, an unreadable CA file).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot set up the {credential} credential: {message}")]
pub struct CredentialError {
    pub credential: String,
    pub message: String,
}

/// The credential a configuration asks for, with default options; `None` for
/// [`CredentialConfig::None`] (simulators on loopback).
pub fn credential_for(
    cfg: &CredentialConfig,
) -> Result<Option<Arc<dyn TokenCredential>>, CredentialError> {
    credential_with(cfg, &CredentialOptions::default())
}

/// [`credential_for`] with explicit options.
pub fn credential_with(
    cfg: &CredentialConfig,
    options: &CredentialOptions,
) -> Result<Option<Arc<dyn TokenCredential>>, CredentialError> {
    let (name, make): (String, cached::Factory) = match cfg {
        CredentialConfig::None => return Ok(None),
        CredentialConfig::AzureCli(s) => {
            let name = match &s.tenant_id {
                Some(t) => format!("Azure CLI (tenant {t})"),
                None => "Azure CLI".to_string(),
            };
            let tenant_id = s.tenant_id.clone();
            let make: cached::Factory = Box::new(move || {
                let credential: Arc<dyn AzureTokenCredential> =
                    AzureCliCredential::new(Some(AzureCliCredentialOptions {
                        tenant_id: tenant_id.clone(),
                        ..AzureCliCredentialOptions::default()
                    }))?;
                Ok(credential)
            });
            (name, make)
        }
        CredentialConfig::ManagedIdentity(s) => {
            let name = match &s.client_id {
                Some(c) => format!("managed identity (client {c})"),
                None => "system-assigned managed identity".to_string(),
            };
            let client_options =
                cloud::client_options(&s.cloud, options.timeout).map_err(|message| {
                    CredentialError {
                        credential: name.clone(),
                        message,
                    }
                })?;
            let client_id = s.client_id.clone();
            let make: cached::Factory = Box::new(move || {
                let credential: Arc<dyn AzureTokenCredential> =
                    ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                        user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                        client_options: client_options.clone(),
                    }))?;
                Ok(credential)
            });
            (name, make)
        }
        CredentialConfig::WorkloadIdentity(s) => {
            let name = format!(
                "workload identity (tenant {}, client {})",
                s.tenant_id, s.client_id
            );
            let make =
                workload_identity::factory(s, options).map_err(|message| CredentialError {
                    credential: name.clone(),
                    message,
                })?;
            (name, make)
        }
    };
    // Built once now, so that settings Entra would refuse stop start-up with their reason.
    let first = make().map_err(|e| CredentialError {
        credential: name.clone(),
        message: e.to_string(),
    })?;
    Ok(Some(Arc::new(CachedCredential::new(
        name,
        first,
        make,
        options.clone(),
    ))))
}
