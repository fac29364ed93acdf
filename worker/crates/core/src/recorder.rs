//! What the libraries count, without knowing where it is counted: the worker's metrics registry
//! implements [`Recorder`], tests use [`NoRecorder`] or their own. Label values passed here come
//! from closed sets (step names, phases, outcome words), never from tenant input.

use std::time::Duration;

/// Receives the events the saga and the Azure client count. Every method defaults to doing
/// nothing, so an implementation records only what it cares about.
pub trait Recorder: Send + Sync + std::fmt::Debug {
    /// A step call ended: `phase` is forward or compensation, `outcome` succeeded, pending,
    /// transient, permanent or invalid_input.
    fn step_finished(&self, _step: &str, _phase: &str, _outcome: &str, _duration: Duration) {}
    /// A saga reached a terminal state (succeeded, failed, compensation_failed, offboarded).
    fn saga_finished(&self, _state: &str) {}
    /// A saga switched to compensation (step_failed, cancelled).
    fn compensation_started(&self, _trigger: &str) {}
    /// ARM answered 429.
    fn arm_throttled(&self) {}
}

/// Records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRecorder;

impl Recorder for NoRecorder {}
