//! The AMQP connections to the namespace: opening one (TLS, or plain AMQP for the emulator; with
//! a connection string or an Entra credential) and keeping idle ones for reuse.
//!
//! Touches the network: AMQP to the namespace in the settings, nothing else.

use std::sync::{Arc, Mutex as StdMutex, MutexGuard};

use azservicebus::authorization::AzureNamedKeyCredential;
use azservicebus::client::service_bus_client::WithCustomRetryPolicy;
use azservicebus::core::BasicRetryPolicy;
use azservicebus::{ServiceBusClient, ServiceBusClientOptions, ServiceBusRetryOptions};

use super::errors::transport_error;
use super::settings::{
    AzureCoreCredential, ServiceBusAuth, ServiceBusSettings, emulator_endpoint_with_port,
    is_development_emulator,
};
use crate::TransportError;

pub(super) type Client = ServiceBusClient<BasicRetryPolicy>;

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

    pub(super) fn put(&self, client: Client) {
        if !client.is_closed() {
            lock(&self.idle).push(client);
        }
    }
}
