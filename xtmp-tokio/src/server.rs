//! The server: the core's endpoint behind a listener, driven by a task, and
//! a router that runs a handler per request type.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use xtmp_core::crypto::RustCrypto;
use xtmp_core::endpoint::{Endpoint, EndpointConfig, EndpointEvent, Remote, RemoteKind, SessionHandle};
use xtmp_core::handshake::{IdentityKeypair, ServerConfig};
use xtmp_core::session::{ErrorCode, Event, Message, MessageId, MessageKind, SendOptions, SessionConfig};
use xtmp_core::wire::MessageType;

use xtmp_adapter::clock::{self, Clock};

use crate::{Error, Transport};

/// How a server runs: the core's endpoint configuration.
#[derive(Clone, Debug)]
pub struct ServerSetup {
    /// Sessions, handshake and admission limits (the core's).
    pub endpoint: Arc<EndpointConfig>,
}

impl ServerSetup {
    /// A server with identity `identity`, the pure-Rust crypto provider and
    /// default limits.
    pub fn new(identity: Arc<IdentityKeypair>) -> ServerSetup {
        let server = ServerConfig::new(Arc::new(RustCrypto), identity);
        let endpoint = EndpointConfig::new(Arc::new(SessionConfig::default()), Arc::new(server));
        ServerSetup { endpoint: Arc::new(endpoint) }
    }
}

/// Who sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The session, as the endpoint names it.
    pub session: SessionHandle,
    /// The address the session was accepted from.
    pub addr: SocketAddr,
}

/// A request handed to a handler.
#[derive(Clone, Debug)]
pub struct Request {
    /// Who sent it.
    pub peer: Peer,
    /// The request itself (type, priority, body).
    pub message: Message,
}

/// A handler's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The response's type.
    pub message_type: MessageType,
    /// The response's body.
    pub body: Bytes,
}

impl Reply {
    /// A response of type `message_type` carrying `body`.
    pub fn new(message_type: MessageType, body: impl Into<Bytes>) -> Reply {
        Reply { message_type, body: body.into() }
    }
}

/// A handler's refusal: sent to the client as an Error (`FE`) response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The error code.
    pub code: ErrorCode,
    /// Why, for people.
    pub reason: String,
}

impl Rejection {
    /// A refusal (`ErrorCode::REFUSED`) with `reason`.
    pub fn refused(reason: impl Into<String>) -> Rejection {
        Rejection { code: ErrorCode::REFUSED, reason: reason.into() }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Reply, Rejection>> + Send>>;
type Handler = Arc<dyn Fn(Request) -> BoxFuture + Send + Sync>;

/// Request handlers by message type.
#[derive(Clone, Default)]
pub struct Router {
    routes: HashMap<MessageType, Handler>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.routes.keys()).finish()
    }
}

impl Router {
    /// A router with no routes: every request gets an `UNKNOWN_TYPE` Error.
    pub fn new() -> Router {
        Router::default()
    }

    /// Runs `handler` (in its own task) for every request of `message_type`.
    pub fn route<F, Fut>(mut self, message_type: MessageType, handler: F) -> Router
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, Rejection>> + Send + 'static,
    {
        self.routes.insert(message_type, Arc::new(move |r| Box::pin(handler(r))));
        self
    }
}

/// Input to the endpoint task.
enum Input {
    Bytes(Remote, Vec<u8>),
    Opened(Remote, mpsc::Sender<Vec<u8>>),
    Closed(Remote),
    Answer(SessionHandle, MessageId, Result<Reply, Rejection>),
}

/// A running server. Dropping it stops it.
#[derive(Debug)]
pub struct Server {
    local: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    /// Listens on `addr` over `transport` and serves `router`.
    pub async fn bind(
        setup: ServerSetup,
        transport: Transport,
        addr: SocketAddr,
        router: Router,
    ) -> Result<Server, Error> {
        let clock = Clock::new();
        let mut rng = clock::rng()?;
        let endpoint =
            Endpoint::new(clock.now(), setup.endpoint.clone(), &mut rng).map_err(|e| Error::Config(e.to_string()))?;
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let (stop, stopped) = oneshot::channel();
        let (local, udp) = match transport {
            Transport::Tcp => {
                let listener = TcpListener::bind(addr).await?;
                let local = listener.local_addr()?;
                tokio::spawn(accept(listener, tx.clone()));
                (local, None)
            }
            Transport::Udp => {
                let socket = UdpSocket::bind(addr).await?;
                (socket.local_addr()?, Some(socket))
            }
            other => return Err(Error::Unsupported(other)),
        };
        let task = EndpointTask {
            clock,
            endpoint,
            udp,
            input: rx,
            answers: tx,
            writers: HashMap::new(),
            peers: HashMap::new(),
            router: Arc::new(router),
        };
        tokio::spawn(task.run(stopped));
        Ok(Server { local, stop: Some(stop) })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Inputs (socket reads, handler answers) queued for the endpoint task: a
/// full queue makes readers wait, which pushes back on TCP senders.
const INPUT_QUEUE: usize = 1024;

/// Chunks queued for one TCP connection's writer. A peer that does not
/// read loses its connection (the session keeps its other paths) rather
/// than make the server's memory grow.
const WRITE_QUEUE: usize = 256;

async fn accept(listener: TcpListener, tx: mpsc::Sender<Input>) {
    while let Ok((stream, addr)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let remote = Remote { addr, kind: RemoteKind::Stream };
        let (mut read, mut write) = stream.into_split();
        let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        if tx.send(Input::Opened(remote, wtx)).await.is_err() {
            return;
        }
        // Writer: ends (and closes the connection) when the endpoint drops
        // its sender (the session is gone or the core reset the remote).
        tokio::spawn(async move {
            while let Some(b) = wrx.recv().await {
                if write.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = write.shutdown().await;
        });
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(Input::Bytes(remote, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Input::Closed(remote)).await;
        });
    }
}

struct EndpointTask {
    clock: Clock,
    endpoint: Endpoint,
    udp: Option<UdpSocket>,
    input: mpsc::Receiver<Input>,
    answers: mpsc::Sender<Input>,
    writers: HashMap<Remote, mpsc::Sender<Vec<u8>>>,
    peers: HashMap<SessionHandle, SocketAddr>,
    router: Arc<Router>,
}

impl EndpointTask {
    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        let mut out = vec![0u8; 64 * 1024];
        let mut dgram = vec![0u8; 64 * 1024];
        loop {
            self.flush(&mut out).await;
            self.events();
            let deadline = self.endpoint.poll_timeout().map(|t| tokio::time::Instant::from_std(self.clock.deadline(t)));
            tokio::select! {
                _ = &mut stopped => return,
                i = self.input.recv() => match i {
                    Some(i) => self.on_input(i),
                    None => return,
                },
                r = recv_from(self.udp.as_ref(), &mut dgram) => {
                    if let Ok((n, addr)) = r {
                        let remote = Remote { addr, kind: RemoteKind::Datagram };
                        self.endpoint.handle_input(self.clock.now(), remote, &dgram[..n]);
                    }
                }
                () = sleep_until(deadline) => self.endpoint.handle_timeout(self.clock.now()),
            }
        }
    }

    fn on_input(&mut self, i: Input) {
        let now = self.clock.now();
        match i {
            Input::Bytes(remote, b) => self.endpoint.handle_input(now, remote, &b),
            Input::Opened(remote, w) => {
                self.writers.insert(remote, w);
            }
            Input::Closed(remote) => {
                self.writers.remove(&remote);
                self.endpoint.remote_closed(remote);
            }
            Input::Answer(h, id, answer) => {
                let Some(s) = self.endpoint.session_mut(h) else { return };
                // The session may have closed meanwhile: nothing to answer.
                let _ = match answer {
                    Ok(r) => s.respond(id, r.message_type, r.body, SendOptions::default()),
                    Err(r) => s.respond_error(id, r.code, &r.reason),
                };
            }
        }
    }

    async fn flush(&mut self, out: &mut [u8]) {
        while let Some((remote, len)) = self.endpoint.poll_transmit(self.clock.now(), out) {
            match remote.kind {
                RemoteKind::Datagram => {
                    if let Some(u) = &self.udp {
                        // A failed send is a lost datagram; the core repeats.
                        let _ = u.send_to(&out[..len], remote.addr).await;
                    }
                }
                RemoteKind::Stream => {
                    let full = self.writers.get(&remote).is_some_and(|w| w.try_send(out[..len].to_vec()).is_err());
                    if full {
                        // Not reading (or gone): drop the connection.
                        self.writers.remove(&remote);
                        self.endpoint.remote_closed(remote);
                    }
                }
            }
        }
    }

    fn events(&mut self) {
        while let Some(e) = self.endpoint.poll_event() {
            match e {
                EndpointEvent::NewSession(h, remote) => {
                    self.peers.insert(h, remote.addr);
                }
                EndpointEvent::CloseRemote(remote) => {
                    self.writers.remove(&remote);
                    self.endpoint.remote_closed(remote);
                }
                EndpointEvent::Session(h, Event::Message(m)) if m.kind == MessageKind::Request => self.dispatch(h, m),
                EndpointEvent::Session(h, Event::Closed(_)) => {
                    self.peers.remove(&h);
                }
                _ => {}
            }
        }
    }

    fn dispatch(&mut self, h: SessionHandle, m: Message) {
        let id = m.id;
        let Some(handler) = self.router.routes.get(&m.message_type).cloned() else {
            if let Some(s) = self.endpoint.session_mut(h) {
                let _ = s.respond_error(id, ErrorCode::UNKNOWN_TYPE, "no handler for this message type");
            }
            return;
        };
        let addr = self.peers.get(&h).copied().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let request = Request { peer: Peer { session: h, addr }, message: m };
        let answers = self.answers.clone();
        tokio::spawn(async move {
            let answer = handler(request).await;
            let _ = answers.send(Input::Answer(h, id, answer)).await;
        });
    }
}

async fn recv_from(udp: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match udp {
        Some(u) => u.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
