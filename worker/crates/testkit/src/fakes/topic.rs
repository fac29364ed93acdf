//! [`MemTopic`]: an events topic that keeps what is published, and [`TopicProgress`], the
//! runner's progress sink (publish each progress event on a topic) for engine-level tests.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use onboarding_contract::CloudEvent;
use onboarding_saga::ProgressSink;
use onboarding_transport::envelope::event_message;
use onboarding_transport::{OutgoingMessage, Subscription, Topic, TransportError};

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
    async fn unsubscribe(&self, _s: &str) -> Result<(), TransportError> {
        Ok(())
    }
}

/// Publishes the saga's progress events on a topic, as the worker's runner does (a failed
/// publish is ignored: progress events are best effort).
#[derive(Debug)]
pub struct TopicProgress(pub Arc<dyn Topic>);

#[async_trait::async_trait]
impl ProgressSink for TopicProgress {
    async fn progress(&self, event: CloudEvent) {
        let _ = self.0.publish(event_message(&event)).await;
    }
}
