//! Cryptography: the provider trait every primitive goes through, the
//! default pure-Rust provider (and, with the `aws-lc` feature, a second one
//! on aws-lc-rs), suites, secrets and the key schedule.
//!
//! Nothing in the default provider touches the OS: randomness always comes
//! from the caller.

#[cfg(feature = "aws-lc")]
mod aws_lc;
mod provider;
mod rust_crypto;
pub mod schedule;
mod secret;
mod suite;

#[cfg(feature = "aws-lc")]
pub use aws_lc::AwsLc;
pub use provider::{
    AeadKey, CryptoError, CryptoProvider, DhPrivateKey, ED25519_PK_LEN, ED25519_SIG_LEN, HASH_LEN, Hash, HybridSigner,
    KemKeyPair, KemPrivateKey, MLDSA_SIG_LEN, MLDSA_VK_LEN, MLKEM_CT_LEN, MLKEM_EK_LEN, NONCE_LEN, Rng, TAG_LEN,
    X25519_LEN,
};
pub use rust_crypto::RustCrypto;
pub use schedule::TrafficKeys;
pub use secret::{Secret, ct_eq};
pub use suite::{AeadAlgorithm, Suite};
