//! `worker` binary.
fn main() {}
