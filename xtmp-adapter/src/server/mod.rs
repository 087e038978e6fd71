//! The server, written once for every runtime: the core's endpoint behind
//! listeners, driven by one task, with a router that runs a handler task
//! per request and per subscription.

mod conn;
mod driver;
mod publisher;
mod router;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use xtmp_core::crypto::RustCrypto;
use xtmp_core::endpoint::{EndpointConfig, EndpointStats};
use xtmp_core::handshake::{IdentityKeypair, ServerConfig};
use xtmp_core::session::SessionConfig;

use crate::runtime::{DatagramSocket, Listener, Runtime};
use crate::{Error, Transport};

pub use publisher::{Publisher, PublisherClosed};
pub use router::{Peer, Rejection, Reply, Request, Router};

/// How a server runs: the core's endpoint configuration (which holds the
/// protocol's limits) and the adapter's own limits.
///
/// The limits, with their defaults: sessions at once
/// (`endpoint.max_sessions`, 10,000) and half-open handshakes
/// (`endpoint.max_half_open`), stateless Retry cookies under handshake
/// load (`endpoint.retry`), the largest message and the receive memory
/// per session (`endpoint.session`), and those of [`ServerLimits`].
#[derive(Clone, Debug)]
pub struct ServerSetup {
    /// Sessions, handshake and admission limits (the core's).
    pub endpoint: Arc<EndpointConfig>,
    /// The adapter's limits.
    pub limits: ServerLimits,
}

/// Limits the adapter enforces, per session and per server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Requests of one session being handled at once; one more is refused
    /// at once with Error `REFUSED` ("too many requests in flight").
    /// Default 256.
    pub max_in_flight: usize,
    /// Items a [`Publisher`] queues before `push` waits (or
    /// `push_best_effort` drops the oldest). Default 64.
    pub publisher_depth: usize,
    /// TCP connections open at once; more are closed as they arrive.
    /// Default 10,000.
    pub max_connections: usize,
    /// Chunks queued for one TCP connection's writer: a peer that does not
    /// read loses that connection (its session keeps any other path and
    /// may reconnect) rather than make the server's memory grow.
    /// Default 256.
    pub write_queue: usize,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits { max_in_flight: 256, publisher_depth: 64, max_connections: 10_000, write_queue: 256 }
    }
}

impl ServerSetup {
    /// A server with identity `identity`, the pure-Rust crypto provider and
    /// default limits.
    pub fn new(identity: Arc<IdentityKeypair>) -> ServerSetup {
        let server = ServerConfig::new(Arc::new(RustCrypto), identity);
        let endpoint = EndpointConfig::new(Arc::new(SessionConfig::default()), Arc::new(server));
        ServerSetup { endpoint: Arc::new(endpoint), limits: ServerLimits::default() }
    }
}

/// A server's counters.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ServerStats {
    /// The endpoint's counters (sessions created, hellos shed, retries...).
    pub endpoint: EndpointStats,
    /// Sessions held now.
    pub sessions: usize,
    /// Requests refused because their session had too many in flight.
    pub requests_refused: u64,
    /// TCP connections dropped: over the connection limit, or not reading.
    pub connections_dropped: u64,
}

pub(crate) enum Control {
    Shutdown(Duration, oneshot::Sender<()>),
    Stats(oneshot::Sender<ServerStats>),
}

/// A running server. Dropping it stops it at once (every session is
/// aborted, with a Disconnect); [`Server::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct Server {
    local: Vec<(Transport, SocketAddr)>,
    control: mpsc::UnboundedSender<Control>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Shutdown(..) => "Shutdown",
            Control::Stats(_) => "Stats",
        })
    }
}

/// Binds TCP and UDP on one port: `addr`'s, or when it asks for any, the
/// one the TCP listener got, tried again with a new one (a few times) if a
/// UDP socket already holds that port number.
async fn bind_hybrid(
    rt: &dyn Runtime,
    addr: SocketAddr,
) -> Result<(Box<dyn Listener>, Box<dyn DatagramSocket>), Error> {
    const TRIES: usize = 8;
    let mut tries = 0;
    loop {
        let l = rt.listen(addr).await?;
        match rt.bind_udp(l.local_addr()?).await {
            Ok(s) => return Ok((l, s)),
            Err(e) if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse && tries + 1 < TRIES => {
                tries += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Server {
    /// Starts a server on `rt` listening on each of `listeners` (TCP,
    /// WebSocket and UDP, any mix; several of a kind are allowed) and serving `router`.
    pub async fn start(
        rt: Arc<dyn Runtime>,
        setup: ServerSetup,
        listeners: &[(Transport, SocketAddr)],
        router: Router,
    ) -> Result<Server, Error> {
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        let mut local = Vec::new();
        for &(transport, addr) in listeners {
            match transport {
                Transport::Tcp | Transport::WebSocket => {
                    let mut l = rt.listen(addr).await?;
                    local.push((transport, l.local_addr()?));
                    if transport == Transport::WebSocket {
                        l = Box::new(crate::websocket::WsListener::new(rt.clone(), l));
                    }
                    tcp.push(l);
                }
                Transport::Udp => {
                    let s = rt.bind_udp(addr).await?;
                    local.push((transport, s.local_addr()?));
                    udp.push(s);
                }
                Transport::Hybrid => {
                    let (l, s) = bind_hybrid(&*rt, addr).await?;
                    local.push((transport, l.local_addr()?));
                    tcp.push(l);
                    udp.push(s);
                }
            }
        }
        if udp.len() > 1 {
            return Err(Error::Config(String::from("one UDP or hybrid listener per server for now")));
        }
        let (control, control_rx) = mpsc::unbounded();
        let driver = driver::ServerDriver::new(rt.clone(), setup, tcp, udp.pop(), router, control_rx)?;
        let names: Vec<String> = local.iter().map(|(t, a)| format!("{}://{a}", t.scheme())).collect();
        let span = tracing::info_span!("xtmp_server", listeners = %names.join(" "));
        tracing::info!(parent: &span, "listening");
        rt.spawn(Box::pin(tracing::Instrument::instrument(driver, span)));
        Ok(Server { local, control })
    }

    /// The first listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local[0].1
    }

    /// Every listener's transport and address.
    pub fn listeners(&self) -> &[(Transport, SocketAddr)] {
        &self.local
    }

    /// The server's counters.
    pub async fn stats(&self) -> ServerStats {
        let (tx, rx) = oneshot::channel();
        let _ = self.control.unbounded_send(Control::Stats(tx));
        rx.await.unwrap_or_default()
    }

    /// Stops gracefully: accepts no new session or connection, ends every
    /// subscription, lets the requests being handled finish and their
    /// answers go out, then closes every session with a Disconnect
    /// ("server shutting down"). Whatever is still open after `grace` is
    /// aborted. Resolves once the server has stopped.
    pub async fn shutdown(self, grace: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.control.unbounded_send(Control::Shutdown(grace, tx)).is_ok() {
            let _ = rx.await;
        }
    }
}
