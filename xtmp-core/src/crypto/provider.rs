//! The crypto provider: every primitive the protocol uses, behind one trait.
//!
//! As in rustls, the core never calls a primitive directly: the
//! configuration carries an `Arc<dyn CryptoProvider>`, and the handshake and
//! sessions call through it. [`super::RustCrypto`] is the default, pure-Rust
//! and `no_std`.

use alloc::boxed::Box;
use core::fmt;

use rand_core::CryptoRng;

use super::secret::Secret;
use super::suite::AeadAlgorithm;

/// ML-KEM-1024 encapsulation key length.
pub const MLKEM_EK_LEN: usize = 1568;
/// ML-KEM-1024 ciphertext length.
pub const MLKEM_CT_LEN: usize = 1568;
/// ML-DSA-87 verifying key length.
pub const MLDSA_VK_LEN: usize = 2592;
/// ML-DSA-87 signature length.
pub const MLDSA_SIG_LEN: usize = 4627;
/// Ed25519 public key length.
pub const ED25519_PK_LEN: usize = 32;
/// Ed25519 signature length.
pub const ED25519_SIG_LEN: usize = 64;
/// X25519 public key length.
pub const X25519_LEN: usize = 32;
/// AEAD tag length of every supported cipher.
pub const TAG_LEN: usize = 16;
/// AEAD nonce length of every supported cipher.
pub const NONCE_LEN: usize = 12;
/// SHA-384 output length.
pub const HASH_LEN: usize = 48;

/// Why a primitive failed. Deliberately coarse: the handshake maps these
/// to precise [`crate::handshake::HandshakeError`]s by context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// A public key failed its validity check (FIPS 203 §7.2 for ML-KEM).
    InvalidPublicKey,
    /// X25519 produced the all-zero output (a low-order peer key).
    NonContributory,
    /// A signature did not verify.
    BadSignature,
    /// An AEAD tag did not verify.
    Decrypt,
    /// An AEAD was asked to seal more than it can.
    Encrypt,
    /// A key or seed could not be loaded.
    InvalidKey,
    /// The provider does not implement this algorithm.
    Unsupported,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CryptoError::InvalidPublicKey => "invalid public key",
            CryptoError::NonContributory => "X25519 shared secret is all zero (low-order key)",
            CryptoError::BadSignature => "signature did not verify",
            CryptoError::Decrypt => "AEAD authentication failed",
            CryptoError::Encrypt => "AEAD seal failed",
            CryptoError::InvalidKey => "invalid key material",
            CryptoError::Unsupported => "algorithm not supported by this provider",
        })
    }
}

impl core::error::Error for CryptoError {}

/// A caller-supplied cryptographically secure RNG. The core never draws
/// randomness from anywhere else.
pub type Rng<'a> = &'a mut dyn CryptoRng;

/// Every primitive XTMP uses.
///
/// Implementations must be deterministic where the operation is (hashes,
/// HKDF, HMAC, AEAD, decapsulation, verification) so that any two providers
/// interoperate and reproduce the test vectors byte for byte. Randomised
/// operations draw from the RNG they are given where the backend allows it.
pub trait CryptoProvider: Send + Sync + fmt::Debug {
    /// A short name for logs and benchmarks.
    fn name(&self) -> &'static str;

    /// A fresh ML-KEM-1024 key pair: the private half and the encoded
    /// encapsulation key.
    fn mlkem_generate(&self, rng: Rng<'_>) -> Result<KemKeyPair, CryptoError>;

    /// Checks `ek` (FIPS 203 §7.2) and encapsulates to it.
    fn mlkem_encapsulate(
        &self,
        ek: &[u8; MLKEM_EK_LEN],
        rng: Rng<'_>,
    ) -> Result<(Box<[u8; MLKEM_CT_LEN]>, Secret<32>), CryptoError>;

    /// A fresh X25519 key pair: the private half and the public key.
    fn x25519_generate(&self, rng: Rng<'_>) -> Result<(Box<dyn DhPrivateKey>, [u8; X25519_LEN]), CryptoError>;

    /// A hybrid signer for an identity's two seeds (ML-DSA-87 ξ, Ed25519).
    fn signer(&self, mldsa_seed: &Secret<32>, ed25519_seed: &Secret<32>) -> Result<Box<dyn HybridSigner>, CryptoError>;

    /// Verifies an ML-DSA-87 signature with the given FIPS 204 context.
    fn mldsa_verify(
        &self,
        vk: &[u8; MLDSA_VK_LEN],
        msg: &[u8],
        context: &[u8],
        sig: &[u8; MLDSA_SIG_LEN],
    ) -> Result<(), CryptoError>;

    /// Verifies an Ed25519 signature (strict: RFC 8032 with canonical
    /// encodings and no small-order keys).
    fn ed25519_verify(
        &self,
        pk: &[u8; ED25519_PK_LEN],
        msg: &[u8],
        sig: &[u8; ED25519_SIG_LEN],
    ) -> Result<(), CryptoError>;

    /// A running SHA-384 hash.
    fn sha384(&self) -> Box<dyn Hash>;

    /// HMAC-SHA-384 of the concatenation of `parts`.
    fn hmac_sha384(&self, key: &[u8], parts: &[&[u8]]) -> Secret<HASH_LEN>;

    /// HKDF-Extract with SHA-384.
    fn hkdf_extract(&self, salt: &[u8], ikm: &[u8]) -> Secret<HASH_LEN>;

    /// HKDF-Expand with SHA-384 from a pseudorandom key, `info` being the
    /// concatenation of `info`'s parts. `out` is at most 255 × 48 bytes.
    fn hkdf_expand(&self, prk: &Secret<HASH_LEN>, info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError>;

    /// An AEAD key for sealing and opening records.
    fn aead(&self, alg: AeadAlgorithm, key: &Secret<32>) -> Result<Box<dyn AeadKey>, CryptoError>;
}

/// An ML-KEM-1024 key pair: the private half and the encoded encapsulation key.
pub type KemKeyPair = (Box<dyn KemPrivateKey>, Box<[u8; MLKEM_EK_LEN]>);

/// The private half of an ML-KEM-1024 key pair.
pub trait KemPrivateKey: Send + Sync {
    /// Decapsulates (with FIPS 203 implicit rejection: a tampered ciphertext
    /// yields an unrelated secret, never an error).
    fn decapsulate(&self, ct: &[u8; MLKEM_CT_LEN]) -> Result<Secret<32>, CryptoError>;
}

/// The private half of an ephemeral X25519 key pair, used once.
pub trait DhPrivateKey: Send + Sync {
    /// The shared secret with `peer`; fails on an all-zero result.
    fn agree(self: Box<Self>, peer: &[u8; X25519_LEN]) -> Result<Secret<32>, CryptoError>;
}

/// An identity's signing keys: ML-DSA-87 and Ed25519.
pub trait HybridSigner: Send + Sync {
    /// The ML-DSA-87 verifying key.
    fn mldsa_public(&self) -> [u8; MLDSA_VK_LEN];
    /// The Ed25519 public key.
    fn ed25519_public(&self) -> [u8; ED25519_PK_LEN];
    /// A hedged ML-DSA-87 signature with the given FIPS 204 context.
    fn mldsa_sign(&self, msg: &[u8], context: &[u8], rng: Rng<'_>) -> Result<Box<[u8; MLDSA_SIG_LEN]>, CryptoError>;
    /// An Ed25519 signature.
    fn ed25519_sign(&self, msg: &[u8]) -> [u8; ED25519_SIG_LEN];
}

/// A running hash whose intermediate values can be read without ending it.
pub trait Hash: Send + Sync {
    /// Absorbs `data`.
    fn update(&mut self, data: &[u8]);
    /// The hash of everything absorbed so far; the hash continues.
    fn current(&self) -> [u8; HASH_LEN];
}

/// An AEAD key. Nonces are chosen by the caller and must never repeat.
pub trait AeadKey: Send + Sync {
    /// Encrypts `buf` in place and returns the detached tag.
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], CryptoError>;
    /// Decrypts `buf` in place after checking `tag`; on failure `buf` is
    /// left unspecified and must be discarded.
    fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN])
    -> Result<(), CryptoError>;

    /// Decrypts `ciphertext` into `out` (of the same length) after checking
    /// `tag`, without copying it first where the backend allows; on failure
    /// `out` is left unspecified and must be discarded. The default copies,
    /// then opens in place.
    fn open_to(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        if out.len() != ciphertext.len() {
            return Err(CryptoError::Decrypt);
        }
        out.copy_from_slice(ciphertext);
        self.open(nonce, aad, out, tag)
    }

    /// Encrypts the plaintext `buf[..at] ‖ tail` into `buf[..at +
    /// tail.len()]` and returns the detached tag, reading `tail` where it is
    /// rather than copying it in first where the backend allows. `buf` may
    /// be longer: the [`TAG_LEN`] bytes after the sealed part may be used as
    /// scratch. The default copies `tail` into place, then seals in place.
    fn seal_gather(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        at: usize,
        tail: &[u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        seal_gather_by_copy(self, nonce, aad, buf, at, tail)
    }
}

/// [`AeadKey::seal_gather`] by copying `tail` into place and sealing in place.
pub(crate) fn seal_gather_by_copy<K: AeadKey + ?Sized>(
    key: &K,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
    at: usize,
    tail: &[u8],
) -> Result<[u8; TAG_LEN], CryptoError> {
    let end = at.checked_add(tail.len()).ok_or(CryptoError::Encrypt)?;
    let sealed = buf.get_mut(..end).ok_or(CryptoError::Encrypt)?;
    sealed[at..].copy_from_slice(tail);
    key.seal(nonce, aad, sealed)
}
