//! Turning untrusted message bytes into a [`Command`], or into a [`Rejection`] that names every
//! bad field at once with its JSON path.
//!
//! Order: size, JSON syntax, schema version, kind, then the JSON Schema generated from the types
//! (all errors collected), then checks a schema cannot express (configured targets, count vs.
//! autoscale range, workload template present). Nothing here panics on input.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::commands::{Command, OffboardTenant, OnboardTenant, SCHEMA_VERSION};
use super::names;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FieldError {
    /// JSON pointer to the field (`/nodePool/count`); empty for the whole message.
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: clip(&message.into(), 300),
        }
    }
}

/// Why a message was refused; the code is the dead-letter reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    MessageTooLarge,
    MalformedJson,
    UnsupportedSchemaVersion,
    UnknownCommandKind,
    SchemaViolation,
    UnknownTarget,
    NameCollision,
    TargetMismatch,
    /// The request id was first received for another tenant or with another body: a request id
    /// names one request forever.
    RequestIdReused,
    /// The request was carried out before and the tenant has accepted a later one since:
    /// applying it again would roll the tenant back.
    Superseded,
}

impl RejectReason {
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::MessageTooLarge => "MessageTooLarge",
            RejectReason::MalformedJson => "MalformedJson",
            RejectReason::UnsupportedSchemaVersion => "UnsupportedSchemaVersion",
            RejectReason::UnknownCommandKind => "UnknownCommandKind",
            RejectReason::SchemaViolation => "SchemaViolation",
            RejectReason::UnknownTarget => "UnknownTarget",
            RejectReason::NameCollision => "NameCollision",
            RejectReason::TargetMismatch => "TargetMismatch",
            RejectReason::RequestIdReused => "RequestIdReused",
            RejectReason::Superseded => "Superseded",
        }
    }
}

/// A refused message, with everything wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", reason.code(), describe(errors))]
pub struct Rejection {
    pub reason: RejectReason,
    pub errors: Vec<FieldError>,
    /// Best-effort ids from the message, for the `request.rejected` event.
    pub request_id: Option<String>,
    pub tenant_id: Option<String>,
}

impl Rejection {
    pub fn new(reason: RejectReason, errors: Vec<FieldError>) -> Self {
        Self {
            reason,
            errors,
            request_id: None,
            tenant_id: None,
        }
    }
    /// The dead-letter description: every error, `path: message`, one per line, bounded.
    pub fn description(&self) -> String {
        clip(&describe(&self.errors), 4000)
    }
}

fn describe(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| {
            if e.path.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.path, e.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// What the validator needs to know about the worker's configuration.
#[derive(Debug, Clone, Default)]
pub struct ValidationContext {
    pub max_message_bytes: usize,
    pub targets: BTreeSet<String>,
    pub workload_template: bool,
    /// Namespaces no tenant may land on (the worker's own, and the configured list), besides
    /// the ones Kubernetes reserves (see [`names::reserved_tenant_id`]).
    pub reserved_namespaces: BTreeSet<String>,
}

const MAX_ERRORS: usize = 50;

struct Schemas {
    onboard: jsonschema::Validator,
    offboard: jsonschema::Validator,
}

fn schemas() -> Result<&'static Schemas, String> {
    static SCHEMAS: OnceLock<Result<Schemas, String>> = OnceLock::new();
    SCHEMAS
        .get_or_init(|| {
            let compile = |schema: Value| {
                jsonschema::validator_for(&schema).map_err(|e| format!("command schema: {e}"))
            };
            Ok(Schemas {
                onboard: compile(super::schema::onboard_schema())?,
                offboard: compile(super::schema::offboard_schema())?,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Parse and validate a command message body.
pub fn parse_command(body: &[u8], cx: &ValidationContext) -> Result<Command, Rejection> {
    if cx.max_message_bytes > 0 && body.len() > cx.max_message_bytes {
        return Err(Rejection::new(
            RejectReason::MessageTooLarge,
            vec![FieldError::new(
                "",
                format!(
                    "the message body is {} bytes; the limit is {} bytes",
                    body.len(),
                    cx.max_message_bytes
                ),
            )],
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Rejection::new(
            RejectReason::MalformedJson,
            vec![FieldError::new(
                "",
                format!("the body is not valid JSON: {e}"),
            )],
        )
    })?;
    // serde_json keeps the last of duplicate keys; another parser upstream may keep the first,
    // so such a body means different things to different readers: refuse it.
    if let Err(e) = serde_json::from_slice::<NoDuplicateKeys>(body) {
        return Err(Rejection::new(
            RejectReason::MalformedJson,
            vec![FieldError::new(
                "",
                format!("the body is not valid JSON for this worker: {e}"),
            )],
        ));
    }
    let ids = |mut r: Rejection| {
        r.request_id = short_string(&value, "requestId");
        r.tenant_id = short_string(&value, "tenantId");
        r
    };
    let Some(obj) = value.as_object() else {
        return Err(ids(Rejection::new(
            RejectReason::SchemaViolation,
            vec![FieldError::new("", "the body must be a JSON object")],
        )));
    };
    if let Some(v) = obj.get("schemaVersion")
        && v.as_str() != Some(SCHEMA_VERSION)
    {
        let message = if v.is_number() {
            format!(
                "schemaVersion must be the string \"{SCHEMA_VERSION}\", not the number {}",
                clip(&v.to_string(), 40)
            )
        } else {
            format!(
                "schema version {} is not supported; this worker understands \"{SCHEMA_VERSION}\"",
                clip(&v.to_string(), 40)
            )
        };
        return Err(ids(Rejection::new(
            RejectReason::UnsupportedSchemaVersion,
            vec![FieldError::new("/schemaVersion", message)],
        )));
    }
    let kind = obj.get("kind").and_then(Value::as_str);
    let schemas = schemas().map_err(|e| {
        ids(Rejection::new(
            RejectReason::SchemaViolation,
            vec![FieldError::new("", e)],
        ))
    })?;
    let validator = match kind {
        Some("OnboardTenant") => &schemas.onboard,
        Some("OffboardTenant") => &schemas.offboard,
        other => {
            let message = match other {
                None if obj.contains_key("kind") => "kind must be a string".to_string(),
                None => "kind is required: OnboardTenant or OffboardTenant".to_string(),
                Some(k) => format!(
                    "unknown command kind {:?}; expected OnboardTenant or OffboardTenant",
                    clip(k, 40)
                ),
            };
            return Err(ids(Rejection::new(
                RejectReason::UnknownCommandKind,
                vec![FieldError::new("/kind", message)],
            )));
        }
    };
    let errors: Vec<FieldError> = validator
        .iter_errors(&value)
        .take(MAX_ERRORS)
        .map(|e| FieldError::new(e.instance_path().to_string(), e.to_string()))
        .collect();
    if !errors.is_empty() {
        return Err(ids(Rejection::new(RejectReason::SchemaViolation, errors)));
    }
    // The published schema's integers accept `2.0` (JSON Schema counts it as an integer), so
    // the worker takes it as 2 rather than refusing what its own contract allows.
    let value = integral_numbers_as_integers(value.clone());
    let command = match kind {
        Some("OnboardTenant") => serde_json::from_value::<OnboardTenant>(value.clone())
            .map(|c| Command::Onboard(normalised(c))),
        _ => serde_json::from_value::<OffboardTenant>(value.clone()).map(Command::Offboard),
    }
    .map_err(|e| {
        ids(Rejection::new(
            RejectReason::SchemaViolation,
            vec![FieldError::new("", e.to_string())],
        ))
    })?;
    semantic_checks(&command, cx).map_err(ids)?;
    Ok(command)
}

/// Every number with no fractional part (`1.0`, `1e2`) as an integer.
fn integral_numbers_as_integers(value: Value) -> Value {
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f >= 0.0 && f <= u32::MAX as f64 => {
                Value::from(f as u64)
            }
            Some(f) if f.fract() == 0.0 && f < 0.0 && f >= i32::MIN as f64 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(integral_numbers_as_integers)
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, integral_numbers_as_integers(v)))
                .collect(),
        ),
        other => other,
    }
}

/// One spelling for what may be written several ways: Entra object ids are case-insensitive
/// GUIDs, but a RoleBinding's subject is matched exactly against the lower-case group ids in
/// tokens, so an upper-case id would bind nobody.
fn normalised(mut command: OnboardTenant) -> OnboardTenant {
    if let Some(group) = &mut command.admin_group_id {
        *group = group.to_ascii_lowercase();
    }
    command
}

fn semantic_checks(command: &Command, cx: &ValidationContext) -> Result<(), Rejection> {
    let mut errors = Vec::new();
    let mut reason = RejectReason::SchemaViolation;
    if let Err(e) = names::validate_tenant_id(command.tenant_id()) {
        errors.push(FieldError::new("/tenantId", e.to_string()));
    } else if let Some(why) =
        names::reserved_tenant_id(command.tenant_id(), &cx.reserved_namespaces)
    {
        errors.push(FieldError::new("/tenantId", why));
    }
    if let Some(target) = command.target()
        && !cx.targets.contains(target)
    {
        reason = RejectReason::UnknownTarget;
        errors.push(FieldError::new(
            "/target",
            format!(
                "target {target:?} is not configured on this worker (configured: {})",
                cx.targets.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if let Command::Onboard(c) = command {
        let p = &c.node_pool;
        match (p.count, p.min_count, p.max_count) {
            (Some(_), None, None) => {}
            (None, Some(min), Some(max)) if min <= max => {}
            (None, Some(min), Some(max)) => errors.push(FieldError::new(
                "/nodePool/minCount",
                format!("minCount ({min}) must not exceed maxCount ({max})"),
            )),
            _ => errors.push(FieldError::new(
                "/nodePool",
                "give either count, or both minCount and maxCount (autoscaling), not a mix",
            )),
        }
        let mut zones = BTreeSet::new();
        for (i, zone) in p.zones.iter().enumerate() {
            if !zones.insert(zone) {
                errors.push(FieldError::new(
                    format!("/nodePool/zones/{i}"),
                    format!("zone {zone:?} is listed twice; list each availability zone once"),
                ));
            }
        }
        if c.workload.is_some() && !cx.workload_template {
            errors.push(FieldError::new(
                "/workload",
                "a workload was requested but this worker has no workload template configured",
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Rejection::new(reason, errors))
    }
}

/// Deserializes any JSON and fails on an object with a repeated key (at any depth). Nesting is
/// bounded by serde_json's recursion limit, as for `Value`.
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value without duplicate object keys")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(self)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut keys = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key {:?}",
                    clip(&key, 40)
                )));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(self)
    }
}

/// A string field, if short enough to be an id worth echoing back.
fn short_string(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control))
        .map(str::to_string)
}

#[cfg(test)]
mod tests;
