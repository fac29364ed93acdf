//! The `sim` binary's Entra ID simulator: its flags are explained, it writes its CA where told,
//! announces its URL, and serves tokens to the applications given on the command line.
#![allow(clippy::unwrap_used)] // tests may unwrap (developers' guide)

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

#[test]
fn help_explains_every_entra_flag_and_endpoint() {
    let out = Command::new(env!("CARGO_BIN_EXE_sim"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--entra-addr",
        "--no-entra",
        "--entra-ca-out",
        "--entra-app",
        "--entra-propagation-secs",
        "--entra-token-lifetime-secs",
        "--arm-require-tokens",
        "/_sim/entra/requests",
        "/_sim/entra/faults",
        "AADSTS70021",
    ] {
        assert!(
            help.contains(needle),
            "--help does not mention {needle}:\n{help}"
        );
    }
}

#[test]
fn an_entra_app_flag_must_name_client_issuer_and_subject() {
    let out = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["--entra-app", "just-a-client-id"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CLIENT_ID=ISSUER|SUBJECT"), "{err}");
}

#[tokio::test]
async fn the_binary_writes_its_ca_announces_its_url_and_serves_tokens_to_its_apps() {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("entra-ca.pem");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["--arm-addr", "127.0.0.1:0", "--kube-addr", "127.0.0.1:0"])
        .args(["--entra-addr", "127.0.0.1:0", "--entra-ca-out"])
        .arg(&ca_path)
        .args([
            "--entra-app",
            "cli-app=https://oidc.example/c|system:serviceaccount:a:b",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    let url = line
        .split("simulated Entra ID on ")
        .nth(1)
        .unwrap_or_else(|| panic!("no Entra URL in {line}"))
        .trim()
        .to_string();
    let ca = std::fs::read(&ca_path).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let assertion = sim::entra::jwt::unsigned(&json!({
        "iss": "https://oidc.example/c",
        "sub": "system:serviceaccount:a:b",
        "aud": "api://AzureADTokenExchange",
        "exp": now + 600,
    }));
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", "cli-app")
        .append_pair("scope", "https://management.azure.com/.default")
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_assertion_type", sim::entra::JWT_BEARER)
        .append_pair("client_assertion", &assertion)
        .finish();
    // `localhost` is in the certificate as well as 127.0.0.1.
    let url = url.replace("127.0.0.1", "localhost");
    let resp = http
        .post(format!(
            "{url}/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let token: Value = resp.json().await.unwrap();
    assert_eq!(token["token_type"], "Bearer");
    child.kill().await.unwrap();
}
