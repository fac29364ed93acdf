//! The `producer` binary as an operator runs it: help, validation before sending, exit codes,
//! sending, status from the journal, and the dead-letter queue (list, show, replay, purge).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use onboarding_transport::OutgoingMessage;
use support::{Env, text};

fn write(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
}

#[test]
fn help_explains_every_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_producer"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = text(&out);
    for word in ["send", "offboard", "status", "dlq", "Exit codes"] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_producer"))
        .args(["send", "--help"])
        .output()
        .unwrap();
    assert!(text(&out).contains("--raw"));
}

#[tokio::test]
async fn an_invalid_request_is_refused_with_exit_2_and_nothing_is_sent() {
    let env = Env::new();
    let out = env.producer(&[
        "send",
        "--tenant",
        "Bad_Tenant",
        "--count",
        "3",
        "--vm-size",
        "D4",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("/tenantId") && t.contains("/nodePool/vmSize"),
        "{t}"
    );
    assert!(t.contains("nothing was sent"), "{t}");
    assert_eq!(env.queue().await.stats().await.unwrap().active, 0);
}

#[tokio::test]
async fn a_valid_request_is_queued_under_its_request_id_and_tenant_session() {
    let env = Env::new();
    let out = env.producer(&[
        "--json",
        "send",
        "--tenant",
        "acme",
        "--request-id",
        "req-42",
        "--workload",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["requestId"], "req-42");
    assert_eq!(printed["duplicate"], false);
    let q = env.queue().await;
    let d = q
        .receive(Duration::from_secs(2))
        .await
        .unwrap()
        .expect("queued");
    assert_eq!(d.message.message_id, "req-42");
    assert_eq!(d.message.session_id.as_deref(), Some("acme"));
    assert!(d.message.application_properties["traceparent"].starts_with("00-"));
    let body: serde_json::Value = serde_json::from_slice(&d.message.body).unwrap();
    assert_eq!(body["kind"], "OnboardTenant");
    assert_eq!(body["workload"]["replicas"], 1);
    q.abandon(&d.lock).await.unwrap();
    // Sending the same request again is dropped by duplicate detection and said so.
    let again = env.producer(&[
        "--json",
        "send",
        "--tenant",
        "acme",
        "--request-id",
        "req-42",
    ]);
    let printed: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(printed["duplicate"], true);
}

#[tokio::test]
async fn a_request_file_is_validated_like_flags() {
    let env = Env::new();
    let file = env.path("req.json");
    write(
        &file,
        r#"{"schemaVersion":"1.0","kind":"OnboardTenant","requestId":"f-1","tenantId":"filed","nodePool":{"vmSize":"Standard_D2s_v5","minCount":1,"maxCount":3}}"#,
    );
    let out = env.producer(&["send", "--file", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    write(
        &file,
        r#"{"schemaVersion":"1.0","kind":"OnboardTenant","requestId":"f-2","tenantId":"filed","nodePool":{"vmSize":"Standard_D2s_v5","minCount":4,"maxCount":3}}"#,
    );
    let out = env.producer(&["send", "--file", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("minCount (4) must not exceed maxCount (3)"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn raw_bytes_go_on_the_queue_unvalidated() {
    let env = Env::new();
    let file = env.path("raw.bin");
    std::fs::write(&file, b"\xff\xfe not json").unwrap();
    let out = env.producer(&["send", "--raw", file.to_str().unwrap(), "--tenant", "x-1"]);
    assert!(out.status.success(), "{}", text(&out));
    let d = env
        .queue()
        .await
        .receive(Duration::from_secs(2))
        .await
        .unwrap()
        .expect("queued");
    assert_eq!(d.message.body, b"\xff\xfe not json");
    assert_eq!(d.message.session_id.as_deref(), Some("x-1"));
}

#[test]
fn status_of_an_unknown_tenant_exits_4_and_says_why() {
    let env = Env::new();
    let out = env.producer(&["status", "nobody"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("no tenant \"nobody\""),
        "{}",
        text(&out)
    );
    let out = env.producer(&["status", "../etc"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn dead_letters_can_be_listed_shown_replayed_and_purged() {
    let env = Env::new();
    let q = env.queue().await;
    for i in 0..3 {
        let mut props = std::collections::BTreeMap::new();
        props.insert("origin".to_string(), format!("test-{i}"));
        q.send(OutgoingMessage {
            message_id: format!("m-{i}"),
            session_id: Some(format!("s-{i}")),
            body: format!("{{\"n\":{i}}}").into_bytes(),
            application_properties: props,
            ..OutgoingMessage::default()
        })
        .await
        .unwrap();
        let d = q.receive(Duration::from_secs(2)).await.unwrap().unwrap();
        q.dead_letter(&d.lock, "SchemaViolation", &format!("/tenantId: bad {i}"))
            .await
            .unwrap();
    }
    let list = env.producer(&["dlq", "list"]);
    assert!(list.status.success());
    let t = text(&list);
    assert!(
        t.contains("m-0") && t.contains("SchemaViolation") && t.contains("/tenantId: bad 2"),
        "{t}"
    );

    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&env.producer(&["--json", "dlq", "list"]).stdout).unwrap();
    assert_eq!(listed.len(), 3);
    let seq = listed[1]["sequenceNumber"].as_i64().unwrap().to_string();
    let shown: serde_json::Value =
        serde_json::from_slice(&env.producer(&["--json", "dlq", "show", &seq]).stdout).unwrap();
    assert_eq!(shown["body"]["n"], 1);
    assert_eq!(shown["applicationProperties"]["origin"], "test-1");

    // Replay: same body, session and properties, a new MessageId; the original is gone.
    let out = env.producer(&["--json", "dlq", "replay", &seq]);
    assert!(out.status.success(), "{}", text(&out));
    let d = q
        .receive(Duration::from_secs(2))
        .await
        .unwrap()
        .expect("replayed copy");
    assert!(
        d.message.message_id.starts_with("m-1:replay:"),
        "{}",
        d.message.message_id
    );
    assert_eq!(d.message.body, b"{\"n\":1}");
    assert_eq!(d.message.session_id.as_deref(), Some("s-1"));
    assert_eq!(d.message.application_properties["origin"], "test-1");
    assert_eq!(q.peek_dead_letters(0, 10).await.unwrap().len(), 2);
    assert_eq!(env.producer(&["dlq", "show", &seq]).status.code(), Some(4));

    assert_eq!(
        env.producer(&["dlq", "purge"]).status.code(),
        Some(2),
        "purge needs --yes"
    );
    assert!(env.producer(&["dlq", "purge", "--yes"]).status.success());
    assert!(q.peek_dead_letters(0, 10).await.unwrap().is_empty());
}

#[test]
fn a_broken_configuration_exits_2_naming_the_problem() {
    let env = Env::new();
    write(&env.config, "default_target = \"missing\"\n");
    let out = env.producer(&["dlq", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("default_target \"missing\""),
        "{}",
        text(&out)
    );
}
