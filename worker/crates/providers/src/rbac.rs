//! Role-assignment naming and the ABAC condition that narrows a tenant's Storage Blob Data
//! Contributor assignment to its own container.
//!
//! Pure functions: no I/O. The condition is built only from a container name that passed
//! [`validate_container_name`], so quotes, brackets or operators can never reach it.

use uuid::Uuid;

use onboarding_core::{Classify, ErrorClass};

/// The built-in role "Storage Blob Data Contributor".
pub const STORAGE_BLOB_DATA_CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";

/// The only ABAC condition version ARM accepts.
pub const CONDITION_VERSION: &str = "2.0";

/// Namespace of [`role_assignment_name`]'s UUID v5. Fixed forever: changing it would rename every
/// assignment and orphan the existing ones.
pub const ROLE_ASSIGNMENT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c2a0e_8d1b_4f7e_9a53_3c2b7d4e9f10);

/// The data actions the condition lets through only inside the tenant's container.
const BLOB_ACTIONS: [&str; 5] = [
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/move/action",
];

/// Deterministic role assignment name: UUID v5 in [`ROLE_ASSIGNMENT_NAMESPACE`] of
/// `lower(scope) | lower(principal id) | lower(role definition guid)`.
///
/// ARM ids are case-insensitive, and a role definition may be named by its full id
/// (`/subscriptions/<sub>/providers/Microsoft.Authorization/roleDefinitions/<guid>`), by the
/// tenant-level id (`/providers/...`) or by the bare GUID: all give the same name.
pub fn role_assignment_name(scope: &str, principal_id: &str, role_definition_id: &str) -> String {
    let scope = scope.trim_end_matches('/').to_ascii_lowercase();
    let role = role_definition_guid(role_definition_id).to_ascii_lowercase();
    let key = format!(
        "{}|{}|{}",
        scope,
        principal_id.trim().to_ascii_lowercase(),
        role
    );
    Uuid::new_v5(&ROLE_ASSIGNMENT_NAMESPACE, key.as_bytes()).to_string()
}

/// The last path segment of a role definition id (the GUID), or the input if it has none.
pub fn role_definition_guid(role_definition_id: &str) -> &str {
    role_definition_id
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(role_definition_id)
}

/// Full role definition id of a built-in role in a subscription.
pub fn role_definition_id(subscription_id: &str, role_guid: &str) -> String {
    format!(
        "/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}"
    )
}

/// A container name that cannot be used (and so never reaches a condition or an ARM path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "blob container name {name:?} is not valid: {reason}; use 3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit"
)]
pub struct InvalidContainerName {
    pub name: String,
    pub reason: &'static str,
}

impl Classify for InvalidContainerName {
    fn class(&self) -> ErrorClass {
        ErrorClass::InvalidInput
    }
}

/// Azure's container naming rule: 3–63 characters, lowercase ASCII letters, digits and hyphens,
/// starting and ending with a letter or digit, no two hyphens in a row.
pub fn validate_container_name(name: &str) -> Result<(), InvalidContainerName> {
    let fail = |reason| {
        Err(InvalidContainerName {
            name: name.to_string(),
            reason,
        })
    };
    if !(3..=63).contains(&name.len()) {
        return fail("it must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return fail("it may only contain lowercase letters, digits and hyphens");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return fail("it must start and end with a letter or digit");
    }
    if name.contains("--") {
        return fail("it must not contain two hyphens in a row");
    }
    Ok(())
}

/// ABAC condition (version 2.0) that allows blob read/write/delete/add/move only in the named
/// container; every other action of the role is unaffected (the role is assigned at the
/// container scope anyway, the condition is the second fence).
pub fn blob_container_condition(container_name: &str) -> Result<String, InvalidContainerName> {
    validate_container_name(container_name)?;
    let not_actions = BLOB_ACTIONS
        .iter()
        .map(|a| format!("!(ActionMatches{{'{a}'}})"))
        .collect::<Vec<_>>()
        .join(" AND ");
    Ok(format!(
        "(({not_actions}) OR (@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringEquals '{container_name}'))"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_assignment_names_are_stable_uuids_that_ignore_case_and_role_id_form() {
        let scope = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a/blobServices/default/containers/c";
        let a = role_assignment_name(
            scope,
            "P-1",
            &role_definition_id("s", STORAGE_BLOB_DATA_CONTRIBUTOR),
        );
        let b = role_assignment_name(&scope.to_uppercase(), "p-1", STORAGE_BLOB_DATA_CONTRIBUTOR);
        assert_eq!(a, b);
        assert!(Uuid::parse_str(&a).is_ok());
        assert_ne!(
            a,
            role_assignment_name(scope, "p-2", STORAGE_BLOB_DATA_CONTRIBUTOR)
        );
        // The namespace is part of the contract: this value must never change.
        assert_eq!(
            role_assignment_name("/x", "p", "r"),
            Uuid::new_v5(&ROLE_ASSIGNMENT_NAMESPACE, b"/x|p|r").to_string()
        );
    }

    #[test]
    fn the_condition_names_the_container_and_every_blob_action() {
        let c = blob_container_condition("tenant-acme").unwrap();
        assert!(
            c.ends_with("containers:name] StringEquals 'tenant-acme'))"),
            "{c}"
        );
        for a in BLOB_ACTIONS {
            assert!(c.contains(&format!("!(ActionMatches{{'{a}'}})")), "{c}");
        }
        assert_eq!(c.matches('(').count(), c.matches(')').count());
    }

    #[test]
    fn hostile_or_malformed_container_names_never_produce_a_condition() {
        let long = "a".repeat(64);
        for bad in [
            "x' OR 1==1",
            "a]",
            "Tenant",
            "ab",
            &long,
            "-abc",
            "abc-",
            "a--b",
            "a b c",
            "abc'",
            "ab\u{e9}c",
            "",
        ] {
            assert!(
                blob_container_condition(bad).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert!(blob_container_condition(&"a".repeat(63)).is_ok());
        assert!(blob_container_condition("a-1").is_ok());
    }

    #[test]
    fn role_assignment_names_are_uuid_v5_of_scope_principal_and_role() {
        let a = role_assignment_name("/S/x", "p", "r");
        assert_eq!(a, role_assignment_name("/s/X", "P", "r"));
        assert_ne!(a, role_assignment_name("/s/x", "q", "r"));
        let parsed = uuid::Uuid::parse_str(&a).expect("uuid");
        assert_eq!(parsed.get_version_num(), 5);
    }

    #[test]
    fn the_abac_condition_names_only_the_tenant_container() {
        let c = blob_container_condition("tenant-acme").expect("valid");
        assert!(c.ends_with("StringEquals 'tenant-acme'))"), "{c}");
        assert_eq!(c.matches('\'').count(), 12);
    }

    #[test]
    fn a_hostile_container_name_cannot_produce_a_condition() {
        for bad in ["x' OR 1==1", "a]", "UPPER", "ab", "a--b", &"a".repeat(64)] {
            assert!(blob_container_condition(bad).is_err(), "{bad:?} accepted");
        }
    }
}
