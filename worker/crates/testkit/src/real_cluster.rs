//! A real Kubernetes control plane (started by `scripts/kube.sh`) seen the way the worker sees it
//! in production: the worker's own manifests from `k8s/` (namespace, ServiceAccount, RBAC) are
//! applied with the admin credentials, the worker's ServiceAccount is issued a token
//! (TokenRequest), and the worker gets a kubeconfig with that token, so every request it makes
//! is authorized by exactly the RBAC we ship.
//!
//! Reads `ONBOARD_KUBE_SERVER`, `ONBOARD_KUBE_CA` and `KUBECONFIG` (what `scripts/kube.sh env`
//! prints); without them the tests that need a cluster say so and skip.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;
use onboarding_config::{KubernetesConfig, Target};

use crate::env::require;

/// The worker's namespace and ServiceAccount, as `k8s/base/` names them.
pub const WORKER_NAMESPACE: &str = "tenant-onboarding";
pub const WORKER_SERVICE_ACCOUNT: &str = "onboarding-worker";
/// The files of `k8s/base/` that make the worker's identity in the cluster.
const IDENTITY_MANIFESTS: [&str; 3] = ["namespace.yaml", "serviceaccount.yaml", "rbac.yaml"];

pub struct RealCluster {
    pub server: String,
    pub ca: PathBuf,
    /// Client with the admin's credentials (system:masters), for set-up and inspection only.
    pub admin: kube::Client,
    /// A kubeconfig that authenticates as the worker's ServiceAccount.
    pub worker_kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

impl RealCluster {
    /// Connect, install the worker's identity and issue it a token; `None` (with a message
    /// naming what is missing) when no control plane is configured.
    pub async fn connect(test: &str) -> Option<Self> {
        let env = require(
            &["ONBOARD_KUBE_SERVER", "ONBOARD_KUBE_CA", "KUBECONFIG"],
            &format!(
                "{test} (a real Kubernetes control plane: eval \"$(scripts/kube.sh env)\" after `scripts/kube.sh start`; scripts/test.sh does both)"
            ),
        )?;
        // More than one rustls provider is linked; the worker binary picks ring the same way.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = env["ONBOARD_KUBE_SERVER"].clone();
        let ca = PathBuf::from(&env["ONBOARD_KUBE_CA"]);
        let admin = kube::Client::try_default()
            .await
            .expect("the admin kubeconfig ($KUBECONFIG) gives a client");
        install_worker_identity(&admin).await;
        let token = worker_token(&admin).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let worker_kubeconfig = dir.path().join("worker.kubeconfig");
        write_token_kubeconfig(&worker_kubeconfig, &server, &ca, &token);
        Some(Self {
            server,
            ca,
            admin,
            worker_kubeconfig,
            _dir: dir,
        })
    }

    /// Install the worker's identity in the cluster the admin kubeconfig names and write a
    /// kubeconfig that authenticates as the worker's ServiceAccount to `out` (for the local run,
    /// which starts the worker binary with it).
    pub async fn write_worker_kubeconfig(
        server: &str,
        ca: &Path,
        out: &Path,
    ) -> Result<(), kube::Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let admin = kube::Client::try_default().await?;
        install_worker_identity(&admin).await;
        let token = worker_token(&admin).await;
        write_token_kubeconfig(out, server, ca, &token);
        Ok(())
    }

    /// A target whose Kubernetes side is this cluster, reached as the worker.
    pub fn target(&self) -> Target {
        let mut target = Target::local("default");
        target.kubernetes = KubernetesConfig {
            kubeconfig: Some(self.worker_kubeconfig.clone()),
            ..KubernetesConfig::default()
        };
        target
    }

    /// A client that authenticates as the worker (to ask what it may do).
    pub async fn worker_client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.worker_kubeconfig)
            .expect("worker kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("worker config");
        kube::Client::try_from(config).expect("worker client")
    }

    /// Poll `check` every 250 ms until it returns `Some`, or panic naming `what` after `limit`.
    pub async fn eventually<T, F, Fut>(&self, what: &str, limit: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let start = std::time::Instant::now();
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Server-side apply every document of the worker's identity manifests, as the admin would when
/// deploying the worker.
async fn install_worker_identity(admin: &kube::Client) {
    for file in IDENTITY_MANIFESTS {
        let path = repo_root().join("k8s/base").join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value =
                serde::Deserialize::deserialize(doc).expect("YAML document");
            if value.is_null() {
                continue;
            }
            apply_as_admin(admin, &value).await;
        }
    }
}

/// Bind the shipped read-only `tenant-onboarding:verifier` ClusterRole (from `k8s/base/rbac.yaml`,
/// installed with the worker's identity) to the worker's ServiceAccount, as an operator does to
/// run `producer verify` or turn `[drift]` on: the tests then prove the shipped role suffices.
pub async fn bind_verifier_to_worker(cluster: &RealCluster) {
    apply_as_admin(
        &cluster.admin,
        &serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "tenant-onboarding:verifier"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                "name": "tenant-onboarding:verifier"},
            "subjects": [{"kind": "ServiceAccount", "name": WORKER_SERVICE_ACCOUNT,
                "namespace": WORKER_NAMESPACE}]
        }),
    )
    .await;
}

/// Server-side apply of one object with the admin's credentials.
pub async fn apply_as_admin(admin: &kube::Client, value: &serde_json::Value) {
    let object: DynamicObject = serde_json::from_value(value.clone()).expect("a Kubernetes object");
    let types = object.types.clone().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(&types).expect("group/version/kind");
    let (resource, caps) = pinned_kind(admin, &gvk).await.expect("a served kind");
    let name = object.metadata.name.clone().expect("a name");
    let api: Api<DynamicObject> = match (&object.metadata.namespace, caps.scope) {
        (Some(ns), kube::discovery::Scope::Namespaced) => {
            Api::namespaced_with(admin.clone(), ns, &resource)
        }
        _ => Api::all_with(admin.clone(), &resource),
    };
    api.patch(
        &name,
        &PatchParams::apply("tenant-onboarding-tests").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {} {name}: {e}", gvk.kind));
}

/// `ApiResource` of a kind the tests read with the admin client.
pub fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// A bound token for the worker's ServiceAccount, as the kubelet would project it.
async fn worker_token(admin: &kube::Client) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), WORKER_NAMESPACE);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let issued = sas
        .create_token_request(WORKER_SERVICE_ACCOUNT, &PostParams::default(), &request)
        .await
        .expect("TokenRequest for the worker's ServiceAccount");
    issued.status.expect("a token").token
}

fn write_token_kubeconfig(path: &Path, server: &str, ca: &Path, token: &str) {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "real", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": "onboarding-worker", "user": {"token": token}}],
        "contexts": [{"name": "worker", "context": {"cluster": "real", "user": "onboarding-worker"}}],
        "current-context": "worker",
    });
    std::fs::write(path, serde_yaml::to_string(&config).expect("yaml")).expect("write kubeconfig");
}
