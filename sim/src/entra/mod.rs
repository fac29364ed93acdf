//! The Entra ID simulator: the Microsoft identity platform's token endpoint
//! (`POST /{tenant}/oauth2/v2.0/token`, client credentials with a federated client assertion),
//! so the worker's real credential code (`azure_identity`'s workload identity) runs end to end
//! on loopback. HTTPS only, because `azure_identity` refuses an authority host that is not:
//! [`tls`] makes a test CA at start, whose PEM tests get from [`EntraSim::ca_pem`].
//!
//! Applications come from two places: registrations ([`AppRegistration`], given at start in
//! [`EntraOptions::apps`] or added at run time with [`EntraSim::register_app`] or
//! `POST /_sim/entra/apps`), and the ARM simulator's user-assigned identities with their
//! federated identity credentials, read from its state in this process
//! ([`crate::arm::ArmSim::federated_identity`]). A credential created or changed less than the
//! propagation delay ago is not matched yet (AADSTS70021), as in Entra, where propagation takes
//! seconds to a minute or two; registrations given at start have propagated already.
//!
//! What is checked, and what is not: the assertion's claims are read (`iss`, `sub`, `aud`,
//! `exp`, `nbf`) but its **signature is not verified** — Entra would fetch the issuer's OIDC
//! keys; the simulator trusts whoever holds a token with the right claims. Everything else
//! follows Entra ([`token`]), with Entra's error codes and error bodies ([`errors`]).
//!
//! Access tokens ([`issue`]) are JWTs signed with a key made at start; [`TokenVerifier`] lets
//! the ARM simulator accept exactly these ([`crate::arm::ArmSim::require_tokens`]).
//!
//! For tests ([`admin`]): `GET /_sim/entra/requests` (every token request: time, tenant, client
//! id, scope, outcome — never a token or an assertion), `POST /_sim/entra/faults` (Entra
//! unavailable for a while), `POST /_sim/entra/apps`, `POST /_sim/entra/reset`; the same are
//! methods of [`EntraSim`]. It touches nothing outside its own state and, read-only, the ARM
//! simulator's.

mod admin;
mod errors;
mod issue;
pub mod jwt;
mod tls;
mod token;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::arm::ArmSim;
pub use issue::{AccessClaims, TokenGrant, TokenRejection, TokenVerifier};
pub use token::JWT_BEARER;

/// The audience Kubernetes projects workload identity tokens for, and Entra expects.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Lifetime of issued access tokens unless configured (Entra's usual hour).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
const MAX_RECORDED: usize = 10_000;

/// How the Entra simulator runs.
#[derive(Debug, Clone)]
pub struct EntraOptions {
    /// Where it listens; loopback only, port 0 for any free port.
    pub addr: SocketAddr,
    /// Applications that exist from the start, their credentials already propagated.
    pub apps: Vec<AppRegistration>,
    /// How long a new or changed federated credential stays unmatched (default 0; real Entra
    /// takes seconds to a minute or two).
    pub propagation: Duration,
    /// Lifetime of the access tokens it issues (`expires_in`).
    pub token_lifetime: Duration,
}

impl Default for EntraOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            apps: Vec::new(),
            propagation: Duration::ZERO,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
        }
    }
}

/// An application with one federated identity credential. Registering the same client id again
/// adds another credential to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppRegistration {
    pub client_id: String,
    /// The tenant it lives in (`None`: any tenant id it is asked for in).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// The credential: the assertion's `iss` and `sub` must equal these.
    pub issuer: String,
    pub subject: String,
    /// One of these must be among the assertion's `aud` (default `api://AzureADTokenExchange`).
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
    /// The service principal's object id, the tokens' `oid` (default: derived from the client id).
    #[serde(default)]
    pub object_id: Option<String>,
}

fn default_audiences() -> Vec<String> {
    vec![TOKEN_EXCHANGE_AUDIENCE.to_string()]
}

impl AppRegistration {
    /// In any tenant, audience `api://AzureADTokenExchange`.
    pub fn new(
        client_id: impl Into<String>,
        issuer: impl Into<String>,
        subject: impl Into<String>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            tenant_id: None,
            issuer: issuer.into(),
            subject: subject.into(),
            audiences: default_audiences(),
            object_id: None,
        }
    }

    fn object_id(&self) -> String {
        self.object_id.clone().unwrap_or_else(|| {
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, self.client_id.as_bytes()).to_string()
        })
    }

    fn check(&self) -> Result<(), String> {
        if self.client_id.trim().is_empty() || self.issuer.is_empty() || self.subject.is_empty() {
            return Err("clientId, issuer and subject must not be empty".into());
        }
        if self.audiences.is_empty() {
            return Err("at least one audience".into());
        }
        Ok(())
    }
}

/// `CLIENT_ID=ISSUER|SUBJECT`, the `--entra-app` flag.
impl FromStr for AppRegistration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (client_id, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' is not CLIENT_ID=ISSUER|SUBJECT"))?;
        let (issuer, subject) = rest
            .split_once('|')
            .ok_or_else(|| format!("'{s}' is not CLIENT_ID=ISSUER|SUBJECT"))?;
        let app = AppRegistration::new(client_id.trim(), issuer.trim(), subject.trim());
        app.check().map(|()| app)
    }
}

/// One token request as the log shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequestRecord {
    pub time: DateTime<Utc>,
    /// The tenant in the path.
    pub tenant: String,
    pub client_id: String,
    pub scope: String,
    /// `ok`, or the AADSTS code refused with (e.g. `AADSTS70021`; `AADSTS90033` for an
    /// injected outage).
    pub outcome: String,
    pub status: u16,
    /// The assertion's `iss` and `sub`, when it could be read.
    pub assertion_issuer: Option<String>,
    pub assertion_subject: Option<String>,
}

/// An application as the token endpoint matches it, from a registration or an ARM identity.
#[derive(Debug, Clone)]
struct App {
    client_id: String,
    tenant_id: Option<String>,
    object_id: String,
    mi_resource_id: Option<String>,
    credentials: Vec<Credential>,
}

#[derive(Debug, Clone)]
struct Credential {
    issuer: String,
    subject: String,
    audiences: Vec<String>,
    /// `None`: propagated from the start.
    since: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Outage {
    until: Instant,
    status: StatusCode,
}

/// The simulator's state and settings.
#[derive(Debug)]
pub struct EntraSim {
    url: String,
    ca_pem: String,
    issuer: issue::Issuer,
    verifier: TokenVerifier,
    arm: Option<Arc<ArmSim>>,
    propagation: Mutex<Duration>,
    token_lifetime: Mutex<Duration>,
    /// Registrations with when they were made (`None`: given at start).
    apps: Mutex<Vec<(AppRegistration, Option<Instant>)>>,
    requests: Mutex<VecDeque<TokenRequestRecord>>,
    outage: Mutex<Option<Outage>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the state consistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EntraSim {
    /// `https://127.0.0.1:PORT`: the authority host to give `azure_identity`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// PEM of the CA that signed the server's certificate; clients must trust it.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Checks this simulator's access tokens (for resource servers like the ARM simulator).
    pub fn verifier(&self) -> TokenVerifier {
        self.verifier.clone()
    }

    /// Adds an application, or a credential to one; it propagates like a new credential.
    pub fn register_app(&self, app: AppRegistration) -> Result<(), String> {
        app.check()?;
        lock(&self.apps).push((app, Some(Instant::now())));
        Ok(())
    }

    /// The registrations (not the ARM identities).
    pub fn apps(&self) -> Vec<AppRegistration> {
        lock(&self.apps).iter().map(|(a, _)| a.clone()).collect()
    }

    pub fn set_propagation(&self, delay: Duration) {
        *lock(&self.propagation) = delay;
    }

    pub fn propagation(&self) -> Duration {
        *lock(&self.propagation)
    }

    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *lock(&self.token_lifetime) = lifetime;
    }

    pub fn token_lifetime(&self) -> Duration {
        *lock(&self.token_lifetime)
    }

    /// Entra is down for `duration`: token requests get `status` (503, 500, 429…) with
    /// Retry-After. A zero duration ends an outage.
    pub fn set_unavailable(&self, duration: Duration, status: StatusCode) {
        *lock(&self.outage) = (!duration.is_zero()).then(|| Outage {
            until: Instant::now() + duration,
            status,
        });
    }

    /// The status and Retry-After seconds of an outage in force.
    fn outage(&self) -> Option<(StatusCode, u64)> {
        let now = Instant::now();
        let outage = (*lock(&self.outage)).filter(|o| o.until > now)?;
        let left = outage
            .until
            .duration_since(now)
            .as_secs_f64()
            .ceil()
            .max(1.0) as u64;
        Some((outage.status, left))
    }

    /// Every token request since start or reset (the last 10 000), oldest first.
    pub fn requests(&self) -> Vec<TokenRequestRecord> {
        lock(&self.requests).iter().cloned().collect()
    }

    fn record(&self, record: TokenRequestRecord) {
        let mut log = lock(&self.requests);
        if log.len() >= MAX_RECORDED {
            log.pop_front();
        }
        log.push_back(record);
    }

    /// Ends any outage, clears the request log and forgets the applications registered at run
    /// time (those given at start stay).
    pub fn reset(&self) {
        *lock(&self.outage) = None;
        lock(&self.requests).clear();
        lock(&self.apps).retain(|(_, at)| at.is_none());
    }

    /// Whether a registration names this domain as its tenant.
    fn knows_domain(&self, domain: &str) -> bool {
        lock(&self.apps).iter().any(|(a, _)| {
            a.tenant_id
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(domain))
        })
    }

    /// The application `client_id` in `tenant`: its registrations and the ARM identity with
    /// that client id, credentials merged.
    fn find_app(&self, tenant: &str, client_id: &str) -> Option<App> {
        let mut app: Option<App> = None;
        for (reg, since) in lock(&self.apps).iter() {
            let in_tenant = reg
                .tenant_id
                .as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case(tenant));
            if !in_tenant || !reg.client_id.eq_ignore_ascii_case(client_id) {
                continue;
            }
            let app = app.get_or_insert_with(|| App {
                client_id: reg.client_id.clone(),
                tenant_id: reg.tenant_id.clone(),
                object_id: reg.object_id(),
                mi_resource_id: None,
                credentials: Vec::new(),
            });
            app.credentials.push(Credential {
                issuer: reg.issuer.clone(),
                subject: reg.subject.clone(),
                audiences: reg.audiences.clone(),
                since: *since,
            });
        }
        let identity = self
            .arm
            .as_ref()
            .and_then(|arm| arm.federated_identity(client_id))
            .filter(|mi| mi.tenant_id.eq_ignore_ascii_case(tenant));
        if let Some(mi) = identity {
            let app = app.get_or_insert_with(|| App {
                client_id: mi.client_id.clone(),
                tenant_id: Some(mi.tenant_id.clone()),
                object_id: mi.principal_id.clone(),
                mi_resource_id: None,
                credentials: Vec::new(),
            });
            app.object_id = mi.principal_id;
            app.mi_resource_id = Some(mi.id);
            app.credentials
                .extend(mi.credentials.into_iter().map(|c| Credential {
                    issuer: c.issuer,
                    subject: c.subject,
                    audiences: c.audiences,
                    since: Some(c.changed),
                }));
        }
        app
    }
}

/// Starts the simulator's HTTPS server on `options.addr`; `arm` is the ARM simulator whose
/// identities it honours. The task serves until aborted.
pub async fn start(
    options: &EntraOptions,
    arm: Option<Arc<ArmSim>>,
) -> std::io::Result<(Arc<EntraSim>, tokio::task::JoinHandle<()>)> {
    if !options.addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the Entra simulator only listens on loopback; {} is not a loopback address",
                options.addr
            ),
        ));
    }
    for app in &options.apps {
        app.check().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("Entra app: {e}"))
        })?;
    }
    let tls = tls::ServerTls::generate()?;
    let tcp = tokio::net::TcpListener::bind(options.addr).await?;
    let addr = tcp.local_addr()?;
    let url = format!("https://{addr}");
    let signer = jwt::Signer::random();
    let sim = Arc::new(EntraSim {
        verifier: TokenVerifier {
            signer: signer.clone(),
            authority: format!("{url}/"),
        },
        issuer: issue::Issuer { signer },
        url,
        ca_pem: tls.ca_pem.clone(),
        arm,
        propagation: Mutex::new(options.propagation),
        token_lifetime: Mutex::new(options.token_lifetime),
        apps: Mutex::new(options.apps.iter().map(|a| (a.clone(), None)).collect()),
        requests: Mutex::new(VecDeque::new()),
        outage: Mutex::new(None),
    });
    let app = router(sim.clone());
    let listener = tls::TlsListener::new(tcp, &tls);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "Entra simulator stopped");
        }
    });
    Ok((sim, task))
}

/// The simulator's HTTP API.
fn router(sim: Arc<EntraSim>) -> axum::Router {
    axum::Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token::token))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(admin::openid_configuration),
        )
        .route(
            "/_sim/entra/apps",
            get(admin::list_apps).post(admin::add_app),
        )
        .route(
            "/_sim/entra/faults",
            post(admin::set_faults).delete(admin::clear_faults),
        )
        .route("/_sim/entra/requests", get(admin::requests))
        .route("/_sim/entra/reset", post(admin::reset))
        .fallback(admin::not_found)
        .with_state(sim)
}
