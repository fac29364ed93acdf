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
