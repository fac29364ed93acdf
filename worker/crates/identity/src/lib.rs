//! Entra credentials behind [`onboarding_core::TokenCredential`]: workload identity (the
//! projected service-account token exchanged at Entra), the Azure CLI and managed identity, each
//! provided by `azure_identity` 1.x and named by its own Entra tenant, client id and cloud. They
//! serve every Azure client of the worker: ARM, Service Bus and Table Storage, each with its own
//! credential, possibly in its own Entra tenant.
//!
//! What this crate adds to `azure_identity`: a token cache per scope that shares one fetch among
//! concurrent callers and remembers a failure for a moment (so an Entra outage is not asked
//! twice a second by every caller), forgetting a token a service refused, a token file read
//! afresh on each exchange (the kubelet rotates it), and failures classified from Entra's OAuth
//! error, its error codes and the HTTP status, never from message text.
//!
//! May touch: Entra's token endpoint at the credential's authority, the projected token file,
//! the `az` program and the instance metadata endpoint, as the credential's settings name them.
//! Reads no environment: the binary hands in [`onboarding_core::EntraEnvironment`].

mod credential;

pub use credential::{CredentialError, CredentialOptions, credential_for, credential_with};
