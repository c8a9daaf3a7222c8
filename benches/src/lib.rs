//! Benchmarks of pycds (criterion targets live in `benches/`).
