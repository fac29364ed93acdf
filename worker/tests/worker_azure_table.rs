//! The worker on the production journal: Azure Table Storage (Azurite), chosen by configuration
//! and opened by `bootstrap` exactly as `worker run` does, with the embedded transport and the
//! simulators. Runs when `AZURITE_TABLE_ENDPOINT` is set (`scripts/azurite.sh start`, then
//! `eval "$(scripts/azurite.sh env)"`; `scripts/test.sh` does both).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{RunnerHarness, has_event, run_until};
use onboarding_testkit::fixtures::OnboardBuilder;
use worker::config::{JournalConfig, Secret, TableCredentialConfig};
use worker::metrics::Metrics;
use worker::runner::Runner;

/// What these tests need `AZURITE_TABLE_ENDPOINT` for, and how to get it.
const PURPOSE: &str = "the worker on an Azure Table journal on Azurite (run scripts/azurite.sh start, then eval \"$(scripts/azurite.sh env)\")";
/// Azurite's well-known development account: public constants, not secrets.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The journal section a deployment against Azurite would have, on a fresh table.
fn azurite_journal(create_table: bool, key: &str) -> Option<JournalConfig> {
    let env = onboarding_testkit::env::require(&["AZURITE_TABLE_ENDPOINT"], PURPOSE)?;
    let endpoint = env["AZURITE_TABLE_ENDPOINT"].clone();
    Some(JournalConfig::AzureTable {
        endpoint,
        table: format!("w{}", uuid::Uuid::new_v4().simple()),
        credential: Some(TableCredentialConfig::SharedKey {
            account: onboarding_testkit::env::optional("AZURITE_ACCOUNT_NAME")
                .unwrap_or(AZURITE_ACCOUNT.into()),
            key: Secret::new(key),
        }),
        create_table,
    })
}

#[tokio::test]
async fn a_tenant_is_onboarded_with_its_saga_journalled_in_azure_table() {
    let key =
        onboarding_testkit::env::optional("AZURITE_ACCOUNT_KEY").unwrap_or(AZURITE_KEY.into());
    let Some(journal) = azurite_journal(true, &key) else {
        return;
    };
    let h = RunnerHarness::start(sim::SimOptions::default(), Some(journal)).await;
    // Creates the table (journal.create_table) and checks that it answers.
    let cx = h.context(Metrics::default()).await;
    let mut events = cx.topic.subscribe("test").await.unwrap();
    cx.queue
        .send(
            OnboardBuilder::tenant("acme")
                .request("r1")
                .with_workload()
                .message()
                .build(),
        )
        .await
        .unwrap();
    let runner = Runner::new(cx);
    let seen = run_until(&runner, &mut events, |seen| {
        has_event(seen, "tenant.onboarded", "acme")
    })
    .await;
    let onboarded = seen
        .iter()
        .find(|e| e["type"] == "tenant.onboarded")
        .unwrap();
    assert_eq!(onboarded["data"]["state"], "Succeeded", "{onboarded}");
    let [received, ..] = runner.stats().snapshot();
    assert!(received >= 2, "the saga crossed at least one continuation");

    // A second client on the same table (another replica, or `producer status`) sees the saga.
    let journal = worker::bootstrap::open_journal(&h.config).unwrap();
    let keys = journal.keys().await.unwrap();
    // Besides tenant records: the request registry and the cluster's line of pool operations.
    let tenants: Vec<&String> = keys.iter().filter(|k| !k.contains(':')).collect();
    assert_eq!(tenants, vec!["acme"], "{keys:?}");
    assert!(keys.contains(&"request:r1".to_string()), "{keys:?}");
    let record = journal
        .load("acme")
        .await
        .unwrap()
        .expect("acme's record")
        .value;
    assert_eq!(record["state"], "Onboarded", "{record}");
    assert!(record["active"].is_null(), "{record}");
    let resources = record["resources"].as_object().unwrap();
    assert_eq!(resources.len(), 9, "{record}");
    assert!(resources["node_pool"]["name"].is_string(), "{record}");
}

#[tokio::test]
async fn start_up_stops_naming_the_table_when_it_is_missing_and_may_not_be_created() {
    let Some(journal) = azurite_journal(false, AZURITE_KEY) else {
        return;
    };
    let JournalConfig::AzureTable { table, .. } = &journal else {
        unreachable!()
    };
    let table = table.clone();
    let h = RunnerHarness::start(sim::SimOptions::default(), Some(journal)).await;
    let err = worker::bootstrap::build_context(std::sync::Arc::new(h.config.clone()))
        .await
        .expect_err("a missing table stops start-up");
    let text = err.to_string();
    assert!(text.contains("journal"), "{text}");
    assert!(text.contains(&table), "{text}");
    assert!(text.contains("journal.create_table = true"), "{text}");
}

#[tokio::test]
async fn start_up_stops_naming_the_account_when_the_key_is_wrong() {
    // A valid base64 key that is not the account's.
    let Some(journal) = azurite_journal(true, "d3Jvbmcta2V5LXdyb25nLWtleQ==") else {
        return;
    };
    let h = RunnerHarness::start(sim::SimOptions::default(), Some(journal)).await;
    let err = worker::bootstrap::build_context(std::sync::Arc::new(h.config.clone()))
        .await
        .expect_err("a wrong key stops start-up");
    let text = err.to_string();
    assert!(text.contains(AZURITE_ACCOUNT), "{text}");
}
