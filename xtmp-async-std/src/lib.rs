//! # xtmp-async-std
//!
//! The XTMP adapter for applications on async-std or smol, built on the
//! runtime-neutral `async-io`/`async-net`/`futures-io` crates (async-std is
//! discontinued upstream, RUSTSEC-2025-0052). It will offer the same client
//! and server as `xtmp-tokio`, with the shared driver loop, endpoint parsing,
//! resolver and router living once in a runtime-neutral place.
//!
//! It moves bytes and time between sockets and [`xtmp_core`] and holds no
//! protocol logic of its own. Not yet implemented: see issue 8.

pub use xtmp_core;
