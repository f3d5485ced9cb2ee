//! Placeholder replaced by the storage benches.
fn main() {}
