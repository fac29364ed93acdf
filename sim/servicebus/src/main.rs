//! `servicebus-sim`: run the Service Bus peer on loopback for local runs.
//!
//! Usage: `servicebus-sim [PORT] [ENTITY...]` where an entity is `queue`, `queue:sessions`
//! or `topic/sub`. Prints the connection string, then serves until interrupted. Touches only
//! the port it binds.

use std::time::Duration;

use servicebus_sim::{EntityConfig, PeerConfig, ServiceBusPeer, TopicConfig};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt::init();
    let mut args = std::env::args().skip(1).peekable();
    let port: u16 = match args.peek().and_then(|a| a.parse().ok()) {
        Some(p) => {
            args.next();
            p
        }
        None => 5672,
    };
    let mut config = PeerConfig::default();
    for entity in args {
        if let Some((topic, sub)) = entity.split_once('/') {
            config.topics.push(TopicConfig {
                name: topic.into(),
                duplicate_window: None,
                subscriptions: vec![EntityConfig::queue(sub)],
            });
        } else if let Some(queue) = entity.strip_suffix(":sessions") {
            config.queues.push(
                EntityConfig::queue(queue)
                    .with_sessions()
                    .duplicate_detection(Duration::from_secs(600)),
            );
        } else {
            config.queues.push(EntityConfig::queue(entity));
        }
    }
    let addr = format!("127.0.0.1:{port}")
        .parse()
        .map_err(std::io::Error::other)?;
    let peer = ServiceBusPeer::start_on(addr, config).await?;
    println!("{}", peer.connection_string());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
