//! Entra credentials behind [`onboarding_core::TokenCredential`]: workload identity (a projected
//! service-account token exchanged for an Entra token) and the Azure CLI, with a shared token
//! cache. They serve every Azure client of the worker: ARM, Service Bus and Table Storage, each
//! with its own credential in its own Entra tenant.
//!
//! May touch: Entra's token endpoint, the projected token file and the `az` program a
//! credential's settings name. Reads no environment.

mod credential;

pub use credential::*;
