//! Test doubles for the saga engine: an in-memory journal and topic, a fake cloud that plays
//! both Azure and Kubernetes (with long-running operations and fault injection), a manual clock,
//! and a driver that plays the runner's part with a perfect queue.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use onboarding_contract::{CloudEvent, Command};
use onboarding_core::Clock;
use onboarding_core::ErrorClass;
use onboarding_journal::{Journal, JournalError, NameClaim, Versioned};
use onboarding_providers::*;
use onboarding_saga::engine::{Engine, Incoming, WorkFlags};
use onboarding_transport::{OutgoingMessage, Subscription, Topic, TransportError};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use worker::config::{Config, Target};

// ------------------------------------------------------------------ clock

/// Time that moves only when someone sleeps (instantly) or the test advances it.
#[derive(Debug)]
pub struct ManualClock {
    base: DateTime<Utc>,
    offset_ms: AtomicI64,
}

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            offset_ms: AtomicI64::new(0),
        })
    }
    pub fn advance(&self, d: Duration) {
        self.offset_ms
            .fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
    pub fn advance_to(&self, t: DateTime<Utc>) {
        let now = self.now();
        if t > now {
            self.advance((t - now).to_std().unwrap());
        }
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + chrono::TimeDelta::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
    async fn sleep(&self, d: Duration) {
        self.advance(d);
        tokio::task::yield_now().await;
    }
}

// ------------------------------------------------------------------ journal

/// In-memory journal with compare-and-swap, and a switch that makes it "crash" (fail every
/// call) after a given number of successful stores.
#[derive(Debug, Default)]
pub struct MemJournal {
    docs: Mutex<HashMap<String, (u64, Value)>>,
    claims: Mutex<HashMap<(String, String), String>>,
    pub stores: AtomicU64,
    crash_after: Mutex<Option<u64>>,
    crashed: AtomicBool,
}

impl MemJournal {
    pub fn crash_after(&self, stores: Option<u64>) {
        *self.crash_after.lock().unwrap() = stores.map(|n| self.stores.load(Ordering::SeqCst) + n);
        self.crashed.store(false, Ordering::SeqCst);
    }
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }
    fn check(&self) -> Result<(), JournalError> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(JournalError::Unavailable("simulated crash".into()));
        }
        Ok(())
    }
    pub fn record(&self, key: &str) -> Option<Value> {
        self.docs.lock().unwrap().get(key).map(|(_, v)| v.clone())
    }
}

#[async_trait::async_trait]
impl Journal for MemJournal {
    async fn load(&self, key: &str) -> Result<Option<Versioned<Value>>, JournalError> {
        self.check()?;
        Ok(self
            .docs
            .lock()
            .unwrap()
            .get(key)
            .map(|(v, val)| Versioned {
                version: *v,
                value: val.clone(),
            }))
    }
    async fn store(
        &self,
        key: &str,
        value: &Value,
        expected: Option<u64>,
    ) -> Result<u64, JournalError> {
        self.check()?;
        if let Some(limit) = *self.crash_after.lock().unwrap()
            && self.stores.load(Ordering::SeqCst) >= limit
        {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(JournalError::Unavailable("simulated crash".into()));
        }
        let mut docs = self.docs.lock().unwrap();
        let found = docs.get(key).map(|(v, _)| *v);
        if found != expected {
            return Err(JournalError::Conflict {
                key: key.into(),
                expected,
                found,
            });
        }
        let next = found.unwrap_or(0) + 1;
        docs.insert(key.into(), (next, value.clone()));
        self.stores.fetch_add(1, Ordering::SeqCst);
        Ok(next)
    }
    async fn keys(&self) -> Result<Vec<String>, JournalError> {
        let mut k: Vec<_> = self.docs.lock().unwrap().keys().cloned().collect();
        k.sort();
        Ok(k)
    }
    async fn claim_names(&self, tenant: &str, claims: &[NameClaim]) -> Result<(), JournalError> {
        self.check()?;
        let mut map = self.claims.lock().unwrap();
        for c in claims {
            if let Some(owner) = map.get(&(c.kind.clone(), c.name.clone()))
                && owner != tenant
            {
                return Err(JournalError::NameTaken {
                    kind: c.kind.clone(),
                    name: c.name.clone(),
                    tenant: tenant.into(),
                    owner: owner.clone(),
                });
            }
        }
        for c in claims {
            map.insert((c.kind.clone(), c.name.clone()), tenant.into());
        }
        Ok(())
    }
    async fn ping(&self) -> Result<(), JournalError> {
        self.check()
    }
}

// ------------------------------------------------------------------ topic and queue

/// Captures published events.
#[derive(Debug, Default)]
pub struct MemTopic {
    pub published: Mutex<Vec<OutgoingMessage>>,
}

impl MemTopic {
    pub fn events(&self) -> Vec<CloudEvent> {
        self.published
            .lock()
            .unwrap()
            .iter()
            .map(|m| serde_json::from_slice(&m.body).unwrap())
            .collect()
    }
}

#[async_trait::async_trait]
impl Topic for MemTopic {
    async fn publish(&self, message: OutgoingMessage) -> Result<(), TransportError> {
        self.published.lock().unwrap().push(message);
        Ok(())
    }
    async fn subscribe(&self, _s: &str) -> Result<Box<dyn Subscription>, TransportError> {
        Err(TransportError::Rejected(
            "the test topic has no subscriptions".into(),
        ))
    }
}

// ------------------------------------------------------------------ cloud

/// Fault plan of the fake cloud. Operation names: `create:<resource>`, `delete:<resource>`
/// (resources: node_pool, identity, federated_credential, blob_container, role_assignment) and
/// `apply:<Kind>`, `delete:<Kind>` for Kubernetes objects.
#[derive(Debug, Default, Clone)]
pub struct CloudFaults {
    pub permanent: Vec<String>,
    pub transient_rate: f64,
    pub seed: u64,
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
    fn gate(&self, op: &str, resource: &str) -> Result<(), ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let f = self.faults.lock().unwrap().clone();
        if f.permanent.iter().any(|p| p == op) {
            return Err(
                ProviderError::permanent(op, resource, "injected permanent failure")
                    .with_code("InjectedPermanentFailure"),
            );
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
        self.gate("create:node_pool", &key)?;
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
                json!({"tenant": spec.tenant_id, "state": "Creating"}),
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
        }))
    }
    async fn delete_node_pool(
        &self,
        _t: &Target,
        name: &str,
    ) -> Result<Progress<()>, ProviderError> {
        let key = format!("node_pool/{name}");
        self.gate("delete:node_pool", &key)?;
        self.remove(&key);
        Ok(Progress::Done(()))
    }
    async fn ensure_identity(
        &self,
        _t: &Target,
        spec: &IdentitySpec,
    ) -> Result<IdentityInfo, ProviderError> {
        let key = format!("identity/{}", spec.name);
        self.gate("create:identity", &key)?;
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
        self.gate("get:identity", &key)?;
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
    async fn delete_identity(&self, _t: &Target, name: &str) -> Result<(), ProviderError> {
        let key = format!("identity/{name}");
        self.gate("delete:identity", &key)?;
        self.remove(&key);
        Ok(())
    }
    async fn ensure_federated_credential(
        &self,
        _t: &Target,
        spec: &FederatedCredentialSpec,
    ) -> Result<(), ProviderError> {
        let key = format!("federated_credential/{}", spec.name);
        self.gate("create:federated_credential", &key)?;
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
    ) -> Result<(), ProviderError> {
        let key = format!("federated_credential/{name}");
        self.gate("delete:federated_credential", &key)?;
        self.remove(&key);
        Ok(())
    }
    async fn ensure_blob_container(
        &self,
        _t: &Target,
        spec: &BlobContainerSpec,
    ) -> Result<BlobContainerInfo, ProviderError> {
        let key = format!("blob_container/{}", spec.name);
        self.gate("create:blob_container", &key)?;
        self.put(key.clone(), json!({"tenant": spec.tenant_id}));
        Ok(BlobContainerInfo {
            id: format!("/containers/{}", spec.name),
            name: spec.name.clone(),
        })
    }
    async fn delete_blob_container(&self, _t: &Target, name: &str) -> Result<(), ProviderError> {
        let key = format!("blob_container/{name}");
        self.gate("delete:blob_container", &key)?;
        self.remove(&key);
        Ok(())
    }
    async fn ensure_role_assignment(
        &self,
        _t: &Target,
        spec: &RoleAssignmentSpec,
    ) -> Result<RoleAssignmentInfo, ProviderError> {
        let key = format!("role_assignment/{}", spec.name);
        self.gate("create:role_assignment", &key)?;
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
        _scope: &str,
        name: &str,
    ) -> Result<(), ProviderError> {
        let key = format!("role_assignment/{name}");
        self.gate("delete:role_assignment", &key)?;
        self.remove(&key);
        Ok(())
    }
    async fn poll_operation(
        &self,
        _t: &Target,
        op: &PendingOperation,
    ) -> Result<Progress<()>, ProviderError> {
        self.gate("poll", &op.url)?;
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
        self.gate(&format!("apply:{}", o.kind), &r.to_string())?;
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
        self.gate(&format!("get:{}", r.kind), &r.to_string())?;
        Ok(FakeCloud::get(self, &r.to_string()))
    }
    async fn delete(&self, _t: &Target, r: &ObjectRef) -> Result<(), ProviderError> {
        self.gate(&format!("delete:{}", r.kind), &r.to_string())?;
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

// ------------------------------------------------------------------ harness

pub fn test_config() -> Config {
    let mut cfg = Config::default().normalised();
    cfg.saga.message_budget_ms = 20_000;
    cfg.saga.step_retry_budget_ms = 2_000;
    cfg.saga.retry_initial_delay_ms = 20;
    cfg.saga.continuation_base_delay_ms = 500;
    cfg.saga.step_attempt_limit = 6;
    cfg.saga.compensation_attempt_limit = 6;
    cfg
}

pub struct Harness {
    pub journal: Arc<MemJournal>,
    pub topic: Arc<MemTopic>,
    pub cloud: Arc<FakeCloud>,
    pub clock: Arc<dyn Clock>,
    pub manual: Option<Arc<ManualClock>>,
    pub config: Arc<Config>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(test_config())
    }
    pub fn with_config(config: Config) -> Self {
        let manual = ManualClock::new();
        Self {
            journal: Arc::default(),
            topic: Arc::default(),
            cloud: FakeCloud::new(),
            clock: manual.clone(),
            manual: Some(manual),
            config: Arc::new(config),
        }
    }
    /// Real time, for tests where several engines race.
    pub fn with_system_clock() -> Self {
        Self {
            clock: Arc::new(onboarding_core::SystemClock),
            manual: None,
            ..Self::new()
        }
    }

    pub fn engine(&self, worker_id: &str) -> Engine {
        Engine::new(onboarding_saga::SagaContext {
            settings: Arc::new(self.config.saga.clone()),
            provisioning: Arc::new(self.config.provisioning()),
            journal: self.journal.clone(),
            azure: self.cloud.clone(),
            kube: self.cloud.clone(),
            clock: self.clock.clone(),
            worker_id: worker_id.into(),
            recorder: Arc::new(onboarding_core::NoRecorder),
            progress: Arc::new(worker::context::TopicProgress(self.topic.clone())),
        })
    }

    pub fn first_message(command: &Command) -> Incoming {
        Incoming {
            command: command.clone(),
            message_id: command.request_id().to_string(),
            continuation: false,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        }
    }

    /// Process one message as the runner would: publish the outcome events, confirm them,
    /// and return the continuation to deliver next (if any).
    pub async fn step(
        &self,
        engine: &Engine,
        incoming: Incoming,
    ) -> Result<Option<Incoming>, onboarding_saga::engine::EngineError> {
        let deadline = self.clock.now() + Duration::from_millis(self.config.saga.message_budget_ms);
        let handled = engine
            .handle(incoming.clone(), deadline, &WorkFlags::default())
            .await?;
        assert!(
            handled.rejection.is_none(),
            "unexpected rejection {:?}",
            handled.rejection
        );
        for e in &handled.events {
            self.topic
                .publish(onboarding_transport::envelope::event_message(e))
                .await
                .unwrap();
        }
        if !handled.events.is_empty() {
            let ids: Vec<_> = handled.events.iter().map(|e| e.id.clone()).collect();
            engine
                .confirm_published(incoming.command.tenant_id(), &ids)
                .await?;
        }
        Ok(handled.continuation.map(|c| {
            if let Some(m) = &self.manual {
                m.advance_to(c.wake_at);
            }
            Incoming {
                command: c.command,
                message_id: c.message_id,
                continuation: true,
                traceparent: c.traceparent,
            }
        }))
    }

    /// Follow continuations until the saga finishes.
    pub async fn drive(&self, engine: &Engine, first: Incoming) {
        let mut next = Some(first);
        let mut guard = 0;
        while let Some(m) = next {
            guard += 1;
            assert!(guard < 500, "saga did not finish in 500 messages");
            next = self.step(engine, m).await.expect("engine error");
        }
    }

    pub fn terminal_events(&self, request_id: &str) -> Vec<CloudEvent> {
        self.topic
            .events()
            .into_iter()
            .filter(|e| e.is_terminal() && e.request_id() == Some(request_id))
            .collect()
    }

    pub fn record(&self, tenant: &str) -> onboarding_saga::TenantRecord {
        serde_json::from_value(self.journal.record(tenant).expect("record")).expect("record parses")
    }
}

pub fn onboard(request_id: &str, tenant: &str) -> Command {
    let mut c = onboarding_contract::OnboardTenant::new(request_id, tenant);
    c.workload = Some(onboarding_contract::commands::WorkloadRequest { replicas: 1 });
    c.admin_group_id = Some("11111111-2222-3333-4444-555555555555".into());
    Command::Onboard(c)
}

pub fn offboard(request_id: &str, tenant: &str, purge: bool) -> Command {
    let mut c = onboarding_contract::OffboardTenant::new(request_id, tenant);
    c.purge_data = purge;
    Command::Offboard(c)
}
