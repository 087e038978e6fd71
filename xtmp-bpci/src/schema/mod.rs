//! The message bodies of the BPCI services (SPEC.md section 5): CBOR
//! (RFC 8949) maps with small integer keys, as COSE and WebAuthn use.
//!
//! Every body is a map; keys a receiver does not know are skipped, so
//! later versions can add fields. What is hashed or signed is encoded with
//! the deterministic encoding of RFC 8949 section 4.2.1 (shortest integer
//! forms, definite lengths, map keys in ascending order): the types here
//! declare their keys in ascending order and are encoded by
//! [`to_canonical`], which is that encoding for every value of them.

mod bodies;
mod builder;
pub mod merkle;
pub mod statement;

use core::fmt;

use minicbor::decode::Decoder;
use minicbor::encode::{Encoder, Write};
use minicbor::{Decode, Encode};
use sha2::{Digest, Sha256};
use xtmp_core::crypto::{ED25519_SIG_LEN, MLDSA_SIG_LEN};
use xtmp_core::handshake::{IdentityKeypair, PublicIdentity};

pub use bodies::*;
pub use builder::{BuildError, BundleBuilder};

/// A SHA-256 value: bundle ids, transaction ids, Merkle roots, block
/// hashes. CBOR: a byte string of exactly 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Hash {
        Hash(Sha256::digest(data).into())
    }

    /// Lower-case hexadecimal.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Option<Hash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut out).ok()?;
        Some(Hash(out))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", &self.to_hex()[..16])
    }
}

impl<C> Encode<C> for Hash {
    fn encode<W: Write>(&self, e: &mut Encoder<W>, _: &mut C) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.bytes(&self.0)?;
        Ok(())
    }
}

impl<'b, C> Decode<'b, C> for Hash {
    fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, minicbor::decode::Error> {
        let b = d.bytes()?;
        b.try_into().map(Hash).map_err(|_| minicbor::decode::Error::message("expected 32 bytes"))
    }
}

/// A wallet's id: `SHA-256(mldsa_vk ‖ ed25519_pk)` of its public identity.
/// CBOR: a byte string of 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode)]
#[cbor(transparent)]
pub struct WalletId(#[n(0)] pub Hash);

impl WalletId {
    /// The id of `identity`.
    pub fn of(identity: &PublicIdentity) -> WalletId {
        WalletId(Hash::of(&identity.to_bytes()))
    }
}

impl fmt::Display for WalletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w:{}", self.0)
    }
}

impl fmt::Debug for WalletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletId({:?})", self.0)
    }
}

impl std::str::FromStr for WalletId {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<WalletId, &'static str> {
        let hex = s.strip_prefix("w:").unwrap_or(s);
        Hash::from_hex(hex).map(WalletId).ok_or("a wallet id is 64 hexadecimal digits, optionally after `w:`")
    }
}

/// A hybrid signature: ML-DSA-87 (4,627 bytes) and Ed25519 (64 bytes).
/// CBOR: `[bstr .size 4627, bstr .size 64]`. Both halves must verify.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    /// The ML-DSA-87 signature.
    pub mldsa: Box<[u8; MLDSA_SIG_LEN]>,
    /// The Ed25519 signature.
    pub ed25519: [u8; ED25519_SIG_LEN],
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(&self.ed25519[..8]))
    }
}

impl<C> Encode<C> for Signature {
    fn encode<W: Write>(&self, e: &mut Encoder<W>, _: &mut C) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.array(2)?.bytes(&self.mldsa[..])?.bytes(&self.ed25519)?;
        Ok(())
    }
}

impl<'b, C> Decode<'b, C> for Signature {
    fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, minicbor::decode::Error> {
        if d.array()? != Some(2) {
            return Err(minicbor::decode::Error::message("a signature is an array of two byte strings"));
        }
        let ml: [u8; MLDSA_SIG_LEN] = d
            .bytes()?
            .try_into()
            .map_err(|_| minicbor::decode::Error::message("ML-DSA-87 signature: expected 4627 bytes"))?;
        let ed: [u8; ED25519_SIG_LEN] = d
            .bytes()?
            .try_into()
            .map_err(|_| minicbor::decode::Error::message("Ed25519 signature: expected 64 bytes"))?;
        Ok(Signature { mldsa: Box::new(ml), ed25519: ed })
    }
}

/// A public identity on the wire: `mldsa_vk ‖ ed25519_pk` (2,624 bytes) as
/// a byte string.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IdentityBytes(pub PublicIdentity);

impl<C> Encode<C> for IdentityBytes {
    fn encode<W: Write>(&self, e: &mut Encoder<W>, _: &mut C) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.bytes(&self.0.to_bytes())?;
        Ok(())
    }
}

impl<'b, C> Decode<'b, C> for IdentityBytes {
    fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, minicbor::decode::Error> {
        let b = d.bytes()?;
        if b.len() != xtmp_core::handshake::PUBLIC_IDENTITY_LEN {
            return Err(minicbor::decode::Error::message("a public identity is 2624 bytes"));
        }
        PublicIdentity::from_bytes(&xtmp_core::crypto::RustCrypto, b)
            .map(IdentityBytes)
            .ok_or_else(|| minicbor::decode::Error::message("not a public identity"))
    }
}

/// Why a body could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// The body's name ("BundleSubmit request").
    pub what: &'static str,
    /// What the decoder found wrong.
    pub detail: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed {}: {}", self.what, self.detail)
    }
}

impl std::error::Error for DecodeError {}

/// The deterministic CBOR encoding of `value` (RFC 8949 section 4.2.1, for
/// the types of this module).
pub fn to_canonical<T: Encode<()>>(value: &T) -> Vec<u8> {
    minicbor::to_vec(value).expect("encoding into a Vec cannot fail")
}

/// Decodes one `T` that fills `bytes` exactly (trailing bytes are an error).
pub fn from_cbor<'b, T: Decode<'b, ()>>(what: &'static str, bytes: &'b [u8]) -> Result<T, DecodeError> {
    let mut d = Decoder::new(bytes);
    let v = d.decode::<T>().map_err(|e| DecodeError { what, detail: e.to_string() })?;
    if d.position() != bytes.len() {
        return Err(DecodeError { what, detail: format!("{} bytes after the body", bytes.len() - d.position()) });
    }
    Ok(v)
}

/// Signs `statement` (its deterministic encoding) with `keys`.
pub fn sign(keys: &IdentityKeypair, statement: &[u8]) -> Signature {
    let mut rng = crate::rng();
    let (mldsa, ed25519) = keys.sign(statement, &mut rng).expect("signing with a loaded identity");
    Signature { mldsa, ed25519 }
}

/// Checks `sig` over `statement` by `identity` (both halves).
pub fn verify(
    provider: &dyn xtmp_core::crypto::CryptoProvider,
    identity: &PublicIdentity,
    statement: &[u8],
    sig: &Signature,
) -> bool {
    identity.verify(provider, statement, &sig.mldsa, &sig.ed25519).is_ok()
}

#[cfg(test)]
mod tests;
