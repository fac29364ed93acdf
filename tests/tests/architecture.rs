//! The architecture is the dependency graph: this suite reads `cargo metadata` and fails when a
//! crate gains a dependency that `../shared/DESIGN.md` (and `docs/architecture.md`) forbids,
//! directly or through another crate of the workspace. Touches nothing but `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Normal (non-dev, non-build) dependencies of every workspace crate on other workspace crates.
fn workspace_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|n| members.contains(*n))
                .map(str::to_string)
                .collect();
            (p["name"].as_str().unwrap_or_default().to_string(), deps)
        })
        .collect()
}

/// Every workspace crate `name` depends on, directly or transitively.
fn reach(graph: &BTreeMap<String, BTreeSet<String>>, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![name.to_string()];
    while let Some(n) = todo.pop() {
        for d in graph.get(&n).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

fn assert_never(crate_name: &str, forbidden: &[&str]) {
    let graph = workspace_graph();
    assert!(graph.contains_key(crate_name), "no crate {crate_name}");
    let reached = reach(&graph, crate_name);
    let broken: Vec<_> = forbidden.iter().filter(|f| reached.contains(**f)).collect();
    assert!(
        broken.is_empty(),
        "{crate_name} reaches {broken:?} (it reaches {reached:?}); DESIGN.md forbids it"
    );
}

#[test]
fn the_contract_depends_on_no_other_crate_of_the_workspace() {
    assert_eq!(
        reach(&workspace_graph(), "onboarding-contract"),
        BTreeSet::new()
    );
}

#[test]
fn the_core_vocabulary_depends_on_no_other_crate_of_the_workspace() {
    assert_eq!(
        reach(&workspace_graph(), "onboarding-core"),
        BTreeSet::new()
    );
}

#[test]
fn the_saga_reaches_neither_the_transport_nor_a_concrete_provider() {
    assert_never(
        "onboarding-saga",
        &[
            "onboarding-transport",
            "onboarding-azure",
            "onboarding-kube",
            "onboarding-identity",
            "onboarding-bootstrap",
        ],
    );
}

#[test]
fn the_producer_links_no_saga_engine_and_no_provider_write_path() {
    assert_never(
        "producer",
        &[
            "onboarding-saga",
            "onboarding-azure",
            "onboarding-kube",
            "worker",
        ],
    );
}

#[test]
fn the_providers_crate_holds_traits_and_specs_only() {
    assert_never(
        "onboarding-providers",
        &[
            "onboarding-azure",
            "onboarding-kube",
            "onboarding-saga",
            "onboarding-transport",
            "onboarding-journal",
        ],
    );
}

#[test]
fn azure_and_kubernetes_providers_do_not_know_each_other() {
    assert_never("onboarding-azure", &["onboarding-kube", "onboarding-saga"]);
    assert_never("onboarding-kube", &["onboarding-azure", "onboarding-saga"]);
}

#[test]
fn the_transport_and_the_journal_know_no_saga_and_no_steps() {
    assert_never(
        "onboarding-transport",
        &[
            "onboarding-saga",
            "onboarding-journal",
            "onboarding-providers",
        ],
    );
    assert_never(
        "onboarding-journal",
        &[
            "onboarding-saga",
            "onboarding-contract",
            "onboarding-providers",
        ],
    );
}

#[test]
fn no_production_crate_depends_on_the_testkit() {
    let graph = workspace_graph();
    let users: Vec<_> = graph
        .iter()
        // `e2e` is the test suites' own crate (publish = false), not production code.
        .filter(|(name, deps)| *name != "e2e" && deps.contains("onboarding-testkit"))
        .map(|(n, _)| n.clone())
        .collect();
    assert!(
        users.is_empty(),
        "{users:?} depend on the testkit outside dev-dependencies"
    );
}
