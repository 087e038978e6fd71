//! # xtmp-tests
//!
//! Cross-crate tests of XTMP, and the **adapter conformance suite**: each
//! scenario ([`scenarios`]) is written once against the runtime-neutral
//! client and server and runs, through [`harness::run`], against every
//! adapter: `xtmp-tokio`, `xtmp-async-std` under smol and under
//! async-std, and across them (a client on one runtime, its server on
//! another). Where a scenario makes sense without real sockets, the
//! simulator runs its counterpart (`tests/conformance.rs`).

pub mod harness;
pub mod proxy;
pub mod scenarios;

pub use xtmp_core;
pub use xtmp_sim;
