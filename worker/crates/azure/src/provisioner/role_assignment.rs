//! Role assignments: check a spec (UUID names, a role of the target's subscription, a scope that
//! is one container of the target's storage account), create it, and delete it. An assignment
//! the worker did not create (another name, even for the same grant) is never adopted.
//!
//! May touch: role assignments at container scopes of the target's storage account, through the
//! target's [`ArmClient`].

use uuid::Uuid;

use super::bodies::role_assignment_body;
use super::{parse, sync_delete, to_json};
use crate::api;
use crate::client::{ArmClient, Op};
use crate::models::{RoleAssignment, RoleAssignmentList, RoleAssignmentProperties};
use onboarding_core::ErrorClass;
use onboarding_providers::arm_ids::{segment, storage_account_id};
use onboarding_providers::rbac::role_definition_guid;
use onboarding_providers::{ProviderError, RoleAssignmentInfo, RoleAssignmentSpec, Target};

/// Checks that a role assignment scope is one blob container of the target's storage account.
/// The account itself is refused: the worker's delegated right to grant roles is held on the
/// account (ABAC delegation conditions cannot narrow the scope), so this check is what keeps a
/// grant from reaching every tenant's data at once.
pub(super) fn checked_scope<'a>(target: &Target, scope: &'a str) -> Result<&'a str, ProviderError> {
    let account = storage_account_id(target)?.to_ascii_lowercase();
    let containers = format!("{account}/blobservices/default/containers/");
    let trimmed = scope.trim_end_matches('/');
    let lower = trimmed.to_ascii_lowercase();
    let one_container = lower
        .strip_prefix(&containers)
        .is_some_and(|name| !name.is_empty() && !name.contains('/'));
    let plain = trimmed
        .trim_start_matches('/')
        .split('/')
        .all(|s| segment("scope segment", s).is_ok());
    if one_container && plain && scope.starts_with('/') {
        Ok(trimmed)
    } else {
        Err(ProviderError::new(
            ErrorClass::InvalidInput,
            "check role assignment scope",
            scope,
            format!(
                "the scope must be one blob container of the target's storage account ({account}/blobServices/default/containers/<name>); the account itself or anything else is refused"
            ),
        ))
    }
}

pub(super) fn role_assignment_path(scope: &str, name: &str) -> String {
    format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}")
}

/// The existing assignment's name in ARM's `RoleAssignmentExists` message ("... The ID of the
/// existing role assignment is 0a1b...").
pub(super) fn existing_assignment_name(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("existing role assignment is")? + "existing role assignment is".len();
    let candidate: String = message[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
        .collect();
    Uuid::parse_str(&candidate).ok().map(|u| u.to_string())
}

/// The same principal and role, whatever the condition.
fn same_grantee(spec: &RoleAssignmentSpec, p: &RoleAssignmentProperties) -> bool {
    p.principal_id.eq_ignore_ascii_case(&spec.principal_id)
        && role_definition_guid(&p.role_definition_id)
            .eq_ignore_ascii_case(role_definition_guid(&spec.role_definition_id))
}

pub(super) fn same_assignment(spec: &RoleAssignmentSpec, p: &RoleAssignmentProperties) -> bool {
    let condition = |c: Option<&str>| {
        c.map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
    };
    same_grantee(spec, p)
        && condition(p.condition.as_deref()) == condition(Some(&spec.condition))
        && (spec.condition.is_empty()
            || p.condition_version.as_deref() == Some(spec.condition_version.as_str()))
}

pub(super) fn check_role_assignment_spec(
    target: &Target,
    spec: &RoleAssignmentSpec,
) -> Result<(), ProviderError> {
    let bad = |m: String| {
        Err(ProviderError::new(
            ErrorClass::InvalidInput,
            "check role assignment",
            &spec.name,
            m,
        ))
    };
    if Uuid::parse_str(&spec.name).is_err() {
        return bad(format!(
            "the role assignment name {:?} is not a UUID",
            spec.name
        ));
    }
    if Uuid::parse_str(&spec.principal_id).is_err() {
        return bad(format!(
            "the principal id {:?} is not a UUID",
            spec.principal_id
        ));
    }
    let role = &spec.role_definition_id;
    let guid = role_definition_guid(role);
    let sub_form = format!(
        "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
        target.subscription_id
    );
    let tenant_form = format!("/providers/Microsoft.Authorization/roleDefinitions/{guid}");
    if Uuid::parse_str(guid).is_err()
        || !(role.eq_ignore_ascii_case(&sub_form) || role.eq_ignore_ascii_case(&tenant_form))
    {
        return bad(format!(
            "the role definition id {role:?} is not a role definition of the target's subscription"
        ));
    }
    if !spec.condition.is_empty() && spec.condition_version != "2.0" {
        return bad(format!(
            "condition version {:?} is not supported; use \"2.0\"",
            spec.condition_version
        ));
    }
    Ok(())
}

pub(super) async fn ensure(
    client: &ArmClient,
    target: &Target,
    spec: &RoleAssignmentSpec,
) -> Result<RoleAssignmentInfo, ProviderError> {
    let scope = checked_scope(target, &spec.scope)?;
    check_role_assignment_spec(target, spec)?;
    let path = role_assignment_path(scope, &spec.name);
    let op = Op {
        operation: "create role assignment",
        resource: &path,
    };
    if let Some(existing) = read(client, &path).await?
        && !same_assignment(spec, &existing.properties)
    {
        if same_grantee(spec, &existing.properties) {
            // The worker's own assignment (its derived name, its identity, its role) whose
            // condition someone changed: an update puts it back, as ARM allows for conditions.
            tracing::warn!(assignment = %path, "the assignment's condition was changed; restoring it");
        } else {
            return Err(super::not_owned(
                op.operation,
                &path,
                "role assignment",
                &format!(
                    "principal {} with another role (the worker's assignment under this name would be for principal {})",
                    existing.properties.principal_id, spec.principal_id
                ),
            ));
        }
    }
    let body = to_json(&role_assignment_body(spec), op)?;
    match client.put(&path, api::ROLE_ASSIGNMENTS, &body, op).await {
        Ok(resp) => {
            let ra: RoleAssignment = parse(&resp, op)?;
            Ok(RoleAssignmentInfo {
                id: ra.id.unwrap_or(path.clone()),
                name: ra.name.unwrap_or_else(|| spec.name.clone()),
            })
        }
        Err(e) if e.code.as_deref() == Some("RoleAssignmentExists") => {
            let existing = find_existing_assignment(client, scope, spec, &e.message).await?;
            match existing {
                // The same grant under a name the worker did not derive: someone else made it,
                // and adopting it would mean deleting it on offboarding.
                Some(ra) if same_assignment(spec, &ra.properties) => Err(super::not_owned(
                    op.operation,
                    op.resource,
                    "role assignment",
                    &format!(
                        "whoever created assignment {} (the same principal, role and condition under a name the worker did not derive)",
                        ra.id.unwrap_or_default()
                    ),
                )),
                Some(ra) => Err(ProviderError::permanent(
                    op.operation,
                    op.resource,
                    format!(
                        "the principal already has this role on this scope through assignment {} with a different condition; remove it or align it",
                        ra.id.unwrap_or_default()
                    ),
                )
                .with_code("RoleAssignmentConflict")),
                None => Err(ProviderError::transient(
                    op.operation,
                    op.resource,
                    format!("ARM says the assignment exists but it cannot be found yet: {}", e.message),
                )
                .with_code("RoleAssignmentExists")),
            }
        }
        Err(e) => Err(e),
    }
}

/// The assignment at `path` as ARM has it now, if any.
async fn read(client: &ArmClient, path: &str) -> Result<Option<RoleAssignment>, ProviderError> {
    super::read_existing(client, path, api::ROLE_ASSIGNMENTS, "read role assignment").await
}

pub(super) async fn delete(
    client: &ArmClient,
    target: &Target,
    spec: &RoleAssignmentSpec,
) -> Result<(), ProviderError> {
    let scope = checked_scope(target, &spec.scope)?;
    let name = &spec.name;
    if Uuid::parse_str(name).is_err() {
        return Err(ProviderError::new(
            ErrorClass::InvalidInput,
            "delete role assignment",
            name,
            format!("the role assignment name {name:?} is not a UUID"),
        ));
    }
    let path = role_assignment_path(scope, name);
    let op = Op {
        operation: "delete role assignment",
        resource: &path,
    };
    // Verified immediately before the delete: a role assignment has no tags, so only the one
    // with the principal, role and condition the worker gives its assignments is deleted.
    let Some(existing) = read(client, &path).await? else {
        return Ok(());
    };
    if !same_assignment(spec, &existing.properties) {
        tracing::warn!(role_assignment = %path, principal = %existing.properties.principal_id, "role assignment not the worker's: left in place");
        return Ok(());
    }
    sync_delete(client.delete(&path, api::ROLE_ASSIGNMENTS, op).await?, op)
}

/// The assignment ARM's `RoleAssignmentExists` refers to: named in its message, or else the
/// one of the same principal and role found by listing the scope.
async fn find_existing_assignment(
    client: &ArmClient,
    scope: &str,
    spec: &RoleAssignmentSpec,
    message: &str,
) -> Result<Option<RoleAssignment>, ProviderError> {
    if let Some(name) = existing_assignment_name(message) {
        let path = role_assignment_path(scope, &name);
        let op = Op {
            operation: "read role assignment",
            resource: &path,
        };
        if let Some(resp) = client.get(&path, api::ROLE_ASSIGNMENTS, op).await? {
            return parse::<RoleAssignment>(&resp, op).map(Some);
        }
    }
    let path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments");
    let op = Op {
        operation: "list role assignments",
        resource: &path,
    };
    let mut url = client.url(&path, api::ROLE_ASSIGNMENTS)?;
    url.query_pairs_mut()
        .append_pair("$filter", &format!("assignedTo('{}')", spec.principal_id));
    let resp = client.send(reqwest::Method::GET, url, None, op).await?;
    if !resp.is_success() {
        return Err(crate::client::classify(&resp, op));
    }
    let list: RoleAssignmentList = parse(&resp, op)?;
    let want = role_definition_guid(&spec.role_definition_id).to_ascii_lowercase();
    Ok(list.value.into_iter().find(|ra| {
        ra.properties
            .principal_id
            .eq_ignore_ascii_case(&spec.principal_id)
            && role_definition_guid(&ra.properties.role_definition_id).eq_ignore_ascii_case(&want)
            && ra
                .properties
                .scope
                .as_deref()
                .is_none_or(|s| s.trim_end_matches('/').eq_ignore_ascii_case(scope))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use onboarding_providers::arm_ids::blob_container_id;

    #[test]
    fn role_assignment_scopes_must_be_one_container_of_the_targets_storage_account() {
        let t = Target::local("default");
        let inside = blob_container_id(&t, "tenant-acme").unwrap();
        assert!(checked_scope(&t, &inside).is_ok());
        assert!(checked_scope(&t, &inside.to_uppercase()).is_ok());
        for bad in [
            "/subscriptions/00000000-0000-0000-0000-000000000001".to_string(),
            storage_account_id(&t).unwrap(),
            format!("{}/blobServices/default", storage_account_id(&t).unwrap()),
            format!("{inside}/extra"),
            inside.replace("sttenantdata", "otheraccount"),
            format!("{inside}/../../x"),
            format!("{}x", storage_account_id(&t).unwrap()),
        ] {
            assert!(checked_scope(&t, &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_existing_assignment_is_found_in_arms_message() {
        let m = "The role assignment already exists. The ID of the existing role assignment is 0a1b2c3d4e5f60718293a4b5c6d7e8f9.";
        assert_eq!(
            existing_assignment_name(m).as_deref(),
            Some("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9")
        );
        assert_eq!(
            existing_assignment_name("The role assignment already exists."),
            None
        );
    }
}
