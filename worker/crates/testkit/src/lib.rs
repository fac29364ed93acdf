//! Dev-only test kit of the worker's crates: the conformance suites every implementation of a
//! trait must pass (one per trait, run against each implementation by a one-line macro call),
//! in-memory fakes ([`fakes`]), fixtures written as builders ([`fixtures`]), the engine-level
//! harness ([`engine::EngineHarness`]), the one helper that skips a test unless its environment
//! variables are set ([`env::require`]), and the one way tests write configuration files
//! ([`config`], with the `toml` crate).
//!
//! Three harnesses, one per level, each named for it:
//! - [`engine::EngineHarness`] (here): the saga engine on fakes, no runner, no transport;
//! - `RunnerHarness` (`worker/tests/harness`): the worker's runner in process against the
//!   simulators (it needs the `worker` crate, which this crate must not depend on);
//! - `ProcessHarness` (crate `e2e`, `tests/src/lib.rs`): the real binaries as child processes.
//!
//! Production code never depends on this crate. It touches only what a test hands it.

pub mod config;
pub mod engine;
pub mod env;
pub mod fakes;
pub mod fixtures;
pub mod journal_conformance;
pub mod kube_conformance;
pub mod real_cluster;
pub mod transport_conformance;

pub use engine::EngineHarness;
pub use fixtures::{OffboardBuilder, OnboardBuilder};
