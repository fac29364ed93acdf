//! [`KubeApplier`]: the production [`KubeProvisioner`], server-side apply through `kube`.
//!
//! One `kube::Client` per configured target, built once at start-up. It may touch only the API
//! servers named by the targets; it never reads the environment itself (only `in_cluster` makes
//! kube read the pod's service-account files and `KUBERNETES_SERVICE_*`, which is what that
//! setting means). Retries belong to the saga engine: kube's own retry layer is switched off and
//! every failure comes back classified, with the server's `retryAfterSeconds` when it gave one.
//!
//! This module holds the applier and its three calls; client set-up is in `setup`, the managed
//! kinds in `kinds`, error classification in `classify`.

use std::collections::BTreeMap;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};

use crate::classify::{classify, is_gone, namespace_missing_is_transient, not_served};
use crate::kinds::{KINDS, api_resource, check_manifest};
use crate::setup::{KubeClientOptions, KubeSetupError, client_config};
use onboarding_providers::Target;
use onboarding_providers::manifests::FIELD_MANAGER;
use onboarding_providers::{KubeObject, KubeProvisioner, ObjectRef, ProviderError};

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

    #[tracing::instrument(name = "kube.delete_unchanged", skip_all, fields(target.name = %target.name, k8s.object = %object))]
    async fn delete_unchanged(
        &self,
        target: &Target,
        object: &ObjectRef,
        uid: &str,
        resource_version: &str,
    ) -> Result<bool, ProviderError> {
        const OP: &str = "delete";
        let (api, client) = self.api(target, object, OP)?;
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: Some(resource_version.to_string()),
            }),
            ..DeleteParams::background()
        };
        match self
            .timed(OP, object, client, api.delete(&object.name, &params))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_gone(&e, object) => Ok(true),
            // The API server's 409 when a precondition does not hold: the object changed ("the
            // ResourceVersion in the precondition (..) does not match ..") or was replaced
            // ("Precondition failed: UID in precondition: .."). Nothing was deleted.
            Err(e)
                if e.code.as_deref() == Some("Conflict")
                    && e.message.to_ascii_lowercase().contains("precondition") =>
            {
                Ok(false)
            }
            Err(e) => Err(not_served(e, object)),
        }
    }
}
