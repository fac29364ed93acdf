//! The worker's own credential, end to end through the real binaries: the default target signs
//! in with workload identity (`azure_identity` exchanging a projected token file at the Entra
//! simulator over TLS), and the ARM simulator accepts only the tokens Entra issued. Entra
//! misbehaving as it does in production (down for a while, a federated credential not yet
//! propagated, an expired projected token) must cost time, never a saga: nothing is failed or
//! compensated, every message is processed once the worker can sign in again, and `/readyz`
//! says why the worker is not ready meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::entra::{EntraSide, WORKER_CLIENT_ID};
use e2e::{ProcessHarness, Settings, wait_until};
use onboarding_contract::events;

fn settings(entra: EntraSide) -> Settings {
    Settings {
        entra: Some(entra),
        health: true,
        ..Settings::default()
    }
}

/// `/readyz` of the harness's one worker: its status and body (`None` before it listens).
async fn readyz(h: &ProcessHarness) -> Option<(u16, String)> {
    let r = reqwest::get(format!("{}/readyz", h.health_url()))
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.unwrap_or_default()))
}

/// Token requests the worker made for ARM, by outcome (`ok`, `AADSTS90033`, …).
fn arm_token_outcomes(h: &ProcessHarness) -> Vec<String> {
    h.entra()
        .requests()
        .into_iter()
        .filter(|r| r.client_id == WORKER_CLIENT_ID && r.scope.contains("management"))
        .map(|r| r.outcome)
        .collect()
}

fn assert_nothing_failed_or_compensated(events: &[onboarding_contract::CloudEvent]) {
    let bad: Vec<&str> = events
        .iter()
        .map(|e| e.ty.as_str())
        .filter(|t| [events::ONBOARDING_FAILED, events::COMPENSATION_FAILED].contains(t))
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_gets_its_arm_tokens_from_entra_with_its_projected_token_and_onboards() {
    let h = ProcessHarness::start(settings(EntraSide::default())).await;
    h.spawn_worker();
    let outcome = h
        .request(&["send", "--tenant", "acme", "--request-id", "e-1"], "e-1")
        .await;
    assert_eq!(outcome.ty, events::ONBOARDED, "{outcome:?}");
    let outcomes = arm_token_outcomes(&h);
    assert!(outcomes.iter().any(|o| o == "ok"), "{outcomes:?}");
    // One token serves the whole onboarding: the cache, not a request per ARM call.
    assert!(outcomes.len() <= 2, "{outcomes:?}");
    let arm = h.arm_resources();
    assert!(
        !arm.is_empty(),
        "the onboarding created ARM resources: {arm:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_entra_is_down_no_saga_fails_readyz_says_why_and_every_request_is_processed_afterwards()
 {
    let h = ProcessHarness::start(settings(EntraSide::default())).await;
    h.entra().set_unavailable(
        Duration::from_secs(8),
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
    );
    h.spawn_worker();
    for (tenant, request) in [("acme", "down-1"), ("beta", "down-2")] {
        h.send_onboard(tenant, request, false).await;
    }
    let (status, body) = wait_until(
        Duration::from_secs(20),
        "/readyz to report the outage",
        || async { readyz(&h).await.filter(|(status, _)| *status == 503) },
    )
    .await;
    assert_eq!(status, 503);
    assert!(body.contains("backing off"), "{body}");
    assert!(body.contains("Entra answered 503"), "{body}");

    let found = h
        .wait_for_outcomes(
            &["down-1".to_string(), "down-2".to_string()],
            Duration::from_secs(90),
        )
        .await;
    for (request, event) in &found {
        assert_eq!(event.ty, events::ONBOARDED, "{request}: {event:?}");
    }
    assert_nothing_failed_or_compensated(&h.events().await);
    assert!(h.dead_letters().await.is_empty());
    let outcomes = arm_token_outcomes(&h);
    assert!(outcomes.iter().any(|o| o == "AADSTS90033"), "{outcomes:?}");
    assert!(outcomes.iter().any(|o| o == "ok"), "{outcomes:?}");
    // Backoff and the credential's memory of a failure: not a request per ARM call.
    assert!(
        outcomes.len() < 40,
        "{} token requests: {outcomes:?}",
        outcomes.len()
    );
    let (status, _) = wait_until(Duration::from_secs(20), "/readyz to recover", || async {
        readyz(&h).await.filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federated_credential_still_propagating_delays_the_onboarding_but_does_not_fail_it() {
    let h = ProcessHarness::start(settings(EntraSide {
        propagation: Duration::from_secs(4),
        ..EntraSide::default()
    }))
    .await;
    h.spawn_worker();
    let outcome = h
        .request(&["send", "--tenant", "acme", "--request-id", "p-1"], "p-1")
        .await;
    assert_eq!(outcome.ty, events::ONBOARDED, "{outcome:?}");
    assert_nothing_failed_or_compensated(&h.events().await);
    let outcomes = arm_token_outcomes(&h);
    assert_eq!(
        outcomes.first().map(String::as_str),
        Some("AADSTS70021"),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.last().map(String::as_str),
        Some("ok"),
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_projected_token_is_used_without_a_restart() {
    let h = ProcessHarness::start(settings(EntraSide::default())).await;
    // The kubelet has not rotated the token in time: Entra refuses it as expired.
    h.rotate_worker_token(chrono::Duration::minutes(-5));
    h.spawn_worker();
    h.send_onboard("acme", "r-1", false).await;
    wait_until(
        Duration::from_secs(20),
        "Entra to refuse the expired token",
        || async {
            arm_token_outcomes(&h)
                .iter()
                .any(|o| o == "AADSTS700024")
                .then_some(())
        },
    )
    .await;
    // The kubelet rotates it; the same worker process reads the new one at its next exchange.
    h.rotate_worker_token(chrono::Duration::hours(1));
    let found = h
        .wait_for_outcomes(&["r-1".to_string()], Duration::from_secs(90))
        .await;
    assert_eq!(found["r-1"].ty, events::ONBOARDED, "{:?}", found["r-1"]);
    assert_nothing_failed_or_compensated(&h.events().await);
}
