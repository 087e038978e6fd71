//! The client: one session over one socket, driven by a task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use xtmp_core::crypto::RustCrypto;
use xtmp_core::handshake::{ClientConfig, Fingerprints, Pinned, PublicIdentity};
use xtmp_core::session::{
    CloseCode, CloseReason, Event, Message, MessageId, MessageKind, PathId, PathKind, SendOptions, Session,
    SessionConfig,
};
use xtmp_core::wire::MessageType;

use xtmp_adapter::{Connector, Endpoint, Resolver, Trust};

use crate::clock::{self, Clock};
use crate::{Error, TokioResolver, Transport};

/// How a client connects: the core's configurations and the adapter's
/// own defaults.
#[derive(Clone, Debug)]
pub struct ClientSetup {
    /// The session's settings (timeouts, limits, key rotation).
    pub session: Arc<SessionConfig>,
    /// How the client handshakes. With [`ClientSetup::trust`] set, its
    /// verifier is replaced by the one the trust policy picks for each
    /// endpoint ([`Client::connect_to`]).
    pub client: Arc<ClientConfig>,
    /// How [`Client::connect_to`] trusts servers; `None`: by `client`'s
    /// own verifier (a root of trust, say).
    pub trust: Option<Trust>,
    /// The registry file that maps names to addresses and pins identities
    /// (required by [`Trust::FirstUse`], which records into it).
    pub registry: Option<PathBuf>,
    /// Looks up host names (default: [`TokioResolver`]).
    pub resolver: Arc<dyn Resolver>,
    /// How long [`Client::request`] waits for an answer (default 30 s).
    pub request_timeout: Duration,
}

impl ClientSetup {
    /// Trusts exactly the server identity `server` (pinned), with the
    /// pure-Rust crypto provider and default settings.
    pub fn pinned(server: PublicIdentity) -> ClientSetup {
        let client = ClientConfig::new(Arc::new(RustCrypto), Arc::new(Pinned(server.clone())));
        ClientSetup { trust: Some(Trust::Identity(server)), ..ClientSetup::new(Arc::new(client)) }
    }

    /// Trusts the servers the endpoint (`?key=`) or the registry file
    /// `registry` pins; with `first_use`, also an unpinned server the
    /// first time, recording its identity into the file.
    pub fn registry(registry: Option<PathBuf>, first_use: bool) -> ClientSetup {
        let client = ClientConfig::new(Arc::new(RustCrypto), Arc::new(Fingerprints(Vec::new())));
        let trust = if first_use { Trust::FirstUse } else { Trust::Pinned };
        ClientSetup { trust: Some(trust), registry, ..ClientSetup::new(Arc::new(client)) }
    }

    /// The client configuration `client` (and its verifier) with default
    /// settings.
    pub fn new(client: Arc<ClientConfig>) -> ClientSetup {
        ClientSetup {
            session: Arc::new(SessionConfig::default()),
            client,
            trust: None,
            registry: None,
            resolver: Arc::new(TokioResolver),
            request_timeout: Duration::from_secs(30),
        }
    }
}

enum Command {
    Send { message_type: MessageType, body: Bytes, request: bool, reply: Reply },
    Close,
}

enum Reply {
    Response(oneshot::Sender<Result<Message, Error>>),
    Acked(oneshot::Sender<Result<(), Error>>),
}

/// A connected XTMP client: cheap to clone, usable from any task.
///
/// Dropping every clone closes the session gracefully.
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    request_timeout: Duration,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Send { .. } => "Send",
            Command::Close => "Close",
        })
    }
}

impl Client {
    /// Connects to `endpoint`: the registry (if the setup names one) maps
    /// its name and pins its key, host names are resolved, the setup's
    /// [`Trust`] picks the server verifier, and the addresses are tried in
    /// order until a handshake completes. On trust on first use, the
    /// server's identity is recorded into the registry file.
    pub async fn connect_to(endpoint: &Endpoint, setup: ClientSetup) -> Result<Client, Error> {
        let connector = Connector {
            trust: setup.trust.clone(),
            registry: setup.registry.clone(),
            resolver: setup.resolver.clone(),
        };
        let prepared = connector.prepare(endpoint).await?;
        let mut setup = setup;
        if let Some(v) = &prepared.verifier {
            let mut client = (*setup.client).clone();
            client.verifier = v.clone();
            setup.client = Arc::new(client);
        }
        let mut last = None;
        for &addr in &prepared.target.addrs {
            match Client::start(addr, endpoint.transport, setup.clone()).await {
                Ok((client, peer)) => {
                    if let Some(peer) = &peer {
                        prepared.connected(peer).map_err(xtmp_adapter::ConnectError::from)?;
                    }
                    return Ok(client);
                }
                Err(e @ (Error::Io(_) | Error::Closed(CloseReason::HandshakeTimeout))) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::Closed(CloseReason::PathsLost)))
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
        Client::start(addr, transport, setup).await.map(|(c, _)| c)
    }

    async fn start(
        addr: SocketAddr,
        transport: Transport,
        setup: ClientSetup,
    ) -> Result<(Client, Option<PublicIdentity>), Error> {
        let clock = Clock::new();
        let mut rng = clock::rng()?;
        let kind = match transport {
            Transport::Tcp => PathKind::Stream,
            Transport::Udp => PathKind::Datagram,
            other => return Err(Error::Unsupported(other)),
        };
        let session = Session::connect(clock.now(), setup.session.clone(), setup.client.clone(), kind, &mut rng)
            .map_err(|e| Error::Config(e.to_string()))?;
        let io = match transport {
            Transport::Udp => {
                let local: SocketAddr =
                    if addr.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.map_err(io_other)?;
                let s = UdpSocket::bind(local).await?;
                s.connect(addr).await?;
                Io::Udp(s)
            }
            _ => {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Io::Tcp(s)
            }
        };
        let (commands, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let driver = Driver { clock, session, io, rx, ready: Some(ready_tx), pending: HashMap::new() };
        tokio::spawn(driver.run());
        match ready_rx.await {
            Ok(Ok(peer)) => Ok((Client { commands, request_timeout: setup.request_timeout }, peer)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Closed(CloseReason::PathsLost)),
        }
    }

    /// Sends a request and waits for its response (at most the setup's
    /// request timeout). An Error (`FE`) response is [`Error::Remote`].
    pub async fn request(&self, message_type: MessageType, body: Bytes) -> Result<Message, Error> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Send { message_type, body, request: true, reply: Reply::Response(tx) })?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Closed(CloseReason::PathsLost)),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Sends a reliable message and waits until the server acknowledged it.
    pub async fn send(&self, message_type: MessageType, body: Bytes) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Send { message_type, body, request: false, reply: Reply::Acked(tx) })?;
        rx.await.unwrap_or(Err(Error::Closed(CloseReason::PathsLost)))
    }

    /// Closes the session gracefully: queued messages go out first.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }

    fn command(&self, c: Command) -> Result<(), Error> {
        self.commands.send(c).map_err(|_| Error::Closed(CloseReason::PathsLost))
    }
}

fn io_other(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

enum Io {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

impl Io {
    async fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Tcp(s) => s.read(buf).await,
            Io::Udp(s) => s.recv(buf).await,
        }
    }

    async fn send(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Io::Tcp(s) => s.write_all(buf).await,
            Io::Udp(s) => s.send(buf).await.map(drop),
        }
    }
}

struct Driver {
    clock: Clock,
    session: Session,
    io: Io,
    rx: mpsc::UnboundedReceiver<Command>,
    ready: Option<oneshot::Sender<Result<Option<PublicIdentity>, Error>>>,
    pending: HashMap<MessageId, Reply>,
}

/// Largest transmit the driver asks the core for (a stream chunk may
/// batch several frames).
const BUF_LEN: usize = 64 * 1024;

impl Driver {
    async fn run(mut self) {
        let mut out = vec![0u8; BUF_LEN];
        let mut input = vec![0u8; BUF_LEN];
        let mut path_alive = true;
        let mut commands_open = true;
        loop {
            if path_alive && self.flush(&mut out).await.is_err() {
                // The socket is gone: the session may only wait for its
                // idle timeout now (reconnection is still to come).
                self.session.path_closed(PathId(0));
                path_alive = false;
            }
            self.events();
            if self.session.is_closed() {
                return;
            }
            let deadline = self.session.poll_timeout().map(|t| self.clock.deadline(t));
            tokio::select! {
                r = self.io.recv(&mut input), if path_alive => match r {
                    Ok(0) | Err(_) if matches!(self.io, Io::Tcp(_)) => {
                        self.session.path_closed(PathId(0));
                        path_alive = false;
                    }
                    Ok(n) => self.session.handle_input(self.clock.now(), PathId(0), &input[..n]),
                    // A UDP error (an ICMP port unreachable, say) loses one datagram.
                    Err(_) => {}
                },
                c = self.rx.recv(), if commands_open => match c {
                    Some(Command::Send { message_type, body, request, reply }) => {
                        let options = SendOptions { request, ..SendOptions::default() };
                        match self.session.send(message_type, body, options) {
                            Ok(id) => {
                                self.pending.insert(id, reply);
                            }
                            Err(e) => reply.fail(Error::Send(e)),
                        }
                    }
                    Some(Command::Close) => {
                        self.session.close(self.clock.now(), CloseCode::NO_ERROR, "client closed");
                    }
                    None => {
                        commands_open = false;
                        self.session.close(self.clock.now(), CloseCode::NO_ERROR, "client dropped");
                    }
                },
                () = sleep_until(deadline) => self.session.handle_timeout(self.clock.now()),
            }
        }
    }

    async fn flush(&mut self, out: &mut [u8]) -> std::io::Result<()> {
        loop {
            let t = match self.session.poll_transmit(self.clock.now(), out) {
                Ok(Some(t)) => t,
                Ok(None) => return Ok(()),
                Err(e) => return Err(io_other(e)),
            };
            self.io.send(&out[..t.len]).await?;
        }
    }

    fn events(&mut self) {
        while let Some(e) = self.session.poll_event() {
            match e {
                Event::Connected { peer, .. } => {
                    if let Some(r) = self.ready.take() {
                        let _ = r.send(Ok(peer));
                    }
                }
                Event::Message(m) => {
                    if let MessageKind::Response(to) = m.kind
                        && matches!(self.pending.get(&to), Some(Reply::Response(_)))
                        && let Some(Reply::Response(tx)) = self.pending.remove(&to)
                    {
                        let r = match m.error() {
                            Some((code, reason)) => Err(Error::Remote { code, reason }),
                            None => Ok(m),
                        };
                        let _ = tx.send(r);
                    }
                    // Server pushes and unsolicited messages: subscriptions
                    // are still to come; they are dropped for now.
                }
                Event::Acked(id) => {
                    // A request waits on for its response.
                    if matches!(self.pending.get(&id), Some(Reply::Acked(_)))
                        && let Some(Reply::Acked(tx)) = self.pending.remove(&id)
                    {
                        let _ = tx.send(Ok(()));
                    }
                }
                Event::Failed(id, reason) => {
                    if let Some(r) = self.pending.remove(&id) {
                        r.fail(Error::NotDelivered(reason));
                    }
                }
                Event::Closed(reason) => {
                    if let Some(r) = self.ready.take() {
                        let _ = r.send(Err(Error::Closed(reason.clone())));
                    }
                    for (_, r) in self.pending.drain() {
                        r.fail(Error::Closed(reason.clone()));
                    }
                }
                _ => {}
            }
        }
    }
}

impl Reply {
    fn fail(self, e: Error) {
        match self {
            Reply::Response(tx) => drop(tx.send(Err(e))),
            Reply::Acked(tx) => drop(tx.send(Err(e))),
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
