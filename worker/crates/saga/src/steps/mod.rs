//! The onboarding steps, one file each; each declares the steps it needs (the dependency graph
//! the state machine walks, see [`crate::machine::StepGraph`]).
//!
//! May touch: nothing itself; the steps call the providers they are given in their input.

mod blob_container;
mod federated_credential;
mod guardrails;
mod identity;
mod namespace;
mod node_pool;
mod owned;
mod ownership;
mod role_assignment;
mod service_account;
mod workload;

use std::sync::Arc;

use super::step::Step;

/// Every step of the onboarding saga.
pub fn all() -> Vec<Arc<dyn Step>> {
    vec![
        Arc::new(namespace::NamespaceStep),
        Arc::new(node_pool::NodePoolStep),
        Arc::new(identity::IdentityStep),
        Arc::new(blob_container::BlobContainerStep),
        Arc::new(federated_credential::FederatedCredentialStep),
        Arc::new(role_assignment::RoleAssignmentStep),
        Arc::new(service_account::ServiceAccountStep),
        Arc::new(guardrails::GuardrailsStep),
        Arc::new(workload::WorkloadStep),
    ]
}

/// A resource id for reports; an invalid name says so instead of failing the report.
pub(crate) fn id_or_reason(id: Result<String, onboarding_providers::ProviderError>) -> String {
    id.unwrap_or_else(|e| format!("(no valid id: {e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::StepName;
    use std::collections::BTreeSet;

    #[test]
    fn the_step_graph_matches_the_design_and_has_no_cycles() {
        let steps = all();
        let names: BTreeSet<_> = steps.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), StepName::ALL.len());
        let needs = |n: StepName| {
            steps
                .iter()
                .find(|s| s.name() == n)
                .map(|s| s.needs().to_vec())
                .unwrap_or_default()
        };
        assert_eq!(
            needs(StepName::RoleAssignment),
            vec![StepName::Identity, StepName::BlobContainer]
        );
        assert_eq!(
            needs(StepName::FederatedCredential),
            vec![StepName::Identity]
        );
        // Kahn's algorithm: every step is reachable in topological order.
        let mut done = BTreeSet::new();
        while done.len() < steps.len() {
            let ready: Vec<_> = steps
                .iter()
                .filter(|s| !done.contains(&s.name()) && s.needs().iter().all(|n| done.contains(n)))
                .map(|s| s.name())
                .collect();
            assert!(
                !ready.is_empty(),
                "cycle among {:?}",
                names.difference(&done)
            );
            done.extend(ready);
        }
    }
}
