//! The `worker` binary as operators run it, in a subprocess: `config check` (effective
//! configuration, redaction, exit code 2 listing every problem), and `worker run` serving
//! `/healthz`, `/readyz`, `/metrics`, exporting OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
//! and stopping cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WORKER: &str = env!("CARGO_BIN_EXE_worker");
/// Upper bound for the worker to start or stop; reached only when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);

/// The worker with an empty environment (no ONBOARD_*, RUST_LOG or OTEL_* of the caller).
fn worker(args: &[&str]) -> Command {
    let mut c = Command::new(WORKER);
    c.env_clear().args(args);
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

#[test]
fn config_check_prints_the_effective_configuration_as_toml_that_reads_back() {
    let out = worker(&["config", "check"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let value: toml::Table = toml::from_str(&printed).expect("TOML");
    assert_eq!(value["journal"]["kind"].as_str(), Some("sqlite"));
    assert_eq!(value["transport"]["kind"].as_str(), Some("embedded"));
    assert_eq!(value["health"]["port"].as_integer(), Some(8080));
    assert_eq!(value["telemetry"]["log_format"].as_str(), Some("text"));

    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "effective.toml", &printed);
    let again = worker(&["--config", &file, "config", "check"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), printed);
}

#[test]
fn relative_paths_in_a_config_file_mean_the_same_files_from_any_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "worker.toml",
        "[journal]\nkind = \"sqlite\"\npath = \".local/journal.db\"\n",
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let out = worker(&["--config", &file, "config", "check"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let value: toml::Table = toml::from_str(&text(&out.stdout)).unwrap();
    // Written in the file: beside the file. A default: where the worker runs. Both absolute.
    assert_eq!(
        value["journal"]["path"].as_str().map(Path::new),
        Some(dir.path().join(".local/journal.db").as_path())
    );
    assert_eq!(
        value["transport"]["path"].as_str().map(Path::new),
        Some(elsewhere.path().join(".local/queue.db").as_path())
    );
}

#[test]
fn config_check_never_prints_the_shared_key_in_either_format() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "azurite.toml",
        r#"
[journal]
kind = "azure_table"
endpoint = "http://127.0.0.1:10002/devstoreaccount1"
table = "sagajournal"
create_table = true

[journal.credential]
kind = "shared_key"
account = "devstoreaccount1"
key = "c2VjcmV0LWtleS12YWx1ZQ=="
"#,
    );
    let toml_out = worker(&["--config", &file, "config", "check"])
        .output()
        .unwrap();
    assert!(toml_out.status.success(), "{}", text(&toml_out.stderr));
    let printed = text(&toml_out.stdout);
    assert!(!printed.contains("c2VjcmV0"), "{printed}");
    let value: toml::Table = toml::from_str(&printed).unwrap();
    assert_eq!(
        value["journal"]["credential"]["key"].as_str(),
        Some("<redacted>")
    );
    assert_eq!(
        value["journal"]["credential"]["account"].as_str(),
        Some("devstoreaccount1")
    );

    let json_out = worker(&["--config", &file, "config", "check", "--format", "json"])
        .output()
        .unwrap();
    assert!(json_out.status.success(), "{}", text(&json_out.stderr));
    let printed = text(&json_out.stdout);
    assert!(!printed.contains("c2VjcmV0"), "{printed}");
    let value: serde_json::Value = serde_json::from_str(&printed).expect("JSON");
    assert_eq!(value["journal"]["credential"]["key"], "<redacted>");
    assert_eq!(value["journal"]["kind"], "azure_table");
}

fn problems(out: &Output) -> Vec<String> {
    text(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("  - ").map(str::to_string))
        .collect()
}

#[test]
fn a_wrong_configuration_exits_2_with_one_line_per_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "wrong.toml",
        r#"
[journal]
kind = "azure_table"
endpoint = "https://stonboard.table.core.windows.net"

[worker]
concurrency = 0

[health]
address = "localhost:8080"
"#,
    );
    for command in [&["config", "check"][..], &["run"][..]] {
        let mut args = vec!["--config", file.as_str()];
        args.extend_from_slice(command);
        let out = worker(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{command:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "nothing printed on stdout");
        let problems = problems(&out);
        assert_eq!(problems.len(), 4, "{command:?}: {problems:#?}");
        for (problem, names) in problems.iter().zip([
            "worker.concurrency",
            "journal.table",
            "journal.credential",
            "health.address",
        ]) {
            assert!(
                problem.starts_with(names),
                "{problem:?} should name {names}"
            );
        }
        assert!(text(&out.stderr).contains(&file), "names the file");
    }
}

#[test]
fn environment_settings_are_checked_too() {
    let out = worker(&["config", "check"])
        .env("ONBOARD__JOURNAL__KIND", "azure_table")
        .env("ONBOARD__JOURNAL__ENDPOINT", "ftp://example")
        .env("ONBOARD__JOURNAL__TABLE", "sagajournal")
        .env("ONBOARD__JOURNAL__CREDENTIAL__KIND", "workload_identity")
        .env("ONBOARD__JOURNAL__CREDENTIAL__TENANT_ID", "")
        .env("ONBOARD__JOURNAL__CREDENTIAL__CLIENT_ID", "c")
        .env("ONBOARD__JOURNAL__CREDENTIAL__TOKEN_FILE", "/token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let problems = problems(&out);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].starts_with("journal.endpoint \"ftp://example\" is not an http(s) URL"));
    assert!(problems[1].starts_with("journal.credential.tenant_id is empty"));
}

#[test]
fn an_unknown_kind_exits_2_naming_the_section_and_the_choices() {
    let out = worker(&["config", "check"])
        .env("ONBOARD__JOURNAL__KIND", "cosmos")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("cosmos"), "{err}");
    assert!(err.contains("journal"), "{err}");
    assert!(err.contains("azure_table"), "{err}");
}

/// A loopback port nobody listens on (a tiny race with other processes is acceptable).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `worker run` on the embedded transport and journal in `dir`, health on `port`.
fn run_worker(dir: &Path, port: u16, extra_env: &[(&str, &str)]) -> Child {
    let mut c = worker(&["--log-format", "json", "run"]);
    c.env("ONBOARD__TRANSPORT__PATH", dir.join("queue.db"))
        .env("ONBOARD__JOURNAL__PATH", dir.join("journal.db"))
        .env("ONBOARD__HEALTH__ADDRESS", "127.0.0.1")
        .env("ONBOARD__HEALTH__PORT", port.to_string())
        .env("ONBOARD__WORKER__RECEIVE_WAIT_MS", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

async fn wait_until_serving(base: &str, child: &mut Child) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await
            && r.status() == 200
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the worker exited early: {status}");
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "no /healthz within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, then the exit status and stderr.
async fn terminate(mut child: Child) -> (std::process::ExitStatus, String) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "the worker did not stop within {PATIENCE:?} of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_health_readiness_and_metrics_then_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = run_worker(dir.path(), port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    wait_until_serving(&base, &mut child).await;

    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\nonboarding_messages_received_total 0\n"),
        "{metrics}"
    );

    let (status, stderr) = terminate(child).await;
    assert!(status.success(), "{status}: {stderr}");
    // --log-format json: every log line is one JSON object.
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 2, "{stderr}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(stderr.contains("worker stopped"), "{stderr}");
}

#[test]
fn run_stops_at_once_naming_the_port_when_the_health_port_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = run_worker(dir.path(), port, &[])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("ONBOARD__HEALTH__PORT"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exports_traces_and_metrics_over_otlp_when_the_endpoint_is_set() {
    // A stand-in collector that records what is posted to it.
    let posted: Arc<Mutex<Vec<(String, String, usize)>>> = Arc::default();
    let app = {
        let posted = posted.clone();
        axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let posted = posted.clone();
                async move {
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    posted
                        .lock()
                        .unwrap()
                        .push((uri.path().to_string(), ct, body.len()));
                    axum::http::StatusCode::OK
                }
            },
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = run_worker(
        dir.path(),
        port,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str())],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_until_serving(&base, &mut child).await;

    // One message gives the worker a span to export: a malformed one, dead-lettered at once.
    let queue = onboarding_transport::sqlite::SqliteTransport::open(
        &dir.path().join("queue.db"),
        Default::default(),
        Arc::new(onboarding_core::SystemClock),
    )
    .unwrap();
    use onboarding_transport::Queue as _;
    queue
        .send(onboarding_transport::OutgoingMessage {
            message_id: "bad-1".into(),
            session_id: Some("acme".into()),
            body: b"{not json".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while queue.stats().await.unwrap().dead_lettered == 0 {
        assert!(tokio::time::Instant::now() < give_up, "not dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Shutdown flushes both exporters.
    let (status, stderr) = terminate(child).await;
    assert!(status.success(), "{status}: {stderr}");
    let posted = posted.lock().unwrap().clone();
    for path in ["/v1/traces", "/v1/metrics"] {
        assert!(
            posted
                .iter()
                .any(|(p, ct, len)| p == path && ct == "application/x-protobuf" && *len > 0),
            "nothing posted to {path}: {posted:?}\n{stderr}"
        );
    }
}
