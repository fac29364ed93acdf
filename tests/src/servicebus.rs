//! The Service Bus side of [`ProcessHarness`](crate::ProcessHarness) ([`Settings::servicebus`]):
//! `servicebus-sim`, the AMQP 1.0 Service Bus peer, in the test process on a free loopback port,
//! with the entities `infra/` creates on a real namespace (the session-enabled commands queue,
//! the events topic and its subscriptions), and the worker's `[transport]` section pointing at
//! it with the emulator connection string.
//!
//! May touch: the loopback port the peer binds; nothing else (no files, no environment).
//!
//! Service Bus differs from the embedded transport in two ways the harness must bridge without
//! touching what the worker does: subscriptions are infrastructure (the transport opens only
//! existing ones), so the harness creates its own in the peer before subscribing; and AMQP has
//! no counts (`stats()` is refused with a connection string), so the harness reads them from the
//! peer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use onboarding_core::Secret;
use servicebus_sim::{EntityConfig, PeerConfig, ServiceBusPeer, TopicConfig};
use worker::config::{Config, TransportConfig};

use crate::Settings;

/// The commands queue, named as `infra/` names it.
pub const QUEUE: &str = "tenant-commands";
/// The events topic, named as `infra/` names it.
pub const TOPIC: &str = "tenant-events";
/// The subscription the worker configuration names (`transport.subscription`): what
/// `producer send --wait` falls back to when it cannot read the journal.
pub const SHARED_SUBSCRIPTION: &str = "producer";
/// The embedded transport's duplicate-detection window (its default), so both transports drop
/// the same resends.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// Start the peer with the harness's lock duration and delivery limit.
pub async fn start_peer(settings: &Settings) -> ServiceBusPeer {
    ServiceBusPeer::start(PeerConfig {
        queues: vec![
            EntityConfig::queue(QUEUE)
                .with_sessions()
                .lock_duration(Duration::from_secs(settings.lock_duration_secs))
                .max_delivery_count(settings.max_delivery_count)
                .duplicate_detection(DUPLICATE_WINDOW),
        ],
        topics: vec![TopicConfig {
            name: TOPIC.into(),
            duplicate_window: None,
            subscriptions: vec![EntityConfig::queue(SHARED_SUBSCRIPTION)],
        }],
        // The service holds an accept of the next session about a minute; a few seconds keeps
        // idle accepts turning over, so a session freed by a killed worker is taken promptly.
        session_wait: Duration::from_secs(5),
        ..PeerConfig::default()
    })
    .await
    .expect("start the Service Bus peer")
}

/// The worker's `[transport]` for the peer: kind `service_bus` with the emulator connection
/// string (which keeps the peer's port).
pub fn transport_config(peer: &ServiceBusPeer) -> TransportConfig {
    TransportConfig::ServiceBus {
        namespace: String::new(),
        queue: QUEUE.into(),
        topic: TOPIC.into(),
        subscription: SHARED_SUBSCRIPTION.into(),
        credential: None,
        connection_string: Some(Secret::new(peer.connection_string())),
    }
}

/// Write `config` (whose transport is [`transport_config`]) as the TOML file the binaries read.
/// The configuration serialises secrets as `<redacted>`, so the connection string is put back
/// into the document before it is written.
pub fn write_config(dir: &Path, name: &str, config: &Config, peer: &ServiceBusPeer) -> PathBuf {
    let mut doc = toml::Value::try_from(config).expect("the configuration as a TOML document");
    let transport = doc
        .get_mut("transport")
        .and_then(toml::Value::as_table_mut)
        .expect("a [transport] table");
    transport.insert(
        "connection_string".into(),
        toml::Value::String(peer.connection_string()),
    );
    let path = dir.join(name);
    std::fs::write(&path, onboarding_testkit::config::to_toml(&doc))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// Create a subscription of the events topic, as the infrastructure would.
pub fn create_subscription(peer: &ServiceBusPeer, name: &str) {
    assert!(
        peer.create_subscription(TOPIC, EntityConfig::queue(name)),
        "the peer has no topic {TOPIC}"
    );
}

/// Messages on the commands queue that are active, scheduled or locked (dead letters aside).
pub fn pending(peer: &ServiceBusPeer) -> usize {
    let (active, scheduled, _) = peer
        .counts(QUEUE)
        .unwrap_or_else(|| panic!("the peer has no queue {QUEUE}"));
    active + scheduled
}
