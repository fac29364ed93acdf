//! Unit tests of the simulated object store.

use super::*;

fn res(kind: &str) -> &'static Resource {
    RESOURCES.iter().find(|r| r.kind == kind).expect("kind")
}

fn ns_body(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn apply_ns(
    store: &mut Store,
    name: &str,
    labels: Value,
    manager: &str,
    force: bool,
) -> Result<Applied, ApiError> {
    let ns = res("Namespace");
    store.apply(
        ns,
        &Key::new(ns, None, name),
        ns_body(name, labels),
        manager,
        force,
        false,
    )
}

#[test]
fn an_identical_reapply_changes_nothing() {
    let mut store = Store::default();
    let first = apply_ns(&mut store, "a", json!({"x": "1"}), "m", true).expect("apply");
    assert!(first.created);
    let again = apply_ns(&mut store, "a", json!({"x": "1"}), "m", true).expect("apply");
    assert!(!again.created);
    assert_eq!(first.object, again.object);
    assert_eq!(store.revision(), 1);
}

#[test]
fn a_changed_apply_bumps_the_version_and_drops_fields_no_longer_applied() {
    let mut store = Store::default();
    let first = apply_ns(&mut store, "a", json!({"x": "1", "y": "2"}), "m", true).expect("apply");
    let second = apply_ns(&mut store, "a", json!({"x": "1"}), "m", true).expect("apply");
    assert_ne!(
        first.object["metadata"]["resourceVersion"],
        second.object["metadata"]["resourceVersion"]
    );
    assert_eq!(
        first.object["metadata"]["uid"],
        second.object["metadata"]["uid"]
    );
    assert!(second.object["metadata"]["labels"].get("y").is_none());
    assert_eq!(
        second.object["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "a"
    );
}

#[test]
fn another_managers_field_conflicts_unless_forced() {
    let mut store = Store::default();
    apply_ns(&mut store, "a", json!({"x": "1"}), "one", false).expect("apply");
    let err = apply_ns(&mut store, "a", json!({"x": "2"}), "two", false).expect_err("conflict");
    assert_eq!(err.code, 409);
    assert!(
        err.message
            .contains("conflict with \"one\": .metadata.labels.x"),
        "{}",
        err.message
    );
    // The same value is shared ownership, not a conflict.
    apply_ns(&mut store, "a", json!({"x": "1"}), "three", false).expect("shared");
    let forced = apply_ns(&mut store, "a", json!({"x": "2"}), "two", true).expect("forced");
    assert_eq!(forced.object["metadata"]["labels"]["x"], "2");
}

#[test]
fn a_namespaced_object_needs_its_namespace() {
    let mut store = Store::default();
    let sa = res("ServiceAccount");
    let body = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s"}});
    let err = store
        .apply(
            sa,
            &Key::new(sa, Some("missing"), "s"),
            body,
            "m",
            true,
            false,
        )
        .expect_err("no namespace");
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "namespaces \"missing\" not found");
}

#[test]
fn deleting_a_namespace_takes_its_contents() {
    let mut store = Store::default();
    apply_ns(&mut store, "a", json!({}), "m", true).expect("ns");
    let sa = res("ServiceAccount");
    let body = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s"}});
    store
        .apply(sa, &Key::new(sa, Some("a"), "s"), body, "m", true, false)
        .expect("sa");
    let ns = res("Namespace");
    store
        .delete(ns, &Key::new(ns, None, "a"), &serde_json::Value::Null)
        .expect("delete");
    assert_eq!(store.all().count(), 0);
}

#[test]
fn selectors_match_by_equality_inequality_and_existence() {
    let labels = json!({"tenant": "a", "tier": "x"});
    let sel = parse_selector("tenant=a, tier!=y,tier,!missing").expect("parse");
    assert!(sel.iter().all(|r| r.matches(&labels)));
    let sel = parse_selector("tenant==b").expect("parse");
    assert!(!sel.iter().all(|r| r.matches(&labels)));
    assert!(parse_selector("tenant in (a,b)").is_err());
}
