//! The producer as an operator runs it, on a throwaway embedded queue and journal: shared by
//! the producer's test files (each uses part of it, hence `dead_code` allowed).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use onboarding_core::SystemClock;
use onboarding_journal::Journal;
use onboarding_journal::sqlite::SqliteJournal;
use onboarding_record::{TenantRecord, TenantState};
use onboarding_transport::Queue;
use worker::config::{Config, JournalConfig, TransportConfig};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Env {
    /// A configuration whose journal exists (empty), as after the worker's first start.
    pub fn new() -> Self {
        let env = Self::bare();
        SqliteJournal::open(&env.path("journal.db")).unwrap();
        env
    }

    /// A configuration and nothing else: the worker never ran here.
    pub fn bare() -> Self {
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

    pub fn producer(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_producer"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs the producer with its stdout read by nobody: the pipe is closed before it writes.
    pub fn producer_into_closed_pipe(&self, args: &[&str]) -> Output {
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

    pub async fn queue(&self) -> Arc<dyn Queue> {
        let cfg = Config::load(Some(&self.config), Vec::new()).unwrap();
        worker::bootstrap::open_transport(&cfg, Arc::new(SystemClock))
            .await
            .unwrap()
            .0
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes tenant records (and a request registry entry, which `list` must skip).
    pub async fn tenants(&self, tenants: &[(&str, TenantState, &str)]) {
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
}

/// stdout and stderr together, for messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
