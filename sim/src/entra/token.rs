//! `POST /{tenant}/oauth2/v2.0/token`: the client credentials grant with a federated client
//! assertion, checked the way Entra checks it, in Entra's order: the tenant, the form, the
//! scope, the assertion's shape and time, the application, then a federated credential that
//! matches the assertion's issuer, subject and audience and has propagated. Every attempt goes
//! to the request log (never the assertion or the token).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};

use super::errors::EntraError;
use super::issue::TokenGrant;
use super::{EntraSim, TokenRequestRecord, jwt};

/// The only client assertion type Entra takes.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// OpenID scopes a client may add to a `.default` scope without naming a second resource.
const OIDC_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];

/// What the log records of one attempt, filled in as far as the request got.
#[derive(Debug, Default)]
struct Attempt {
    client_id: String,
    scope: String,
    assertion_issuer: Option<String>,
    assertion_subject: Option<String>,
}

pub(super) async fn token(
    State(sim): State<Arc<EntraSim>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let correlation_id = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut attempt = Attempt {
        client_id: field("client_id").unwrap_or_default().to_string(),
        scope: field("scope").unwrap_or_default().to_string(),
        ..Attempt::default()
    };
    let result = match sim.outage() {
        Some((status, retry_after)) => Err((EntraError::unavailable(status), Some(retry_after))),
        None => exchange(&sim, &tenant, &field, &mut attempt).map_err(|e| (e, None)),
    };
    let (outcome, status, resp) = match result {
        Ok(grant) => {
            let lifetime = sim.token_lifetime().as_secs();
            let access_token = sim.issuer.issue(&grant, Utc::now(), lifetime);
            let body = json!({
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": access_token,
            });
            let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
            resp.headers_mut().insert(
                "cache-control",
                HeaderValue::from_static("no-store, no-cache"),
            );
            ("ok".to_string(), StatusCode::OK, resp)
        }
        Err((err, retry_after)) => (
            err.outcome(),
            err.status,
            err.into_response(&correlation_id, retry_after),
        ),
    };
    tracing::debug!(%tenant, client_id = %attempt.client_id, %outcome, "Entra sim token request");
    sim.record(TokenRequestRecord {
        time: Utc::now(),
        tenant,
        client_id: attempt.client_id,
        scope: attempt.scope,
        outcome,
        status: status.as_u16(),
        assertion_issuer: attempt.assertion_issuer,
        assertion_subject: attempt.assertion_subject,
    });
    resp
}

fn exchange<'a>(
    sim: &EntraSim,
    tenant: &str,
    field: &impl Fn(&str) -> Option<&'a str>,
    attempt: &mut Attempt,
) -> Result<TokenGrant, EntraError> {
    check_tenant(sim, tenant)?;
    let grant_type =
        field("grant_type").ok_or_else(|| EntraError::missing_parameter("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(EntraError::unsupported_grant(grant_type));
    }
    let client_id = field("client_id").ok_or_else(|| EntraError::missing_parameter("client_id"))?;
    let scope = field("scope").ok_or_else(|| EntraError::missing_parameter("scope"))?;
    let audience = resource_of(scope)?;
    if field("client_secret").is_some() {
        return Err(EntraError::secret_given());
    }
    let assertion = match (field("client_assertion_type"), field("client_assertion")) {
        (Some(JWT_BEARER), Some(assertion)) => assertion,
        _ => return Err(EntraError::no_assertion()),
    };
    let claims = jwt::claims_unverified(assertion)
        .map_err(|e| EntraError::malformed_assertion(&e.to_string()))?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    let issuer = text("iss").ok_or_else(|| EntraError::malformed_assertion("no iss"))?;
    let subject = text("sub").ok_or_else(|| EntraError::malformed_assertion("no sub"))?;
    attempt.assertion_issuer = Some(issuer.clone());
    attempt.assertion_subject = Some(subject.clone());
    let audiences = assertion_audiences(&claims)?;
    check_time(&claims, Utc::now())?;
    let Some(app) = sim.find_app(tenant, client_id) else {
        return Err(EntraError::unknown_client(client_id, tenant));
    };
    let propagation = sim.propagation();
    let now = Instant::now();
    let matched = app.credentials.iter().any(|c| {
        // Entra matches issuer and subject case-sensitively (since 2025), audiences exactly.
        c.issuer == issuer
            && c.subject == subject
            && audiences.iter().any(|a| c.audiences.contains(a))
            && c.since
                .is_none_or(|since| now.duration_since(since) >= propagation)
    });
    if !matched {
        return Err(EntraError::no_matching_federated_credential(
            &issuer,
            &subject,
            &audiences.join(","),
        ));
    }
    Ok(TokenGrant {
        tenant_id: app.tenant_id.unwrap_or_else(|| tenant.to_string()),
        client_id: app.client_id,
        object_id: app.object_id,
        audience,
        mi_resource_id: app.mi_resource_id,
    })
}

/// A tenant is a GUID or a domain name; a domain is known only if an application names it.
fn check_tenant(sim: &EntraSim, tenant: &str) -> Result<(), EntraError> {
    if is_guid(tenant) {
        return Ok(());
    }
    if !is_domain(tenant) {
        return Err(EntraError::bad_tenant(tenant));
    }
    if sim.knows_domain(tenant) {
        Ok(())
    } else {
        Err(EntraError::unknown_tenant(tenant))
    }
}

pub(super) fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

fn is_domain(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The resource of a client-credentials scope: `https://management.azure.com/.default` →
/// `https://management.azure.com`. Exactly one resource, always with `/.default`.
fn resource_of(scope: &str) -> Result<String, EntraError> {
    let resources: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| !OIDC_SCOPES.contains(s))
        .collect();
    if let Some(bad) = resources.iter().find(|s| !s.ends_with("/.default")) {
        return Err(EntraError::scope_not_default(bad));
    }
    match resources.as_slice() {
        [one] => Ok(one.trim_end_matches("/.default").to_string()),
        [] => Err(EntraError::scope_not_default(scope)),
        _ => Err(EntraError::scope_many_resources(scope)),
    }
}

/// `aud` is a string or (in Kubernetes service-account tokens) an array of strings.
fn assertion_audiences(claims: &Map<String, Value>) -> Result<Vec<String>, EntraError> {
    let audiences: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    if audiences.is_empty() {
        return Err(EntraError::malformed_assertion("no aud"));
    }
    Ok(audiences)
}

/// `exp` must be in the future (no leeway: an expired projected token is the worker's bug to
/// see); `nbf`, when present, may be up to five minutes ahead for clock skew.
fn check_time(claims: &Map<String, Value>, now: DateTime<Utc>) -> Result<(), EntraError> {
    let time = |name: &str| claims.get(name).and_then(Value::as_i64);
    let Some(exp) = time("exp") else {
        return Err(EntraError::malformed_assertion("no exp"));
    };
    let nbf = time("nbf").unwrap_or(0);
    if exp > now.timestamp() && nbf <= now.timestamp() + 300 {
        return Ok(());
    }
    let fmt = |t: i64| {
        Utc.timestamp_opt(t, 0)
            .single()
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S.0000000Z").to_string())
            .unwrap_or_else(|| t.to_string())
    };
    Err(EntraError::assertion_out_of_time(
        &now.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        &fmt(nbf),
        &fmt(exp),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_names_one_resource_with_dot_default() {
        assert_eq!(
            resource_of("https://management.azure.com/.default"),
            Ok("https://management.azure.com".to_string())
        );
        assert_eq!(
            resource_of("https://management.azure.com/.default offline_access").map_err(|e| e.code),
            Ok("https://management.azure.com".to_string())
        );
        assert_eq!(
            resource_of("https://management.azure.com/user_impersonation").map_err(|e| e.code),
            Err(1002012)
        );
        assert_eq!(
            resource_of("https://a.example/.default https://b.example/.default")
                .map_err(|e| e.code),
            Err(28000)
        );
    }

    #[test]
    fn tenants_are_guids_or_domain_names() {
        assert!(is_guid("00000000-0000-0000-0000-0000000000e1"));
        assert!(!is_guid("0000000000000000000000000000000e1"));
        assert!(is_domain("contoso.onmicrosoft.com"));
        assert!(!is_domain("not a tenant"));
        assert!(!is_domain("organizations"));
    }

    #[test]
    fn an_assertion_in_the_past_is_out_of_time_and_one_without_exp_is_malformed() {
        let now = Utc::now();
        let claims = |v: Value| v.as_object().cloned().unwrap_or_default();
        let past = claims(json!({"exp": now.timestamp() - 10}));
        assert_eq!(check_time(&past, now).map_err(|e| e.code), Err(700024));
        let future = claims(json!({"exp": now.timestamp() + 600}));
        assert_eq!(check_time(&future, now), Ok(()));
        assert_eq!(
            check_time(&claims(json!({})), now).map_err(|e| e.code),
            Err(50027)
        );
    }
}
