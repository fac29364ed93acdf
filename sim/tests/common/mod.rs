//! What the ARM simulator's tests share: starting the simulators on loopback and an HTTP client
//! that speaks ARM (api-version, JSON bodies) to them.
#![allow(dead_code, clippy::unwrap_used)] // each test crate uses some of it; tests may unwrap

use std::net::SocketAddr;

use serde_json::{Value, json};
use sim::SimOptions;

pub const SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000001";

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub async fn start(options: SimOptions) -> sim::Running {
    sim::start(loopback(), loopback(), options).await.unwrap()
}

pub struct Arm {
    pub http: reqwest::Client,
    pub base: String,
}

impl Arm {
    pub fn new(running: &sim::Running) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: running.arm_url(),
        }
    }
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        api: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}{sep}api-version={api}", self.base)
        };
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }
    pub async fn put(
        &self,
        path: &str,
        api: &str,
        body: Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        self.call(reqwest::Method::PUT, path, api, Some(body)).await
    }
    pub async fn get(&self, path: &str, api: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        self.call(reqwest::Method::GET, path, api, None).await
    }
    pub async fn delete(&self, path: &str, api: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        self.call(reqwest::Method::DELETE, path, api, None).await
    }
    /// POSTs JSON to one of the simulator's own endpoints (`/_sim/...`).
    pub async fn post_sim(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
    pub async fn inventory(&self) -> Value {
        self.http
            .get(format!("{}/_sim/inventory", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// An agent pool of cluster `aks` in `rg-aks` of another subscription.
pub fn pool_path_in(sub: &str, cluster: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/{cluster}/agentPools/{name}"
    )
}
pub fn pool_path(name: &str) -> String {
    format!(
        "{SUB}/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/aks/agentPools/{name}"
    )
}
pub fn identity_path(name: &str) -> String {
    format!(
        "{SUB}/resourceGroups/rg-id/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
}
pub fn container_path(name: &str) -> String {
    format!(
        "{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/st/blobServices/default/containers/{name}"
    )
}
pub fn pool_body() -> Value {
    json!({"properties": {"count": 1, "vmSize": "Standard_D2s_v5", "mode": "User", "osType": "Linux", "tags": {"tenant": "a"}}})
}
pub const AKS: &str = "2026-08-01";
pub const MSI: &str = "2024-11-30";
pub const STORAGE: &str = "2025-08-01";
pub const AUTHZ: &str = "2022-04-01";
