//! # xtmp-core
//!
//! The sans-IO core of XTMP, the eXtended Transport Messaging Protocol that
//! carries requests, responses and live streams between BPI Core (client) and
//! BPCI (server).
//!
//! Everything in this crate is a pure state machine: bytes and time go in;
//! bytes to send, the next timeout and application events come out. There are
//! no sockets, no clocks, no OS randomness and no threads here. The crate is
//! `#![no_std]` with `alloc`; the default `std` feature is reserved for
//! conveniences that need the standard library (errors implement
//! `core::error::Error` without it).
//!
//! Layers, each in its own module (see `GUIDE.md` and `SPEC.md`):
//!
//! | module | what it owns |
//! | --- | --- |
//! | [`wire`] | the 96-byte frame header, message types, flags, CRC32, frame boundaries on byte streams and in datagrams |
//! | [`compression`] | LZ4 message bodies with a declared length, refused before allocating when too large |
//! | [`crypto`] | the [`crypto::CryptoProvider`] trait, the pure-Rust provider (and an aws-lc-rs one behind the `aws-lc` feature), suites, secrets, the key schedule |
//! | [`handshake`] | identities, trust, the hybrid post-quantum handshake state machines |
//! | [`session`] | one session: handshake carriage, record protection, replay window, key updates, heartbeats, close |
//! | [`reliability`] | acknowledgements, loss detection, retransmission, fragmentation, ordering, congestion control |
//! | [`endpoint`] | the server side: demultiplexing, ClientHello reassembly, admission, stateless cookies |
//! | [`shard`] | one endpoint per core: session ids that name their endpoint, and routing frames to it |
//! | [`time`] | the caller-supplied monotonic [`time::Instant`] |
//!
//! ## Example: encode a frame and decode it again
//!
//! ```
//! use xtmp_core::wire::{Header, MessageType, Flags, Frame, HEADER_LEN};
//!
//! let mut header = Header::new(MessageType::HEARTBEAT, 0x1122_3344_5566_7788, 7);
//! header.flags = Flags::REQUIRES_ACK;
//! let payload = b"ping";
//! let mut buf = [0u8; HEADER_LEN + 4];
//! let len = Frame::encode(&header, payload, &mut buf).unwrap();
//!
//! let (frame, used) = Frame::decode(&buf[..len], 1024).unwrap();
//! assert_eq!(used, len);
//! assert_eq!(frame.header().message_type, MessageType::HEARTBEAT);
//! assert_eq!(frame.header().sequence, 7);
//! assert_eq!(frame.payload(), b"ping");
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core, clippy::std_instead_of_alloc)]

// The null cipher is for tests, fuzzing and the simulator only: a build
// without debug assertions (a release build) refuses it, except under
// cargo-fuzz, which builds optimised and sets `--cfg fuzzing`.
#[cfg(all(feature = "__null-cipher", not(debug_assertions), not(fuzzing)))]
compile_error!("the `__null-cipher` feature is test-only and cannot be enabled in a release build");

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod compression;
pub mod crypto;
pub mod endpoint;
pub mod handshake;
pub mod reliability;
pub mod session;
pub mod shard;
pub mod time;
pub mod wire;

#[cfg(all(feature = "std", any(test, feature = "__fuzzing")))]
#[doc(hidden)]
pub mod fuzzing;
