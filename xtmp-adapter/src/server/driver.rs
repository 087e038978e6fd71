//! A server's shard driver: one future that owns one of the core's
//! endpoints (the server's only one, or one shard of several), its UDP
//! socket, and (shard 0) the listeners, and hands requests to handler tasks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_core::Stream;
use tracing::Instrument;
use xtmp_core::endpoint::{
    CloseRemoteReason, Endpoint, EndpointConfig, EndpointEvent, Remote, RemoteKind, SessionHandle, prefix_of,
};
use xtmp_core::handshake::PublicIdentity;
use xtmp_core::session::{
    CloseCode, ErrorCode, Event, Message, MessageId, MessageKind, SendError, SendOptions, SubscriptionId,
};
use xtmp_core::shard::Shard;

use super::budget::TokenBucket;
use super::conn::{Backlog, Conn, READ_BUF, Shared};
use super::publisher::{Out, PubShared, Publisher, PublisherClosed, SubscriptionSlot};
use super::router::{Peer, Rejection, Reply, Request, Router};
use super::{Control, ServerLimits, ServerStats};
use crate::Error;
use crate::clock::{self, Clock};
use crate::resolve::BoxFuture;
use crate::runtime::{DatagramSocket, Deadline, Listener, Runtime};
use crate::telemetry::{self, Hex};

/// Input to the driver from connection and handler tasks and other shards.
pub(crate) enum Input {
    /// A connection joined this shard: its writer, its first bytes, and
    /// the count of its reads that wait here.
    Opened(Remote, mpsc::Sender<Vec<u8>>, Vec<u8>, Arc<Backlog>),
    Bytes(Remote, Vec<u8>),
    Closed(Remote),
    /// A datagram of this shard that arrived on another shard's socket.
    Datagram(Remote, Vec<u8>),
    Answer(SessionHandle, MessageId, Result<Reply, Rejection>),
}

/// Inputs queued for the driver: a full queue makes connection readers
/// wait, which pushes back on TCP senders. Each connection also waits
/// while `conn::CONN_BACKLOG` of its own reads are queued, so one busy
/// peer holds at most that many of these entries.
pub(crate) const INPUT_QUEUE: usize = 1024;
const BUF_LEN: usize = 64 * 1024;
const BUDGET: usize = 64;
/// How long accepting pauses after a listener fails (out of file
/// descriptors, say): a failing `accept` is ready at once, and retrying it
/// at once would spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

struct SessionInfo {
    addr: SocketAddr,
    identity: Option<PublicIdentity>,
    channel_binding: [u8; xtmp_core::session::CHANNEL_BINDING_LEN],
    in_flight: usize,
    publishers: HashMap<SubscriptionId, Arc<PubShared>>,
    /// Answers the session's send queue could not take yet (it was
    /// full): they go on `Writable`, in order.
    answers: VecDeque<(MessageId, Result<Reply, Rejection>)>,
    /// `xtmp_session`: the parent of its requests' spans.
    span: tracing::Span,
    /// Its publishers' items per second.
    items: TokenBucket,
}

/// Where a graceful shutdown stands.
struct Shutdown {
    deadline: Instant,
    done: Vec<oneshot::Sender<()>>,
    /// Sessions were told to close.
    closing: bool,
}

pub(crate) struct ServerDriver {
    rt: Arc<dyn Runtime>,
    clock: Clock,
    /// The system clock, read once per turn of `poll_drive` (every
    /// deadline check and every time handed to the core in that turn uses
    /// this reading).
    tick: Instant,
    shard: Shard,
    endpoint: Endpoint,
    limits: ServerLimits,
    router: Arc<Router>,
    shared: Arc<Shared>,
    /// Every shard's input queue (to hand datagrams to their shard).
    peers: Vec<mpsc::Sender<Input>>,
    listeners: Vec<Box<dyn Listener>>,
    udp: Option<Arc<dyn DatagramSocket>>,
    /// This shard reads `udp` (where several shards share one socket,
    /// only shard 0 reads it).
    udp_reads: bool,
    /// A datagram the socket did not take yet.
    udp_unsent: Option<(SocketAddr, usize)>,
    inputs: mpsc::Receiver<Input>,
    inputs_tx: mpsc::Sender<Input>,
    notify: mpsc::UnboundedReceiver<(SessionHandle, SubscriptionId)>,
    notify_tx: mpsc::UnboundedSender<(SessionHandle, SubscriptionId)>,
    control: Option<mpsc::UnboundedReceiver<Control>>,
    writers: HashMap<Remote, (mpsc::Sender<Vec<u8>>, Arc<Backlog>)>,
    sessions: HashMap<SessionHandle, SessionInfo>,
    timer: Deadline,
    out: Vec<u8>,
    dgram: Vec<u8>,
    shutdown: Option<Shutdown>,
    requests_refused: u64,
    items_throttled: u64,
    /// Accepting resumes at this time (after a listener failed).
    accept_paused: Option<Instant>,
    /// Warnings about peers, at most a line a second per prefix.
    warnings: super::warnings::PeerWarnings,
    /// The lengths of the IPv4 and IPv6 prefixes connection slots are
    /// counted by (the endpoint's).
    prefix_lens: (u8, u8),
    /// This shard's share of the server's items per second.
    items: TokenBucket,
    /// Publishers holding items back for the items-per-second budgets,
    /// drained again at `throttled_until`.
    throttled: HashSet<(SessionHandle, SubscriptionId)>,
    throttled_until: Option<Instant>,
}

/// What one shard driver is given.
pub(crate) struct ShardSetup {
    pub(crate) shard: Shard,
    pub(crate) endpoint: Arc<EndpointConfig>,
    pub(crate) limits: ServerLimits,
    pub(crate) shared: Arc<Shared>,
    pub(crate) inputs: mpsc::Receiver<Input>,
    pub(crate) listeners: Vec<Box<dyn Listener>>,
    pub(crate) udp: Option<Arc<dyn DatagramSocket>>,
    pub(crate) udp_reads: bool,
    pub(crate) router: Arc<Router>,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
}

impl ServerDriver {
    pub(crate) fn new(rt: Arc<dyn Runtime>, setup: ShardSetup) -> Result<ServerDriver, Error> {
        let clock = Clock::new();
        let mut rng = clock::rng()?;
        let prefix_lens = (setup.endpoint.prefix_len_v4, setup.endpoint.prefix_len_v6);
        let endpoint =
            Endpoint::new(clock.now(), setup.endpoint, &mut rng).map_err(|e| Error::Config(e.to_string()))?;
        let inputs_tx = setup.shared.inputs[setup.shard.index() as usize].clone();
        let (notify_tx, notify) = mpsc::unbounded();
        let timer = Deadline::new(rt.timer());
        let out = vec![0; endpoint.max_transmit_len()];
        let shard_items = setup.limits.max_items_per_second.div_ceil(setup.shard.count().max(1));
        Ok(ServerDriver {
            rt,
            clock,
            tick: Instant::now(),
            shard: setup.shard,
            endpoint,
            limits: setup.limits,
            router: setup.router,
            peers: setup.shared.inputs.clone(),
            shared: setup.shared,
            listeners: setup.listeners,
            udp: setup.udp,
            udp_reads: setup.udp_reads,
            udp_unsent: None,
            inputs: setup.inputs,
            inputs_tx,
            notify,
            notify_tx,
            control: Some(setup.control),
            writers: HashMap::new(),
            sessions: HashMap::new(),
            timer,
            out,
            dgram: vec![0; BUF_LEN],
            shutdown: None,
            requests_refused: 0,
            items_throttled: 0,
            accept_paused: None,
            warnings: Default::default(),
            prefix_lens,
            items: TokenBucket::new(shard_items, Instant::now()),
            throttled: HashSet::new(),
            throttled_until: None,
        })
    }

    /// The core's time for this turn.
    fn now(&self) -> xtmp_core::time::Instant {
        self.clock.at(self.tick)
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..BUDGET {
            self.tick = Instant::now();
            let mut progress = self.poll_control(cx);
            progress |= self.poll_accept(cx);
            progress |= self.poll_inputs(cx);
            progress |= self.poll_udp(cx);
            progress |= self.poll_notify(cx);
            progress |= self.events();
            progress |= self.flush(cx);
            if self.shutdown_step(cx) {
                return Poll::Ready(());
            }
            progress |= self.poll_timer(cx);
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll_control(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Some(rx) = &mut self.control {
            match Pin::new(rx).poll_next(cx) {
                Poll::Ready(Some(Control::Stats(tx))) => {
                    let _ = tx.send(self.stats());
                }
                Poll::Ready(Some(Control::Shutdown(grace, done))) => self.begin_shutdown(grace, Some(done)),
                Poll::Ready(None) => {
                    // The `Server` was dropped: stop at once.
                    self.control = None;
                    self.begin_shutdown(Duration::ZERO, None);
                }
                Poll::Pending => break,
            }
            progress = true;
        }
        progress
    }

    /// This shard's counters (the server adds the shared ones).
    fn stats(&self) -> ServerStats {
        ServerStats {
            endpoint: self.endpoint.stats(),
            sessions: self.endpoint.session_count(),
            requests_refused: self.requests_refused,
            items_throttled: self.items_throttled,
            ..ServerStats::default()
        }
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> bool {
        if self.accept_paused.is_some_and(|t| self.tick < t) {
            return false;
        }
        self.accept_paused = None;
        let mut progress = false;
        'listeners: for l in &mut self.listeners {
            while let Poll::Ready(r) = l.poll_accept(cx) {
                progress = true;
                let Ok((link, addr)) = r else {
                    // Out of file descriptors, say: retry later, not now.
                    self.accept_paused = Some(self.tick + ACCEPT_PAUSE);
                    break 'listeners;
                };
                let prefix = prefix_of(addr.ip(), self.prefix_lens.0, self.prefix_lens.1);
                let (max, per_prefix) = (self.limits.max_connections, self.limits.max_connections_per_prefix);
                if !self.shared.admit(prefix, max, per_prefix) {
                    warn_peer(&mut self.warnings, self.tick, addr.ip(), "over the connection limit");
                    self.shared.connections_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let remote = Remote { addr, kind: RemoteKind::Stream };
                let conn = Conn::new(link, (remote, prefix), &self.shared, self.rt.timer(), self.limits.write_queue);
                self.rt.spawn(Box::pin(conn));
            }
        }
        progress
    }

    fn poll_inputs(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        for _ in 0..BUDGET {
            let Poll::Ready(Some(i)) = Pin::new(&mut self.inputs).poll_next(cx) else { break };
            progress = true;
            let now = self.now();
            match i {
                Input::Opened(remote, writer, first, backlog) => {
                    self.writers.insert(remote, (writer, backlog));
                    // Closed by the endpoint if it has not joined a session
                    // within the hello timeout (a silent or half-sent peer).
                    self.endpoint.stream_opened(now, remote);
                    if !first.is_empty() {
                        self.endpoint.handle_input(now, remote, &first);
                    }
                }
                Input::Bytes(remote, mut b) => {
                    if let Some((_, backlog)) = self.writers.get(&remote) {
                        backlog.taken();
                        self.endpoint.handle_input(now, remote, &b);
                    }
                    // A handed-over read buffer (truncated to what was
                    // read) goes back to the pool at its full length.
                    if b.capacity() == READ_BUF {
                        b.resize(READ_BUF, 0);
                        self.shared.pool.give(b);
                    }
                }
                Input::Datagram(remote, b) => self.endpoint.handle_input(now, remote, &b),
                Input::Closed(remote) => {
                    if self.writers.remove(&remote).is_some() {
                        self.endpoint.remote_closed(remote);
                    }
                }
                Input::Answer(h, id, answer) => {
                    // The session may have closed meanwhile: nothing to answer.
                    if let Some(info) = self.sessions.get_mut(&h) {
                        info.in_flight = info.in_flight.saturating_sub(1);
                        info.answers.push_back((id, answer));
                        self.flush_answers(h);
                    }
                }
            }
        }
        progress
    }

    /// Hands a session its queued answers while its send queue takes them.
    fn flush_answers(&mut self, h: SessionHandle) {
        let (Some(info), Some(s)) = (self.sessions.get_mut(&h), self.endpoint.session_mut(h)) else { return };
        while let Some((id, answer)) = info.answers.front() {
            let r = match answer {
                Ok(r) => s.respond(*id, r.message_type, r.body.clone(), SendOptions::default()),
                Err(r) => s.respond_error(*id, r.code, &r.reason),
            };
            if r == Err(SendError::WouldBlock) {
                return;
            }
            // Sent, or refused for good (the request is gone): next.
            info.answers.pop_front();
        }
    }

    fn poll_udp(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(u) = self.udp.as_ref().filter(|_| self.udp_reads) else { return false };
        let mut progress = false;
        for _ in 0..BUDGET {
            match u.poll_recv_from(cx, &mut self.dgram) {
                Poll::Ready(Ok((n, addr))) => {
                    let remote = Remote { addr, kind: RemoteKind::Datagram };
                    let datagram = &self.dgram[..n];
                    let owner = Shard::route(datagram, self.shard.count()).unwrap_or(self.shard.index());
                    if owner == self.shard.index() {
                        self.endpoint.handle_input(self.now(), remote, datagram);
                    } else {
                        // Another shard's session: hand it over (or lose it,
                        // as a datagram may be, if that shard is behind).
                        let input = Input::Datagram(remote, datagram.to_vec());
                        if self.peers[owner as usize].try_send(input).is_ok() {
                            self.shared.datagrams_forwarded.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // An ICMP error for an earlier datagram: nothing to do.
                Poll::Ready(Err(_)) => {}
                Poll::Pending => break,
            }
            progress = true;
        }
        progress
    }

    fn poll_notify(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Poll::Ready(Some((h, id))) = Pin::new(&mut self.notify).poll_next(cx) {
            progress = true;
            self.drain_publisher(h, id);
        }
        progress
    }

    /// Moves a publisher's queue into its session while the session takes it.
    fn drain_publisher(&mut self, h: SessionHandle, id: SubscriptionId) {
        let Some(info) = self.sessions.get_mut(&h) else { return };
        let Some(p) = info.publishers.get(&id).cloned() else { return };
        let Some(session) = self.endpoint.session_mut(h) else { return };
        let mut s = p.lock();
        let mut took = false;
        let mut gone = false;
        let now = self.tick;
        while let Some(out) = s.queue.front() {
            let r = match out {
                Out::Accept => session.respond(MessageId(id.0), p.message_type, Bytes::new(), SendOptions::default()),
                Out::Item { body, reliable } => {
                    // The session's and the shard's items per second.
                    if !(info.items.ready(now) && self.items.ready(now)) {
                        let at = info.items.next_at(now).max(self.items.next_at(now));
                        self.throttled.insert((h, id));
                        self.items_throttled += 1;
                        telemetry::count("xtmp_server_items_throttled_total", &[], 1);
                        self.throttled_until = Some(self.throttled_until.map_or(at, |t| t.min(at)));
                        break;
                    }
                    let options = SendOptions { reliable: *reliable, stream_data: true, ..SendOptions::default() };
                    let r = session.push(id, body.clone(), options);
                    if r.is_ok() {
                        info.items.take();
                        self.items.take();
                    }
                    r
                }
                Out::Refuse(code, reason) => {
                    gone = true;
                    session.respond_error(MessageId(id.0), *code, reason)
                }
                Out::End(code, reason) => {
                    gone = true;
                    session.end_subscription(id, *code, reason)
                }
            };
            match r {
                // The session's queue is full (`Writable` follows), or the
                // subscriber's window (`SubscriptionWritable` follows).
                Err(SendError::WouldBlock | SendError::SubscriptionFull(_)) => break,
                Err(SendError::TooLarge { .. } | SendError::InvalidType(_)) => {
                    // The handler's own mistake: this item cannot go.
                    s.queue.pop_front();
                }
                Err(_) => {
                    // The subscriber left or the session closes.
                    s.queue.clear();
                    gone = true;
                    break;
                }
                Ok(_) => {
                    s.queue.pop_front();
                }
            }
            took = true;
        }
        p.drained(s, took);
        if gone {
            p.close(PublisherClosed::Ended);
            if let Some(info) = self.sessions.get_mut(&h) {
                info.publishers.remove(&id);
            }
        }
    }

    fn flush(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        loop {
            if let Some((addr, len)) = self.udp_unsent {
                let Some(u) = &self.udp else { return progress };
                match u.poll_send_to(cx, &self.out[..len], addr) {
                    Poll::Pending => return progress,
                    // A failed send is a lost datagram; the core repeats.
                    Poll::Ready(_) => self.udp_unsent = None,
                }
            }
            let (remote, len) = match self.endpoint.poll_transmit(self.now(), &mut self.out) {
                Ok(Some(t)) => t,
                Ok(None) => return progress,
                // `out` is `max_transmit_len` long, so this is not expected;
                // growing it keeps the session from stalling if it happens.
                Err(e) => {
                    self.out.resize(e.needed, 0);
                    continue;
                }
            };
            progress = true;
            match remote.kind {
                RemoteKind::Datagram => self.udp_unsent = Some((remote.addr, len)),
                RemoteKind::Stream => {
                    let full = self
                        .writers
                        .get_mut(&remote)
                        .is_some_and(|(w, _)| w.try_send(self.out[..len].to_vec()).is_err());
                    if full {
                        // Not reading (or gone): drop the connection.
                        self.shared.connections_dropped.fetch_add(1, Ordering::Relaxed);
                        self.writers.remove(&remote);
                        self.endpoint.remote_closed(remote);
                    }
                }
            }
        }
    }

    fn warn_peer(&mut self, ip: std::net::IpAddr, reason: &'static str) {
        warn_peer(&mut self.warnings, self.tick, ip, reason);
    }

    fn events(&mut self) -> bool {
        let mut progress = false;
        while let Some(e) = self.endpoint.poll_event() {
            progress = true;
            match e {
                EndpointEvent::NewSession(h, remote) => {
                    let span = tracing::info_span!(
                        "xtmp_session",
                        session = %Hex(h.0),
                        peer = %remote.addr,
                        identity = tracing::field::Empty,
                    );
                    tracing::debug!(parent: &span, kind = ?remote.kind, "handshake started");
                    let info = SessionInfo {
                        addr: remote.addr,
                        identity: None,
                        channel_binding: [0; xtmp_core::session::CHANNEL_BINDING_LEN],
                        in_flight: 0,
                        publishers: HashMap::new(),
                        answers: VecDeque::new(),
                        span,
                        items: TokenBucket::new(self.limits.max_session_items_per_second, self.tick),
                    };
                    self.sessions.insert(h, info);
                    telemetry::gauge("xtmp_server_sessions", self.sessions.len() as f64);
                }
                EndpointEvent::CloseRemote(remote, why) => {
                    if remote.kind == RemoteKind::Stream && why != CloseRemoteReason::SessionClosed {
                        self.warn_peer(remote.addr.ip(), why.name());
                    }
                    self.writers.remove(&remote);
                    self.endpoint.remote_closed(remote);
                }
                EndpointEvent::Session(h, Event::Connected { peer, cipher }) => {
                    if let Some(i) = self.sessions.get_mut(&h) {
                        if let Some(p) = &peer {
                            i.span.record("identity", tracing::field::display(p.key_id()));
                        }
                        tracing::info!(parent: &i.span, ?cipher, "session established");
                        telemetry::count("xtmp_server_sessions_total", &[], 1);
                        i.identity = peer;
                        if let Some(b) = self.endpoint.session_mut(h).and_then(|s| s.channel_binding().ok()) {
                            i.channel_binding = b;
                        }
                    }
                }
                EndpointEvent::Session(h, Event::Message(m)) => self.on_message(h, m),
                EndpointEvent::Session(h, Event::SubscriptionWritable(id)) => self.drain_publisher(h, id),
                EndpointEvent::Session(h, Event::Writable) => {
                    self.flush_answers(h);
                    let ids: Vec<SubscriptionId> =
                        self.sessions.get(&h).map(|i| i.publishers.keys().copied().collect()).unwrap_or_default();
                    for id in ids {
                        self.drain_publisher(h, id);
                    }
                }
                EndpointEvent::Session(h, Event::Closed(reason)) => {
                    if let Some(info) = self.sessions.remove(&h) {
                        let (class, blame) = telemetry::close_class(&reason);
                        if blame {
                            tracing::warn!(parent: &info.span, %reason, "session closed");
                        } else {
                            tracing::info!(parent: &info.span, %reason, "session closed");
                        }
                        telemetry::count("xtmp_server_sessions_closed_total", &[("reason", class)], 1);
                        telemetry::gauge("xtmp_server_sessions", self.sessions.len() as f64);
                        for p in info.publishers.values() {
                            p.close(PublisherClosed::SessionClosed);
                        }
                    }
                }
                EndpointEvent::Session(h, Event::KeyUpdated { sending, generation }) => {
                    if let Some(i) = self.sessions.get(&h) {
                        tracing::debug!(parent: &i.span, sending, generation, "key updated");
                    }
                }
                _ => {}
            }
        }
        progress
    }

    fn on_message(&mut self, h: SessionHandle, m: Message) {
        let Some(info) = self.sessions.get_mut(&h) else { return };
        let peer = Peer {
            session: h,
            addr: info.addr,
            identity: info.identity.clone(),
            channel_binding: info.channel_binding,
        };
        match m.kind {
            MessageKind::Request | MessageKind::Message => {
                let request = m.kind == MessageKind::Request;
                let span = tracing::debug_span!(
                    parent: &info.span,
                    "xtmp_request",
                    message_type = %m.message_type,
                    request_id = m.id.0,
                );
                let Some(handler) = self.router.routes.get(&m.message_type).cloned() else {
                    tracing::debug!(parent: &span, "refused: no handler for this message type");
                    telemetry::count("xtmp_server_requests_refused_total", &[("reason", "unknown_type")], 1);
                    if request {
                        self.refuse(h, m.id, ErrorCode::UNKNOWN_TYPE, "no handler for this message type");
                    }
                    return;
                };
                if request && info.in_flight >= self.limits.max_in_flight {
                    tracing::debug!(parent: &span, limit = self.limits.max_in_flight, "refused: too many in flight");
                    telemetry::count("xtmp_server_requests_refused_total", &[("reason", "in_flight")], 1);
                    self.requests_refused += 1;
                    return self.refuse(h, m.id, ErrorCode::REFUSED, "too many requests in flight");
                }
                telemetry::count("xtmp_server_requests_total", &[], 1);
                let id = m.id;
                let mut answers = self.inputs_tx.clone();
                if request {
                    info.in_flight += 1;
                }
                let mut task = Guarded(handler(Request { peer, message: m }));
                // First poll here: a handler that answers at once costs no
                // task and no wake-up. One that waits moves to its own task,
                // whose first poll registers that task's waker.
                let noop = &mut Context::from_waker(std::task::Waker::noop());
                let first = span.in_scope(|| Pin::new(&mut task).poll(noop));
                if let Poll::Ready(answer) = first {
                    span.in_scope(|| log_answer(&answer));
                    if request {
                        info.in_flight -= 1;
                        info.answers.push_back((id, answer));
                        self.flush_answers(h);
                    }
                    return;
                }
                let task = async move {
                    let answer = task.await;
                    log_answer(&answer);
                    if request {
                        let _ = send_input(&mut answers, Input::Answer(h, id, answer)).await;
                    }
                };
                self.rt.spawn(Box::pin(task.instrument(span)));
            }
            MessageKind::Subscribe => {
                let Some(handler) = self.router.streams.get(&m.message_type).cloned() else {
                    return self.refuse(h, m.id, ErrorCode::UNKNOWN_TYPE, "no publisher for this message type");
                };
                if self.shutdown.is_some() {
                    telemetry::count("xtmp_server_requests_refused_total", &[("reason", "shutdown")], 1);
                    return self.refuse(h, m.id, ErrorCode::REFUSED, "server shutting down");
                }
                let Some(slot) = SubscriptionSlot::take(&self.shared.subscriptions, self.limits.max_subscriptions)
                else {
                    telemetry::count("xtmp_server_requests_refused_total", &[("reason", "subscriptions")], 1);
                    return self.refuse(h, m.id, ErrorCode::REFUSED, "the server's subscription budget is spent");
                };
                let id = SubscriptionId(m.id.0);
                let shared = PubShared::new(m.message_type, self.limits.publisher_depth, slot);
                info.publishers.insert(id, shared.clone());
                let publisher = Publisher { shared, notify: self.notify_tx.clone(), session: h, id };
                let span = tracing::debug_span!(
                    parent: &info.span,
                    "xtmp_subscription",
                    message_type = %m.message_type,
                    subscription = id.0,
                );
                let task = Guarded(handler(Request { peer, message: m }, publisher.clone()));
                let task = async move {
                    let result = task.await;
                    tracing::debug!(ok = result.is_ok(), "publisher finished");
                    publisher.finish(result);
                };
                self.rt.spawn(Box::pin(task.instrument(span)));
            }
            MessageKind::Unsubscribe(id) => {
                if let Some(p) = info.publishers.remove(&id) {
                    p.close(PublisherClosed::Unsubscribed);
                }
            }
            _ => {}
        }
    }

    fn refuse(&mut self, h: SessionHandle, id: MessageId, code: ErrorCode, reason: &str) {
        if let Some(info) = self.sessions.get_mut(&h) {
            info.answers.push_back((id, Err(Rejection { code, reason: reason.to_string() })));
            self.flush_answers(h);
        }
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let core = self.endpoint.poll_timeout().map(|t| self.clock.deadline(t));
        let deadline = [core, self.shutdown.as_ref().map(|s| s.deadline), self.accept_paused, self.throttled_until]
            .into_iter()
            .flatten()
            .min();
        let Some(deadline) = deadline else { return false };
        if self.timer.poll(cx, deadline, self.tick).is_pending() {
            return false;
        }
        if self.throttled_until.is_some_and(|t| t <= self.tick) {
            self.throttled_until = None;
            for (h, id) in std::mem::take(&mut self.throttled) {
                self.drain_publisher(h, id);
            }
        }
        self.endpoint.handle_timeout(self.now());
        for line in self.warnings.flush(self.tick) {
            log_line(&line);
        }
        true
    }

    fn begin_shutdown(&mut self, grace: Duration, done: Option<oneshot::Sender<()>>) {
        let deadline = self.tick + grace;
        if self.shutdown.is_none() {
            tracing::info!(sessions = self.sessions.len(), grace_ms = grace.as_millis() as u64, "shutting down");
        }
        let s = self.shutdown.get_or_insert_with(|| Shutdown { deadline, done: Vec::new(), closing: false });
        s.deadline = s.deadline.min(deadline);
        s.done.extend(done);
        self.endpoint.stop_accepting();
        self.listeners.clear();
        // Every subscription ends now; the publishers stop.
        let subs: Vec<(SessionHandle, SubscriptionId, Arc<PubShared>)> =
            self.sessions.iter_mut().flat_map(|(h, i)| i.publishers.drain().map(move |(id, p)| (*h, id, p))).collect();
        for (h, id, p) in subs {
            p.close(PublisherClosed::Shutdown);
            if let Some(s) = self.endpoint.session_mut(h) {
                let _ = s.end_subscription(id, ErrorCode(0), "server shutting down");
            }
        }
    }

    /// Moves a shutdown on; `true` once the driver is done.
    fn shutdown_step(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(s) = &mut self.shutdown else { return false };
        let now = self.tick;
        let late = now >= s.deadline;
        let handling = self.sessions.values().any(|i| i.in_flight > 0);
        if !s.closing && (!handling || late) {
            s.closing = true;
            let handles: Vec<SessionHandle> = self.endpoint.sessions().collect();
            let t = self.now();
            for h in handles {
                if let Some(session) = self.endpoint.session_mut(h) {
                    if late {
                        session.abort(t, CloseCode::NO_ERROR, "server shutting down");
                    } else {
                        session.close(t, CloseCode::NO_ERROR, "server shutting down");
                    }
                }
            }
            return false;
        }
        let done = if s.closing && late {
            // Out of time: abort what is left, send the Disconnects, stop.
            let handles: Vec<SessionHandle> = self.endpoint.sessions().collect();
            let t = self.now();
            for h in handles {
                if let Some(session) = self.endpoint.session_mut(h) {
                    session.abort(t, CloseCode::NO_ERROR, "server shutting down");
                }
            }
            self.flush(cx);
            true
        } else {
            // Done once every session has ended and what they said went out.
            s.closing && self.endpoint.session_count() == 0 && self.udp_unsent.is_none()
        };
        if done && let Some(s) = &mut self.shutdown {
            for d in s.done.drain(..) {
                let _ = d.send(());
            }
            self.writers.clear();
        }
        done
    }
}

impl Future for ServerDriver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().poll_drive(cx)
    }
}

/// Sends one input, waiting for room.
async fn send_input(tx: &mut mpsc::Sender<Input>, input: Input) -> Result<(), mpsc::SendError> {
    std::future::poll_fn(|cx| tx.poll_ready(cx)).await?;
    tx.start_send(input)
}

fn log_answer(answer: &Result<Reply, Rejection>) {
    match answer {
        Ok(r) => tracing::debug!(answer = %r.message_type, len = r.body.len(), "handled"),
        Err(r) => tracing::debug!(code = r.code.0, reason = %r.reason, "rejected"),
    }
}

/// A handler's future, with a panic turned into an `INTERNAL` rejection: a
/// handler that panics fails its own request (or subscription), and the
/// driver, which polls a handler first, keeps serving every session.
struct Guarded<T>(BoxFuture<'static, Result<T, Rejection>>);

impl<T> Future for Guarded<T> {
    type Output = Result<T, Rejection>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The future is not polled again after it panicked: this returns
        // `Ready`, so nothing observes the state the panic left.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(_) => {
                tracing::warn!("a handler panicked; its request is answered with an internal error");
                Poll::Ready(Err(Rejection { code: ErrorCode::INTERNAL, reason: String::from("the handler panicked") }))
            }
        }
    }
}

/// A connection from `ip` closed for `reason`: counted (per reason) and
/// logged at most once a second per address prefix.
fn warn_peer(w: &mut super::warnings::PeerWarnings, now: Instant, ip: std::net::IpAddr, reason: &'static str) {
    telemetry::count("xtmp_server_connections_dropped_total", &[("reason", reason)], 1);
    for line in w.note(now, ip, reason) {
        log_line(&line);
    }
}

fn log_line(line: &super::warnings::Line) {
    use super::warnings::Line;
    match line {
        Line::First { ip, reason } => tracing::warn!(peer = %ip, reason, "connection dropped"),
        Line::Summary { prefix, count, reasons } => {
            tracing::warn!(%prefix, count, %reasons, "connections dropped in the last second")
        }
    }
}
