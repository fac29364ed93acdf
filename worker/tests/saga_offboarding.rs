//! What an offboarding reports and releases, through the saga engine with test doubles: its
//! outcome lists as remaining only what exists, and a purge that leaves nothing of the tenant
//! releases the tenant's name claims for others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use onboarding_contract::events::{self, EventData, OutcomeData};
use onboarding_testkit::engine::EngineHarness;
use onboarding_testkit::fakes::CloudFaults;
use onboarding_testkit::fixtures::{OffboardBuilder, OnboardBuilder};

fn outcome(h: &EngineHarness, request: &str) -> OutcomeData {
    let terminal = h.terminal_events(request);
    let EventData::Outcome(o) = &terminal[0].data else {
        panic!("{terminal:?}")
    };
    o.clone()
}

#[tokio::test]
async fn an_offboarding_keeps_no_container_that_was_never_created() {
    let h = EngineHarness::new();
    let engine = h.engine("w");
    // The onboarding fails before any container exists, and is rolled back.
    h.cloud.set_faults(CloudFaults {
        permanent: vec!["create:blob_container".into()],
        ..Default::default()
    });
    let onboard = OnboardBuilder::tenant("acme").request("on-1").build();
    h.drive(&engine, EngineHarness::first_message(&onboard))
        .await;
    assert_eq!(h.terminal_events("on-1")[0].ty, events::ONBOARDING_FAILED);
    h.cloud.set_faults(CloudFaults::default());

    let off = OffboardBuilder::tenant("acme").request("off-1").build();
    h.drive(&engine, EngineHarness::first_message(&off)).await;

    let o = outcome(&h, "off-1");
    assert_eq!(o.state, "Offboarded", "{o:?}");
    assert!(o.remaining.is_empty(), "nothing to keep: {:?}", o.remaining);
    assert!(h.cloud.inventory().is_empty(), "{:?}", h.cloud.inventory());
}

#[tokio::test]
async fn a_purge_releases_the_tenants_names_and_keeping_data_does_not() {
    let h = EngineHarness::new();
    let engine = h.engine("w");
    let acme = OnboardBuilder::tenant("acme").request("on-1").build();
    h.drive(&engine, EngineHarness::first_message(&acme)).await;
    let claims = |tenant: &str| {
        onboarding_saga::name_claims(
            &onboarding_contract::TenantNames::derive(tenant).unwrap(),
            "default",
        )
    };
    let held_by_acme = |h: &EngineHarness| {
        let journal = h.journal.clone();
        async move {
            matches!(
                onboarding_journal::Journal::claim_names(
                    &*journal,
                    "someone-else",
                    &claims("acme")
                )
                .await,
                Err(onboarding_journal::JournalError::NameTaken { .. })
            )
        }
    };

    // Offboarded, data kept: the container still carries the tenant's name.
    let keep = OffboardBuilder::tenant("acme").request("off-1").build();
    h.drive(&engine, EngineHarness::first_message(&keep)).await;
    assert_eq!(outcome(&h, "off-1").remaining.len(), 1);
    assert!(held_by_acme(&h).await, "names kept while the data is");

    let purge = OffboardBuilder::tenant("acme")
        .request("off-2")
        .purge_data()
        .build();
    h.drive(&engine, EngineHarness::first_message(&purge)).await;
    let o = outcome(&h, "off-2");
    assert_eq!(o.state, "Offboarded");
    assert!(o.remaining.is_empty(), "{:?}", o.remaining);
    assert!(!held_by_acme(&h).await, "a purge releases the names");
}
