//! The performance benchmarks of issue 7, run by `tests/src/bin/bench.rs`: programs that print
//! figures (ratios measured in one run), never tests with wall-clock thresholds.
//!
//! May touch: temp directories (SQLite files, configuration, logs), loopback ports of the
//! simulators it starts, child `worker` processes it spawns (and ends), and `docs/benchmarks.md`.

pub mod arm_budget;
pub mod cluster_burst;
pub mod cold_start;
pub mod critical_path;
pub mod harness;
pub mod memory;
pub mod procstat;
pub mod report;
pub mod throughput;
