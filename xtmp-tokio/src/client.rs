//! The client on tokio: the shared [`xtmp_adapter::Client`], connected
//! with the tokio runtime.

use std::net::SocketAddr;
use std::ops::Deref;

use xtmp_adapter::{ClientSetup, Endpoint, Error, Transport};

use crate::Tokio;

/// A connected XTMP client on tokio: cheap to clone, usable from any task.
///
/// Every method of [`xtmp_adapter::Client`] (request, send, post,
/// subscribe, state, stats, close, abort) is available through `Deref`;
/// this type adds the constructors that bring the tokio runtime.
#[derive(Clone, Debug)]
pub struct Client(xtmp_adapter::Client);

impl Client {
    /// Connects to `endpoint`: the registry (if the setup names one) maps
    /// its name and pins its key, host names are resolved with
    /// [`crate::TokioResolver`] (unless the setup names a resolver), the
    /// setup's trust policy picks the server verifier, and the addresses
    /// are tried in order until a handshake completes.
    pub async fn connect_to(endpoint: &Endpoint, setup: ClientSetup) -> Result<Client, Error> {
        xtmp_adapter::Client::connect_to(Tokio::shared(), endpoint, setup).await.map(Client)
    }

    /// Connects to the endpoint named by `BPCI_XTMP_ENDPOINT` (default
    /// `xtmp://localhost:7778`), as [`Client::connect_to`].
    pub async fn from_env(setup: ClientSetup) -> Result<Client, Error> {
        let endpoint = Endpoint::from_env().map_err(|e| Error::Config(e.to_string()))?;
        Client::connect_to(&endpoint, setup).await
    }

    /// Connects to `addr` over `transport` and completes the handshake,
    /// trusting the server by the setup's client configuration.
    pub async fn connect(addr: SocketAddr, transport: Transport, setup: ClientSetup) -> Result<Client, Error> {
        xtmp_adapter::Client::connect(Tokio::shared(), addr, transport, setup).await.map(Client)
    }

    /// The runtime-neutral client.
    pub fn into_inner(self) -> xtmp_adapter::Client {
        self.0
    }
}

impl Deref for Client {
    type Target = xtmp_adapter::Client;

    fn deref(&self) -> &xtmp_adapter::Client {
        &self.0
    }
}
