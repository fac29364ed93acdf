//! The dead-letter queue as an operator works it after an incident: `list` says when it shows
//! only part, `show` prints the very bytes that got a message refused, `delete` removes one,
//! and `replay --all` resends every message it can, leaving the one it cannot where it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use onboarding_transport::{OutgoingMessage, Queue};
use support::{Env, text};

/// Dead-letters one message per body; returns their sequence numbers.
async fn dead_letter(q: &dyn Queue, bodies: &[&[u8]]) -> Vec<i64> {
    let mut seqs = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        q.send(OutgoingMessage {
            message_id: format!("m-{i}"),
            session_id: Some(format!("s-{i}")),
            body: body.to_vec(),
            ..OutgoingMessage::default()
        })
        .await
        .unwrap();
        let d = q.receive(Duration::from_secs(2)).await.unwrap().unwrap();
        seqs.push(d.message.sequence_number);
        q.dead_letter(&d.lock, "MalformedJson", "bad")
            .await
            .unwrap();
    }
    seqs
}

async fn dead_letter_count(q: &dyn Queue) -> usize {
    q.peek_dead_letters(0, 1000).await.unwrap().len()
}

#[tokio::test]
async fn list_says_when_it_shows_only_part_of_the_dead_letters() {
    let env = Env::new();
    let q = env.queue().await;
    dead_letter(q.as_ref(), &[b"{}", b"{}", b"{}"]).await;
    let out = env.producer(&["--json", "dlq", "list", "--max", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("showing 2 of 3"), "{stderr}");
    let all = env.producer(&["dlq", "list"]);
    assert!(!String::from_utf8_lossy(&all.stderr).contains("showing"));
}

#[tokio::test]
async fn show_prints_the_body_byte_for_byte_duplicate_keys_and_invalid_utf8_included() {
    let env = Env::new();
    let q = env.queue().await;
    let seqs = dead_letter(
        q.as_ref(),
        &[
            br#"{"tenantId": "a",  "tenantId":"b"}"#,
            b"{\"x\":\"\xff\xfe\"}",
        ],
    )
    .await;
    let shown = env.producer(&["dlq", "show", &seqs[0].to_string()]);
    assert!(shown.status.success(), "{}", text(&shown));
    let t = String::from_utf8_lossy(&shown.stdout);
    assert!(t.contains(r#"{"tenantId": "a",  "tenantId":"b"}"#), "{t}");
    let json: serde_json::Value = serde_json::from_slice(
        &env.producer(&["--json", "dlq", "show", &seqs[1].to_string()])
            .stdout,
    )
    .unwrap();
    assert_eq!(json["bodyExact"], r#"{"x":"\xff\xfe"}"#);
    assert_eq!(json["bodyBytes"], 10);
    let t = String::from_utf8_lossy(&env.producer(&["dlq", "show", &seqs[1].to_string()]).stdout)
        .into_owned();
    assert!(t.contains("not UTF-8") && t.contains(r"\xff\xfe"), "{t}");
}

#[tokio::test]
async fn delete_removes_exactly_one_dead_letter() {
    let env = Env::new();
    let q = env.queue().await;
    let seqs = dead_letter(q.as_ref(), &[b"{}", b"{}"]).await;
    let out = env.producer(&["dlq", "delete", &seqs[0].to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let left = q.peek_dead_letters(0, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].sequence_number, seqs[1]);
    assert_eq!(
        env.producer(&["dlq", "delete", &seqs[0].to_string()])
            .status
            .code(),
        Some(4)
    );
}

#[tokio::test]
async fn replay_all_goes_on_past_a_message_it_cannot_resend_and_leaves_that_one() {
    let env = Env::new();
    let q = env.queue().await;
    let seqs = dead_letter(q.as_ref(), &[b"{\"n\":0}", b"{\"n\":1}", b"{\"n\":2}"]).await;
    // Someone else holds the first one (another operator's replay, say).
    let held = q
        .receive_dead_letter(Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.message.sequence_number, seqs[0]);

    let out = env.producer(&["dlq", "replay", "--all"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("1 of 3"), "{}", text(&out));
    assert_eq!(
        dead_letter_count(q.as_ref()).await,
        1,
        "only the held one stays"
    );
    let mut replayed = Vec::new();
    while let Some(d) = q.receive(Duration::from_millis(500)).await.unwrap() {
        replayed.push(String::from_utf8(d.message.body.clone()).unwrap());
        q.complete(&d.lock).await.unwrap();
    }
    replayed.sort();
    assert_eq!(replayed, ["{\"n\":1}", "{\"n\":2}"]);
}
