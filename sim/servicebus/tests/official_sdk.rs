//! Microsoft's Python SDK (`azure-servicebus`) against the peer: if the official client and the
//! peer disagree, the peer is wrong. Skips, saying what to run, when the venv or the package
//! is missing (`bash scripts/setup-python.sh` installs both).

use std::path::PathBuf;
use std::time::Duration;

use servicebus_sim::{EntityConfig, PeerConfig, ServiceBusPeer, TopicConfig};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python_with_sdk() -> Option<PathBuf> {
    let python = repo_root().join(".local/venv/bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import azure.servicebus"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some(python)
}

fn config() -> PeerConfig {
    PeerConfig {
        queues: vec![
            EntityConfig::queue("plain").lock_duration(Duration::from_secs(30)),
            EntityConfig::queue("sessions")
                .with_sessions()
                .duplicate_detection(Duration::from_secs(60)),
        ],
        topics: vec![TopicConfig {
            name: "events".into(),
            duplicate_window: None,
            subscriptions: vec![EntityConfig::queue("all")],
        }],
        session_wait: Duration::from_secs(5),
        ..PeerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_sends_receives_settles_schedules_and_uses_sessions() {
    let Some(python) = python_with_sdk() else {
        eprintln!(
            "SKIPPED: .local/venv has no azure-servicebus; run `bash scripts/setup-python.sh`"
        );
        return;
    };
    let peer = ServiceBusPeer::start(config()).await.expect("peer starts");
    let script = repo_root().join("sim/servicebus/witness/check_basics.py");
    let output = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new(python)
            .arg(script)
            .env("SB_CONNECTION_STRING", peer.connection_string())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the checks finish within four minutes")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success() && stdout.contains("all checks passed"),
        "the official SDK disagrees with the peer:\n{stdout}\n{stderr}"
    );
}
