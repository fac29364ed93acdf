//! The message contract: commands in, events out, their validation, and the deterministic names
//! derived from them. Pure code: no I/O, no clients.

pub mod commands;
pub mod events;
pub mod names;
pub mod schema;
pub mod validate;

pub use commands::{Command, OffboardTenant, OnboardTenant};
pub use events::CloudEvent;
pub use names::TenantNames;
pub use validate::{FieldError, RejectReason, Rejection, ValidationContext, parse_command};
