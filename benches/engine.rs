//! Placeholder replaced by the engine benches.
fn main() {}
