//! `producer`: the operator CLI.
fn main() {}
