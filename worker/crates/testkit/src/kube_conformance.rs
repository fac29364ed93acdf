//! `KubeProvisioner` conformance suite: what the saga relies on from any Kubernetes provider,
//! written once and run against each implementation (the real API server as the worker's own
//! ServiceAccount, and the loopback simulator the local run falls back to).
//!
//! Touches only the provider and target it is handed; each property works in a namespace of its
//! own (`tenant-k<random>`), so the suite also runs against a shared cluster. Functions panic on a
//! violated property, like test code.
//!
//! ```ignore
//! async fn real() -> Option<KubeEnv> { /* None prints why it is skipped */ }
//! onboarding_testkit::kube_conformance_tests!(real);
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use onboarding_providers::manifests::{self, GuardrailSpec};
use onboarding_providers::{
    GuardrailDefaults, KubeObject, KubeProvisioner, Target, WorkloadTemplate,
};

/// What a property runs against.
pub struct KubeEnv {
    pub kube: Arc<dyn KubeProvisioner>,
    pub target: Target,
    /// How long a deleted namespace may take to disappear (a real cluster removes its content
    /// first; a simulator at once).
    pub namespace_deletion: Duration,
    /// Anything that must live as long as the test (a simulator, a temporary directory).
    pub guard: Box<dyn std::any::Any + Send>,
}

/// Expands to one `#[tokio::test]` per property, each calling `$factory().await` for a fresh
/// [`KubeEnv`]; `None` skips the test (the factory prints what is missing).
#[macro_export]
macro_rules! kube_conformance_tests {
    ($factory:expr) => {
        $crate::kube_conformance_tests!(@each $factory;
            applying_a_new_object_creates_it_and_returns_it_live,
            applying_the_same_objects_again_changes_nothing,
            getting_an_object_that_does_not_exist_is_none,
            deleting_an_object_that_does_not_exist_succeeds,
            a_deleted_object_is_gone,
            a_delete_for_an_object_that_changed_since_it_was_read_deletes_nothing,
            every_object_of_a_tenant_applies_in_its_namespace,
            a_deleted_namespace_disappears_with_what_it_held,
        );
    };
    (@each $factory:expr; $($property:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $property() {
                let Some(env) = ($factory)().await else {
                    return;
                };
                $crate::kube_conformance::$property(env).await;
            }
        )+
    };
}

fn tenant() -> String {
    format!("k{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// Every object the namespace, service-account, guardrails and workload steps apply for
/// `tenant` (with an admin group and one replica), and the tenant's namespace.
pub fn tenant_objects(tenant: &str) -> (String, Vec<KubeObject>) {
    let ns = format!("tenant-{tenant}");
    let mut objects = vec![
        manifests::namespace(&ns, tenant),
        manifests::service_account(&ns, "tenant-workload", tenant, "client-id", None),
    ];
    objects.extend(manifests::guardrails(
        &ns,
        tenant,
        &GuardrailSpec::from_defaults(
            &GuardrailDefaults::default(),
            Some("11111111-2222-3333-4444-555555555555".into()),
        ),
    ));
    objects.push(manifests::workload(
        &ns,
        tenant,
        "tenant-workload",
        &WorkloadTemplate::default(),
        1,
    ));
    (ns, objects)
}

async fn apply(env: &KubeEnv, object: &KubeObject) -> serde_json::Value {
    env.kube
        .apply(&env.target, object)
        .await
        .unwrap_or_else(|e| panic!("{} {} refused: {e}", object.kind, object.name))
}

pub async fn applying_a_new_object_creates_it_and_returns_it_live(env: KubeEnv) {
    let t = tenant();
    let ns = manifests::namespace(&format!("tenant-{t}"), &t);
    let live = apply(&env, &ns).await;
    assert_eq!(live["metadata"]["name"], ns.name.as_str());
    assert_eq!(live["metadata"]["labels"]["tenant"], t.as_str());
    let got = env
        .kube
        .get(&env.target, &ns.reference())
        .await
        .expect("get");
    assert_eq!(
        got.expect("exists")["metadata"]["labels"]["tenant"],
        t.as_str()
    );
}

pub async fn applying_the_same_objects_again_changes_nothing(env: KubeEnv) {
    let (_, objects) = tenant_objects(&tenant());
    let mut first = Vec::new();
    for o in &objects {
        first.push(apply(&env, o).await);
    }
    for (o, before) in objects.iter().zip(&first) {
        let after = apply(&env, o).await;
        // What the worker set stays as it set it (controllers may add their own annotations).
        for field in ["labels", "annotations"] {
            let ours = o.manifest["metadata"][field]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for (key, value) in ours {
                assert_eq!(
                    after["metadata"][field][&key], value,
                    "{} {}: {field} {key}",
                    o.kind, o.name
                );
            }
        }
        assert_eq!(after["spec"], before["spec"], "{} {}: spec", o.kind, o.name);
        assert_eq!(
            after["metadata"]["generation"], before["metadata"]["generation"],
            "{} {}: an unchanged apply made a new generation",
            o.kind, o.name
        );
        // Controllers write the status of these (quota usage, replicas), which changes the
        // resource version without any apply; every other kind must keep it.
        if !matches!(
            o.kind.as_str(),
            "ResourceQuota" | "Deployment" | "Namespace"
        ) {
            assert_eq!(
                after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
                "{} {} was rewritten by an unchanged apply",
                o.kind, o.name
            );
        }
    }
}

pub async fn getting_an_object_that_does_not_exist_is_none(env: KubeEnv) {
    let t = tenant();
    let reference = manifests::namespace_ref(&format!("tenant-{t}"));
    assert_eq!(
        env.kube.get(&env.target, &reference).await.expect("get"),
        None
    );
}

pub async fn deleting_an_object_that_does_not_exist_succeeds(env: KubeEnv) {
    let t = tenant();
    let ns = format!("tenant-{t}");
    env.kube
        .delete(&env.target, &manifests::namespace_ref(&ns))
        .await
        .expect("a missing namespace");
    env.kube
        .delete(&env.target, &manifests::workload_ref(&ns))
        .await
        .expect("an object in a missing namespace");
}

pub async fn a_deleted_object_is_gone(env: KubeEnv) {
    let t = tenant();
    let ns = format!("tenant-{t}");
    apply(&env, &manifests::namespace(&ns, &t)).await;
    let sa = manifests::service_account(&ns, "tenant-workload", &t, "client-id", None);
    apply(&env, &sa).await;
    env.kube
        .delete(&env.target, &sa.reference())
        .await
        .expect("delete");
    assert_eq!(
        env.kube
            .get(&env.target, &sa.reference())
            .await
            .expect("get"),
        None
    );
}

/// The worker checks ownership, then deletes with that object's uid and resourceVersion as
/// preconditions: if it changed in between (relabelled by its new owner, say), the delete must
/// not happen.
pub async fn a_delete_for_an_object_that_changed_since_it_was_read_deletes_nothing(env: KubeEnv) {
    let t = tenant();
    let ns = format!("tenant-{t}");
    apply(&env, &manifests::namespace(&ns, &t)).await;
    let sa = manifests::service_account(&ns, "tenant-workload", &t, "client-id", None);
    let read = apply(&env, &sa).await;
    let field = |v: &serde_json::Value, p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (uid, version) = (
        field(&read, "/metadata/uid"),
        field(&read, "/metadata/resourceVersion"),
    );
    // Someone changes it after the worker looked.
    let changed = manifests::service_account(&ns, "tenant-workload", &t, "other-client", None);
    let now = apply(&env, &changed).await;
    assert_ne!(
        field(&now, "/metadata/resourceVersion"),
        version,
        "a new version"
    );
    let deleted = env
        .kube
        .delete_unchanged(&env.target, &sa.reference(), &uid, &version)
        .await
        .expect("a refused precondition is an answer, not an error");
    assert!(!deleted, "the changed object must not be deleted");
    assert!(
        env.kube
            .get(&env.target, &sa.reference())
            .await
            .expect("get")
            .is_some()
    );
    // With the current version it goes.
    let deleted = env
        .kube
        .delete_unchanged(
            &env.target,
            &sa.reference(),
            &field(&now, "/metadata/uid"),
            &field(&now, "/metadata/resourceVersion"),
        )
        .await
        .expect("delete");
    assert!(deleted);
    assert!(
        env.kube
            .get(&env.target, &sa.reference())
            .await
            .expect("get")
            .is_none()
    );
}

pub async fn every_object_of_a_tenant_applies_in_its_namespace(env: KubeEnv) {
    let (ns, objects) = tenant_objects(&tenant());
    for o in &objects {
        let live = apply(&env, o).await;
        if o.kind != "Namespace" {
            assert_eq!(
                live["metadata"]["namespace"],
                ns.as_str(),
                "{} {}",
                o.kind,
                o.name
            );
        }
    }
}

pub async fn a_deleted_namespace_disappears_with_what_it_held(env: KubeEnv) {
    let (ns, objects) = tenant_objects(&tenant());
    for o in objects.iter().filter(|o| o.kind != "Deployment") {
        apply(&env, o).await;
    }
    let reference = manifests::namespace_ref(&ns);
    env.kube
        .delete(&env.target, &reference)
        .await
        .expect("delete");
    let start = Instant::now();
    loop {
        match env.kube.get(&env.target, &reference).await.expect("get") {
            None => break,
            Some(live) => {
                // Until it is gone, it says it is going: never Active again.
                assert_ne!(live["status"]["phase"], "Active", "{live}");
            }
        }
        assert!(
            start.elapsed() < env.namespace_deletion,
            "namespace {ns} still there after {:?}",
            env.namespace_deletion
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let sa = manifests::service_account_ref(&ns, "tenant-workload");
    assert_eq!(env.kube.get(&env.target, &sa).await.expect("get"), None);
}
