//! Tests of the parser and validator: every path, reason and normalisation.
use super::*;
use serde_json::json;

fn cx() -> ValidationContext {
    ValidationContext {
        max_message_bytes: 64 * 1024,
        targets: ["default".to_string()].into_iter().collect(),
        workload_template: true,
        reserved_namespaces: BTreeSet::from(["tenant-onboarding".to_string()]),
    }
}

fn parse(v: Value) -> Result<Command, Rejection> {
    parse_command(&serde_json::to_vec(&v).expect("json"), &cx())
}

fn onboard() -> Value {
    json!({"schemaVersion":"1.0","kind":"OnboardTenant","requestId":"r-1","tenantId":"acme",
           "nodePool":{"vmSize":"Standard_D4s_v5","count":1}})
}

#[test]
fn integers_written_with_a_zero_fraction_are_taken_as_the_schema_allows() {
    let mut v = onboard();
    v["nodePool"]["count"] = json!(2.0);
    v["workload"] = json!({"replicas": 3.0});
    let Command::Onboard(c) = parse(v).expect("the schema allows 2.0") else {
        panic!("an onboarding")
    };
    assert_eq!(c.node_pool.count, Some(2));
    assert_eq!(c.workload.map(|w| w.replicas), Some(3));
    let mut v = onboard();
    v["nodePool"]["count"] = json!(2.5);
    let r = parse(v).expect_err("not an integer");
    assert_eq!(r.errors[0].path, "/nodePool/count", "{r}");
}

#[test]
fn a_numeric_schema_version_is_told_to_be_a_string() {
    let mut v = onboard();
    v["schemaVersion"] = json!(1.0);
    let r = parse(v).expect_err("a number");
    assert_eq!(r.reason, RejectReason::UnsupportedSchemaVersion);
    assert!(r.errors[0].message.contains("must be the string"), "{r}");
}

#[test]
fn a_zone_listed_twice_is_refused_naming_it() {
    let mut v = onboard();
    v["nodePool"]["zones"] = json!(["1", "2", "1"]);
    let r = parse(v).expect_err("duplicate zone");
    assert_eq!(r.errors[0].path, "/nodePool/zones/2", "{r}");
}

#[test]
fn an_upper_case_admin_group_id_is_taken_in_lower_case() {
    let mut v = onboard();
    v["adminGroupId"] = json!("11111111-AAAA-3333-4444-55555555555F");
    let Command::Onboard(c) = parse(v).expect("valid") else {
        panic!("an onboarding")
    };
    assert_eq!(
        c.admin_group_id.as_deref(),
        Some("11111111-aaaa-3333-4444-55555555555f")
    );
}

#[test]
fn a_valid_onboarding_parses() {
    let c = parse(onboard()).expect("valid");
    assert_eq!(c.tenant_id(), "acme");
    assert_eq!(c.request_id(), "r-1");
}

#[test]
fn every_bad_field_is_reported_at_once_with_its_path() {
    let mut v = onboard();
    v["tenantId"] = json!("Bad_Tenant");
    v["nodePool"]["count"] = json!("three");
    v["quota"] = json!({"cpu": "lots", "memory": "1Gi", "pods": 0});
    v["colour"] = json!("blue");
    let r = parse(v).expect_err("invalid");
    assert_eq!(r.reason, RejectReason::SchemaViolation);
    let paths: BTreeSet<_> = r.errors.iter().map(|e| e.path.as_str()).collect();
    for p in [
        "/tenantId",
        "/nodePool/count",
        "/quota/cpu",
        "/quota/pods",
        "",
    ] {
        assert!(paths.contains(p), "missing {p:?} in {:?}", r.errors);
    }
    assert!(r.description().contains("colour"), "{}", r.description());
    assert_eq!(r.request_id.as_deref(), Some("r-1"));
}

#[test]
fn unknown_schema_versions_and_kinds_are_named() {
    let mut v = onboard();
    v["schemaVersion"] = json!("2.0");
    assert_eq!(
        parse(v).expect_err("x").reason,
        RejectReason::UnsupportedSchemaVersion
    );
    let mut v = onboard();
    v["kind"] = json!("DeleteEverything");
    assert_eq!(
        parse(v).expect_err("x").reason,
        RejectReason::UnknownCommandKind
    );
}

#[test]
fn a_target_that_is_not_configured_is_refused() {
    let mut v = onboard();
    v["target"] = json!("someone-elses-subscription");
    let r = parse(v).expect_err("x");
    assert_eq!(r.reason, RejectReason::UnknownTarget);
    assert_eq!(r.errors[0].path, "/target");
}

#[test]
fn oversize_and_malformed_bodies_are_refused_without_parsing() {
    let big = vec![b' '; 70 * 1024];
    assert_eq!(
        parse_command(&big, &cx()).expect_err("x").reason,
        RejectReason::MessageTooLarge
    );
    for bad in [
        &b"{"[..],
        b"\xff\xfe",
        b"null",
        b"[1]",
        b"{\"a\":\"\\ud800\"}",
    ] {
        assert!(parse_command(bad, &cx()).is_err(), "{bad:?}");
    }
}

#[test]
fn duplicate_keys_at_any_depth_are_refused_as_malformed() {
    let body = br#"{"schemaVersion":"1.0","kind":"OnboardTenant","requestId":"r-1","tenantId":"evil-x","tenantId":"acme","nodePool":{"vmSize":"Standard_D4s_v5","count":1}}"#;
    let r = parse_command(body, &cx()).expect_err("duplicate tenantId");
    assert_eq!(r.reason, RejectReason::MalformedJson);
    assert!(
        r.description().contains("duplicate key \"tenantId\""),
        "{}",
        r.description()
    );
    let nested = br#"{"schemaVersion":"1.0","kind":"OnboardTenant","requestId":"r-1","tenantId":"acme","nodePool":{"vmSize":"Standard_D4s_v5","count":1,"count":2}}"#;
    assert_eq!(
        parse_command(nested, &cx()).expect_err("nested").reason,
        RejectReason::MalformedJson
    );
}

#[test]
fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    let deep = [vec![b'['; 100_000], vec![b']'; 100_000]].concat();
    let r = parse_command(
        &deep,
        &ValidationContext {
            max_message_bytes: 0,
            ..cx()
        },
    )
    .expect_err("too deep");
    assert_eq!(r.reason, RejectReason::MalformedJson);
}

#[test]
fn count_and_autoscale_range_are_exclusive() {
    let mut v = onboard();
    v["nodePool"]["minCount"] = json!(1);
    assert!(parse(v).is_err());
    let mut v = onboard();
    v["nodePool"] = json!({"vmSize":"Standard_D4s_v5","minCount":5,"maxCount":2});
    let r = parse(v).expect_err("x");
    assert_eq!(r.errors[0].path, "/nodePool/minCount");
}

#[test]
fn huge_field_values_are_clipped_in_error_messages() {
    let mut v = onboard();
    v["tenantId"] = json!("a".repeat(100_000));
    let r = parse_command(
        &serde_json::to_vec(&v).expect("json"),
        &ValidationContext {
            max_message_bytes: 0,
            ..cx()
        },
    )
    .expect_err("x");
    assert!(r.description().len() < 5_000);
    assert!(r.tenant_id.is_none());
}
