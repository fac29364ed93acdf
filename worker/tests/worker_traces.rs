//! Traces across continuations: the runner in process against the simulators, its spans
//! captured by an in-memory OpenTelemetry exporter through the same layer `worker run` installs.
//! Every message of one request (the command and each continuation) must land in one trace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{RunnerHarness, has_event, run_until};
use onboarding_testkit::fixtures::OnboardBuilder;
use opentelemetry::trace::SpanId;
use opentelemetry_sdk::trace::{
    InMemorySpanExporter, InMemorySpanExporterBuilder, SdkTracerProvider, SpanData,
};
use serde_json::Value;
use tracing_subscriber::layer::SubscriberExt;
use worker::metrics::Metrics;
use worker::runner::Runner;

/// Capture spans of this test's thread (the tests run on a current-thread runtime, so the
/// runner's tasks do too).
fn capture() -> (
    InMemorySpanExporter,
    SdkTracerProvider,
    tracing::subscriber::DefaultGuard,
) {
    let exporter = InMemorySpanExporterBuilder::new().build();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(worker::telemetry::otel_layer(&provider));
    let guard = tracing::subscriber::set_default(subscriber);
    (exporter, provider, guard)
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// Onboard `tenant` with `traceparent` on the command; the finished message spans and events.
async fn onboard(tenant: &str, traceparent: Option<&str>) -> (Vec<SpanData>, Vec<Value>) {
    let (exporter, provider, _guard) = capture();
    let h = RunnerHarness::start(sim::SimOptions::default(), None).await;
    let cx = h.context(Metrics::default()).await;
    let mut events = cx.topic.subscribe("test").await.unwrap();
    let mut message = OnboardBuilder::tenant(tenant)
        .request("r1")
        .with_workload()
        .message();
    if let Some(tp) = traceparent {
        message = message.traceparent(tp);
    }
    cx.queue.send(message.build()).await.unwrap();
    let seen = run_until(&Runner::new(cx), &mut events, |seen| {
        has_event(seen, "tenant.onboarded", tenant)
    })
    .await;
    provider.force_flush().unwrap();
    (exporter.get_finished_spans().unwrap(), seen)
}

#[tokio::test]
async fn every_continuation_joins_the_trace_of_the_commands_traceparent() {
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let producer_span = "00f067aa0ba902b7";
    let (spans, events) = onboard("acme", Some(&format!("00-{trace}-{producer_span}-01"))).await;

    let messages: Vec<&SpanData> = spans.iter().filter(|s| s.name == "message").collect();
    let continuations = messages
        .iter()
        .filter(|s| attribute(s, "message.id").is_some_and(|id| id.starts_with("r1:")))
        .count();
    assert!(
        continuations >= 1,
        "the node pool needs a continuation; message spans: {messages:#?}"
    );
    assert_eq!(messages.len(), continuations + 1, "{messages:#?}");
    for m in &messages {
        assert_eq!(m.span_context.trace_id().to_string(), trace, "{m:#?}");
        assert_eq!(m.parent_span_id.to_string(), producer_span, "{m:#?}");
        assert_eq!(attribute(m, "tenant.id").as_deref(), Some("acme"));
    }
    // Steps are children of the message that ran them.
    let steps: Vec<&SpanData> = spans.iter().filter(|s| s.name == "step").collect();
    assert!(steps.len() >= 9, "{} step spans", steps.len());
    let message_ids: Vec<SpanId> = messages.iter().map(|m| m.span_context.span_id()).collect();
    for s in &steps {
        assert_eq!(s.span_context.trace_id().to_string(), trace);
        assert!(message_ids.contains(&s.parent_span_id), "{s:#?}");
    }
    // And the events carry the trace on to consumers.
    let onboarded = events
        .iter()
        .find(|e| e["type"] == "tenant.onboarded")
        .unwrap();
    assert_eq!(
        onboarded["traceparent"],
        format!("00-{trace}-{producer_span}-01")
    );
}

#[tokio::test]
async fn a_command_without_trace_context_starts_a_trace_that_its_continuations_join() {
    let (spans, events) = onboard("globex", None).await;

    let messages: Vec<&SpanData> = spans.iter().filter(|s| s.name == "message").collect();
    let first = messages
        .iter()
        .find(|s| attribute(s, "message.id").as_deref() == Some("r1"))
        .expect("the command's span");
    assert_eq!(
        first.parent_span_id,
        SpanId::INVALID,
        "a new root: {first:#?}"
    );
    let trace = first.span_context.trace_id();
    let continuations: Vec<&&SpanData> = messages
        .iter()
        .filter(|s| attribute(s, "message.id").is_some_and(|id| id.starts_with("r1:")))
        .collect();
    assert!(!continuations.is_empty(), "{messages:#?}");
    for c in continuations {
        assert_eq!(c.span_context.trace_id(), trace, "{c:#?}");
        assert_eq!(c.parent_span_id, first.span_context.span_id(), "{c:#?}");
    }
    let onboarded = events
        .iter()
        .find(|e| e["type"] == "tenant.onboarded")
        .unwrap();
    let tp = onboarded["traceparent"].as_str().expect("a traceparent");
    assert!(tp.starts_with(&format!("00-{trace}-")), "{tp}");
}
