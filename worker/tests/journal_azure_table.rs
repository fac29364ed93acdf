//! The journal conformance suite over the Azure Table journal: against Azurite (a fresh table per
//! test) when `AZURITE_TABLE_ENDPOINT` is set, and against a live storage account with an Azure
//! CLI token when `ONBOARD_TEST_TABLE_ENDPOINT` is set. Each says what it needs when skipped.

// Test helpers may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use onboarding_core::{AccessToken, AuthError, CredentialConfig, TokenCredential};
use onboarding_journal::azure_table::{AzureTableJournal, STORAGE_SCOPE, TableAuth};
use onboarding_journal::{Journal, JournalError};
use serde_json::json;
use tokio::sync::Mutex;
use url::Url;

/// Azurite's well-known development account (public constants, not secrets).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// What the Azurite tests need `AZURITE_TABLE_ENDPOINT` for, and how to get it.
const AZURITE_PURPOSE: &str = "the Azure Table journal on Azurite (run scripts/azurite.sh start, then eval \"$(scripts/azurite.sh env)\")";
/// What the live tests need `ONBOARD_TEST_TABLE_ENDPOINT` for.
const LIVE_PURPOSE: &str = "the Azure Table journal on a real account (https://<account>.table.core.windows.net, signed in with `az login` as an identity holding \"Storage Table Data Contributor\" on it; optional: ONBOARD_TEST_TABLE_NAME, default onboardjournaltest)";

fn azurite_endpoint() -> Option<Url> {
    let env = onboarding_testkit::env::require(&["AZURITE_TABLE_ENDPOINT"], AZURITE_PURPOSE)?;
    let raw = &env["AZURITE_TABLE_ENDPOINT"];
    Some(Url::parse(raw).unwrap_or_else(|e| panic!("AZURITE_TABLE_ENDPOINT={raw:?}: {e}")))
}

fn unique_table() -> String {
    format!("j{}", uuid::Uuid::new_v4().simple())
}

fn azurite_journal_in(endpoint: Url, table: String) -> AzureTableJournal {
    AzureTableJournal::new(
        endpoint,
        table,
        TableAuth::SharedKey {
            account: AZURITE_ACCOUNT.into(),
            key: AZURITE_KEY.into(),
        },
    )
    .unwrap()
}

async fn azurite_journal() -> Option<(Arc<dyn Journal>, ())> {
    let endpoint = azurite_endpoint()?;
    let journal = azurite_journal_in(endpoint, unique_table());
    journal.ensure_table().await.unwrap();
    Some((Arc::new(journal), ()))
}

mod azurite {
    onboarding_testkit::journal_conformance_tests!(super::azurite_journal);
}

async fn live_journal() -> Option<(Arc<dyn Journal>, ())> {
    let env = onboarding_testkit::env::require(&["ONBOARD_TEST_TABLE_ENDPOINT"], LIVE_PURPOSE)?;
    let raw = &env["ONBOARD_TEST_TABLE_ENDPOINT"];
    let endpoint =
        Url::parse(raw).unwrap_or_else(|e| panic!("ONBOARD_TEST_TABLE_ENDPOINT={raw:?}: {e}"));
    // One shared table: every property uses its own UUID keys, and a live account should not
    // collect a table per test run.
    let table = onboarding_testkit::env::optional("ONBOARD_TEST_TABLE_NAME")
        .unwrap_or_else(|| "onboardjournaltest".to_string());
    // The worker's own Azure CLI credential (azure_identity), as a developer's config names it.
    let credential =
        onboarding_identity::credential_for(&CredentialConfig::AzureCli(Default::default()))
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("an Entra credential");
    let auth = TableAuth::Bearer {
        credential,
        scope: STORAGE_SCOPE.into(),
    };
    let journal = AzureTableJournal::new(endpoint, table, auth).unwrap();
    journal.ensure_table().await.unwrap();
    Some((Arc::new(journal), ()))
}

mod live {
    onboarding_testkit::journal_conformance_tests!(super::live_journal);
}

#[tokio::test]
async fn two_journals_on_one_table_see_each_others_writes_and_conflict() {
    let Some(endpoint) = azurite_endpoint() else {
        return;
    };
    let table = unique_table();
    let a = azurite_journal_in(endpoint.clone(), table.clone());
    let b = azurite_journal_in(endpoint, table);
    a.ensure_table().await.unwrap();
    b.ensure_table().await.unwrap();
    let v1 = a.store("tenant", &json!({"by": "a"}), None).await.unwrap();
    // b has never seen the record: it must read the ETag before swapping.
    let v2 = b
        .store("tenant", &json!({"by": "b"}), Some(v1))
        .await
        .unwrap();
    // a's cached ETag for v1 is stale now: the service refuses, and a reports what it found.
    match a.store("tenant", &json!({"by": "a again"}), Some(v1)).await {
        Err(JournalError::Conflict { found, .. }) => assert_eq!(found, Some(v2)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let v3 = a
        .store("tenant", &json!({"by": "a, up to date"}), Some(v2))
        .await
        .unwrap();
    let loaded = b.load("tenant").await.unwrap().unwrap();
    assert_eq!(loaded.version, v3);
    assert_eq!(loaded.value, json!({"by": "a, up to date"}));
}

#[tokio::test]
async fn a_wrong_account_key_is_refused_as_permanent_and_says_what_to_check() {
    let Some(endpoint) = azurite_endpoint() else {
        return;
    };
    let journal = AzureTableJournal::new(
        endpoint,
        unique_table(),
        TableAuth::SharedKey {
            account: AZURITE_ACCOUNT.into(),
            key: "d3Jvbmcga2V5IGZvciB0aGUgZW11bGF0b3I=".into(),
        },
    )
    .unwrap();
    match journal.ensure_table().await {
        Err(e @ JournalError::Refused(_)) => {
            let text = e.to_string();
            assert!(text.contains("403"), "{text}");
            assert!(text.contains("Storage Table Data Contributor"), "{text}");
            assert!(text.contains(AZURITE_ACCOUNT), "{text}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn using_a_table_that_does_not_exist_is_refused_with_how_to_create_it() {
    let Some(endpoint) = azurite_endpoint() else {
        return;
    };
    let journal = azurite_journal_in(endpoint, unique_table());
    for result in [
        journal.ping().await.map(|_| ()),
        journal.load("k").await.map(|_| ()),
        journal.store("k", &json!(1), None).await.map(|_| ()),
    ] {
        match result {
            Err(e @ JournalError::Refused(_)) => {
                assert!(e.to_string().contains("ensure_table"), "{e}")
            }
            other => panic!("expected Refused, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn ensuring_the_table_twice_is_fine() {
    let Some(endpoint) = azurite_endpoint() else {
        return;
    };
    let journal = azurite_journal_in(endpoint, unique_table());
    journal.ensure_table().await.unwrap();
    journal.ensure_table().await.unwrap();
    journal.ping().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_endpoint_is_transient() {
    // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    let journal = azurite_journal_in(
        Url::parse("http://127.0.0.1:9/devstoreaccount1").unwrap(),
        unique_table(),
    );
    match journal.ping().await {
        Err(e @ JournalError::Unavailable(_)) => {
            use onboarding_core::Classify;
            assert!(e.is_transient());
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn more_records_than_one_page_are_all_listed() {
    let Some(endpoint) = azurite_endpoint() else {
        return;
    };
    use futures::StreamExt;
    let journal = Arc::new(azurite_journal_in(endpoint, unique_table()));
    journal.ensure_table().await.unwrap();
    // The service answers a query with at most 1000 entities and a continuation.
    let mut expected: Vec<String> = (0..1010).map(|i| format!("tenant/{i}")).collect();
    futures::stream::iter(expected.clone())
        .for_each_concurrent(16, |key| {
            let journal = Arc::clone(&journal);
            async move {
                journal.store(&key, &json!({}), None).await.unwrap();
            }
        })
        .await;
    expected.sort();
    assert_eq!(journal.keys().await.unwrap(), expected);
}

/// A one-shot HTTP server on loopback answering every request with `status`, recording the
/// request heads, so tests can see what the client sends and how it reads a refusal.
async fn canned_server(status: &'static str, body: &'static str) -> (Url, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let n = socket.read(&mut buf).await.unwrap_or(0);
            seen.lock()
                .await
                .push(String::from_utf8_lossy(&buf[..n]).to_string());
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    (
        Url::parse(&format!("http://127.0.0.1:{port}/acct")).unwrap(),
        heads,
    )
}

#[derive(Debug)]
struct FixedToken;

#[async_trait::async_trait]
impl TokenCredential for FixedToken {
    async fn token(&self, scope: &str) -> Result<AccessToken, AuthError> {
        assert_eq!(scope, "https://storage.azure.com/.default");
        Ok(AccessToken {
            token: "fixed-token".into(),
            expires_on: chrono::Utc::now() + chrono::Duration::hours(1),
        })
    }
}

#[tokio::test]
async fn a_bearer_journal_sends_its_token_and_a_403_names_the_role_it_needs() {
    let (endpoint, heads) = canned_server(
        "403 Forbidden",
        r#"{"odata.error":{"code":"AuthorizationPermissionMismatch","message":{"lang":"en-US","value":"This request is not authorized to perform this operation using this permission."}}}"#,
    )
    .await;
    let journal = AzureTableJournal::new(
        endpoint,
        "journal".into(),
        TableAuth::Bearer {
            credential: Arc::new(FixedToken),
            scope: STORAGE_SCOPE.into(),
        },
    )
    .unwrap();
    let error = journal.load("tenant").await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, JournalError::Refused(_)), "{error:?}");
    assert!(text.contains("Storage Table Data Contributor"), "{text}");
    assert!(text.contains("AuthorizationPermissionMismatch"), "{text}");
    assert!(text.contains("FixedToken"), "names the identity: {text}");
    let heads = heads.lock().await;
    let head = heads[0].to_ascii_lowercase();
    assert!(
        head.starts_with("get /acct/journal(partitionkey='journal',rowkey='tenant') "),
        "{head}"
    );
    assert!(head.contains("authorization: bearer fixed-token"), "{head}");
    assert!(head.contains("x-ms-version: 2019-02-02"), "{head}");
}

#[tokio::test]
async fn throttling_and_server_errors_are_transient() {
    use onboarding_core::Classify;
    for status in [
        "429 Too Many Requests",
        "503 Server Busy",
        "500 Internal Server Error",
    ] {
        let (endpoint, _) = canned_server(status, "{}").await;
        let journal = AzureTableJournal::new(
            endpoint,
            "journal".into(),
            TableAuth::Bearer {
                credential: Arc::new(FixedToken),
                scope: STORAGE_SCOPE.into(),
            },
        )
        .unwrap();
        let error = journal.store("tenant", &json!({}), None).await.unwrap_err();
        assert!(
            matches!(error, JournalError::Unavailable(_)),
            "{status}: {error:?}"
        );
        assert!(error.is_transient());
    }
}

/// A credential whose token changes each time a service refuses it.
#[derive(Debug, Default)]
struct RotatingToken {
    invalidated: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl TokenCredential for RotatingToken {
    async fn token(&self, _scope: &str) -> Result<AccessToken, AuthError> {
        let n = self.invalidated.load(std::sync::atomic::Ordering::SeqCst);
        Ok(AccessToken {
            token: format!("token-{n}"),
            expires_on: chrono::Utc::now() + chrono::Duration::hours(1),
        })
    }
    fn invalidate(&self, scope: &str) {
        assert_eq!(scope, STORAGE_SCOPE);
        self.invalidated
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_refused_token_is_forgotten_and_the_request_sent_once_more_with_a_new_one() {
    let (endpoint, heads) = canned_server(
        "401 Unauthorized",
        r#"{"odata.error":{"code":"InvalidAuthenticationInfo","message":{"lang":"en-US","value":"Lifetime validation failed. The token is expired."}}}"#,
    )
    .await;
    let credential = Arc::new(RotatingToken::default());
    let journal = AzureTableJournal::new(
        endpoint,
        "journal".into(),
        TableAuth::Bearer {
            credential: credential.clone(),
            scope: STORAGE_SCOPE.into(),
        },
    )
    .unwrap();
    let error = journal.load("tenant").await.unwrap_err();
    assert!(matches!(error, JournalError::Refused(_)), "{error:?}");
    // Once more with a new token, and no more than that.
    let heads = heads.lock().await;
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("authorization: bearer token-0")
    );
    assert!(
        heads[1]
            .to_ascii_lowercase()
            .contains("authorization: bearer token-1")
    );
    assert_eq!(
        credential
            .invalidated
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}
