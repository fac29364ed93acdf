//! [`EngineHarness`]: the saga engine on in-memory fakes (journal, topic, cloud, manual clock),
//! with a driver that plays the runner's part over a perfect queue. Engine level: no runner, no
//! transport, no process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use onboarding_config::Config;
use onboarding_contract::validate::Rejection;
use onboarding_contract::{CloudEvent, Command};
use onboarding_core::Clock;
use onboarding_saga::engine::{Engine, Incoming, WorkFlags};
use onboarding_transport::Topic;

use crate::fakes::{FakeCloud, ManualClock, MemJournal, MemTopic, TopicProgress};

/// The configuration engine-level tests start from: the defaults with short budgets, fast
/// retries and a few attempts per step.
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

/// The saga engine on in-memory fakes. `manual` is the clock unless the harness runs on real
/// time ([`EngineHarness::with_system_clock`]).
pub struct EngineHarness {
    pub journal: Arc<MemJournal>,
    pub topic: Arc<MemTopic>,
    pub cloud: Arc<FakeCloud>,
    pub clock: Arc<dyn Clock>,
    pub manual: Option<Arc<ManualClock>>,
    pub config: Arc<Config>,
}

impl Default for EngineHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineHarness {
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
            progress: Arc::new(TopicProgress(self.topic.clone())),
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

    /// Process one message the engine must refuse; returns the refusal.
    pub async fn refused(&self, engine: &Engine, incoming: Incoming) -> Rejection {
        let deadline = self.clock.now() + Duration::from_millis(self.config.saga.message_budget_ms);
        let handled = engine
            .handle(incoming, deadline, &WorkFlags::default())
            .await
            .expect("engine error");
        assert!(
            handled.continuation.is_none(),
            "a refusal schedules nothing"
        );
        handled.rejection.expect("the message should be refused")
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
