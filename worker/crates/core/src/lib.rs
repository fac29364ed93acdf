//! The vocabulary every part of the tenant onboarding worker shares, and nothing else: how an
//! error is classified ([`Classify`]), the clock tests can move ([`Clock`]), bearer-token
//! credentials ([`TokenCredential`]) with their settings ([`CredentialConfig`], [`Secret`]).
//!
//! Pure definitions: this crate touches no network, file or environment (the system clock's
//! timer excepted) and depends on no other crate of the workspace.

mod auth;
mod clock;
mod error;
mod identity;
mod recorder;

pub use auth::{AccessToken, AuthError, TokenCredential};
pub use clock::{Clock, SystemClock};
pub use error::{Classify, ErrorClass};
pub use identity::{
    AzureCliSettings, Cloud, CloudName, CredentialConfig, EntraEnvironment,
    ManagedIdentitySettings, REDACTED, Secret, WorkloadIdentitySettings,
};
pub use recorder::{NoRecorder, Recorder};
