//! Request-body validation against the official Azure OpenAPI specs (`shared/azure-rest-specs`).
//!
//! Every spec file of the tree is put in one JSON-Schema registry under its relative path, so the
//! specs' relative `$ref`s (into `common-types`, `storage.json`...) resolve offline, and a
//! validator is compiled once per request body type. Reads the spec files at load time only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jsonschema::{Draft, Registry, Validator};
use serde_json::Value;

/// Base URI the spec tree is registered under.
const BASE: &str = "file:///azure-rest-specs/";

/// The request bodies the ARM simulator accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyKind {
    AgentPool,
    Identity,
    FederatedIdentityCredential,
    BlobContainer,
    RoleAssignmentCreate,
}

impl BodyKind {
    pub const ALL: [BodyKind; 5] = [
        BodyKind::AgentPool,
        BodyKind::Identity,
        BodyKind::FederatedIdentityCredential,
        BodyKind::BlobContainer,
        BodyKind::RoleAssignmentCreate,
    ];

    /// Spec file (relative to the tree) and definition of the body parameter.
    pub fn definition(self) -> (&'static str, &'static str) {
        match self {
            BodyKind::AgentPool => (
                "specification/containerservice/resource-manager/Microsoft.ContainerService/aks/stable/2026-08-01/managedClusters.json",
                "AgentPool",
            ),
            BodyKind::Identity => (
                "specification/msi/resource-manager/Microsoft.ManagedIdentity/stable/2024-11-30/ManagedIdentity.json",
                "Identity",
            ),
            BodyKind::FederatedIdentityCredential => (
                "specification/msi/resource-manager/Microsoft.ManagedIdentity/stable/2024-11-30/ManagedIdentity.json",
                "FederatedIdentityCredential",
            ),
            BodyKind::BlobContainer => (
                "specification/storage/resource-manager/Microsoft.Storage/stable/2025-08-01/blob.json",
                "BlobContainer",
            ),
            BodyKind::RoleAssignmentCreate => (
                "specification/authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01/authorization-RoleAssignmentsCalls.json",
                "RoleAssignmentCreateParameters",
            ),
        }
    }
}

/// Compiled validators, one per [`BodyKind`].
pub struct SpecSchemas {
    dir: PathBuf,
    validators: HashMap<BodyKind, Validator>,
}

impl std::fmt::Debug for SpecSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpecSchemas")
            .field("dir", &self.dir)
            .finish()
    }
}

impl SpecSchemas {
    /// `shared/azure-rest-specs` beside the workspace (`<crate>/../../shared/azure-rest-specs`).
    pub fn default_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/azure-rest-specs")
    }

    /// Loads every spec file under `dir/specification` (examples excepted) and compiles the
    /// body validators.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let mut files = Vec::new();
        collect_specs(&dir.join("specification"), dir, &mut files)
            .map_err(|e| format!("cannot read the specs under {}: {e}", dir.display()))?;
        if files.is_empty() {
            return Err(format!(
                "no spec files under {}/specification",
                dir.display()
            ));
        }
        let mut documents = Vec::new();
        for (rel, path) in files {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
            documents.push((format!("{BASE}{rel}"), value));
        }
        let registry = Registry::new()
            .draft(Draft::Draft4)
            .retrieve_known_draft_meta_schemas(false)
            .extend(documents.iter().map(|(u, v)| (u.as_str(), v)))
            .and_then(|b| b.prepare())
            .map_err(|e| format!("cannot index the specs under {}: {e}", dir.display()))?;
        let mut validators = HashMap::new();
        for kind in BodyKind::ALL {
            let (file, def) = kind.definition();
            let schema = serde_json::json!({"$ref": format!("{BASE}{file}#/definitions/{def}")});
            let validator = jsonschema::options()
                .with_draft(Draft::Draft4)
                .with_registry(&registry)
                .should_validate_formats(false)
                .build(&schema)
                .map_err(|e| format!("cannot compile the schema of {def} in {file}: {e}"))?;
            validators.insert(kind, validator);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            validators,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every schema violation of a body, as `<json pointer>: <what is wrong>`.
    pub fn validate(&self, kind: BodyKind, body: &Value) -> Result<(), Vec<String>> {
        let Some(v) = self.validators.get(&kind) else {
            return Err(vec![format!("no schema loaded for {kind:?}")]);
        };
        let errors: Vec<String> = v
            .iter_errors(body)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", if at.is_empty() { "/" } else { at.as_str() })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn collect_specs(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "examples") {
                continue;
            }
            collect_specs(&path, root, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            let rel = path
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            out.push((rel, path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schemas() -> Option<SpecSchemas> {
        let dir = SpecSchemas::default_dir();
        if !dir.exists() {
            eprintln!("skipped: the Azure REST specs are not at {}", dir.display());
            return None;
        }
        Some(SpecSchemas::load(&dir).unwrap())
    }

    #[test]
    fn official_example_request_bodies_validate() {
        let Some(s) = schemas() else { return };
        let ex = |rel: &str, param: &str| -> Value {
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(s.dir().join(rel)).unwrap()).unwrap();
            v["parameters"][param].clone()
        };
        let cases = [
            (
                BodyKind::AgentPool,
                "specification/containerservice/resource-manager/Microsoft.ContainerService/aks/stable/2026-08-01/examples/AgentPoolsCreate_Update.json",
                "parameters",
            ),
            (
                BodyKind::Identity,
                "specification/msi/resource-manager/Microsoft.ManagedIdentity/stable/2024-11-30/examples/IdentityCreate.json",
                "parameters",
            ),
            (
                BodyKind::FederatedIdentityCredential,
                "specification/msi/resource-manager/Microsoft.ManagedIdentity/stable/2024-11-30/examples/FederatedIdentityCredentialCreate.json",
                "parameters",
            ),
            (
                BodyKind::BlobContainer,
                "specification/storage/resource-manager/Microsoft.Storage/stable/2025-08-01/examples/BlobContainersPut.json",
                "blobContainer",
            ),
            (
                BodyKind::RoleAssignmentCreate,
                "specification/authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01/examples/RoleAssignments_CreateForResourceGroup.json",
                "parameters",
            ),
        ];
        for (kind, file, param) in cases {
            assert_eq!(s.validate(kind, &ex(file, param)), Ok(()), "{kind:?}");
        }
    }

    #[test]
    fn bodies_that_break_the_schema_are_reported_with_their_location() {
        let Some(s) = schemas() else { return };
        let errs = s
            .validate(
                BodyKind::AgentPool,
                &json!({"properties": {"count": "three", "mode": "Boss"}}),
            )
            .unwrap_err();
        assert!(
            errs.iter().any(|e| e.starts_with("/properties/count")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with("/properties/mode")),
            "{errs:?}"
        );
        let errs = s
            .validate(BodyKind::Identity, &json!({"tags": {}}))
            .unwrap_err();
        assert!(errs.iter().any(|e| e.contains("location")), "{errs:?}");
        let errs = s
            .validate(
                BodyKind::FederatedIdentityCredential,
                &json!({"properties": {"issuer": "https://x"}}),
            )
            .unwrap_err();
        assert!(errs.iter().any(|e| e.contains("subject")), "{errs:?}");
        let errs = s
            .validate(
                BodyKind::RoleAssignmentCreate,
                &json!({"properties": {"principalId": "p"}}),
            )
            .unwrap_err();
        assert!(
            errs.iter().any(|e| e.contains("roleDefinitionId")),
            "{errs:?}"
        );
    }
}
