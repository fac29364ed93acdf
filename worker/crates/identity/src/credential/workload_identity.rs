//! Workload identity: the Kubernetes service-account token projected into the pod, exchanged at
//! Entra (`azure_identity`'s client-assertion credential) for a token of one app registration or
//! managed identity in one tenant.
//!
//! `azure_identity`'s own `WorkloadIdentityCredential` is not used: it reads the file once when
//! built (a pod whose token is not yet written cannot start) and then only every ten minutes.
//! [`FederatedTokenFile`] reads it on every exchange, which is rare (tokens are cached), so a
//! rotated token is used at once.
//!
//! May touch: the projected token file (read per exchange).

use std::path::PathBuf;
use std::sync::Arc;

use azure_core_v1::credentials::TokenCredential as AzureTokenCredential;
use azure_core_v1::error::ErrorKind;
use azure_core_v1::http::ClientMethodOptions;
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
};

use onboarding_core::WorkloadIdentitySettings;

use super::CredentialOptions;
use super::cached::Factory;
use super::cloud;

/// The projected service-account token, read afresh for each exchange.
#[derive(Debug, Clone)]
pub(super) struct FederatedTokenFile {
    path: PathBuf,
}

#[async_trait::async_trait]
impl ClientAssertion for FederatedTokenFile {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core_v1::Result<String> {
        let token = tokio::fs::read_to_string(&self.path).await.map_err(|e| {
            azure_core_v1::Error::with_message(
                ErrorKind::Io,
                format!(
                    "cannot read the federated token file {}: {e}; is the pod labelled azure.workload.identity/use=true, with a service account annotated azure.workload.identity/client-id?",
                    self.path.display()
                ),
            )
        })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(azure_core_v1::Error::with_message(
                ErrorKind::Io,
                format!(
                    "the federated token file {} is empty (the kubelet writes it shortly after the pod starts)",
                    self.path.display()
                ),
            ));
        }
        Ok(token.to_string())
    }
}

/// Builds the credential of `settings` (again after a refused token, to drop the SDK's cache).
pub(super) fn factory(
    settings: &WorkloadIdentitySettings,
    options: &CredentialOptions,
) -> Result<Factory, String> {
    let path = settings.token_file.clone().ok_or_else(|| {
        "no token file: AZURE_FEDERATED_TOKEN_FILE is not set (the workload identity webhook sets it in pods labelled azure.workload.identity/use=true) and the credential names no token_file".to_string()
    })?;
    let client_options = cloud::client_options(&settings.cloud, options.timeout)?;
    let tenant_id = settings.tenant_id.clone();
    let client_id = settings.client_id.clone();
    Ok(Box::new(move || {
        let credential: Arc<dyn AzureTokenCredential> = ClientAssertionCredential::new(
            tenant_id.clone(),
            client_id.clone(),
            FederatedTokenFile { path: path.clone() },
            Some(ClientAssertionCredentialOptions {
                client_options: client_options.clone(),
            }),
        )?;
        Ok(credential)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_token_file_is_read_again_for_every_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let file = FederatedTokenFile { path: path.clone() };
        assert_eq!(file.secret(None).await.unwrap(), "first");
        std::fs::write(&path, "rotated").unwrap();
        assert_eq!(file.secret(None).await.unwrap(), "rotated");
    }

    #[tokio::test]
    async fn a_missing_token_file_is_named_with_what_to_check() {
        let file = FederatedTokenFile {
            path: "/nonexistent/azure-identity-token".into(),
        };
        let err = file.secret(None).await.unwrap_err().to_string();
        assert!(err.contains("/nonexistent/azure-identity-token"), "{err}");
        assert!(err.contains("azure.workload.identity/use=true"), "{err}");
    }

    #[test]
    fn without_a_token_file_the_credential_says_where_it_looked() {
        let settings = WorkloadIdentitySettings {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            client_id: "00000000-0000-0000-0000-000000000001".into(),
            ..WorkloadIdentitySettings::default()
        };
        let err = factory(&settings, &CredentialOptions::default())
            .err()
            .unwrap();
        assert!(err.contains("AZURE_FEDERATED_TOKEN_FILE"), "{err}");
    }
}
