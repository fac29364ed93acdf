//! Hostile input: a corpus of malformed and malicious messages (`tests/corpus/`, expectations
//! in `tests/corpus/expected.json`) is sent as raw bytes with `producer send --raw` to a running
//! worker. Each must be dead-lettered with the expected reason code (and, where the manifest
//! names one, an error at the expected JSON path and a description saying what was wrong), with
//! one `request.rejected` event; the simulators must never have been called, the journal must
//! hold nothing, and the worker must still onboard a valid tenant afterwards.
//!
//! Manifest entries: `reason` (the dead-letter reason code), `path` (a JSON pointer one of the
//! errors must have, `""` for the whole body), `contains` (text the description must contain),
//! `session` (send with this SessionId instead of the body's tenant), `generate` (build the body
//! at test time: `prefix` + `repeat` × `times` + `suffix`, for bodies too big to keep in the
//! repository), `what` (for people).
//!
//! Property tests of the parser and the name derivation run here too (proptest):
//! `PROPTEST_CASES=100000 cargo test -p e2e --test hostile_input -- proptest` runs them longer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::{ProcessHarness, Settings};
use onboarding_contract::events::EventData;
use onboarding_contract::names::TenantNames;
use onboarding_contract::{Command, ValidationContext, parse_command};
use onboarding_providers::rbac::{blob_container_condition, role_assignment_name};
use proptest::prelude::*;
use serde_json::{Value, json};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    reason: String,
    path: Option<String>,
    contains: Option<String>,
    session: Option<String>,
    generate: Option<Value>,
}

fn manifest() -> Vec<Entry> {
    let text = std::fs::read_to_string(corpus_dir().join("expected.json")).unwrap();
    let map: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    map.into_iter()
        .map(|(name, e)| Entry {
            name,
            reason: e["reason"].as_str().unwrap().to_string(),
            path: e["path"].as_str().map(str::to_string),
            contains: e["contains"].as_str().map(str::to_string),
            session: e["session"].as_str().map(str::to_string),
            generate: e.get("generate").cloned(),
        })
        .collect()
}

/// The manifest and the corpus directory list the same files.
#[test]
fn every_corpus_file_has_an_expectation_and_every_expectation_a_file() {
    let entries = manifest();
    let mut listed: Vec<String> = entries
        .iter()
        .filter(|e| e.generate.is_none())
        .map(|e| e.name.clone())
        .collect();
    listed.sort();
    let mut files: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "expected.json")
        .collect();
    files.sort();
    assert_eq!(listed, files);
    assert!(
        entries.len() >= 40,
        "only {} hostile messages",
        entries.len()
    );
}

fn body_file(h: &ProcessHarness, e: &Entry) -> PathBuf {
    match &e.generate {
        None => corpus_dir().join(&e.name),
        Some(g) => {
            let mut body = g["prefix"].as_str().unwrap().to_string();
            body.push_str(
                &g["repeat"]
                    .as_str()
                    .unwrap()
                    .repeat(g["times"].as_u64().unwrap() as usize),
            );
            body.push_str(g["suffix"].as_str().unwrap());
            let path = h.dir.path().join(&e.name);
            std::fs::write(&path, body).unwrap();
            path
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_message_is_dead_lettered_with_its_reason_and_nothing_is_provisioned() {
    let h = ProcessHarness::start(Settings {
        // Large enough that 100 000 nested arrays reach the JSON parser (and its recursion
        // limit), small enough that the 235 KiB body is refused for its size.
        max_message_bytes: 192 * 1024,
        ..Settings::default()
    })
    .await;
    h.spawn_worker();
    let entries = manifest();
    let mut sent: Vec<(Entry, String)> = Vec::new();
    for e in &entries {
        let file = body_file(&h, e);
        let mut args = vec![
            "send".to_string(),
            "--raw".into(),
            file.display().to_string(),
        ];
        if let Some(s) = &e.session {
            args.extend(["--tenant".into(), s.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = h.producer(&args, Duration::from_secs(30)).await;
        assert_eq!(out.code, Some(0), "{}: {out:?}", e.name);
        let id = out.json()["messageId"].as_str().unwrap().to_string();
        sent.push((e.clone(), id));
    }

    let mut failures = Vec::new();
    for (e, id) in &sent {
        let event = h.wait_for_rejection(id, Duration::from_secs(60)).await;
        let EventData::Rejected(r) = &event.data else {
            panic!("{}: not a rejection: {event:?}", e.name)
        };
        let description = r
            .errors
            .iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect::<Vec<_>>()
            .join("; ");
        if r.reason != e.reason {
            failures.push(format!(
                "{}: reason {} (want {}): {description}",
                e.name, r.reason, e.reason
            ));
            continue;
        }
        if let Some(p) = &e.path
            && !r.errors.iter().any(|f| &f.path == p)
        {
            failures.push(format!("{}: no error at {p:?}: {description}", e.name));
        }
        if let Some(c) = &e.contains
            && !description.contains(c.as_str())
        {
            failures.push(format!(
                "{}: description lacks {c:?}: {description}",
                e.name
            ));
        }
        if r.errors.iter().any(|f| f.message.trim().is_empty()) {
            failures.push(format!("{}: an error without a message", e.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Each message is in the dead-letter queue once, with the same reason and a description.
    h.wait_for_empty_queue(Duration::from_secs(30)).await;
    let dead: BTreeMap<String, _> = h
        .dead_letters()
        .await
        .into_iter()
        .map(|m| (m.message_id.clone(), m))
        .collect();
    assert_eq!(dead.len(), sent.len(), "dead letters: {:?}", dead.keys());
    for (e, id) in &sent {
        let m = dead
            .get(id)
            .unwrap_or_else(|| panic!("{} not dead-lettered", e.name));
        assert_eq!(
            m.dead_letter_reason.as_deref(),
            Some(e.reason.as_str()),
            "{}",
            e.name
        );
        let d = m.dead_letter_description.as_deref().unwrap_or_default();
        assert!(!d.is_empty() && d.len() <= 5_000, "{}: {d:?}", e.name);
        if let Some(c) = &e.contains {
            assert!(d.contains(c.as_str()), "{}: {d}", e.name);
        }
    }
    let rejections = h
        .events()
        .await
        .into_iter()
        .filter(|e| e.ty == "request.rejected")
        .count();
    assert_eq!(rejections, sent.len(), "one request.rejected per message");

    // Nothing was provisioned: the simulators were never even called, the journal is empty.
    assert_eq!(h.arm_inventory().counters.requests, 0);
    let kube = h.sims.kube.inventory();
    assert_eq!(kube["counters"], json!({}), "{kube}");
    assert!(h.kube_objects().is_empty());
    assert!(h.journal.keys().await.unwrap().is_empty());
    let (arm_http, kube_http) = h.http_inventories().await;
    assert_eq!(arm_http["total"], 0);
    assert_eq!(kube_http["objects"], json!({}));

    // And the worker still serves.
    assert!(h.dead_workers().is_empty(), "the worker died");
    let out = h
        .producer(
            &[
                "send",
                "--tenant",
                "after-the-storm",
                "--wait",
                "--timeout",
                "60",
            ],
            Duration::from_secs(90),
        )
        .await;
    assert_eq!(
        out.code,
        Some(0),
        "a valid onboarding after the corpus failed: {out:?}"
    );
    assert!(out.stdout.contains("tenant.onboarded"), "{}", out.stdout);
    assert_eq!(h.arm_inventory().total, 5, "{:?}", h.arm_resources());
}

// ------------------------------------------------------------------------------------------
// Property tests of the parser and of the names derived from accepted commands.

fn cx() -> ValidationContext {
    ValidationContext {
        max_message_bytes: 64 * 1024,
        targets: ["default".to_string(), "west-eu".to_string()]
            .into_iter()
            .collect(),
        workload_template: true,
        reserved_namespaces: ["tenant-onboarding".to_string()].into_iter().collect(),
    }
}

/// Arbitrary JSON, biased towards the command's own field names so that the schema checks,
/// not only the syntax checks, see it.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("schemaVersion".to_string()),
        Just("kind".to_string()),
        Just("requestId".to_string()),
        Just("tenantId".to_string()),
        Just("target".to_string()),
        Just("nodePool".to_string()),
        Just("vmSize".to_string()),
        Just("count".to_string()),
        Just("quota".to_string()),
        Just("workload".to_string()),
        ".{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("1.0")),
        Just(json!("OnboardTenant")),
        Just(json!("OffboardTenant")),
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Strings a tenant id field may hold: mostly near-valid ids, some arbitrary Unicode.
fn arb_tenant() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9][a-z0-9-]{1,42}[a-z0-9]",
        1 => "[a-z0-9'%./\\]\\[-]{1,45}",
        1 => "\\PC{0,45}",
        1 => ".{0,45}",
    ]
}

/// A command that is valid except where the strategy put something else.
fn arb_command() -> impl Strategy<Value = Value> {
    (
        arb_tenant(),
        prop_oneof![6 => "[A-Za-z0-9][A-Za-z0-9._-]{0,110}", 1 => ".{0,120}"],
        prop_oneof![
            4 => Just(None),
            2 => Just(Some("default".to_string())),
            1 => "[a-z0-9/-]{0,20}".prop_map(Some),
        ],
        prop_oneof![6 => "Standard_[A-Za-z0-9_]{1,45}", 1 => ".{0,30}"],
        (0u32..=105, 0u32..=105, prop::bool::ANY),
        prop::option::of(0u32..=55),
        prop::bool::ANY,
    )
        .prop_map(|(tenant, request, target, vm, (a, b, auto), workload, offboard)| {
            if offboard {
                let mut v = json!({"schemaVersion":"1.0","kind":"OffboardTenant","requestId":request,"tenantId":tenant});
                if let Some(t) = target {
                    v["target"] = json!(t);
                }
                return v;
            }
            let pool = if auto {
                json!({"vmSize": vm, "minCount": a, "maxCount": b})
            } else {
                json!({"vmSize": vm, "count": a})
            };
            let mut v = json!({"schemaVersion":"1.0","kind":"OnboardTenant","requestId":request,"tenantId":tenant,"nodePool":pool});
            if let Some(t) = target {
                v["target"] = json!(t);
            }
            if let Some(r) = workload {
                v["workload"] = json!({"replicas": r});
            }
            v
        })
}

fn dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Everything derived from an accepted command is within its resource's limits, and nothing
/// but lowercase ASCII letters, digits and hyphens from the input reaches a name.
fn assert_names_within_limits(command: &Command) {
    let tenant = command.tenant_id();
    let n = TenantNames::derive(tenant).expect("an accepted tenant id derives names");
    assert!(dns_label(&n.namespace), "namespace {:?}", n.namespace);
    assert!(dns_label(&n.service_account), "{:?}", n.service_account);
    assert!(
        (1..=12).contains(&n.node_pool.len())
            && n.node_pool.starts_with(|c: char| c.is_ascii_lowercase())
            && n.node_pool
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "node pool {:?}",
        n.node_pool
    );
    assert!(
        (3..=63).contains(&n.blob_container.len())
            && dns_label(&n.blob_container)
            && !n.blob_container.contains("--"),
        "container {:?}",
        n.blob_container
    );
    for (what, name, max) in [
        ("identity", &n.identity, 128),
        ("federated credential", &n.federated_credential, 120),
    ] {
        assert!(
            (3..=max).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{what} {name:?}"
        );
    }
    let condition = blob_container_condition(&n.blob_container).expect("condition");
    assert_eq!(condition.matches('\'').count(), 12, "{condition}");
    assert!(condition.ends_with(&format!("StringEquals '{}'))", n.blob_container)));
    let ra = role_assignment_name("/subscriptions/s/x", "p", "r");
    assert!(uuid::Uuid::parse_str(&ra).is_ok());
    // Continuation MessageIds are `<request-id>:<seq>`, within Service Bus's 128 characters.
    assert!(
        command.request_id().len() + 1 + 10 <= 128,
        "{}",
        command.request_id()
    );
    assert!(!command.request_id().contains(':'));
    if let Some(t) = command.target() {
        assert!(
            cx().targets.contains(t),
            "unconfigured target {t:?} accepted"
        );
    }
}

proptest! {
    #[test]
    fn proptest_arbitrary_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse_command(&bytes, &cx());
    }

    #[test]
    fn proptest_arbitrary_json_never_panics_and_whatever_is_accepted_has_valid_names(v in arb_json()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Ok(command) = parse_command(&bytes, &cx()) {
            assert_names_within_limits(&command);
        }
    }

    #[test]
    fn proptest_near_valid_commands_are_accepted_only_with_names_within_limits(v in arb_command()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        match parse_command(&bytes, &cx()) {
            Ok(command) => assert_names_within_limits(&command),
            Err(r) => {
                prop_assert!(!r.errors.is_empty());
                prop_assert!(r.description().len() <= 5_000);
            }
        }
    }
}

/// The property tests must reach acceptance, or they would only test the rejections.
#[test]
fn the_near_valid_strategy_produces_accepted_commands() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = arb_command();
    let accepted = (0..500)
        .filter(|_| {
            let v = strategy.new_tree(&mut runner).unwrap().current();
            parse_command(&serde_json::to_vec(&v).unwrap(), &cx()).is_ok()
        })
        .count();
    assert!(
        accepted >= 50,
        "only {accepted} of 500 generated commands were accepted"
    );
}
