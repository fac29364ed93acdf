//! [`FakeCloud`]: Azure and Kubernetes in one in-memory inventory, with long-running node pool
//! operations and a fault plan ([`CloudFaults`]).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onboarding_core::ErrorClass;
use onboarding_providers::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

/// Fault plan of the fake cloud. Operation names: `create:<resource>`, `delete:<resource>`
/// (resources: node_pool, identity, federated_credential, blob_container, role_assignment) and
/// `apply:<Kind>`, `delete:<Kind>` for Kubernetes objects.
#[derive(Debug, Default, Clone)]
pub struct CloudFaults {
    pub permanent: Vec<String>,
    /// Operations that fail because the worker's own credential is refused (Entra down, the
    /// token rejected): infrastructure faults, never the step's.
    pub unwell: Vec<String>,
    pub transient_rate: f64,
    pub seed: u64,
    /// Operations that never answer, as a call whose connection went silent: whoever makes
    /// one waits until it gives up or is cancelled.
    pub hang: Vec<String>,
}

/// Azure and Kubernetes in one in-memory inventory.
#[derive(Debug)]
pub struct FakeCloud {
    inventory: Mutex<BTreeMap<String, Value>>,
    /// How many times each resource was newly created.
    creations: Mutex<BTreeMap<String, u32>>,
    pending_polls: Mutex<HashMap<String, u32>>,
    faults: Mutex<CloudFaults>,
    rng: Mutex<StdRng>,
    pub calls: AtomicU64,
    /// Polls a node pool stays `Creating`.
    pub lro_polls: u32,
}

impl FakeCloud {
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inventory: Mutex::default(),
            creations: Mutex::default(),
            pending_polls: Mutex::default(),
            faults: Mutex::default(),
            rng: Mutex::new(StdRng::seed_from_u64(1)),
            calls: AtomicU64::new(0),
            lro_polls: 2,
        })
    }
    pub fn set_faults(&self, f: CloudFaults) {
        *self.rng.lock().unwrap() = StdRng::seed_from_u64(f.seed);
        *self.faults.lock().unwrap() = f;
    }
    pub fn inventory(&self) -> Vec<String> {
        self.inventory.lock().unwrap().keys().cloned().collect()
    }
    pub fn creations(&self) -> BTreeMap<String, u32> {
        self.creations.lock().unwrap().clone()
    }
    async fn gate(&self, op: &str, resource: &str) -> Result<(), ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let f = self.faults.lock().unwrap().clone();
        if f.hang.iter().any(|h| h == op) {
            return std::future::pending().await;
        }
        if f.permanent.iter().any(|p| p == op) {
            return Err(
                ProviderError::permanent(op, resource, "injected permanent failure")
                    .with_code("InjectedPermanentFailure"),
            );
        }
        if f.unwell.iter().any(|p| p == op) {
            return Err(ProviderError::new(
                ErrorClass::Infrastructure,
                op,
                resource,
                "cannot get a token from workload identity: Entra answered 503",
            )
            .with_code("AuthenticationFailed"));
        }
        if f.transient_rate > 0.0 && self.rng.lock().unwrap().random::<f64>() < f.transient_rate {
            return Err(
                ProviderError::transient(op, resource, "injected throttling")
                    .with_code("TooManyRequests")
                    .with_retry_after(Duration::from_secs(1)),
            );
        }
        Ok(())
    }
    fn put(&self, key: String, value: Value) {
        let mut inv = self.inventory.lock().unwrap();
        if !inv.contains_key(&key) {
            *self
                .creations
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default() += 1;
        }
        inv.insert(key, value);
    }
    fn get(&self, key: &str) -> Option<Value> {
        self.inventory.lock().unwrap().get(key).cloned()
    }
    fn remove(&self, key: &str) {
        self.inventory.lock().unwrap().remove(key);
    }
    /// What the provisioner does: an existing resource without the marker for this tenant is
    /// never adopted.
    fn refuse_foreign(&self, key: &str, tenant_id: &str) -> Result<(), ProviderError> {
        match self.get(key) {
            Some(v) if v["tenant"].as_str() != Some(tenant_id) => Err(ProviderError::permanent(
                "create",
                key,
                format!("{key} exists and is not the worker's for tenant {tenant_id}"),
            )
            .with_code("ResourceNotOwned")),
            _ => Ok(()),
        }
    }
    /// What the provisioner does: deletes only what carries the marker for this tenant.
    fn remove_if_ours(&self, key: &str, tenant_id: &str) {
        let mut inv = self.inventory.lock().unwrap();
        if inv
            .get(key)
            .is_some_and(|v| v["tenant"].as_str() == Some(tenant_id))
        {
            inv.remove(key);
        }
    }
}

fn ids(name: &str) -> (String, String) {
    let u = |s: &str| {
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{s}{name}").as_bytes()).to_string()
    };
    (u("client"), u("principal"))
}

#[async_trait::async_trait]
impl AzureProvisioner for FakeCloud {
    async fn ensure_node_pool(
        &self,
        _t: &Target,
        spec: &NodePoolSpec,
    ) -> Result<Progress<NodePoolInfo>, ProviderError> {
        let key = format!("node_pool/{}", spec.name);
        self.gate("create:node_pool", &key).await?;
        let info = NodePoolInfo {
            id: key.clone(),
            name: spec.name.clone(),
        };
        if let Some(existing) = self.get(&key) {
            if existing["tenant"] != json!(spec.tenant_id) {
                return Err(ProviderError::permanent(
                    "create:node_pool",
                    &key,
                    "owned by another tenant",
                ));
            }
            if existing["state"] == "Succeeded" {
                return Ok(Progress::Done(info));
            }
        } else {
            self.put(
                key.clone(),
                json!({"tenant": spec.tenant_id, "state": "Creating", "spec": spec}),
            );
            self.pending_polls
                .lock()
                .unwrap()
                .insert(key.clone(), self.lro_polls);
        }
        Ok(Progress::Pending(PendingOperation {
            url: key,
            kind: OperationKind::AsyncOperation,
            retry_after_secs: 1,
            since: None,
            place: None,
        }))
    }
    /// As the ARM provisioner: a settled pool of the tenant's that matches the spec.
    async fn node_pool_in_sync(
        &self,
        _t: &Target,
        spec: &NodePoolSpec,
    ) -> Result<Option<NodePoolInfo>, ProviderError> {
        let key = format!("node_pool/{}", spec.name);
        self.gate("get:node_pool", &key).await?;
        let in_sync = self.get(&key).is_some_and(|v| {
            v["tenant"] == json!(spec.tenant_id)
                && v["state"] == "Succeeded"
                && v["spec"] == json!(spec)
        });
        Ok(in_sync.then(|| NodePoolInfo {
            id: key,
            name: spec.name.clone(),
        }))
    }
    async fn delete_node_pool(
        &self,
        _t: &Target,
        name: &str,
        _tenant_id: &str,
    ) -> Result<Progress<()>, ProviderError> {
        let key = format!("node_pool/{name}");
        self.gate("delete:node_pool", &key).await?;
        self.remove(&key);
        Ok(Progress::Done(()))
    }
    async fn ensure_identity(
        &self,
        _t: &Target,
        spec: &IdentitySpec,
    ) -> Result<IdentityInfo, ProviderError> {
        let key = format!("identity/{}", spec.name);
        self.gate("create:identity", &key).await?;
        self.refuse_foreign(&key, &spec.tenant_id)?;
        let (client_id, principal_id) = ids(&spec.name);
        self.put(key.clone(), json!({"tenant": spec.tenant_id}));
        Ok(IdentityInfo {
            id: key,
            name: spec.name.clone(),
            client_id,
            principal_id,
            entra_tenant_id: "entra".into(),
        })
    }
    async fn get_identity(
        &self,
        _t: &Target,
        name: &str,
    ) -> Result<Option<IdentityInfo>, ProviderError> {
        let key = format!("identity/{name}");
        self.gate("get:identity", &key).await?;
        Ok(self.get(&key).map(|_| {
            let (client_id, principal_id) = ids(name);
            IdentityInfo {
                id: key,
                name: name.into(),
                client_id,
                principal_id,
                entra_tenant_id: "entra".into(),
            }
        }))
    }
    async fn delete_identity(
        &self,
        _t: &Target,
        name: &str,
        tenant_id: &str,
    ) -> Result<(), ProviderError> {
        let key = format!("identity/{name}");
        self.gate("delete:identity", &key).await?;
        self.remove_if_ours(&key, tenant_id);
        Ok(())
    }
    async fn ensure_federated_credential(
        &self,
        _t: &Target,
        spec: &FederatedCredentialSpec,
    ) -> Result<(), ProviderError> {
        let key = format!("federated_credential/{}", spec.name);
        self.gate("create:federated_credential", &key).await?;
        if self
            .get(&format!("identity/{}", spec.identity_name))
            .is_none()
        {
            return Err(ProviderError::permanent(
                "create:federated_credential",
                &key,
                "parent identity missing",
            )
            .with_code("ParentResourceNotFound"));
        }
        self.put(key, json!({"subject": spec.subject}));
        Ok(())
    }
    async fn delete_federated_credential(
        &self,
        _t: &Target,
        _i: &str,
        name: &str,
        _tenant_id: &str,
    ) -> Result<(), ProviderError> {
        let key = format!("federated_credential/{name}");
        self.gate("delete:federated_credential", &key).await?;
        self.remove(&key);
        Ok(())
    }
    async fn ensure_blob_container(
        &self,
        _t: &Target,
        spec: &BlobContainerSpec,
    ) -> Result<BlobContainerInfo, ProviderError> {
        let key = format!("blob_container/{}", spec.name);
        self.gate("create:blob_container", &key).await?;
        self.refuse_foreign(&key, &spec.tenant_id)?;
        self.put(key.clone(), json!({"tenant": spec.tenant_id}));
        Ok(BlobContainerInfo {
            id: format!("/containers/{}", spec.name),
            name: spec.name.clone(),
        })
    }
    async fn delete_blob_container(
        &self,
        _t: &Target,
        name: &str,
        tenant_id: &str,
    ) -> Result<(), ProviderError> {
        let key = format!("blob_container/{name}");
        self.gate("delete:blob_container", &key).await?;
        self.remove_if_ours(&key, tenant_id);
        Ok(())
    }
    async fn ensure_role_assignment(
        &self,
        _t: &Target,
        spec: &RoleAssignmentSpec,
    ) -> Result<RoleAssignmentInfo, ProviderError> {
        let key = format!("role_assignment/{}", spec.name);
        self.gate("create:role_assignment", &key).await?;
        self.put(
            key.clone(),
            json!({"principal": spec.principal_id, "condition": spec.condition}),
        );
        Ok(RoleAssignmentInfo {
            id: key,
            name: spec.name.clone(),
        })
    }
    async fn delete_role_assignment(
        &self,
        _t: &Target,
        spec: &RoleAssignmentSpec,
    ) -> Result<(), ProviderError> {
        let key = format!("role_assignment/{}", spec.name);
        self.gate("delete:role_assignment", &key).await?;
        // What the provisioner does: only the assignment the spec describes is deleted.
        let mut inv = self.inventory.lock().unwrap();
        if inv
            .get(&key)
            .is_some_and(|v| v["principal"].as_str() == Some(spec.principal_id.as_str()))
        {
            inv.remove(&key);
        }
        Ok(())
    }
    async fn poll_operation(
        &self,
        _t: &Target,
        op: &PendingOperation,
    ) -> Result<Progress<()>, ProviderError> {
        self.gate("poll", &op.url).await?;
        let mut polls = self.pending_polls.lock().unwrap();
        let left = polls.entry(op.url.clone()).or_insert(0);
        if *left > 0 {
            *left -= 1;
            return Ok(Progress::Pending(op.clone()));
        }
        drop(polls);
        if let Some(mut v) = self.get(&op.url) {
            v["state"] = json!("Succeeded");
            self.inventory.lock().unwrap().insert(op.url.clone(), v);
        }
        Ok(Progress::Done(()))
    }
}

#[async_trait::async_trait]
impl KubeProvisioner for FakeCloud {
    async fn apply(&self, _t: &Target, o: &KubeObject) -> Result<Value, ProviderError> {
        let r = o.reference();
        self.gate(&format!("apply:{}", o.kind), &r.to_string())
            .await?;
        if let Some(ns) = &o.namespace
            && self.get(&format!("Namespace/{ns}")).is_none()
        {
            return Err(ProviderError::new(
                ErrorClass::Transient,
                "apply",
                r.to_string(),
                "namespace not found",
            ));
        }
        self.put(r.to_string(), o.manifest.clone());
        Ok(o.manifest.clone())
    }
    async fn get(&self, _t: &Target, r: &ObjectRef) -> Result<Option<Value>, ProviderError> {
        self.gate(&format!("get:{}", r.kind), &r.to_string())
            .await?;
        Ok(FakeCloud::get(self, &r.to_string()))
    }
    async fn delete_unchanged(
        &self,
        t: &Target,
        r: &ObjectRef,
        uid: &str,
        resource_version: &str,
    ) -> Result<bool, ProviderError> {
        if let Some(live) = FakeCloud::get(self, &r.to_string()) {
            let field = |p: &str| {
                live.pointer(p)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            if field("/metadata/uid") != uid
                || field("/metadata/resourceVersion") != resource_version
            {
                return Ok(false);
            }
        }
        KubeProvisioner::delete(self, t, r).await.map(|()| true)
    }
    async fn delete(&self, _t: &Target, r: &ObjectRef) -> Result<(), ProviderError> {
        self.gate(&format!("delete:{}", r.kind), &r.to_string())
            .await?;
        let key = r.to_string();
        let mut inv = self.inventory.lock().unwrap();
        inv.remove(&key);
        if r.kind == "Namespace" {
            let prefix = format!("/{}/", r.name);
            inv.retain(|k, _| !k.contains(&prefix));
        }
        Ok(())
    }
}
