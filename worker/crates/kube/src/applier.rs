//! [`KubeApplier`]: the production [`KubeProvisioner`], server-side apply through `kube`.
//!
//! One `kube::Client` per configured target, built once at start-up. It may touch only the API
//! servers named by the targets; it never reads the environment itself (only `in_cluster` makes
//! kube read the pod's service-account files and `KUBERNETES_SERVICE_*`, which is what that
//! setting means). Retries belong to the saga engine: kube's own retry layer is switched off and
//! every failure comes back classified, with the server's `retryAfterSeconds` when it gave one.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Status;

use onboarding_core::{Classify, ErrorClass};
use onboarding_providers::Target;
use onboarding_providers::manifests::FIELD_MANAGER;
use onboarding_providers::{KubeObject, KubeProvisioner, ObjectRef, ProviderError};

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

struct TargetClient {
    client: kube::Client,
    /// The API server URL, for messages.
    server: String,
}

/// Applies, reads and deletes objects on the clusters of the configured targets.
pub struct KubeApplier {
    clients: BTreeMap<String, TargetClient>,
    options: KubeClientOptions,
}

impl std::fmt::Debug for KubeApplier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApplier")
            .field(
                "targets",
                &self
                    .clients
                    .iter()
                    .map(|(name, c)| (name.as_str(), c.server.as_str()))
                    .collect::<Vec<_>>(),
            )
            .field("options", &self.options)
            .finish()
    }
}

impl KubeApplier {
    /// One client per target, with default options. Must run inside a Tokio runtime.
    pub async fn from_targets(targets: &BTreeMap<String, Target>) -> Result<Self, KubeSetupError> {
        Self::from_targets_with(targets, KubeClientOptions::default()).await
    }

    pub async fn from_targets_with(
        targets: &BTreeMap<String, Target>,
        options: KubeClientOptions,
    ) -> Result<Self, KubeSetupError> {
        // kube builds a rustls config even for plain-http servers, and more than one rustls
        // provider is compiled into this binary, so one must be chosen. Installing when one is
        // already installed fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut clients = BTreeMap::new();
        for (name, target) in targets {
            let (config, server) = client_config(name, target).await?;
            let client = kube::Client::try_from(config).map_err(|e| KubeSetupError::Client {
                target: name.clone(),
                server: server.clone(),
                reason: e.to_string(),
            })?;
            clients.insert(name.clone(), TargetClient { client, server });
        }
        Ok(Self { clients, options })
    }

    /// The target names this applier has clients for.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.clients.keys().map(String::as_str)
    }

    fn api(
        &self,
        target: &Target,
        object: &ObjectRef,
        operation: &str,
    ) -> Result<(Api<DynamicObject>, &TargetClient), ProviderError> {
        let client = self.clients.get(&target.name).ok_or_else(|| {
            ProviderError::permanent(
                operation,
                object.to_string(),
                format!(
                    "no Kubernetes client for target {:?}: the worker was started without it; add it to the configuration and restart",
                    target.name
                ),
            )
        })?;
        let (resource, namespaced) =
            api_resource(&object.api_version, &object.kind).ok_or_else(|| {
                ProviderError::permanent(
                    operation,
                    object.to_string(),
                    format!(
                        "{} {} is not a kind the worker manages (known: {})",
                        object.api_version,
                        object.kind,
                        KINDS.join(", ")
                    ),
                )
            })?;
        let api = match (&object.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(client.client.clone(), ns, &resource),
            (None, false) => Api::all_with(client.client.clone(), &resource),
            (None, true) => {
                return Err(ProviderError::permanent(
                    operation,
                    object.to_string(),
                    format!("{} is namespaced but no namespace was given", object.kind),
                ));
            }
            (Some(_), false) => {
                return Err(ProviderError::permanent(
                    operation,
                    object.to_string(),
                    format!(
                        "{} is cluster-scoped but a namespace was given",
                        object.kind
                    ),
                ));
            }
        };
        Ok((api, client))
    }

    async fn timed<T>(
        &self,
        operation: &str,
        object: &ObjectRef,
        client: &TargetClient,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ProviderError> {
        match tokio::time::timeout(self.options.request_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(classify(operation, object, &client.server, e)),
            Err(_) => Err(ProviderError::transient(
                operation,
                object.to_string(),
                format!(
                    "no answer from the Kubernetes API server {} within {} ms; will retry",
                    client.server,
                    self.options.request_timeout.as_millis()
                ),
            )
            .with_code("Timeout")),
        }
    }
}

#[async_trait::async_trait]
impl KubeProvisioner for KubeApplier {
    #[tracing::instrument(name = "kube.apply", skip_all, fields(target.name = %target.name, k8s.object = %object.reference()))]
    async fn apply(
        &self,
        target: &Target,
        object: &KubeObject,
    ) -> Result<serde_json::Value, ProviderError> {
        const OP: &str = "apply";
        let reference = object.reference();
        check_manifest(object)?;
        let (api, client) = self.api(target, &reference, OP)?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let live = self
            .timed(
                OP,
                &reference,
                client,
                api.patch(&object.name, &params, &Patch::Apply(&object.manifest)),
            )
            .await
            .map_err(|e| namespace_missing_is_transient(e, &reference))?;
        serde_json::to_value(live).map_err(|e| {
            ProviderError::permanent(
                OP,
                reference.to_string(),
                format!("the API server's answer is not a Kubernetes object: {e}"),
            )
        })
    }

    #[tracing::instrument(name = "kube.get", skip_all, fields(target.name = %target.name, k8s.object = %object))]
    async fn get(
        &self,
        target: &Target,
        object: &ObjectRef,
    ) -> Result<Option<serde_json::Value>, ProviderError> {
        const OP: &str = "get";
        let (api, client) = self.api(target, object, OP)?;
        // Not `get_opt`: it takes any 404 for "gone", even one saying the kind is not served.
        let found = match self.timed(OP, object, client, api.get(&object.name)).await {
            Ok(found) => Some(found),
            Err(e) if is_gone(&e, object) => None,
            Err(e) => return Err(not_served(e, object)),
        };
        found.map(serde_json::to_value).transpose().map_err(|e| {
            ProviderError::permanent(
                OP,
                object.to_string(),
                format!("the API server's answer is not a Kubernetes object: {e}"),
            )
        })
    }

    #[tracing::instrument(name = "kube.delete", skip_all, fields(target.name = %target.name, k8s.object = %object))]
    async fn delete(&self, target: &Target, object: &ObjectRef) -> Result<(), ProviderError> {
        const OP: &str = "delete";
        let (api, client) = self.api(target, object, OP)?;
        // Background: the Deployment goes at once, the garbage collector takes its pods.
        let params = DeleteParams::background();
        match self
            .timed(OP, object, client, api.delete(&object.name, &params))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_gone(&e, object) => Ok(()),
            Err(e) => Err(not_served(e, object)),
        }
    }
}

// ---------------------------------------------------------------- configuration

async fn client_config(
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

const KINDS: [&str; 8] = [
    "Namespace",
    "ServiceAccount",
    "ResourceQuota",
    "LimitRange",
    "NetworkPolicy",
    "Role",
    "RoleBinding",
    "Deployment",
];

/// The kinds the worker manages: how to address them, and whether they live in a namespace.
fn api_resource(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    let (resource, namespaced) = match kind {
        "Namespace" => (ApiResource::erase::<Namespace>(&()), false),
        "ServiceAccount" => (ApiResource::erase::<ServiceAccount>(&()), true),
        "ResourceQuota" => (ApiResource::erase::<ResourceQuota>(&()), true),
        "LimitRange" => (ApiResource::erase::<LimitRange>(&()), true),
        "NetworkPolicy" => (ApiResource::erase::<NetworkPolicy>(&()), true),
        "Role" => (ApiResource::erase::<Role>(&()), true),
        "RoleBinding" => (ApiResource::erase::<RoleBinding>(&()), true),
        "Deployment" => (ApiResource::erase::<Deployment>(&()), true),
        _ => return None,
    };
    (resource.api_version == api_version).then_some((resource, namespaced))
}

/// The manifest must describe the object it is sent as; a mismatch is a bug upstream, and the
/// API server would refuse it anyway.
fn check_manifest(object: &KubeObject) -> Result<(), ProviderError> {
    let m = &object.manifest;
    let field = |path: &[&str]| {
        path.iter()
            .try_fold(m, |v, key| v.get(key))
            .and_then(|v| v.as_str())
    };
    let mut problems = Vec::new();
    if field(&["apiVersion"]) != Some(object.api_version.as_str()) {
        problems.push(format!("apiVersion is not {:?}", object.api_version));
    }
    if field(&["kind"]) != Some(object.kind.as_str()) {
        problems.push(format!("kind is not {:?}", object.kind));
    }
    if field(&["metadata", "name"]) != Some(object.name.as_str()) {
        problems.push(format!("metadata.name is not {:?}", object.name));
    }
    if field(&["metadata", "namespace"]) != object.namespace.as_deref() {
        problems.push(format!(
            "metadata.namespace is not {:?}",
            object.namespace.as_deref().unwrap_or("(none)")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ProviderError::permanent(
            "apply",
            object.reference().to_string(),
            format!(
                "the manifest does not match the object it is applied as: {}",
                problems.join("; ")
            ),
        ))
    }
}

// ---------------------------------------------------------------- errors

/// A namespaced object applied right after its namespace was created can meet a namespace the
/// API server does not know yet (or one still being deleted): waiting helps. A 404 that is not
/// about the namespace means the API server does not serve the kind at all: waiting does not.
fn namespace_missing_is_transient(error: ProviderError, object: &ObjectRef) -> ProviderError {
    if error.code.as_deref() != Some("NotFound") {
        return error;
    }
    match &object.namespace {
        Some(ns)
            if error
                .message
                .contains(&format!("namespaces \"{ns}\" not found")) =>
        {
            ProviderError {
                class: ErrorClass::Transient,
                message: format!(
                    "namespace {ns} does not exist (yet): {}; will retry once it does",
                    error.message
                ),
                ..error
            }
        }
        _ => not_served(error, object),
    }
}

/// A 404 about the object itself (`deployments.apps "workload" not found`): it is not there.
/// The API server says the same when the object's namespace is gone.
fn is_gone(error: &ProviderError, object: &ObjectRef) -> bool {
    error.code.as_deref() == Some("NotFound")
        && error
            .message
            .contains(&format!("\"{}\" not found", object.name))
}

/// Any other 404 means the API server does not serve the kind at all.
fn not_served(error: ProviderError, object: &ObjectRef) -> ProviderError {
    if error.code.as_deref() != Some("NotFound") {
        return error;
    }
    ProviderError {
        class: ErrorClass::Permanent,
        message: format!(
            "the API server does not serve {} {}: {}; is the cluster's Kubernetes version supported?",
            object.api_version, object.kind, error.message
        ),
        ..error
    }
}

/// What a kube error means for the saga.
fn classify(
    operation: &str,
    object: &ObjectRef,
    server: &str,
    error: kube::Error,
) -> ProviderError {
    let resource = object.to_string();
    match error {
        kube::Error::Api(status) => classify_status(operation, &resource, &status),
        kube::Error::HyperError(e) => ProviderError::transient(
            operation,
            resource,
            format!("the connection to the Kubernetes API server {server} failed: {e}; will retry"),
        )
        .with_code("ConnectionError"),
        kube::Error::Service(e) => ProviderError::transient(
            operation,
            resource,
            format!(
                "cannot reach the Kubernetes API server {server}: {}; will retry",
                error_chain(e.as_ref())
            ),
        )
        .with_code("ConnectionError"),
        kube::Error::Auth(e) => ProviderError::permanent(
            operation,
            resource,
            format!(
                "cannot authenticate to the Kubernetes API server {server}: {e}; check the target's kubeconfig or service account"
            ),
        )
        .with_code("AuthError"),
        kube::Error::SerdeError(e) => ProviderError::permanent(
            operation,
            resource,
            format!(
                "the Kubernetes API server {server} answered with something that is not a Kubernetes object ({e}); is `server` really an API server?"
            ),
        ),
        other => ProviderError::permanent(
            operation,
            resource,
            format!("the request to the Kubernetes API server {server} failed: {other}"),
        ),
    }
}

fn classify_status(operation: &str, resource: &str, status: &Status) -> ProviderError {
    let code = if status.reason.is_empty() {
        status.code.to_string()
    } else {
        status.reason.clone()
    };
    let retry_after = status
        .details
        .as_ref()
        .map(|d| d.retry_after_seconds)
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(u64::from(s)));
    let message = &status.message;
    let causes = status
        .details
        .as_ref()
        .map(|d| {
            d.causes
                .iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let (class, text) = match status.code {
        429 => (
            ErrorClass::Transient,
            format!("the API server is throttling requests: {message}; will retry"),
        ),
        408 | 500..=599 => (
            ErrorClass::Transient,
            format!(
                "the API server failed ({} {code}): {message}; will retry",
                status.code
            ),
        ),
        409 => (
            ErrorClass::Transient,
            format!("conflict with a concurrent change: {message}; will retry"),
        ),
        // Raw: the callers tell "gone", "namespace missing" and "kind not served" apart by it.
        404 => (ErrorClass::Permanent, message.clone()),
        403 if message.contains("being terminated") => (
            ErrorClass::Transient,
            format!("the namespace is still being deleted: {message}; will retry"),
        ),
        403 => (
            ErrorClass::Permanent,
            format!(
                "the API server refused the worker: {message}; grant the worker's identity RBAC to {operation} this kind (see k8s)"
            ),
        ),
        401 => (
            ErrorClass::Permanent,
            format!(
                "the API server did not accept the worker's credentials: {message}; check the target's kubeconfig or service account"
            ),
        ),
        422 => (
            ErrorClass::Permanent,
            format!(
                "the API server rejected the object as invalid: {message}{}",
                {
                    // The API server usually repeats its causes in the message already.
                    let extra: Vec<&String> = causes
                        .iter()
                        .filter(|c| !message.contains(c.as_str()))
                        .collect();
                    if extra.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({})",
                            extra
                                .iter()
                                .map(|c| c.as_str())
                                .collect::<Vec<_>>()
                                .join("; ")
                        )
                    }
                }
            ),
        ),
        _ => (
            ErrorClass::Permanent,
            format!(
                "the API server rejected the request ({} {code}): {message}",
                status.code
            ),
        ),
    };
    let mut error = ProviderError::new(class, operation, resource, text).with_code(code);
    if let Some(after) = retry_after {
        error = error.with_retry_after(after);
    }
    error
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str, retry_after: u32) -> Status {
        serde_json::from_value(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code,
            "details": {"retryAfterSeconds": retry_after},
        }))
        .expect("a Status")
    }

    #[test]
    fn throttling_is_transient_and_carries_retry_after() {
        let e = classify_status(
            "apply",
            "Namespace/x",
            &status(429, "TooManyRequests", "slow down", 7),
        );
        assert_eq!(e.class, ErrorClass::Transient);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(e.code.as_deref(), Some("TooManyRequests"));
    }

    #[test]
    fn server_errors_and_conflicts_are_transient_invalid_objects_permanent() {
        for (code, reason, class) in [
            (500, "InternalError", ErrorClass::Transient),
            (503, "ServiceUnavailable", ErrorClass::Transient),
            (504, "Timeout", ErrorClass::Transient),
            (409, "Conflict", ErrorClass::Transient),
            (422, "Invalid", ErrorClass::Permanent),
            (400, "BadRequest", ErrorClass::Permanent),
            (403, "Forbidden", ErrorClass::Permanent),
            (401, "Unauthorized", ErrorClass::Permanent),
        ] {
            let e = classify_status("apply", "Role/ns/x", &status(code, reason, "m", 0));
            assert_eq!(e.class, class, "{code}");
            assert_eq!(e.retry_after(), None);
        }
    }

    #[test]
    fn a_namespace_being_terminated_is_transient() {
        let e = classify_status(
            "apply",
            "Role/ns/x",
            &status(
                403,
                "Forbidden",
                "unable to create new content in namespace ns because it is being terminated",
                0,
            ),
        );
        assert_eq!(e.class, ErrorClass::Transient);
    }

    #[test]
    fn only_a_missing_namespace_makes_a_not_found_apply_transient() {
        let object = ObjectRef {
            api_version: "v1".into(),
            kind: "ServiceAccount".into(),
            namespace: Some("tenant-a".into()),
            name: "sa".into(),
        };
        let missing_ns = classify_status(
            "apply",
            "x",
            &status(404, "NotFound", "namespaces \"tenant-a\" not found", 0),
        );
        assert_eq!(
            namespace_missing_is_transient(missing_ns, &object).class,
            ErrorClass::Transient
        );
        let unserved = classify_status(
            "apply",
            "x",
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                0,
            ),
        );
        assert_eq!(
            namespace_missing_is_transient(unserved, &object).class,
            ErrorClass::Permanent
        );
    }

    #[test]
    fn only_a_not_found_naming_the_object_means_it_is_gone() {
        let object = ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("tenant-a".into()),
            name: "workload".into(),
        };
        let gone = classify_status(
            "delete",
            "x",
            &status(
                404,
                "NotFound",
                "deployments.apps \"workload\" not found",
                0,
            ),
        );
        assert!(is_gone(&gone, &object));
        let unserved = classify_status(
            "delete",
            "x",
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                0,
            ),
        );
        assert!(!is_gone(&unserved, &object));
        let e = not_served(unserved, &object);
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(
            e.message.contains("does not serve apps/v1 Deployment"),
            "{}",
            e.message
        );
    }

    #[test]
    fn every_managed_kind_resolves_with_its_scope() {
        for kind in KINDS {
            let version = match kind {
                "Deployment" => "apps/v1",
                "NetworkPolicy" => "networking.k8s.io/v1",
                "Role" | "RoleBinding" => "rbac.authorization.k8s.io/v1",
                _ => "v1",
            };
            let (resource, namespaced) = api_resource(version, kind).expect(kind);
            assert_eq!(resource.kind, kind);
            assert_eq!(namespaced, kind != "Namespace");
        }
        assert!(api_resource("apps/v1", "Namespace").is_none());
        assert!(api_resource("v1", "Secret").is_none());
    }

    #[test]
    fn a_manifest_that_contradicts_its_coordinates_is_refused() {
        let mut object = onboarding_providers::manifests::namespace("tenant-a", "a");
        assert!(check_manifest(&object).is_ok());
        object.name = "tenant-b".into();
        let e = check_manifest(&object).expect_err("mismatch");
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("metadata.name"), "{}", e.message);
    }
}
