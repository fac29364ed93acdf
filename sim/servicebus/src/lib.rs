//! servicebus-sim: a loopback AMQP 1.0 peer that behaves like Azure Service Bus as Microsoft
//! documents it ("AMQP 1.0 in Azure Service Bus and Event Hubs protocol guide" and
//! "request-response-based operations"), for tests of the worker's Service Bus transport and
//! of Microsoft's own SDKs against the same peer.
//!
//! May touch: the loopback TCP listener it binds and the connections it accepts; no files, no
//! environment. Entities are configured at start ([`PeerConfig`]); faults are switched by the
//! tests through [`ServiceBusPeer::faults`].
//!
//! Layout: `queue` (the entity state machine, pure), `entities` (namespace, addresses,
//! annotations), `cbs` (token checks, pure), `wire` (frames), `connection` (one client),
//! `links` (attach, credit, deliveries, settlement), `requests` (`$cbs`, `$management`),
//! `faults` (the switches).

mod connection;
mod links;
mod requests;

pub mod cbs;
pub mod entities;
pub mod faults;
pub mod queue;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use cbs::JwtCheck;
pub use entities::{EntityConfig, TopicConfig};
pub use faults::Faults;

/// What the peer serves.
#[derive(Clone)]
pub struct PeerConfig {
    /// SAS key name and key that tokens must be signed with.
    pub key_name: String,
    pub key: String,
    pub queues: Vec<EntityConfig>,
    pub topics: Vec<TopicConfig>,
    /// Largest message accepted (Service Bus Standard: 256 KiB).
    pub max_message_size: u64,
    /// How long an accept of the next session waits when the client does not say
    /// (`com.microsoft:timeout`); the service's own wait is about a minute.
    pub session_wait: Duration,
    /// Checks JWT bearer tokens (`type` = `jwt`); without it they are accepted until their
    /// `exp`.
    pub jwt_check: Option<JwtCheck>,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("key_name", &self.key_name)
            .field("queues", &self.queues)
            .field("topics", &self.topics)
            .finish()
    }
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            key_name: "RootManageSharedAccessKey".into(),
            key: "SAS_KEY_VALUE".into(),
            queues: Vec::new(),
            topics: Vec::new(),
            max_message_size: 256 * 1024,
            session_wait: Duration::from_secs(60),
            jwt_check: None,
        }
    }
}

/// A running peer on 127.0.0.1. Dropping it stops accepting and closes its connections.
#[derive(Debug)]
pub struct ServiceBusPeer {
    addr: SocketAddr,
    broker: Arc<entities::Broker>,
    config: Arc<PeerConfig>,
    accept: JoinHandle<()>,
}

impl ServiceBusPeer {
    /// Start on a free loopback port.
    pub async fn start(config: PeerConfig) -> std::io::Result<Self> {
        Self::start_on(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            config,
        )
        .await
    }

    pub async fn start_on(addr: SocketAddr, config: PeerConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let broker = entities::Broker::new(&config.queues, &config.topics, config.max_message_size);
        let config = Arc::new(config);
        let (b, c) = (broker.clone(), config.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (b, c) = (b.clone(), c.clone());
                let mut drops = b.faults.drops();
                tokio::spawn(async move {
                    tokio::select! {
                        result = connection::serve(stream, b, c) => {
                            if let Err(e) = result {
                                tracing::debug!(%peer, error = %e, "connection ended");
                            }
                        }
                        // A connection still in SASL or open also goes when told to.
                        _ = drops.changed() => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            broker,
            config,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The connection string an emulator user would use, with this peer's port.
    pub fn connection_string(&self) -> String {
        format!(
            "Endpoint=sb://127.0.0.1:{};SharedAccessKeyName={};SharedAccessKey={};UseDevelopmentEmulator=true;",
            self.addr.port(),
            self.config.key_name,
            self.config.key
        )
    }

    pub fn faults(&self) -> &Faults {
        &self.broker.faults
    }

    /// Expire every message and session lock now (the fault "locks expire early").
    pub fn expire_locks_now(&self) {
        self.broker.expire_all_locks(chrono::Utc::now());
    }

    /// Create a subscription of `topic` now (the infrastructure's job on a real namespace).
    /// False when the topic does not exist.
    pub fn create_subscription(&self, topic: &str, subscription: EntityConfig) -> bool {
        self.broker.create_subscription(topic, &subscription)
    }

    /// (active, scheduled, dead-lettered) of a queue or `topic/subscriptions/sub`.
    pub fn counts(&self, entity: &str) -> Option<(usize, usize, usize)> {
        self.broker
            .lock()
            .queues
            .get(&entity.to_ascii_lowercase())
            .map(|q| q.counts(chrono::Utc::now()))
    }
}

impl Drop for ServiceBusPeer {
    fn drop(&mut self) {
        self.accept.abort();
        self.broker.faults.drop_connections();
    }
}
