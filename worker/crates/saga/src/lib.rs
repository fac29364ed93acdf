//! The onboarding saga: tenant state in the journal ([`record`]), the steps ([`steps`], one file
//! each), the pure state machine over the record ([`machine`]), the one retry policy
//! ([`retry`]), and the engine that drives them for one message's time budget ([`engine`]).
//!
//! May touch: the journal and the two provider traits it is handed in its [`SagaContext`]. Never
//! a queue or topic (the runner sends what the engine hands back) and never a concrete provider.

pub mod cluster_turns;
mod context;
pub mod engine;
pub mod machine;
pub mod retry;
pub mod step;
pub mod steps;

pub use context::{NoProgress, ProgressSink, SagaContext};
pub use engine::{ContinuationRequest, Engine, Handled, name_claims};
pub use onboarding_config::SagaConfig;
pub use onboarding_record as record;
pub use onboarding_record::{StepName, TenantRecord};
