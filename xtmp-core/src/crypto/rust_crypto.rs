//! The default provider: pure Rust (RustCrypto and dalek crates), `no_std`.

use alloc::boxed::Box;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadInOut, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::Mac;
use ml_dsa::{Keypair as _, MlDsa87};
use ml_kem::MlKem1024;
use ml_kem::kem::{Decapsulate, Encapsulate, KeyExport};
use sha2::Digest;
use zeroize::Zeroize;

use super::provider::*;
use super::secret::Secret;
use super::suite::AeadAlgorithm;

/// The pure-Rust provider. Deterministic given its RNG, so seeded runs
/// (test vectors, the simulator) reproduce bit for bit.
#[derive(Clone, Copy, Debug, Default)]
pub struct RustCrypto;

struct KemKey(ml_kem::DecapsulationKey<MlKem1024>);
struct DhKey(x25519_dalek::EphemeralSecret);
struct Signer {
    mldsa: ml_dsa::SigningKey<MlDsa87>,
    ed25519: ed25519_dalek::SigningKey,
}
#[derive(Clone)]
struct Sha384(sha2::Sha384);
enum Aead {
    Aes(Box<Aes256Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
    #[cfg(feature = "__null-cipher")]
    Null,
}

impl CryptoProvider for RustCrypto {
    fn name(&self) -> &'static str {
        "rust-crypto"
    }

    fn mlkem_generate(&self, rng: Rng<'_>) -> Result<KemKeyPair, CryptoError> {
        let mut seed = ml_kem::Seed::default();
        rng.fill_bytes(&mut seed);
        let dk = ml_kem::DecapsulationKey::<MlKem1024>::from_seed(seed);
        seed.zeroize();
        let ek: [u8; MLKEM_EK_LEN] = dk.encapsulation_key().to_bytes().into();
        Ok((Box::new(KemKey(dk)), Box::new(ek)))
    }

    fn mlkem_encapsulate(
        &self,
        ek: &[u8; MLKEM_EK_LEN],
        mut rng: Rng<'_>,
    ) -> Result<(Box<[u8; MLKEM_CT_LEN]>, Secret<32>), CryptoError> {
        let ek = ml_kem::EncapsulationKey::<MlKem1024>::new(ek.into()).map_err(|_| CryptoError::InvalidPublicKey)?;
        let (ct, mut ss) = ek.encapsulate_with_rng(&mut rng);
        let secret = Secret::new(ss.into());
        ss.zeroize();
        Ok((Box::new(ct.into()), secret))
    }

    fn x25519_generate(&self, mut rng: Rng<'_>) -> Result<(Box<dyn DhPrivateKey>, [u8; X25519_LEN]), CryptoError> {
        let secret = x25519_dalek::EphemeralSecret::random_from_rng(&mut rng);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ok((Box::new(DhKey(secret)), public))
    }

    fn signer(&self, mldsa_seed: &Secret<32>, ed25519_seed: &Secret<32>) -> Result<Box<dyn HybridSigner>, CryptoError> {
        let mldsa = ml_dsa::SigningKey::<MlDsa87>::from_seed(&(*mldsa_seed.expose()).into());
        let ed25519 = ed25519_dalek::SigningKey::from_bytes(ed25519_seed.expose());
        Ok(Box::new(Signer { mldsa, ed25519 }))
    }

    fn mldsa_verify(
        &self,
        vk: &[u8; MLDSA_VK_LEN],
        msg: &[u8],
        context: &[u8],
        sig: &[u8; MLDSA_SIG_LEN],
    ) -> Result<(), CryptoError> {
        let vk = ml_dsa::VerifyingKey::<MlDsa87>::decode(vk.into());
        let sig = ml_dsa::Signature::<MlDsa87>::decode(sig.into()).ok_or(CryptoError::BadSignature)?;
        if vk.verify_with_context(msg, context, &sig) { Ok(()) } else { Err(CryptoError::BadSignature) }
    }

    fn ed25519_verify(
        &self,
        pk: &[u8; ED25519_PK_LEN],
        msg: &[u8],
        sig: &[u8; ED25519_SIG_LEN],
    ) -> Result<(), CryptoError> {
        let pk = ed25519_dalek::VerifyingKey::from_bytes(pk).map_err(|_| CryptoError::InvalidPublicKey)?;
        if pk.is_weak() {
            return Err(CryptoError::InvalidPublicKey);
        }
        pk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig)).map_err(|_| CryptoError::BadSignature)
    }

    fn sha384(&self) -> Box<dyn Hash> {
        Box::new(Sha384(sha2::Sha384::new()))
    }

    fn hmac_sha384(&self, key: &[u8], parts: &[&[u8]]) -> Secret<HASH_LEN> {
        let mut mac =
            <hmac::Hmac<sha2::Sha384> as hmac::KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
        for part in parts {
            mac.update(part);
        }
        let mut out = Secret::zero();
        out.expose_mut().copy_from_slice(&mac.finalize().into_bytes());
        out
    }

    fn hkdf_extract(&self, salt: &[u8], ikm: &[u8]) -> Secret<HASH_LEN> {
        let (prk, _) = hkdf::Hkdf::<sha2::Sha384>::extract(Some(salt), ikm);
        let mut out = Secret::zero();
        out.expose_mut().copy_from_slice(&prk);
        out
    }

    fn hkdf_expand(&self, prk: &Secret<HASH_LEN>, info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        let hk = hkdf::Hkdf::<sha2::Sha384>::from_prk(prk.expose()).map_err(|_| CryptoError::InvalidKey)?;
        hk.expand_multi_info(info, out).map_err(|_| CryptoError::InvalidKey)
    }

    fn aead(&self, alg: AeadAlgorithm, key: &Secret<32>) -> Result<Box<dyn AeadKey>, CryptoError> {
        let key = key.expose().into();
        Ok(Box::new(match alg {
            AeadAlgorithm::Aes256Gcm => Aead::Aes(Box::new(Aes256Gcm::new(key))),
            AeadAlgorithm::ChaCha20Poly1305 => Aead::ChaCha(Box::new(ChaCha20Poly1305::new(key))),
            #[cfg(feature = "__null-cipher")]
            AeadAlgorithm::TestNull => Aead::Null,
        }))
    }
}

impl KemPrivateKey for KemKey {
    fn decapsulate(&self, ct: &[u8; MLKEM_CT_LEN]) -> Result<Secret<32>, CryptoError> {
        let mut ss = self.0.decapsulate(ct.into());
        let secret = Secret::new(ss.into());
        ss.zeroize();
        Ok(secret)
    }
}

impl DhPrivateKey for DhKey {
    fn agree(self: Box<Self>, peer: &[u8; X25519_LEN]) -> Result<Secret<32>, CryptoError> {
        let shared = self.0.diffie_hellman(&x25519_dalek::PublicKey::from(*peer));
        if !shared.was_contributory() {
            return Err(CryptoError::NonContributory);
        }
        Ok(Secret::new(*shared.as_bytes()))
    }
}

impl HybridSigner for Signer {
    fn mldsa_public(&self) -> [u8; MLDSA_VK_LEN] {
        self.mldsa.verifying_key().encode().into()
    }

    fn ed25519_public(&self) -> [u8; ED25519_PK_LEN] {
        self.ed25519.verifying_key().to_bytes()
    }

    fn mldsa_sign(
        &self,
        msg: &[u8],
        context: &[u8],
        mut rng: Rng<'_>,
    ) -> Result<Box<[u8; MLDSA_SIG_LEN]>, CryptoError> {
        let sig =
            self.mldsa.expanded_key().sign_randomized(msg, context, &mut rng).map_err(|_| CryptoError::InvalidKey)?;
        Ok(Box::new(sig.encode().into()))
    }

    fn ed25519_sign(&self, msg: &[u8]) -> [u8; ED25519_SIG_LEN] {
        use ed25519_dalek::Signer as _;
        self.ed25519.sign(msg).to_bytes()
    }
}

impl Hash for Sha384 {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn current(&self) -> [u8; HASH_LEN] {
        self.0.clone().finalize().into()
    }
}

impl AeadKey for Aead {
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = match self {
            Aead::Aes(c) => c.encrypt_inout_detached(nonce.into(), aad, buf.into()),
            Aead::ChaCha(c) => c.encrypt_inout_detached(nonce.into(), aad, buf.into()),
            #[cfg(feature = "__null-cipher")]
            Aead::Null => return Ok([0; TAG_LEN]),
        };
        tag.map(Into::into).map_err(|_| CryptoError::Encrypt)
    }

    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        let r = match self {
            Aead::Aes(c) => c.decrypt_inout_detached(nonce.into(), aad, buf.into(), tag.into()),
            Aead::ChaCha(c) => c.decrypt_inout_detached(nonce.into(), aad, buf.into(), tag.into()),
            #[cfg(feature = "__null-cipher")]
            Aead::Null => return if *tag == [0; TAG_LEN] { Ok(()) } else { Err(CryptoError::Decrypt) },
        };
        r.map_err(|_| CryptoError::Decrypt)
    }

    fn open_to(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        let buf = InOutBuf::new(ciphertext, out).map_err(|_| CryptoError::Decrypt)?;
        let r = match self {
            Aead::Aes(c) => c.decrypt_inout_detached(nonce.into(), aad, buf, tag.into()),
            Aead::ChaCha(c) => c.decrypt_inout_detached(nonce.into(), aad, buf, tag.into()),
            #[cfg(feature = "__null-cipher")]
            Aead::Null => {
                let _plain: &mut [u8] = buf.into_out_with_copied_in();
                return if *tag == [0; TAG_LEN] { Ok(()) } else { Err(CryptoError::Decrypt) };
            }
        };
        r.map_err(|_| CryptoError::Decrypt)
    }
}
