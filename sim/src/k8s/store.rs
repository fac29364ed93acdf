//! The simulator's object store and its model of server-side apply.
//!
//! Each object keeps, per field manager, the configuration that manager last applied. The live
//! object is those configurations merged (in the order the managers first applied), plus what
//! the server owns: uid, creationTimestamp, resourceVersion, generation, managedFields and a few
//! defaults. A manager re-applying without a field drops it (as SSA does for a sole owner).
//! Lists are atomic. Without `force`, a field another manager set to a different value is a 409
//! conflict; with it, the field changes hands. `resourceVersion` comes from one counter for the
//! whole store (like etcd's revision) and moves only when an object really changes, so an
//! identical re-apply returns the very same object.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::resources::{self, RESOURCES, Resource};
use super::status::ApiError;

/// Where an object lives: resource, namespace ("" for cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub resource: &'static str,
    pub group: &'static str,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(resource: &'static Resource, namespace: Option<&str>, name: &str) -> Self {
        Self {
            resource: resource.plural,
            group: resource.group,
            namespace: namespace.unwrap_or_default().to_string(),
            name: name.to_string(),
        }
    }

    fn resource(&self) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.plural == self.resource && r.group == self.group)
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Manager {
    name: String,
    /// What this manager last applied, server-owned fields removed.
    applied: Value,
    /// When its configuration last changed.
    time: String,
}

#[derive(Debug, Clone)]
struct Stored {
    uid: String,
    created: String,
    resource_version: u64,
    generation: i64,
    managers: Vec<Manager>,
    live: Value,
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub object: Value,
    pub created: bool,
}

#[derive(Debug, Default)]
pub struct Store {
    objects: BTreeMap<Key, Stored>,
    revision: u64,
}

impl Store {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key).map(|s| &s.live)
    }

    /// Objects of one resource, in one namespace or all, matching a label selector.
    pub fn list(
        &self,
        resource: &'static Resource,
        namespace: Option<&str>,
        selector: &[Requirement],
    ) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.resource == resource.plural && k.group == resource.group)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, s)| &s.live)
            .filter(|live| {
                selector
                    .iter()
                    .all(|req| req.matches(&live["metadata"]["labels"]))
            })
            .collect()
    }

    /// Every object, as `(kind, namespace, name, live object)`.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &str, &str, &Value)> {
        self.objects.iter().filter_map(|(k, s)| {
            k.resource()
                .map(|r| (r.kind, k.namespace.as_str(), k.name.as_str(), &s.live))
        })
    }

    /// Server-side apply of `body` by `manager`. With `dry_run`, nothing is stored.
    pub fn apply(
        &mut self,
        resource: &'static Resource,
        key: &Key,
        body: Value,
        manager: &str,
        force: bool,
        dry_run: bool,
    ) -> Result<Applied, ApiError> {
        let applied = validate_and_clean(resource, key, body)?;
        if resource.namespaced && !self.namespace_exists(&key.namespace) {
            return Err(namespace_not_found(&key.namespace));
        }
        let now = now();
        let previous = self.objects.get(key).cloned();
        let created = previous.is_none();
        let mut next = previous.clone().unwrap_or_else(|| Stored {
            uid: uuid::Uuid::new_v4().to_string(),
            created: now.clone(),
            resource_version: 0,
            generation: 1,
            managers: Vec::new(),
            live: Value::Null,
        });

        let conflicts = take_ownership(&mut next.managers, manager, &applied, force);
        if !conflicts.is_empty() {
            return Err(conflict(conflicts));
        }
        match next.managers.iter_mut().find(|m| m.name == manager) {
            Some(m) if m.applied == applied => {}
            Some(m) => {
                m.applied = applied;
                m.time = now.clone();
            }
            None => next.managers.push(Manager {
                name: manager.to_string(),
                applied,
                time: now.clone(),
            }),
        }

        let candidate = render(resource, key, &next);
        if let Some(prev) = &previous
            && candidate == prev.live
        {
            return Ok(Applied {
                object: prev.live.clone(),
                created: false,
            });
        }
        let revision = self.revision + 1;
        next.resource_version = revision;
        if let Some(prev) = &previous
            && resource.has_generation()
            && candidate.get("spec") != prev.live.get("spec")
        {
            next.generation += 1;
        }
        next.live = render(resource, key, &next);
        let object = next.live.clone();
        if !dry_run {
            self.revision = revision;
            self.objects.insert(key.clone(), next);
        }
        Ok(Applied { object, created })
    }

    /// Deletes one object; a namespace takes everything inside with it. Returns the removed
    /// object as it was just before.
    pub fn delete(
        &mut self,
        resource: &'static Resource,
        key: &Key,
        preconditions: &Value,
    ) -> Result<(Value, String), ApiError> {
        let Some(current) = self.objects.get(key) else {
            return Err(ApiError::not_found(resource, &key.name));
        };
        // DeleteOptions.preconditions, as the API server checks them (and in its words): the
        // object must still be the one the caller looked at.
        let live = |p: &str| {
            current
                .live
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let conflict = |message: String| {
            Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": {message}",
                    resource.plural, key.name
                ),
            ))
        };
        if let Some(uid) = preconditions.get("uid").and_then(Value::as_str)
            && uid != live("/metadata/uid")
        {
            return conflict(format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                live("/metadata/uid")
            ));
        }
        if let Some(version) = preconditions.get("resourceVersion").and_then(Value::as_str)
            && version != live("/metadata/resourceVersion")
        {
            return conflict(format!(
                "the ResourceVersion in the precondition ({version}) does not match the ResourceVersion in record ({}). The object might have been modified",
                live("/metadata/resourceVersion")
            ));
        }
        let Some(stored) = self.objects.remove(key) else {
            return Err(ApiError::not_found(resource, &key.name));
        };
        self.revision += 1;
        if resource.kind == "Namespace" {
            self.objects.retain(|k, _| k.namespace != key.name);
        }
        Ok((stored.live, stored.uid))
    }

    pub fn namespace_exists(&self, namespace: &str) -> bool {
        self.objects
            .keys()
            .any(|k| k.resource == "namespaces" && k.group.is_empty() && k.name == namespace)
    }

    pub fn clear(&mut self) {
        self.objects.clear();
        self.revision = 0;
    }
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn namespace_not_found(namespace: &str) -> ApiError {
    match resources::by_kind("v1", "Namespace") {
        Some(ns) => ApiError::not_found(ns, namespace),
        None => ApiError::no_such_resource(),
    }
}

/// Checks the applied body against the URL and strips what the server owns.
fn validate_and_clean(resource: &Resource, key: &Key, body: Value) -> Result<Value, ApiError> {
    let Value::Object(mut body) = body else {
        return Err(ApiError::bad_request(
            "the body of an apply request must be an object",
        ));
    };
    let expected = resource.api_version();
    match body.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v == expected => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected})"
            )));
        }
        None => {
            return Err(ApiError::bad_request(
                "Object 'apiVersion' is missing in the apply body",
            ));
        }
    }
    match body.get("kind").and_then(Value::as_str) {
        Some(k) if k == resource.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                resource.kind
            )));
        }
        None => {
            return Err(ApiError::bad_request(
                "Object 'Kind' is missing in the apply body",
            ));
        }
    }
    let metadata = body
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(metadata) = metadata else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    match metadata.get("name").and_then(Value::as_str) {
        None => {
            metadata.insert("name".into(), json!(key.name));
        }
        Some(name) if name == key.name => {}
        Some(name) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                key.name
            )));
        }
    }
    if resource.namespaced {
        match metadata.get("namespace").and_then(Value::as_str) {
            None => {
                metadata.insert("namespace".into(), json!(key.namespace));
            }
            Some(ns) if ns == key.namespace => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
    } else {
        metadata.remove("namespace");
    }
    for server_owned in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        metadata.remove(server_owned);
    }
    let mut causes = Vec::new();
    let name_ok = if resource.kind == "Namespace" {
        is_dns1123_label(&key.name)
    } else {
        is_dns1123_subdomain(&key.name)
    };
    if !name_ok {
        causes.push((
            "metadata.name".to_string(),
            format!(
                "Invalid value: \"{}\": a lowercase RFC 1123 {} must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                key.name,
                if resource.kind == "Namespace" { "label" } else { "subdomain" }
            ),
        ));
    }
    if let Some(Value::Object(labels)) = metadata.get("labels") {
        for (k, v) in labels {
            let ok = v.as_str().is_some_and(is_label_value);
            if !ok {
                causes.push((
                    format!("metadata.labels.{k}"),
                    format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
                ));
            }
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(resource, &key.name, causes));
    }
    // Status is a subresource: applying the main resource never sets it.
    body.remove("status");
    Ok(Value::Object(body))
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Fields every manager implicitly shares: they identify the object.
fn is_identity(path: &[String]) -> bool {
    matches!(
        path.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["apiVersion"] | ["kind"] | ["metadata", "name"] | ["metadata", "namespace"]
    )
}

/// Every leaf of an applied configuration (empty objects and lists are leaves), with its path.
fn leaves(value: &Value) -> Vec<(Vec<String>, &Value)> {
    fn walk<'a>(v: &'a Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, &'a Value)>) {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, child) in map {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => out.push((path.clone(), v)),
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out.retain(|(p, _)| !is_identity(p));
    out
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.get(k))
}

fn remove(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = value;
    for k in parents {
        match current.get_mut(k) {
            Some(next) => current = next,
            None => return,
        }
    }
    if let Value::Object(map) = current {
        map.remove(last);
    }
}

/// Fields of `applied` another manager holds with a different value. With `force`, those fields
/// are taken from the other managers instead, and no conflict is reported.
fn take_ownership(
    managers: &mut [Manager],
    manager: &str,
    applied: &Value,
    force: bool,
) -> Vec<(String, String)> {
    let mut conflicts = Vec::new();
    for (path, value) in leaves(applied) {
        for other in managers.iter_mut().filter(|m| m.name != manager) {
            let theirs = lookup(&other.applied, &path);
            let clash = match theirs {
                None => false,
                // Holding a parent object while this manager sets a leaf inside it is fine.
                Some(Value::Object(map)) if !map.is_empty() => false,
                Some(theirs) => theirs != value,
            };
            if !clash {
                continue;
            }
            if force {
                remove(&mut other.applied, &path);
            } else {
                conflicts.push((other.name.clone(), format!(".{}", path.join("."))));
            }
        }
    }
    conflicts
}

fn conflict(conflicts: Vec<(String, String)>) -> ApiError {
    let n = conflicts.len();
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(m, f)| format!("- conflict with \"{m}\": {f}"))
        .collect();
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, f)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": f})
        })
        .collect();
    ApiError::new(
        409,
        "Conflict",
        format!(
            "Apply failed with {n} conflict{}: {}",
            if n == 1 { "" } else { "s" },
            lines.join("\n")
        ),
    )
    .with_details(json!({"causes": causes}))
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(dst), Value::Object(src)) => {
            for (k, v) in src {
                merge(dst.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (dst, src) => *dst = src.clone(),
    }
}

/// `fieldsV1` of an applied configuration: `f:<key>` per object key, lists and scalars as `{}`.
fn fields_v1(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (format!("f:{k}"), fields_v1(v)))
                .collect(),
        ),
        _ => json!({}),
    }
}

/// The live object from the managers' configurations and the server's own fields.
fn render(resource: &Resource, key: &Key, stored: &Stored) -> Value {
    let mut live =
        json!({"apiVersion": resource.api_version(), "kind": resource.kind, "metadata": {}});
    for m in &stored.managers {
        merge(&mut live, &m.applied);
    }
    let managed: Vec<Value> = stored
        .managers
        .iter()
        .map(|m| {
            let mut owned = m.applied.clone();
            if let Value::Object(map) = &mut owned {
                map.remove("apiVersion");
                map.remove("kind");
            }
            remove(&mut owned, &["metadata".into(), "name".into()]);
            remove(&mut owned, &["metadata".into(), "namespace".into()]);
            json!({
                "manager": m.name,
                "operation": "Apply",
                "apiVersion": resource.api_version(),
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(&owned),
            })
        })
        .collect();
    {
        let meta = &mut live["metadata"];
        meta["name"] = json!(key.name);
        if resource.namespaced {
            meta["namespace"] = json!(key.namespace);
        }
        meta["uid"] = json!(stored.uid);
        meta["resourceVersion"] = json!(stored.resource_version.to_string());
        meta["creationTimestamp"] = json!(stored.created);
        if resource.has_generation() {
            meta["generation"] = json!(stored.generation);
        }
        meta["managedFields"] = Value::Array(managed);
    }
    match resource.kind {
        "Namespace" => {
            // The API server labels every namespace with its own name (NamespaceDefaultLabelName).
            live["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(key.name);
            if live["spec"]["finalizers"].is_null() {
                live["spec"]["finalizers"] = json!(["kubernetes"]);
            }
            live["status"] = json!({"phase": "Active"});
        }
        "Deployment" => {
            if live["spec"]["replicas"].is_null() {
                live["spec"]["replicas"] = json!(1);
            }
            // Rolled out at once: the simulator has no nodes to wait for.
            let replicas = live["spec"]["replicas"].clone();
            live["status"] = json!({
                "observedGeneration": stored.generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
            });
        }
        _ => {}
    }
    live
}

/// One term of an equality-based label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        }
    }
}

/// Parses `a=b,c==d,e!=f,g,!h`. Set-based terms (`in`, `notin`) are not supported.
pub fn parse_selector(selector: &str) -> Result<Vec<Requirement>, ApiError> {
    let unsupported = || {
        ApiError::bad_request(format!(
            "unable to parse requirement: the simulator supports equality-based label selectors only, got {selector:?}"
        ))
    };
    if selector.contains('(') {
        return Err(unsupported());
    }
    let mut out = Vec::new();
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let requirement = if let Some((k, v)) = term.split_once("!=") {
            Requirement::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once("==") {
            Requirement::Equals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once('=') {
            Requirement::Equals(k.trim().into(), v.trim().into())
        } else if let Some(k) = term.strip_prefix('!') {
            Requirement::NotExists(k.trim().into())
        } else if term.contains(' ') {
            return Err(unsupported());
        } else {
            Requirement::Exists(term.into())
        };
        out.push(requirement);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
