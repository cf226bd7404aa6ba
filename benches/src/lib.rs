//! Criterion benchmarks for nodegate; see docs/BENCHMARKS.md.
