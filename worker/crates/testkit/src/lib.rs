//! Dev-only test kit of the worker's crates: the conformance suites every implementation of a
//! trait must pass (one per trait, run against each implementation by a one-line macro call),
//! and the fixtures and harnesses the suites share.
//!
//! Production code never depends on this crate. It touches only what a test hands it.

pub mod journal_conformance;
pub mod transport_conformance;
