//! The worker's metrics: a small registry of counters and histograms that renders the Prometheus
//! text format for `/metrics` and, once [`Metrics::export_to`] is given an OpenTelemetry meter,
//! mirrors every recording to OTLP.
//!
//! Touches nothing outside the process. One [`Metrics`] travels in the
//! [`crate::context::Context`] (clones share the registry), so tests get their own and read it
//! back with [`Metrics::counter`] and [`Metrics::histogram_count`].
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `onboarding_messages_received_total` | counter | |
//! | `onboarding_messages_settled_total` | counter | `outcome`: completed, dead_lettered, abandoned |
//! | `onboarding_step_duration_seconds` | histogram | `step`, `phase` (forward, compensation), `outcome` (succeeded, pending, transient, permanent, invalid_input) |
//! | `onboarding_sagas_finished_total` | counter | `state`: succeeded, failed, compensation_failed, offboarded |
//! | `onboarding_compensations_total` | counter | `trigger`: step_failed, cancelled |
//! | `onboarding_dead_letters_total` | counter | `reason`: the reject reason code |
//! | `onboarding_arm_throttled_total` | counter | |
//!
//! Label values come from closed sets (step names, reason codes), never from tenant input, so
//! the number of series stays bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

pub const MESSAGES_RECEIVED: &str = "onboarding_messages_received_total";
pub const MESSAGES_SETTLED: &str = "onboarding_messages_settled_total";
pub const STEP_DURATION: &str = "onboarding_step_duration_seconds";
pub const SAGAS_FINISHED: &str = "onboarding_sagas_finished_total";
pub const COMPENSATIONS: &str = "onboarding_compensations_total";
pub const DEAD_LETTERS: &str = "onboarding_dead_letters_total";
pub const ARM_THROTTLED: &str = "onboarding_arm_throttled_total";

/// Upper bounds (seconds) of the step duration buckets: a step call is bounded by the in-process
/// retry budget (seconds); long-running operations are polled across calls.
pub const STEP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Histogram,
}

/// One metric family: its Prometheus name, help, type and label names.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    /// The OpenTelemetry instrument name (no `_total`/unit suffix: OTLP carries type and unit).
    otel_name: &'static str,
    unit: &'static str,
}

const FAMILIES: &[Family] = &[
    Family {
        name: MESSAGES_RECEIVED,
        help: "Command messages received from the queue.",
        kind: Kind::Counter,
        labels: &[],
        otel_name: "onboarding.messages.received",
        unit: "{message}",
    },
    Family {
        name: MESSAGES_SETTLED,
        help: "Command messages settled, by outcome (completed, dead_lettered, abandoned).",
        kind: Kind::Counter,
        labels: &["outcome"],
        otel_name: "onboarding.messages.settled",
        unit: "{message}",
    },
    Family {
        name: STEP_DURATION,
        help: "Duration of one saga step call (including in-process retries), by step, phase and outcome.",
        kind: Kind::Histogram,
        labels: &["step", "phase", "outcome"],
        otel_name: "onboarding.step.duration",
        unit: "s",
    },
    Family {
        name: SAGAS_FINISHED,
        help: "Saga runs that reached a terminal state, by state.",
        kind: Kind::Counter,
        labels: &["state"],
        otel_name: "onboarding.sagas.finished",
        unit: "{saga}",
    },
    Family {
        name: COMPENSATIONS,
        help: "Saga runs that switched to compensation, by what triggered it.",
        kind: Kind::Counter,
        labels: &["trigger"],
        otel_name: "onboarding.compensations",
        unit: "{saga}",
    },
    Family {
        name: DEAD_LETTERS,
        help: "Messages dead-lettered by the worker, by reason code.",
        kind: Kind::Counter,
        labels: &["reason"],
        otel_name: "onboarding.dead_letters",
        unit: "{message}",
    },
    Family {
        name: ARM_THROTTLED,
        help: "HTTP 429 (throttled) answers from Azure Resource Manager.",
        kind: Kind::Counter,
        labels: &[],
        otel_name: "onboarding.arm.throttled",
        unit: "{response}",
    },
];

/// Series shown at 0 before anything happens, so that rates and alerts work from the start.
const SEEDED: &[(&str, &[&str])] = &[
    (MESSAGES_RECEIVED, &[]),
    (MESSAGES_SETTLED, &["completed"]),
    (MESSAGES_SETTLED, &["dead_lettered"]),
    (MESSAGES_SETTLED, &["abandoned"]),
    (SAGAS_FINISHED, &["succeeded"]),
    (SAGAS_FINISHED, &["failed"]),
    (SAGAS_FINISHED, &["compensation_failed"]),
    (SAGAS_FINISHED, &["offboarded"]),
    (ARM_THROTTLED, &[]),
];

/// Where a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettledOutcome {
    Completed,
    DeadLettered,
    Abandoned,
}

impl SettledOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SettledOutcome::Completed => "completed",
            SettledOutcome::DeadLettered => "dead_lettered",
            SettledOutcome::Abandoned => "abandoned",
        }
    }
}

#[derive(Debug, Clone)]
struct Buckets {
    /// Per bucket of [`STEP_BUCKETS`] (not cumulative), then the overflow.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Buckets {
    fn new() -> Self {
        Self {
            counts: vec![0; STEP_BUCKETS.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }
    fn observe(&mut self, v: f64) {
        let i = STEP_BUCKETS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(STEP_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

type SeriesKey = (&'static str, Vec<String>);

#[derive(Debug, Default)]
struct State {
    counters: BTreeMap<SeriesKey, u64>,
    histograms: BTreeMap<SeriesKey, Buckets>,
}

/// OpenTelemetry instruments mirroring the families, by family name.
#[derive(Debug)]
struct Otel {
    counters: BTreeMap<&'static str, Counter<u64>>,
    histograms: BTreeMap<&'static str, Histogram<f64>>,
}

#[derive(Debug, Default)]
struct Registry {
    state: Mutex<State>,
    otel: OnceLock<Otel>,
}

/// A handle on one registry; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Registry>,
}

impl Metrics {
    /// Also record everything from now on through `meter` (OTLP export). Only the first call
    /// has an effect.
    pub fn export_to(&self, meter: &Meter) {
        let mut counters = BTreeMap::new();
        let mut histograms = BTreeMap::new();
        for f in FAMILIES {
            match f.kind {
                Kind::Counter => {
                    counters.insert(
                        f.name,
                        meter
                            .u64_counter(f.otel_name)
                            .with_description(f.help)
                            .with_unit(f.unit)
                            .build(),
                    );
                }
                Kind::Histogram => {
                    histograms.insert(
                        f.name,
                        meter
                            .f64_histogram(f.otel_name)
                            .with_description(f.help)
                            .with_unit(f.unit)
                            .with_boundaries(STEP_BUCKETS.to_vec())
                            .build(),
                    );
                }
            }
        }
        let _ = self.inner.otel.set(Otel {
            counters,
            histograms,
        });
    }

    pub fn message_received(&self) {
        self.add(MESSAGES_RECEIVED, &[]);
    }

    pub fn message_settled(&self, outcome: SettledOutcome) {
        self.add(MESSAGES_SETTLED, &[outcome.as_str()]);
    }

    pub fn dead_lettered(&self, reason: &str) {
        self.add(DEAD_LETTERS, &[reason]);
    }

    /// The value of a counter series (0 if never recorded). `labels` in the family's order.
    pub fn counter(&self, name: &str, labels: &[&str]) -> u64 {
        let state = self.lock();
        state
            .counters
            .iter()
            .find(|((n, l), _)| {
                *n == name && l.iter().map(String::as_str).eq(labels.iter().copied())
            })
            .map_or(0, |(_, v)| *v)
    }

    /// How many observations a histogram series holds.
    pub fn histogram_count(&self, name: &str, labels: &[&str]) -> u64 {
        let state = self.lock();
        state
            .histograms
            .iter()
            .find(|((n, l), _)| {
                *n == name && l.iter().map(String::as_str).eq(labels.iter().copied())
            })
            .map_or(0, |(_, b)| b.count)
    }

    /// Every family in the Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let mut state = self.lock();
        for (name, labels) in SEEDED {
            state
                .counters
                .entry((name, labels.iter().map(|s| (*s).to_string()).collect()))
                .or_insert(0);
        }
        let mut out = String::new();
        for f in FAMILIES {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            match f.kind {
                Kind::Counter => {
                    let _ = writeln!(out, "# TYPE {} counter", f.name);
                    for ((_, values), v) in state.counters.iter().filter(|((n, _), _)| *n == f.name)
                    {
                        let _ =
                            writeln!(out, "{}{} {v}", f.name, label_set(f.labels, values, None));
                    }
                }
                Kind::Histogram => {
                    let _ = writeln!(out, "# TYPE {} histogram", f.name);
                    for ((_, values), b) in
                        state.histograms.iter().filter(|((n, _), _)| *n == f.name)
                    {
                        let mut cumulative = 0;
                        for (i, bound) in STEP_BUCKETS.iter().enumerate() {
                            cumulative += b.counts[i];
                            let le = bound.to_string();
                            let _ = writeln!(
                                out,
                                "{}_bucket{} {cumulative}",
                                f.name,
                                label_set(f.labels, values, Some(&le))
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{}_bucket{} {}",
                            f.name,
                            label_set(f.labels, values, Some("+Inf")),
                            b.count
                        );
                        let plain = label_set(f.labels, values, None);
                        let _ = writeln!(out, "{}_sum{plain} {}", f.name, b.sum);
                        let _ = writeln!(out, "{}_count{plain} {}", f.name, b.count);
                    }
                }
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves at worst one sample missing.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn family(name: &str) -> Option<&'static Family> {
        FAMILIES.iter().find(|f| f.name == name)
    }

    fn add(&self, name: &'static str, labels: &[&str]) {
        let Some(f) = Self::family(name) else { return };
        let values: Vec<String> = labels.iter().map(|s| (*s).to_string()).collect();
        *self.lock().counters.entry((f.name, values)).or_insert(0) += 1;
        if let Some(otel) = self.inner.otel.get()
            && let Some(c) = otel.counters.get(f.name)
        {
            c.add(1, &attributes(f, labels));
        }
    }

    fn observe(&self, name: &'static str, labels: &[&str], value: f64) {
        let Some(f) = Self::family(name) else { return };
        let values: Vec<String> = labels.iter().map(|s| (*s).to_string()).collect();
        self.lock()
            .histograms
            .entry((f.name, values))
            .or_insert_with(Buckets::new)
            .observe(value);
        if let Some(otel) = self.inner.otel.get()
            && let Some(h) = otel.histograms.get(f.name)
        {
            h.record(value, &attributes(f, labels));
        }
    }
}

fn attributes(f: &Family, values: &[&str]) -> Vec<KeyValue> {
    f.labels
        .iter()
        .zip(values)
        .map(|(k, v)| KeyValue::new(*k, (*v).to_string()))
        .collect()
}

/// `{a="x",b="y"}` (with `le` last for buckets), or nothing without labels.
fn label_set(names: &[&str], values: &[String], le: Option<&str>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl onboarding_core::Recorder for Metrics {
    fn step_finished(&self, step: &str, phase: &str, outcome: &str, duration: Duration) {
        self.observe(
            STEP_DURATION,
            &[step, phase, outcome],
            duration.as_secs_f64(),
        );
    }
    fn saga_finished(&self, state: &str) {
        self.add(SAGAS_FINISHED, &[state]);
    }
    fn compensation_started(&self, trigger: &str) {
        self.add(COMPENSATIONS, &[trigger]);
    }
    fn arm_throttled(&self) {
        self.add(ARM_THROTTLED, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onboarding_core::Recorder as _;

    #[test]
    fn counters_render_with_help_type_and_labels() {
        let m = Metrics::default();
        m.message_received();
        m.message_received();
        m.message_settled(SettledOutcome::Completed);
        m.dead_lettered("MalformedJson");
        let text = m.render_prometheus();
        assert!(
            text.contains("# TYPE onboarding_messages_received_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\nonboarding_messages_received_total 2\n"),
            "{text}"
        );
        assert!(text.contains("onboarding_messages_settled_total{outcome=\"completed\"} 1\n"));
        assert!(text.contains("onboarding_messages_settled_total{outcome=\"abandoned\"} 0\n"));
        assert!(text.contains("onboarding_dead_letters_total{reason=\"MalformedJson\"} 1\n"));
        assert_eq!(m.counter(MESSAGES_RECEIVED, &[]), 2);
        assert_eq!(m.counter(DEAD_LETTERS, &["MalformedJson"]), 1);
        assert_eq!(m.counter(DEAD_LETTERS, &["UnknownTarget"]), 0);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf_sum_and_count() {
        let m = Metrics::default();
        // Binary fractions, so that the sum prints exactly.
        m.step_finished(
            "node_pool",
            "forward",
            "pending",
            Duration::from_micros(15_625),
        );
        m.step_finished(
            "node_pool",
            "forward",
            "pending",
            Duration::from_millis(250),
        );
        m.step_finished("node_pool", "forward", "pending", Duration::from_secs(120));
        let text = m.render_prometheus();
        let series = "step=\"node_pool\",phase=\"forward\",outcome=\"pending\"";
        assert!(
            text.contains(&format!(
                "onboarding_step_duration_seconds_bucket{{{series},le=\"0.01\"}} 0\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "onboarding_step_duration_seconds_bucket{{{series},le=\"0.025\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "onboarding_step_duration_seconds_bucket{{{series},le=\"0.25\"}} 2\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "onboarding_step_duration_seconds_bucket{{{series},le=\"60\"}} 2\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "onboarding_step_duration_seconds_bucket{{{series},le=\"+Inf\"}} 3\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "onboarding_step_duration_seconds_count{{{series}}} 3\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "onboarding_step_duration_seconds_sum{{{series}}} 120.265625\n"
            )),
            "{text}"
        );
        assert_eq!(
            m.histogram_count(STEP_DURATION, &["node_pool", "forward", "pending"]),
            3
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            label_set(&["reason"], &["a\"b\\c\nd".to_string()], None),
            "{reason=\"a\\\"b\\\\c\\nd\"}"
        );
    }

    #[test]
    fn clones_share_one_registry() {
        let m = Metrics::default();
        m.clone().arm_throttled();
        assert_eq!(m.counter(ARM_THROTTLED, &[]), 1);
    }
}
