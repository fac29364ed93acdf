//! Role assignments (`{scope}/providers/Microsoft.Authorization/roleAssignments`) at any scope:
//! the principal must exist and have replicated, a container scope must exist, one assignment per
//! (scope, principal, role), ABAC conditions need `conditionVersion` 2.0; list by principal.

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::responses::{arm_error, json_response, now_rfc3339};
use super::route::{Route, is, parse_route, query_param};
use super::state::RoleRec;
use super::{ArmSim, SIM_CALLER_ID, SIM_TENANT_ID, lock};

/// PUT, GET or DELETE of one role assignment.
pub(super) fn handle(
    sim: &ArmSim,
    method: &Method,
    scope: &str,
    name: &str,
    body: Value,
) -> Response {
    let id = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
    match method.as_str() {
        "PUT" => put_role_assignment(sim, scope, &id, name, body),
        "DELETE" => match lock(&sim.state)
            .role_assignments
            .remove(&id.to_ascii_lowercase())
        {
            Some(rec) => json_response(StatusCode::OK, &rec.body),
            None => StatusCode::NO_CONTENT.into_response(),
        },
        _ => match lock(&sim.state)
            .role_assignments
            .get(&id.to_ascii_lowercase())
        {
            Some(rec) => json_response(StatusCode::OK, &rec.body),
            None => arm_error(
                StatusCode::NOT_FOUND,
                "RoleAssignmentNotFound",
                &format!("The role assignment '{name}' is not found."),
            ),
        },
    }
}

fn role_guid(role_definition_id: &str) -> Option<String> {
    let segs: Vec<&str> = role_definition_id.trim_matches('/').split('/').collect();
    let ok = matches!(segs.as_slice(),
        ["subscriptions", _, "providers", p, r, _] | ["providers", p, r, _]
        if is(p, "Microsoft.Authorization") && is(r, "roleDefinitions"));
    let guid = segs.last()?;
    (ok && Uuid::parse_str(guid).is_ok()).then(|| guid.to_ascii_lowercase())
}

fn put_role_assignment(sim: &ArmSim, scope: &str, id: &str, name: &str, body: Value) -> Response {
    if Uuid::parse_str(name).is_err() {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRoleAssignmentId",
            &format!(
                "The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."
            ),
        );
    }
    let props = &body["properties"];
    let role_id = props["roleDefinitionId"].as_str().unwrap_or_default();
    let Some(role_key) = role_guid(role_id) else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRoleDefinitionId",
            &format!("The role definition ID '{role_id}' is not valid."),
        );
    };
    let condition = props.get("condition").and_then(Value::as_str);
    let version = props.get("conditionVersion").and_then(Value::as_str);
    match (condition, version) {
        (Some(_), Some("2.0")) | (None, None) => {}
        (Some(_), _) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidConditionVersion",
                "The conditionVersion must be '2.0' when a condition is set.",
            );
        }
        (None, Some(_)) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidConditionVersion",
                "A conditionVersion was given without a condition.",
            );
        }
    }
    let principal = props["principalId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let principal_key = principal.to_ascii_lowercase();
    let scope_key = scope.trim_end_matches('/').to_ascii_lowercase();
    let key = id.to_ascii_lowercase();
    let propagation = *lock(&sim.principal_propagation);
    let mut st = lock(&sim.state);
    if let Some(Route::Container { .. }) = parse_route(scope)
        && !st.containers.contains_key(&scope_key)
    {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("The scope '{scope}' of the role assignment does not exist."),
        );
    }
    let known = st
        .identities
        .values()
        .find(|i| i.principal_id.eq_ignore_ascii_case(&principal))
        .map(|i| i.created.elapsed() >= propagation);
    if known != Some(true) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "PrincipalNotFound",
            &format!(
                "Principal {} does not exist in the directory {SIM_TENANT_ID}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group. See https://aka.ms/docs-principaltype",
                principal.replace('-', "")
            ),
        );
    }
    if let Some((other, _)) = st.role_assignments.iter().find(|(k, r)| {
        **k != key
            && r.scope_key == scope_key
            && r.principal_key == principal_key
            && r.role_key == role_key
    }) {
        let other_name = other
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .replace('-', "");
        return arm_error(
            StatusCode::CONFLICT,
            "RoleAssignmentExists",
            &format!(
                "The role assignment already exists. The ID of the existing role assignment is {other_name}."
            ),
        );
    }
    let (status, created_on) = match st.role_assignments.get(&key) {
        Some(r) if r.principal_key != principal_key || r.role_key != role_key => {
            return arm_error(
                StatusCode::CONFLICT,
                "RoleAssignmentUpdateNotPermitted",
                "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
            );
        }
        Some(r) => (StatusCode::OK, r.body["properties"]["createdOn"].clone()),
        None => (StatusCode::CREATED, json!(now_rfc3339())),
    };
    let mut properties = json!({
        "roleDefinitionId": role_id,
        "principalId": principal,
        "principalType": props.get("principalType").cloned().unwrap_or_else(|| json!("User")),
        "scope": scope,
        "createdOn": created_on,
        "updatedOn": now_rfc3339(),
        "createdBy": SIM_CALLER_ID,
        "updatedBy": SIM_CALLER_ID,
    });
    if let Some(c) = condition {
        properties["condition"] = json!(c);
        properties["conditionVersion"] = json!("2.0");
    }
    if let Some(d) = props.get("description") {
        properties["description"] = d.clone();
    }
    let resource = json!({
        "id": id,
        "name": name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": properties,
    });
    if status == StatusCode::CREATED {
        st.count_created("roleAssignments");
    }
    st.role_assignments.insert(
        key,
        RoleRec {
            body: resource.clone(),
            scope_key,
            principal_key,
            role_key,
        },
    );
    json_response(status, &resource)
}

/// `$filter=assignedTo('<id>')` or `principalId eq '<id>'`; assignments at, above or below the
/// scope, like ARM's ListForScope.
pub(super) fn list(sim: &ArmSim, scope: &str, uri: &Uri) -> Response {
    let filter = query_param(uri, "$filter").unwrap_or_default();
    let principal = filter
        .split('\'')
        .nth(1)
        .filter(|_| filter.starts_with("assignedTo(") || filter.starts_with("principalId eq"))
        .map(str::to_ascii_lowercase);
    if !filter.is_empty() && principal.is_none() && filter != "atScope()" {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "UnsupportedQuery",
            &format!(
                "The filter '{filter}' is not supported; use assignedTo('<id>'), principalId eq '<id>' or atScope()."
            ),
        );
    }
    let scope_key = scope.trim_end_matches('/').to_ascii_lowercase();
    let st = lock(&sim.state);
    let value: Vec<Value> = st
        .role_assignments
        .values()
        .filter(|r| {
            let related = r.scope_key == scope_key
                || scope_key.starts_with(&format!("{}/", r.scope_key))
                || (filter != "atScope()" && r.scope_key.starts_with(&format!("{scope_key}/")));
            related && principal.as_ref().is_none_or(|p| *p == r.principal_key)
        })
        .map(|r| r.body.clone())
        .collect();
    json_response(StatusCode::OK, &json!({ "value": value }))
}
