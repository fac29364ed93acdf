//! Comparing an expected JSON document with the live one: every field the expected document
//! sets must be found with the same value; fields only the live one has (server defaults,
//! status, other managers' labels) are not drift. Lists must match element by element and in
//! length, so an extra RoleBinding subject or a removed taint is drift.
//!
//! May touch: nothing; pure functions.

use serde::Serialize;
use serde_json::Value;

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// Dotted path, `metadata.labels.tenant`, `subjects`, `properties.condition`.
    pub path: String,
    pub expected: Value,
    /// `null` when the field is absent.
    pub found: Value,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: expected {}, found {}",
            self.path,
            self.expected,
            if self.found.is_null() {
                "nothing".to_string()
            } else {
                self.found.to_string()
            }
        )
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The differences between `expected` and `live` under `path` (see the module doc).
pub fn subset(expected: &Value, live: &Value, path: &str) -> Vec<Difference> {
    let mut out = Vec::new();
    walk(expected, live, path, &mut out);
    out
}

fn walk(expected: &Value, live: &Value, path: &str, out: &mut Vec<Difference>) {
    match (expected, live) {
        (Value::Object(e), Value::Object(l)) => {
            for (k, ev) in e {
                walk(ev, l.get(k).unwrap_or(&Value::Null), &join(path, k), out);
            }
        }
        (Value::Array(e), Value::Array(l)) if e.len() == l.len() => {
            for (i, (ev, lv)) in e.iter().zip(l).enumerate() {
                walk(ev, lv, &format!("{path}[{i}]"), out);
            }
        }
        // An empty expectation is met by absence (the API server drops empty maps and lists).
        (Value::Null, _) => {}
        (Value::Object(e), Value::Null) if e.is_empty() => {}
        (Value::Array(e), Value::Null) if e.is_empty() => {}
        (e, l) if e == l => {}
        (e, l) => out.push(Difference {
            path: path.to_string(),
            expected: e.clone(),
            found: l.clone(),
        }),
    }
}

/// Removes the field at a dotted path (no list indices) from `doc`: a value the verifier cannot
/// know is left out of the comparison.
pub fn forget(doc: &mut Value, path: &str) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut at = doc;
    for p in parts {
        match at.get_mut(p) {
            Some(next) => at = next,
            None => return,
        }
    }
    if let Some(map) = at.as_object_mut() {
        map.remove(last);
    }
}
