//! The server, written once for every runtime: the core's endpoints (one
//! per shard, by default one per core) behind listeners, each driven by
//! its own task, with a router that runs a handler task per request and
//! per subscription.
//!
//! With several shards, each session lives in one shard for its whole
//! life, chosen by its session id (SPEC.md 3.8.1): a TCP or WebSocket
//! connection joins the shard its first frame names, and each shard reads
//! its own UDP socket, all bound to one port with `SO_REUSEPORT` (on
//! Linux the kernel hands each datagram to the right one; elsewhere the
//! shard that got it hands it over).

mod budget;
mod conn;
mod driver;
mod publisher;
mod router;
mod udp_group;
mod warnings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;

use futures_channel::{mpsc, oneshot};
use xtmp_core::crypto::RustCrypto;
use xtmp_core::endpoint::{EndpointConfig, EndpointStats, RetryPolicy};
use xtmp_core::handshake::{IdentityKeypair, ServerConfig};
use xtmp_core::session::SessionConfig;
use xtmp_core::shard::Shard;

use self::conn::Shared;
use self::driver::{INPUT_QUEUE, ServerDriver, ShardSetup};
use crate::runtime::{DatagramSocket, Listener, Runtime};
use crate::{Error, Transport};

pub use publisher::{Publisher, PublisherClosed};
pub use router::{Peer, Rejection, Reply, Request, Router};

/// How a server runs: the core's endpoint configuration (which holds the
/// protocol's limits) and the adapter's own limits.
///
/// The limits, with their defaults: sessions at once
/// (`endpoint.max_sessions`, 10,000), half-open handshakes
/// (`endpoint.max_half_open`, 1,024) and those of one address prefix
/// (`endpoint.max_half_open_per_prefix`, 64, by /24 and /64), unproven
/// hellos held (`endpoint.max_unproven_hellos`, 256, the oldest evicted),
/// stateless Retry cookies under handshake load (`endpoint.retry`), the largest message and the receive memory
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
    /// Subscriptions the whole server serves at once (each session may
    /// also hold at most its `SessionConfig::max_subscriptions`, 256);
    /// one more is refused with Error `REFUSED` ("the server's
    /// subscription budget is spent"). Default 20,000.
    pub max_subscriptions: usize,
    /// Subscription items one session's publishers may send a second, all
    /// together (0: no limit). An item beyond it waits in its publisher's
    /// queue: a reliable [`Publisher::push`] waits, a best-effort one
    /// drops the oldest queued, and [`Publisher::writable`] waits, so a
    /// handler that builds items only when writable builds no more than
    /// the budget. Default 10,000.
    pub max_session_items_per_second: u32,
    /// Subscription items the whole server may send a second (0: no
    /// limit), shared out evenly between the shards. Default 100,000.
    pub max_items_per_second: u32,
    /// TCP and WebSocket connections open at once; more are closed as
    /// they arrive. Default 10,000.
    pub max_connections: usize,
    /// Of those, how many may come from one address prefix (by the
    /// endpoint's `prefix_len_v4` and `prefix_len_v6`, /24 and /64 by
    /// default), so that a few peers holding connections open cannot take
    /// every slot. Default 1,000 (a NAT of a few hundred nodes fits).
    pub max_connections_per_prefix: usize,
    /// WebSocket upgrades in progress from one address prefix (of at most
    /// 256 in all); a connection beyond it is closed at once. Default 32.
    pub max_upgrades_per_prefix: usize,
    /// Chunks queued for one TCP connection's writer: a peer that does not
    /// read loses that connection (its session keeps any other path and
    /// may reconnect) rather than make the server's memory grow.
    /// Default 256.
    pub write_queue: usize,
    /// Shards: endpoints, each driven by its own task, that the sessions
    /// are spread over, so that a server uses every core. `0` (the
    /// default) means one per core the process may run on
    /// (`std::thread::available_parallelism`). The endpoint's limits
    /// (`max_sessions`, `max_half_open`, `max_reassembly_bytes` and the
    /// Retry threshold) are shared out evenly, each shard getting its part
    /// rounded up (at least 64 KiB of reassembly memory).
    pub shards: usize,
    /// With several shards on Linux, have the kernel hand each datagram to
    /// the socket of its shard (a BPF program on the `SO_REUSEPORT` group,
    /// SPEC.md 3.8.1). Off (or where that fails), the kernel spreads
    /// datagrams by address and a shard hands on those of other shards,
    /// one channel hop each. Default on.
    pub kernel_routing: bool,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_in_flight: 256,
            publisher_depth: 64,
            max_subscriptions: 20_000,
            max_session_items_per_second: 10_000,
            max_items_per_second: 100_000,
            max_connections: 10_000,
            max_connections_per_prefix: 1_000,
            max_upgrades_per_prefix: 32,
            write_queue: 256,
            shards: 0,
            kernel_routing: true,
        }
    }
}

impl ServerLimits {
    /// How many shards a server with these limits runs.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(u16::MAX as usize)
    }
}

/// Shard `shard`'s part of `base`: its session ids, and its share of the limits.
fn shard_config(base: &EndpointConfig, shard: Shard) -> EndpointConfig {
    let n = shard.count() as usize;
    let mut c = base.clone();
    let mut server = (*base.server).clone();
    server.session_ids = shard;
    c.server = Arc::new(server);
    c.max_sessions = base.max_sessions.div_ceil(n);
    c.max_half_open = base.max_half_open.div_ceil(n);
    c.max_half_open_per_prefix = base.max_half_open_per_prefix.div_ceil(n);
    c.max_unproven_hellos = base.max_unproven_hellos.div_ceil(n);
    c.max_busy_per_second = base.max_busy_per_second.div_ceil(n as u32);
    c.max_reassembly_bytes = (base.max_reassembly_bytes / n).max(64 * 1024);
    if let RetryPolicy::UnderLoad(k) = base.retry {
        c.retry = RetryPolicy::UnderLoad(k.div_ceil(n));
    }
    c
}

impl ServerSetup {
    /// A server with identity `identity`, the pure-Rust crypto provider and
    /// default limits. Its stateless reset key (SPEC.md 3.7.1) is derived
    /// from the identity, so a server restarted with the same identity
    /// resets the sessions its previous run held, and their clients start
    /// new ones at once instead of waiting for their idle timeout.
    pub fn new(identity: Arc<IdentityKeypair>) -> ServerSetup {
        let mut server = ServerConfig::new(Arc::new(RustCrypto), identity);
        server.reset_key = server.identity.derive_key(&RustCrypto, RESET_KEY_LABEL).ok().map(Arc::new);
        let endpoint = EndpointConfig::new(Arc::new(SessionConfig::default()), Arc::new(server));
        ServerSetup { endpoint: Arc::new(endpoint), limits: ServerLimits::default() }
    }
}

/// The label of the stateless reset key derived from a server's identity
/// ([`IdentityKeypair::derive_key`]).
pub const RESET_KEY_LABEL: &[u8] = b"stateless reset key";

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
    /// Times a publisher's items were held back for the items-per-second
    /// budgets ([`ServerLimits::max_session_items_per_second`],
    /// [`ServerLimits::max_items_per_second`]).
    pub items_throttled: u64,
    /// TCP connections dropped: over the connection limit, not reading,
    /// or silent (not even a frame header within the hello timeout).
    pub connections_dropped: u64,
    /// Datagrams that arrived on one shard's socket and were handed to the
    /// shard of their session: none where the kernel routes them.
    pub datagrams_forwarded: u64,
    /// Shards the server runs.
    pub shards: usize,
    /// Sessions each shard holds now, by shard number.
    pub shard_sessions: Vec<usize>,
}

impl ServerStats {
    fn add(&mut self, shard: ServerStats) {
        self.endpoint += shard.endpoint;
        self.sessions += shard.sessions;
        self.shard_sessions.push(shard.sessions);
        self.requests_refused += shard.requests_refused;
        self.items_throttled += shard.items_throttled;
    }
}

pub(crate) enum Control {
    Shutdown(Duration, oneshot::Sender<()>),
    Stats(oneshot::Sender<ServerStats>),
}

/// A running server. Dropping it stops it at once (every session is
/// aborted, with a Disconnect); [`Server::shutdown`] stops it gracefully.
pub struct Server {
    local: Vec<(Transport, SocketAddr)>,
    /// Each shard's control queue.
    controls: Vec<mpsc::UnboundedSender<Control>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("listeners", &self.local).field("shards", &self.controls.len()).finish()
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Shutdown(..) => "Shutdown",
            Control::Stats(_) => "Stats",
        })
    }
}

/// A server's UDP sockets (one per shard, or one), and whether the kernel
/// routes datagrams to their shard's socket.
type UdpGroup = (Vec<std::net::UdpSocket>, bool);

/// Binds TCP and UDP on one port: `addr`'s, or when it asks for any, the
/// one the TCP listener got, tried again with a new one (a few times) if a
/// UDP socket already holds that port number.
async fn bind_hybrid(
    rt: &dyn Runtime,
    addr: SocketAddr,
    shards: usize,
    steer: bool,
) -> Result<(Box<dyn Listener>, UdpGroup), Error> {
    const TRIES: usize = 8;
    let mut tries = 0;
    loop {
        let l = rt.listen(addr).await?;
        match udp_group::bind(l.local_addr()?, shards, steer) {
            Ok(g) => return Ok((l, g)),
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
        let count = setup.limits.shard_count();
        let mut tcp = Vec::new();
        let mut udp: Vec<UdpGroup> = Vec::new();
        let mut local = Vec::new();
        for &(transport, addr) in listeners {
            match transport {
                Transport::Tcp | Transport::WebSocket => {
                    let mut l = rt.listen(addr).await?;
                    local.push((transport, l.local_addr()?));
                    if transport == Transport::WebSocket {
                        let prefixes = (
                            setup.endpoint.prefix_len_v4,
                            setup.endpoint.prefix_len_v6,
                            setup.limits.max_upgrades_per_prefix,
                        );
                        l = Box::new(crate::websocket::WsListener::new(rt.clone(), l, prefixes));
                    }
                    tcp.push(l);
                }
                Transport::Udp => {
                    let g = udp_group::bind(addr, count, setup.limits.kernel_routing)?;
                    local.push((transport, g.0[0].local_addr()?));
                    udp.push(g);
                }
                Transport::Hybrid => {
                    let (l, g) = bind_hybrid(&*rt, addr, count, setup.limits.kernel_routing).await?;
                    local.push((transport, l.local_addr()?));
                    tcp.push(l);
                    udp.push(g);
                }
            }
        }
        if udp.len() > 1 {
            return Err(Error::Config(String::from("one UDP or hybrid listener per server for now")));
        }
        // Each shard's socket; where there is one socket for several
        // shards, they all send on it and shard 0 reads it.
        let (sockets, steered) = udp.pop().unwrap_or_default();
        let sockets: Vec<Arc<dyn DatagramSocket>> =
            sockets.into_iter().map(|s| rt.adopt_udp(s).map(Arc::from)).collect::<Result<_, _>>()?;
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..count).map(|_| mpsc::channel(INPUT_QUEUE)).unzip();
        let shared = Arc::new(Shared {
            inputs: senders,
            connections: Default::default(),
            subscriptions: Default::default(),
            by_prefix: Default::default(),
            connections_dropped: Default::default(),
            datagrams_forwarded: Default::default(),
            hello_timeout: setup.endpoint.hello_timeout,
            pool: Default::default(),
        });
        let names: Vec<String> = local.iter().map(|(t, a)| format!("{}://{a}", t.scheme())).collect();
        let names = names.join(" ");
        let router = Arc::new(router);
        let mut controls = Vec::with_capacity(count);
        let mut drivers = Vec::with_capacity(count);
        for (i, inputs) in receivers.into_iter().enumerate() {
            let shard = Shard::new(i as u32, count as u32).ok_or_else(|| Error::Config(String::from("shards")))?;
            let (control, control_rx) = mpsc::unbounded();
            controls.push(control);
            let socket = (!sockets.is_empty()).then(|| sockets[i % sockets.len()].clone());
            let driver = ServerDriver::new(
                rt.clone(),
                ShardSetup {
                    shard,
                    endpoint: Arc::new(shard_config(&setup.endpoint, shard)),
                    limits: setup.limits,
                    shared: shared.clone(),
                    inputs,
                    listeners: if i == 0 { std::mem::take(&mut tcp) } else { Vec::new() },
                    udp_reads: i < sockets.len(),
                    udp: socket,
                    router: router.clone(),
                    control: control_rx,
                },
            )?;
            drivers.push(driver);
        }
        let span = tracing::info_span!("xtmp_server", listeners = %names);
        tracing::info!(parent: &span, shards = count, kernel_routing = steered, "listening");
        for (i, driver) in drivers.into_iter().enumerate() {
            let span = tracing::info_span!(parent: &span, "xtmp_shard", shard = i);
            rt.spawn(Box::pin(tracing::Instrument::instrument(driver, span)));
        }
        Ok(Server { local, controls, shared })
    }

    /// The first listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local[0].1
    }

    /// Every listener's transport and address.
    pub fn listeners(&self) -> &[(Transport, SocketAddr)] {
        &self.local
    }

    /// The server's counters: every shard's, added up.
    pub async fn stats(&self) -> ServerStats {
        let mut stats = ServerStats {
            connections_dropped: self.shared.connections_dropped.load(Ordering::Relaxed),
            datagrams_forwarded: self.shared.datagrams_forwarded.load(Ordering::Relaxed),
            shards: self.controls.len(),
            ..ServerStats::default()
        };
        let mut answers = Vec::with_capacity(self.controls.len());
        for control in &self.controls {
            let (tx, rx) = oneshot::channel();
            let _ = control.unbounded_send(Control::Stats(tx));
            answers.push(rx);
        }
        for rx in answers {
            stats.add(rx.await.unwrap_or_default());
        }
        stats
    }

    /// Stops gracefully: accepts no new session or connection, ends every
    /// subscription, lets the requests being handled finish and their
    /// answers go out, then closes every session with a Disconnect
    /// ("server shutting down"). Whatever is still open after `grace` is
    /// aborted. Resolves once the server has stopped.
    pub async fn shutdown(self, grace: Duration) {
        let mut done = Vec::with_capacity(self.controls.len());
        for control in &self.controls {
            let (tx, rx) = oneshot::channel();
            if control.unbounded_send(Control::Shutdown(grace, tx)).is_ok() {
                done.push(rx);
            }
        }
        for rx in done {
            let _ = rx.await;
        }
    }
}
