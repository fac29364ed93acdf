//! `producer list` and output to a reader that goes away, as an operator runs them: tenants
//! written to the journal the worker shares, listed and filtered; `status X | head` and
//! `list | head` end quietly instead of panicking on the closed pipe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use onboarding_record::TenantState;
use support::Env;

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

#[tokio::test]
async fn status_of_a_failed_tenant_says_why_and_every_time_carries_its_zone() {
    use onboarding_contract::events::{
        CloudEvent, EventData, EventError, OutcomeData, RemainingResource,
    };
    let env = Env::new();
    env.tenants(&[("acme", TenantState::Failed, "default")])
        .await;
    // The failed request's outcome, as the worker records it.
    let journal = onboarding_journal::sqlite::SqliteJournal::open(&env.path("journal.db")).unwrap();
    let stored = onboarding_journal::Journal::load(&journal, "acme")
        .await
        .unwrap()
        .unwrap();
    let mut rec: onboarding_record::TenantRecord = serde_json::from_value(stored.value).unwrap();
    let event = CloudEvent::new(
        onboarding_contract::events::ONBOARDING_FAILED,
        "e1".into(),
        Some("acme".into()),
        chrono::Utc::now(),
        None,
        EventData::Outcome(OutcomeData {
            request_id: "req-acme".into(),
            tenant_id: "acme".into(),
            target: "default".into(),
            state: "Failed".into(),
            resources: Default::default(),
            error: Some(EventError {
                step: Some("node_pool".into()),
                class: "permanent".into(),
                code: Some("BadRequest".into()),
                message: "The VM size of AgentPoolProfile:tacme is not allowed".into(),
            }),
            remaining: vec![RemainingResource {
                step: "identity".into(),
                resource: "id-tenant-acme".into(),
                reason: "failed".into(),
            }],
            duration_ms: 10,
            not_found: false,
        }),
    );
    rec.finished.push_back(onboarding_record::FinishedRequest {
        request_id: "req-acme".into(),
        event,
    });
    onboarding_journal::Journal::store(
        &journal,
        "acme",
        &serde_json::to_value(&rec).unwrap(),
        Some(stored.version),
    )
    .await
    .unwrap();

    let out = env.producer(&["status", "acme"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("failed at step node_pool (permanent, BadRequest): The VM size"),
        "{text}"
    );
    assert!(
        text.contains("left in place (failed): identity id-tenant-acme"),
        "{text}"
    );
    // Every hh:mm:ss is followed by its zone.
    let bytes = text.as_bytes();
    let mut times = 0;
    for i in 0..bytes.len().saturating_sub(8) {
        let w = &bytes[i..i + 8];
        let time = w.iter().enumerate().all(|(k, b)| {
            if k == 2 || k == 5 {
                *b == b':'
            } else {
                b.is_ascii_digit()
            }
        });
        if time {
            times += 1;
            assert!(
                text[i + 8..].starts_with(" UTC"),
                "a time without its zone: {}",
                &text[i..(i + 20).min(text.len())]
            );
        }
    }
    assert!(times > 0, "{text}");
    assert!(text.contains(" UTC"), "{text}");
}

#[tokio::test]
async fn json_output_covers_errors_and_an_oversize_raw_send_is_invalid_input() {
    let env = Env::new();
    let out = env.producer(&["--json", "status", "nobody"]);
    assert_eq!(out.status.code(), Some(4));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["exitCode"], 4);
    assert!(
        doc["error"]["message"].as_str().unwrap().contains("nobody"),
        "{doc}"
    );

    let big = env.path("big.json");
    std::fs::write(&big, vec![b'x'; 2 * 1024 * 1024]).unwrap();
    let out = env.producer(&["send", "--raw", big.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "nothing was sent: invalid input"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("limit"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn reading_where_the_worker_never_ran_says_where_it_looked_and_creates_nothing() {
    // No journal or queue file yet: as if run from the wrong directory.
    let env = Env::bare();
    for args in [&["status", "acme"][..], &["list"][..], &["dlq", "list"][..]] {
        let out = env.producer(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("there is no") && stderr.contains(env.dir.path().to_str().unwrap()),
            "{args:?}: {stderr}"
        );
    }
    assert!(!env.path("journal.db").exists(), "no empty journal made up");
    assert!(!env.path("queue.db").exists(), "no empty queue made up");
}

/// Records an outcome event for `tenant` in its journal record, as the worker does.
async fn record_outcome(env: &Env, tenant: &str, request: &str, at: &str) {
    use onboarding_contract::events::{CloudEvent, EventData, OutcomeData};
    let journal = onboarding_journal::sqlite::SqliteJournal::open(&env.path("journal.db")).unwrap();
    let stored = onboarding_journal::Journal::load(&journal, tenant)
        .await
        .unwrap()
        .unwrap();
    let mut rec: onboarding_record::TenantRecord = serde_json::from_value(stored.value).unwrap();
    let event = CloudEvent::new(
        onboarding_contract::events::ONBOARDED,
        format!("ev-{request}"),
        Some(tenant.into()),
        chrono::DateTime::parse_from_rfc3339(at).unwrap().into(),
        None,
        EventData::Outcome(OutcomeData {
            request_id: request.into(),
            tenant_id: tenant.into(),
            target: "default".into(),
            state: "Succeeded".into(),
            resources: Default::default(),
            error: None,
            remaining: Vec::new(),
            duration_ms: 1,
            not_found: false,
        }),
    );
    rec.finished.push_back(onboarding_record::FinishedRequest {
        request_id: request.into(),
        event,
    });
    onboarding_journal::Journal::store(
        &journal,
        tenant,
        &serde_json::to_value(&rec).unwrap(),
        Some(stored.version),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn events_prints_the_recorded_outcomes_oldest_first_and_follows_new_ones() {
    let env = Env::new();
    env.tenants(&[
        ("acme", TenantState::Onboarded, "default"),
        ("beta", TenantState::Onboarded, "default"),
    ])
    .await;
    record_outcome(&env, "beta", "b-1", "2026-12-06T10:00:00Z").await;
    record_outcome(&env, "acme", "a-1", "2026-12-06T11:00:00Z").await;

    let out = env.producer(&["--json", "events"]);
    assert!(out.status.success(), "{out:?}");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["ev-b-1", "ev-a-1"], "oldest first");
    let only =
        String::from_utf8_lossy(&env.producer(&["events", "--tenant", "acme"]).stdout).into_owned();
    assert!(only.contains("a-1") && !only.contains("b-1"), "{only}");

    // --follow: what is recorded later shows up.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_producer"))
        .arg("--config")
        .arg(&env.config)
        .args(["events", "--follow", "--tenant", "acme"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    record_outcome(&env, "acme", "a-2", "2026-12-06T12:00:00Z").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("a-1") && text.contains("a-2"), "{text}");
    assert_eq!(text.matches("a-1").count(), 1, "each event once: {text}");
}
