//! Configuration files for tests, written with the `toml` crate from a typed [`Config`] (or any
//! serialisable value), never assembled with `format!`: quoting, escaping and nesting are the
//! serialiser's business.

use std::path::{Path, PathBuf};

use onboarding_config::Config;
use serde::Serialize;

/// `value` as TOML. Panics (like a test) when it cannot be serialised.
pub fn to_toml(value: &impl Serialize) -> String {
    match toml::to_string(value) {
        Ok(text) => text,
        Err(e) => panic!("the test configuration does not serialise to TOML: {e}"),
    }
}

/// Write `value` as TOML to `dir/name` and return the path.
pub fn write_toml(dir: &Path, name: &str, value: &impl Serialize) -> PathBuf {
    let path = dir.join(name);
    if let Err(e) = std::fs::write(&path, to_toml(value)) {
        panic!("cannot write {}: {e}", path.display());
    }
    path
}

/// Write `config` to `dir/name` and check that [`Config::load`] reads it back unchanged
/// (without the environment), so a test never runs on a file the worker reads differently.
pub fn write_config(dir: &Path, name: &str, config: &Config) -> PathBuf {
    let path = write_toml(dir, name, config);
    match Config::load(Some(&path), Vec::new()) {
        Ok(_) => path,
        Err(e) => panic!(
            "the test configuration at {} does not load: {e}\n{}",
            path.display(),
            to_toml(config)
        ),
    }
}

/// An embedded (SQLite) queue and journal in `dir`, one `default` target pointing at the ARM
/// and Kubernetes endpoints given: the configuration most in-process tests start from.
pub fn embedded(dir: &Path, arm_url: &str, kube_url: &str) -> Config {
    let mut target = onboarding_config::Target::local("default");
    target.arm_endpoint = arm_url.to_string();
    target.kubernetes.server = Some(kube_url.to_string());
    Config {
        transport: onboarding_config::TransportConfig::Embedded {
            path: dir.join("queue.db"),
            lock_duration_secs: 60,
            max_delivery_count: 10,
            duplicate_detection_window_secs: 600,
        },
        journal: onboarding_config::JournalConfig::Sqlite {
            path: dir.join("journal.db"),
        },
        targets: [("default".to_string(), target)].into(),
        ..Config::default()
    }
}
