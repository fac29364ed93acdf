//! `KubeApplier` against the Kubernetes API simulator over HTTP: the exact requests it sends,
//! idempotent re-applies, deletes, and how failures are classified.

// Tests may unwrap (developers' guide); helpers outside #[test] functions too.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use onboarding_core::{Classify, ErrorClass};
use onboarding_kube::{KubeApplier, KubeClientOptions, KubeSetupError};
use onboarding_providers::manifests::GuardrailSpec;
use onboarding_providers::manifests::{self, FIELD_MANAGER};
use onboarding_providers::{KubeObject, KubeProvisioner, ObjectRef};
use serde_json::{Value, json};
use worker::config::{GuardrailDefaults, KubernetesConfig, Target, WorkloadTemplate};

const NS: &str = "tenant-acme";
const TENANT: &str = "acme";
const SA: &str = "acme";

struct Env {
    sim: sim::Running,
    applier: KubeApplier,
    target: Target,
    http: reqwest::Client,
}

impl Env {
    async fn start() -> Self {
        Self::start_with(KubeClientOptions::default()).await
    }

    async fn start_with(options: KubeClientOptions) -> Self {
        let sim = sim::start(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            sim::SimOptions::default(),
        )
        .await
        .unwrap();
        let target = target_at(&sim.kube_url());
        let applier = KubeApplier::from_targets_with(&targets(&target), options)
            .await
            .unwrap();
        Self {
            sim,
            applier,
            target,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.kube_url())
    }

    async fn sim_get(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn sim_post(&self, path: &str, body: Value) {
        let status = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "POST {path}: {status}");
    }

    async fn requests(&self, method: &str) -> Vec<Value> {
        let all = self.sim_get("/_sim/requests").await;
        all.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["method"] == method)
            .cloned()
            .collect()
    }

    async fn tenant_objects(&self) -> Vec<Value> {
        let inventory = self.sim_get("/_sim/inventory").await;
        let mut out = Vec::new();
        for by_ns in inventory["objects"].as_object().unwrap().values() {
            for by_name in by_ns.as_object().unwrap().values() {
                for object in by_name.as_object().unwrap().values() {
                    if object["metadata"]["labels"]["tenant"] == TENANT {
                        out.push(object.clone());
                    }
                }
            }
        }
        out
    }

    async fn apply_all(&self, objects: &[KubeObject]) -> Vec<Value> {
        let mut live = Vec::new();
        for o in objects {
            live.push(self.applier.apply(&self.target, o).await.unwrap());
        }
        live
    }
}

fn target_at(server: &str) -> Target {
    let mut target = Target::local("default");
    target.kubernetes = KubernetesConfig {
        server: Some(server.to_string()),
        ..KubernetesConfig::default()
    };
    target
}

fn targets(target: &Target) -> BTreeMap<String, Target> {
    BTreeMap::from([(target.name.clone(), target.clone())])
}

fn guardrail_spec(admin: Option<&str>) -> GuardrailSpec {
    GuardrailSpec::from_defaults(&GuardrailDefaults::default(), admin.map(str::to_string))
}

/// Everything onboarding applies, in order: every kind the builders produce.
fn onboarding_objects() -> Vec<KubeObject> {
    let mut objects = vec![
        manifests::namespace(NS, TENANT),
        manifests::service_account(NS, SA, TENANT, "client-id-1", Some("entra-2")),
    ];
    objects.extend(manifests::guardrails(
        NS,
        TENANT,
        &guardrail_spec(Some("00000000-0000-0000-0000-0000000000a1")),
    ));
    objects.push(manifests::workload(
        NS,
        TENANT,
        SA,
        &WorkloadTemplate::default(),
        2,
    ));
    objects
}

/// The URL path the real API server serves each kind at, written out independently of the code.
fn expected_path(o: &KubeObject) -> String {
    let (prefix, plural) = match o.kind.as_str() {
        "Namespace" => return format!("/api/v1/namespaces/{}", o.name),
        "ServiceAccount" => ("/api/v1", "serviceaccounts"),
        "ResourceQuota" => ("/api/v1", "resourcequotas"),
        "LimitRange" => ("/api/v1", "limitranges"),
        "NetworkPolicy" => ("/apis/networking.k8s.io/v1", "networkpolicies"),
        "Role" => ("/apis/rbac.authorization.k8s.io/v1", "roles"),
        "RoleBinding" => ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
        "Deployment" => ("/apis/apps/v1", "deployments"),
        other => panic!("unexpected kind {other}"),
    };
    format!(
        "{prefix}/namespaces/{}/{plural}/{}",
        o.namespace.as_deref().unwrap(),
        o.name
    )
}

fn query_pairs(query: &Value) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(query.as_str().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

#[tokio::test]
async fn every_onboarding_object_is_server_side_applied_with_the_fixed_field_manager() {
    let env = Env::start().await;
    let objects = onboarding_objects();
    let kinds: std::collections::BTreeSet<&str> = objects.iter().map(|o| o.kind.as_str()).collect();
    assert_eq!(kinds.len(), 7, "every kind is covered: {kinds:?}");

    let live = env.apply_all(&objects).await;

    let patches = env.requests("PATCH").await;
    assert_eq!(patches.len(), objects.len());
    for (request, object) in patches.iter().zip(&objects) {
        assert_eq!(
            request["path"],
            expected_path(object),
            "{}",
            object.reference()
        );
        assert_eq!(
            query_pairs(&request["query"]),
            BTreeMap::from([
                ("fieldManager".to_string(), FIELD_MANAGER.to_string()),
                ("force".to_string(), "true".to_string()),
            ]),
            "{}",
            object.reference()
        );
        assert_eq!(request["content_type"], "application/apply-patch+yaml");
        assert_eq!(request["body"], object.manifest, "{}", object.reference());
    }
    for (object, live) in objects.iter().zip(&live) {
        assert_eq!(live["kind"], json!(object.kind));
        assert_eq!(live["metadata"]["name"], json!(object.name));
        assert!(live["metadata"]["uid"].is_string());
        assert!(live["metadata"]["resourceVersion"].is_string());
        assert_eq!(
            live["metadata"]["managedFields"][0]["manager"],
            FIELD_MANAGER
        );
        assert_eq!(live["metadata"]["labels"]["tenant"], TENANT);
    }
    assert_eq!(env.tenant_objects().await.len(), objects.len());
    let sa = env
        .sim
        .kube
        .object("v1", "ServiceAccount", Some(NS), SA)
        .expect("service account exists");
    assert_eq!(
        sa["metadata"]["annotations"]["azure.workload.identity/tenant-id"],
        "entra-2"
    );
}

#[tokio::test]
async fn reapplying_unchanged_objects_keeps_their_resource_version() {
    let env = Env::start().await;
    let objects = onboarding_objects();
    let first = env.apply_all(&objects).await;
    let inventory_before = env.sim_get("/_sim/inventory").await;
    let second = env.apply_all(&objects).await;
    assert_eq!(first, second);
    let inventory_after = env.sim_get("/_sim/inventory").await;
    assert_eq!(
        inventory_before["resourceVersion"],
        inventory_after["resourceVersion"]
    );
    assert_eq!(inventory_before["objects"], inventory_after["objects"]);
}

#[tokio::test]
async fn a_changed_object_gets_a_new_resource_version_and_loses_fields_no_longer_applied() {
    let env = Env::start().await;
    env.apply_all(&[manifests::namespace(NS, TENANT)]).await;
    let cross = manifests::service_account(NS, SA, TENANT, "client-id-1", Some("entra-2"));
    let same = manifests::service_account(NS, SA, TENANT, "client-id-1", None);
    let before = env.applier.apply(&env.target, &cross).await.unwrap();
    let after = env.applier.apply(&env.target, &same).await.unwrap();
    assert_ne!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );
    assert_eq!(before["metadata"]["uid"], after["metadata"]["uid"]);
    let annotations = after["metadata"]["annotations"].as_object().unwrap();
    assert!(!annotations.contains_key("azure.workload.identity/tenant-id"));
    assert_eq!(
        annotations["azure.workload.identity/client-id"],
        "client-id-1"
    );
}

#[tokio::test]
async fn get_returns_the_live_object_or_none_when_it_is_missing() {
    let env = Env::start().await;
    let ns = manifests::namespace(NS, TENANT);
    let applied = env.applier.apply(&env.target, &ns).await.unwrap();
    let got = env
        .applier
        .get(&env.target, &ns.reference())
        .await
        .unwrap()
        .expect("namespace exists");
    assert_eq!(got, applied);
    assert_eq!(got["status"]["phase"], "Active");
    let missing = manifests::service_account_ref(NS, "nobody");
    assert_eq!(env.applier.get(&env.target, &missing).await.unwrap(), None);
    let in_missing_ns = manifests::workload_ref("tenant-nobody");
    assert_eq!(
        env.applier.get(&env.target, &in_missing_ns).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn deleting_every_tenant_object_leaves_nothing_of_the_tenant() {
    let env = Env::start().await;
    env.apply_all(&onboarding_objects()).await;
    let refs = manifests::tenant_object_refs(NS, SA);
    for r in &refs {
        env.applier.delete(&env.target, r).await.unwrap();
    }
    assert_eq!(env.tenant_objects().await, Vec::<Value>::new());
    let deletes = env.requests("DELETE").await;
    assert_eq!(deletes.len(), refs.len());
    assert_eq!(
        deletes.last().unwrap()["path"],
        format!("/api/v1/namespaces/{NS}")
    );
    assert_eq!(
        deletes[0]["path"],
        format!("/apis/apps/v1/namespaces/{NS}/deployments/workload")
    );
}

#[tokio::test]
async fn deleting_the_namespace_removes_everything_inside_it() {
    let env = Env::start().await;
    env.apply_all(&onboarding_objects()).await;
    env.applier
        .delete(&env.target, &manifests::namespace_ref(NS))
        .await
        .unwrap();
    assert_eq!(env.tenant_objects().await, Vec::<Value>::new());
}

#[tokio::test]
async fn delete_of_a_missing_object_or_of_one_in_a_missing_namespace_is_success() {
    let env = Env::start().await;
    env.applier
        .delete(&env.target, &manifests::namespace_ref("tenant-gone"))
        .await
        .unwrap();
    env.applier
        .delete(&env.target, &manifests::workload_ref("tenant-gone"))
        .await
        .unwrap();
    env.apply_all(&[manifests::namespace(NS, TENANT)]).await;
    for r in manifests::guardrail_refs(NS) {
        env.applier.delete(&env.target, &r).await.unwrap();
    }
    assert_eq!(env.tenant_objects().await.len(), 1, "the namespace stays");
}

#[tokio::test]
async fn throttling_is_transient_and_carries_the_servers_retry_after() {
    let env = Env::start().await;
    env.sim_post(
        "/_sim/script",
        json!([{"op": "namespaces.apply", "code": 429, "retry_after_secs": 7}]),
    )
    .await;
    let err = env
        .applier
        .apply(&env.target, &manifests::namespace(NS, TENANT))
        .await
        .expect_err("throttled");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(err.code.as_deref(), Some("TooManyRequests"));
    assert_eq!(err.resource, format!("Namespace/{NS}"));
    // The script is spent: the next try goes through.
    env.applier
        .apply(&env.target, &manifests::namespace(NS, TENANT))
        .await
        .unwrap();
}

#[tokio::test]
async fn server_errors_and_conflicts_are_transient() {
    let env = Env::start().await;
    env.sim_post(
        "/_sim/script",
        json!([
            {"op": "namespaces.apply", "code": 500},
            {"op": "namespaces.apply", "code": 503},
            {"op": "namespaces.apply", "code": 409},
        ]),
    )
    .await;
    for expected in ["InternalError", "ServiceUnavailable", "Conflict"] {
        let err = env
            .applier
            .apply(&env.target, &manifests::namespace(NS, TENANT))
            .await
            .expect_err("scripted failure");
        assert_eq!(err.class(), ErrorClass::Transient, "{err}");
        assert_eq!(err.code.as_deref(), Some(expected));
        assert_eq!(err.retry_after(), None);
    }
}

#[tokio::test]
async fn an_object_whose_namespace_is_not_there_yet_is_transient() {
    let env = Env::start().await;
    let sa = manifests::service_account(NS, SA, TENANT, "client-id-1", None);
    let err = env
        .applier
        .apply(&env.target, &sa)
        .await
        .expect_err("no namespace");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert_eq!(err.code.as_deref(), Some("NotFound"));
    eprintln!("MSG {err}");
    assert!(err.message.contains(NS), "{err}");
}

#[tokio::test]
async fn an_object_the_server_finds_invalid_is_permanent() {
    let env = Env::start().await;
    let mut ns = manifests::namespace(NS, TENANT);
    ns.manifest["metadata"]["labels"]["tenant"] = json!("not a label value!");
    let err = env
        .applier
        .apply(&env.target, &ns)
        .await
        .expect_err("invalid");
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert_eq!(err.code.as_deref(), Some("Invalid"));
    eprintln!("MSG {err}");
    assert!(err.message.contains("metadata.labels.tenant"), "{err}");
}

#[tokio::test]
async fn a_forbidden_request_is_permanent_and_says_what_to_grant() {
    let env = Env::start().await;
    env.sim_post(
        "/_sim/script",
        json!([{"op": "rolebindings.apply", "code": 403,
                "message": "rolebindings.rbac.authorization.k8s.io \"tenant-admin\" is forbidden"}]),
    )
    .await;
    env.apply_all(&[manifests::namespace(NS, TENANT)]).await;
    let role = manifests::guardrails(NS, TENANT, &guardrail_spec(Some("group")))
        .into_iter()
        .find(|o| o.kind == "RoleBinding")
        .unwrap();
    let err = env
        .applier
        .apply(&env.target, &role)
        .await
        .expect_err("forbidden");
    assert_eq!(err.class(), ErrorClass::Permanent);
    eprintln!("MSG {err}");
    assert!(err.message.contains("grant the worker"), "{err}");
}

#[tokio::test]
async fn the_shared_fault_plan_yields_permanent_and_transient_failures() {
    let env = Env::start().await;
    env.sim_post(
        "/_sim/faults",
        json!({"fail_ops": ["serviceaccounts.apply"]}),
    )
    .await;
    env.apply_all(&[manifests::namespace(NS, TENANT)]).await;
    let sa = manifests::service_account(NS, SA, TENANT, "client-id-1", None);
    let err = env
        .applier
        .apply(&env.target, &sa)
        .await
        .expect_err("fails");
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");

    // Every injected transient fault (429, 500, 503, or a stall answered with 504) is transient.
    env.sim_post(
        "/_sim/faults",
        json!({"transient_rate": 1.0, "transient_ops": ["namespaces.get"],
               "retry_after_secs": 1, "stall_ms": 1, "seed": 3}),
    )
    .await;
    for _ in 0..8 {
        let err = env
            .applier
            .get(&env.target, &manifests::namespace_ref(NS))
            .await
            .expect_err("faulted");
        assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    }
    let inventory = env.sim_get("/_sim/inventory").await;
    assert_eq!(inventory["faults"]["kube.namespaces.get"], 8);
    assert_eq!(inventory["faults"]["kube.serviceaccounts.apply"], 1);
}

#[tokio::test]
async fn a_call_without_an_answer_in_time_is_transient() {
    let env = Env::start_with(KubeClientOptions {
        request_timeout: Duration::from_millis(200),
    })
    .await;
    env.sim_post(
        "/_sim/script",
        json!([{"op": "namespaces.get", "code": 500, "delay_ms": 5000}]),
    )
    .await;
    let err = env
        .applier
        .get(&env.target, &manifests::namespace_ref(NS))
        .await
        .expect_err("timed out");
    assert_eq!(err.class(), ErrorClass::Transient);
    eprintln!("MSG {err}");
    assert_eq!(err.code.as_deref(), Some("Timeout"));
}

#[tokio::test]
async fn an_unreachable_api_server_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let target = target_at(&format!("http://{addr}"));
    let applier = KubeApplier::from_targets(&targets(&target)).await.unwrap();
    let err = applier
        .apply(&target, &manifests::namespace(NS, TENANT))
        .await
        .expect_err("nothing listens");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    eprintln!("MSG {err}");
    assert_eq!(err.code.as_deref(), Some("ConnectionError"));
    assert!(err.message.contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn a_target_the_applier_has_no_client_for_is_permanent() {
    let env = Env::start().await;
    let mut other = env.target.clone();
    other.name = "elsewhere".into();
    let err = env
        .applier
        .apply(&other, &manifests::namespace(NS, TENANT))
        .await
        .expect_err("unknown target");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.message.contains("elsewhere"), "{err}");
}

#[tokio::test]
async fn a_kubeconfig_context_reaches_the_cluster_it_names() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let kubeconfig = format!(
        r#"apiVersion: v1
kind: Config
current-context: wrong
clusters:
- name: sim
  cluster:
    server: {}
- name: nowhere
  cluster:
    server: http://127.0.0.1:1
contexts:
- name: sim
  context: {{cluster: sim, user: nobody}}
- name: wrong
  context: {{cluster: nowhere, user: nobody}}
users:
- name: nobody
  user: {{}}
"#,
        env.sim.kube_url()
    );
    std::fs::write(&path, kubeconfig).unwrap();
    let mut target = env.target.clone();
    target.kubernetes = KubernetesConfig {
        kubeconfig: Some(path),
        context: Some("sim".into()),
        ..KubernetesConfig::default()
    };
    let applier = KubeApplier::from_targets(&targets(&target)).await.unwrap();
    applier
        .apply(&target, &manifests::namespace(NS, TENANT))
        .await
        .unwrap();
    assert!(env.sim.kube.object("v1", "Namespace", None, NS).is_some());
}

#[tokio::test]
async fn a_target_without_any_api_server_setting_is_refused_at_start() {
    let mut target = Target::local("bare");
    target.kubernetes = KubernetesConfig::default();
    let err = KubeApplier::from_targets(&targets(&target))
        .await
        .expect_err("no server");
    assert!(matches!(err, KubeSetupError::NoServer { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("targets.bare.kubernetes"), "{err}");
}

#[tokio::test]
async fn objects_are_addressed_exactly_as_their_references_say() {
    let env = Env::start().await;
    env.apply_all(&onboarding_objects()).await;
    let refs: Vec<ObjectRef> = onboarding_objects()
        .iter()
        .map(KubeObject::reference)
        .collect();
    for r in &refs {
        let got = env.applier.get(&env.target, r).await.unwrap();
        let got = got.unwrap_or_else(|| panic!("{r} exists"));
        assert_eq!(got["metadata"]["name"], json!(r.name));
    }
    let gets = env.requests("GET").await;
    let paths: Vec<&str> = gets.iter().filter_map(|g| g["path"].as_str()).collect();
    for o in onboarding_objects() {
        assert!(
            paths.contains(&expected_path(&o).as_str()),
            "{}",
            expected_path(&o)
        );
    }
}

/// The `KubeProvisioner` conformance suite against the simulator (the local run's fallback), held
/// to the same properties as the real API server (`kube_real.rs`).
mod conformance {
    use super::*;

    async fn simulated() -> Option<onboarding_testkit::kube_conformance::KubeEnv> {
        let Env {
            sim,
            applier,
            target,
            ..
        } = Env::start().await;
        Some(onboarding_testkit::kube_conformance::KubeEnv {
            kube: std::sync::Arc::new(applier),
            target,
            namespace_deletion: Duration::from_secs(5),
            guard: Box::new(sim),
        })
    }

    onboarding_testkit::kube_conformance_tests!(simulated);
}
