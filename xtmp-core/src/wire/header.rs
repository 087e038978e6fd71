//! The 96-byte frame header (SPEC.md, "Frames").

use super::error::WireError;
use super::types::{EncryptionType, FlagRule, Flags, MessageType, TypeClass};

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 96;
/// The magic bytes at offset 0.
pub const MAGIC: [u8; 4] = *b"XTMP";
/// The protocol version this implementation speaks (byte 4).
pub const VERSION: u8 = 1;

/// Byte offsets of the header fields (SPEC.md, "Frames").
pub mod offset {
    /// `magic`, 4 bytes.
    pub const MAGIC: usize = 0;
    /// `version`, 1 byte.
    pub const VERSION: usize = 4;
    /// `message type`, 1 byte.
    pub const MESSAGE_TYPE: usize = 5;
    /// `flags`, 1 byte.
    pub const FLAGS: usize = 6;
    /// first reserved byte, 1 byte.
    pub const RESERVED_1: usize = 7;
    /// `session id`, 8 bytes.
    pub const SESSION_ID: usize = 8;
    /// `sequence number`, 8 bytes.
    pub const SEQUENCE: usize = 16;
    /// `payload length`, 4 bytes.
    pub const PAYLOAD_LEN: usize = 24;
    /// `CRC32`, 4 bytes.
    pub const CRC: usize = 28;
    /// `encryption type`, 1 byte.
    pub const ENCRYPTION: usize = 32;
    /// second reserved field, 7 bytes.
    pub const RESERVED_2: usize = 33;
    /// `key id`, 16 bytes.
    pub const KEY_ID: usize = 40;
    /// `nonce`, 24 bytes.
    pub const NONCE: usize = 56;
    /// `auth tag`, 16 bytes.
    pub const TAG: usize = 80;
}

/// A decoded frame header: plain values, no borrowed data.
///
/// The magic and reserved bytes are not fields: they are fixed by the spec,
/// written by [`Header::write`] and checked by the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Protocol version (byte 4). [`VERSION`] for frames this crate emits.
    pub version: u8,
    /// Message type (byte 5).
    pub message_type: MessageType,
    /// Flags (byte 6).
    pub flags: Flags,
    /// Session id (bytes 8..16), chosen at random by the receiver.
    pub session_id: u64,
    /// Sequence number (bytes 16..24).
    pub sequence: u64,
    /// Payload length (bytes 24..28). Set by the encoder from the payload.
    pub payload_len: u32,
    /// CRC32 (bytes 28..32). Set by the encoder.
    pub crc: u32,
    /// Encryption type (byte 32).
    pub encryption: EncryptionType,
    /// Key id (bytes 40..56).
    pub key_id: [u8; 16],
    /// Nonce (bytes 56..80).
    pub nonce: [u8; 24],
    /// AEAD tag (bytes 80..96).
    pub tag: [u8; 16],
}

impl Header {
    /// A cleartext header of the current version with no flags and all
    /// security fields zero.
    pub const fn new(message_type: MessageType, session_id: u64, sequence: u64) -> Header {
        Header {
            version: VERSION,
            message_type,
            flags: Flags::empty(),
            session_id,
            sequence,
            payload_len: 0,
            crc: 0,
            encryption: EncryptionType::NONE,
            key_id: [0; 16],
            nonce: [0; 24],
            tag: [0; 16],
        }
    }

    /// Writes every field, the magic and zero reserved bytes into `out`,
    /// exactly as the fields are (`payload_len` and `crc` included).
    pub fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[offset::MAGIC..offset::MAGIC + 4].copy_from_slice(&MAGIC);
        out[offset::VERSION] = self.version;
        out[offset::MESSAGE_TYPE] = self.message_type.0;
        out[offset::FLAGS] = self.flags.bits();
        out[offset::RESERVED_1] = 0;
        out[offset::SESSION_ID..offset::SESSION_ID + 8].copy_from_slice(&self.session_id.to_be_bytes());
        out[offset::SEQUENCE..offset::SEQUENCE + 8].copy_from_slice(&self.sequence.to_be_bytes());
        out[offset::PAYLOAD_LEN..offset::PAYLOAD_LEN + 4].copy_from_slice(&self.payload_len.to_be_bytes());
        out[offset::CRC..offset::CRC + 4].copy_from_slice(&self.crc.to_be_bytes());
        out[offset::ENCRYPTION] = self.encryption.0;
        out[offset::RESERVED_2..offset::KEY_ID].fill(0);
        out[offset::KEY_ID..offset::NONCE].copy_from_slice(&self.key_id);
        out[offset::NONCE..offset::TAG].copy_from_slice(&self.nonce);
        out[offset::TAG..HEADER_LEN].copy_from_slice(&self.tag);
    }

    /// Reads the fields of `raw` without checking anything.
    pub fn read(raw: &[u8; HEADER_LEN]) -> Header {
        Header {
            version: raw[offset::VERSION],
            message_type: MessageType(raw[offset::MESSAGE_TYPE]),
            flags: Flags::from_bits_retain(raw[offset::FLAGS]),
            session_id: be_u64(raw, offset::SESSION_ID),
            sequence: be_u64(raw, offset::SEQUENCE),
            payload_len: be_u32(raw, offset::PAYLOAD_LEN),
            crc: be_u32(raw, offset::CRC),
            encryption: EncryptionType(raw[offset::ENCRYPTION]),
            key_id: array(raw, offset::KEY_ID),
            nonce: array(raw, offset::NONCE),
            tag: array(raw, offset::TAG),
        }
    }

    /// Checks the field rules that do not depend on the payload: message
    /// type, encryption type, flag combinations and fields that must be zero
    /// (SPEC.md, "Frames" and "Flags"). Magic, version and reserved bytes are
    /// not fields of `Header`; the decoder checks them on the raw bytes.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.version != VERSION {
            return Err(WireError::UnsupportedVersion(self.version));
        }
        if self.message_type.class() == TypeClass::Invalid {
            return Err(WireError::InvalidMessageType(self.message_type.0));
        }
        if !encryption_supported(self.encryption) {
            return Err(WireError::UnsupportedEncryption(self.encryption));
        }
        let flags = self.flags;
        let bad = |rule| Err(WireError::InvalidFlags { flags: flags.bits(), rule });
        if flags.contains(Flags::LAST_FRAGMENT) && !flags.contains(Flags::FRAGMENTED) {
            return bad(FlagRule::LastFragmentWithoutFragmented);
        }
        if flags.contains(Flags::PRIORITY_HIGH | Flags::EMERGENCY) {
            return bad(FlagRule::TwoPriorityClasses);
        }
        let encrypted = flags.contains(Flags::ENCRYPTED);
        if encrypted && self.encryption == EncryptionType::NONE {
            return bad(FlagRule::EncryptedWithoutCipher);
        }
        if !encrypted && self.encryption != EncryptionType::NONE {
            return bad(FlagRule::CipherWithoutEncrypted);
        }
        let data_flags = Flags::COMPRESSED | Flags::FRAGMENTED | Flags::LAST_FRAGMENT | Flags::STREAM_DATA;
        if self.message_type.is_control() && flags.intersects(data_flags) {
            return bad(FlagRule::ControlFrameDataFlag);
        }
        match self.encryption.nonce_len() {
            None => {
                nonzero_check("key id", offset::KEY_ID, &self.key_id)?;
                nonzero_check("nonce", offset::NONCE, &self.nonce)?;
                nonzero_check("auth tag", offset::TAG, &self.tag)?;
            }
            Some(n) => nonzero_check("nonce padding", offset::NONCE + n, &self.nonce[n..])?,
        }
        Ok(())
    }
}

/// Whether the decoder accepts this encryption type.
pub(crate) const fn encryption_supported(e: EncryptionType) -> bool {
    e.is_known() || (cfg!(feature = "__null-cipher") && e.0 == EncryptionType::TEST_NULL.0)
}

fn nonzero_check(field: &'static str, base: usize, bytes: &[u8]) -> Result<(), WireError> {
    match bytes.iter().position(|&b| b != 0) {
        Some(i) => Err(WireError::NonZeroUnused { field, offset: base + i }),
        None => Ok(()),
    }
}

fn be_u64(raw: &[u8; HEADER_LEN], at: usize) -> u64 {
    u64::from_be_bytes(array(raw, at))
}

fn be_u32(raw: &[u8; HEADER_LEN], at: usize) -> u32 {
    u32::from_be_bytes(array(raw, at))
}

fn array<const N: usize>(raw: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&raw[at..at + N]);
    out
}

/// Checks what can be checked on a header before its payload is available:
/// magic, version and the payload length limit. Returns the payload length.
///
/// A stream deframer calls this as soon as 96 bytes have arrived, so an
/// oversized or foreign stream is refused before anything is buffered for it.
pub fn check_prefix(raw: &[u8; HEADER_LEN], max_payload: u32) -> Result<u32, WireError> {
    let magic = array::<4>(raw, offset::MAGIC);
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if raw[offset::VERSION] != VERSION {
        return Err(WireError::UnsupportedVersion(raw[offset::VERSION]));
    }
    let length = be_u32(raw, offset::PAYLOAD_LEN);
    if length > max_payload {
        return Err(WireError::PayloadTooLarge { length, max: max_payload });
    }
    Ok(length)
}

/// Checks the reserved bytes of a raw header.
pub(crate) fn check_reserved(raw: &[u8; HEADER_LEN]) -> Result<(), WireError> {
    if raw[offset::RESERVED_1] != 0 {
        return Err(WireError::NonZeroReserved { offset: offset::RESERVED_1, value: raw[offset::RESERVED_1] });
    }
    match raw[offset::RESERVED_2..offset::KEY_ID].iter().position(|&b| b != 0) {
        Some(i) => {
            let at = offset::RESERVED_2 + i;
            Err(WireError::NonZeroReserved { offset: at, value: raw[at] })
        }
        None => Ok(()),
    }
}
