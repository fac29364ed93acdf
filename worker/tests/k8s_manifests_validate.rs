//! Every manifest the builders can produce validates offline, strictly (no unknown fields),
//! against the Kubernetes 1.34 OpenAPI schemas with `kubernetes-validate`; and
//! `scripts/validate-manifests.sh` does the same from the command line.
//!
//! Needs `python3` with `venv` and access to PyPI the first time (`scripts/setup-python.sh`
//! installs kubernetes-validate into `.local/venv`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use onboarding_providers::KubeObject;
use onboarding_providers::manifests;
use onboarding_providers::manifests::GuardrailSpec;
use worker::config::{GuardrailDefaults, WorkloadTemplate};

const KUBERNETES_VERSION: &str = "1.34.0";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the worker crate sits in the workspace root")
        .to_path_buf()
}

fn output_text(output: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Installs the validator once per test run.
fn validator() -> PathBuf {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY
        .get_or_init(|| {
            let root = repo_root();
            let output = Command::new("bash")
                .arg(root.join("scripts/setup-python.sh"))
                .output()
                .expect("bash runs");
            assert!(
                output.status.success(),
                "scripts/setup-python.sh failed (it needs python3 with venv and access to PyPI):\n{}",
                output_text(&output)
            );
            root.join(".local/venv/bin/kubernetes-validate")
        })
        .clone()
}

/// Every variant of every object: with and without the admin group binding, with and without
/// the cross-tenant identity annotation, the workload from the default and from a custom
/// template.
fn every_variant() -> Vec<(String, KubeObject)> {
    let ns = "tenant-acme";
    let tenant = "acme";
    let defaults = GuardrailDefaults::default();
    let mut variants = vec![
        ("namespace".to_string(), manifests::namespace(ns, tenant)),
        (
            "same-entra-tenant".into(),
            manifests::service_account(
                ns,
                "acme",
                tenant,
                "6a3e1f0c-0000-4000-8000-000000000001",
                None,
            ),
        ),
        (
            "cross-entra-tenant".into(),
            manifests::service_account(
                ns,
                "acme",
                tenant,
                "6a3e1f0c-0000-4000-8000-000000000001",
                Some("72f988bf-86f1-41af-91ab-2d7cd011db47"),
            ),
        ),
        (
            "default-template".into(),
            manifests::workload(ns, tenant, "acme", &WorkloadTemplate::default(), 1),
        ),
        (
            "custom-template".into(),
            manifests::workload(
                ns,
                tenant,
                "acme",
                &WorkloadTemplate {
                    enabled: true,
                    image: "ghcr.io/example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
                    port: 443,
                    cpu: "1500m".into(),
                    memory: "2Gi".into(),
                },
                5,
            ),
        ),
    ];
    for (label, admin) in [
        ("no-admin-group", None),
        (
            "admin-group",
            Some("0b5c1c7e-0000-4000-8000-0000000000a1".to_string()),
        ),
    ] {
        for object in
            manifests::guardrails(ns, tenant, &GuardrailSpec::from_defaults(&defaults, admin))
        {
            variants.push((label.to_string(), object));
        }
    }
    variants
}

/// Writes each object to its own YAML file; returns the files.
fn render(dir: &Path, variants: &[(String, KubeObject)]) -> Vec<PathBuf> {
    variants
        .iter()
        .enumerate()
        .map(|(i, (variant, object))| {
            let path = dir.join(format!(
                "{i:02}-{}-{}-{variant}.yaml",
                object.kind.to_lowercase(),
                object.name
            ));
            let yaml = serde_yaml::to_string(&object.manifest).expect("manifest renders as YAML");
            std::fs::write(&path, yaml).expect("manifest file written");
            path
        })
        .collect()
}

#[test]
fn every_manifest_the_builders_produce_validates_strictly_against_kubernetes_1_34() {
    let variants = every_variant();
    let kinds: std::collections::BTreeSet<&str> =
        variants.iter().map(|(_, o)| o.kind.as_str()).collect();
    assert_eq!(kinds.len(), 7, "every kind is rendered: {kinds:?}");
    let dir = tempfile::tempdir().expect("temp dir");
    let files = render(dir.path(), &variants);

    let output = Command::new(validator())
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .expect("kubernetes-validate runs");
    let text = output_text(&output);
    assert!(
        output.status.success(),
        "manifests do not validate:\n{text}"
    );
    // Guard against a validator that skips what it does not understand.
    let passed = text.matches("passed for resource").count();
    assert_eq!(
        passed,
        variants.len(),
        "one pass per object expected:\n{text}"
    );
}

#[test]
fn the_validate_manifests_script_passes_good_manifests_and_names_what_is_wrong_in_bad_ones() {
    validator();
    let script = repo_root().join("scripts/validate-manifests.sh");
    let good = tempfile::tempdir().expect("temp dir");
    let variants: Vec<_> = every_variant().into_iter().take(3).collect();
    render(good.path(), &variants);
    let output = Command::new("bash")
        .arg(&script)
        .arg(good.path())
        .output()
        .expect("script runs");
    assert!(output.status.success(), "{}", output_text(&output));

    let bad = tempfile::tempdir().expect("temp dir");
    let mut broken = manifests::namespace("tenant-acme", "acme");
    broken.manifest["spec"] = serde_json::json!({"finalisers": ["kubernetes"]});
    render(bad.path(), &[("misspelt".to_string(), broken)]);
    let output = Command::new("bash")
        .arg(&script)
        .arg(bad.path())
        .output()
        .expect("script runs");
    let text = output_text(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("finalisers"),
        "the error names the field:\n{text}"
    );
}
