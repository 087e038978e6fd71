//! Cipher suites and record ciphers.

use core::fmt;

use crate::wire::EncryptionType;

/// A handshake suite: key exchange, signatures, hash and KDF.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Suite(pub u16);

impl Suite {
    /// `0x0001` XTMP1_X25519MLKEM1024_MLDSA87ED25519_SHA384: the mandatory
    /// v1 suite. X25519 + ML-KEM-1024 hybrid key exchange, ML-DSA-87 and
    /// Ed25519 signatures that must both verify, SHA-384 transcript, and
    /// HKDF-SHA-384.
    pub const V1: Suite = Suite(0x0001);

    /// The suite's name, if known.
    pub const fn name(self) -> Option<&'static str> {
        match self.0 {
            0x0001 => Some("XTMP1_X25519MLKEM1024_MLDSA87ED25519_SHA384"),
            _ => None,
        }
    }
}

impl fmt::Debug for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "Suite(0x{:04x})", self.0),
        }
    }
}

/// A record cipher, as named by the header's encryption type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AeadAlgorithm {
    /// AES-256-GCM (encryption type `0x01`).
    Aes256Gcm,
    /// ChaCha20-Poly1305 (encryption type `0x02`).
    ChaCha20Poly1305,
    /// The test-only null cipher (encryption type `0xFF`): the payload is
    /// left in the clear and the tag is sixteen zero bytes. It exists so
    /// fuzzers and the simulator's corruption checks can reach past the
    /// AEAD; it is compiled only with the `__null-cipher` feature, which
    /// refuses to build without debug assertions (except under cargo-fuzz).
    #[cfg(feature = "__null-cipher")]
    TestNull,
}

impl AeadAlgorithm {
    /// The header's encryption type for this cipher.
    pub const fn encryption_type(self) -> EncryptionType {
        match self {
            AeadAlgorithm::Aes256Gcm => EncryptionType::AES_256_GCM,
            AeadAlgorithm::ChaCha20Poly1305 => EncryptionType::CHACHA20_POLY1305,
            #[cfg(feature = "__null-cipher")]
            AeadAlgorithm::TestNull => EncryptionType::TEST_NULL,
        }
    }

    /// The cipher for an encryption type code, if it names one.
    pub const fn from_code(code: u8) -> Option<AeadAlgorithm> {
        match code {
            0x01 => Some(AeadAlgorithm::Aes256Gcm),
            0x02 => Some(AeadAlgorithm::ChaCha20Poly1305),
            #[cfg(feature = "__null-cipher")]
            0xFF => Some(AeadAlgorithm::TestNull),
            _ => None,
        }
    }

    /// Records that may be sealed under one key before it must be replaced
    /// (RFC 9001 §6.6: 2^23 for AES-GCM; ChaCha20-Poly1305's bound exceeds
    /// the sequence space, so the rotation timer governs).
    pub const fn confidentiality_limit(self) -> u64 {
        match self {
            AeadAlgorithm::Aes256Gcm => 1 << 23,
            AeadAlgorithm::ChaCha20Poly1305 => 1 << 62,
            #[cfg(feature = "__null-cipher")]
            AeadAlgorithm::TestNull => 1 << 62,
        }
    }

    /// Failed openings tolerated across all keys of a session before it
    /// must close (RFC 9001 §6.6: 2^52 AES-GCM, 2^36 ChaCha20-Poly1305).
    pub const fn integrity_limit(self) -> u64 {
        match self {
            AeadAlgorithm::Aes256Gcm => 1 << 52,
            AeadAlgorithm::ChaCha20Poly1305 => 1 << 36,
            #[cfg(feature = "__null-cipher")]
            AeadAlgorithm::TestNull => 1 << 36,
        }
    }
}
