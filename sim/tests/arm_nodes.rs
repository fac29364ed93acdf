//! Agent pools become nodes: with `SimOptions::kube_nodes`, the ARM simulator registers a Node
//! per agent-pool instance in a Kubernetes API server and deletes it with the pool.
//!
//! Most tests run against a recording stand-in for the API server (plain HTTP, in this process).
//! `agent_pools_become_nodes_in_a_real_api_server` needs a real one and says what is missing when
//! it skips: `ONBOARD_KUBE_SERVER` (https URL), `ONBOARD_KUBE_CA` (PEM), and an admin client
//! certificate, `ONBOARD_KUBE_ADMIN_CERT` + `ONBOARD_KUBE_ADMIN_KEY` (PEM files), or else the
//! admin kubeconfig in `KUBECONFIG` (`eval "$(scripts/kube.sh env)"` sets that, the server and
//! the CA).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (developers' guide)

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::{Value, json};
use sim::SimOptions;
use sim::arm::{KubeAuth, KubeNodeSink};

// ------------------------------------------------------------- a recording API server

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    content_type: String,
    authorization: String,
    body: Value,
}

#[derive(Debug, Default)]
struct Fake {
    seen: Mutex<Vec<Seen>>,
    /// Answer POSTs with this status when not 0.
    refuse_posts: AtomicU16,
}

async fn record(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    fake.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        content_type: header("content-type"),
        authorization: header("authorization"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let refuse = fake.refuse_posts.load(Ordering::Relaxed);
    if method == Method::POST && refuse != 0 {
        let status = StatusCode::from_u16(refuse).unwrap();
        return (
            status,
            axum::Json(json!({"kind": "Status", "status": "Failure", "message": "nodes is forbidden: User \"sim\" cannot create resource \"nodes\"", "code": refuse})),
        )
            .into_response();
    }
    let status = if method == Method::POST {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, axum::Json(json!({}))).into_response()
}

async fn fake_api_server() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(record)
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), fake)
}

fn token_file(token: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("sim-kube-token-{}", uuid::Uuid::new_v4()));
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

fn with_sink(server: &str, auth: KubeAuth) -> SimOptions {
    SimOptions {
        kube_nodes: Some(KubeNodeSink {
            server: server.to_string(),
            ca_pem: None,
            auth,
        }),
        ..SimOptions::default()
    }
}

/// Polls the inventory until `done` says yes (at most 30 s: the real API server shares a loaded
/// machine).
async fn until(arm: &Arm, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let inventory = arm.inventory().await;
        if done(&inventory) {
            return inventory;
        }
        assert!(Instant::now() < deadline, "{what}: {inventory:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn nodes(inventory: &Value) -> Vec<String> {
    inventory["kubeNodes"]["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn tenant_pool(count: u32) -> Value {
    json!({"properties": {
        "count": count, "vmSize": "Standard_D4s_v5", "mode": "User", "osType": "Linux",
        "nodeLabels": {"tenant": "acme"}, "nodeTaints": ["tenant=acme:NoSchedule"],
    }})
}

// ------------------------------------------------------------- against the stand-in

#[tokio::test]
async fn agent_pools_become_nodes_posted_first_then_given_their_status() {
    let (server, fake) = fake_api_server().await;
    let token = token_file("s3cret");
    let running = start(with_sink(&server, KubeAuth::TokenFile(token.clone()))).await;
    let arm = Arm::new(&running);
    assert_eq!(
        arm.put(&pool_path("tacme"), AKS, tenant_pool(2)).await.0,
        201
    );
    let inventory = until(&arm, "two nodes", |i| nodes(i).len() == 2).await;
    let names = nodes(&inventory);
    assert!(
        names.iter().all(|n| n.starts_with("aks-tacme-")),
        "{names:?}"
    );
    assert_eq!(inventory["kubeNodes"]["server"], server.as_str());
    assert_eq!(inventory["kubeNodes"]["failures"], 0);

    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:#?}");
    for name in &names {
        let post = seen
            .iter()
            .position(|s| s.method == "POST" && s.body["metadata"]["name"] == name.as_str())
            .unwrap();
        let patch = seen
            .iter()
            .position(|s| s.method == "PATCH" && s.path == format!("/api/v1/nodes/{name}/status"))
            .unwrap();
        assert!(post < patch, "the status goes after the node exists");
        let (post, patch) = (&seen[post], &seen[patch]);
        assert_eq!(post.path, "/api/v1/nodes");
        assert!(post.body.get("status").is_none(), "{:#}", post.body);
        assert_eq!(post.body["metadata"]["labels"]["tenant"], "acme");
        assert_eq!(
            post.body["metadata"]["labels"]["kubernetes.azure.com/agentpool"],
            "tacme"
        );
        assert_eq!(
            post.body["spec"]["taints"],
            json!([{"key": "tenant", "value": "acme", "effect": "NoSchedule"}])
        );
        assert_eq!(patch.content_type, "application/merge-patch+json");
        assert_eq!(patch.body["status"]["capacity"]["cpu"], "4");
        assert_eq!(post.authorization, "Bearer s3cret");
        assert_eq!(patch.authorization, "Bearer s3cret");
    }
    std::fs::remove_file(token).unwrap();
}

#[tokio::test]
async fn scaling_a_pool_adds_and_removes_nodes_and_deleting_it_removes_them_all() {
    let (server, fake) = fake_api_server().await;
    let running = start(with_sink(&server, KubeAuth::None)).await;
    let arm = Arm::new(&running);
    assert_eq!(
        arm.put(&pool_path("tacme"), AKS, tenant_pool(1)).await.0,
        201
    );
    until(&arm, "one node", |i| nodes(i).len() == 1).await;
    assert_eq!(
        arm.put(&pool_path("tacme"), AKS, tenant_pool(3)).await.0,
        200
    );
    let three = nodes(&until(&arm, "three nodes", |i| nodes(i).len() == 3).await);
    assert!(three[2].ends_with("-vmss000002"), "{three:?}");
    assert_eq!(
        arm.put(&pool_path("tacme"), AKS, tenant_pool(2)).await.0,
        200
    );
    until(&arm, "two nodes", |i| nodes(i).len() == 2).await;
    assert!(
        fake.seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.method == "DELETE" && s.path == format!("/api/v1/nodes/{}", three[2]))
    );
    assert_eq!(arm.delete(&pool_path("tacme"), AKS).await.0, 202);
    until(&arm, "no nodes", |i| nodes(i).is_empty()).await;
    let deletes = fake
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "DELETE")
        .count();
    assert_eq!(deletes, 3);
}

#[tokio::test]
async fn a_pool_still_creating_has_no_nodes_yet() {
    let (server, fake) = fake_api_server().await;
    let running = start(SimOptions {
        latency: sim::faults::LatencyProfile {
            scale: 1.0,
            operations: vec![("arm.agent_pools".into(), 600_000)],
        },
        ..with_sink(&server, KubeAuth::None)
    })
    .await;
    let arm = Arm::new(&running);
    assert_eq!(
        arm.put(&pool_path("tacme"), AKS, tenant_pool(2)).await.0,
        201
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(nodes(&arm.inventory().await).is_empty());
    assert!(fake.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_refused_registration_is_reported_in_the_inventory_and_retried() {
    let (server, fake) = fake_api_server().await;
    fake.refuse_posts.store(403, Ordering::Relaxed);
    let running = start(with_sink(&server, KubeAuth::None)).await;
    let arm = Arm::new(&running);
    assert_eq!(
        arm.put(&pool_path("tacme"), AKS, tenant_pool(1)).await.0,
        201
    );
    let inventory = until(&arm, "a failure", |i| {
        i["kubeNodes"]["failures"].as_u64() >= Some(1)
    })
    .await;
    let error = inventory["kubeNodes"]["lastError"].as_str().unwrap();
    assert!(
        error.contains("POST /api/v1/nodes") && error.contains("403"),
        "{error}"
    );
    assert!(error.contains("nodes is forbidden"), "{error}");
    assert_eq!(
        inventory["kubeNodes"]["pending"].as_array().unwrap().len(),
        1
    );
    assert!(nodes(&inventory).is_empty());
    // The simulator goes on answering.
    assert_eq!(arm.get(&pool_path("tacme"), AKS).await.0, 200);
    fake.refuse_posts.store(0, Ordering::Relaxed);
    let inventory = until(&arm, "registered after a retry", |i| nodes(i).len() == 1).await;
    assert_eq!(inventory["kubeNodes"]["pending"], json!([]));
}

#[tokio::test]
async fn an_unreachable_api_server_or_a_missing_ca_file_does_not_stop_the_simulator() {
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let running = start(with_sink(
        &format!("http://127.0.0.1:{port}"),
        KubeAuth::None,
    ))
    .await;
    let arm = Arm::new(&running);
    assert_eq!(
        arm.put(&pool_path("tacme"), AKS, tenant_pool(1)).await.0,
        201
    );
    let inventory = until(&arm, "a failure", |i| {
        i["kubeNodes"]["failures"].as_u64() >= Some(1)
    })
    .await;
    assert!(
        inventory["kubeNodes"]["lastError"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{inventory:#}"
    );

    let running = start(SimOptions {
        kube_nodes: Some(KubeNodeSink {
            server: "https://127.0.0.1:1".into(),
            ca_pem: Some("/nonexistent/ca.crt".into()),
            auth: KubeAuth::Token("t".into()),
        }),
        ..SimOptions::default()
    })
    .await;
    let arm = Arm::new(&running);
    assert_eq!(
        arm.put(&pool_path("tacme"), AKS, tenant_pool(1)).await.0,
        201
    );
    let inventory = until(&arm, "the node due", |i| {
        i["kubeNodes"]["pending"].as_array().map(Vec::len) == Some(1)
    })
    .await;
    assert!(
        inventory["kubeNodes"]["lastError"]
            .as_str()
            .unwrap()
            .contains("cannot read the CA file /nonexistent/ca.crt"),
        "{inventory:#}"
    );
}

#[tokio::test]
async fn without_a_kubernetes_server_the_inventory_has_no_node_report() {
    let running = start(SimOptions::default()).await;
    let arm = Arm::new(&running);
    assert!(arm.inventory().await.get("kubeNodes").is_none());
}

// ------------------------------------------------------------- against a real API server

/// Deletes the files it holds when dropped (the client key taken out of a kubeconfig).
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// The real API server's address, CA and an admin client certificate, or what is missing.
fn real_api_server() -> Result<(String, PathBuf, PathBuf, PathBuf, Scratch), String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(server), Some(ca)) = (var("ONBOARD_KUBE_SERVER"), var("ONBOARD_KUBE_CA")) else {
        return Err("ONBOARD_KUBE_SERVER and ONBOARD_KUBE_CA are not set".into());
    };
    if let (Some(cert), Some(key)) = (
        var("ONBOARD_KUBE_ADMIN_CERT"),
        var("ONBOARD_KUBE_ADMIN_KEY"),
    ) {
        return Ok((
            server,
            ca.into(),
            cert.into(),
            key.into(),
            Scratch(Vec::new()),
        ));
    }
    let Some(kubeconfig) = var("KUBECONFIG") else {
        return Err(
            "neither ONBOARD_KUBE_ADMIN_CERT + ONBOARD_KUBE_ADMIN_KEY nor KUBECONFIG is set".into(),
        );
    };
    let mut scratch = Scratch(Vec::new());
    let (cert, key) = client_cert_of(&kubeconfig, &mut scratch)?;
    Ok((server, ca.into(), cert, key, scratch))
}

/// The first user's client certificate and key of a kubeconfig, as PEM files (paths as given,
/// or the inline data written to temporary files).
fn client_cert_of(kubeconfig: &str, scratch: &mut Scratch) -> Result<(PathBuf, PathBuf), String> {
    let text = std::fs::read_to_string(kubeconfig).map_err(|e| format!("{kubeconfig}: {e}"))?;
    let doc: Value = serde_yaml::from_str(&text).map_err(|e| format!("{kubeconfig}: {e}"))?;
    let user = &doc["users"][0]["user"];
    let mut file = |path_key: &str, data_key: &str| -> Result<PathBuf, String> {
        if let Some(p) = user[path_key].as_str() {
            return Ok(p.into());
        }
        let data = user[data_key].as_str().ok_or_else(|| {
            format!("{kubeconfig} has no {path_key} or {data_key} for its first user")
        })?;
        let path =
            std::env::temp_dir().join(format!("sim-kube-{data_key}-{}", uuid::Uuid::new_v4()));
        scratch.0.push(path.clone());
        write_private(&path, &base64_decode(data)?)?;
        Ok(path)
    };
    Ok((
        file("client-certificate", "client-certificate-data")?,
        file("client-key", "client-key-data")?,
    ))
}

/// Writes a file only its owner may read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes).map_err(|e| e.to_string())
}

fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        acc = (acc << 6) | value(c).ok_or("not base64")?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

fn real_pool_body(run: &str, count: u32) -> Value {
    json!({"properties": {
        "count": count, "vmSize": "Standard_D4s_v5", "mode": "User", "osType": "Linux",
        "nodeLabels": {"tenant": "sim-test", "sim-run": run},
        "nodeTaints": [format!("sim-run={run}:NoSchedule")],
        "availabilityZones": ["1", "2"],
    }})
}

async fn get_node(kube: &reqwest::Client, server: &str, name: &str) -> (u16, Value) {
    let resp = kube
        .get(format!("{server}/api/v1/nodes/{name}"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

/// The nodes as the API server has them, then a scale-in.
async fn check_real_nodes(
    arm: Arm,
    kube: reqwest::Client,
    server: String,
    pool: String,
    run: String,
    names: Vec<String>,
) {
    for (i, name) in names.iter().enumerate() {
        let (status, node) = get_node(&kube, &server, name).await;
        assert_eq!(status, 200, "{node:#}");
        let labels = &node["metadata"]["labels"];
        assert_eq!(labels["sim-run"], run.as_str());
        assert_eq!(labels["kubernetes.azure.com/agentpool"], "tsim");
        assert_eq!(
            labels["node.kubernetes.io/instance-type"],
            "Standard_D4s_v5"
        );
        assert_eq!(
            labels["topology.kubernetes.io/zone"],
            format!("westeurope-{}", i + 1).as_str()
        );
        assert!(
            node["spec"]["taints"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["key"] == "sim-run" && t["effect"] == "NoSchedule"),
            "{node:#}"
        );
        assert_eq!(node["status"]["allocatable"]["cpu"], "3860m");
        assert_eq!(node["status"]["capacity"]["pods"], "110");
        assert!(
            node["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"),
            "{node:#}"
        );
    }
    // Scale in: the last instance goes.
    assert_eq!(arm.put(&pool, AKS, real_pool_body(&run, 1)).await.0, 200);
    until(&arm, "one node", |i| nodes(i).len() == 1).await;
    assert_eq!(get_node(&kube, &server, &names[1]).await.0, 404);
}

#[tokio::test]
async fn agent_pools_become_nodes_in_a_real_api_server() {
    let (server, ca, cert, key, _scratch) = match real_api_server() {
        Ok(s) => s,
        Err(missing) => {
            eprintln!(
                "skipped: a real Kubernetes API server is needed: {missing}. Set ONBOARD_KUBE_SERVER (https URL), ONBOARD_KUBE_CA (PEM) and ONBOARD_KUBE_ADMIN_CERT + ONBOARD_KUBE_ADMIN_KEY (PEM), or KUBECONFIG with an admin client certificate: eval \"$(scripts/kube.sh env)\" after scripts/kube.sh start"
            );
            return;
        }
    };
    // A cluster of our own, so the node names are ours; a taint of our own, so nothing else is
    // scheduled on nodes this test deletes.
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let pool = format!(
        "{SUB}/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/simtest{run}/agentPools/tsim"
    );
    let running = start(SimOptions {
        kube_nodes: Some(KubeNodeSink {
            server: server.clone(),
            ca_pem: Some(ca.clone()),
            auth: KubeAuth::ClientCert {
                cert_pem: cert.clone(),
                key_pem: key.clone(),
            },
        }),
        ..SimOptions::default()
    })
    .await;
    let arm = Arm::new(&running);
    let mut pem = std::fs::read(&cert).unwrap();
    pem.push(b'\n');
    pem.extend(std::fs::read(&key).unwrap());
    let kube = reqwest::Client::builder()
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(&std::fs::read(&ca).unwrap()).unwrap(),
        )
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap();

    assert_eq!(arm.put(&pool, AKS, real_pool_body(&run, 2)).await.0, 201);
    let names = nodes(&until(&arm, "two nodes", |i| nodes(i).len() == 2).await);
    let checked = tokio::spawn(check_real_nodes(
        Arm::new(&running),
        kube.clone(),
        server.clone(),
        pool.clone(),
        run.clone(),
        names.clone(),
    ))
    .await;
    // Clean up whatever happened, then report.
    assert_eq!(arm.delete(&pool, AKS).await.0, 202);
    until(&arm, "no nodes", |i| nodes(i).is_empty()).await;
    for name in &names {
        assert_eq!(
            get_node(&kube, &server, name).await.0,
            404,
            "{name} was not deleted"
        );
    }
    assert_eq!(arm.inventory().await["kubeNodes"]["failures"], 0);
    if let Err(e) = checked {
        std::panic::resume_unwind(e.into_panic());
    }
}
