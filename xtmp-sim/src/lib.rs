//! # xtmp-sim
//!
//! A deterministic, single-threaded network simulator for XTMP. One `u64`
//! seed drives virtual time, the network faults (latency, loss, duplication,
//! reordering, corruption, partitions, MTU, rebinding, crashes) and the
//! protocol randomness injected into [`xtmp_core`], so every run replays bit
//! for bit. It drives the core only through its public sans-IO surface.
//!
//! Not yet implemented: the first scenarios land once sessions exist (issue 6).

pub use xtmp_core;
