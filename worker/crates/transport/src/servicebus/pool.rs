//! The AMQP connections to the namespace: opening one (TLS, or plain AMQP for the emulator; with
//! a connection string or an Entra credential) and keeping idle ones for reuse.
//!
//! Touches the network: AMQP to the namespace in the settings, nothing else.

use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use azservicebus::authorization::AzureNamedKeyCredential;
use azservicebus::client::service_bus_client::WithCustomRetryPolicy;
use azservicebus::core::BasicRetryPolicy;
use azservicebus::{ServiceBusClient, ServiceBusClientOptions, ServiceBusRetryOptions};

use super::errors::{error_detail, is_dead_connection, transport_error};
use super::settings::{
    AzureCoreCredential, ServiceBusAuth, ServiceBusSettings, emulator_endpoint_with_port,
    is_development_emulator,
};
use crate::TransportError;

pub(super) type Client = ServiceBusClient<BasicRetryPolicy>;

/// How long closing a link or connection may take before we drop it instead: closing waits for
/// the broker's answer, which a broken connection never sends.
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Close a connection, or drop it when closing does not finish in [`CLOSE_WAIT`].
pub(super) async fn close_client(client: Client) {
    match tokio::time::timeout(CLOSE_WAIT, client.dispose()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "closing a Service Bus connection"),
        Err(_) => tracing::debug!("closing a Service Bus connection timed out; dropped it"),
    }
}

/// Opening a link on a borrowed connection (see [`Pool::open_link`]).
pub(super) type LinkFuture<'c, T> =
    Pin<Box<dyn Future<Output = Result<T, azure_core::Error>> + Send + 'c>>;

/// How long an attach may go unanswered (see [`Pool::open_link`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum AttachWait {
    /// The broker answers at once (a plain receiver): silence this long means a connection
    /// that is gone, and the link is tried once more on a new one.
    AnsweredAtOnce(Duration),
    /// The broker holds the attach until it can answer (an accept of the next session waits
    /// for a session to free up, about a minute): silence is no sign of a dead connection.
    HeldByTheBroker(Duration),
}

/// How long an attach the broker answers at once may go unanswered. A healthy broker answers in
/// milliseconds; a connection whose AMQP session ended under it never sends the attach.
pub(super) const ATTACH_WAIT: Duration = Duration::from_secs(10);

/// What opening a link on a pooled connection came to (see [`Pool::open_link`]).
pub(super) enum Opened<T> {
    Link(T),
    /// The broker refused it, or the connection failed twice.
    Failed(azure_core::Error),
    /// No connection or no answer within the deadline; the connection was closed, which makes
    /// the broker drop the attach too (azservicebus would wait for it forever).
    TimedOut,
}

pub(super) fn lock<T>(m: &StdMutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short critical sections leaves plain data behind.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// fe2o3-amqp builds its TLS config from rustls's process-wide provider; the workspace compiles
/// two (ring and aws-lc-rs), so without an installed default rustls would panic. The binaries
/// install ring at startup; this covers library users and tests.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another installer is fine: a provider is then installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// AMQP connections. azservicebus serialises link creation per connection (and an accept of the
/// next session holds that lock until a session frees up), so concurrent accepts each take a
/// connection of their own; idle ones are kept for reuse.
///
/// `max_retries` is what azservicebus may retry (and, before a retry, recover) on its own. The
/// receivers' pool has none: azservicebus "recovers" a failed receiver by re-attaching it, after
/// which settling a message received before answers success without the broker having seen
/// anything (the lock went with the old link). The transport recovers receivers itself, with a
/// new link and the held locks reported lost. Senders keep azservicebus's retries: the broker
/// confirms every send, so a retried send cannot claim what did not happen.
pub(super) struct Pool {
    pub(super) settings: Arc<ServiceBusSettings>,
    pub(super) max_retries: u32,
    pub(super) idle: StdMutex<Vec<Client>>,
}

impl Pool {
    pub(super) async fn connect(&self) -> Result<Client, TransportError> {
        ensure_crypto_provider();
        let s = &self.settings;
        let retry_options = ServiceBusRetryOptions {
            try_timeout: s.operation_timeout,
            max_retries: self.max_retries,
            ..ServiceBusRetryOptions::default()
        };
        let options = ServiceBusClientOptions {
            retry_options,
            ..ServiceBusClientOptions::default()
        };
        let result = match &s.auth {
            ServiceBusAuth::ConnectionString(cs) if is_development_emulator(cs) => {
                match emulator_endpoint_with_port(cs) {
                    // azservicebus drops the port of a connection string's endpoint and always
                    // dials 5672; a named-key credential keeps `host:port` as given.
                    Some(endpoint) => {
                        WithCustomRetryPolicy::<BasicRetryPolicy>::unsecured()
                            .new_from_named_key_credential(
                                endpoint.host_port,
                                AzureNamedKeyCredential::new(endpoint.key_name, endpoint.key),
                                options,
                            )
                            .await
                    }
                    None => {
                        WithCustomRetryPolicy::<BasicRetryPolicy>::unsecured()
                            .new_from_connection_string(cs.as_str(), options)
                            .await
                    }
                }
            }
            ServiceBusAuth::ConnectionString(cs) => {
                ServiceBusClient::new_from_connection_string(cs.as_str(), options).await
            }
            ServiceBusAuth::Credential(credential) => {
                let bridged: Arc<dyn azure_core::credentials::TokenCredential> =
                    Arc::new(AzureCoreCredential::new(credential.clone(), &s.scope));
                ServiceBusClient::new_from_token_credential(s.namespace.clone(), bridged, options)
                    .await
            }
        };
        result.map_err(|e| transport_error(&e, "opening an AMQP connection", &s.namespace, ""))
    }

    pub(super) async fn take(&self) -> Result<Client, TransportError> {
        let idle = lock(&self.idle).pop();
        match idle {
            Some(client) if !client.is_closed() => Ok(client),
            _ => self.connect().await,
        }
    }

    /// Open a link with `open` on an idle connection (or a new one) within `wait`. An idle
    /// connection the broker dropped meanwhile fails its first link with a session or
    /// connection error, or (when its AMQP session ended under it) never sends the attach at
    /// all; it is closed and `open` runs once more on a new connection, so a broker restart
    /// costs the caller nothing. The connection goes back to the pool unless it failed or
    /// timed out.
    pub(super) async fn open_link<T>(
        &self,
        wait: AttachWait,
        mut open: impl for<'c> FnMut(&'c mut Client) -> LinkFuture<'c, T>,
    ) -> Result<Opened<T>, TransportError> {
        let (deadline, silence_means_dead) = match wait {
            AttachWait::AnsweredAtOnce(d) => (d, true),
            AttachWait::HeldByTheBroker(d) => (d, false),
        };
        let mut fresh = false;
        loop {
            let client = tokio::time::timeout(deadline, async {
                if fresh {
                    self.connect().await
                } else {
                    self.take().await
                }
            })
            .await;
            let Ok(client) = client else {
                return Ok(Opened::TimedOut);
            };
            let mut client = client?;
            match tokio::time::timeout(deadline, open(&mut client)).await {
                Err(_) => {
                    close_client(client).await;
                    if fresh || !silence_means_dead {
                        return Ok(Opened::TimedOut);
                    }
                    tracing::debug!(
                        ?deadline,
                        "an attach on a pooled Service Bus connection got no answer; opening the link on a new one"
                    );
                }
                Ok(Ok(link)) => {
                    self.put(client);
                    return Ok(Opened::Link(link));
                }
                Ok(Err(e)) => {
                    let (detail, debug) = error_detail(&e);
                    if !is_dead_connection(&format!("{detail} {debug}")) {
                        self.put(client);
                        return Ok(Opened::Failed(e));
                    }
                    close_client(client).await;
                    if fresh {
                        return Ok(Opened::Failed(e));
                    }
                    tracing::debug!(error = %detail, "a pooled Service Bus connection was gone; opening the link on a new one");
                }
            }
            fresh = true;
        }
    }

    pub(super) fn put(&self, client: Client) {
        if !client.is_closed() {
            lock(&self.idle).push(client);
        }
    }
}
