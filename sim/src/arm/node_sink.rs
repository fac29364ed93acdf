//! Agent pools become nodes: with a Kubernetes API server configured ([`KubeNodeSink`]), the ARM
//! simulator registers the Node objects of every agent pool that has finished creating or
//! scaling (POST `/api/v1/nodes`, then PATCH `/api/v1/nodes/{name}/status`, since the POST
//! ignores status) and deletes them when the pool or the surplus instances are gone.
//!
//! A background task reconciles every 200 ms: nodes of `Succeeded` pools that are missing are
//! registered, nodes of pools or instances that no longer exist are deleted, pools still
//! creating, updating or deleting are left as they are. A failure is logged, counted and shown
//! in the inventory (`kubeNodes`), and retried with a growing delay (1 s to 30 s); it never
//! stops the simulator. Nodes of earlier runs are not adopted: the sink deletes only what it
//! registered.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::nodes::{NodeObject, pool_node};
use super::{ArmSim, lock};

/// Where the ARM simulator registers the nodes of its agent pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeNodeSink {
    /// The API server, e.g. `https://127.0.0.1:6443` (`http://` for a plain test server).
    pub server: String,
    /// PEM file of the CA that signed the server's certificate (`None`: the system's roots).
    pub ca_pem: Option<PathBuf>,
    pub auth: KubeAuth,
}

/// How the sink authenticates to the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeAuth {
    /// A bearer token read from this file (again each round, so a rotated token is picked up).
    TokenFile(PathBuf),
    /// A bearer token.
    Token(String),
    /// A client certificate and its key, PEM files.
    ClientCert { cert_pem: PathBuf, key_pem: PathBuf },
    /// Nothing (a test server that asks for nothing).
    None,
}

/// What the sink did, in the inventory as `kubeNodes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSinkReport {
    pub server: String,
    /// Nodes registered (created with their status) and not deleted since.
    pub nodes: Vec<String>,
    /// Nodes due but not registered yet (waiting for a retry after a failure).
    pub pending: Vec<String>,
    /// Failed API calls since start.
    pub failures: u64,
    pub last_error: Option<String>,
    /// The last few failures, oldest first.
    pub recent_errors: Vec<String>,
}

const TICK: Duration = Duration::from_millis(200);
const RECENT_ERRORS: usize = 20;

/// The sink's client and bookkeeping, held by the [`ArmSim`].
#[derive(Debug)]
pub(super) struct NodeSink {
    config: KubeNodeSink,
    client: Result<reqwest::Client, String>,
    state: Mutex<SinkState>,
}

#[derive(Debug, Default)]
struct SinkState {
    /// Node name → lower-cased pool key.
    registered: BTreeMap<String, String>,
    /// Node name → (when to try again, current delay).
    backoff: BTreeMap<String, (Instant, Duration)>,
    pending: BTreeSet<String>,
    failures: u64,
    last_error: Option<String>,
    recent_errors: Vec<String>,
}

enum Step {
    Register(String, NodeObject),
    Delete(String),
}

impl NodeSink {
    pub(super) fn new(config: KubeNodeSink) -> Self {
        let client = build_client(&config);
        if let Err(e) = &client {
            tracing::error!(server = %config.server, error = %e, "agent pools will not become nodes");
        }
        let sink = Self {
            config,
            client,
            state: Mutex::new(SinkState::default()),
        };
        if let Err(e) = sink.client.clone() {
            sink.fail(None, e);
        }
        sink
    }

    pub(super) fn report(&self) -> NodeSinkReport {
        let st = lock(&self.state);
        NodeSinkReport {
            server: self.config.server.clone(),
            nodes: st.registered.keys().cloned().collect(),
            pending: st.pending.iter().cloned().collect(),
            failures: st.failures,
            last_error: st.last_error.clone(),
            recent_errors: st.recent_errors.clone(),
        }
    }

    /// Records a failure (for `node`, which is then retried later) and logs it.
    fn fail(&self, node: Option<&str>, error: String) {
        tracing::warn!(server = %self.config.server, node = node.unwrap_or(""), error = %error, "node registration failed");
        let mut st = lock(&self.state);
        st.failures += 1;
        st.last_error = Some(error.clone());
        st.recent_errors.push(error);
        if st.recent_errors.len() > RECENT_ERRORS {
            st.recent_errors.remove(0);
        }
        if let Some(node) = node {
            let delay = st
                .backoff
                .get(node)
                .map_or(Duration::from_secs(1), |(_, d)| {
                    (*d * 2).min(Duration::from_secs(30))
                });
            st.backoff
                .insert(node.to_string(), (Instant::now() + delay, delay));
        }
    }

    fn due(&self, node: &str, now: Instant) -> bool {
        lock(&self.state)
            .backoff
            .get(node)
            .is_none_or(|(at, _)| *at <= now)
    }

    /// What to do this round: register the missing nodes of finished pools, delete the nodes
    /// of what no longer exists.
    fn plan(&self, sim: &ArmSim) -> Vec<Step> {
        let now = Instant::now();
        let (desired, frozen) = {
            let mut st = lock(&sim.state);
            st.settle(now);
            let mut desired = BTreeMap::new();
            let mut frozen = BTreeSet::new();
            for (key, pool) in &st.pools {
                if pool.body["properties"]["provisioningState"] != "Succeeded" {
                    frozen.insert(key.clone());
                    continue;
                }
                let count = super::nodes::node_count(&pool.body["properties"]);
                for i in 0..count {
                    desired.insert((key.clone(), i), pool.body.clone());
                }
            }
            (desired, frozen)
        };
        let registered = lock(&self.state).registered.clone();
        let mut steps = Vec::new();
        let mut wanted = BTreeSet::new();
        let mut pending = BTreeSet::new();
        for ((key, i), body) in &desired {
            let node = pool_node(body, &sim.behaviour, *i);
            wanted.insert(node.name.clone());
            if !registered.contains_key(&node.name) {
                pending.insert(node.name.clone());
                if self.due(&node.name, now) {
                    steps.push(Step::Register(key.clone(), node));
                }
            }
        }
        for (name, key) in &registered {
            if !wanted.contains(name) && !frozen.contains(key) && self.due(name, now) {
                steps.push(Step::Delete(name.clone()));
            }
        }
        lock(&self.state).pending = pending;
        steps
    }

    async fn run_once(&self, sim: &ArmSim) {
        let steps = self.plan(sim);
        if steps.is_empty() {
            return;
        }
        let Ok(client) = &self.client else { return };
        let auth = match self.auth_header() {
            Ok(a) => a,
            Err(e) => {
                self.fail(None, e);
                return;
            }
        };
        for step in steps {
            match step {
                Step::Register(pool_key, node) => {
                    match self.register(client, auth.as_ref(), &node).await {
                        Ok(()) => {
                            tracing::info!(node = %node.name, "registered the node of an agent pool");
                            let mut st = lock(&self.state);
                            st.backoff.remove(&node.name);
                            st.pending.remove(&node.name);
                            st.registered.insert(node.name, pool_key);
                        }
                        Err(e) => self.fail(Some(&node.name), e),
                    }
                }
                Step::Delete(name) => match self.delete(client, auth.as_ref(), &name).await {
                    Ok(()) => {
                        tracing::info!(node = %name, "deleted the node of an agent pool");
                        let mut st = lock(&self.state);
                        st.backoff.remove(&name);
                        st.registered.remove(&name);
                    }
                    Err(e) => self.fail(Some(&name), e),
                },
            }
        }
    }

    fn auth_header(&self) -> Result<Option<HeaderValue>, String> {
        let token = match &self.config.auth {
            KubeAuth::Token(t) => t.clone(),
            KubeAuth::TokenFile(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?
                .trim()
                .to_string(),
            KubeAuth::ClientCert { .. } | KubeAuth::None => return Ok(None),
        };
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the bearer token is not a valid header value".to_string())?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.server.trim_end_matches('/'))
    }

    /// POST the node (an existing one of that name is taken as it is), then its status.
    async fn register(
        &self,
        client: &reqwest::Client,
        auth: Option<&HeaderValue>,
        node: &NodeObject,
    ) -> Result<(), String> {
        let created = send(
            client.post(self.url("/api/v1/nodes")).json(&node.node),
            auth,
        )
        .await?;
        if !(created.0.is_success() || created.0 == reqwest::StatusCode::CONFLICT) {
            return Err(failure("POST /api/v1/nodes", &node.name, created));
        }
        let path = format!("/api/v1/nodes/{}/status", node.name);
        let patched = send(
            client
                .patch(self.url(&path))
                .header(CONTENT_TYPE, "application/merge-patch+json")
                .body(node.status.to_string()),
            auth,
        )
        .await?;
        if !patched.0.is_success() {
            return Err(failure(&format!("PATCH {path}"), &node.name, patched));
        }
        Ok(())
    }

    async fn delete(
        &self,
        client: &reqwest::Client,
        auth: Option<&HeaderValue>,
        name: &str,
    ) -> Result<(), String> {
        let path = format!("/api/v1/nodes/{name}");
        let deleted = send(client.delete(self.url(&path)), auth).await?;
        if deleted.0.is_success() || deleted.0 == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(failure(&format!("DELETE {path}"), name, deleted))
        }
    }
}

async fn send(
    req: reqwest::RequestBuilder,
    auth: Option<&HeaderValue>,
) -> Result<(reqwest::StatusCode, String), String> {
    let req = match auth {
        Some(a) => req.header(AUTHORIZATION, a.clone()),
        None => req,
    };
    let resp = req
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("the Kubernetes API server did not answer: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    Ok((status, text))
}

/// `POST /api/v1/nodes (aks-...): 403 nodes is forbidden: ...`, with the API server's message.
fn failure(what: &str, node: &str, (status, body): (reqwest::StatusCode, String)) -> String {
    let message = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(300).collect());
    format!("{what} ({node}): {} {message}", status.as_u16())
}

fn build_client(config: &KubeNodeSink) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
    if let Some(ca) = &config.ca_pem {
        let pem = std::fs::read(ca)
            .map_err(|e| format!("cannot read the CA file {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("the CA file {} is not PEM: {e}", ca.display()))?;
        builder = builder.tls_certs_only(certs);
    }
    if let KubeAuth::ClientCert { cert_pem, key_pem } = &config.auth {
        let mut pem = std::fs::read(cert_pem).map_err(|e| {
            format!(
                "cannot read the client certificate {}: {e}",
                cert_pem.display()
            )
        })?;
        pem.push(b'\n');
        pem.extend(
            std::fs::read(key_pem)
                .map_err(|e| format!("cannot read the client key {}: {e}", key_pem.display()))?,
        );
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            format!(
                "{} and {} are not a PEM certificate and key: {e}",
                cert_pem.display(),
                key_pem.display()
            )
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the Kubernetes client: {e}"))
}

/// The sink's loop: reconcile every [`TICK`] until the task is aborted.
pub(crate) async fn run(sim: Arc<ArmSim>) {
    let Some(sink) = &sim.node_sink else { return };
    tracing::info!(server = %sink.config.server, "agent pools become nodes");
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sink.run_once(&sim).await;
    }
}
