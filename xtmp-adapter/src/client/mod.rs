//! The client, written once for every runtime: a [`Client`] handle and
//! the driver task that owns the core's session, its sockets and its
//! reconnections.

mod driver;
mod state;
mod subscription;
mod task_cell;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_lock::Semaphore;
use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use tracing::Instrument;
use xtmp_core::crypto::RustCrypto;
use xtmp_core::handshake::{ClientConfig, Fingerprints, Pinned, PublicIdentity};
use xtmp_core::session::{CloseCode, CloseReason, Message, PathKind, SendOptions, SessionConfig};
use xtmp_core::wire::MessageType;

use crate::resolve::BoxFuture;
use crate::runtime::{Link, Runtime};
use crate::telemetry;
use crate::websocket;
use crate::{Backoff, Connector, Endpoint, Error, Resolver, Transport, Trust};

pub use state::{ClientStats, ConnectionState};
pub use subscription::{Subscription, SubscriptionEnd};

use driver::{Driver, DriverRef};
use state::Shared;
use subscription::SubEvent;

/// How a client connects and behaves: the core's configurations and the
/// adapter's own settings, with documented defaults.
#[derive(Clone, Debug)]
pub struct ClientSetup {
    /// The session's settings (timeouts, limits, key rotation). The
    /// client sets `explicit_item_release` itself: a subscription's
    /// items count as read when its stream yields them.
    pub session: Arc<SessionConfig>,
    /// How the client handshakes. With [`ClientSetup::trust`] set, its
    /// verifier is replaced by the one the trust policy picks for each
    /// endpoint.
    pub client: Arc<ClientConfig>,
    /// How endpoints' servers are trusted; `None`: by `client`'s own
    /// verifier (a root of trust, say).
    pub trust: Option<Trust>,
    /// The registry file that maps names to addresses and pins identities
    /// (required by [`Trust::FirstUse`], which records into it).
    pub registry: Option<PathBuf>,
    /// Looks up host names; `None` (the default): the runtime's resolver.
    pub resolver: Option<Arc<dyn Resolver>>,
    /// How long [`Client::request`] waits for an answer (default 30 s),
    /// counting any wait for a reconnection; then it fails with
    /// [`Error::Timeout`], and an answer that comes later is dropped.
    pub request_timeout: Duration,
    /// Requests and acknowledged sends waiting for their answer at once;
    /// more wait for a slot. Default 256: the server's default
    /// [`ServerLimits::max_in_flight`](crate::ServerLimits::max_in_flight),
    /// so that a client with the defaults is never refused for load by a
    /// server with the defaults.
    pub max_in_flight: usize,
    /// How a lost connection is re-established; `None`: it is not, and
    /// the client closes with the session.
    pub reconnect: Option<Backoff>,
    /// How long [`Client::close`] lets queued messages go out before it
    /// aborts (default 5 s).
    pub close_grace: Duration,
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
            resolver: None,
            request_timeout: Duration::from_secs(30),
            max_in_flight: 256,
            reconnect: Some(Backoff::default()),
            close_grace: Duration::from_secs(5),
        }
    }
}

/// What a handle asks of the driver.
pub(crate) enum Command {
    Send {
        message_type: MessageType,
        body: Bytes,
        options: SendOptions,
        reply: Reply,
        /// When a request fails with [`Error::Timeout`] if unanswered.
        deadline: Option<Instant>,
        /// The request's span (`Span::none()` for other sends): the
        /// driver records the session and the message id into it.
        span: tracing::Span,
    },
    Subscribe {
        message_type: MessageType,
        filter: SubscriptionFilter,
        /// What the new [`Subscription`] sends its reads and its leaving on
        /// (the driver holds no sender itself: when every handle is gone,
        /// the channel ends and the session closes).
        commands: mpsc::UnboundedSender<Command>,
        reply: oneshot::Sender<Result<Subscription, Error>>,
    },
    Unsubscribe(u64),
    ItemRead {
        key: u64,
        /// It counts against the subscription's window: reading it
        /// releases its credit.
        credited: bool,
        /// The item's body length.
        len: usize,
    },
    Close {
        grace: Duration,
    },
    Abort,
    /// Start a hybrid re-key now.
    Rekey(oneshot::Sender<bool>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Send { .. } => "Send",
            Command::Subscribe { .. } => "Subscribe",
            Command::Unsubscribe(_) => "Unsubscribe",
            Command::ItemRead { .. } => "ItemRead",
            Command::Close { .. } => "Close",
            Command::Abort => "Abort",
            Command::Rekey(_) => "Rekey",
        })
    }
}

/// A subscription's filter: the same body on every (re)opening, or one
/// made anew each time (see [`Client::subscribe_renewing`]).
#[derive(Clone)]
pub(crate) enum SubscriptionFilter {
    Fixed(Bytes),
    Renewed(Arc<dyn Fn() -> Bytes + Send + Sync>),
}

impl SubscriptionFilter {
    pub(crate) fn body(&self) -> Bytes {
        match self {
            SubscriptionFilter::Fixed(b) => b.clone(),
            SubscriptionFilter::Renewed(f) => f(),
        }
    }
}

/// What a sender waits for.
pub(crate) enum Reply {
    /// The response (a request).
    Response(oneshot::Sender<Result<Message, Error>>),
    /// The acknowledgement (an acknowledged send).
    Acked(oneshot::Sender<Result<(), Error>>),
    /// Nothing (fire and forget).
    None,
}

impl Reply {
    pub(crate) fn fail(self, e: Error) {
        match self {
            Reply::Response(tx) => drop(tx.send(Err(e))),
            Reply::Acked(tx) => drop(tx.send(Err(e))),
            Reply::None => {}
        }
    }
}

/// A connected XTMP client: one multiplexed session, cheap to clone, usable
/// from any task of any runtime.
///
/// A driver task owns the session: it feeds it the sockets' bytes and the
/// timers, writes out what it produces, and hands each answer to the call
/// that waits for it. A send finds the session free most of the time and
/// then goes out in the caller's own task (sealed and written at once,
/// with no hand-over to the driver task); it waits for the driver task
/// only while the driver is busy, the connection is down or earlier
/// commands are still queued, so messages from one task keep their order. When the connection breaks it reconnects as
/// [`ClientSetup::reconnect`] says (see [`ConnectionState`]): a new
/// transport connection for the same session while the server still holds
/// it, so every unacknowledged message is repeated by the session and none
/// is delivered twice; a new handshake otherwise, after which the messages
/// the old session had not delivered are sent again and subscriptions are
/// renewed.
///
/// The session closes gracefully when every clone and every
/// [`Subscription`] is dropped.
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    driver: DriverRef,
    shared: Arc<Shared>,
    in_flight: Arc<Semaphore>,
    request_timeout: Duration,
    close_grace: Duration,
}

/// Where a client's driver dials, and how.
#[derive(Clone, Debug)]
pub(crate) struct Dial {
    pub(crate) addr: SocketAddr,
    pub(crate) kind: PathKind,
    pub(crate) transport: Transport,
    /// The request URI, on a WebSocket endpoint.
    websocket: Option<Arc<str>>,
    /// Hybrid: once connected over TCP, a UDP path to the same address
    /// joins the session.
    pub(crate) hybrid: bool,
}

impl Dial {
    fn new(endpoint: &Endpoint, addr: SocketAddr) -> Result<Dial, Error> {
        let (kind, websocket) = match endpoint.transport {
            Transport::Tcp | Transport::Hybrid => (PathKind::Stream, None),
            Transport::Udp => (PathKind::Datagram, None),
            Transport::WebSocket => {
                (PathKind::Stream, Some(websocket::uri(&endpoint.host, addr.port(), &endpoint.path).into()))
            }
        };
        let transport = endpoint.transport;
        Ok(Dial { addr, kind, transport, websocket, hybrid: transport == Transport::Hybrid })
    }

    /// Opens a link: a socket, upgraded to WebSocket on such endpoints.
    pub(crate) fn open(&self, rt: &Arc<dyn Runtime>) -> BoxFuture<'static, io::Result<Box<dyn Link>>> {
        let socket = rt.dial(self.addr, self.kind);
        match self.websocket.clone() {
            None => socket,
            Some(uri) => {
                let rt = rt.clone();
                Box::pin(async move { websocket::connect(rt.as_ref(), socket.await?, &uri).await })
            }
        }
    }
}

impl Client {
    /// Connects to `endpoint` on `rt`: the registry (if the setup names
    /// one) maps its name and pins its key, host names are resolved, the
    /// setup's [`Trust`] picks the server verifier, and the addresses are
    /// tried in order until a handshake completes (the next one after a
    /// socket error or a handshake timeout). On trust on first use, the
    /// server's identity is then recorded into the registry file.
    pub async fn connect_to(rt: Arc<dyn Runtime>, endpoint: &Endpoint, setup: ClientSetup) -> Result<Client, Error> {
        let connector = Connector {
            trust: setup.trust.clone(),
            registry: setup.registry.clone(),
            resolver: setup.resolver.clone().unwrap_or_else(|| rt.resolver()),
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
            match Client::start(rt.clone(), Dial::new(endpoint, addr)?, setup.clone()).await {
                Ok((client, peer)) => {
                    if let Some(peer) = &peer {
                        prepared.connected(peer).map_err(crate::ConnectError::from)?;
                    }
                    return Ok(client);
                }
                Err(e @ (Error::Io(_) | Error::Closed(CloseReason::HandshakeTimeout))) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::Closed(CloseReason::PathsLost)))
    }

    /// Connects to `addr` over `transport` on `rt` and completes the
    /// handshake, trusting the server by the setup's client configuration.
    pub async fn connect(
        rt: Arc<dyn Runtime>,
        addr: SocketAddr,
        transport: Transport,
        setup: ClientSetup,
    ) -> Result<Client, Error> {
        let dial = Dial::new(&Endpoint::from_addr(transport, addr), addr)?;
        Client::start(rt, dial, setup).await.map(|(c, _)| c)
    }

    async fn start(
        rt: Arc<dyn Runtime>,
        dial: Dial,
        setup: ClientSetup,
    ) -> Result<(Client, Option<PublicIdentity>), Error> {
        let span = tracing::info_span!(
            "xtmp_client",
            remote = %dial.addr,
            transport = dial.transport.scheme(),
            session = tracing::field::Empty,
            server_session = tracing::field::Empty,
        );
        if !setup.client.verifier.authenticates_server() {
            tracing::warn!(
                parent: &span,
                "the server's identity is not verified (handshake::danger): anyone on the path can impersonate it"
            );
        }
        let link = dial.open(&rt).instrument(span.clone()).await?;
        let (commands, rx) = mpsc::unbounded();
        let (ready_tx, ready_rx) = oneshot::channel();
        let shared = Arc::new(Shared::new());
        let driver = Driver::new(rt.clone(), &setup, dial, link, rx, shared.clone(), ready_tx, span.clone())?;
        let driver = DriverRef::new(driver);
        rt.spawn(Box::pin(driver.task().instrument(span)));
        let client = Client {
            commands,
            driver,
            shared,
            in_flight: Arc::new(Semaphore::new(setup.max_in_flight.max(1))),
            request_timeout: setup.request_timeout,
            close_grace: setup.close_grace,
        };
        match ready_rx.await {
            Ok(Ok(peer)) => Ok((client, peer)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Closed(CloseReason::PathsLost)),
        }
    }

    /// Sends a request and waits for its response (at most the setup's
    /// request timeout). An Error (`FE`) response is [`Error::Remote`].
    pub async fn request(&self, message_type: MessageType, body: Bytes) -> Result<Message, Error> {
        self.request_with(message_type, body, SendOptions::default()).await
    }

    /// [`Client::request`] with explicit options (priority, compression,
    /// delivery deadline).
    pub async fn request_with(
        &self,
        message_type: MessageType,
        body: Bytes,
        options: SendOptions,
    ) -> Result<Message, Error> {
        self.request_within(message_type, body, options, self.request_timeout).await
    }

    /// [`Client::request_with`] waiting at most `timeout` for the answer
    /// (instead of the setup's request timeout), counting any wait for a
    /// reconnection; then it fails with [`Error::Timeout`].
    pub async fn request_within(
        &self,
        message_type: MessageType,
        body: Bytes,
        options: SendOptions,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let span = tracing::debug_span!(
            "xtmp_request",
            message_type = %message_type,
            session = tracing::field::Empty,
            request_id = tracing::field::Empty,
        );
        let _slot = self.in_flight.acquire().await;
        let (tx, rx) = oneshot::channel();
        let options = SendOptions { request: true, reliable: true, ..options };
        let started = Instant::now();
        // The driver fails the request with `Error::Timeout` at its
        // deadline (one timer for every request, not one each).
        let deadline = Some(started + timeout);
        let reply = Reply::Response(tx);
        self.command(Command::Send { message_type, body, options, reply, deadline, span: span.clone() })?;
        let result = rx.await.unwrap_or_else(|_| Err(self.gone()));
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(_) => {
                telemetry::sample("xtmp_client_request_seconds", elapsed.as_secs_f64());
                "ok"
            }
            Err(Error::Timeout) => "timeout",
            Err(_) => "error",
        };
        telemetry::count("xtmp_client_requests_total", &[("outcome", outcome)], 1);
        match &result {
            Ok(m) => {
                tracing::debug!(parent: &span, rtt_us = elapsed.as_micros() as u64, len = m.body.len(), "answered")
            }
            Err(e) => tracing::debug!(parent: &span, rtt_us = elapsed.as_micros() as u64, error = %e, "failed"),
        }
        result
    }

    /// Sends a reliable message and waits until the server acknowledged it
    /// (it holds the message and delivers it exactly once).
    pub async fn send(&self, message_type: MessageType, body: Bytes) -> Result<(), Error> {
        let _slot = self.in_flight.acquire().await;
        let (tx, rx) = oneshot::channel();
        let options = SendOptions::default();
        self.command(Command::Send {
            message_type,
            body,
            options,
            reply: Reply::Acked(tx),
            deadline: None,
            span: tracing::Span::none(),
        })?;
        rx.await.unwrap_or_else(|_| Err(self.gone()))
    }

    /// Queues a message without waiting: reliable (repeated until
    /// acknowledged, across reconnections) unless `options` say otherwise.
    /// Its fate shows only in [`Client::stats`].
    pub fn post(&self, message_type: MessageType, body: Bytes, options: SendOptions) -> Result<(), Error> {
        let options = SendOptions { request: false, ..options };
        let span = tracing::Span::none();
        self.command(Command::Send { message_type, body, options, reply: Reply::None, deadline: None, span })
    }

    /// Subscribes to the server's stream of `message_type` items with
    /// `filter`; resolves once the server accepted (or refused, as
    /// [`Error::Remote`]).
    pub async fn subscribe(&self, message_type: MessageType, filter: Bytes) -> Result<Subscription, Error> {
        self.open(message_type, SubscriptionFilter::Fixed(filter)).await
    }

    /// [`Client::subscribe`] with a filter made by `filter` each time the
    /// subscription is opened: at first, and again on each new session
    /// after a reconnection. A subscriber whose items carry a cursor
    /// (a sequence number) makes the renewed filter ask for what comes
    /// after the last item it read, so it resumes where it stopped rather
    /// than where it first started.
    pub async fn subscribe_renewing(
        &self,
        message_type: MessageType,
        filter: impl Fn() -> Bytes + Send + Sync + 'static,
    ) -> Result<Subscription, Error> {
        self.open(message_type, SubscriptionFilter::Renewed(Arc::new(filter))).await
    }

    async fn open(&self, message_type: MessageType, filter: SubscriptionFilter) -> Result<Subscription, Error> {
        let (tx, rx) = oneshot::channel();
        let commands = self.commands.clone();
        self.command(Command::Subscribe { message_type, filter, commands, reply: tx })?;
        rx.await.unwrap_or_else(|_| Err(self.gone()))
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnectionState {
        self.shared.state()
    }

    /// Waits for the next change of [`Client::state`] and returns the new
    /// state.
    pub async fn state_changed(&self) -> ConnectionState {
        let seen = self.shared.version();
        self.shared.changed(seen).await.0
    }

    /// Starts a hybrid re-key now (a fresh X25519 + ML-KEM-1024 exchange
    /// inside the session, mixed into both directions' keys) rather than
    /// at the session's `rekey_interval`. Returns whether one started: not
    /// while the client is not connected or a re-key is already under way.
    /// Its completion shows in [`ClientStats`] (`session.rekeys`).
    pub async fn rekey(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Rekey(tx)).is_ok() && rx.await.unwrap_or(false)
    }

    /// The current session's channel binding (SPEC.md 2.4.1, RFC 9266):
    /// what the server sees as [`Peer::channel_binding`](crate::Peer) for
    /// this session. A statement the client signs over it is good in this
    /// session only; after a reconnection that needed a new session it
    /// changes. `None` before the first session is established.
    pub fn channel_binding(&self) -> Option<[u8; xtmp_core::session::CHANNEL_BINDING_LEN]> {
        self.shared.channel_binding()
    }

    /// The latest counters.
    pub fn stats(&self) -> ClientStats {
        self.shared.stats()
    }

    /// Waits until the client has stopped, and says why.
    pub async fn closed(&self) -> CloseReason {
        let mut seen = u64::MAX;
        loop {
            let (state, version) = self.shared.changed(seen).await;
            if let ConnectionState::Closed(r) = state {
                return r;
            }
            seen = version;
        }
    }

    /// Closes the session gracefully: queued messages go out first (for
    /// at most the setup's `close_grace`, then the session is aborted), the
    /// server is told, and this resolves once that is done. (The session
    /// then drains in the background for the session's `drain_period`,
    /// ignoring stray frames; nothing waits for that.)
    pub async fn close(&self) -> CloseReason {
        let _ = self.command(Command::Close { grace: self.close_grace });
        self.closed().await
    }

    /// Ends the session at once: queued messages are discarded and the
    /// server is told. Waiting calls fail with [`Error::Closed`].
    pub fn abort(&self) {
        let _ = self.command(Command::Abort);
    }

    /// Hands `c` to the driver: a send goes out in this task when the
    /// driver is free and nothing waits before it; everything else is
    /// queued for the driver task (counted, so that no inline send passes
    /// it).
    fn command(&self, c: Command) -> Result<(), Error> {
        let c = match self.driver.try_lock() {
            Some(mut d) => match d.as_mut() {
                Some(d) => match d.send_inline(c) {
                    None => return Ok(()),
                    Some(c) => c,
                },
                None => return Err(self.gone()),
            },
            None => c,
        };
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        self.commands.unbounded_send(c).map_err(|_| {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            self.gone()
        })
    }

    fn gone(&self) -> Error {
        match self.shared.state() {
            ConnectionState::Closed(r) => Error::Closed(r),
            _ => {
                Error::Closed(CloseReason::Local { code: CloseCode::NO_ERROR, reason: String::from("client stopped") })
            }
        }
    }
}

pub(crate) fn subscription_channel(
    key: u64,
    commands: mpsc::UnboundedSender<Command>,
) -> (mpsc::UnboundedSender<SubEvent>, Subscription) {
    let (tx, rx) = mpsc::unbounded();
    (tx, Subscription::new(key, rx, commands))
}
