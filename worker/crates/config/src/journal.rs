//! The `[journal]` section: where saga state lives (SQLite or Azure Table Storage), how the
//! Azure Table journal signs in, and the checks of these settings.
//!
//! May touch: nothing; pure data and validation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use onboarding_core::{
    AzureCliSettings, Cloud, CredentialConfig, EntraEnvironment, ManagedIdentitySettings, Secret,
    WorkloadIdentitySettings,
};

// Loaded once per process: the size of a credential's settings does not matter.
#[allow(clippy::large_enum_variant)]
/// Where saga state lives (`[journal] kind = ...`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum JournalConfig {
    /// A SQLite file: the embedded default, one worker process.
    Sqlite { path: PathBuf },
    /// Azure Table Storage: the production journal, shared by every replica.
    ///
    /// The fields default to empty so that validation can name every missing one at once.
    AzureTable {
        /// Table service endpoint: `https://<account>.table.core.windows.net`, or Azurite's
        /// `http://127.0.0.1:10002/devstoreaccount1`.
        #[serde(default)]
        endpoint: String,
        /// 3-63 letters and digits, starting with a letter.
        #[serde(default)]
        table: String,
        /// How to sign in: an Entra credential in production, `shared_key` for Azurite only.
        #[serde(default)]
        credential: Option<TableCredentialConfig>,
        /// Create the table at start-up if it is missing. Off in production: Bicep creates the
        /// table and the worker's role (Storage Table Data Contributor on the table) cannot.
        #[serde(default)]
        create_table: bool,
    },
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig::Sqlite {
            path: PathBuf::from(".local/journal.db"),
        }
    }
}

/// How the Azure Table journal signs in (`[journal.credential] kind = ...`): an Entra
/// credential (the identity needs "Storage Table Data Contributor" on the table), or Shared Key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TableCredentialConfig {
    /// A developer's `az login`.
    AzureCli(AzureCliSettings),
    /// The service-account token projected into the pod, exchanged in the given Entra tenant.
    WorkloadIdentity(WorkloadIdentitySettings),
    /// The managed identity of the VM or node.
    ManagedIdentity(ManagedIdentitySettings),
    /// Shared Key, for Azurite only: production storage accounts disable key access
    /// (`allowSharedKeyAccess: false` in `infra/modules/storage.bicep`).
    SharedKey { account: String, key: Secret },
}

impl TableCredentialConfig {
    /// The Entra token credential this stands for; `None` for Shared Key.
    pub fn token_credential(&self) -> Option<CredentialConfig> {
        match self {
            TableCredentialConfig::AzureCli(s) => Some(CredentialConfig::AzureCli(s.clone())),
            TableCredentialConfig::WorkloadIdentity(s) => {
                Some(CredentialConfig::WorkloadIdentity(s.clone()))
            }
            TableCredentialConfig::ManagedIdentity(s) => {
                Some(CredentialConfig::ManagedIdentity(s.clone()))
            }
            TableCredentialConfig::SharedKey { .. } => None,
        }
    }

    /// The token file and cloud of an Entra credential ([`CredentialConfig::parts_mut`]).
    pub fn parts_mut(&mut self) -> Option<(Option<&mut Option<PathBuf>>, &mut Cloud)> {
        match self {
            TableCredentialConfig::SharedKey { .. } => None,
            TableCredentialConfig::AzureCli(s) => Some((None, &mut s.cloud)),
            TableCredentialConfig::ManagedIdentity(s) => Some((None, &mut s.cloud)),
            TableCredentialConfig::WorkloadIdentity(s) => {
                Some((Some(&mut s.token_file), &mut s.cloud))
            }
        }
    }

    /// Settings left out, filled from the environment ([`EntraEnvironment::fill`]).
    pub fn with_environment(mut self, env: &EntraEnvironment) -> Self {
        if let Some((token_file, cloud)) = self.parts_mut() {
            env.fill(token_file, cloud);
        }
        self
    }
}

impl JournalConfig {
    /// Every problem with the journal settings, each naming the setting.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self {
            JournalConfig::Sqlite { path } => {
                if path.as_os_str().is_empty() {
                    problems.push("journal.path is empty (the SQLite journal file)".into());
                }
            }
            JournalConfig::AzureTable {
                endpoint,
                table,
                credential,
                create_table: _,
            } => {
                let mut host = None;
                if endpoint.trim().is_empty() {
                    problems.push(
                        "journal.endpoint is empty: set the Table service endpoint, e.g. https://<account>.table.core.windows.net (Azurite: http://127.0.0.1:10002/devstoreaccount1)"
                            .into(),
                    );
                } else {
                    match url::Url::parse(endpoint) {
                        Ok(u)
                            if matches!(u.scheme(), "http" | "https")
                                && u.query().is_none()
                                && u.fragment().is_none() =>
                        {
                            host = u.host_str().map(str::to_ascii_lowercase);
                        }
                        _ => problems.push(format!(
                            "journal.endpoint {endpoint:?} is not an http(s) URL without query, e.g. https://<account>.table.core.windows.net"
                        )),
                    }
                }
                if table.trim().is_empty() {
                    problems.push(
                        "journal.table is empty: name the journal table (infra/main.bicep creates sagajournal)"
                            .into(),
                    );
                } else if !valid_table_name(table) {
                    problems.push(format!(
                        "journal.table {table:?} is not a valid table name: 3-63 letters and digits, starting with a letter"
                    ));
                }
                match credential {
                    None => problems.push(
                        "journal.credential is missing: add [journal.credential] with kind = \"workload_identity\" (tenant_id, client_id, token_file), \"azure_cli\", or \"shared_key\" (Azurite only: account, key)"
                            .into(),
                    ),
                    Some(TableCredentialConfig::SharedKey { account, key }) => {
                        if account.trim().is_empty() {
                            problems.push("journal.credential.account is empty (Azurite: devstoreaccount1)".into());
                        }
                        if key.expose().trim().is_empty() {
                            problems.push("journal.credential.key is empty (Azurite's well-known account key)".into());
                        } else if base64::Engine::decode(
                            &base64::engine::general_purpose::STANDARD,
                            key.expose().trim(),
                        )
                        .is_err()
                        {
                            problems.push("journal.credential.key is not base64 (a storage account key is)".into());
                        }
                        if host.as_deref().is_some_and(is_azure_storage_host) {
                            problems.push(format!(
                                "journal.credential kind shared_key is for Azurite only, but journal.endpoint {endpoint:?} is an Azure storage account, which allows Entra sign-in only: use kind = \"workload_identity\" (or \"azure_cli\" on a workstation)"
                            ));
                        }
                    }
                    Some(c) => {
                        if let Some(token) = c.token_credential() {
                            problems.extend(token.problems("journal.credential"));
                        }
                    }
                }
            }
        }
        problems
    }
}

/// Azure's table naming rule.
fn valid_table_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
        && !name.eq_ignore_ascii_case("tables")
}

/// A storage endpoint of a public or sovereign Azure cloud (not an emulator).
fn is_azure_storage_host(host: &str) -> bool {
    [
        ".core.windows.net",
        ".core.chinacloudapi.cn",
        ".core.usgovcloudapi.net",
        ".storage.azure.net",
    ]
    .iter()
    .any(|suffix| host.ends_with(suffix))
}
