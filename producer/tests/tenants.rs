//! `producer list` and output to a reader that goes away, as an operator runs them: tenants
//! written to the journal the worker shares, listed and filtered; `status X | head` and
//! `list | head` end quietly instead of panicking on the closed pipe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

use onboarding_journal::Journal;
use onboarding_journal::sqlite::SqliteJournal;
use onboarding_record::{TenantRecord, TenantState};
use worker::config::{Config, JournalConfig, TransportConfig};

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = Config {
            transport: TransportConfig::Embedded {
                path: dir.path().join("queue.db"),
                lock_duration_secs: 60,
                max_delivery_count: 10,
                duplicate_detection_window_secs: 600,
            },
            journal: JournalConfig::Sqlite {
                path: dir.path().join("journal.db"),
            },
            ..Config::default()
        };
        let config = onboarding_testkit::config::write_config(dir.path(), "worker.toml", &file);
        Self { dir, config }
    }

    /// Writes tenant records (and a request registry entry, which `list` must skip).
    async fn tenants(&self, tenants: &[(&str, TenantState, &str)]) {
        let journal = SqliteJournal::open(&self.dir.path().join("journal.db")).unwrap();
        for (id, state, target) in tenants {
            let mut rec = TenantRecord::new(id);
            rec.state = *state;
            rec.target = Some((*target).to_string());
            rec.last_accepted = Some(format!("req-{id}"));
            journal
                .store(id, &serde_json::to_value(&rec).unwrap(), None)
                .await
                .unwrap();
        }
        journal
            .store("request:req-x", &serde_json::json!({"tenantId": "x"}), None)
            .await
            .unwrap();
    }

    fn producer(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_producer"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs the producer with its stdout read by nobody: the pipe is closed before it writes.
    fn producer_into_closed_pipe(&self, args: &[&str]) -> std::process::Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_producer"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    }
}

#[tokio::test]
async fn list_shows_every_tenant_with_its_state_and_latest_request_and_filters() {
    let env = Env::new();
    env.tenants(&[
        ("acme", TenantState::Onboarded, "default"),
        ("beta", TenantState::Failed, "default"),
        ("gamma", TenantState::Onboarded, "west"),
    ])
    .await;

    let out = env.producer(&["--json", "list"]);
    assert!(out.status.success(), "{out:?}");
    let lines: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["tenantId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "beta", "gamma"], "tenants only, sorted");
    assert_eq!(lines[1]["state"], "failed");
    assert_eq!(lines[1]["lastRequest"], "req-beta");

    let out = env.producer(&["--json", "list", "--state", "onboarded", "--target", "west"]);
    let lines: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(lines.as_array().unwrap().len(), 1, "{lines}");
    assert_eq!(lines[0]["tenantId"], "gamma");

    let text = String::from_utf8(env.producer(&["list"]).stdout).unwrap();
    assert!(text.starts_with("tenant"), "a header: {text}");
    assert!(
        text.contains("acme") && text.contains("onboarded"),
        "{text}"
    );

    let bad = env.producer(&["list", "--state", "happy"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("onboarded"));
}

#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly_instead_of_panicking() {
    let env = Env::new();
    env.tenants(&[("acme", TenantState::Onboarded, "default")])
        .await;
    for args in [&["status", "acme"][..], &["list"][..]] {
        let out = env.producer_into_closed_pipe(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
