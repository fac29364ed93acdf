//! The `[health]` section: where `worker run` serves `/healthz`, `/readyz` and `/metrics`.
//!
//! May touch: nothing; pure data.

use serde::{Deserialize, Serialize};

/// The HTTP server of `worker run`: `/healthz`, `/readyz`, `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Listen address; `0.0.0.0` so that the kubelet and Prometheus reach the pod.
    pub address: String,
    /// 0 disables the server.
    pub port: u16,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            address: "0.0.0.0".into(),
            port: 8080,
        }
    }
}

impl HealthConfig {
    /// The socket to listen on; `None` when the server is disabled (or the address is invalid,
    /// which validation reports).
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        if self.port == 0 {
            return None;
        }
        let ip: std::net::IpAddr = self.address.parse().ok()?;
        Some(std::net::SocketAddr::new(ip, self.port))
    }
}
