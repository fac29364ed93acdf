//! The production [`KubeProvisioner`](onboarding_providers::KubeProvisioner): [`KubeApplier`],
//! server-side apply of the tenant's objects (built by `onboarding_providers::manifests`) with
//! the fixed field manager.
//!
//! May talk only to the API servers the configured targets name; never to Azure.

mod applier;
mod classify;
mod kinds;
mod setup;

pub use applier::KubeApplier;
pub use setup::{KubeClientOptions, KubeSetupError};
