//! The aws-lc-rs provider (feature `aws-lc`, std only): AWS-LC's
//! assembly-optimised AEADs, ML-KEM-1024, X25519, ML-DSA-87 and Ed25519.
//!
//! It interoperates with [`super::RustCrypto`] byte for byte on every
//! deterministic operation (decapsulation, verification, AEAD seal and
//! open, hashing and key derivation); `tests/providers.rs` runs handshakes
//! and sessions across the two.
//!
//! Differences a caller should know:
//! - AWS-LC draws its own randomness (from the OS) for key generation,
//!   encapsulation and hedged ML-DSA signing: the RNG the core passes is
//!   not used for those, so seeded reproducible runs (the test vectors,
//!   the simulator) use `RustCrypto`.
//! - ML-DSA-87 is used with the empty FIPS 204 context only, which is what
//!   XTMP specifies (SPEC.md section 2.2).
//! - SHA-384, HMAC and HKDF, which cost little next to the rest, and
//!   Ed25519 *verification* come from the same RustCrypto and dalek code
//!   as the default provider, so both accept exactly the same signatures
//!   (ed25519-dalek's strict rules).

use alloc::boxed::Box;

use aws_lc_rs::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, EphemeralPrivateKey, X25519};
use aws_lc_rs::kem::{Ciphertext, DecapsulationKey, EncapsulationKey, ML_KEM_1024};
use aws_lc_rs::signature::{
    Ed25519KeyPair, KeyPair as _, ML_DSA_87, ML_DSA_87_SIGNING, PqdsaKeyPair, UnparsedPublicKey,
};

use super::RustCrypto;
use super::provider::*;
use super::secret::Secret;
use super::suite::AeadAlgorithm;

/// The aws-lc-rs provider. See the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct AwsLc;

struct KemKey(DecapsulationKey);
struct DhKey(EphemeralPrivateKey);
struct Signer {
    mldsa: PqdsaKeyPair,
    ed25519: Ed25519KeyPair,
}
struct Aead(LessSafeKey);

impl CryptoProvider for AwsLc {
    fn name(&self) -> &'static str {
        "aws-lc-rs"
    }

    fn mlkem_generate(&self, _rng: Rng<'_>) -> Result<KemKeyPair, CryptoError> {
        let dk = DecapsulationKey::generate(&ML_KEM_1024).map_err(|_| CryptoError::InvalidKey)?;
        let ek = dk.encapsulation_key().and_then(|ek| ek.key_bytes()).map_err(|_| CryptoError::InvalidKey)?;
        let ek: [u8; MLKEM_EK_LEN] = ek.as_ref().try_into().map_err(|_| CryptoError::InvalidKey)?;
        Ok((Box::new(KemKey(dk)), Box::new(ek)))
    }

    fn mlkem_encapsulate(
        &self,
        ek: &[u8; MLKEM_EK_LEN],
        _rng: Rng<'_>,
    ) -> Result<(Box<[u8; MLKEM_CT_LEN]>, Secret<32>), CryptoError> {
        let ek = EncapsulationKey::new(&ML_KEM_1024, ek).map_err(|_| CryptoError::InvalidPublicKey)?;
        let (ct, ss) = ek.encapsulate().map_err(|_| CryptoError::InvalidPublicKey)?;
        let ct: [u8; MLKEM_CT_LEN] = ct.as_ref().try_into().map_err(|_| CryptoError::InvalidKey)?;
        let ss: [u8; 32] = ss.as_ref().try_into().map_err(|_| CryptoError::InvalidKey)?;
        Ok((Box::new(ct), Secret::new(ss)))
    }

    fn x25519_generate(&self, _rng: Rng<'_>) -> Result<(Box<dyn DhPrivateKey>, [u8; X25519_LEN]), CryptoError> {
        let key = EphemeralPrivateKey::generate(&X25519, &aws_lc_rs::rand::SystemRandom::new())
            .map_err(|_| CryptoError::InvalidKey)?;
        let public = key.compute_public_key().map_err(|_| CryptoError::InvalidKey)?;
        let public: [u8; X25519_LEN] = public.as_ref().try_into().map_err(|_| CryptoError::InvalidKey)?;
        Ok((Box::new(DhKey(key)), public))
    }

    fn signer(&self, mldsa_seed: &Secret<32>, ed25519_seed: &Secret<32>) -> Result<Box<dyn HybridSigner>, CryptoError> {
        let mldsa =
            PqdsaKeyPair::from_seed(&ML_DSA_87_SIGNING, mldsa_seed.expose()).map_err(|_| CryptoError::InvalidKey)?;
        let ed25519 =
            Ed25519KeyPair::from_seed_unchecked(ed25519_seed.expose()).map_err(|_| CryptoError::InvalidKey)?;
        Ok(Box::new(Signer { mldsa, ed25519 }))
    }

    fn mldsa_verify(
        &self,
        vk: &[u8; MLDSA_VK_LEN],
        msg: &[u8],
        context: &[u8],
        sig: &[u8; MLDSA_SIG_LEN],
    ) -> Result<(), CryptoError> {
        if !context.is_empty() {
            return Err(CryptoError::Unsupported);
        }
        UnparsedPublicKey::new(&ML_DSA_87, vk).verify(msg, sig).map_err(|_| CryptoError::BadSignature)
    }

    fn ed25519_verify(
        &self,
        pk: &[u8; ED25519_PK_LEN],
        msg: &[u8],
        sig: &[u8; ED25519_SIG_LEN],
    ) -> Result<(), CryptoError> {
        RustCrypto.ed25519_verify(pk, msg, sig)
    }

    fn sha384(&self) -> Box<dyn Hash> {
        RustCrypto.sha384()
    }

    fn hmac_sha384(&self, key: &[u8], parts: &[&[u8]]) -> Secret<HASH_LEN> {
        RustCrypto.hmac_sha384(key, parts)
    }

    fn hkdf_extract(&self, salt: &[u8], ikm: &[u8]) -> Secret<HASH_LEN> {
        RustCrypto.hkdf_extract(salt, ikm)
    }

    fn hkdf_expand(&self, prk: &Secret<HASH_LEN>, info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        RustCrypto.hkdf_expand(prk, info, out)
    }

    fn aead(&self, alg: AeadAlgorithm, key: &Secret<32>) -> Result<Box<dyn AeadKey>, CryptoError> {
        let alg = match alg {
            AeadAlgorithm::Aes256Gcm => &AES_256_GCM,
            AeadAlgorithm::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            #[cfg(feature = "__null-cipher")]
            AeadAlgorithm::TestNull => return RustCrypto.aead(alg, key),
        };
        let key = UnboundKey::new(alg, key.expose()).map_err(|_| CryptoError::InvalidKey)?;
        Ok(Box::new(Aead(LessSafeKey::new(key))))
    }
}

impl KemPrivateKey for KemKey {
    fn decapsulate(&self, ct: &[u8; MLKEM_CT_LEN]) -> Result<Secret<32>, CryptoError> {
        let ss = self.0.decapsulate(Ciphertext::from(&ct[..])).map_err(|_| CryptoError::InvalidKey)?;
        Ok(Secret::new(ss.as_ref().try_into().map_err(|_| CryptoError::InvalidKey)?))
    }
}

impl DhPrivateKey for DhKey {
    fn agree(self: Box<Self>, peer: &[u8; X25519_LEN]) -> Result<Secret<32>, CryptoError> {
        let peer = agreement::UnparsedPublicKey::new(&X25519, peer);
        agreement::agree_ephemeral(self.0, peer, CryptoError::NonContributory, |ss| {
            let ss: [u8; 32] = ss.try_into().map_err(|_| CryptoError::InvalidKey)?;
            if super::ct_eq(&ss, &[0; 32]) {
                return Err(CryptoError::NonContributory);
            }
            Ok(Secret::new(ss))
        })
    }
}

impl HybridSigner for Signer {
    fn mldsa_public(&self) -> [u8; MLDSA_VK_LEN] {
        self.mldsa.public_key().as_ref().try_into().unwrap_or([0; MLDSA_VK_LEN])
    }

    fn ed25519_public(&self) -> [u8; ED25519_PK_LEN] {
        self.ed25519.public_key().as_ref().try_into().unwrap_or([0; ED25519_PK_LEN])
    }

    fn mldsa_sign(&self, msg: &[u8], context: &[u8], _rng: Rng<'_>) -> Result<Box<[u8; MLDSA_SIG_LEN]>, CryptoError> {
        if !context.is_empty() {
            return Err(CryptoError::Unsupported);
        }
        let mut sig = Box::new([0u8; MLDSA_SIG_LEN]);
        self.mldsa.sign(msg, &mut sig[..]).map_err(|_| CryptoError::InvalidKey)?;
        Ok(sig)
    }

    fn ed25519_sign(&self, msg: &[u8]) -> [u8; ED25519_SIG_LEN] {
        self.ed25519.sign(msg).as_ref().try_into().unwrap_or([0; ED25519_SIG_LEN])
    }
}

impl AeadKey for Aead {
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map_err(|_| CryptoError::Encrypt)?;
        tag.as_ref().try_into().map_err(|_| CryptoError::Encrypt)
    }

    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        self.0
            .open_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), tag, buf)
            .map(|_| ())
            .map_err(|_| CryptoError::Decrypt)
    }

    fn open_to(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.0
            .open_separate_gather(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), ciphertext, tag, out)
            .map_err(|_| CryptoError::Decrypt)
    }

    fn seal_gather(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        at: usize,
        tail: &[u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let end = at.checked_add(tail.len()).ok_or(CryptoError::Encrypt)?;
        if buf.len() < end.saturating_add(TAG_LEN) {
            // No room for aws-lc to put the tag after the ciphertext.
            return super::provider::seal_gather_by_copy(self, nonce, aad, buf, at, tail);
        }
        // `buf[..at]` in place, then `tail` encrypted into the bytes after
        // it, followed by the tag (in the scratch room).
        let (head, rest) = buf.split_at_mut(at);
        let tail_and_tag = &mut rest[..tail.len() + TAG_LEN];
        self.0
            .seal_in_place_scatter(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), head, tail, tail_and_tag)
            .map_err(|_| CryptoError::Encrypt)?;
        tail_and_tag[tail.len()..].try_into().map_err(|_| CryptoError::Encrypt)
    }
}
