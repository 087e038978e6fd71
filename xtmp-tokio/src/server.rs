//! The server on tokio: the shared [`xtmp_adapter::Server`], started on
//! the tokio runtime.

use std::net::SocketAddr;
use std::time::Duration;

use xtmp_adapter::{Error, Router, ServerSetup, ServerStats, Transport};

use crate::Tokio;

/// A running XTMP server on tokio. Dropping it stops it at once (every
/// session is aborted with a Disconnect); [`Server::shutdown`] stops it
/// gracefully.
#[derive(Debug)]
pub struct Server(xtmp_adapter::Server);

impl Server {
    /// Listens on `addr` over `transport` and serves `router`.
    pub async fn bind(
        setup: ServerSetup,
        transport: Transport,
        addr: SocketAddr,
        router: Router,
    ) -> Result<Server, Error> {
        Server::start(setup, &[(transport, addr)], router).await
    }

    /// Listens on each of `listeners` (TCP and UDP, any mix) and serves
    /// `router`.
    pub async fn start(
        setup: ServerSetup,
        listeners: &[(Transport, SocketAddr)],
        router: Router,
    ) -> Result<Server, Error> {
        xtmp_adapter::Server::start(Tokio::shared(), setup, listeners, router).await.map(Server)
    }

    /// The first listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Every listener's transport and address.
    pub fn listeners(&self) -> &[(Transport, SocketAddr)] {
        self.0.listeners()
    }

    /// The server's counters.
    pub async fn stats(&self) -> ServerStats {
        self.0.stats().await
    }

    /// Stops gracefully (see [`xtmp_adapter::Server::shutdown`]).
    pub async fn shutdown(self, grace: Duration) {
        self.0.shutdown(grace).await
    }
}
