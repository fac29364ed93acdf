//! Client set-up: the options of the clients, and turning a target's `kubernetes` settings
//! (a server URL, `in_cluster`, or a kubeconfig and context) into a `kube::Config`, with kube's
//! own retries off.
//!
//! May touch: the kubeconfig file a target names; with `in_cluster`, the pod's service-account
//! files and `KUBERNETES_SERVICE_*` (read by kube). No network.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use onboarding_core::{Classify, ErrorClass};
use onboarding_providers::Target;

/// How the clients behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeClientOptions {
    /// Longest wait for one API call; past it the call fails as transient.
    pub request_timeout: Duration,
}

impl Default for KubeClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A target's Kubernetes settings could not be turned into a client.
#[derive(Debug, thiserror::Error)]
pub enum KubeSetupError {
    #[error(
        "targets.{target}.kubernetes names no API server: set `server` (a URL), `in_cluster = true`, or `kubeconfig` (with an optional `context`)"
    )]
    NoServer { target: String },
    #[error("targets.{target}.kubernetes.server {server:?} is not a URL: {reason}")]
    BadServer {
        target: String,
        server: String,
        reason: String,
    },
    #[error(
        "targets.{target}.kubernetes: cannot use kubeconfig {path} (context {context}): {reason}"
    )]
    Kubeconfig {
        target: String,
        path: String,
        context: String,
        reason: String,
    },
    #[error(
        "targets.{target}.kubernetes.in_cluster: not running in a pod with a service account, or its files are unreadable: {reason}"
    )]
    InCluster { target: String, reason: String },
    #[error("targets.{target}.kubernetes: cannot build a Kubernetes client for {server}: {reason}")]
    Client {
        target: String,
        server: String,
        reason: String,
    },
}

impl Classify for KubeSetupError {
    fn class(&self) -> ErrorClass {
        // Configuration does not fix itself by waiting.
        ErrorClass::Permanent
    }
}

pub(crate) async fn client_config(
    name: &str,
    target: &Target,
) -> Result<(kube::Config, String), KubeSetupError> {
    let k = &target.kubernetes;
    let mut config = if let Some(server) = &k.server {
        let url = server.parse().map_err(|e| KubeSetupError::BadServer {
            target: name.into(),
            server: server.clone(),
            reason: format!("{e}"),
        })?;
        kube::Config::new(url)
    } else if k.in_cluster {
        kube::Config::incluster().map_err(|e| KubeSetupError::InCluster {
            target: name.into(),
            reason: e.to_string(),
        })?
    } else if let Some(path) = &k.kubeconfig {
        let kubeconfig_error = |reason: String| KubeSetupError::Kubeconfig {
            target: name.into(),
            path: path.display().to_string(),
            context: k.context.clone().unwrap_or_else(|| "current".into()),
            reason,
        };
        let kubeconfig =
            Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(e.to_string()))?;
        let options = KubeConfigOptions {
            context: k.context.clone(),
            ..KubeConfigOptions::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| kubeconfig_error(e.to_string()))?
    } else {
        return Err(KubeSetupError::NoServer {
            target: name.into(),
        });
    };
    // The saga engine retries with its own budget and must see throttling to honour it.
    config.default_retry = false;
    let server = config.cluster_url.to_string();
    Ok((config, server))
}

// ---------------------------------------------------------------- kinds
