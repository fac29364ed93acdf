//! The JSON Schemas generated from the contract types, committed under `worker/schema/` for
//! upstream teams. A test fails when the committed files drift from the types.

use serde_json::Value;

use super::commands::{OffboardTenant, OnboardTenant};
use super::events::CloudEvent;

pub fn onboard_schema() -> Value {
    without_null(schemars::schema_for!(OnboardTenant).to_value())
}

pub fn offboard_schema() -> Value {
    without_null(schemars::schema_for!(OffboardTenant).to_value())
}

pub fn event_schema() -> Value {
    without_null(schemars::schema_for!(CloudEvent).to_value())
}

/// Optional fields are omitted, never null. schemars renders `Option<T>` as "T or null"
/// (`anyOf`), which makes a validator report "not valid under any of the schemas" instead of the
/// bad field inside; dropping the null branch keeps errors pointing at the field itself.
fn without_null(mut v: Value) -> Value {
    strip_null(&mut v);
    v
}

fn strip_null(v: &mut Value) {
    let is_null = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
    if let Value::Object(map) = v {
        if let Some(Value::Array(types)) = map.get_mut("type") {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types[0].clone();
                map.insert("type".into(), only);
            }
        }
        if let Some(Value::Array(branches)) = map.get("anyOf")
            && branches.len() == 2
            && branches.iter().any(is_null)
            && let Some(other) = branches.iter().find(|b| !is_null(b)).cloned()
        {
            map.remove("anyOf");
            if let Value::Object(o) = other {
                for (k, val) in o {
                    map.entry(k).or_insert(val);
                }
            }
        }
        for child in map.values_mut() {
            strip_null(child);
        }
    } else if let Value::Array(items) = v {
        for child in items {
            strip_null(child);
        }
    }
}

/// File name and content of every committed schema.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        ("onboard-tenant.schema.json", onboard_schema()),
        ("offboard-tenant.schema.json", offboard_schema()),
        ("cloudevent.schema.json", event_schema()),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn committed_schemas_match_the_types() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema");
        let update = std::env::var_os("UPDATE_SCHEMA").is_some();
        for (name, schema) in super::all() {
            let text = format!("{}\n", serde_json::to_string_pretty(&schema).expect("json"));
            let path = dir.join(name);
            if update {
                std::fs::create_dir_all(&dir).expect("mkdir");
                std::fs::write(&path, &text).expect("write");
                continue;
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == text,
                "{} drifted from the contract types; if the change is intended run \
                 `UPDATE_SCHEMA=1 cargo test -p worker --lib contract::schema` and commit it",
                path.display()
            );
        }
    }
}
