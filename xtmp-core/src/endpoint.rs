//! The server side: demultiplexes frames to sessions by session id and
//! remote address, reassembles ClientHellos, admits new sessions (with
//! stateless cookies under load), and retires closed ones (SPEC.md
//! section 3.2).
//!
//! Like a [`Session`], an [`Endpoint`] is driven by its caller:
//! [`Endpoint::handle_input`] for every datagram or stream chunk,
//! [`Endpoint::poll_transmit`] until `Ok(None)` (with a buffer of
//! [`Endpoint::max_transmit_len`] bytes), [`Endpoint::poll_event`],
//! and [`Endpoint::poll_timeout`] / [`Endpoint::handle_timeout`].

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, SocketAddr};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::session::{BufferTooSmall, ConfigError, Event, PathId, PathKind, Session};
use crate::time::Instant;
use crate::wire::{DatagramFrames, Deframer, Flags, Frame};

mod admission;
mod arrivals;
mod config;
mod resets;
mod stats;

use admission::{PartialHello, TokenKey};
use arrivals::Arrivals;
pub use config::{EndpointConfig, RetryPolicy, prefix_of};
use resets::RateBudget;
pub use stats::EndpointStats;

/// Where bytes came from or go to: the peer's address and the kind of
/// transport. A TCP or WebSocket connection is identified by its peer
/// address, which is unique while the connection is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Remote {
    /// The peer's address.
    pub addr: SocketAddr,
    /// Stream or datagram.
    pub kind: RemoteKind,
}

/// The transport of a [`Remote`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RemoteKind {
    /// A TCP or WebSocket connection.
    Stream,
    /// A UDP flow.
    Datagram,
}

impl Remote {
    fn path_kind(&self) -> PathKind {
        match self.kind {
            RemoteKind::Stream => PathKind::Stream,
            RemoteKind::Datagram => PathKind::Datagram,
        }
    }

    /// The bytes a cookie token binds: IPv6 (IPv4 mapped) ‖ port ‖ kind.
    fn token_bytes(&self) -> [u8; 19] {
        let mut b = [0u8; 19];
        let ip = match self.addr {
            SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
            SocketAddr::V6(a) => *a.ip(),
        };
        b[..16].copy_from_slice(&ip.octets());
        b[16..18].copy_from_slice(&self.addr.port().to_be_bytes());
        b[18] = self.kind as u8;
        b
    }
}

/// A session held by an endpoint: its local session id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionHandle(pub u64);

/// What the endpoint tells its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointEvent {
    /// A session was created from a ClientHello (its handshake is running).
    NewSession(SessionHandle, Remote),
    /// An event of one session. After its `Closed` event the session is gone.
    Session(SessionHandle, Event),
    /// Close this connection: its stream delivered a malformed frame (for
    /// a session's path, the session reported [`Event::PathFailed`] for it
    /// and carries on over its other paths), or it has not completed a
    /// handshake or joined a session within
    /// [`EndpointConfig::hello_timeout`] of its first byte (or of
    /// [`Endpoint::stream_opened`]). Nothing more is sent to it and bytes
    /// from it are dropped; the peer sees the reset and reconnects.
    CloseRemote(Remote, CloseRemoteReason),
}

/// Why the endpoint asks for a connection to be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseRemoteReason {
    /// Its stream broke the framing rules (SPEC.md 1.7): the next frame
    /// boundary is lost.
    Malformed,
    /// It neither completed a handshake nor joined a session within the
    /// hello timeout (silent, or a hello never finished).
    NoHandshake,
    /// It was a session's path and the session gave the path up (its frames
    /// failed, or the session moved on).
    PathFailed,
    /// Its session ended (after its drain period, or a failed handshake):
    /// nothing more will be sent on it (SPEC.md 3.7).
    SessionClosed,
}

impl CloseRemoteReason {
    /// A short name, for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            CloseRemoteReason::Malformed => "malformed stream",
            CloseRemoteReason::NoHandshake => "no handshake in time",
            CloseRemoteReason::PathFailed => "path given up by its session",
            CloseRemoteReason::SessionClosed => "its session ended",
        }
    }
}

impl fmt::Display for CloseRemoteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

struct Entry {
    session: Session,
    /// Each path's remote, by path id; `None` once the path is gone (the
    /// session may give its id to a new path).
    paths: Vec<Option<Remote>>,
    /// The client's session id from its hello.
    hello_key: u64,
    /// What the session held for reassembly when last looked at.
    held: usize,
    /// Whether its handshake was still running when last looked at.
    handshaking: bool,
    /// Its hello was proven (a valid token, or a stream): it counts
    /// toward the proven half-open limits while it handshakes.
    proven: bool,
    /// The address prefix its hello came from.
    origin: IpAddr,
    /// The session's deadline as filed in `Endpoint::timers`.
    deadline: Option<Instant>,
    /// The session ran since its deadline was filed (it is listed in
    /// `Endpoint::stale`): the filed one may be wrong.
    stale: bool,
    /// The session is in `Endpoint::send_queue`.
    queued: bool,
}

impl Entry {
    /// The session ran (took input, a timeout, the application's call, or
    /// wrote a transmit): its deadline must be looked at again, and it may
    /// have something to send.
    fn ran(&mut self, sid: u64, stale: &mut Vec<u64>, send_queue: &mut VecDeque<u64>) {
        self.mark_stale(sid, stale);
        if !self.queued {
            self.queued = true;
            send_queue.push_back(sid);
        }
    }

    /// Its deadline must be looked at again (listed in `stale` once).
    fn mark_stale(&mut self, sid: u64, stale: &mut Vec<u64>) {
        if !self.stale {
            self.stale = true;
            stale.push(sid);
        }
    }
}

/// Accepts and runs server sessions.
pub struct Endpoint {
    config: Arc<EndpointConfig>,
    rng: ChaCha20Rng,
    now: Instant,
    sessions: BTreeMap<u64, Entry>,
    routes: BTreeMap<Remote, u64>,
    /// Sessions by the client's session id: a hello repeated from another
    /// address (a NAT rebinding during the handshake) reaches the session
    /// it created rather than starting a second one, whose flight would mix
    /// with the first in the client's reassembly.
    by_hello: BTreeMap<u64, u64>,
    /// Proven hellos being reassembled, by remote and client id.
    hellos: Arrivals<(Remote, u64), PartialHello>,
    /// Unproven hellos (datagram, no token) being reassembled.
    unproven: Arrivals<(Remote, u64), PartialHello>,
    deframers: BTreeMap<Remote, Deframer>,
    /// Stream remotes not (yet) routed to a session, and when they were
    /// first seen: reset at [`EndpointConfig::hello_timeout`].
    unrouted_streams: Arrivals<Remote, ()>,
    stateless: VecDeque<(Remote, Vec<u8>)>,
    resets: RateBudget,
    busy: RateBudget,
    /// The endpoint's own events (new sessions, connections to reset).
    events: VecDeque<EndpointEvent>,
    /// Sessions that may have events for the application. Their events
    /// stay in the session until `poll_event` takes them, so a session's
    /// flow control sees what the application has actually read.
    ready: BTreeSet<u64>,
    /// Where `poll_event` continues its round over `ready`.
    event_cursor: u64,
    /// Closed sessions whose last events (`Closed` at least) wait to be
    /// taken. Nothing routes to them.
    retired: BTreeMap<u64, Session>,
    token_keys: [Option<TokenKey>; 2],
    /// Every session's deadline, earliest first: a driver's turn looks at
    /// the sessions that ran, not at all of them.
    timers: BTreeSet<(Instant, u64)>,
    /// Sessions that ran since their deadline was filed.
    stale: Vec<u64>,
    /// Sessions that may have something to send, in turn: one that has
    /// nothing leaves the queue until it runs again.
    send_queue: VecDeque<u64>,
    /// Sessions lent out by `session_mut` since the last `poll_event`.
    touched: Vec<u64>,
    /// The sum of every session's `Entry::held`.
    held: usize,
    /// Proven sessions whose `Entry::handshaking` is set, in all and by
    /// origin prefix; unproven ones, in all.
    handshaking: usize,
    handshaking_from: BTreeMap<IpAddr, usize>,
    handshaking_unproven: usize,
    /// New sessions are admitted (until [`Endpoint::stop_accepting`]).
    accepting: bool,
    stats: EndpointStats,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint").field("sessions", &self.sessions.len()).finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A new endpoint; `rng` seeds its own CSPRNG (session ids, token keys,
    /// and each session's generator).
    pub fn new(
        now: Instant,
        config: Arc<EndpointConfig>,
        rng: &mut dyn rand_core::CryptoRng,
    ) -> Result<Endpoint, ConfigError> {
        config.validate()?;
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let resets = RateBudget::new(config.max_resets_per_second);
        let busy = RateBudget::new(config.max_busy_per_second);
        Ok(Endpoint {
            config,
            rng: ChaCha20Rng::from_seed(seed),
            now,
            sessions: BTreeMap::new(),
            routes: BTreeMap::new(),
            by_hello: BTreeMap::new(),
            hellos: Arrivals::new(),
            unproven: Arrivals::new(),
            deframers: BTreeMap::new(),
            unrouted_streams: Arrivals::new(),
            stateless: VecDeque::new(),
            resets,
            busy,
            events: VecDeque::new(),
            ready: BTreeSet::new(),
            event_cursor: 0,
            retired: BTreeMap::new(),
            token_keys: [None, None],
            timers: BTreeSet::new(),
            stale: Vec::new(),
            send_queue: VecDeque::new(),
            touched: Vec::new(),
            held: 0,
            handshaking: 0,
            handshaking_from: BTreeMap::new(),
            handshaking_unproven: 0,
            accepting: true,
            stats: EndpointStats::default(),
        })
    }

    /// Admits no new session from now on (a server shutting down): a
    /// ClientHello is dropped, as under the session limit
    /// (`hellos_shed`). Sessions already held carry on.
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// The sessions held, oldest first (to close them all, say, with
    /// [`Endpoint::session_mut`]).
    pub fn sessions(&self) -> impl Iterator<Item = SessionHandle> + '_ {
        self.sessions.keys().map(|&sid| SessionHandle(sid))
    }

    /// The endpoint's counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// Number of sessions held (closed ones whose `Closed` event was not
    /// taken yet are not counted).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// A session, to send on it or close it (or, once closed, to read its
    /// last events and counters until its `Closed` event is taken). Drain
    /// the endpoint afterwards.
    pub fn session_mut(&mut self, h: SessionHandle) -> Option<&mut Session> {
        let session = match self.sessions.get_mut(&h.0) {
            Some(e) => {
                e.ran(h.0, &mut self.stale, &mut self.send_queue);
                &mut e.session
            }
            None => self.retired.get_mut(&h.0)?,
        };
        if !self.touched.contains(&h.0) {
            self.touched.push(h.0);
        }
        Some(session)
    }

    /// Half-open state: proven hellos in reassembly plus proven handshakes
    /// running (bounded by [`EndpointConfig::max_half_open`]), and unproven
    /// hellos in reassembly plus unproven handshakes running.
    pub fn half_open_counts(&self) -> (usize, usize) {
        (self.proven_half_open(), self.unproven.len() + self.handshaking_unproven)
    }

    /// Bytes every session together holds for reassembly and reordering.
    pub fn reassembly_bytes(&self) -> usize {
        self.held
    }

    /// Stream connections not (yet) in a session: how many, the bytes
    /// their deframers hold, and when the oldest was first seen (each is
    /// reset [`EndpointConfig::hello_timeout`] after that).
    pub fn unrouted_streams(&self) -> (usize, usize, Option<Instant>) {
        let bytes = self.deframers.values().map(Deframer::buffered).sum();
        (self.unrouted_streams.len(), bytes, self.unrouted_streams.earliest())
    }

    /// Session `sid`, about to take input: it may hold what it holds plus
    /// what the endpoint's budget has left.
    fn entry_for_input(&mut self, sid: u64) -> Option<&mut Entry> {
        let free = self.config.max_reassembly_bytes.saturating_sub(self.held);
        let e = self.sessions.get_mut(&sid)?;
        e.session.set_reassembly_budget(e.held + free);
        Some(e)
    }

    /// Hellos being reassembled plus sessions whose handshake is running,
    /// proven or not: the load that decides Retry. (A session that
    /// finished its handshake and is closing or draining no longer counts:
    /// clients that connect and leave at once must not fill the half-open
    /// slots for a drain period.)
    fn half_open(&self) -> usize {
        self.proven_half_open() + self.unproven.len() + self.handshaking_unproven
    }

    /// Proven hellos and handshakes: what [`EndpointConfig::max_half_open`]
    /// bounds.
    fn proven_half_open(&self) -> usize {
        self.hellos.len() + self.handshaking
    }

    /// Proven half-open handshakes from address prefix `prefix`.
    fn half_open_in(&self, prefix: IpAddr) -> usize {
        self.hellos.count_from(prefix) + self.handshaking_from.get(&prefix).copied().unwrap_or(0)
    }

    /// The prefix `ip` is counted under (SPEC.md 3.2).
    fn prefix(&self, ip: IpAddr) -> IpAddr {
        prefix_of(ip, self.config.prefix_len_v4, self.config.prefix_len_v6)
    }

    /// Bytes from `remote`: one datagram, or a chunk of a stream.
    pub fn handle_input(&mut self, now: Instant, remote: Remote, data: &[u8]) {
        self.now = self.now.max(now);
        if let Some(&sid) = self.routes.get(&remote).filter(|&&sid| !self.foreign_hello(remote, sid, data)) {
            let now = self.now;
            if let Some(e) = self.entry_for_input(sid) {
                let path = e.paths.iter().position(|r| *r == Some(remote)).map_or(PathId(0), |i| PathId(i as u32));
                e.session.handle_input(now, path, data);
                self.collect(sid);
            }
            return;
        }
        match remote.kind {
            RemoteKind::Datagram => {
                if let Some(sid) = self.datagram_migration_target(data) {
                    return self.migrate(remote, sid, data);
                }
                for f in DatagramFrames::new(data, self.config.session.max_datagram as u32) {
                    match f {
                        Ok(frame) => self.unrouted(remote, &frame, data.len()),
                        Err(_) => {
                            self.stats.dropped += 1;
                            break;
                        }
                    }
                }
                // A relayed client flight may just have completed the
                // handshake: the sealed Heartbeat after it opens the path.
                if let Some(sid) = self.datagram_migration_target(data) {
                    self.migrate(remote, sid, data);
                }
            }
            RemoteKind::Stream => {
                self.unrouted_streams.insert(remote, now, remote.addr.ip(), ());
                let max = self.config.server.params.max_frame_payload;
                let mut d = self.deframers.remove(&remote).unwrap_or_else(|| Deframer::new(max));
                let mut input = data;
                loop {
                    let mut forgotten = None;
                    let sessions = &self.sessions;
                    let decoded = d.decode_with(&mut input, |raw| unrouted_admission(sessions, raw, &mut forgotten));
                    if let Some(sid) = forgotten {
                        // Skipped unread: a session this server does not hold.
                        self.stats.dropped += 1;
                        self.reset(remote, sid, 0);
                    }
                    let raw = match decoded {
                        Ok(Some(frame)) => {
                            let mut raw = frame.raw_header().to_vec();
                            raw.extend_from_slice(frame.payload());
                            raw
                        }
                        Ok(None) => break,
                        Err(_) => {
                            // SPEC.md 1.7: the next frame boundary is lost
                            // (or a frame is longer than a connection
                            // outside a session may send, SPEC.md 3.2).
                            self.stats.dropped += 1;
                            return self.reset_stream(remote, CloseRemoteReason::Malformed);
                        }
                    };
                    let Ok((frame, _)) = Frame::decode(&raw, max) else {
                        self.stats.dropped += 1;
                        return self.reset_stream(remote, CloseRemoteReason::Malformed);
                    };
                    if let Some(sid) = self.migration_target(&frame) {
                        // A known client's new connection: once its first
                        // frame authenticates, the rest of the stream is
                        // the session's.
                        self.migrate(remote, sid, &raw);
                        if self.routes.contains_key(&remote) && !input.is_empty() {
                            self.handle_input(now, remote, input);
                        }
                        return;
                    }
                    self.unrouted(remote, &frame, raw.len());
                    if self.routes.contains_key(&remote) {
                        // A new session took the connection over.
                        if !input.is_empty() {
                            self.handle_input(now, remote, input);
                        }
                        return;
                    }
                }
                self.deframers.insert(remote, d);
            }
        }
    }

    /// Whether `data`, from a datagram remote routed to session `sid`,
    /// begins with the ClientHello of another client (hellos are keyed by
    /// address and client id, SPEC.md 3.2): a client restarted on the port
    /// of a session the server still holds is admitted, not ignored.
    fn foreign_hello(&self, remote: Remote, sid: u64, data: &[u8]) -> bool {
        if remote.kind != RemoteKind::Datagram {
            return false;
        }
        let Some(Ok(frame)) = DatagramFrames::new(data, self.config.session.max_datagram as u32).next() else {
            return false;
        };
        let h = frame.header();
        h.message_type == crate::wire::MessageType::HANDSHAKE
            && !h.flags.contains(Flags::ENCRYPTED)
            && frame.payload().first() == Some(&crate::session::codec::STAGE_CLIENT_HELLO)
            && h.session_id != sid
            && self.sessions.get(&sid).is_some_and(|e| e.hello_key != h.session_id)
    }

    /// The adapter lost a stream connection (or forgets a datagram flow).
    pub fn remote_closed(&mut self, remote: Remote) {
        self.deframers.remove(&remote);
        self.unrouted_streams.remove(&remote);
        self.hellos.remove_range((remote, 0)..=(remote, u64::MAX));
        self.unproven.remove_range((remote, 0)..=(remote, u64::MAX));
        if let Some(sid) = self.routes.remove(&remote)
            && let Some(e) = self.sessions.get_mut(&sid)
            && let Some(i) = e.paths.iter().position(|r| *r == Some(remote))
        {
            e.paths[i] = None;
            e.session.path_closed(PathId(i as u32));
            self.collect(sid);
        }
    }

    /// A stream connection was accepted (before any byte arrived on it): if
    /// it has not joined a session within [`EndpointConfig::hello_timeout`]
    /// the endpoint asks for it to be closed ([`EndpointEvent::CloseRemote`]),
    /// so a peer that connects and stays silent, or sends half a frame,
    /// does not hold a connection for ever. (A remote first seen by
    /// [`Endpoint::handle_input`] is timed from then.)
    pub fn stream_opened(&mut self, now: Instant, remote: Remote) {
        self.now = self.now.max(now);
        if remote.kind == RemoteKind::Stream && !self.routes.contains_key(&remote) {
            self.unrouted_streams.insert(remote, self.now, remote.addr.ip(), ());
        }
    }

    /// Forgets an unrouted stream remote and asks for its connection to be
    /// closed.
    fn reset_stream(&mut self, remote: Remote, why: CloseRemoteReason) {
        self.deframers.remove(&remote);
        self.unrouted_streams.remove(&remote);
        self.hellos.remove_range((remote, 0)..=(remote, u64::MAX));
        self.unproven.remove_range((remote, 0)..=(remote, u64::MAX));
        self.stats.streams_reset += 1;
        self.events.push_back(EndpointEvent::CloseRemote(remote, why));
    }

    /// The established session an encrypted frame from an unknown remote
    /// names, if any.
    fn migration_target(&self, frame: &Frame<'_>) -> Option<u64> {
        let h = frame.header();
        let sid = h.session_id;
        (h.flags.contains(Flags::ENCRYPTED) && self.sessions.get(&sid).is_some_and(|e| e.session.is_established()))
            .then_some(sid)
    }

    /// The established session any sealed frame of a datagram from an
    /// unknown remote names (a client's resent flight comes first, then a
    /// Heartbeat: SPEC.md 3.2).
    fn datagram_migration_target(&self, data: &[u8]) -> Option<u64> {
        DatagramFrames::new(data, self.config.session.max_datagram as u32)
            .map_while(Result::ok)
            .find_map(|f| self.migration_target(&f))
    }

    /// Offers `data` from a new remote to session `sid` as a new path; the
    /// remote is routed to it only if a frame authenticated (SPEC.md 3.7).
    fn migrate(&mut self, remote: Remote, sid: u64, data: &[u8]) {
        let now = self.now;
        let Some(e) = self.entry_for_input(sid) else { return };
        match e.session.handle_new_path_input(now, remote.path_kind(), data) {
            Some(path) => {
                let i = path.0 as usize;
                if e.paths.len() <= i {
                    e.paths.resize(i + 1, None);
                }
                e.paths[i] = Some(remote);
                self.routes.insert(remote, sid);
                self.unrouted_streams.remove(&remote);
                self.deframers.remove(&remote);
                self.stats.migrations += 1;
            }
            None => self.stats.dropped += 1,
        }
        self.collect(sid);
    }

    /// Looks at session `sid` after it ran: drops the routes of paths that
    /// failed and of a session that closed, and notes whether it has events.
    fn collect(&mut self, sid: u64) {
        let Some(e) = self.sessions.get_mut(&sid) else {
            // Retired: forgotten once its last event is taken.
            if self.retired.get(&sid).is_some_and(|s| !s.has_event()) {
                self.retired.remove(&sid);
                self.ready.remove(&sid);
            }
            return;
        };
        while let Some(path) = e.session.take_failed_path() {
            let Some(remote) = e.paths.get_mut(path.0 as usize).and_then(Option::take) else { continue };
            if self.routes.get(&remote) == Some(&sid) {
                // The path is gone from the session. A datagram remote that
                // keeps sending authenticated frames is offered to the
                // session again as a new path (and challenged again: the
                // last challenge may just have been lost); a stream remote
                // is reset.
                self.routes.remove(&remote);
                self.deframers.remove(&remote);
                if remote.kind == RemoteKind::Stream {
                    self.events.push_back(EndpointEvent::CloseRemote(remote, CloseRemoteReason::PathFailed));
                }
            }
        }
        e.ran(sid, &mut self.stale, &mut self.send_queue);
        if e.session.has_event() {
            self.ready.insert(sid);
        }
        let held = e.session.reassembly_held();
        self.held = self.held - e.held + held;
        e.held = held;
        if e.handshaking && !e.session.is_handshaking() {
            e.handshaking = false;
            if !e.proven {
                self.handshaking_unproven -= 1;
            } else {
                self.handshaking -= 1;
                if let Some(n) = self.handshaking_from.get_mut(&e.origin) {
                    *n -= 1;
                    if *n == 0 {
                        self.handshaking_from.remove(&e.origin);
                    }
                }
            }
        }
        if e.session.is_closed()
            && let Some(e) = self.sessions.remove(&sid)
        {
            self.held -= e.held;
            if let Some(t) = e.deadline {
                self.timers.remove(&(t, sid));
            }
            for r in e.paths.iter().flatten() {
                if self.routes.get(r) == Some(&sid) {
                    self.routes.remove(r);
                    if r.kind == RemoteKind::Stream {
                        // Its connection carries nothing more: closed, so
                        // neither side holds it open for nothing.
                        self.deframers.remove(r);
                        self.events.push_back(EndpointEvent::CloseRemote(*r, CloseRemoteReason::SessionClosed));
                    }
                }
            }
            self.by_hello.remove(&e.hello_key);
            if e.session.has_event() {
                self.retired.insert(sid, e.session);
            }
        }
    }

    /// The next event: the endpoint's own first, then the sessions',
    /// one at a time from each in turn. A session's messages count
    /// against its flow-control window until they are taken here (or
    /// through [`Endpoint::session_mut`]), so an application that stops
    /// reading stops its peers from sending, instead of growing a queue.
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        // Sessions handed out by `session_mut` may have events (a close).
        while let Some(sid) = self.touched.pop() {
            self.collect(sid);
        }
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        loop {
            let sid = *self.ready.range(self.event_cursor..).next().or_else(|| self.ready.first())?;
            let session = match self.sessions.get_mut(&sid) {
                // Taking a message frees flow-control credit, which the
                // session may announce.
                Some(e) => {
                    e.ran(sid, &mut self.stale, &mut self.send_queue);
                    &mut e.session
                }
                None => match self.retired.get_mut(&sid) {
                    Some(s) => s,
                    None => {
                        self.ready.remove(&sid);
                        continue;
                    }
                },
            };
            let event = session.poll_event();
            let more = session.has_event();
            if !more {
                self.ready.remove(&sid);
                if session.is_closed() {
                    self.retired.remove(&sid);
                }
            }
            if let Some(ev) = event {
                self.event_cursor = sid.wrapping_add(1);
                return Some(EndpointEvent::Session(SessionHandle(sid), ev));
            }
        }
    }

    /// Writes the next datagram or stream chunk into `buf`: where it goes
    /// and how long it is. Call until `Ok(None)`.
    ///
    /// A `buf` of [`Endpoint::max_transmit_len`] bytes never gets
    /// `Err(BufferTooSmall)`. With a shorter one, the transmit that does not
    /// fit stays queued (nothing is lost) and the error says how long a
    /// buffer it needs; the caller grows its buffer and calls again.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Result<Option<(Remote, usize)>, BufferTooSmall> {
        self.now = self.now.max(now);
        if let Some((remote, bytes)) = self.stateless.front() {
            let (remote, len) = (*remote, bytes.len());
            if len > buf.len() {
                return Err(BufferTooSmall { needed: len });
            }
            buf[..len].copy_from_slice(bytes);
            self.stateless.pop_front();
            return Ok(Some((remote, len)));
        }
        // Sessions lent to the application (queued already) are looked at:
        // one may have closed.
        while let Some(sid) = self.touched.pop() {
            self.collect(sid);
        }
        // Round-robin over the sessions that may have something: one that
        // sent goes to the back; one that has nothing leaves the queue.
        let now = self.now;
        let mut left = self.send_queue.len();
        while left > 0 {
            let Some(sid) = self.send_queue.pop_front() else { break };
            let Some(e) = self.sessions.get_mut(&sid) else { continue };
            e.queued = false;
            let t = match e.session.poll_transmit(now, buf) {
                Ok(t) => t,
                Err(too_small) => {
                    // It goes first once the caller's buffer is longer.
                    e.queued = true;
                    self.send_queue.push_front(sid);
                    return Err(too_small);
                }
            };
            let Some(t) = t else {
                left -= 1;
                // Sending may have moved its deadline (pacing, a timer
                // armed by what went).
                e.mark_stale(sid, &mut self.stale);
                continue;
            };
            let remote = e.paths.get(t.path.0 as usize).copied().flatten();
            self.collect(sid);
            if let Some(remote) = remote {
                return Ok(Some((remote, t.len)));
            }
            // For a path already gone: dropped (the session repeats what
            // matters on another), and the session asked again.
        }
        // Drained: file the deadlines of the sessions that ran, so that
        // `poll_timeout`, asked next, reads them.
        self.settle();
        Ok(None)
    }

    /// Files again the deadlines of the sessions that ran.
    fn settle(&mut self) {
        while let Some(sid) = self.touched.pop() {
            self.collect(sid);
        }
        while let Some(sid) = self.stale.pop() {
            let Some(e) = self.sessions.get_mut(&sid) else { continue };
            e.stale = false;
            let d = e.session.poll_timeout();
            if d != e.deadline {
                if let Some(t) = e.deadline {
                    self.timers.remove(&(t, sid));
                }
                if let Some(t) = d {
                    self.timers.insert((t, sid));
                }
                e.deadline = d;
            }
        }
    }

    /// The largest transmit [`Endpoint::poll_transmit`] writes (every
    /// session's [`Session::max_transmit_len`] under this configuration; a
    /// stateless Retry is far shorter).
    pub fn max_transmit_len(&self) -> usize {
        self.config.server.params.max_transmit_len()
    }

    /// The earliest deadline of any session or pending hello. It costs
    /// the sessions that ran since the last [`Endpoint::handle_timeout`] or
    /// [`Endpoint::poll_transmit`], not every session held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Filed deadlines, but for sessions that ran since (the application
        // calls `session_mut` between turns): theirs may have moved either
        // way, and are asked for.
        let filed = self.timers.iter().find(|(_, sid)| self.sessions.get(sid).is_some_and(|e| !e.stale));
        let ran = self.stale.iter().filter_map(|sid| self.sessions.get(sid)?.session.poll_timeout());
        let hellos = self.hellos.earliest().into_iter().chain(self.unproven.earliest()).min();
        let hellos = hellos.map(|t| t + self.config.hello_timeout);
        let streams = self.unrouted_streams.earliest().map(|t| t + self.config.hello_timeout);
        let stateless = (!self.stateless.is_empty()).then_some(self.now);
        filed.map(|&(t, _)| t).into_iter().chain(ran).chain(hellos).chain(streams).chain(stateless).min()
    }

    /// Handles every deadline that passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let now = self.now;
        let timeout = self.config.hello_timeout;
        while let Some(key) = self.hellos.oldest_due(now, timeout) {
            self.hellos.remove(&key);
        }
        while let Some(key) = self.unproven.oldest_due(now, timeout) {
            self.unproven.remove(&key);
        }
        while let Some(remote) = self.unrouted_streams.oldest_due(now, timeout) {
            if self.routes.contains_key(&remote) {
                // It joined a session (a handshake, a reconnection).
                self.unrouted_streams.remove(&remote);
            } else {
                self.reset_stream(remote, CloseRemoteReason::NoHandshake);
            }
        }
        self.settle();
        let due: Vec<u64> = self.timers.range(..=(now, u64::MAX)).map(|&(_, sid)| sid).collect();
        for sid in due {
            if let Some(e) = self.sessions.get_mut(&sid) {
                e.session.handle_timeout(now);
            }
            self.collect(sid);
        }
        self.settle();
    }
}

/// What a stream connection that has not joined a session may send
/// (SPEC.md 3.2), decided from each frame's header before any of its
/// payload is kept: handshake frames of at most [`crate::wire::MIN_MAX_PAYLOAD`] bytes
/// (what any client sends before it knows the server's limit), and sealed
/// frames of a session this endpoint holds (a reconnection) at full size.
/// A sealed frame of a session it does not hold (one a restarted server
/// forgot) is skipped unread and answered with a stateless reset
/// (`forgotten`): it costs the server its header, not its length.
fn unrouted_admission(
    sessions: &BTreeMap<u64, Entry>,
    raw: &[u8; crate::wire::HEADER_LEN],
    forgotten: &mut Option<u64>,
) -> crate::wire::Admission {
    use crate::wire::{Admission, MIN_MAX_PAYLOAD, offset};
    let flags = Flags::from_bits_retain(raw[offset::FLAGS]);
    if !flags.contains(Flags::ENCRYPTED) {
        return Admission::Take(MIN_MAX_PAYLOAD);
    }
    let mut sid = [0u8; 8];
    sid.copy_from_slice(&raw[offset::SESSION_ID..offset::SESSION_ID + 8]);
    let sid = u64::from_be_bytes(sid);
    if sessions.contains_key(&sid) {
        return Admission::Take(u32::MAX);
    }
    *forgotten = Some(sid);
    Admission::Skip
}
