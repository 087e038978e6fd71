//! Handshake errors: precise for the local application, generic for the peer.

use core::fmt;

use crate::crypto::CryptoError;

/// Which side of a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The side that sends the ClientHello (BPI Core).
    Client,
    /// The side that answers it (BPCI).
    Server,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Client => "client",
            Role::Server => "server",
        })
    }
}

/// One half of a hybrid signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// ML-DSA-87 (FIPS 204).
    MlDsa87,
    /// Ed25519 (RFC 8032).
    Ed25519,
}

/// Why a peer's identity was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustError {
    /// The identity's key id is not pinned or trusted.
    UnknownIdentity,
    /// A credential was required (root-of-trust mode) but none was sent.
    MissingCredential,
    /// The credential was issued by a key that is not the trusted root.
    UnknownIssuer,
    /// The credential's signature does not verify.
    BadCredentialSignature,
    /// The credential is not valid at the given time.
    CredentialExpired,
    /// The credential is valid only later than the given time.
    CredentialNotYetValid,
    /// Credential checks need the current time and none was given.
    NoTime,
}

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrustError::UnknownIdentity => "identity is neither pinned nor trusted",
            TrustError::MissingCredential => "a root-signed credential is required but none was sent",
            TrustError::UnknownIssuer => "credential issuer is not the trusted root",
            TrustError::BadCredentialSignature => "credential signature does not verify",
            TrustError::CredentialExpired => "credential has expired",
            TrustError::CredentialNotYetValid => "credential is not yet valid",
            TrustError::NoTime => "credential checks need the current time, and none was supplied",
        })
    }
}

/// Why a handshake failed. `Display` says what failed; the peer is told
/// only [`HandshakeError::WIRE_CODE`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A message could not be parsed; names the message and field.
    Malformed {
        /// The handshake message.
        message: &'static str,
        /// The field that was wrong or missing.
        field: &'static str,
    },
    /// A message arrived that the current state does not expect.
    UnexpectedMessage {
        /// What the state expected.
        expected: &'static str,
        /// The message type byte that arrived.
        got: u8,
    },
    /// A handshake message is larger than the cap.
    TooLarge {
        /// Declared length.
        length: usize,
        /// The cap.
        max: usize,
    },
    /// The peer offered or chose a version this implementation does not speak.
    UnsupportedVersion(u8),
    /// No suite in common.
    NoCommonSuite,
    /// No record cipher in common.
    NoCommonCipher,
    /// The server chose a suite or cipher the client did not offer.
    Downgrade,
    /// The ClientHello's cheap MAC does not verify for any identity of
    /// this server: junk, or a client that expects another server.
    BadMac1,
    /// The ClientHello's address-validation token is invalid or stale.
    BadToken,
    /// A key share is invalid (ML-KEM key check, or a low-order X25519 key).
    InvalidKeyShare(&'static str),
    /// An encrypted handshake flight failed to decrypt.
    DecryptFailed {
        /// Whose flight.
        from: Role,
    },
    /// One half of the peer's hybrid signature does not verify.
    BadSignature {
        /// Which half.
        algorithm: SignatureAlgorithm,
        /// Whose signature.
        signer: Role,
    },
    /// The peer's identity is not trusted.
    Untrusted(TrustError),
    /// The server answered in pinned mode with a key id other than the
    /// pinned identity's.
    IdentityMismatch,
    /// The peer's Finished MAC is wrong.
    BadFinished {
        /// Whose Finished.
        from: Role,
    },
    /// The server requires client authentication and the client sent none,
    /// or the client has no identity to answer the request with.
    ClientAuthRequired,
    /// The client authenticated although the server did not ask.
    UnrequestedClientAuth,
    /// The handshake did not complete in time.
    Timeout,
    /// The peer reported a handshake failure.
    PeerFailed,
    /// A primitive failed unexpectedly.
    Crypto(CryptoError),
}

impl HandshakeError {
    /// The one code a peer is sent for any handshake failure (in an Error
    /// frame), so failures leak nothing about which check failed.
    pub const WIRE_CODE: u16 = 0x0100;
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Malformed { message, field } => write!(f, "malformed {message}: bad or missing {field}"),
            HandshakeError::UnexpectedMessage { expected, got } => {
                write!(f, "unexpected handshake message type 0x{got:02x}, expected {expected}")
            }
            HandshakeError::TooLarge { length, max } => {
                write!(f, "handshake message of {length} bytes exceeds the cap of {max}")
            }
            HandshakeError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            HandshakeError::NoCommonSuite => f.write_str("no handshake suite in common"),
            HandshakeError::NoCommonCipher => f.write_str("no record cipher in common"),
            HandshakeError::Downgrade => f.write_str("server chose a suite or cipher the client did not offer"),
            HandshakeError::BadMac1 => f.write_str("ClientHello mac1 does not verify"),
            HandshakeError::BadToken => f.write_str("ClientHello token is invalid or expired"),
            HandshakeError::InvalidKeyShare(which) => write!(f, "invalid {which} key share"),
            HandshakeError::DecryptFailed { from } => write!(f, "{from} handshake flight failed to decrypt"),
            HandshakeError::BadSignature { algorithm, signer } => {
                write!(f, "{signer} {algorithm:?} signature does not verify")
            }
            HandshakeError::Untrusted(e) => write!(f, "peer identity not trusted: {e}"),
            HandshakeError::IdentityMismatch => f.write_str("server key id differs from the pinned identity"),
            HandshakeError::BadFinished { from } => write!(f, "{from} Finished MAC is wrong"),
            HandshakeError::ClientAuthRequired => f.write_str("client authentication required but not provided"),
            HandshakeError::UnrequestedClientAuth => f.write_str("client authenticated without being asked"),
            HandshakeError::Timeout => f.write_str("handshake timed out"),
            HandshakeError::PeerFailed => f.write_str("peer reported a handshake failure"),
            HandshakeError::Crypto(e) => write!(f, "crypto failure: {e}"),
        }
    }
}

impl core::error::Error for HandshakeError {}

impl From<CryptoError> for HandshakeError {
    fn from(e: CryptoError) -> Self {
        HandshakeError::Crypto(e)
    }
}

impl From<TrustError> for HandshakeError {
    fn from(e: TrustError) -> Self {
        HandshakeError::Untrusted(e)
    }
}
