//! Benchmarks live in benches/benches and benches/compare.
