//! Where the queue and topic live and how to reach them: [`ServiceBusSettings`], the
//! [`ServiceBusAuth`] variants, and [`AzureCoreCredential`], which lends our [`TokenCredential`]
//! to azservicebus.
//!
//! Pure: nothing here touches the network or reads the environment (a credential only fetches a
//! token when azservicebus asks for one).

use std::sync::Arc;
use std::time::Duration;

use onboarding_core::TokenCredential;

use super::SERVICE_BUS_SCOPE;
use crate::TransportError;

/// How the transport authenticates to the namespace.
#[derive(Clone)]
pub enum ServiceBusAuth {
    /// `Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...`. With
    /// `UseDevelopmentEmulator=true` the connection is plain AMQP to the local emulator.
    ConnectionString(String),
    /// An Entra credential (workload identity, Azure CLI), possibly in another Entra tenant than
    /// the cluster's. The namespace must grant its principal a Service Bus data role.
    Credential(Arc<dyn TokenCredential>),
}

impl std::fmt::Debug for ServiceBusAuth {
    // A connection string carries a key: it must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceBusAuth::ConnectionString(_) => f.write_str("ConnectionString(<redacted>)"),
            ServiceBusAuth::Credential(c) => f.debug_tuple("Credential").field(c).finish(),
        }
    }
}

/// Where the queue and topic live and how to reach them.
#[derive(Debug, Clone)]
pub struct ServiceBusSettings {
    /// Fully qualified namespace, `<name>.servicebus.windows.net`. With a connection string its
    /// `Endpoint` wins and this is only used in messages.
    pub namespace: String,
    /// The session-enabled commands queue.
    pub queue: String,
    /// The events topic.
    pub topic: String,
    pub auth: ServiceBusAuth,
    /// The scope Entra tokens are asked for ([`SERVICE_BUS_SCOPE`] in the public cloud; the
    /// credential's cloud names another in Azure Government or China). azservicebus always asks
    /// for the public one, so the bridge asks the credential for this instead.
    pub scope: String,
    /// Time allowed for one try of an AMQP operation (connect, attach, send, settle).
    pub operation_timeout: Duration,
    /// Retries azservicebus makes on transient AMQP failures of a send before reporting them
    /// (receivers get none: see `pool`).
    pub max_retries: u32,
    /// How long one accept of the next session (an AMQP attach the broker answers when a session
    /// frees up or after its own wait, about a minute) may take before it is taken for hung:
    /// its connection is closed and the next receive accepts anew. Longer than the broker's
    /// wait. (Attaches the broker answers at once, the dead-letter and subscription receivers,
    /// get 10 s and then a new connection.)
    pub accept_deadline: Duration,
    /// Senders and the dead-letter receiver are recreated once older than this, ahead of the
    /// token that authorised them running out (azservicebus refreshes a link's token only at
    /// its expiry and never retries a failed refresh; Entra and SAS tokens last an hour or
    /// more). A link the broker detached anyway is recreated on its next use.
    pub link_max_age: Duration,
}

impl ServiceBusSettings {
    pub fn new(
        namespace: impl Into<String>,
        queue: impl Into<String>,
        topic: impl Into<String>,
        auth: ServiceBusAuth,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            queue: queue.into(),
            topic: topic.into(),
            auth,
            scope: SERVICE_BUS_SCOPE.to_string(),
            operation_timeout: Duration::from_secs(60),
            max_retries: 3,
            accept_deadline: Duration::from_secs(90),
            link_max_age: Duration::from_secs(30 * 60),
        }
    }

    pub(super) fn validate(&self) -> Result<(), TransportError> {
        let mut problems = Vec::new();
        if self.queue.trim().is_empty() {
            problems.push("the queue name is empty");
        }
        if self.topic.trim().is_empty() {
            problems.push("the topic name is empty");
        }
        if self.accept_deadline.is_zero() {
            problems.push("the accept deadline is zero");
        }
        if self.link_max_age.is_zero() {
            problems.push("the link max age is zero");
        }
        match &self.auth {
            ServiceBusAuth::Credential(_) if self.namespace.trim().is_empty() => {
                problems.push("the namespace is empty (expected <name>.servicebus.windows.net)")
            }
            ServiceBusAuth::ConnectionString(cs) if cs.trim().is_empty() => {
                problems.push("the connection string is empty")
            }
            _ => {}
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TransportError::Rejected(format!(
                "Service Bus settings are invalid: {}; fix the transport configuration",
                problems.join(", ")
            )))
        }
    }
}

/// True when a connection string targets the local Service Bus emulator (plain AMQP, no TLS).
pub fn is_development_emulator(connection_string: &str) -> bool {
    connection_string.split(';').any(|pair| {
        pair.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("UseDevelopmentEmulator")
                && v.trim().eq_ignore_ascii_case("true")
        })
    })
}

/// An emulator endpoint that names its port (`Endpoint=sb://127.0.0.1:5673;...`), with the
/// key it is signed with.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct EmulatorEndpoint {
    /// `host:port`, as the AMQP connection must dial it.
    pub(super) host_port: String,
    pub(super) key_name: String,
    pub(super) key: String,
}

impl std::fmt::Debug for EmulatorEndpoint {
    // The key must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorEndpoint")
            .field("host_port", &self.host_port)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

/// The endpoint of an emulator connection string when it carries an explicit port, which
/// azservicebus's connection-string parser would drop (it always dials 5672). `None` for
/// endpoints without a port or connection strings without a key name and key.
pub(super) fn emulator_endpoint_with_port(connection_string: &str) -> Option<EmulatorEndpoint> {
    let mut endpoint = None;
    let mut key_name = None;
    let mut key = None;
    for pair in connection_string.split(';') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "endpoint" => endpoint = Some(v),
            "sharedaccesskeyname" => key_name = Some(v.to_string()),
            // A base64 key may end in '=': split_once keeps everything after the first one.
            "sharedaccesskey" => key = Some(v.to_string()),
            _ => {}
        }
    }
    let endpoint = endpoint?;
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let host_port = rest.split('/').next().unwrap_or_default();
    let (host, port) = host_port.rsplit_once(':')?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return None;
    }
    Some(EmulatorEndpoint {
        host_port: host_port.to_string(),
        key_name: key_name?,
        key: key?,
    })
}

// ---------------------------------------------------------------------------------------------
// Credential bridge
// ---------------------------------------------------------------------------------------------

/// Our [`TokenCredential`] seen as the `azure_core` credential azservicebus takes, so the
/// Service Bus connection uses the same credential type (with its explicit Entra tenant and
/// client id) as every other Azure client of the worker.
#[derive(Debug, Clone)]
pub struct AzureCoreCredential {
    inner: Arc<dyn TokenCredential>,
    scope: String,
}

impl AzureCoreCredential {
    /// Tokens of `inner` for `scope`, whatever scope azservicebus asks for (always the public
    /// cloud's).
    pub fn new(inner: Arc<dyn TokenCredential>, scope: impl Into<String>) -> Self {
        Self {
            inner,
            scope: scope.into(),
        }
    }
}

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for AzureCoreCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let token = self
            .inner
            .token(&self.scope)
            .await
            .map_err(|e| azure_core::Error::new(azure_core::error::ErrorKind::Credential, e))?;
        let expires_on =
            azure_core::date::OffsetDateTime::from_unix_timestamp(token.expires_on.timestamp())
                .map_err(|e| {
                    azure_core::Error::new(azure_core::error::ErrorKind::DataConversion, e)
                })?;
        Ok(azure_core::credentials::AccessToken::new(
            token.token,
            expires_on,
        ))
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    #[test]
    fn the_emulator_is_recognised_from_its_connection_string() {
        assert!(is_development_emulator(
            "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
        ));
        assert!(is_development_emulator(
            "Endpoint=sb://localhost; usedevelopmentemulator = True"
        ));
        assert!(!is_development_emulator(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=v"
        ));
        assert!(!is_development_emulator(
            "Endpoint=sb://localhost;UseDevelopmentEmulator=false"
        ));
    }

    #[test]
    fn an_emulator_endpoint_keeps_its_port() {
        let e = emulator_endpoint_with_port(
            "Endpoint=sb://127.0.0.1:45123;SharedAccessKeyName=Root;SharedAccessKey=a2V5=;UseDevelopmentEmulator=true;",
        )
        .expect("a port");
        assert_eq!(e.host_port, "127.0.0.1:45123");
        assert_eq!(e.key_name, "Root");
        assert_eq!(e.key, "a2V5=");
        assert!(!format!("{e:?}").contains("a2V5"));
        assert_eq!(
            emulator_endpoint_with_port(
                "Endpoint=sb://localhost;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true;"
            ),
            None
        );
        assert_eq!(
            emulator_endpoint_with_port(
                "Endpoint=sb://localhost:notaport/;SharedAccessKeyName=k;SharedAccessKey=v"
            ),
            None
        );
    }

    #[test]
    fn connection_strings_never_reach_debug_output() {
        let auth = ServiceBusAuth::ConnectionString(
            "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=supersecret".into(),
        );
        let settings = ServiceBusSettings::new("x", "q", "t", auth);
        let text = format!("{settings:?}");
        assert!(!text.contains("supersecret"), "{text}");
        assert!(text.contains("redacted"));
    }

    #[test]
    fn settings_name_every_missing_part() {
        let settings =
            ServiceBusSettings::new("", " ", "", ServiceBusAuth::ConnectionString(String::new()));
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("queue name is empty"), "{err}");
        assert!(err.contains("topic name is empty"), "{err}");
        assert!(err.contains("connection string is empty"), "{err}");
    }

    #[derive(Debug)]
    struct FixedToken;

    #[async_trait::async_trait]
    impl TokenCredential for FixedToken {
        async fn token(
            &self,
            scope: &str,
        ) -> Result<onboarding_core::AccessToken, onboarding_core::AuthError> {
            if scope != SERVICE_BUS_SCOPE {
                return Err(onboarding_core::AuthError {
                    credential: "fixed".into(),
                    scope: scope.into(),
                    message: "unexpected scope".into(),
                    class: onboarding_core::ErrorClass::Permanent,
                });
            }
            Ok(onboarding_core::AccessToken {
                token: "tok-123".into(),
                expires_on: DateTime::<Utc>::from_timestamp(2_000_000_000, 0).unwrap(),
            })
        }
    }

    #[tokio::test]
    async fn the_bridge_asks_for_the_clouds_scope_whatever_azservicebus_asks_for() {
        use azure_core::credentials::TokenCredential as _;
        // FixedToken answers only the public scope: the bridge must pass the configured one.
        let bridged = AzureCoreCredential::new(Arc::new(FixedToken), SERVICE_BUS_SCOPE);
        let token = bridged
            .get_token(&["https://servicebus.azure.net/.default"], None)
            .await
            .unwrap();
        assert_eq!(token.token.secret(), "tok-123");
        assert_eq!(token.expires_on.unix_timestamp(), 2_000_000_000);
        let gov = AzureCoreCredential::new(
            Arc::new(FixedToken),
            "https://servicebus.usgovcloudapi.net/.default",
        );
        let err = gov
            .get_token(&["https://servicebus.azure.net/.default"], None)
            .await
            .unwrap_err();
        assert!(matches!(
            err.kind(),
            azure_core::error::ErrorKind::Credential
        ));
        assert!(format!("{err:?}").contains("usgovcloudapi"), "{err:?}");
    }
}
