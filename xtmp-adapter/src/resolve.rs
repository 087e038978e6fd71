//! Turning an endpoint into addresses: the registry first, then a
//! [`Resolver`] for host names.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use crate::endpoint::{Endpoint, Host};
use crate::registry::{Registry, RegistryError};

/// A boxed, sendable future (what [`Resolver::lookup`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Looks up a host name's addresses. Each runtime adapter provides one
/// over its runtime's resolver; tests use [`StaticResolver`].
pub trait Resolver: Send + Sync + fmt::Debug {
    /// The addresses of `name`, with `port`.
    fn lookup<'a>(&'a self, name: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>>;
}

/// A fixed table of names, for tests and closed deployments.
#[derive(Clone, Debug, Default)]
pub struct StaticResolver(pub HashMap<String, Vec<std::net::IpAddr>>);

impl Resolver for StaticResolver {
    fn lookup<'a>(&'a self, name: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        let found = self.0.get(name).map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        Box::pin(async move { found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name")) })
    }
}

/// Where to connect: the endpoint after the registry (its address and
/// pinned key), and the addresses to try in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The endpoint as the registry rewrote it.
    pub endpoint: Endpoint,
    /// Addresses to try, in order.
    pub addrs: Vec<SocketAddr>,
}

/// Resolves `endpoint`: the registry, if any, maps its name and pins its
/// key; an address literal needs no lookup; a name goes to `resolver`.
pub async fn resolve(
    endpoint: &Endpoint,
    registry: Option<&Registry>,
    resolver: &dyn Resolver,
) -> Result<Target, ResolveError> {
    let endpoint = match registry {
        Some(r) => r.apply(endpoint).map_err(ResolveError::Registry)?,
        None => endpoint.clone(),
    };
    let addrs = match &endpoint.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, endpoint.port())],
        Host::Name(name) => {
            let addrs = resolver
                .lookup(name, endpoint.port())
                .await
                .map_err(|e| ResolveError::Lookup { name: name.clone(), error: e })?;
            if addrs.is_empty() {
                return Err(ResolveError::NoAddress(name.clone()));
            }
            addrs
        }
    };
    Ok(Target { endpoint, addrs })
}

/// Why an endpoint could not be resolved.
#[derive(Debug)]
#[non_exhaustive]
pub enum ResolveError {
    /// The registry could not be applied.
    Registry(RegistryError),
    /// The name lookup failed.
    Lookup {
        /// The name.
        name: String,
        /// The resolver's error.
        error: io::Error,
    },
    /// The name has no address.
    NoAddress(String),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Registry(e) => e.fmt(f),
            ResolveError::Lookup { name, error } => write!(f, "cannot resolve {name}: {error}"),
            ResolveError::NoAddress(name) => write!(f, "{name} has no address"),
        }
    }
}

impl std::error::Error for ResolveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResolveError::Registry(e) => Some(e),
            ResolveError::Lookup { error, .. } => Some(error),
            ResolveError::NoAddress(_) => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Polls a future that never waits (the resolvers here answer at once).
    pub(crate) fn now<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the future waited"),
        }
    }

    fn table() -> StaticResolver {
        let mut t = HashMap::new();
        t.insert("ledger".to_string(), vec!["10.0.0.7".parse().unwrap(), "::7".parse().unwrap()]);
        t.insert("void".to_string(), Vec::new());
        StaticResolver(t)
    }

    #[test]
    fn literals_need_no_lookup_and_names_go_to_the_resolver() {
        let r = table();
        let t = now(resolve(&"xtmp://10.1.1.1:5".parse().unwrap(), None, &r)).unwrap();
        assert_eq!(t.addrs, vec!["10.1.1.1:5".parse().unwrap()]);
        let t = now(resolve(&"xtmp://ledger".parse().unwrap(), None, &r)).unwrap();
        assert_eq!(t.addrs, vec!["10.0.0.7:7778".parse().unwrap(), "[::7]:7778".parse().unwrap()]);
        let e = now(resolve(&"xtmp://nowhere".parse().unwrap(), None, &r)).unwrap_err();
        assert!(e.to_string().starts_with("cannot resolve nowhere"), "{e}");
        assert!(matches!(now(resolve(&"xtmp://void".parse().unwrap(), None, &r)), Err(ResolveError::NoAddress(_))));
    }

    #[test]
    fn the_registry_comes_first() {
        let reg = Registry::parse("bpci ledger:9000 xtmp1:00112233445566778899aabbccddeeff\n").unwrap();
        let t = now(resolve(&"xtmp+udp://bpci".parse().unwrap(), Some(&reg), &table())).unwrap();
        assert_eq!(t.addrs[0], "10.0.0.7:9000".parse().unwrap());
        assert!(t.endpoint.key.is_some());
    }
}
