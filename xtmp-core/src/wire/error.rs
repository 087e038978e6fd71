//! Errors of the wire layer.

use core::fmt;

use super::types::{EncryptionType, FlagRule};

/// Why a frame was rejected by the codec, or could not be encoded.
///
/// Every variant names the field and the offending value in its `Display`.
/// SPEC.md, "Errors", says what a receiver does with each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than a whole header or a whole frame.
    Truncated {
        /// Bytes the frame needs (header, or header plus declared payload).
        needed: usize,
        /// Bytes that were available.
        available: usize,
    },
    /// Bytes 0..4 are not `XTMP`.
    BadMagic([u8; 4]),
    /// Byte 4 is not a version this implementation speaks.
    UnsupportedVersion(u8),
    /// The payload length (bytes 24..28) is above the receiver's limit.
    /// Checked before anything is buffered or allocated.
    PayloadTooLarge {
        /// The declared payload length.
        length: u32,
        /// The receiver's configured maximum.
        max: u32,
    },
    /// The CRC32 (bytes 28..32) does not match the frame.
    BadCrc {
        /// The CRC carried in the header.
        received: u32,
        /// The CRC computed over the frame as received.
        computed: u32,
    },
    /// A reserved byte (7, or 33..40) is not zero.
    NonZeroReserved {
        /// Offset of the first non-zero reserved byte in the header.
        offset: usize,
        /// Its value.
        value: u8,
    },
    /// Message type `0x00`.
    InvalidMessageType(u8),
    /// An encryption type this receiver does not implement.
    UnsupportedEncryption(EncryptionType),
    /// The flag byte breaks a rule of SPEC.md, "Flags".
    InvalidFlags {
        /// The flag byte as received.
        flags: u8,
        /// The rule it breaks.
        rule: FlagRule,
    },
    /// A field that must be zero for this frame is not: the key id, nonce or
    /// tag of a cleartext frame, or the nonce bytes beyond the cipher's
    /// nonce length.
    NonZeroUnused {
        /// The field's name as in SPEC.md.
        field: &'static str,
        /// Offset of the first non-zero byte in the header.
        offset: usize,
    },
    /// The caller's output buffer is too small.
    BufferTooSmall {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A stream deframer was used after it reported an error: the byte
    /// stream has lost framing and must be closed.
    Poisoned,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::Truncated { needed, available } => {
                write!(f, "truncated frame: need {needed} bytes, have {available}")
            }
            WireError::BadMagic(m) => write!(
                f,
                "bad magic: bytes 0..4 are {:02x}{:02x}{:02x}{:02x}, expected 58544d50 (\"XTMP\")",
                m[0], m[1], m[2], m[3]
            ),
            WireError::UnsupportedVersion(v) => {
                write!(f, "unsupported version {v} in byte 4 (this implementation speaks 1)")
            }
            WireError::PayloadTooLarge { length, max } => {
                write!(f, "payload length {length} exceeds the maximum of {max} bytes")
            }
            WireError::BadCrc { received, computed } => {
                write!(f, "CRC32 mismatch: header carries 0x{received:08x}, frame hashes to 0x{computed:08x}")
            }
            WireError::NonZeroReserved { offset, value } => {
                write!(f, "reserved byte at offset {offset} is 0x{value:02x}, must be zero")
            }
            WireError::InvalidMessageType(t) => write!(f, "invalid message type 0x{t:02x}"),
            WireError::UnsupportedEncryption(e) => {
                write!(f, "unsupported encryption type 0x{:02x} in byte 32", e.0)
            }
            WireError::InvalidFlags { flags, rule } => {
                write!(f, "invalid flags 0b{flags:08b}: {rule}")
            }
            WireError::NonZeroUnused { field, offset } => {
                write!(f, "{field} must be zero here, but byte {offset} is not")
            }
            WireError::BufferTooSmall { needed, available } => {
                write!(f, "output buffer too small: need {needed} bytes, have {available}")
            }
            WireError::Poisoned => f.write_str("stream deframer used after an error: the stream must be closed"),
        }
    }
}

impl core::error::Error for WireError {}
