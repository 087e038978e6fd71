//! Reliable delivery over any path (SPEC.md section 4), as pure state
//! machines the [`crate::session::Session`] drives:
//!
//! | module | what it owns |
//! | --- | --- |
//! | `ack` | the ACK frame, and what the receiver acknowledges and when |
//! | `recovery` | frames sent and tracked, loss detection, the probe timeout |
//! | [`rtt`] | round-trip time estimation |
//! | [`congestion`] | the pluggable congestion controller, NewReno by default |
//! | [`pacing`] | spreading the window over the round trip |
//! | [`mtu`] | datagram path MTU discovery and black-hole fallback |
//! | `outbound` | reliable messages waiting for acknowledgement, order numbers, credit offsets, deadlines |
//! | `flow` | flow-control credit: the peer's limits, what this side advertises |
//! | `reassembly`, `delivery` | fragments into messages, exactly-once in-order delivery, memory bounds |
//!
//! Nothing here reads a clock or a socket: every call takes `now`.

pub(crate) mod ack;
pub mod congestion;
pub(crate) mod delivery;
pub(crate) mod flow;
pub mod mtu;
pub(crate) mod outbound;
pub mod pacing;
pub(crate) mod ranges;
pub(crate) mod reassembly;
pub(crate) mod recovery;
pub mod rtt;

pub use ack::MAX_ACK_RANGES;
pub use congestion::{Controller, ControllerFactory, NewReno, NewRenoFactory};
pub use mtu::MtuDiscoveryConfig;
pub use reassembly::MAX_RUNS;
pub use recovery::{DATAGRAM_STALL_PROBES, MAX_PACKET_THRESHOLD, MIN_STALL, PACKET_THRESHOLD, STALL_PTOS};
pub use rtt::RttEstimator;
