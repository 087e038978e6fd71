//! How a client decides to trust a server, and trust on first use.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use xtmp_core::handshake::{Fingerprints, Pinned, PublicIdentity, ServerVerifier, danger};

use crate::endpoint::Endpoint;
use crate::registry::{Entry, Registry, RegistryError};
use crate::resolve::{ResolveError, Resolver, Target, resolve};

/// Whom a client trusts. There is no "trust anyone" here: that lives in
/// the core's `handshake::danger`, for tests and demos.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Exactly this identity (the client holds its public keys).
    Identity(PublicIdentity),
    /// The fingerprint the endpoint (`?key=`) or the registry pins; an
    /// endpoint with neither is refused before any packet is sent.
    Pinned,
    /// As `Pinned`, but a server that neither pins is trusted on first
    /// use: its fingerprint is written to the registry file, and every
    /// later connection requires it (as ssh's `known_hosts`).
    FirstUse,
}

/// Prepares connections: the registry, the resolver and the trust policy.
#[derive(Clone, Debug)]
pub struct Connector {
    /// Whom to trust; `None`: the caller's own server verifier decides
    /// (a root of trust, say), and [`Prepared::verifier`] is `None`.
    pub trust: Option<Trust>,
    /// The registry file (required by [`Trust::FirstUse`], which writes
    /// to it; a missing file is an empty registry then).
    pub registry: Option<PathBuf>,
    /// Looks up host names.
    pub resolver: Arc<dyn Resolver>,
}

/// A connection ready to be made: where, and the verifier to use.
#[derive(Debug)]
pub struct Prepared {
    /// Where to connect.
    pub target: Target,
    /// The server verifier for the handshake (`None` without a trust
    /// policy: keep the caller's).
    pub verifier: Option<Arc<dyn ServerVerifier>>,
    /// Where to record the server's fingerprint once connected (first use).
    record: Option<(PathBuf, Endpoint)>,
}

impl Connector {
    /// Resolves `endpoint` and picks the server verifier.
    pub async fn prepare(&self, endpoint: &Endpoint) -> Result<Prepared, ConnectError> {
        let registry = match (&self.registry, &self.trust) {
            (None, Some(Trust::FirstUse)) => return Err(ConnectError::NoRegistryFile),
            (None, _) => None,
            (Some(p), Some(Trust::FirstUse)) => Some(Registry::load_or_empty(p)?),
            (Some(p), _) => Some(Registry::load(p)?),
        };
        let target = resolve(endpoint, registry.as_ref(), self.resolver.as_ref()).await?;
        let mut record = None;
        let Some(trust) = &self.trust else { return Ok(Prepared { target, verifier: None, record }) };
        let verifier: Arc<dyn ServerVerifier> = match (trust, target.endpoint.key) {
            (Trust::Identity(id), Some(k)) if !id.key_id().ct_eq(&k) => {
                return Err(ConnectError::Registry(RegistryError::KeyConflict {
                    name: endpoint.host.to_string(),
                    endpoint: k,
                    registry: id.key_id(),
                }));
            }
            (Trust::Identity(id), _) => Arc::new(Pinned(id.clone())),
            (_, Some(k)) => Arc::new(Fingerprints(vec![k])),
            (Trust::Pinned, None) => return Err(ConnectError::Unpinned(endpoint.to_string())),
            (Trust::FirstUse, None) => {
                // The first handshake accepts the server it meets (which
                // has proven it holds the keys it shows);
                // `Prepared::connected` then pins them.
                record = self.registry.clone().map(|p| (p, endpoint.clone()));
                danger::no_server_verification()
            }
        };
        let verifier = Some(verifier);
        Ok(Prepared { target, verifier, record })
    }
}

impl Prepared {
    /// Whether the handshake trusts the server on first use.
    pub fn is_first_use(&self) -> bool {
        self.record.is_some()
    }

    /// The handshake completed with `server`: on first use, its
    /// fingerprint is recorded in the registry file under the endpoint's
    /// host name.
    pub fn connected(&self, server: &PublicIdentity) -> Result<(), RegistryError> {
        let Some((path, endpoint)) = &self.record else { return Ok(()) };
        let mut registry = Registry::load_or_empty(path)?;
        let entry = Entry { host: endpoint.host.clone(), port: endpoint.explicit_port, key: Some(server.key_id()) };
        match registry.get(&endpoint.host) {
            // Someone else recorded it meanwhile: keep theirs (the next
            // connection checks against it).
            Some(e) if e.key.is_some() => Ok(()),
            Some(e) => {
                let entry = Entry { key: entry.key, ..e.clone() };
                registry.insert(endpoint.host.clone(), entry);
                registry.save(path)
            }
            None => {
                registry.insert(endpoint.host.clone(), entry);
                registry.save(path)
            }
        }
    }
}

/// Why a connection could not be prepared.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The registry file is unreadable or malformed, or conflicts.
    Registry(RegistryError),
    /// The endpoint could not be resolved.
    Resolve(ResolveError),
    /// Nothing pins the server's identity and trust on first use is off.
    Unpinned(String),
    /// Trust on first use needs a registry file to write to.
    NoRegistryFile,
}

impl From<RegistryError> for ConnectError {
    fn from(e: RegistryError) -> Self {
        ConnectError::Registry(e)
    }
}

impl From<ResolveError> for ConnectError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Registry(r) => ConnectError::Registry(r),
            other => ConnectError::Resolve(other),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Registry(e) => e.fmt(f),
            ConnectError::Resolve(e) => e.fmt(f),
            ConnectError::Unpinned(e) => write!(
                f,
                "no identity pinned for {e}: add ?key=xtmp1:... to the endpoint, list it in the registry, or allow trust on first use"
            ),
            ConnectError::NoRegistryFile => {
                f.write_str("trust on first use needs a registry file to record servers in")
            }
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Registry(e) => Some(e),
            ConnectError::Resolve(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::StaticResolver;
    use crate::resolve::tests::now;
    use rand_core::SeedableRng;
    use xtmp_core::crypto::RustCrypto;
    use xtmp_core::handshake::IdentityKeypair;

    fn identity(seed: u8) -> PublicIdentity {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([seed; 32]);
        IdentityKeypair::generate(&RustCrypto, &mut rng).unwrap().public().clone()
    }

    fn connector(trust: Trust, registry: Option<PathBuf>) -> Connector {
        Connector { trust: Some(trust), registry, resolver: Arc::new(StaticResolver::default()) }
    }

    fn accepts(p: &Prepared, id: &PublicIdentity) -> bool {
        p.verifier.as_ref().is_some_and(|v| v.verify(&RustCrypto, id, None, None).is_ok())
    }

    #[test]
    fn an_unpinned_server_is_refused_before_connecting() {
        let c = connector(Trust::Pinned, None);
        let e = now(c.prepare(&"xtmp://10.0.0.1".parse().unwrap())).unwrap_err();
        assert!(matches!(e, ConnectError::Unpinned(_)));
        assert!(e.to_string().contains("?key="), "{e}");
        let e = now(connector(Trust::FirstUse, None).prepare(&"xtmp://10.0.0.1".parse().unwrap())).unwrap_err();
        assert!(matches!(e, ConnectError::NoRegistryFile));
    }

    #[test]
    fn a_pinned_key_accepts_only_its_server() {
        let (a, b) = (identity(1), identity(2));
        let c = connector(Trust::Pinned, None);
        let p = now(c.prepare(&format!("xtmp://10.0.0.1?key={}", a.key_id()).parse().unwrap())).unwrap();
        assert!(accepts(&p, &a) && !accepts(&p, &b));
        let c = connector(Trust::Identity(a.clone()), None);
        let p = now(c.prepare(&"xtmp://10.0.0.1".parse().unwrap())).unwrap();
        assert!(accepts(&p, &a) && !accepts(&p, &b));
        // An identity and a different pin in the endpoint conflict.
        let e = format!("xtmp://10.0.0.1?key={}", b.key_id()).parse().unwrap();
        assert!(matches!(now(c.prepare(&e)), Err(ConnectError::Registry(RegistryError::KeyConflict { .. }))));
    }

    #[test]
    fn first_use_records_the_server_and_then_requires_it() {
        let dir = std::env::temp_dir().join(format!("xtmp-tofu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("known");
        let (a, b) = (identity(3), identity(4));
        let c = connector(Trust::FirstUse, Some(path.clone()));
        let endpoint: Endpoint = "xtmp://10.0.0.2:9000".parse().unwrap();
        let first = now(c.prepare(&endpoint)).unwrap();
        assert!(first.is_first_use() && accepts(&first, &b));
        first.connected(&a).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&a.key_id().to_string()), "{text}");
        // From now on the recorded key is required.
        let again = now(c.prepare(&endpoint)).unwrap();
        assert!(!again.is_first_use());
        assert!(accepts(&again, &a) && !accepts(&again, &b));
        // A registry-only client reads the same file.
        let strict = connector(Trust::Pinned, Some(path.clone()));
        assert!(accepts(&now(strict.prepare(&endpoint)).unwrap(), &a));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
