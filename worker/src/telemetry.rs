//! Logs, traces and metrics export: the `tracing` subscriber (text or JSON logs on stderr), and,
//! when the binary passes an OTLP endpoint, OpenTelemetry traces and metrics exported over
//! OTLP/HTTP (protobuf). Also the W3C trace-context helpers the runner uses so that every
//! continuation of one request joins one trace.
//!
//! May touch: stderr, and the OTLP endpoint it is given (from the SDK's own threads: the batch
//! span processor and the periodic metric reader, each with a blocking HTTP client). No
//! environment reads here: the binary reads `OTEL_EXPORTER_OTLP_ENDPOINT` and `RUST_LOG`. (The
//! OpenTelemetry SDK itself still honours its standard `OTEL_*` variables, e.g. headers and
//! resource attributes.)

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// The instrumentation scope of the worker's spans and metrics.
pub const SCOPE: &str = "tenant-onboarding-worker";

/// What [`init`] sets up.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// `service.name` of traces and metrics.
    pub service_name: String,
    /// OTLP/HTTP base endpoint (`http://collector:4318`); `/v1/traces` and `/v1/metrics` are
    /// appended. `None`: nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// An `EnvFilter` directive, e.g. `info,worker=debug`.
    pub filter: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("the log filter {filter:?} is invalid: {message}; use e.g. RUST_LOG=info,worker=debug")]
    Filter { filter: String, message: String },
    #[error(
        "cannot set up the OTLP {signal} exporter for {endpoint}: {message}; check OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://otel-collector:4318)"
    )]
    Exporter {
        signal: &'static str,
        endpoint: String,
        message: String,
    },
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(String),
}

/// The exporters behind the subscriber; [`Telemetry::shutdown`] flushes them.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// The OTLP meter, when metrics are exported (give it to [`crate::metrics::Metrics::export_to`]).
    pub fn meter(&self) -> Option<opentelemetry::metrics::Meter> {
        use opentelemetry::metrics::MeterProvider as _;
        self.meter_provider.as_ref().map(|p| p.meter(SCOPE))
    }

    /// Whether traces and metrics are exported.
    pub fn exporting(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Export what is buffered and stop the exporters. Call outside the async runtime: the
    /// exporters block.
    pub fn shutdown(&self) {
        if let Some(p) = &self.tracer_provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("worker: flushing traces failed: {e}");
        }
        if let Some(p) = &self.meter_provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("worker: flushing metrics failed: {e}");
        }
    }
}

/// Install the global `tracing` subscriber: logs in the configured format on stderr, plus the
/// OpenTelemetry layer when an OTLP endpoint is given. Call once, before the async runtime starts.
pub fn init(settings: &TelemetrySettings) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_new(&settings.filter).map_err(|e| TelemetryError::Filter {
        filter: settings.filter.clone(),
        message: e.to_string(),
    })?;
    let telemetry = match &settings.otlp_endpoint {
        Some(endpoint) => exporters(endpoint, &settings.service_name)?,
        None => Telemetry::default(),
    };
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    layers.push(match settings.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
    });
    if let Some(provider) = &telemetry.tracer_provider {
        layers.push(otel_layer(provider).boxed());
    }
    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(telemetry)
}

/// The layer that turns `tracing` spans into OpenTelemetry spans of `provider`.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(SCOPE))
}

fn resource(service_name: &str) -> Resource {
    Resource::builder()
        .with_service_name(service_name.to_string())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

fn exporters(endpoint: &str, service_name: &str) -> Result<Telemetry, TelemetryError> {
    let base = endpoint.trim_end_matches('/');
    let err = |signal, e: &dyn std::fmt::Display| TelemetryError::Exporter {
        signal,
        endpoint: base.to_string(),
        message: e.to_string(),
    };
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{base}/v1/traces"))
        .build()
        .map_err(|e| err("trace", &e))?;
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_endpoint(format!("{base}/v1/metrics"))
        .build()
        .map_err(|e| err("metric", &e))?;
    let resource = resource(service_name);
    Ok(Telemetry {
        tracer_provider: Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(spans)
                .with_resource(resource.clone())
                .build(),
        ),
        meter_provider: Some(
            SdkMeterProvider::builder()
                .with_periodic_exporter(metrics)
                .with_resource(resource)
                .build(),
        ),
    })
}

/// Make the remote context in a W3C `traceparent` the parent of `span`, so that the span joins
/// the sender's trace. Call before the span is first entered. Returns whether it took (false for
/// a malformed value, or when no OpenTelemetry layer is installed).
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) -> bool {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx).is_ok()
}

/// The W3C `traceparent` of `span`; `None` when no OpenTelemetry layer records it.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::InMemorySpanExporterBuilder;

    #[test]
    fn a_span_with_a_remote_parent_joins_its_trace_and_propagates_it() {
        let exporter = InMemorySpanExporterBuilder::new().build();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(otel_layer(&provider));
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("message");
            assert!(set_remote_parent(&span, tp));
            let propagated = traceparent_of(&span).expect("a traceparent");
            assert!(
                propagated.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{propagated}"
            );
            assert!(
                !propagated.contains("00f067aa0ba902b7"),
                "a new span id: {propagated}"
            );
            span.in_scope(|| tracing::info!("inside"));
        });
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().expect("spans");
        let span = spans
            .iter()
            .find(|s| s.name == "message")
            .expect("message span");
        assert_eq!(
            span.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        let span = tracing::info_span!("message");
        assert!(!set_remote_parent(&span, "not-a-traceparent"));
        assert_eq!(traceparent_of(&span), None);
    }
}
