//! The CloudEvents 1.0 (JSON, structured mode) the worker publishes on the events topic.
//!
//! Event ids are UUID v5 of the request id and the event type (and the step, for progress), so a
//! re-published outcome carries the same id and consumers can deduplicate. A `tenant.drifted`
//! event, which no request caused, takes its id from the tenant and a digest of its findings
//! ([`drifted_event`]): the same drift found again is the same event.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const SOURCE: &str = "urn:tenant-onboarding-worker";
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";

pub const ONBOARDED: &str = "tenant.onboarded";
pub const ONBOARDING_FAILED: &str = "tenant.onboarding_failed";
pub const COMPENSATION_FAILED: &str = "tenant.compensation_failed";
pub const OFFBOARDED: &str = "tenant.offboarded";
pub const REQUEST_REJECTED: &str = "request.rejected";
pub const STEP_COMPLETED: &str = "tenant.step_completed";
/// The worker's periodic check found a tenant's live state differing from its spec, or its
/// isolation broken (`[drift] interval_secs`).
pub const DRIFTED: &str = "tenant.drifted";

/// Terminal event types: exactly one of these ends every accepted request.
pub const TERMINAL_TYPES: [&str; 4] = [
    ONBOARDED,
    ONBOARDING_FAILED,
    COMPENSATION_FAILED,
    OFFBOARDED,
];

/// A CloudEvents 1.0 event in JSON structured mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CloudEvent {
    /// Always "1.0".
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// The tenant id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub time: DateTime<Utc>,
    pub datacontenttype: String,
    /// W3C trace context of the request (Distributed Tracing extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub data: EventData,
}

/// The payload, by event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EventData {
    Outcome(OutcomeData),
    Step(StepData),
    Rejected(RejectedData),
    /// Last: it has no request id, so it must not shadow the others when deserialised.
    Drifted(DriftedData),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeData {
    pub request_id: String,
    pub tenant_id: String,
    pub target: String,
    /// `Succeeded`, `Failed`, `CompensationFailed`, `Offboarded`, or `NotFound` (an offboarding of
    /// a tenant the worker has no record of; `notFound` is then true).
    pub state: String,
    /// Outputs of the provisioned steps (ids, client id, namespace...).
    #[serde(default)]
    pub resources: serde_json::Map<String, serde_json::Value>,
    /// Why it failed, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
    /// Resources left behind (CompensationFailed), or kept by design (offboarding keeps data).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remaining: Vec<RemainingResource>,
    pub duration_ms: u64,
    /// On `tenant.offboarded`: the worker has no record of the tenant, so it deleted nothing
    /// (the tenant was never onboarded, or the request names the wrong tenant).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_found: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventError {
    pub step: Option<String>,
    pub class: String,
    pub code: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemainingResource {
    pub step: String,
    pub resource: String,
    /// `kept` (by design) or `failed` (compensation gave up).
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepData {
    pub request_id: String,
    pub tenant_id: String,
    pub step: String,
    /// `forward` or `compensation`.
    pub phase: String,
    #[serde(default)]
    pub outputs: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectedData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    pub message_id: String,
    /// Reason code, as on the dead-lettered message.
    pub reason: String,
    pub errors: Vec<crate::validate::FieldError>,
}

/// What the periodic drift check found wrong with a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftedData {
    pub tenant_id: String,
    pub target: String,
    /// Each check that failed, sorted by name.
    pub findings: Vec<DriftFinding>,
}

/// One failed check, named as `producer verify` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DriftFinding {
    /// `node_pool`, `guardrail:NetworkPolicy/default-deny`, `isolation:pod-placement`...
    pub name: String,
    /// `drifted`, `missing`, `notOurs` or `violation`.
    pub status: String,
    pub detail: String,
}

/// A `tenant.drifted` event. Its id is UUID v5 of the tenant and a digest of the (sorted)
/// findings, so the same drift found twice is the same event and consumers can deduplicate.
pub fn drifted_event(
    tenant_id: &str,
    target: &str,
    mut findings: Vec<DriftFinding>,
    now: DateTime<Utc>,
) -> CloudEvent {
    findings.sort_by(|a, b| (&a.name, &a.status).cmp(&(&b.name, &b.status)));
    let digest = findings_digest(&findings);
    CloudEvent::new(
        DRIFTED,
        event_id(tenant_id, DRIFTED, &digest),
        Some(tenant_id.to_string()),
        now,
        None,
        EventData::Drifted(DriftedData {
            tenant_id: tenant_id.to_string(),
            target: target.to_string(),
            findings,
        }),
    )
}

/// A digest of findings (UUID v5 of their JSON): equal for the same findings in the same order.
pub fn findings_digest(findings: &[DriftFinding]) -> String {
    let text = serde_json::to_string(findings).unwrap_or_default();
    Uuid::new_v5(&Uuid::NAMESPACE_URL, text.as_bytes()).to_string()
}

/// Deterministic event id: UUID v5 of the request id, the type and (for progress) a detail.
pub fn event_id(request_id: &str, ty: &str, detail: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("urn:tenant-onboarding:event:{request_id}|{ty}|{detail}").as_bytes(),
    )
    .to_string()
}

impl CloudEvent {
    pub fn new(
        ty: &str,
        id: String,
        subject: Option<String>,
        time: DateTime<Utc>,
        traceparent: Option<String>,
        data: EventData,
    ) -> Self {
        Self {
            specversion: "1.0".into(),
            id,
            source: SOURCE.into(),
            ty: ty.into(),
            subject,
            time,
            datacontenttype: "application/json".into(),
            traceparent,
            data,
        }
    }

    pub fn is_terminal(&self) -> bool {
        TERMINAL_TYPES.contains(&self.ty.as_str())
    }

    pub fn request_id(&self) -> Option<&str> {
        match &self.data {
            EventData::Outcome(d) => Some(&d.request_id),
            EventData::Step(d) => Some(&d.request_id),
            EventData::Rejected(d) => d.request_id.as_deref(),
            EventData::Drifted(_) => None,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The `request.rejected` event for a refused message or request. Its id derives from the
/// request id when the message had a readable one, else from the message id.
pub fn rejected_event(
    rejection: &crate::validate::Rejection,
    message_id: &str,
    now: DateTime<Utc>,
) -> CloudEvent {
    let key = rejection.request_id.as_deref().unwrap_or(message_id);
    CloudEvent::new(
        REQUEST_REJECTED,
        event_id(key, REQUEST_REJECTED, message_id),
        rejection.tenant_id.clone(),
        now,
        None,
        EventData::Rejected(RejectedData {
            request_id: rejection.request_id.clone(),
            tenant_id: rejection.tenant_id.clone(),
            message_id: message_id.to_string(),
            reason: rejection.reason.code().to_string(),
            errors: rejection.errors.clone(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CloudEvent {
        CloudEvent::new(
            ONBOARDED,
            event_id("r1", ONBOARDED, ""),
            Some("acme".into()),
            DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            EventData::Outcome(OutcomeData {
                request_id: "r1".into(),
                tenant_id: "acme".into(),
                target: "default".into(),
                state: "Succeeded".into(),
                resources: Default::default(),
                error: None,
                remaining: vec![],
                duration_ms: 5,
                not_found: false,
            }),
        )
    }

    #[test]
    fn event_ids_are_deterministic_per_request_and_type() {
        assert_eq!(event_id("r1", ONBOARDED, ""), event_id("r1", ONBOARDED, ""));
        assert_ne!(event_id("r1", ONBOARDED, ""), event_id("r2", ONBOARDED, ""));
        assert_ne!(
            event_id("r1", ONBOARDED, ""),
            event_id("r1", OFFBOARDED, "")
        );
    }

    fn finding(name: &str, detail: &str) -> DriftFinding {
        DriftFinding {
            name: name.into(),
            status: "missing".into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn the_same_drift_is_the_same_event_and_another_drift_another() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let a = drifted_event(
            "acme",
            "default",
            vec![finding("x", "1"), finding("y", "2")],
            now,
        );
        let again = drifted_event(
            "acme",
            "default",
            vec![finding("y", "2"), finding("x", "1")],
            now,
        );
        assert_eq!(
            a.id, again.id,
            "found in another order, it is the same drift"
        );
        let other = drifted_event("acme", "default", vec![finding("x", "1")], now);
        assert_ne!(a.id, other.id);
        let elsewhere = drifted_event("beta", "default", vec![finding("x", "1")], now);
        assert_ne!(other.id, elsewhere.id);
    }

    #[test]
    fn a_drifted_event_round_trips_as_drifted_data() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let e = drifted_event("acme", "default", vec![finding("x", "gone")], now);
        let back: CloudEvent = serde_json::from_slice(&e.to_json()).expect("json");
        assert_eq!(back, e);
        assert!(matches!(back.data, EventData::Drifted(_)));
        assert_eq!(back.request_id(), None);
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).expect("json");
        assert_eq!(v["type"], DRIFTED);
        assert_eq!(v["data"]["findings"][0]["name"], "x");
        assert_eq!(v["data"]["tenantId"], "acme");
    }

    #[test]
    fn events_serialise_with_every_required_cloudevents_attribute() {
        let v: serde_json::Value = serde_json::from_slice(&sample().to_json()).expect("json");
        for attr in ["specversion", "id", "source", "type"] {
            assert!(v[attr].is_string(), "missing {attr}");
        }
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["subject"], "acme");
        assert_eq!(v["datacontenttype"], "application/json");
        // RFC 3339 time, as the spec requires.
        let time = v["time"].as_str().expect("time");
        assert!(DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
        assert_eq!(v["data"]["requestId"], "r1");
        let back: CloudEvent = serde_json::from_value(v).expect("round-trips");
        assert_eq!(back, sample());
    }
}
