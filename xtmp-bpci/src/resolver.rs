//! Names resolved through the BPCI registry: a [`Resolver`] that asks a
//! BPCI server (RegistryQuery), checks the record's signature against that
//! server's identity, and takes the addresses from the record's
//! endpoints, so a node can connect to `bpci-east` without a local
//! registry file.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use xtmp_adapter::{BoxFuture, Endpoint, Host, Resolver};
use xtmp_core::handshake::PublicIdentity;

use crate::client::{BpciClient, ClientError};
use crate::schema::Role;

/// Resolves names through a BPCI server's registry; host names found in
/// the records' endpoints go to `fallback` (the runtime's resolver).
#[derive(Clone, Debug)]
pub struct RegistryResolver {
    client: BpciClient,
    fallback: Arc<dyn Resolver>,
}

/// A server as the registry names it: where to reach it and whom to pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerRecord {
    /// Its endpoints, in the record's order.
    pub endpoints: Vec<Endpoint>,
    /// Its identity (what the record, signed by the registry's server, says).
    pub identity: PublicIdentity,
    /// The record's version.
    pub version: u64,
}

impl RegistryResolver {
    /// Resolves through `client`'s server, host names through `fallback`.
    pub fn new(client: BpciClient, fallback: Arc<dyn Resolver>) -> RegistryResolver {
        RegistryResolver { client, fallback }
    }

    /// The server record named `name`, its signature checked: NOT_FOUND
    /// from the server, or an error if it is not a server's record or an
    /// endpoint does not parse.
    pub async fn server(&self, name: &str) -> Result<ServerRecord, ClientError> {
        let r = self.client.registry_query(name).await?;
        if r.record.role != Role::Server {
            return Err(ClientError::BadSignature("the record is not a server's"));
        }
        let endpoints = r
            .record
            .endpoints
            .iter()
            .map(|e| e.parse::<Endpoint>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ClientError::BadSignature("the record holds an endpoint that does not parse"))?;
        Ok(ServerRecord { endpoints, identity: r.record.identity.0, version: r.record.version })
    }
}

impl Resolver for RegistryResolver {
    fn lookup<'a>(&'a self, name: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move {
            let record = match self.server(name).await {
                Ok(r) => r,
                Err(ClientError::Bpci(crate::BpciError::NotFound { .. })) => {
                    return Err(io::Error::new(io::ErrorKind::NotFound, format!("no registry record {name:?}")));
                }
                Err(e) => return Err(io::Error::other(e.to_string())),
            };
            let mut out = Vec::new();
            for e in &record.endpoints {
                // The record's own port wins; `port` is the caller's default.
                let p = if e.port() == 0 { port } else { e.port() };
                match &e.host {
                    Host::Ip(ip) => out.push(SocketAddr::new(*ip, p)),
                    Host::Name(n) => out.extend(self.fallback.lookup(n, p).await.unwrap_or_default()),
                }
            }
            if out.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("record {name:?} has no reachable endpoint"),
                ));
            }
            Ok(out)
        })
    }
}
