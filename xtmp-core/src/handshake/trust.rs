//! Deciding whether a peer's identity is trusted.
//!
//! A client must say how it trusts servers: a pinned identity, a set of
//! fingerprints or keys, or a root that signs short-lived credentials. The
//! only verifier that accepts anyone lives in [`danger`].

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use super::error::TrustError;
use super::identity::{Credential, KeyId, PublicIdentity};
use crate::crypto::CryptoProvider;

/// Decides whether a server identity is acceptable.
pub trait ServerVerifier: Send + Sync + fmt::Debug {
    /// The one identity this client expects, if it has its full public keys.
    /// When `Some`, the client asks for the pinned-mode reply, in which the
    /// server sends only its key id.
    fn pinned(&self) -> Option<&PublicIdentity> {
        None
    }

    /// Whether this verifier establishes who the server is. Only the
    /// verifiers in [`danger`] say `false`; an adapter logs a warning for
    /// every connection made with one.
    fn authenticates_server(&self) -> bool {
        true
    }

    /// Accepts or rejects `server`, which has already proven possession of
    /// both its keys by signing the transcript.
    fn verify(
        &self,
        p: &dyn CryptoProvider,
        server: &PublicIdentity,
        credential: Option<&Credential>,
        unix_time: Option<u64>,
    ) -> Result<(), TrustError>;
}

/// Decides whether a client identity (a wallet) is acceptable.
pub trait ClientVerifier: Send + Sync + fmt::Debug {
    /// Accepts or rejects `client`, which has already signed the transcript.
    fn verify(&self, client: &PublicIdentity, unix_time: Option<u64>) -> Result<(), TrustError>;
}

/// Trust exactly one server identity, whose public keys the client holds.
#[derive(Clone, Debug)]
pub struct Pinned(pub PublicIdentity);

impl ServerVerifier for Pinned {
    fn pinned(&self) -> Option<&PublicIdentity> {
        Some(&self.0)
    }

    fn verify(
        &self,
        _: &dyn CryptoProvider,
        server: &PublicIdentity,
        _: Option<&Credential>,
        _: Option<u64>,
    ) -> Result<(), TrustError> {
        if server.key_id().ct_eq(&self.0.key_id()) { Ok(()) } else { Err(TrustError::UnknownIdentity) }
    }
}

/// Trust any identity whose key id is in the set (fingerprints, as in
/// `known_hosts`).
#[derive(Clone, Debug, Default)]
pub struct Fingerprints(pub Vec<KeyId>);

impl ServerVerifier for Fingerprints {
    fn verify(
        &self,
        _: &dyn CryptoProvider,
        server: &PublicIdentity,
        _: Option<&Credential>,
        _: Option<u64>,
    ) -> Result<(), TrustError> {
        trusted_id(&self.0, server.key_id())
    }
}

impl ClientVerifier for Fingerprints {
    fn verify(&self, client: &PublicIdentity, _: Option<u64>) -> Result<(), TrustError> {
        trusted_id(&self.0, client.key_id())
    }
}

fn trusted_id(set: &[KeyId], id: KeyId) -> Result<(), TrustError> {
    // Check every entry, so timing does not reveal the position.
    let found = set.iter().fold(false, |acc, k| acc | k.ct_eq(&id));
    if found { Ok(()) } else { Err(TrustError::UnknownIdentity) }
}

/// Trust identities certified by a root key with a credential valid now.
#[derive(Clone, Debug)]
pub struct RootOfTrust(pub PublicIdentity);

impl ServerVerifier for RootOfTrust {
    fn verify(
        &self,
        p: &dyn CryptoProvider,
        server: &PublicIdentity,
        credential: Option<&Credential>,
        unix_time: Option<u64>,
    ) -> Result<(), TrustError> {
        credential.ok_or(TrustError::MissingCredential)?.verify(p, &self.0, server, unix_time)
    }
}

/// Verifiers that weaken security. Use them only in tests and demos.
pub mod danger {
    use super::*;

    /// Accepts every server identity. The handshake still proves that the
    /// server holds the keys it shows, but not who it is: anyone on the path
    /// can impersonate the server.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct NoServerVerification;

    impl ServerVerifier for NoServerVerification {
        fn authenticates_server(&self) -> bool {
            false
        }

        fn verify(
            &self,
            _: &dyn CryptoProvider,
            _: &PublicIdentity,
            _: Option<&Credential>,
            _: Option<u64>,
        ) -> Result<(), TrustError> {
            Ok(())
        }
    }

    /// Accepts every client identity that proves possession of its keys.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct AnyClient;

    impl ClientVerifier for AnyClient {
        fn verify(&self, _: &PublicIdentity, _: Option<u64>) -> Result<(), TrustError> {
            Ok(())
        }
    }

    /// Convenience: the no-verification server verifier behind an `Arc`.
    pub fn no_server_verification() -> Arc<dyn ServerVerifier> {
        Arc::new(NoServerVerification)
    }
}
