//! The Entra ID simulator over real HTTPS, trusted through the CA it makes at start: the token
//! endpoint exchanges workload identity assertions like Entra does (and refuses them with
//! Entra's codes and error shape), honours the ARM simulator's identities after propagation,
//! goes down on request, and its tokens are what ARM requires when told to.
#![allow(clippy::unwrap_used)] // tests may unwrap (developers' guide)

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{Value, json};
use sim::SimOptions;
use sim::arm::SIM_TENANT_ID;
use sim::entra::{AppRegistration, EntraOptions, JWT_BEARER, TOKEN_EXCHANGE_AUDIENCE, jwt};

const ISSUER: &str = "https://oidc.example/cluster-1";
const SUBJECT: &str = "system:serviceaccount:onboarding:worker";
const ARM_SCOPE: &str = "https://management.azure.com/.default";

async fn start_with(entra: EntraOptions, arm_require_tokens: bool) -> sim::Running {
    start(SimOptions {
        entra: Some(entra),
        arm_require_tokens,
        ..SimOptions::default()
    })
    .await
}

/// A static app `app-1` with one credential for ISSUER/SUBJECT.
fn with_app() -> EntraOptions {
    EntraOptions {
        apps: vec![AppRegistration::new("app-1", ISSUER, SUBJECT)],
        ..EntraOptions::default()
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A projected service-account token as Kubernetes makes it (audience as an array), expiring
/// `exp_in` seconds from now.
fn assertion(issuer: &str, subject: &str, exp_in: i64) -> String {
    let now = now_secs();
    jwt::unsigned(&json!({
        "iss": issuer,
        "sub": subject,
        "aud": [TOKEN_EXCHANGE_AUDIENCE],
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + exp_in,
    }))
}

struct Entra {
    http: reqwest::Client,
    base: String,
}

impl Entra {
    fn new(running: &sim::Running) -> Self {
        let ca =
            reqwest::Certificate::from_pem(running.entra_ca_pem().unwrap().as_bytes()).unwrap();
        Self {
            http: reqwest::Client::builder()
                .tls_certs_only([ca])
                .build()
                .unwrap(),
            base: running.entra_url().unwrap(),
        }
    }

    async fn token(
        &self,
        tenant: &str,
        client_id: &str,
        assertion: &str,
        scope: &str,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let form = [
            ("client_id", client_id),
            ("scope", scope),
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ];
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = self
            .http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("client-request-id", "corr-1")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.unwrap())
    }

    /// The access token for ARM, asserting it was granted.
    async fn arm_token(&self, client_id: &str) -> String {
        let (s, _, body) = self
            .token(
                SIM_TENANT_ID,
                client_id,
                &assertion(ISSUER, SUBJECT, 600),
                ARM_SCOPE,
            )
            .await;
        assert_eq!(s, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap().status().as_u16()
    }

    async fn requests(&self) -> Value {
        let url = format!("{}/_sim/entra/requests", self.base);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Asserts Entra's error shape and returns the description.
fn entra_error(body: &Value, error: &str, code: u64) -> String {
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let description = body["error_description"].as_str().unwrap().to_string();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    let trace = body["trace_id"].as_str().unwrap();
    let timestamp = body["timestamp"].as_str().unwrap();
    assert!(
        description.ends_with(&format!(
            " Trace ID: {trace} Correlation ID: corr-1 Timestamp: {timestamp}"
        )),
        "{description}"
    );
    assert_eq!(body["correlation_id"], "corr-1");
    assert_eq!(
        body["error_uri"],
        format!("https://login.microsoftonline.com/error?code={code}")
    );
    description
}

#[tokio::test]
async fn a_matching_assertion_gets_a_token_whose_claims_carry_the_client_id_and_audience() {
    let running = start_with(with_app(), false).await;
    assert!(
        running
            .entra_url()
            .unwrap()
            .starts_with("https://127.0.0.1:")
    );
    let entra = Entra::new(&running);
    let (s, _, body) = entra
        .token(
            SIM_TENANT_ID,
            "app-1",
            &assertion(ISSUER, SUBJECT, 600),
            ARM_SCOPE,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["ext_expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();
    let claims = jwt::claims_unverified(token).unwrap();
    assert_eq!(claims["appid"], "app-1");
    assert_eq!(claims["azp"], "app-1");
    assert_eq!(claims["aud"], "https://management.azure.com");
    assert_eq!(claims["tid"], SIM_TENANT_ID);
    assert_eq!(
        claims["iss"],
        format!("https://sts.windows.net/{SIM_TENANT_ID}/")
    );
    let exp = claims["exp"].as_i64().unwrap();
    assert!((exp - now_secs() - 3600).abs() <= 5, "exp {exp}");
    // The log proves the request came here, and never shows a token or an assertion.
    let log = entra.requests().await;
    assert_eq!(log[0]["clientId"], "app-1");
    assert_eq!(log[0]["outcome"], "ok");
    assert_eq!(log[0]["scope"], ARM_SCOPE);
    assert_eq!(log[0]["tenant"], SIM_TENANT_ID);
    assert!(!log.to_string().contains(token.split('.').nth(1).unwrap()));
    assert_eq!(running.entra.as_ref().unwrap().requests().len(), 1);
}

#[tokio::test]
async fn a_wrong_subject_is_refused_with_aadsts70021_in_entras_error_shape() {
    let running = start_with(with_app(), false).await;
    let entra = Entra::new(&running);
    let other = "system:serviceaccount:onboarding:someone-else";
    let (s, headers, body) = entra
        .token(
            SIM_TENANT_ID,
            "app-1",
            &assertion(ISSUER, other, 600),
            ARM_SCOPE,
        )
        .await;
    assert_eq!(s, 400);
    assert!(headers.contains_key("x-ms-request-id"));
    let description = entra_error(&body, "invalid_request", 70021);
    assert!(
        description.starts_with(&format!(
            "AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: '{ISSUER}'. Assertion Subject: '{other}'. Assertion Audience: '{TOKEN_EXCHANGE_AUDIENCE}'."
        )),
        "{description}"
    );
    assert_eq!(entra.requests().await[0]["outcome"], "AADSTS70021");
}

#[tokio::test]
async fn an_expired_assertion_is_refused_with_aadsts700024() {
    let running = start_with(with_app(), false).await;
    let entra = Entra::new(&running);
    let (s, _, body) = entra
        .token(
            SIM_TENANT_ID,
            "app-1",
            &assertion(ISSUER, SUBJECT, -60),
            ARM_SCOPE,
        )
        .await;
    assert_eq!(s, 401);
    let description = entra_error(&body, "invalid_client", 700024);
    assert!(
        description.contains("Client assertion is not within its valid time range."),
        "{description}"
    );
}

#[tokio::test]
async fn an_unknown_client_is_refused_with_aadsts700016_and_a_malformed_tenant_with_900023() {
    let running = start_with(with_app(), false).await;
    let entra = Entra::new(&running);
    let good = assertion(ISSUER, SUBJECT, 600);
    let (s, _, body) = entra.token(SIM_TENANT_ID, "app-2", &good, ARM_SCOPE).await;
    assert_eq!(s, 400);
    let description = entra_error(&body, "unauthorized_client", 700016);
    assert!(
        description.contains(&format!(
            "Application with identifier 'app-2' was not found in the directory '{SIM_TENANT_ID}'."
        )),
        "{description}"
    );
    let (s, _, body) = entra.token("not a tenant", "app-1", &good, ARM_SCOPE).await;
    assert_eq!(s, 400);
    entra_error(&body, "invalid_request", 900023);
    let (s, _, body) = entra
        .token("nowhere.example", "app-1", &good, ARM_SCOPE)
        .await;
    assert_eq!(s, 400);
    entra_error(&body, "invalid_request", 90002);
    let (s, _, body) = entra
        .token(
            SIM_TENANT_ID,
            "app-1",
            &good,
            "https://management.azure.com/user_impersonation",
        )
        .await;
    assert_eq!(s, 400);
    entra_error(&body, "invalid_scope", 1002012);
}

/// Creates identity `name` and a federated credential for ISSUER/SUBJECT on it through the ARM
/// API; returns the identity's body.
async fn arm_identity_with_credential(arm: &Arm, name: &str) -> Value {
    let (s, _, identity) = arm
        .put(&identity_path(name), MSI, json!({"location": "westeurope"}))
        .await;
    assert_eq!(s, 201, "{identity}");
    let fic = format!(
        "{}/federatedIdentityCredentials/worker",
        identity_path(name)
    );
    let body = json!({"properties": {"issuer": ISSUER, "subject": SUBJECT, "audiences": [TOKEN_EXCHANGE_AUDIENCE]}});
    assert_eq!(arm.put(&fic, MSI, body).await.0, 201);
    identity
}

#[tokio::test]
async fn an_arm_identity_with_a_federated_credential_made_through_arm_is_honoured() {
    let running = start_with(EntraOptions::default(), false).await;
    let entra = Entra::new(&running);
    let identity = arm_identity_with_credential(&Arm::new(&running), "id-worker").await;
    let client_id = identity["properties"]["clientId"].as_str().unwrap();
    let token = entra.arm_token(client_id).await;
    let claims = jwt::claims_unverified(&token).unwrap();
    assert_eq!(claims["appid"], client_id);
    assert_eq!(claims["oid"], identity["properties"]["principalId"]);
    assert_eq!(claims["xms_mirid"], identity["id"]);
    // The identity lives in the simulator's tenant only.
    let other_tenant = "11111111-1111-1111-1111-111111111111";
    let good = assertion(ISSUER, SUBJECT, 600);
    let (s, _, body) = entra.token(other_tenant, client_id, &good, ARM_SCOPE).await;
    assert_eq!((s, body["error_codes"][0].as_u64()), (400, Some(700016)));
}

#[tokio::test]
async fn a_new_federated_credential_is_refused_until_it_has_propagated() {
    let running = start_with(
        EntraOptions {
            propagation: Duration::from_secs(2),
            ..EntraOptions::default()
        },
        false,
    )
    .await;
    let entra = Entra::new(&running);
    let identity = arm_identity_with_credential(&Arm::new(&running), "id-new").await;
    let arm_client = identity["properties"]["clientId"].as_str().unwrap();
    let registered = json!({"clientId": "app-new", "issuer": ISSUER, "subject": SUBJECT});
    assert_eq!(
        entra
            .send(reqwest::Method::POST, "/_sim/entra/apps", Some(registered))
            .await,
        201
    );
    let good = assertion(ISSUER, SUBJECT, 600);
    for client in [arm_client, "app-new"] {
        let (s, _, body) = entra.token(SIM_TENANT_ID, client, &good, ARM_SCOPE).await;
        assert_eq!(
            (s, body["error_codes"][0].as_u64()),
            (400, Some(70021)),
            "{client}"
        );
    }
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    for client in [arm_client, "app-new"] {
        let (s, _, body) = entra.token(SIM_TENANT_ID, client, &good, ARM_SCOPE).await;
        assert_eq!(s, 200, "{client}: {body}");
    }
}

#[tokio::test]
async fn entra_answers_503_with_retry_after_while_down_and_recovers() {
    let running = start_with(with_app(), false).await;
    let entra = Entra::new(&running);
    let faults = json!({"unavailableForSecs": 1, "status": 503});
    assert_eq!(
        entra
            .send(reqwest::Method::POST, "/_sim/entra/faults", Some(faults))
            .await,
        204
    );
    let good = assertion(ISSUER, SUBJECT, 600);
    let (s, headers, body) = entra.token(SIM_TENANT_ID, "app-1", &good, ARM_SCOPE).await;
    assert_eq!(s, 503);
    assert_eq!(headers["retry-after"], "1");
    entra_error(&body, "temporarily_unavailable", 90033);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        entra
            .token(SIM_TENANT_ID, "app-1", &good, ARM_SCOPE)
            .await
            .0,
        200
    );
    // A long outage, ended at once by the reset.
    let faults = json!({"unavailableForSecs": 600});
    entra
        .send(reqwest::Method::POST, "/_sim/entra/faults", Some(faults))
        .await;
    assert_eq!(
        entra
            .token(SIM_TENANT_ID, "app-1", &good, ARM_SCOPE)
            .await
            .0,
        503
    );
    let outcomes: Vec<Value> = entra
        .requests()
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!([r["outcome"], r["status"]]))
        .collect();
    assert_eq!(
        outcomes,
        [
            json!(["AADSTS90033", 503]),
            json!(["ok", 200]),
            json!(["AADSTS90033", 503])
        ]
    );
    assert_eq!(
        entra
            .send(reqwest::Method::POST, "/_sim/entra/reset", None)
            .await,
        204
    );
    assert_eq!(
        entra
            .token(SIM_TENANT_ID, "app-1", &good, ARM_SCOPE)
            .await
            .0,
        200
    );
    assert_eq!(entra.requests().await.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn with_tokens_required_arm_refuses_a_missing_wrong_or_expired_token_and_takes_a_fresh_one() {
    let running = start_with(with_app(), true).await;
    let entra = Entra::new(&running);
    let http = reqwest::Client::new();
    let url = format!(
        "{}{}?api-version={MSI}",
        running.arm_url(),
        identity_path("id-a")
    );
    let put = |token: Option<String>| {
        let mut req = http.put(&url).json(&json!({"location": "westeurope"}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string());
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, challenge, body)
        }
    };
    let authority = format!("{}/", running.entra_url().unwrap());

    let (s, challenge, body) = put(None).await;
    assert_eq!(s, 401);
    assert_eq!(body["error"]["code"], "AuthenticationFailed");
    assert_eq!(
        body["error"]["message"],
        "Authentication failed. The 'Authorization' header is missing."
    );
    assert!(challenge.unwrap().starts_with(&format!(
        "Bearer authorization_uri=\"{authority}\", error=\"invalid_token\""
    )));

    let (s, _, body) = put(Some("not.a.token".into())).await;
    assert_eq!(
        (s, &body["error"]["code"]),
        (401, &json!("InvalidAuthenticationToken"))
    );

    let (s, _, storage) = entra
        .token(
            SIM_TENANT_ID,
            "app-1",
            &assertion(ISSUER, SUBJECT, 600),
            "https://storage.azure.com/.default",
        )
        .await;
    assert_eq!(s, 200);
    let (s, _, body) = put(storage["access_token"].as_str().map(str::to_string)).await;
    assert_eq!(
        (s, &body["error"]["code"]),
        (401, &json!("InvalidAuthenticationTokenAudience"))
    );

    let sim_entra = running.entra.as_ref().unwrap();
    sim_entra.set_token_lifetime(Duration::from_secs(1));
    let short = entra.arm_token("app-1").await;
    sim_entra.set_token_lifetime(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (s, challenge, body) = put(Some(short)).await;
    assert_eq!(s, 401);
    assert_eq!(body["error"]["code"], "ExpiredAuthenticationToken");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("The access token expiry UTC time '")
            && message.contains("' is earlier than current UTC time '"),
        "{message}"
    );
    assert!(
        challenge.unwrap().ends_with(
            "error=\"invalid_token\", error_description=\"The access token has expired.\""
        )
    );

    let (s, _, body) = put(Some(entra.arm_token("app-1").await)).await;
    assert_eq!(s, 201, "{body}");
    // The simulator's own endpoints stay open.
    let inventory = http
        .get(format!("{}/_sim/inventory", running.arm_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(inventory.status().as_u16(), 200);
}

#[tokio::test]
async fn requiring_arm_tokens_without_entra_is_refused_at_start() {
    let err = sim::start(
        loopback(),
        loopback(),
        SimOptions {
            arm_require_tokens: true,
            ..SimOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
