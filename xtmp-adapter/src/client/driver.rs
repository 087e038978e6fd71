//! The client's driver: a future that owns the core's session and its
//! links, runs on any runtime, and reconnects.
//!
//! Each poll feeds the session what the handles asked for, what the
//! links received and the expired timers, writes out what the session
//! produces, and hands its events to the calls and subscriptions waiting
//! for them. There is no protocol rule here: when a link breaks, the
//! session is told (`path_closed`) and given a new one (`add_path`), or,
//! once the session itself has ended, a new session is made.
//!
//! The driver lives behind a mutex ([`DriverRef`]) that its task and the
//! handles share. A handle that finds it free, with the session connected
//! and nothing queued before it, sends in its own task
//! ([`Driver::send_inline`]): the message is sealed and written at once,
//! and the driver task is woken only when something is left for it (a
//! link that did not take everything, or a timer to move earlier).

mod reconnect;
mod subscriptions;
mod timeouts;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_core::Stream;
use rand_chacha::ChaCha20Rng;
use rand_core::Rng;
use xtmp_core::handshake::{ClientConfig, PublicIdentity};
use xtmp_core::session::{
    CloseCode, CloseReason, ErrorCode, Event, FailReason, Message, MessageId, MessageKind, PathId, PathKind, SendError,
    SendOptions, Session, SessionConfig, SubscriptionId,
};
use xtmp_core::wire::MessageType;

use super::state::{ConnectionState, Shared};
use super::subscription::{SubEvent, SubscriptionEnd};
use super::task_cell::{Held, TaskCell};
use super::{ClientSetup, Command, Dial, Reply, Subscription, subscription_channel};
use crate::clock::{self, Clock};
use crate::resolve::BoxFuture;
use crate::runtime::{Deadline, Link, Runtime};
use crate::telemetry::{self, Hex};
use crate::{Backoff, Error};

/// The receive buffer's length on a datagram link (the largest UDP
/// payload), and at most on a stream link.
const BUF_LEN: usize = 64 * 1024;

/// The buffers' first length. A stream link's receive buffer doubles
/// (up to [`BUF_LEN`]) each time a read fills it, and the transmit buffer
/// grows to the first frame that does not fit: a client that only
/// exchanges small messages never touches (never faults in) 128 KiB of
/// fresh pages, which cost a connection more than its handshake's
/// hashing.
const BUF_START: usize = 4 * 1024;

/// Loop passes in one poll before the driver yields to its runtime.
const BUDGET: usize = 64;

/// A message the session holds for a caller.
struct Pending {
    message_type: MessageType,
    body: Bytes,
    options: SendOptions,
    reply: Reply,
    /// A request fails with [`Error::Timeout`] at this time.
    deadline: Option<Instant>,
    /// The server acknowledged it (a request still waits for its answer).
    acked: bool,
    /// The request's span.
    span: tracing::Span,
}

/// One of the application's subscriptions, across sessions.
struct Sub {
    message_type: MessageType,
    filter: super::SubscriptionFilter,
    sink: mpsc::UnboundedSender<SubEvent>,
    /// Until the server accepts: the caller's answer and its stream.
    opening: Option<(oneshot::Sender<Result<Subscription, Error>>, Subscription)>,
    /// Its id in the current session (`None` between sessions).
    current: Option<SubscriptionId>,
    /// Items handed over and not yet read: those that count against the
    /// subscription's window (reliable ones, and best-effort ones under a
    /// window), those of an earlier session (which the current one must
    /// not release), and uncounted best-effort ones.
    credited_unread: usize,
    stale_credited: usize,
    best_effort_unread: usize,
    /// Body bytes of the items handed over and not yet read.
    bytes_unread: usize,
}

pub(crate) struct Driver {
    rt: Arc<dyn Runtime>,
    clock: Clock,
    /// The system clock, read once per turn of `poll_drive` (every
    /// deadline check and every time handed to the core in that turn uses
    /// this reading).
    tick: Instant,
    rng: ChaCha20Rng,
    config: Arc<SessionConfig>,
    client: Arc<ClientConfig>,
    backoff: Option<Backoff>,
    close_grace: Duration,
    dial: Dial,
    session: Session,
    /// The session ended; a new one is made by the next dial.
    dead: bool,
    /// The current session saw `Connected`.
    connected: bool,
    /// The live links, by the session's path id.
    links: Vec<(PathId, Box<dyn Link>)>,
    /// A transmit not yet fully written: path, length, written.
    unsent: Option<(PathId, usize, usize)>,
    out: Vec<u8>,
    input: Vec<u8>,
    commands: Option<mpsc::UnboundedReceiver<Command>>,
    /// Commands waiting for a connected session or for room in its queue.
    deferred: VecDeque<Command>,
    /// The session answered `WouldBlock`: wait for `Writable`.
    blocked: bool,
    timer: Deadline,
    pending: HashMap<MessageId, Pending>,
    /// The deadlines of the requests in `pending`, earliest first, and
    /// some of the requests answered since (dropped as they come due, or
    /// when they outnumber the live ones).
    expiries: VecDeque<(Instant, MessageId)>,
    /// Messages the last session closed on before they were acknowledged.
    orphans: Vec<Pending>,
    resend: Vec<Pending>,
    subs: HashMap<u64, Sub>,
    by_id: HashMap<SubscriptionId, u64>,
    next_key: u64,
    shared: Arc<Shared>,
    ready: Option<oneshot::Sender<Result<Option<PublicIdentity>, Error>>>,
    dialing: Option<BoxFuture<'static, io::Result<Box<dyn Link>>>>,
    /// A hybrid client's datagram socket being opened.
    dialing_datagram: Option<BoxFuture<'static, io::Result<Box<dyn Link>>>>,
    /// A hybrid client whose datagram path failed opens another then, and
    /// how many it opened since one was validated (the reconnection
    /// policy's backoff).
    datagram_retry_at: Option<Instant>,
    datagram_attempt: u32,
    retry_at: Option<Instant>,
    attempt: u32,
    /// Busy answers in a row (SPEC.md 3.2): each doubles the wait, up to
    /// sixteen times the server's.
    busy: u32,
    /// The first connection's deadline: Busy answers are retried until
    /// then, after which `connect` fails with the last one.
    connect_deadline: Instant,
    /// The application asked to close (or dropped every handle).
    closing: bool,
    close_deadline: Option<Instant>,
    finished: bool,
    /// The driver task's waker (from its latest poll).
    waker: Option<Waker>,
    /// Answers for waiting calls, handed over once the driver is released
    /// (a caller woken by one finds the driver free for its next send).
    answers: Vec<Answer>,
    /// The last flush left a buffering link with data it could not push
    /// out yet.
    flush_pending: bool,
    /// The client's span (`xtmp_client`), whose `session` field follows
    /// the current session.
    span: tracing::Span,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rt: Arc<dyn Runtime>,
        setup: &ClientSetup,
        dial: Dial,
        link: Box<dyn Link>,
        commands: mpsc::UnboundedReceiver<Command>,
        shared: Arc<Shared>,
        ready: oneshot::Sender<Result<Option<PublicIdentity>, Error>>,
        span: tracing::Span,
    ) -> Result<Driver, Error> {
        let clock = Clock::new();
        let mut rng = clock::rng()?;
        let mut config = (*setup.session).clone();
        config.explicit_item_release = true;
        let config = Arc::new(config);
        let session = Session::connect(clock.now(), config.clone(), setup.client.clone(), dial.kind, &mut rng)
            .map_err(|e| Error::Config(e.to_string()))?;
        let timer = Deadline::new(rt.timer());
        let out = vec![0; session.max_transmit_len().min(BUF_START)];
        Ok(Driver {
            rt,
            clock,
            tick: Instant::now(),
            rng,
            config,
            client: setup.client.clone(),
            backoff: setup.reconnect,
            close_grace: setup.close_grace,
            dial,
            session,
            dead: false,
            connected: false,
            links: vec![(PathId(0), link)],
            unsent: None,
            out,
            input: vec![0; BUF_START],
            commands: Some(commands),
            deferred: VecDeque::new(),
            blocked: false,
            timer,
            pending: HashMap::new(),
            expiries: VecDeque::new(),
            orphans: Vec::new(),
            resend: Vec::new(),
            subs: HashMap::new(),
            by_id: HashMap::new(),
            next_key: 1,
            shared,
            ready: Some(ready),
            dialing: None,
            dialing_datagram: None,
            datagram_retry_at: None,
            datagram_attempt: 0,
            retry_at: None,
            attempt: 0,
            busy: 0,
            connect_deadline: Instant::now() + setup.session.handshake_timeout,
            closing: false,
            close_deadline: None,
            finished: false,
            waker: None,
            answers: Vec::new(),
            flush_pending: false,
            span,
        })
    }

    /// The core's time for this turn.
    fn now(&self) -> xtmp_core::time::Instant {
        self.clock.at(self.tick)
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..BUDGET {
            self.tick = Instant::now();
            let mut progress = self.poll_commands(cx);
            progress |= self.poll_links(cx);
            progress |= self.poll_dial(cx);
            progress |= self.flush(cx);
            progress |= self.events();
            if self.finished {
                return Poll::Ready(());
            }
            if self.closing && !self.dead && self.unsent.is_none() && self.session.is_draining() {
                // The server has been told and nothing is left to send:
                // `close()` returns now; the session drains in the
                // background until the core ends it.
                let reason = self.session.close_reason().cloned().unwrap_or_else(|| self.closing_reason());
                self.shared.set_state(ConnectionState::Closed(reason));
            }
            progress |= self.poll_timer(cx);
            if self.finished {
                return Poll::Ready(());
            }
            if !progress {
                let stats = self.session.stats();
                self.shared.update_stats(|s| s.session = stats);
                return Poll::Pending;
            }
        }
        // Busy: let the runtime run other tasks, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    // ---- input from the handles ----

    fn poll_commands(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while self.can_send() && !self.blocked {
            let Some(c) = self.deferred.pop_front() else { break };
            self.command(c);
            progress = true;
        }
        while let Some(rx) = &mut self.commands {
            match Pin::new(rx).poll_next(cx) {
                Poll::Ready(Some(c)) => {
                    if !matches!(c, Command::ItemRead { .. } | Command::Unsubscribe(_)) {
                        // A handle's command (see `Client::command`).
                        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                    }
                    if self.deferred.is_empty() || !is_send(&c) {
                        self.command(c);
                    } else {
                        self.deferred.push_back(c);
                    }
                }
                Poll::Ready(None) => {
                    // Every handle is gone.
                    self.commands = None;
                    self.close(false);
                }
                Poll::Pending => break,
            }
            progress = true;
        }
        progress
    }

    fn can_send(&self) -> bool {
        !self.dead && self.connected && !self.closing
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Send { .. } | Command::Subscribe { .. } if !self.can_send() || self.blocked => {
                if self.closing {
                    return fail_command(c, self.closing_error());
                }
                self.deferred.push_back(c);
            }
            Command::Send { message_type, body, options, reply, deadline, span } => {
                let p = Pending { message_type, body, options, reply, deadline, acked: false, span };
                self.send(p, true);
            }
            Command::Subscribe { message_type, filter, commands, reply } => {
                let key = self.next_key;
                self.next_key += 1;
                let (sink, subscription) = subscription_channel(key, commands);
                let sub = Sub {
                    message_type,
                    filter,
                    sink,
                    opening: Some((reply, subscription)),
                    current: None,
                    credited_unread: 0,
                    stale_credited: 0,
                    best_effort_unread: 0,
                    bytes_unread: 0,
                };
                self.subs.insert(key, sub);
                self.open_subscription(key);
            }
            Command::Unsubscribe(key) => {
                if let Some(sub) = self.subs.remove(&key) {
                    // Its unread items go with it.
                    let items = (sub.credited_unread + sub.stale_credited + sub.best_effort_unread) as u64;
                    self.shared.update_stats(|s| {
                        s.items_unread = s.items_unread.saturating_sub(items);
                        s.item_bytes_unread = s.item_bytes_unread.saturating_sub(sub.bytes_unread as u64);
                    });
                    if let Some(id) = sub.current {
                        self.by_id.remove(&id);
                        let _ = self.session.unsubscribe(id);
                    }
                }
            }
            Command::ItemRead { key, credited, len } => {
                let Some(sub) = self.subs.get_mut(&key) else { return };
                sub.bytes_unread = sub.bytes_unread.saturating_sub(len);
                self.shared.update_stats(|s| {
                    s.items_unread = s.items_unread.saturating_sub(1);
                    s.item_bytes_unread = s.item_bytes_unread.saturating_sub(len as u64);
                });
                if !credited {
                    sub.best_effort_unread = sub.best_effort_unread.saturating_sub(1);
                } else if sub.stale_credited > 0 {
                    sub.stale_credited -= 1;
                } else {
                    sub.credited_unread = sub.credited_unread.saturating_sub(1);
                    if let Some(id) = sub.current {
                        self.session.release_item(id);
                    }
                }
            }
            Command::Close { grace } => {
                self.close_grace = grace;
                self.close(false);
            }
            Command::Abort => self.close(true),
            Command::Rekey(tx) => {
                let started = self.can_send() && self.session.rekey_now(self.now());
                if started {
                    tracing::debug!("hybrid re-key started");
                }
                let _ = tx.send(started);
            }
        }
    }

    /// Hands a message to the session (`first`: not a repetition).
    fn send(&mut self, p: Pending, first: bool) {
        match self.session.send(p.message_type, p.body.clone(), p.options) {
            Ok(id) => {
                p.span.record("session", tracing::field::display(Hex(self.session.local_session_id())));
                p.span.record("request_id", id.0);
                if !first {
                    tracing::debug!(message_type = %p.message_type, id = id.0, "sent again in the new session");
                    self.shared.update_stats(|s| s.resent += 1);
                }
                if let Some(t) = p.deadline {
                    self.expire_at(t, id);
                }
                if p.options.reliable || !matches!(p.reply, Reply::None) {
                    self.pending.insert(id, p);
                }
            }
            Err(SendError::WouldBlock) => {
                self.blocked = true;
                let c = Command::Send {
                    message_type: p.message_type,
                    body: p.body,
                    options: p.options,
                    reply: p.reply,
                    deadline: p.deadline,
                    span: p.span,
                };
                self.deferred.push_front(c);
            }
            Err(SendError::Closed) if !self.closing && self.backoff.is_some() && self.ready.is_none() => {
                // The session is ending (the server said so, say) and the
                // driver has not seen it end yet: the next session sends it.
                self.orphans.push(p);
            }
            Err(e) => p.reply.fail(Error::Send(e)),
        }
    }

    fn close(&mut self, abort: bool) {
        if self.finished {
            return;
        }
        let reason = CloseReason::Local { code: CloseCode::NO_ERROR, reason: String::from("client closed") };
        if self.dead || (!self.connected && self.ready.is_none()) && !self.session.is_established() {
            // Nothing to tell a server: stop now.
            self.closing = true;
            return self.finish(reason);
        }
        let now = self.now();
        if abort {
            self.session.abort(now, CloseCode::NO_ERROR, "client aborted");
        } else if !self.closing {
            self.session.close(now, CloseCode::NO_ERROR, "client closed");
            self.close_deadline = Some(self.tick + self.close_grace);
        }
        self.closing = true;
        for c in std::mem::take(&mut self.deferred) {
            fail_command(c, Error::Closed(reason.clone()));
        }
    }

    fn closing_error(&self) -> Error {
        Error::Closed(self.closing_reason())
    }

    fn closing_reason(&self) -> CloseReason {
        CloseReason::Local { code: CloseCode::NO_ERROR, reason: String::from("client closed") }
    }

    // ---- the links ----

    fn poll_links(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut i = 0;
        'links: while i < self.links.len() {
            // Read a few chunks per link, then let the others and the
            // output run.
            for _ in 0..16 {
                let (path, link) = &mut self.links[i];
                let path = *path;
                let stream = link.kind() == PathKind::Stream;
                if !stream && self.input.len() < BUF_LEN {
                    // A datagram longer than the buffer would be cut.
                    self.input.resize(BUF_LEN, 0);
                }
                match link.poll_recv(cx, &mut self.input) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(0)) if stream => {
                        self.link_lost(path);
                        progress = true;
                        continue 'links;
                    }
                    Poll::Ready(Ok(n)) => {
                        let now = self.now();
                        self.session.handle_input(now, path, &self.input[..n]);
                        if n == self.input.len() && n < BUF_LEN {
                            // The stream had more: read more at once.
                            self.input.resize(2 * n, 0);
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(_)) if stream => {
                        self.link_lost(path);
                        progress = true;
                        continue 'links;
                    }
                    // A datagram socket's error (an ICMP unreachable, say)
                    // loses one datagram at most.
                    Poll::Ready(Err(_)) => progress = true,
                }
            }
            i += 1;
        }
        progress
    }

    /// Writes out what the session produces while the links take it.
    fn flush(&mut self, cx: &mut Context<'_>) -> bool {
        self.write_out(cx, false).0
    }

    /// [`Driver::flush`]; `inline` (in a handle's task): stops at a link
    /// that is busy or broken and leaves it to the driver task. Returns
    /// whether anything went, and whether it stopped so.
    fn write_out(&mut self, cx: &mut Context<'_>, inline: bool) -> (bool, bool) {
        let mut progress = false;
        loop {
            if let Some((path, len, pos)) = self.unsent {
                let Some((_, link)) = self.links.iter_mut().find(|(p, _)| *p == path) else {
                    // The path is gone: the session repeats what matters.
                    self.unsent = None;
                    continue;
                };
                let stream = link.kind() == PathKind::Stream;
                match link.poll_send(cx, &self.out[pos..len]) {
                    Poll::Pending => return (progress, true),
                    // A datagram goes whole.
                    Poll::Ready(Ok(n)) if n > 0 || !stream => {
                        let pos = if stream { pos + n } else { len };
                        self.unsent = (pos < len).then_some((path, len, pos));
                    }
                    Poll::Ready(_) if inline => return (progress, true),
                    Poll::Ready(_) => {
                        self.unsent = None;
                        if stream {
                            self.link_lost(path);
                        }
                    }
                }
                progress = true;
                continue;
            }
            if self.dead {
                return (progress, false);
            }
            match self.session.poll_transmit(self.now(), &mut self.out) {
                Ok(Some(t)) => {
                    self.unsent = Some((t.path, t.len, 0));
                    if 2 * t.len > self.out.len() && self.out.len() < self.session.max_transmit_len() {
                        // Frames were batched to fill `out`: let the next
                        // batch be longer (one write for more of them).
                        let len = (2 * self.out.len()).min(self.session.max_transmit_len());
                        self.out.resize(len, 0);
                    }
                }
                // The frame does not fit `out` (which starts short): grow
                // it; the session keeps the frame until then.
                Err(e) => self.out.resize(e.needed, 0),
                Ok(None) => {
                    // A link that buffers (WebSocket) writes out now; its
                    // errors show on the next read.
                    self.flush_pending = false;
                    for (_, link) in &mut self.links {
                        self.flush_pending |= link.poll_flush(cx).is_pending();
                    }
                    return (progress, self.flush_pending);
                }
            }
        }
    }

    // ---- time ----

    /// The driver's next deadline, and the requests' own.
    fn next_deadline(&self) -> (Option<Instant>, Option<Instant>) {
        let session = if self.dead { None } else { self.session.poll_timeout().map(|t| self.clock.deadline(t)) };
        let requests = self.next_expiry();
        let all = [session, self.retry_at, self.datagram_retry_at, self.close_deadline, requests];
        (all.into_iter().flatten().min(), requests)
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let (deadline, requests) = self.next_deadline();
        let Some(deadline) = deadline else { return false };
        if self.timer.poll(cx, deadline, self.tick).is_pending() {
            return false;
        }
        let now = self.tick;
        if !self.dead {
            self.session.handle_timeout(self.now());
        }
        if requests.is_some_and(|t| t <= now) {
            self.expire_requests(now);
        }
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            self.dialing = Some(self.dial.open(&self.rt));
        }
        if self.datagram_retry_at.is_some_and(|t| t <= now) {
            self.datagram_retry_at = None;
            self.ensure_datagram();
        }
        if self.close_deadline.is_some_and(|t| t <= now) {
            self.close_deadline = None;
            self.session.abort(self.now(), CloseCode::NO_ERROR, "close grace period over");
        }
        true
    }

    // ---- events to the application ----

    fn events(&mut self) -> bool {
        let mut progress = false;
        while !self.dead
            && let Some(e) = self.session.poll_event()
        {
            if !progress {
                // Before any answer or item reaches the application, so
                // that `stats()` read after it counts what brought it.
                let stats = self.session.stats();
                self.shared.update_stats(|s| s.session = stats);
            }
            progress = true;
            match e {
                Event::Connected { peer, .. } => self.on_connected(peer),
                Event::Message(m) => self.on_message(m),
                Event::Acked(id) => {
                    if let Some(p) = self.pending.get_mut(&id) {
                        match p.reply {
                            Reply::Response(_) => p.acked = true,
                            _ => {
                                if let Some(p) = self.pending.remove(&id)
                                    && let Reply::Acked(tx) = p.reply
                                {
                                    self.answers.push(Answer::Acked(tx));
                                }
                            }
                        }
                    }
                }
                Event::Failed(id, reason) => self.on_failed(id, reason),
                Event::Writable => self.blocked = false,
                Event::PathValidated { path, .. } if self.connected && !self.closing => {
                    self.count_paths();
                    self.shared.set_state(ConnectionState::Connected);
                    self.attempt = 0;
                    if self.links.iter().any(|(p, l)| *p == path && l.kind() == PathKind::Datagram) {
                        self.datagram_attempt = 0;
                    }
                }
                Event::PathFailed { path, .. } => {
                    tracing::info!(path = path.0, "path failed");
                    self.drop_link(path);
                    self.after_link_gone();
                }
                Event::Closed(reason) => self.on_closed(reason),
                Event::KeyUpdated { sending, generation, .. } => {
                    tracing::debug!(sending, generation, "key updated");
                }
                _ => {}
            }
        }
        progress
    }

    /// Updates [`ClientStats::paths`](super::ClientStats::paths).
    fn count_paths(&self) {
        let n = self.links.iter().filter(|(p, _)| self.session.is_path_validated(*p)).count();
        self.shared.update_stats(|s| s.paths = n);
    }

    fn on_connected(&mut self, peer: Option<PublicIdentity>) {
        let session = Hex(self.session.local_session_id());
        self.span.record("session", tracing::field::display(&session));
        if let Some(id) = self.session.peer_session_id() {
            self.span.record("server_session", tracing::field::display(Hex(id)));
        }
        let server = peer.as_ref().map(|p| tracing::field::display(p.key_id()));
        if self.ready.is_some() {
            tracing::info!(%session, server, "connected");
        } else {
            tracing::info!(%session, server, resent = self.resend.len(), "reconnected with a new session");
            telemetry::count("xtmp_client_reconnections_total", &[("how", "session")], 1);
        }
        telemetry::count("xtmp_client_sessions_total", &[], 1);
        self.count_paths();
        self.connected = true;
        self.attempt = 0;
        self.busy = 0;
        self.shared.update_stats(|s| s.sessions += 1);
        self.shared.set_channel_binding(self.session.channel_binding().ok());
        self.shared.set_state(ConnectionState::Connected);
        self.ensure_datagram();
        if let Some(r) = self.ready.take() {
            let _ = r.send(Ok(peer));
        }
        for p in std::mem::take(&mut self.resend) {
            self.send(p, false);
        }
        let keys: Vec<u64> = self.subs.iter().filter(|(_, s)| s.current.is_none()).map(|(k, _)| *k).collect();
        for key in keys {
            self.open_subscription(key);
        }
    }

    fn on_message(&mut self, m: Message) {
        match m.kind {
            MessageKind::Response(to) => {
                if let Some(&key) = self.by_id.get(&SubscriptionId(to.0)) {
                    return self.on_subscription_answer(key, m);
                }
                if let Some(p) = self.pending.remove(&to) {
                    let r = match m.error() {
                        Some((code, reason)) => Err(Error::Remote { code, reason }),
                        None => Ok(m),
                    };
                    if let Reply::Response(tx) = p.reply {
                        self.answers.push(Answer::Response(tx, r));
                    }
                }
            }
            MessageKind::Item(id) => self.on_item(id, m),
            MessageKind::End(id) => {
                if let Some(key) = self.by_id.remove(&id)
                    && let Some(sub) = self.subs.remove(&key)
                {
                    let (code, reason) = m.end_reason().unwrap_or((ErrorCode(0), String::new()));
                    let _ = sub.sink.unbounded_send(SubEvent::End(SubscriptionEnd::Ended { code, reason }));
                }
            }
            MessageKind::Request | MessageKind::Subscribe => {
                // A client serves nothing.
                let _ = self.session.respond_error(m.id, ErrorCode::UNKNOWN_TYPE, "this client serves no requests");
            }
            _ => {}
        }
    }

    fn on_failed(&mut self, id: MessageId, reason: FailReason) {
        if let Some(&key) = self.by_id.get(&SubscriptionId(id.0)) {
            // A subscribe request that never got through: renewed with the
            // next session if the session is closing, otherwise given up.
            if reason != FailReason::Closed {
                self.by_id.remove(&SubscriptionId(id.0));
                if let Some(sub) = self.subs.remove(&key) {
                    end_sub(sub, Error::NotDelivered(reason));
                }
            }
            return;
        }
        let Some(p) = self.pending.remove(&id) else { return };
        if reason == FailReason::Closed && !self.closing && self.backoff.is_some() && self.ready.is_none() {
            // Sent again by the next session, unless this one's end is final.
            self.orphans.push(p);
        } else {
            p.reply.fail(Error::NotDelivered(reason));
        }
    }

    fn on_closed(&mut self, reason: CloseReason) {
        let busy = match reason {
            CloseReason::Busy { retry_after } if !self.closing => self.busy_delay(retry_after),
            _ => None,
        };
        let retry = busy.is_some()
            || !self.closing
                && self.ready.is_none()
                && self.backoff.is_some()
                && !matches!(
                    reason,
                    CloseReason::HandshakeFailed(_) | CloseReason::Internal(_) | CloseReason::Busy { .. }
                );
        if !retry {
            return self.finish(reason);
        }
        match busy {
            Some(wait) => tracing::info!(wait_ms = wait.as_millis() as u64, "the server is busy: trying again"),
            None => tracing::info!(%reason, "session ended: reconnecting with a new one"),
        }
        self.dead = true;
        if self.connected {
            self.attempt = 0;
        } else {
            self.attempt += 1;
        }
        self.connected = false;
        self.links.clear();
        self.unsent = None;
        // Unacknowledged messages go again; a request the server took but
        // did not answer may have been carried out: it fails.
        self.resend.append(&mut self.orphans);
        for (_, p) in self.pending.drain() {
            p.reply.fail(Error::Closed(reason.clone()));
        }
        self.expiries.clear();
        self.by_id.clear();
        for sub in self.subs.values_mut() {
            sub.current = None;
            sub.stale_credited += sub.credited_unread;
            sub.credited_unread = 0;
        }
        self.shared.set_state(ConnectionState::Reconnecting { attempt: self.attempt });
        match busy {
            Some(wait) => self.retry_at = Some(self.tick + wait),
            None => self.schedule_retry(),
        }
    }

    /// How long to wait after the server answered Busy, asking for
    /// `retry_after`: a random time in `[d, 2d)` with `d = retry_after ×
    /// 2^n` for the `n`-th Busy in a row (at most 16×), so the clients one
    /// Busy turned away do not all come back together. `None` when the
    /// first connection would pass its deadline (its handshake timeout
    /// from the first dial): `connect` then fails with the Busy.
    fn busy_delay(&mut self, retry_after: Duration) -> Option<Duration> {
        let d = retry_after.max(Duration::from_millis(1)) * (1u32 << self.busy.min(4));
        let wait = d + d.mul_f64(f64::from(self.rng.next_u32()) / 4_294_967_296.0);
        if self.ready.is_some() && self.tick + wait > self.connect_deadline {
            return None;
        }
        self.busy += 1;
        Some(wait)
    }

    /// The client stops: every waiting call and subscription is told why.
    fn finish(&mut self, reason: CloseReason) {
        if self.finished {
            return;
        }
        self.finished = true;
        match telemetry::close_class(&reason) {
            (_, true) => tracing::warn!(%reason, "closed"),
            _ => tracing::info!(%reason, "closed"),
        }
        let e = || Error::Closed(reason.clone());
        if let Some(r) = self.ready.take() {
            let _ = r.send(Err(e()));
        }
        for (_, p) in self.pending.drain() {
            p.reply.fail(e());
        }
        self.expiries.clear();
        for p in self.orphans.drain(..).chain(self.resend.drain(..)) {
            p.reply.fail(e());
        }
        for c in self.deferred.drain(..) {
            fail_command(c, e());
        }
        for (_, sub) in self.subs.drain() {
            match sub.opening {
                Some((reply, _)) => drop(reply.send(Err(e()))),
                None => drop(sub.sink.unbounded_send(SubEvent::End(SubscriptionEnd::Closed(reason.clone())))),
            }
        }
        let stats = self.session.stats();
        self.shared.update_stats(|s| s.session = stats);
        self.shared.set_state(ConnectionState::Closed(reason));
    }
}

impl Driver {
    /// Sends `c` (a [`Command::Send`]) in the caller's task, if nothing
    /// stands in the way: the session is connected and takes it, no
    /// command waits before it, and the links are free. Otherwise hands
    /// `c` back, for the driver task.
    pub(crate) fn send_inline(&mut self, c: Command) -> Option<Command> {
        let free = self.unsent.is_none() && !self.flush_pending && self.deferred.is_empty();
        let queued = self.shared.queued.load(Ordering::Acquire) > 0;
        if !is_send(&c) || !self.can_send() || self.blocked || !free || queued || self.waker.is_none() {
            return Some(c);
        }
        self.tick = Instant::now();
        self.command(c);
        let (_, stopped) = self.write_out(&mut Context::from_waker(Waker::noop()), true);
        // The driver task takes over what is left, and moves its timer
        // earlier if the session's next deadline now comes first (most
        // sends only move it later: see `Deadline`).
        let (deadline, _) = self.next_deadline();
        let earlier = deadline.is_some_and(|d| self.timer.armed().is_none_or(|a| d < a));
        let left = stopped || earlier || self.blocked || !self.deferred.is_empty() || self.session.has_event();
        if left && let Some(w) = &self.waker {
            w.wake_by_ref();
        }
        None
    }
}

/// The driver, shared by its task and the client's handles; `None` once
/// the task is gone (finished, or dropped with its runtime), which drops
/// every waiting call's sender and the command queue's receiver. A handle
/// holds it only to send inline ([`Driver::send_inline`]); the task never
/// blocks on it (see [`TaskCell`]).
#[derive(Clone)]
pub(crate) struct DriverRef(Arc<TaskCell<Option<Driver>>>);

impl std::fmt::Debug for DriverRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DriverRef")
    }
}

impl DriverRef {
    pub(crate) fn new(driver: Driver) -> DriverRef {
        DriverRef(Arc::new(TaskCell::new(Some(driver))))
    }

    /// The driver, unless its task or another handle holds it now.
    pub(crate) fn try_lock(&self) -> Option<Held<'_, Option<Driver>>> {
        self.0.try_lock()
    }

    /// The task that drives it.
    pub(crate) fn task(&self) -> DriverTask {
        DriverTask(self.clone(), Vec::new())
    }
}

/// The driver's task, and the answers it hands over after each poll.
pub(crate) struct DriverTask(DriverRef, Vec<Answer>);

/// A call's successful end, handed over after the driver is released.
enum Answer {
    Response(oneshot::Sender<Result<Message, Error>>, Result<Message, Error>),
    Acked(oneshot::Sender<Result<(), Error>>),
}

impl Future for DriverTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // Held by a handle sending inline: it wakes this task when it lets go.
        let Poll::Ready(mut guard) = this.0.0.poll_lock(cx) else { return Poll::Pending };
        let Some(d) = guard.as_mut() else { return Poll::Ready(()) };
        if !d.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            d.waker = Some(cx.waker().clone());
        }
        let done = d.poll_drive(cx);
        std::mem::swap(&mut this.1, &mut d.answers);
        if done.is_ready() {
            *guard = None;
        }
        drop(guard);
        for a in this.1.drain(..) {
            match a {
                Answer::Response(tx, r) => drop(tx.send(r)),
                Answer::Acked(tx) => drop(tx.send(Ok(()))),
            }
        }
        done
    }
}

impl Drop for DriverTask {
    fn drop(&mut self) {
        self.0.0.lock().take();
    }
}

fn is_send(c: &Command) -> bool {
    matches!(c, Command::Send { .. } | Command::Subscribe { .. })
}

fn command_deadline(c: &Command) -> Option<Instant> {
    match c {
        Command::Send { deadline, .. } => *deadline,
        _ => None,
    }
}

fn fail_command(c: Command, e: Error) {
    match c {
        Command::Send { reply, .. } => reply.fail(e),
        Command::Subscribe { reply, .. } => drop(reply.send(Err(e))),
        _ => {}
    }
}

fn end_sub(sub: Sub, e: Error) {
    match sub.opening {
        Some((reply, _)) => drop(reply.send(Err(e))),
        None => {
            let end = match e {
                Error::Closed(r) => SubscriptionEnd::Closed(r),
                other => SubscriptionEnd::Refused { code: ErrorCode::REFUSED, reason: other.to_string() },
            };
            drop(sub.sink.unbounded_send(SubEvent::End(end)));
        }
    }
}
