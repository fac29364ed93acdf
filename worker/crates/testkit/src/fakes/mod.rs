//! In-memory test doubles of the worker's ports: a journal ([`MemJournal`]), an events topic
//! ([`MemTopic`]), a cloud playing both Azure and Kubernetes ([`FakeCloud`]) and a clock that
//! moves only when told ([`ManualClock`]).

mod clock;
mod cloud;
mod journal;
mod topic;

pub use clock::ManualClock;
pub use cloud::{CloudFaults, FakeCloud};
pub use journal::MemJournal;
pub use topic::{MemTopic, TopicProgress};
