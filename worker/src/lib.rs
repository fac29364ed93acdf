//! The tenant onboarding worker's process: configuration, the clients it builds
//! ([`bootstrap`]), the message loop ([`runner`]), the periodic drift check ([`drift`]), and its operations surface ([`health`],
//! [`metrics`], [`telemetry`], [`wellbeing`]). The parts it assembles live in their own crates under
//! `worker/crates/` (contract, saga, providers, azure, kube, transport, journal), so that each
//! rule of the architecture is a dependency that does not exist; see `docs/architecture.md`.
//!
//! May touch everything the configuration names; reads the environment only when the binary
//! hands it over (`onboarding_config::Config::load`).

pub mod arm_budget;
pub mod bootstrap;
pub mod cli;
pub mod context;
pub mod drift;
pub mod health;
pub mod metrics;
pub mod runner;
pub mod serve;
pub mod telemetry;
pub mod wellbeing;

pub use onboarding_config as config;
