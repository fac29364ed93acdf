//! The Kubernetes API simulator over HTTP: the answers a real API server would give (status
//! codes, `Status` bodies, server-side apply semantics, lists, discovery), fault injection and
//! the test endpoints.

// Tests may unwrap (developers' guide); helpers outside #[test] functions too.
#![allow(clippy::unwrap_used)]

use reqwest::StatusCode;
use serde_json::{Value, json};

const APPLY: &str = "application/apply-patch+yaml";

struct Sim {
    running: sim::Running,
    http: reqwest::Client,
}

impl Sim {
    async fn start() -> Self {
        Self::start_with(sim::SimOptions::default()).await
    }

    async fn start_with(options: sim::SimOptions) -> Self {
        let running = sim::start(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            options,
        )
        .await
        .unwrap();
        Self {
            running,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.kube_url())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let r = self.http.delete(self.url(path)).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap())
    }

    async fn post(&self, path: &str, body: Value) -> StatusCode {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// PATCH with a raw body and content type; `query` is appended as is.
    async fn patch_raw(
        &self,
        path: &str,
        query: &str,
        content_type: &str,
        body: String,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let r = self
            .http
            .patch(format!("{}?{query}", self.url(path)))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        (status, headers, r.json().await.unwrap())
    }

    async fn apply_as(
        &self,
        path: &str,
        manager: &str,
        force: bool,
        body: &Value,
    ) -> (StatusCode, Value) {
        let query = format!(
            "fieldManager={manager}{}",
            if force { "&force=true" } else { "" }
        );
        let (status, _, body) = self.patch_raw(path, &query, APPLY, body.to_string()).await;
        (status, body)
    }

    async fn apply(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.apply_as(path, "test", true, body).await
    }

    async fn namespace(&self, name: &str) {
        let (status, body) = self
            .apply(&format!("/api/v1/namespaces/{name}"), &ns(name, json!({})))
            .await;
        assert!(status.is_success(), "{body}");
    }
}

fn ns(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn sa(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "labels": labels}})
}

fn deployment(name: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        },
    })
}

#[tokio::test]
async fn discovery_describes_exactly_the_served_kinds() {
    let sim = Sim::start().await;
    let (status, version) = sim.get("/version").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version["major"], "1");
    assert_eq!(version["minor"], "34");

    let (_, api) = sim.get("/api").await;
    assert_eq!(api["kind"], "APIVersions");
    assert_eq!(api["versions"], json!(["v1"]));

    let (_, groups) = sim.get("/apis").await;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["apps", "networking.k8s.io", "rbac.authorization.k8s.io"]
    );

    let (_, core) = sim.get("/api/v1").await;
    assert_eq!(core["kind"], "APIResourceList");
    let namespaces = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "namespaces")
        .unwrap();
    assert_eq!(namespaces["namespaced"], false);
    assert_eq!(namespaces["kind"], "Namespace");

    let (_, apps) = sim.get("/apis/apps/v1").await;
    assert_eq!(apps["groupVersion"], "apps/v1");
    assert_eq!(apps["resources"][0]["name"], "deployments");
    assert_eq!(apps["resources"][0]["namespaced"], true);

    let (status, missing) = sim.get("/apis/batch/v1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["kind"], "Status");
    assert_eq!(missing["reason"], "NotFound");
}

#[tokio::test]
async fn apply_creates_then_updates_and_an_identical_apply_changes_nothing() {
    let sim = Sim::start().await;
    let path = "/api/v1/namespaces/tenant-a";
    let (created_status, created) = sim
        .apply(path, &ns("tenant-a", json!({"tenant": "a"})))
        .await;
    assert_eq!(created_status, StatusCode::CREATED);
    assert_eq!(created["metadata"]["labels"]["tenant"], "a");
    assert_eq!(
        created["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "tenant-a"
    );
    assert_eq!(created["status"]["phase"], "Active");
    assert_eq!(created["metadata"]["managedFields"][0]["manager"], "test");
    assert_eq!(
        created["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:tenant": {}}}})
    );

    let (same_status, same) = sim
        .apply(path, &ns("tenant-a", json!({"tenant": "a"})))
        .await;
    assert_eq!(same_status, StatusCode::OK);
    assert_eq!(same, created);

    let (_, changed) = sim
        .apply(path, &ns("tenant-a", json!({"tenant": "b"})))
        .await;
    assert_ne!(
        changed["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    assert_eq!(changed["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        changed["metadata"]["creationTimestamp"],
        created["metadata"]["creationTimestamp"]
    );
    assert_eq!(changed["metadata"]["labels"]["tenant"], "b");
}

#[tokio::test]
async fn a_deployment_generation_follows_its_spec() {
    let sim = Sim::start().await;
    sim.namespace("tenant-a").await;
    let path = "/apis/apps/v1/namespaces/tenant-a/deployments/web";
    let (_, first) = sim.apply(path, &deployment("web", 1)).await;
    assert_eq!(first["metadata"]["generation"], 1);
    assert_eq!(first["status"]["availableReplicas"], 1);
    let (_, second) = sim.apply(path, &deployment("web", 3)).await;
    assert_eq!(second["metadata"]["generation"], 2);
    assert_eq!(second["status"]["observedGeneration"], 2);
    assert_eq!(second["status"]["readyReplicas"], 3);
}

#[tokio::test]
async fn an_apply_body_in_yaml_is_accepted() {
    let sim = Sim::start().await;
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: tenant-y\n  labels:\n    tenant: \"y\"\n";
    let (status, _, body) = sim
        .patch_raw(
            "/api/v1/namespaces/tenant-y",
            "fieldManager=m",
            APPLY,
            yaml.into(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["metadata"]["labels"]["tenant"], "y");
}

#[tokio::test]
async fn apply_without_a_field_manager_is_a_bad_request() {
    let sim = Sim::start().await;
    let (status, _, body) = sim
        .patch_raw(
            "/api/v1/namespaces/tenant-a",
            "force=true",
            APPLY,
            ns("tenant-a", json!({})).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["status"], "Failure");
    assert_eq!(body["reason"], "BadRequest");
    assert_eq!(body["code"], 400);
    assert!(body["message"].as_str().unwrap().contains("fieldManager"));
}

#[tokio::test]
async fn a_patch_that_is_not_server_side_apply_is_an_unsupported_media_type() {
    let sim = Sim::start().await;
    let (status, _, body) = sim
        .patch_raw(
            "/api/v1/namespaces/tenant-a",
            "fieldManager=m",
            "application/merge-patch+json",
            ns("tenant-a", json!({})).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["reason"], "UnsupportedMediaType");
}

#[tokio::test]
async fn an_object_in_a_missing_namespace_is_not_found_in_the_api_servers_words() {
    let sim = Sim::start().await;
    let (status, body) = sim
        .apply(
            "/api/v1/namespaces/tenant-x/serviceaccounts/sa",
            &sa("sa", json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "namespaces \"tenant-x\" not found", "reason": "NotFound",
            "details": {"name": "tenant-x", "kind": "namespaces"}, "code": 404,
        })
    );
}

#[tokio::test]
async fn a_body_naming_another_object_than_the_url_is_a_bad_request() {
    let sim = Sim::start().await;
    let (status, body) = sim
        .apply("/api/v1/namespaces/tenant-a", &ns("tenant-b", json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not match the name on the URL")
    );
    let (status, _) = sim
        .apply("/api/v1/namespaces/tenant-a", &sa("tenant-a", json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "kind must match the URL");
}

#[tokio::test]
async fn an_invalid_name_or_label_is_unprocessable_with_causes() {
    let sim = Sim::start().await;
    let (status, body) = sim
        .apply("/api/v1/namespaces/Tenant_A", &ns("Tenant_A", json!({})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(body["details"]["kind"], "Namespace");
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.name");
    let (status, body) = sim
        .apply(
            "/api/v1/namespaces/tenant-a",
            &ns("tenant-a", json!({"tenant": "a b"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["details"]["causes"][0]["field"],
        "metadata.labels.tenant"
    );
}

#[tokio::test]
async fn a_field_held_by_another_manager_conflicts_unless_forced() {
    let sim = Sim::start().await;
    let path = "/api/v1/namespaces/tenant-a";
    let (status, _) = sim
        .apply_as(path, "one", false, &ns("tenant-a", json!({"x": "1"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = sim
        .apply_as(path, "two", false, &ns("tenant-a", json!({"x": "2"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["reason"], "Conflict");
    assert_eq!(
        body["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"one\"",
                "field": ".metadata.labels.x"}])
    );
    let (status, forced) = sim
        .apply_as(path, "two", true, &ns("tenant-a", json!({"x": "2"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(forced["metadata"]["labels"]["x"], "2");
    let managers: Vec<&str> = forced["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["one", "two"]);
    assert_eq!(
        forced["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:metadata": {"f:labels": {}}}),
        "the first manager lost the field"
    );
}

#[tokio::test]
async fn a_dry_run_apply_answers_but_stores_nothing() {
    let sim = Sim::start().await;
    let (status, _, body) = sim
        .patch_raw(
            "/api/v1/namespaces/tenant-d",
            "fieldManager=m&dryRun=All",
            APPLY,
            ns("tenant-d", json!({})).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["metadata"]["name"], "tenant-d");
    let (status, _) = sim.get("/api/v1/namespaces/tenant-d").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn lists_filter_by_namespace_and_label_selector() {
    let sim = Sim::start().await;
    for tenant in ["a", "b"] {
        let namespace = format!("tenant-{tenant}");
        sim.namespace(&namespace).await;
        let (status, _) = sim
            .apply(
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts/sa"),
                &sa("sa", json!({"tenant": tenant})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, all) = sim.get("/api/v1/serviceaccounts").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["kind"], "ServiceAccountList");
    assert_eq!(all["apiVersion"], "v1");
    assert!(all["metadata"]["resourceVersion"].is_string());
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    assert!(all["items"][0].get("kind").is_none(), "items carry no kind");

    let (_, in_a) = sim.get("/api/v1/namespaces/tenant-a/serviceaccounts").await;
    assert_eq!(in_a["items"].as_array().unwrap().len(), 1);
    assert_eq!(in_a["items"][0]["metadata"]["namespace"], "tenant-a");

    let (_, selected) = sim
        .get("/api/v1/serviceaccounts?labelSelector=tenant%3Db")
        .await;
    assert_eq!(selected["items"].as_array().unwrap().len(), 1);
    assert_eq!(selected["items"][0]["metadata"]["namespace"], "tenant-b");

    let (_, none) = sim
        .get("/api/v1/serviceaccounts?labelSelector=tenant%21%3Da%2Ctenant%21%3Db")
        .await;
    assert_eq!(none["items"], json!([]));

    let (_, empty_ns) = sim.get("/api/v1/namespaces/tenant-z/serviceaccounts").await;
    assert_eq!(empty_ns["items"], json!([]));
}

#[tokio::test]
async fn get_and_delete_of_a_missing_object_are_not_found_statuses() {
    let sim = Sim::start().await;
    let (status, body) = sim
        .get("/apis/apps/v1/namespaces/tenant-a/deployments/workload")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "deployments.apps \"workload\" not found");
    assert_eq!(
        body["details"],
        json!({"name": "workload", "group": "apps", "kind": "deployments"})
    );
    let (status, body) = sim.delete("/api/v1/namespaces/tenant-a").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "namespaces \"tenant-a\" not found");
}

#[tokio::test]
async fn deleting_an_object_answers_with_a_success_status() {
    let sim = Sim::start().await;
    sim.namespace("tenant-a").await;
    let path = "/apis/apps/v1/namespaces/tenant-a/deployments/web";
    let (_, created) = sim.apply(path, &deployment("web", 1)).await;
    let (status, body) = sim.delete(path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["status"], "Success");
    assert_eq!(body["details"]["uid"], created["metadata"]["uid"]);
    let (status, _) = sim.get(path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deleting_a_namespace_answers_with_it_terminating_and_removes_its_contents() {
    let sim = Sim::start().await;
    sim.namespace("tenant-a").await;
    sim.namespace("tenant-b").await;
    for namespace in ["tenant-a", "tenant-b"] {
        sim.apply(
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts/sa"),
            &sa("sa", json!({})),
        )
        .await;
    }
    let (status, body) = sim.delete("/api/v1/namespaces/tenant-a").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["kind"], "Namespace");
    assert_eq!(body["status"]["phase"], "Terminating");
    assert!(body["metadata"]["deletionTimestamp"].is_string());
    let (status, _) = sim
        .get("/api/v1/namespaces/tenant-a/serviceaccounts/sa")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = sim
        .get("/api/v1/namespaces/tenant-b/serviceaccounts/sa")
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "other namespaces keep their objects"
    );
}

#[tokio::test]
async fn unsupported_methods_and_paths_are_refused_with_statuses() {
    let sim = Sim::start().await;
    let status = sim
        .post("/api/v1/namespaces", ns("tenant-a", json!({})))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, body) = sim.get("/api/v1/secrets").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["message"],
        "the server could not find the requested resource"
    );
    let (status, _) = sim.get("/api/v1/serviceaccounts/sa").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "namespaced kinds need a namespace"
    );
}

#[tokio::test]
async fn scripted_throttling_sends_retry_after_in_the_header_and_the_details() {
    let sim = Sim::start().await;
    let status = sim
        .post(
            "/_sim/script",
            json!([{"op": "namespaces.apply", "code": 429, "retry_after_secs": 5}]),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, headers, body) = sim
        .patch_raw(
            "/api/v1/namespaces/tenant-a",
            "fieldManager=m",
            APPLY,
            ns("tenant-a", json!({})).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "5");
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(body["details"]["retryAfterSeconds"], 5);
    let (status, _) = sim.get("/api/v1/namespaces/tenant-a").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a throttled apply does nothing"
    );
}

#[tokio::test]
async fn the_fault_plan_fails_matching_operations_and_counts_them() {
    let sim = Sim::start().await;
    sim.namespace("tenant-a").await;
    let status = sim
        .post("/_sim/faults", json!({"fail_ops": ["namespaces.get"]}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = sim.get("/api/v1/namespaces/tenant-a").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("kube.namespaces.get")
    );
    let (status, _) = sim.get("/api/v1/namespaces").await;
    assert_eq!(status, StatusCode::OK, "list is another operation");

    let (_, inventory) = sim.get("/_sim/inventory").await;
    assert_eq!(inventory["counters"]["kube.namespaces.apply"], 1);
    assert_eq!(inventory["counters"]["kube.namespaces.get"], 1);
    assert_eq!(inventory["counters"]["kube.namespaces.list"], 1);
    assert_eq!(inventory["faults"], json!({"kube.namespaces.get": 1}));
}

#[tokio::test]
async fn transient_faults_are_429_500_503_or_a_stall_whose_call_still_took_effect() {
    let sim = Sim::start().await;
    let status = sim
        .post(
            "/_sim/faults",
            json!({"transient_rate": 1.0, "transient_ops": ["namespaces.apply"],
                   "retry_after_secs": 2, "stall_ms": 1, "seed": 11}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let name = format!("tenant-{i}");
        let (status, body) = sim
            .apply(&format!("/api/v1/namespaces/{name}"), &ns(&name, json!({})))
            .await;
        seen.insert(status.as_u16());
        assert_eq!(body["kind"], "Status");
        let (exists, _) = sim.get(&format!("/api/v1/namespaces/{name}")).await;
        match status.as_u16() {
            429 => assert_eq!(body["details"]["retryAfterSeconds"], 2),
            500 | 503 => {}
            504 => assert_eq!(body["reason"], "Timeout"),
            other => panic!("unexpected {other}: {body}"),
        }
        let took_effect = status.as_u16() == 504;
        assert_eq!(exists == StatusCode::OK, took_effect, "{name}: {status}");
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [429, 500, 503, 504]);
}

#[tokio::test]
async fn every_api_request_is_recorded_as_received() {
    let sim = Sim::start().await;
    let body = ns("tenant-a", json!({"tenant": "a"}));
    sim.apply("/api/v1/namespaces/tenant-a", &body).await;
    sim.get("/api/v1/namespaces/tenant-a").await;
    sim.get("/_sim/inventory").await;
    let (_, requests) = sim.get("/_sim/requests").await;
    assert_eq!(
        requests,
        json!([
            {"method": "PATCH", "path": "/api/v1/namespaces/tenant-a",
             "query": "fieldManager=test&force=true", "content_type": APPLY, "body": body},
            {"method": "GET", "path": "/api/v1/namespaces/tenant-a", "query": null,
             "content_type": null, "body": null},
        ])
    );
}

#[tokio::test]
async fn reset_forgets_everything_and_restores_the_start_up_fault_plan() {
    let sim = Sim::start_with(sim::SimOptions {
        faults: sim::faults::FaultPlan {
            fail_ops: vec!["deployments".into()],
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    sim.namespace("tenant-a").await;
    sim.post("/_sim/faults", json!({})).await;
    sim.post(
        "/_sim/script",
        json!([{"op": "kube.", "code": 500, "times": 5}]),
    )
    .await;
    assert_eq!(
        sim.post("/_sim/reset", json!({})).await,
        StatusCode::NO_CONTENT
    );

    let (_, inventory) = sim.get("/_sim/inventory").await;
    assert_eq!(inventory["objects"], json!({}));
    assert_eq!(inventory["counters"], json!({}));
    let (_, requests) = sim.get("/_sim/requests").await;
    assert_eq!(requests, json!([]));
    let (_, plan) = sim.get("/_sim/faults").await;
    assert_eq!(plan["fail_ops"], json!(["deployments"]));
    // The script is gone too: this apply succeeds.
    sim.namespace("tenant-b").await;
}

#[tokio::test]
async fn the_inventory_lists_objects_by_kind_namespace_and_name() {
    let sim = Sim::start().await;
    sim.namespace("tenant-a").await;
    sim.apply(
        "/api/v1/namespaces/tenant-a/serviceaccounts/sa",
        &sa("sa", json!({"tenant": "a"})),
    )
    .await;
    let (_, inventory) = sim.get("/_sim/inventory").await;
    assert_eq!(
        inventory["objects"]["Namespace"][""]["tenant-a"]["metadata"]["name"],
        "tenant-a"
    );
    assert_eq!(
        inventory["objects"]["ServiceAccount"]["tenant-a"]["sa"]["metadata"]["labels"]["tenant"],
        "a"
    );
    assert_eq!(inventory["resourceVersion"], "2");
    assert_eq!(
        sim.running
            .kube
            .object("v1", "ServiceAccount", Some("tenant-a"), "sa"),
        Some(inventory["objects"]["ServiceAccount"]["tenant-a"]["sa"].clone())
    );
}
