//! The Kubernetes side of provisioning: the tenant's manifests ([`manifests`], pure builders) and
//! the production [`KubeProvisioner`](crate::providers::KubeProvisioner), [`KubeApplier`]
//! (server-side apply with the fixed field manager [`FIELD_MANAGER`]).
//!
//! Named `k8s`, not `kube`, so it does not shadow the `kube` crate. It may talk only to the API
//! servers the configured targets name.

pub mod applier;
pub mod manifests;

pub use applier::{KubeApplier, KubeClientOptions, KubeSetupError};
pub use manifests::{FIELD_MANAGER, GuardrailSpec};
