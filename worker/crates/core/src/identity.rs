//! Who the worker is in Entra: the settings of one credential, each naming its own Entra tenant
//! and cloud, what the environment adds to them ([`EntraEnvironment`], read by the binary), and
//! the [`Secret`] wrapper that keeps a setting out of logs. Pure data; touches nothing.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a client of the worker signs in to Entra (`kind = ...`). Each credential names its own
/// Entra tenant and cloud: ARM, Service Bus and Table Storage may each live in another tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CredentialConfig {
    /// No token: only for simulators on loopback.
    None,
    /// A developer's `az login`.
    AzureCli(AzureCliSettings),
    /// The service-account token projected into the pod, exchanged in the given Entra tenant.
    WorkloadIdentity(WorkloadIdentitySettings),
    /// The managed identity of the VM or node the worker runs on (IMDS).
    ManagedIdentity(ManagedIdentitySettings),
}

/// `kind = "azure_cli"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureCliSettings {
    /// The Entra tenant to ask `az` for a token in (default: the CLI's current tenant).
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub cloud: Cloud,
}

/// `kind = "workload_identity"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadIdentitySettings {
    pub tenant_id: String,
    pub client_id: String,
    /// The projected service-account token. Leave it out: the workload identity webhook says
    /// where it put the file in `AZURE_FEDERATED_TOKEN_FILE`, which the binary reads (the path
    /// changed in webhook v1.6.0 and carries a per-pod segment since).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub cloud: Cloud,
}

/// `kind = "managed_identity"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedIdentitySettings {
    /// The client id of a user-assigned identity (default: the system-assigned identity).
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub cloud: Cloud,
}

/// Which Azure cloud a credential signs in to: its Entra authority and the token scopes of the
/// services the worker uses there (ARM's scope follows the target's `arm_endpoint`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cloud {
    pub name: CloudName,
    /// Entra's address, overriding the cloud's (and `AZURE_AUTHORITY_HOST`); must be https.
    pub authority_host: Option<String>,
    /// A PEM file of certificate authorities trusted for the authority besides the system's
    /// (a private PKI, or the local Entra simulator's test CA).
    pub ca_file: Option<PathBuf>,
    /// Scope of ARM tokens (default: the target's `arm_endpoint` + `/.default`, right for every
    /// Azure cloud; a simulator or a proxy in front of ARM needs ARM's own).
    pub arm_scope: Option<String>,
    /// Scope of Service Bus tokens (default: the cloud's).
    pub service_bus_scope: Option<String>,
    /// Scope of Table Storage tokens (default: the cloud's).
    pub storage_scope: Option<String>,
}

/// The Azure clouds with well-known endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudName {
    #[default]
    Public,
    UsGovernment,
    China,
}

impl Cloud {
    /// The Entra authority: the configured one, else the cloud's.
    pub fn authority_host(&self) -> &str {
        match (&self.authority_host, self.name) {
            (Some(host), _) => host,
            (None, CloudName::Public) => "https://login.microsoftonline.com",
            (None, CloudName::UsGovernment) => "https://login.microsoftonline.us",
            (None, CloudName::China) => "https://login.chinacloudapi.cn",
        }
    }

    pub fn service_bus_scope(&self) -> &str {
        match (&self.service_bus_scope, self.name) {
            (Some(scope), _) => scope,
            (None, CloudName::Public) => "https://servicebus.azure.net/.default",
            (None, CloudName::UsGovernment) => "https://servicebus.usgovcloudapi.net/.default",
            (None, CloudName::China) => "https://servicebus.chinacloudapi.cn/.default",
        }
    }

    pub fn storage_scope(&self) -> &str {
        // Storage's Entra resource is the same in every cloud.
        self.storage_scope
            .as_deref()
            .unwrap_or("https://storage.azure.com/.default")
    }

    fn problems(&self, path: &str, problems: &mut Vec<String>) {
        if let Some(host) = &self.authority_host
            && !host.starts_with("https://")
        {
            problems.push(format!(
                "{path}.cloud.authority_host {host:?} is not an https URL (Entra is only reached over TLS)"
            ));
        }
        if self
            .ca_file
            .as_ref()
            .is_some_and(|f| f.as_os_str().is_empty())
        {
            problems.push(format!("{path}.cloud.ca_file is empty"));
        }
    }
}

/// What the process environment says about Entra, read by the binary at its edge and handed to
/// [`CredentialConfig::with_environment`]: where the webhook projected the token
/// (`AZURE_FEDERATED_TOKEN_FILE`) and which authority to use (`AZURE_AUTHORITY_HOST`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntraEnvironment {
    pub federated_token_file: Option<PathBuf>,
    pub authority_host: Option<String>,
}

impl EntraEnvironment {
    /// The two variables, from the variables the binary passes in.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut env = Self::default();
        for (key, value) in vars {
            if value.trim().is_empty() {
                continue;
            }
            match key.as_str() {
                "AZURE_FEDERATED_TOKEN_FILE" => env.federated_token_file = Some(value.into()),
                "AZURE_AUTHORITY_HOST" => env.authority_host = Some(value),
                _ => {}
            }
        }
        env
    }
}

impl EntraEnvironment {
    /// A credential's settings left out, filled from the environment: the token file, and the
    /// authority of a credential on the public cloud that names none.
    pub fn fill(&self, token_file: Option<&mut Option<PathBuf>>, cloud: &mut Cloud) {
        if let Some(file) = token_file
            && file.is_none()
        {
            *file = self.federated_token_file.clone();
        }
        if cloud.authority_host.is_none() && cloud.name == CloudName::Public {
            cloud.authority_host = self.authority_host.clone();
        }
    }
}

impl CredentialConfig {
    /// The cloud this credential signs in to (the public cloud for `none`).
    pub fn cloud(&self) -> Cloud {
        match self {
            CredentialConfig::None => Cloud::default(),
            CredentialConfig::AzureCli(s) => s.cloud.clone(),
            CredentialConfig::WorkloadIdentity(s) => s.cloud.clone(),
            CredentialConfig::ManagedIdentity(s) => s.cloud.clone(),
        }
    }

    /// What every Entra credential holds that the environment or the configuration file's
    /// place can change: the token file (workload identity only) and the cloud.
    pub fn parts_mut(&mut self) -> Option<(Option<&mut Option<PathBuf>>, &mut Cloud)> {
        match self {
            CredentialConfig::None => None,
            CredentialConfig::AzureCli(s) => Some((None, &mut s.cloud)),
            CredentialConfig::ManagedIdentity(s) => Some((None, &mut s.cloud)),
            CredentialConfig::WorkloadIdentity(s) => Some((Some(&mut s.token_file), &mut s.cloud)),
        }
    }

    /// Settings left out, filled from the environment ([`EntraEnvironment::fill`]).
    pub fn with_environment(mut self, env: &EntraEnvironment) -> Self {
        if let Some((token_file, cloud)) = self.parts_mut() {
            env.fill(token_file, cloud);
        }
        self
    }

    /// Every problem with this credential's settings, each prefixed with `path`.
    pub fn problems(&self, path: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match self {
            CredentialConfig::None => {}
            CredentialConfig::AzureCli(s) => s.cloud.problems(path, &mut problems),
            CredentialConfig::ManagedIdentity(s) => s.cloud.problems(path, &mut problems),
            CredentialConfig::WorkloadIdentity(s) => {
                for (field, value) in [("tenant_id", &s.tenant_id), ("client_id", &s.client_id)] {
                    if value.trim().is_empty() {
                        problems.push(format!(
                            "{path}.{field} is empty (kind workload_identity needs the Entra tenant id and the identity's client id)"
                        ));
                    }
                }
                // No token file is not a problem here: in the pod the webhook's
                // AZURE_FEDERATED_TOKEN_FILE supplies it, and the credential says so if not.
                s.cloud.problems(path, &mut problems);
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
