//! Proof benchmarks (placeholder).
fn main() {}
