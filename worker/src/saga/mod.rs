//! The saga: tenant state in the journal ([`record`]), the steps ([`steps`], one file each),
//! and the engine that advances a tenant's saga for one message's time budget ([`engine`]).

pub mod engine;
pub mod record;
pub mod step;
pub mod steps;

pub use engine::{Engine, Handled};
pub use record::{StepName, TenantRecord};
