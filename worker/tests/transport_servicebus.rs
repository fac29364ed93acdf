//! Live tests of the Azure Service Bus transport against the Service Bus emulator or a real
//! namespace. They need a broker this machine may not have, so each one checks the environment
//! first and, when it is not set, prints exactly what it needs and returns.
//!
//! - `ONBOARD_SB_CONNECTION_STRING`: a connection string (the emulator's, with
//!   `UseDevelopmentEmulator=true`, or a namespace's with local auth enabled), OR
//!   `ONBOARD_SB_NAMESPACE`: `<name>.servicebus.windows.net`, authenticated with the Azure CLI's
//!   login (`az account get-access-token`; `ONBOARD_SB_TENANT_ID` picks the Entra tenant);
//! - `ONBOARD_SB_QUEUE`: a session-enabled queue used only by these tests;
//! - `ONBOARD_SB_TOPIC` and `ONBOARD_SB_SUBSCRIPTION`: a topic and an existing subscription.
//!
//! `docs/servicebus.md` creates all of these. The live tests run one at a time (they share the
//! queue) and drain leftovers of earlier runs of this file, which they recognise by the
//! `test.suite` application property; anything else on the queue stops them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use onboarding_core::{AccessToken, AuthError, TokenCredential};
use onboarding_core::{Classify, ErrorClass};
use onboarding_transport::servicebus::{
    DIAGNOSTIC_ID, ServiceBusAuth, ServiceBusSettings, ServiceBusTransport, TRACEPARENT,
};
use onboarding_transport::{
    Delivery, OutgoingMessage, Queue, ReceivedMessage, Topic, TransportError,
};

const SUITE: &str = "transport_servicebus";
/// How long one receive waits; the loops below retry it a bounded number of times.
const WAIT: Duration = Duration::from_secs(5);

/// The live tests share one queue and one subscription: one at a time.
static LIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Live {
    settings: ServiceBusSettings,
    subscription: String,
    uses_connection_string: bool,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The live settings, or `None` after printing what is missing.
fn live(test: &str) -> Option<Live> {
    let connection_string = var("ONBOARD_SB_CONNECTION_STRING");
    let namespace = var("ONBOARD_SB_NAMESPACE");
    let queue = var("ONBOARD_SB_QUEUE");
    let topic = var("ONBOARD_SB_TOPIC");
    let subscription = var("ONBOARD_SB_SUBSCRIPTION");
    let mut missing = Vec::new();
    if connection_string.is_none() && namespace.is_none() {
        missing.push(
            "ONBOARD_SB_CONNECTION_STRING (emulator: \"Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;\") \
             or ONBOARD_SB_NAMESPACE (<name>.servicebus.windows.net, with `az login` done and optionally ONBOARD_SB_TENANT_ID)",
        );
    }
    if queue.is_none() {
        missing.push("ONBOARD_SB_QUEUE (a session-enabled queue for these tests only)");
    }
    if topic.is_none() {
        missing.push("ONBOARD_SB_TOPIC");
    }
    if subscription.is_none() {
        missing.push("ONBOARD_SB_SUBSCRIPTION (an existing subscription of ONBOARD_SB_TOPIC)");
    }
    let (Some(queue), Some(topic), Some(subscription)) = (queue, topic, subscription) else {
        print_skip(test, &missing);
        return None;
    };
    let (auth, namespace, uses_connection_string) = match (connection_string, namespace) {
        (Some(cs), ns) => (
            ServiceBusAuth::ConnectionString(cs),
            ns.unwrap_or_else(|| "the connection string's namespace".into()),
            true,
        ),
        (None, Some(ns)) => (
            ServiceBusAuth::Credential(Arc::new(AzureCliToken {
                tenant: var("ONBOARD_SB_TENANT_ID"),
            })),
            ns,
            false,
        ),
        (None, None) => {
            print_skip(test, &missing);
            return None;
        }
    };
    let mut settings = ServiceBusSettings::new(namespace, queue, topic, auth);
    settings.operation_timeout = Duration::from_secs(30);
    Some(Live {
        settings,
        subscription,
        uses_connection_string,
    })
}

fn print_skip(test: &str, missing: &[&str]) {
    eprintln!(
        "SKIPPED {test}: needs a Service Bus (emulator or namespace). Set:\n  - {}\nSee docs/servicebus.md for creating the entities.",
        missing.join("\n  - ")
    );
}

/// A developer's Azure CLI login as a token source, so a tester needs no secret.
#[derive(Debug)]
struct AzureCliToken {
    tenant: Option<String>,
}

#[async_trait::async_trait]
impl TokenCredential for AzureCliToken {
    async fn token(&self, scope: &str) -> Result<AccessToken, AuthError> {
        let fail = |message: String| AuthError {
            credential: "Azure CLI".into(),
            scope: scope.into(),
            message,
            class: ErrorClass::Permanent,
        };
        let mut cmd = tokio::process::Command::new("az");
        cmd.args([
            "account",
            "get-access-token",
            "--scope",
            scope,
            "-o",
            "json",
        ]);
        if let Some(tenant) = &self.tenant {
            cmd.args(["--tenant", tenant]);
        }
        let out = cmd.output().await.map_err(|e| {
            fail(format!(
                "cannot run `az` ({e}); install the Azure CLI and `az login`"
            ))
        })?;
        if !out.status.success() {
            return Err(fail(format!(
                "`az account get-access-token` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| fail(format!("unreadable `az` output: {e}")))?;
        let token = v["accessToken"]
            .as_str()
            .ok_or_else(|| fail("`az` output has no accessToken".into()))?
            .to_string();
        let expires_on = v["expires_on"]
            .as_i64()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
            .unwrap_or_else(|| Utc::now() + chrono::Duration::minutes(5));
        Ok(AccessToken { token, expires_on })
    }
}

fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

fn command(id: &str, session: &str) -> OutgoingMessage {
    let mut props = BTreeMap::new();
    props.insert("test.suite".to_string(), SUITE.to_string());
    OutgoingMessage {
        message_id: id.to_string(),
        session_id: Some(session.to_string()),
        content_type: Some("application/json".into()),
        subject: Some("OnboardTenant".into()),
        correlation_id: Some(format!("corr-{id}")),
        body: format!(r#"{{"tenant_id":"{session}","request_id":"{id}"}}"#).into_bytes(),
        application_properties: props,
        scheduled_enqueue_time: None,
    }
}

fn from_this_suite(m: &ReceivedMessage) -> bool {
    m.application_properties
        .get("test.suite")
        .map(String::as_str)
        == Some(SUITE)
}

/// Receive until `want` matches, completing leftovers of earlier runs of this file on the way;
/// `None` when `rounds` receives of [`WAIT`] brought nothing wanted.
async fn receive_wanted(
    queue: &ServiceBusTransport,
    rounds: usize,
    want: impl Fn(&ReceivedMessage) -> bool,
) -> Option<Delivery> {
    for _ in 0..rounds {
        let Some(d) = queue.receive(WAIT).await.expect("receive") else {
            continue;
        };
        if want(&d.message) {
            return Some(d);
        }
        assert!(
            from_this_suite(&d.message),
            "queue {} holds message {:?} that is not from this test suite; give the tests a queue of their own",
            queue.settings().queue,
            d.message.message_id
        );
        queue.complete(&d.lock).await.expect("complete a leftover");
    }
    None
}

async fn connect(live: &Live) -> ServiceBusTransport {
    ServiceBusTransport::connect(live.settings.clone())
        .await
        .expect("connect to Service Bus")
}

#[tokio::test]
async fn a_sent_command_is_received_with_every_property_and_completed_once() {
    let Some(live) = live("a_sent_command_is_received_with_every_property_and_completed_once")
    else {
        return;
    };
    let _one_at_a_time = LIVE.lock().await;
    let sb = connect(&live).await;
    let run = run_id();
    let session = format!("tenant-{run}");
    let mut m = command(&format!("req-{run}:0"), &session);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    m.application_properties
        .insert(TRACEPARENT.into(), traceparent.into());
    m.application_properties
        .insert("attempt".into(), "1".into());
    sb.send(m.clone()).await.expect("send");

    let d = receive_wanted(&sb, 12, |r| r.message_id == m.message_id)
        .await
        .expect("the sent command arrives");
    let r = &d.message;
    assert_eq!(r.session_id.as_deref(), Some(session.as_str()));
    assert_eq!(r.subject, m.subject);
    assert_eq!(r.content_type, m.content_type);
    assert_eq!(r.correlation_id, m.correlation_id);
    assert_eq!(r.body, m.body);
    assert_eq!(r.application_properties["attempt"], "1");
    assert_eq!(r.application_properties[TRACEPARENT], traceparent);
    assert_eq!(r.application_properties[DIAGNOSTIC_ID], traceparent);
    assert_eq!(r.delivery_count, 1);
    assert!(r.sequence_number > 0);
    assert!(d.locked_until > r.enqueued_time);

    let renewed = sb
        .renew_lock(&d.lock)
        .await
        .expect("renew the session lock");
    assert!(
        renewed >= d.locked_until,
        "a renewed lock does not expire earlier"
    );
    sb.complete(&d.lock).await.expect("complete");
    let again = sb.complete(&d.lock).await.unwrap_err();
    assert!(matches!(again, TransportError::LockLost(_)), "{again}");

    let redelivered = receive_wanted(&sb, 2, |x| x.message_id == m.message_id).await;
    assert!(redelivered.is_none(), "a completed command is gone");
    sb.close().await;
}

#[tokio::test]
async fn a_session_is_held_by_one_receiver_until_its_message_is_settled() {
    let Some(live) = live("a_session_is_held_by_one_receiver_until_its_message_is_settled") else {
        return;
    };
    let _one_at_a_time = LIVE.lock().await;
    let first = connect(&live).await;
    let second = connect(&live).await;
    let run = run_id();
    let session = format!("tenant-{run}");
    let m1 = command(&format!("req-{run}:1"), &session);
    let m2 = command(&format!("req-{run}:2"), &session);
    first.send(m1.clone()).await.expect("send 1");
    first.send(m2.clone()).await.expect("send 2");

    let ours = |r: &ReceivedMessage| r.session_id.as_deref() == Some(session.as_str());
    let d1 = receive_wanted(&first, 12, ours)
        .await
        .expect("first message");
    assert_eq!(
        d1.message.message_id, m1.message_id,
        "a session delivers in order"
    );

    let meanwhile = receive_wanted(&second, 2, ours).await;
    assert!(
        meanwhile.is_none(),
        "while the first receiver holds the session, nobody else gets its messages"
    );

    first.complete(&d1.lock).await.expect("complete 1");
    let d2 = receive_wanted(&second, 12, ours)
        .await
        .expect("the released session goes to the next receiver");
    assert_eq!(d2.message.message_id, m2.message_id);
    second.complete(&d2.lock).await.expect("complete 2");
    first.close().await;
    second.close().await;
}

#[tokio::test]
async fn an_abandoned_command_comes_back_with_a_higher_delivery_count() {
    let Some(live) = live("an_abandoned_command_comes_back_with_a_higher_delivery_count") else {
        return;
    };
    let _one_at_a_time = LIVE.lock().await;
    let sb = connect(&live).await;
    let run = run_id();
    let m = command(&format!("req-{run}:0"), &format!("tenant-{run}"));
    sb.send(m.clone()).await.expect("send");
    let d = receive_wanted(&sb, 12, |r| r.message_id == m.message_id)
        .await
        .expect("first delivery");
    sb.abandon(&d.lock).await.expect("abandon");
    let again = receive_wanted(&sb, 12, |r| r.message_id == m.message_id)
        .await
        .expect("redelivery");
    assert_eq!(again.message.delivery_count, d.message.delivery_count + 1);
    sb.complete(&again.lock).await.expect("complete");
    sb.close().await;
}

#[tokio::test]
async fn a_dead_lettered_command_keeps_its_reason_and_description() {
    let Some(live) = live("a_dead_lettered_command_keeps_its_reason_and_description") else {
        return;
    };
    let _one_at_a_time = LIVE.lock().await;
    let sb = connect(&live).await;
    let run = run_id();
    let m = command(&format!("req-{run}:0"), &format!("tenant-{run}"));
    sb.send(m.clone()).await.expect("send");
    let d = receive_wanted(&sb, 12, |r| r.message_id == m.message_id)
        .await
        .expect("the command arrives");
    let description = "tenant_id: must be 3-40 lowercase letters, digits or '-'";
    sb.dead_letter(&d.lock, "InvalidCommand", description)
        .await
        .expect("dead-letter");

    let mut found = None;
    for _ in 0..12 {
        let Some(dl) = sb.receive_dead_letter(WAIT).await.expect("receive DLQ") else {
            continue;
        };
        if dl.message.message_id == m.message_id {
            found = Some(dl);
            break;
        }
        assert!(
            from_this_suite(&dl.message),
            "the dead-letter queue holds a message not from this suite; give the tests a queue of their own"
        );
        sb.complete(&dl.lock).await.expect("drain a leftover");
    }
    let dl = found.expect("the dead-lettered command is in the dead-letter queue");
    assert_eq!(
        dl.message.dead_letter_reason.as_deref(),
        Some("InvalidCommand")
    );
    assert_eq!(
        dl.message.dead_letter_description.as_deref(),
        Some(description)
    );
    assert_eq!(dl.message.body, m.body);
    assert!(
        !dl.message
            .application_properties
            .contains_key("DeadLetterReason")
    );

    let peeked = sb
        .peek_dead_letters(dl.message.sequence_number, 10)
        .await
        .expect("peek the DLQ");
    let seen = peeked
        .iter()
        .find(|p| p.message_id == m.message_id)
        .expect("peek shows the locked dead letter too");
    assert_eq!(seen.dead_letter_reason.as_deref(), Some("InvalidCommand"));

    sb.complete(&dl.lock).await.expect("remove it from the DLQ");
    sb.close().await;
}

#[tokio::test]
async fn a_scheduled_command_is_invisible_until_its_enqueue_time() {
    let Some(live) = live("a_scheduled_command_is_invisible_until_its_enqueue_time") else {
        return;
    };
    let _one_at_a_time = LIVE.lock().await;
    let sb = connect(&live).await;
    let run = run_id();
    let mut m = command(&format!("req-{run}:1"), &format!("tenant-{run}"));
    // Far enough ahead that the first look below is surely before it.
    let at = Utc::now() + chrono::Duration::seconds(20);
    m.scheduled_enqueue_time = Some(at);
    sb.send(m.clone()).await.expect("schedule");

    let early = receive_wanted(&sb, 1, |r| r.message_id == m.message_id).await;
    assert!(
        early.is_none(),
        "a scheduled command is not delivered before its time"
    );

    let d = receive_wanted(&sb, 20, |r| r.message_id == m.message_id)
        .await
        .expect("the scheduled command arrives after its time");
    // The broker stamps the enqueue time when the schedule fires; allow for clock skew
    // between this machine and the broker.
    assert!(d.message.enqueued_time >= at - chrono::Duration::seconds(5));
    sb.complete(&d.lock).await.expect("complete");
    sb.close().await;
}

#[tokio::test]
async fn queue_counts_come_from_the_entity_or_are_refused_with_a_reason() {
    let Some(live) = live("queue_counts_come_from_the_entity_or_are_refused_with_a_reason") else {
        return;
    };
    let _one_at_a_time = LIVE.lock().await;
    let sb = connect(&live).await;
    let stats = sb.stats().await;
    if live.uses_connection_string {
        let err = stats.expect_err("no counts over a connection string");
        assert_eq!(err.class(), ErrorClass::InvalidInput);
        assert!(err.to_string().contains("portal"), "{err}");
    } else {
        // docs/servicebus.md gives the tester Data Owner, which carries the Manage claim.
        let s = stats.expect("counts from the entity description");
        assert_eq!(s.locked, 0, "this transport holds nothing yet");
    }
    sb.close().await;
}

#[tokio::test]
async fn a_subscription_receives_published_events() {
    let Some(live) = live("a_subscription_receives_published_events") else {
        return;
    };
    let _one_at_a_time = LIVE.lock().await;
    let sb = connect(&live).await;
    let mut sub = sb
        .subscribe(&live.subscription)
        .await
        .expect("open the existing subscription");
    let run = run_id();
    let mut event = command(&format!("evt-{run}"), &format!("tenant-{run}"));
    event.session_id = None;
    event.subject = Some("tenant.onboarded".into());
    event.content_type = Some("application/cloudevents+json".into());
    event.application_properties.insert(
        TRACEPARENT.into(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
    );
    sb.publish(event.clone()).await.expect("publish");

    let mut got = None;
    for _ in 0..12 {
        match sub.next(WAIT).await.expect("next event") {
            Some(e) if e.message_id == event.message_id => {
                got = Some(e);
                break;
            }
            // Receive-and-delete: leftovers of other runs are simply consumed.
            _ => continue,
        }
    }
    let e = got.expect("the published event reaches the subscription");
    assert_eq!(e.subject.as_deref(), Some("tenant.onboarded"));
    assert_eq!(
        e.content_type.as_deref(),
        Some("application/cloudevents+json")
    );
    assert_eq!(e.body, event.body);
    assert!(e.application_properties.contains_key(DIAGNOSTIC_ID));
    sb.close().await;
}

#[tokio::test]
async fn subscribing_to_a_missing_subscription_says_the_infrastructure_creates_it() {
    let Some(live) =
        live("subscribing_to_a_missing_subscription_says_the_infrastructure_creates_it")
    else {
        return;
    };
    let _one_at_a_time = LIVE.lock().await;
    let sb = connect(&live).await;
    let name = format!("missing-{}", run_id());
    let err = sb.subscribe(&name).await.expect_err("no such subscription");
    let text = err.to_string();
    assert!(
        text.contains(&name) && text.contains("infrastructure"),
        "{text}"
    );
    assert!(!err.is_transient());
    sb.close().await;
}

/// Needs no broker: an unresolvable namespace (`.invalid` never resolves, RFC 2606) must fail
/// the connect as a transient, readable error instead of hanging or panicking.
#[tokio::test]
async fn connecting_to_an_unreachable_namespace_is_a_transient_error_naming_it() {
    let mut settings = ServiceBusSettings::new(
        "nowhere.invalid",
        "commands",
        "tenant-events",
        ServiceBusAuth::ConnectionString(
            "Endpoint=sb://nowhere.invalid;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true;"
                .into(),
        ),
    );
    settings.operation_timeout = Duration::from_secs(10);
    settings.max_retries = 0;
    let err = ServiceBusTransport::connect(settings)
        .await
        .expect_err("nothing to connect to");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("nowhere.invalid"), "{err}");
}

/// Needs no broker: settings are checked before any connection is tried (the namespace is
/// unreachable, so reaching the network would show up as a transient error instead).
#[tokio::test]
async fn settings_without_a_queue_are_refused_before_connecting() {
    let settings = ServiceBusSettings::new(
        "nowhere.invalid",
        "",
        "tenant-events",
        ServiceBusAuth::ConnectionString(
            "Endpoint=sb://nowhere.invalid;UseDevelopmentEmulator=true".into(),
        ),
    );
    let err = ServiceBusTransport::connect(settings)
        .await
        .expect_err("an empty queue name is a configuration error");
    assert_eq!(err.class(), ErrorClass::InvalidInput);
    assert!(err.to_string().contains("queue name is empty"), "{err}");
}

/// The shared transport conformance suite, against the live queue. Topic properties that
/// create subscriptions on the fly are left out: on Service Bus, subscriptions are
/// infrastructure (Bicep), and the topic is covered by the live tests above.
/// `ONBOARD_SB_LOCK_DURATION_SECS` and `ONBOARD_SB_MAX_DELIVERY_COUNT` must match the queue
/// (defaults 60 and 10, as `infra/` creates it); run with `--test-threads=1`.
mod conformance {
    use super::*;
    use onboarding_testkit::transport_conformance::ConformanceEnv;

    async fn env() -> Option<ConformanceEnv> {
        let live = live("transport conformance")?;
        let transport = Arc::new(connect(&live).await);
        let number = |name: &str, default: u64| {
            var(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(default)
        };
        let lock = Duration::from_secs(number("ONBOARD_SB_LOCK_DURATION_SECS", 60));
        let max = u32::try_from(number("ONBOARD_SB_MAX_DELIVERY_COUNT", 10)).unwrap_or(10);
        Some(ConformanceEnv::new(transport.clone(), transport, lock, max))
    }

    onboarding_testkit::transport_conformance_tests!(optional env;
        a_received_message_keeps_its_body_properties_subject_and_session,
        a_completed_message_is_not_delivered_again,
        an_abandoned_message_is_redelivered_with_its_delivery_count_incremented,
        a_message_whose_lock_expires_is_redelivered,
        renewing_a_lock_keeps_the_message_locked_past_its_first_expiry,
        settling_with_a_stale_lock_is_lock_lost,
        a_held_session_goes_to_no_second_receiver_while_other_sessions_do,
        messages_of_one_session_are_delivered_in_send_order,
        a_scheduled_message_is_invisible_until_it_is_due,
        a_duplicate_message_id_is_dropped,
        a_message_past_the_max_delivery_count_is_dead_lettered_with_the_reason,
        a_dead_lettered_message_keeps_its_reason_description_and_content,
        completing_a_dead_letter_delivery_removes_it_and_abandoning_returns_it,
    );
}
