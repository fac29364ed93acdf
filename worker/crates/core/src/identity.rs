//! Who the worker is in Entra: the settings of one credential, each naming its own Entra tenant,
//! and the [`Secret`] wrapper that keeps a setting out of logs. Pure data; touches nothing.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How to get an ARM token for a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialConfig {
    /// No token: only for simulators on loopback.
    None,
    /// A developer's `az login`.
    AzureCli { tenant_id: Option<String> },
    /// Federated token file projected into the pod, exchanged in the given Entra tenant.
    WorkloadIdentity {
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
    },
}

impl CredentialConfig {
    /// Every problem with this credential's settings, each prefixed with `path`.
    pub fn problems(&self, path: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match self {
            CredentialConfig::None | CredentialConfig::AzureCli { .. } => {}
            CredentialConfig::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => {
                for (field, value) in [("tenant_id", tenant_id), ("client_id", client_id)] {
                    if value.trim().is_empty() {
                        problems.push(format!(
                            "{path}.{field} is empty (kind workload_identity needs the Entra tenant id and the identity's client id)"
                        ));
                    }
                }
                if token_file.as_os_str().is_empty() {
                    problems.push(format!(
                        "{path}.token_file is empty (the workload identity webhook projects it at /var/run/secrets/azure/tokens/azure-identity-token)"
                    ));
                }
            }
        }
        problems
    }
}

/// A secret setting: it never reaches a log, `Debug` output or a serialised configuration
/// (both print `<redacted>`); [`Secret::expose`] hands it to the one client that needs it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

/// What a secret looks like wherever it is shown.
pub const REDACTED: &str = "<redacted>";

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}
