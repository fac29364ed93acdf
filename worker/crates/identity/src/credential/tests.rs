//! Tests of the credentials against a fake Entra token endpoint and a fake `az`.

use super::azure_cli::parse_cli_local_time;
use super::*;
use chrono::Utc;
use onboarding_core::ErrorClass;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path, State};
use axum::routing::post;

#[derive(Default)]
struct Fake {
    calls: AtomicUsize,
    last_form: std::sync::Mutex<Vec<(String, String)>>,
    expires_in: i64,
    fail: bool,
}

async fn token_endpoint(
    State(fake): State<Arc<Fake>>,
    Path(tenant): Path<String>,
    body: String,
) -> (axum::http::StatusCode, String) {
    fake.calls.fetch_add(1, Ordering::SeqCst);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    *fake.last_form.lock().unwrap() = form.clone();
    if fake.fail {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_client","error_description":"AADSTS70021: No matching federated identity record found"}"#.into(),
        );
    }
    let assertion = form
        .iter()
        .find(|(k, _)| k == "client_assertion")
        .map(|(_, v)| v.clone());
    (
        axum::http::StatusCode::OK,
        serde_json::json!({
            "token_type": "Bearer",
            "expires_in": fake.expires_in,
            "access_token": format!("token-for-{tenant}-{}", assertion.unwrap_or_default()),
        })
        .to_string(),
    )
}

async fn serve(fake: Arc<Fake>) -> Url {
    let app = axum::Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token_endpoint))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Url::parse(&format!("http://{addr}")).unwrap()
}

fn credential(authority: Url, file: &std::path::Path) -> WorkloadIdentityCredential {
    WorkloadIdentityCredential::new(
        "tenant-1".into(),
        "client-1".into(),
        file.to_path_buf(),
        CredentialOptions {
            authority_host: authority,
            ..CredentialOptions::default()
        },
    )
}

#[tokio::test]
async fn workload_identity_exchanges_the_projected_token_in_its_own_tenant() {
    let fake = Arc::new(Fake {
        expires_in: 3600,
        ..Fake::default()
    });
    let authority = serve(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "projected-jwt\n").unwrap();
    let cred = credential(authority, &file);
    let t = cred
        .token("https://management.azure.com/.default")
        .await
        .unwrap();
    assert_eq!(t.token, "token-for-tenant-1-projected-jwt");
    assert!(t.expires_on > Utc::now() + chrono::Duration::minutes(50));
    let form = fake.last_form.lock().unwrap().clone();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("client_id"), Some("client-1"));
    assert_eq!(get("grant_type"), Some("client_credentials"));
    assert_eq!(get("scope"), Some("https://management.azure.com/.default"));
    assert_eq!(
        get("client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    // Cached: a second call does not reach Entra.
    cred.token("https://management.azure.com/.default")
        .await
        .unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_token_close_to_expiry_is_refreshed_and_the_file_is_read_again() {
    // Expires in 4 minutes: inside the 5-minute refresh margin, so never reused.
    let fake = Arc::new(Fake {
        expires_in: 240,
        ..Fake::default()
    });
    let authority = serve(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "first").unwrap();
    let cred = credential(authority, &file);
    let a = cred.token("s/.default").await.unwrap();
    std::fs::write(&file, "rotated").unwrap();
    let b = cred.token("s/.default").await.unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    assert!(a.token.ends_with("first") && b.token.ends_with("rotated"));
}

#[tokio::test]
async fn a_rejected_exchange_is_a_permanent_error_that_names_the_cause() {
    let fake = Arc::new(Fake {
        fail: true,
        ..Fake::default()
    });
    let authority = serve(fake).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "jwt").unwrap();
    let err = credential(authority, &file)
        .token("s/.default")
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.message.contains("AADSTS70021"), "{err}");
    assert!(err.to_string().contains("tenant-1"), "{err}");
}

#[tokio::test]
async fn a_missing_token_file_says_which_file() {
    let cred = credential(
        Url::parse("http://127.0.0.1:9").unwrap(),
        std::path::Path::new("/nonexistent/token"),
    );
    let err = cred.token("s/.default").await.unwrap_err();
    assert!(err.message.contains("/nonexistent/token"), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn azure_cli_tokens_come_from_az_account_get_access_token() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let args_file = dir.path().join("args");
    let az = dir.path().join("az");
    std::fs::write(
        &az,
        format!(
            "#!/bin/sh\necho \"$@\" > {}\necho '{{\"accessToken\":\"cli-token\",\"expiresOn\":\"2999-01-01 00:00:00.000000\",\"expires_on\":32472144000,\"tenant\":\"t\",\"tokenType\":\"Bearer\"}}'\n",
            args_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cred = AzureCliCredential::new(
        Some("tenant-9".into()),
        CredentialOptions {
            az_program: az,
            ..CredentialOptions::default()
        },
    );
    let t = cred
        .token("https://management.azure.com/.default")
        .await
        .unwrap();
    assert_eq!(t.token, "cli-token");
    assert_eq!(t.expires_on.timestamp(), 32472144000);
    let args = std::fs::read_to_string(&args_file).unwrap();
    assert!(
        args.contains("--resource https://management.azure.com"),
        "{args}"
    );
    assert!(args.contains("--tenant tenant-9"), "{args}");
}

#[test]
fn cli_local_times_parse() {
    assert!(parse_cli_local_time("2024-05-01 10:11:12.123456").is_some());
    assert!(parse_cli_local_time("garbage").is_none());
}

#[test]
fn no_credential_for_the_simulator() {
    assert!(credential_for(&CredentialConfig::None).is_none());
    assert!(credential_for(&CredentialConfig::AzureCli { tenant_id: None }).is_some());
}
