//! # xtmp-tests
//!
//! Cross-crate tests. The conformance suite (each scenario written once,
//! generic over the adapter, run against `xtmp-tokio`, `xtmp-async-std` and
//! `xtmp-sim`) will live here; for now the integration tests in `tests/`
//! check the SPEC.md test vectors through the public API of every crate.

pub use xtmp_core;
pub use xtmp_sim;
