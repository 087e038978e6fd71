//! The wire layer: the 96-byte frame header, message types, flags, CRC32,
//! and frame boundaries on byte streams and in datagrams (SPEC.md, "Frames").
//!
//! Decoding is zero-copy: [`Frame`] borrows its header and payload from the
//! input and allocates nothing. Encoding writes into the caller's buffer.
//! The only allocation in this module is the [`Deframer`]'s bounded buffer
//! for frames split across stream chunks.

mod deframer;
mod error;
mod frame;
mod header;
mod types;

pub use deframer::{Admission, Deframer};
pub use error::WireError;
pub use frame::{DatagramFrames, Frame, associated_data, frame_crc, write_crc};
pub use header::{HEADER_LEN, Header, MAGIC, VERSION, check_prefix, offset};
pub use types::{EncryptionType, FlagRule, Flags, MessageType, Priority, TypeClass};

/// Default maximum payload of one frame accepted by a receiver: 64 KiB
/// and 64 bytes, so that a message of 64 KiB travels in one frame with its
/// data header (25 bytes) rather than as a full frame and a sliver.
///
/// Messages larger than this are fragmented (SPEC.md, "Reliability").
pub const DEFAULT_MAX_PAYLOAD: u32 = 64 * 1024 + 64;

/// The smallest maximum frame payload a side may announce (SPEC.md,
/// Parameters id 2): every receiver accepts frames this large, so
/// handshake frames, sent before the peer's limit is known, stay within it.
pub const MIN_MAX_PAYLOAD: u32 = 1024;

#[cfg(test)]
mod tests;
