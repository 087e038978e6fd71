//! The world: nodes, links, the packets in flight, virtual time, and the
//! run's phases (faults, then a calm liveness phase, then a graceful close).
//!
//! The loop is the adapters' loop (GUIDE.md section 2), single-threaded:
//! drain every node's transmits into the links and its events into the
//! applications and the checker, then jump virtual time to the earliest of
//! the next arrival, node deadline, application timer or scheduled action.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_core::crypto::RustCrypto;
use xtmp_core::endpoint::{Endpoint, EndpointConfig, EndpointEvent, Remote, RemoteKind, SessionHandle};
use xtmp_core::handshake::{ClientConfig, IdentityKeypair, Pinned, ServerConfig, SessionParams};
use xtmp_core::session::{
    CloseCode, CloseReason, ErrorCode, Event, FailReason, MessageKind, PathId, PathKind, SendError, SendOptions,
    Session, SessionConfig, SubscriptionId,
};
use xtmp_core::wire::MessageType;

use crate::check::{Checker, SentKind, Side, class_of};
use crate::choices::{Choices, protocol_seed};
use crate::clock::NodeClock;
use crate::link::{Arrival, Fault, LinkConfig};
use crate::node::{
    AppMsg, CLIENT_TYPES, ClientNode, ClientPath, ClientSub, Filter, SERVER, ServerNode, ServerSession, ServerSub, body,
};
use crate::scenario::{Action, Dir, Mark, Scenario, Transport, Who};
use crate::trace::{Trace, TraceMode, digest};

/// Where a packet goes.
#[derive(Clone, Copy, Debug)]
enum Dest {
    /// To the server, from `src`.
    Server { src: SocketAddr, kind: RemoteKind, conn: Option<u64> },
    /// To whichever client holds `dst`.
    Client { dst: SocketAddr, conn: Option<u64> },
}

#[derive(Debug)]
struct Packet {
    dest: Dest,
    bytes: Vec<u8>,
    fault: Fault,
    /// Injected by the attacker.
    forged: bool,
}

#[derive(Clone, Copy, Debug)]
struct Conn {
    client: usize,
    addr: SocketAddr,
    alive: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Faults,
    Settle,
    Closing,
    Done,
}

/// What a run measured, beyond the checker's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams and stream chunks the nodes sent.
    pub transmits: u64,
    /// Deliveries the links dropped.
    pub dropped: u64,
    /// Deliveries the links corrupted.
    pub corrupted: u64,
    /// Deliveries that were duplicates or replays.
    pub duplicated: u64,
    /// Frames the sessions declared lost.
    pub lost: u64,
    /// Retransmissions.
    pub retransmissions: u64,
    /// Sessions started by clients.
    pub sessions: u64,
    /// Sessions established.
    pub handshakes: u64,
    /// Attacker injections.
    pub injected: u64,
    /// Stream connections severed.
    pub severed: u64,
}

static IDENTITY: OnceLock<Arc<IdentityKeypair>> = OnceLock::new();

/// The server identity every run uses (generated once per process from a
/// fixed seed: it is configuration, not per-run randomness).
fn identity() -> Arc<IdentityKeypair> {
    IDENTITY
        .get_or_init(|| {
            Arc::new(
                IdentityKeypair::generate(&RustCrypto, &mut ChaCha20Rng::from_seed([0x51; 32]))
                    .expect("identity generation"),
            )
        })
        .clone()
}

pub(crate) struct World {
    pub(crate) scenario: Scenario,
    seed: u64,
    pub(crate) now: u64,
    pub(crate) choices: Choices,
    pub(crate) trace: Trace,
    pub(crate) checker: Checker,
    pub(crate) counters: Counters,
    pub(crate) marks: BTreeSet<Mark>,
    clients: Vec<ClientNode>,
    server: ServerNode,
    client_config: Arc<ClientConfig>,
    client_session: Arc<SessionConfig>,
    endpoint_config: Arc<EndpointConfig>,
    inflight: BTreeMap<(u64, u64), Packet>,
    next_packet: u64,
    conns: BTreeMap<u64, Conn>,
    conn_by_addr: BTreeMap<SocketAddr, u64>,
    /// Which client a datagram address belongs (or belonged) to.
    addr_owner: BTreeMap<SocketAddr, usize>,
    schedule_pos: usize,
    phase: Phase,
    phase_deadline: u64,
    next_sweep: u64,
    next_attack: Option<u64>,
    captured: std::collections::VecDeque<(Dest, SocketAddr, Vec<u8>)>,
    /// Stream bytes waiting for a partition to heal, per connection.
    backlog: BTreeMap<(u64, bool), Vec<Vec<u8>>>,
    max_drift: f64,
}

const SECOND: u64 = 1_000_000_000;

/// The attacker's own address.
const ATTACKER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 9, 9, 9), 6666));

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

impl World {
    pub(crate) fn new(mut scenario: Scenario, seed: u64, mut choices: Choices, mode: TraceMode) -> World {
        scenario.sample(&mut choices);
        let provider: Arc<dyn xtmp_core::crypto::CryptoProvider> = Arc::new(RustCrypto);
        let id = identity();
        let mut server = ServerConfig::new(provider.clone(), id.clone());
        if scenario.stateless_reset {
            // As the adapter does: the key comes from the identity, so the
            // restarted server resets its previous run's sessions.
            server.reset_key = id.derive_key(&*provider, b"stateless reset key").ok().map(Arc::new);
        }
        let mut client = ClientConfig::new(provider, Arc::new(Pinned(id.public().clone())));
        let idle = scenario.idle_timeout.as_millis() as u32;
        server.params.idle_timeout_ms = idle;
        client.params.idle_timeout_ms = idle;
        if let Some(w) = scenario.subscription_window {
            client.params.subscription_window = w;
        }
        if let Some(w) = scenario.receive_window {
            server.params.receive_window = w;
            client.params.receive_window = w;
        }
        let server_session = scenario.server_session.clone().unwrap_or_else(|| scenario.session.clone());
        let mut endpoint = EndpointConfig::new(Arc::new(server_session), Arc::new(server));
        endpoint.retry = scenario.retry;
        if let Some(b) = scenario.endpoint_reassembly {
            endpoint.max_reassembly_bytes = b;
        }
        let clocks = scenario.clocks;
        let clock = |c: &mut Choices| {
            let offset = c.below(nanos(clocks.max_offset) + 1) + SECOND;
            let d = i64::from(clocks.max_drift_ppm);
            let drift = c.below((2 * d + 1) as u64) as i64 - d;
            NodeClock::new(offset, drift as i32)
        };
        let server_clock = clock(&mut choices);
        let clients = (0..scenario.clients)
            .map(|i| ClientNode::new(i, clock(&mut choices), scenario.up.clone(), scenario.down.clone()))
            .collect();
        let next_attack = scenario.attacker.map(|_| SECOND);
        World {
            max_drift: f64::from(clocks.max_drift_ppm) / 1e6,
            client_session: Arc::new(scenario.session.clone()),
            scenario,
            seed,
            now: 0,
            choices,
            trace: Trace::new(mode),
            checker: Checker::default(),
            counters: Counters::default(),
            marks: BTreeSet::new(),
            clients,
            server: ServerNode {
                endpoint: None,
                clock: server_clock,
                incarnation: 0,
                started_at: 0,
                sessions: BTreeMap::new(),
                next_push: None,
                pushes: 0,
                past_stats: Vec::new(),
                past_endpoints: Vec::new(),
                reading: true,
            },
            client_config: Arc::new(client),
            endpoint_config: Arc::new(endpoint),
            inflight: BTreeMap::new(),
            next_packet: 0,
            conns: BTreeMap::new(),
            conn_by_addr: BTreeMap::new(),
            addr_owner: BTreeMap::new(),
            schedule_pos: 0,
            phase: Phase::Faults,
            phase_deadline: u64::MAX,
            next_sweep: 0,
            next_attack,
            captured: std::collections::VecDeque::new(),
            backlog: BTreeMap::new(),
        }
    }

    fn violation(&mut self, what: String) {
        self.checker.violations.push(crate::check::Violation { at: self.now, what });
    }

    fn note(&mut self, key: &[u64], node: impl FnOnce() -> String, what: &str, detail: impl FnOnce() -> String) {
        let what = what.to_string();
        self.trace.record(key, || (node(), what, detail()), self.now);
    }

    // ------------------------------------------------------------ the loop

    pub(crate) fn run(&mut self) {
        self.start_server();
        for i in 0..self.clients.len() {
            // Clients start within the first 100 ms.
            let at = self.choices.below(100_000_000);
            self.clients[i].reconnect_at = Some(at);
            self.clients[i].next_send = Some(at);
        }
        let limit = nanos(self.scenario.time_limit);
        let mut same = 0u32;
        while self.phase != Phase::Done {
            self.pump();
            self.advance_phase();
            if self.phase == Phase::Done {
                break;
            }
            let next = self.next_time();
            if next >= limit || next == u64::MAX {
                let why = if next == u64::MAX { "nothing left to do" } else { "the time limit passed" };
                let stuck = self.stuck();
                self.violation(format!("run did not finish: {why} in phase {:?}{stuck}", self.phase));
                break;
            }
            if next <= self.now {
                same += 1;
                if same > 100_000 {
                    let stuck = self.stuck();
                    self.violation(format!("livelock: 100,000 steps without time passing{stuck}"));
                    break;
                }
            } else {
                same = 0;
                self.now = next;
            }
            self.fire();
            if !self.checker.violations.is_empty() {
                break;
            }
        }
        self.collect_marks();
        if self.checker.violations.is_empty() {
            let now = self.now;
            self.checker.finish(now, self.scenario.lossless);
        }
    }

    fn stuck(&self) -> String {
        let mut s = String::new();
        if let Some(e) = &self.server.endpoint {
            let d = e.poll_timeout().map(|d| d.as_nanos() as i128 - self.server.clock.local_ns(self.now) as i128);
            s += &format!("\n  server: deadline in {d:?} ns, {} sessions", e.session_count());
        }
        for c in &self.clients {
            let st = c.session.as_ref().map(|s| s.stats());
            let deadline = c
                .session
                .as_ref()
                .and_then(|s| s.poll_timeout())
                .map(|d| d.as_nanos() as i128 - c.clock.local_ns(self.now) as i128);
            s += &format!(
                "\n  client{}{}: deadline in {deadline:?} ns, session {}, established {}, pending {}, generated {}, unacked {:?}",
                c.index,
                if c.crashed { " (crashed)" } else { "" },
                c.session.is_some(),
                c.session.as_ref().is_some_and(|s| s.is_established()),
                c.pending.len(),
                c.generated,
                st.map(|s| s.unacked_messages)
            );
            if let Some(session) = &c.session {
                s += &format!("\n    {session:?}");
            }
            let open: Vec<_> = c.attempt.subs.iter().filter(|(_, s)| !s.done).collect();
            if !open.is_empty() {
                s += &format!("\n    subscriptions not done: {open:?}");
            }
        }
        for (sid, ss) in &self.server.sessions {
            if !ss.subs.is_empty() {
                s += &format!("\n  server {sid:016x} publishes to {:?}", ss.subs);
            }
        }
        s
    }

    fn next_time(&mut self) -> u64 {
        let mut t = u64::MAX;
        if let Some((&(at, _), _)) = self.inflight.first_key_value() {
            t = t.min(at);
        }
        if let Some((at, _)) = self.scenario.schedule.get(self.schedule_pos) {
            t = t.min(nanos(*at));
        }
        let now = self.now;
        for c in &self.clients {
            if let Some(s) = &c.session
                && let Some(d) = s.poll_timeout()
            {
                t = t.min(c.clock.sim_time_of(d, now));
            }
            for x in [c.next_send, c.reconnect_at, c.redial_at].into_iter().flatten() {
                t = t.min(x.max(now));
            }
        }
        if let Some(e) = &self.server.endpoint
            && let Some(d) = e.poll_timeout()
        {
            t = t.min(self.server.clock.sim_time_of(d, now));
        }
        for x in [self.server.next_push, self.next_attack].into_iter().flatten() {
            t = t.min(x.max(now));
        }
        t = t.min(self.next_sweep.max(now));
        if self.phase_deadline != u64::MAX {
            t = t.min(self.phase_deadline);
        }
        t
    }

    /// Handles everything due at `now`.
    fn fire(&mut self) {
        let now = self.now;
        while let Some((at, _)) = self.scenario.schedule.get(self.schedule_pos) {
            if nanos(*at) > now {
                break;
            }
            let action = self.scenario.schedule[self.schedule_pos].1.clone();
            self.schedule_pos += 1;
            self.apply(action);
        }
        while let Some(entry) = self.inflight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let p = entry.remove();
            self.deliver(p);
        }
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if let Some(s) = &mut c.session
                && s.poll_timeout().is_some_and(|d| c.clock.sim_time_of(d, now) <= now)
            {
                s.handle_timeout(c.clock.local(now));
            }
            if c.reconnect_at.is_some_and(|t| t <= now) {
                c.reconnect_at = None;
                self.connect(i);
            }
            if self.clients[i].redial_at.is_some_and(|t| t <= now) {
                self.clients[i].redial_at = None;
                self.redial(i);
            }
            if self.clients[i].next_send.is_some_and(|t| t <= now) {
                self.generate(i);
            }
        }
        if let Some(e) = &mut self.server.endpoint
            && e.poll_timeout().is_some_and(|d| self.server.clock.sim_time_of(d, now) <= now)
        {
            e.handle_timeout(self.server.clock.local(now));
        }
        if self.server.next_push.is_some_and(|t| t <= now) {
            self.push();
        }
        if self.next_attack.is_some_and(|t| t <= now) {
            self.attack();
        }
        if self.next_sweep <= now {
            self.next_sweep = now + SECOND / 10;
            self.sweep();
        }
    }

    // ------------------------------------------------------------ phases

    fn advance_phase(&mut self) {
        match self.phase {
            Phase::Faults => {
                let mut workload_done = self.clients.iter().all(|c| c.generated >= self.scenario.workload.messages);
                if self.scenario.hold_faults {
                    let t = &self.checker.totals;
                    let all = self.scenario.workload.messages * self.clients.len() as u64;
                    workload_done &= t.sent >= all && t.acked + t.failed + t.abandoned >= t.sent;
                }
                if workload_done && self.schedule_pos >= self.scenario.schedule.len() {
                    self.calm();
                    self.phase = Phase::Settle;
                    self.phase_deadline = self.now + nanos(self.scenario.settle_limit);
                    self.note(&[1], || "world".into(), "phase", || "settle: faults off".into());
                }
            }
            Phase::Settle => {
                if self.settled() {
                    self.phase = Phase::Closing;
                    self.phase_deadline = self.now + 60 * SECOND;
                    self.server.next_push = None;
                    let now = self.now;
                    for c in &mut self.clients {
                        c.reconnect_at = None;
                        if let Some(s) = &mut c.session {
                            c.attempt.closing = true;
                            s.close(c.clock.local(now), CloseCode::NO_ERROR, "done");
                        }
                    }
                    self.note(&[2], || "world".into(), "phase", || "closing".into());
                } else if self.now >= self.phase_deadline {
                    let detail = self.stuck();
                    self.violation(format!(
                        "liveness: {} after the faults stopped, the clients had not settled{detail}",
                        fmt_dur(self.scenario.settle_limit)
                    ));
                    self.phase = Phase::Done;
                }
            }
            Phase::Closing => {
                let clients_done = self.clients.iter().all(|c| c.session.is_none());
                let server_done = self.server.endpoint.as_ref().is_none_or(|e| e.session_count() == 0);
                if clients_done && server_done {
                    self.phase = Phase::Done;
                } else if self.now >= self.phase_deadline {
                    let n = self.server.endpoint.as_ref().map_or(0, |e| e.session_count());
                    self.violation(format!(
                        "close: 60 s after the clients closed, {} client sessions and {n} server sessions remain",
                        self.clients.iter().filter(|c| c.session.is_some()).count()
                    ));
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    /// Faults off: partitions heal, links stop losing, corrupting and
    /// duplicating (latency and bandwidth stay).
    fn calm(&mut self) {
        self.next_attack = None;
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            c.partitioned = [false; 2];
            for l in [&mut c.up_dgram, &mut c.down_dgram, &mut c.up_stream, &mut c.down_stream] {
                l.config = l.config.calmed();
            }
            c.up_dgram.config.down = c.datagrams_blocked;
            c.down_dgram.config.down = c.datagrams_blocked;
            self.flush_backlog(i);
            self.restart_client(i);
        }
        if self.server.endpoint.is_none() {
            self.start_server();
        }
    }

    fn settled(&mut self) -> bool {
        if let Some(e) = &mut self.server.endpoint {
            for (sid, ss) in self.server.sessions.iter_mut() {
                if let Some(s) = e.session_mut(SessionHandle(*sid)) {
                    ss.last_stats = s.stats();
                }
            }
        }
        let clients = self.clients.iter().all(|c| {
            c.pending.is_empty()
                && c.attempt.subs.values().all(|s| s.done)
                && c.attempt.sid.is_some_and(|sid| self.checker.awaiting_responses(sid) == 0)
                && c.paths.iter().any(|p| p.alive)
                && c.session
                    .as_ref()
                    .is_some_and(|s| s.is_established() && s.stats().unacked_messages == 0 && c.attempt.connected)
        });
        let server = self.server.endpoint.is_some();
        clients && server && self.server.sessions.values().all(|s| s.last_stats.unacked_messages == 0)
    }

    // ------------------------------------------------------------ the server

    fn start_server(&mut self) {
        let inc = self.server.incarnation;
        self.server.incarnation += 1;
        self.server.started_at = self.now;
        let mut rng = ChaCha20Rng::from_seed(protocol_seed(self.seed, 1_000_000 + inc));
        let local = self.server.clock.local(self.now);
        match Endpoint::new(local, self.endpoint_config.clone(), &mut rng) {
            Ok(e) => self.server.endpoint = Some(e),
            Err(e) => self.violation(format!("server configuration refused: {e}")),
        }
        self.server.sessions.clear();
        if let Some(p) = self.scenario.workload.push_interval
            && self.phase < Phase::Closing
        {
            self.server.next_push = Some(self.now + nanos(p));
        }
        self.note(&[3, inc], || "server".into(), "start", || format!("incarnation {inc}"));
    }

    fn crash_server(&mut self) {
        let Some(e) = self.server.endpoint.take() else { return };
        self.server.past_endpoints.push(e.stats());
        let stats: Vec<_> = self.server.sessions.values().map(|s| s.last_stats).collect();
        self.server.past_stats.extend(stats);
        self.server.sessions.clear();
        self.server.next_push = None;
        self.checker.server_lost();
        // The server's connections are reset.
        let conns: Vec<u64> = self.conns.iter().filter(|(_, c)| c.alive).map(|(k, _)| *k).collect();
        for id in conns {
            self.sever_conn(id, false);
        }
        self.note(&[4], || "server".into(), "crash", String::new);
    }

    fn server_events(&mut self) {
        let now = self.now;
        if !self.server.reading {
            return;
        }
        loop {
            let Some(e) = self.server.endpoint.as_mut() else { return };
            let Some(ev) = e.poll_event() else { return };
            match ev {
                EndpointEvent::NewSession(h, remote) => {
                    self.server.sessions.insert(h.0, ServerSession::default());
                    self.note(&[5, h.0], || "server".into(), "accept", || format!("{:016x} from {}", h.0, remote.addr));
                }
                EndpointEvent::Session(h, ev) => self.server_event(h, ev, now),
                EndpointEvent::CloseRemote(remote) => {
                    // The server resets a connection whose stream broke.
                    if let Some(&id) = self.conn_by_addr.get(&remote.addr) {
                        self.sever_conn(id, false);
                    }
                }
                _ => {}
            }
        }
    }

    fn server_event(&mut self, h: SessionHandle, ev: Event, now: u64) {
        let sid = h.0;
        let local = self.server.clock.local_ns(now);
        self.note(&[6, sid, event_code(&ev)], || "server".into(), "event", || format!("{sid:016x} {}", describe(&ev)));
        match ev {
            Event::Message(m) => {
                self.checker.delivered(now, Side::Server, sid, &m);
                match m.kind {
                    MessageKind::Request => self.answer(sid, &m),
                    MessageKind::Subscribe => self.accept_subscription(sid, &m),
                    MessageKind::Unsubscribe(sub) => {
                        if let Some(s) = self.server.sessions.get_mut(&sid) {
                            s.subs.remove(&sub.0);
                        }
                    }
                    _ => {}
                }
            }
            Event::Acked(id) => self.checker.acked(now, Side::Server, sid, id.0),
            Event::Failed(id, why) => {
                if why == FailReason::Unsubscribed {
                    self.marks.insert(Mark::ItemWithdrawn);
                }
                self.checker.failed(now, Side::Server, sid, id.0, why == FailReason::Unsubscribed);
            }
            Event::Closed(_) => {
                self.checker.closed(now, Side::Server, sid);
                if self.checker.was_client_lost(sid) {
                    self.marks.insert(Mark::OrphanClosed);
                }
                if let Some(s) = self.server.sessions.remove(&sid) {
                    self.server.past_stats.push(s.last_stats);
                }
            }
            Event::Connected { .. } => {
                self.checker.event(now, Side::Server, sid, "Connected");
                if let Some(s) = self.server.sessions.get_mut(&sid) {
                    s.established = true;
                }
            }
            Event::KeyUpdated { sending: false, .. } => {
                if let Some(s) = self.server.sessions.get_mut(&sid) {
                    s.recv_key_changed = Some(local);
                }
            }
            other => self.checker.event(now, Side::Server, sid, brief(&other)),
        }
    }

    /// The server application answers a request: the response body is the
    /// request's digest and length, so the checker can tie them.
    fn answer(&mut self, sid: u64, m: &xtmp_core::session::Message) {
        let Some(e) = self.server.endpoint.as_mut() else { return };
        let Some(s) = e.session_mut(SessionHandle(sid)) else { return };
        let mut b = digest(&m.body).to_be_bytes().to_vec();
        b.extend_from_slice(&(m.body.len() as u64).to_be_bytes());
        let class = class_of(m.priority);
        let opts = SendOptions { priority: priority(class), ..SendOptions::default() };
        match s.respond(m.id, m.message_type, b.clone().into(), opts) {
            Ok(id) => {
                self.checker.sent(Side::Server, sid, id.0, &b, class, true, SentKind::Response(m.id.0));
                let req = m.id.0;
                self.note(&[16, id.0], || "server".into(), "respond", || format!("{} to request {req}", id.0));
            }
            Err(e) => self.violation(format!("server could not answer request {}: {e}", m.id.0)),
        }
    }

    fn push(&mut self) {
        let Some(interval) = self.scenario.workload.push_interval else { return };
        self.server.next_push = Some(self.now + nanos(interval));
        let Some(e) = self.server.endpoint.as_mut() else { return };
        let sids: Vec<u64> = self.server.sessions.iter().filter(|(_, s)| s.established).map(|(k, _)| *k).collect();
        for &sid in &sids {
            let Some(s) = e.session_mut(SessionHandle(sid)) else { continue };
            self.server.pushes += 1;
            let b = body(u32::MAX, (sid >> 32) as u32, self.server.pushes, 48);
            let opts = SendOptions { stream_data: true, ..SendOptions::unreliable() };
            if let Ok(id) = s.send(MessageType::LIVE_UPDATES, b.clone(), opts) {
                self.checker.sent(Side::Server, sid, id.0, &b, 0, false, SentKind::Message);
            }
        }
        for sid in sids {
            self.push_items(sid);
        }
    }

    /// The server accepts a subscription and publishes to it from the next
    /// push on.
    fn accept_subscription(&mut self, sid: u64, m: &xtmp_core::session::Message) {
        let Some(e) = self.server.endpoint.as_mut() else { return };
        let Some(s) = e.session_mut(SessionHandle(sid)) else { return };
        let Some(filter) = Filter::decode(&m.body) else {
            return self.violation(format!("server: subscription {} has a filter it cannot read", m.id.0));
        };
        match s.respond(m.id, m.message_type, bytes::Bytes::new(), SendOptions::default()) {
            Ok(id) => {
                self.checker.sent(Side::Server, sid, id.0, &[], 0, true, SentKind::Response(m.id.0));
                if let Some(ss) = self.server.sessions.get_mut(&sid) {
                    ss.subs.insert(m.id.0, ServerSub { filter, pushed: 0 });
                }
            }
            Err(e) => self.violation(format!("server could not accept subscription {}: {e}", m.id.0)),
        }
    }

    /// One item to each of session `sid`'s subscriptions; the last one's
    /// end, when the server ends it. A subscription its client ends is fed
    /// until the client leaves (best-effort items may all be lost).
    fn push_items(&mut self, sid: u64) {
        let Some(e) = self.server.endpoint.as_mut() else { return };
        let Some(ss) = self.server.sessions.get_mut(&sid) else { return };
        let Some(s) = e.session_mut(SessionHandle(sid)) else { return };
        let mut gone = Vec::new();
        for (&sub, state) in ss.subs.iter_mut() {
            let f = state.filter;
            let id = SubscriptionId(sub);
            if state.pushed < f.items || !f.server_ends {
                let b = body(u32::MAX - 1, sub as u32, state.pushed, 40);
                let opts = if f.reliable { SendOptions::default() } else { SendOptions::unreliable() };
                match s.push(id, b.clone(), opts) {
                    Ok(m) => {
                        state.pushed += 1;
                        self.checker.sent(Side::Server, sid, m.0, &b, 0, f.reliable, SentKind::Item(sub));
                    }
                    Err(SendError::WouldBlock | SendError::SubscriptionFull(_)) => {}
                    Err(_) => gone.push(sub),
                }
            } else {
                match s.end_subscription(id, ErrorCode(0x100), "done") {
                    Ok(m) => self.checker.sent(Side::Server, sid, m.0, b"", 0, true, SentKind::End(sub)),
                    Err(SendError::WouldBlock) => continue,
                    Err(_) => {}
                }
                gone.push(sub);
            }
        }
        for sub in gone {
            ss.subs.remove(&sub);
        }
    }

    // ------------------------------------------------------------ clients

    fn connect(&mut self, i: usize) {
        if self.phase >= Phase::Closing || self.clients[i].crashed {
            return;
        }
        let now = self.now;
        let kind = match self.scenario.transport {
            Transport::Datagram => PathKind::Datagram,
            Transport::Stream | Transport::Hybrid => PathKind::Stream,
        };
        let c = &mut self.clients[i];
        let n = c.sessions_started;
        let path = match self.open_path(i, kind) {
            Some(p) => p,
            None => {
                // The server is down: try again later.
                let c = &mut self.clients[i];
                c.reconnect_at = Some(now + backoff(c.backoff));
                c.backoff += 1;
                return;
            }
        };
        let c = &mut self.clients[i];
        c.paths = vec![path];
        let mut rng = ChaCha20Rng::from_seed(protocol_seed(self.seed, ((i as u64) << 20) | u64::from(n)));
        let local = c.clock.local(now);
        match Session::connect(local, self.client_session.clone(), self.client_config.clone(), kind, &mut rng) {
            Ok(s) => {
                c.session = Some(s);
                c.sessions_started += 1;
                c.attempt = crate::node::Attempt::new(now);
                self.counters.sessions += 1;
                if n > 0 {
                    self.marks.insert(Mark::Reconnect);
                }
                let name = c.name();
                self.note(&[7, i as u64, u64::from(n)], || name, "connect", || format!("session {n} over {kind:?}"));
            }
            Err(e) => self.violation(format!("client{i} could not start a session: {e}")),
        }
    }

    /// The client's node crashes: the session and its sockets vanish
    /// without a word to the server, and the application's in-flight
    /// messages with them.
    fn crash_client(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if c.crashed {
            return;
        }
        c.crashed = true;
        if let Some(s) = c.session.take() {
            c.past_stats.push(s.stats());
        }
        c.in_flight.clear();
        c.attempt.subs.clear();
        c.next_send = None;
        c.reconnect_at = None;
        c.redial_at = None;
        let conns: Vec<u64> = c.paths.iter().filter(|p| p.alive).filter_map(|p| p.conn).collect();
        c.paths.clear();
        let sid = c.attempt.sid.take();
        let lost = sid.map_or(0, |sid| self.checker.client_lost(sid));
        for id in conns {
            self.sever_conn(id, true);
        }
        let name = self.clients[i].name();
        self.note(&[17, i as u64], || name, "crash", || format!("{lost} reliable messages unresolved"));
    }

    /// The client's node is back: a new session, from new sockets.
    fn restart_client(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        if !c.crashed {
            return;
        }
        c.crashed = false;
        c.backoff = 0;
        c.reconnect_at = Some(now);
        if self.phase == Phase::Faults {
            c.next_send = Some(now);
        }
        let name = c.name();
        self.note(&[18, i as u64], || name, "restart", String::new);
    }

    /// A new path of the given kind: a datagram socket, or a stream
    /// connection (`None` while the server is down).
    fn open_path(&mut self, i: usize, kind: PathKind) -> Option<ClientPath> {
        let addr = self.clients[i].new_addr();
        match kind {
            PathKind::Datagram => {
                self.addr_owner.insert(addr, i);
                Some(ClientPath { kind, addr, conn: None, alive: true })
            }
            PathKind::Stream => {
                self.server.endpoint.as_ref()?;
                let id = self.conns.len() as u64 + 1;
                self.conns.insert(id, Conn { client: i, addr, alive: true });
                self.conn_by_addr.insert(addr, id);
                self.clients[i].up_stream.reset();
                self.clients[i].down_stream.reset();
                Some(ClientPath { kind, addr, conn: Some(id), alive: true })
            }
        }
    }

    /// A client whose stream connection broke dials a new one (or, after
    /// a datagram path failed, opens a new socket).
    fn redial(&mut self, i: usize) {
        if self.clients[i].session.is_none() {
            return;
        }
        let kind = self.clients[i].redial_kind;
        let Some(path) = self.open_path(i, kind) else {
            let c = &mut self.clients[i];
            c.redial_at = Some(self.now + backoff(c.backoff));
            c.backoff += 1;
            return;
        };
        let c = &mut self.clients[i];
        let Some(s) = &mut c.session else { return };
        match s.add_path(kind, false) {
            Some(id) => {
                let idx = id.0 as usize;
                if c.paths.len() <= idx {
                    c.paths.resize(idx + 1, ClientPath { alive: false, ..path });
                }
                c.paths[idx] = path;
                c.backoff = 0;
            }
            None => self.violation(format!("client{i}: the session refused a new path")),
        }
    }

    /// The workload: the client application generates its next message.
    fn generate(&mut self, i: usize) {
        let w = self.scenario.workload.clone();
        let c = &mut self.clients[i];
        if c.generated >= w.messages || self.phase != Phase::Faults {
            c.next_send = None;
            return;
        }
        let ch = &mut self.choices;
        let large = ch.chance(w.large_chance);
        let len = if large { ch.between(w.small as u64, w.large as u64) } else { ch.between(16, w.small as u64) };
        let class = if ch.chance(w.emergency) {
            2
        } else if ch.chance(w.high) {
            1
        } else {
            0
        };
        let request = ch.chance(w.request);
        // Requests are reliable: the application waits for every answer
        // before it closes, which an unreliable request may never get.
        let reliable = !ch.chance(w.unreliable) || request;
        let message_type = CLIENT_TYPES[ch.below(CLIENT_TYPES.len() as u64) as usize];
        c.generated += 1;
        let b = body(i as u32, c.sessions_started, c.generated, len as usize);
        c.pending.push_back(AppMsg { message_type, body: b, class, reliable, request });
        let gap = if w.interval.is_zero() { 0 } else { ch.exponential(nanos(w.interval) as f64) as u64 };
        c.next_send = Some(self.now + gap);
        if large {
            self.marks.insert(Mark::Fragmented);
        }
    }

    /// Hands pending messages to the client's session while it takes them.
    fn feed(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let Some(s) = &mut c.session else { return };
        // The application waits for `Connected` (the handshake confirmed),
        // as the adapters do.
        if !s.is_established() || !c.attempt.connected || c.attempt.closing {
            return;
        }
        let Some(sid) = c.attempt.sid else { return };
        while let Some(m) = c.pending.front() {
            let opts = SendOptions {
                priority: priority(m.class),
                request: m.request,
                reliable: m.reliable,
                ..SendOptions::default()
            };
            match s.send(m.message_type, m.body.clone(), opts) {
                Ok(id) => {
                    let kind = if m.request { SentKind::Request } else { SentKind::Message };
                    self.checker.sent(Side::Client, sid, id.0, &m.body, m.class, m.reliable, kind);
                    self.checker.totals.first_sent_at.get_or_insert(self.now);
                    if let Some(m) = c.pending.pop_front() {
                        c.in_flight.insert(id.0, m);
                    }
                }
                Err(xtmp_core::session::SendError::WouldBlock) => return,
                Err(e) => {
                    self.checker
                        .violations
                        .push(crate::check::Violation { at: self.now, what: format!("client{i}: send refused: {e}") });
                    return;
                }
            }
        }
    }

    fn client_events(&mut self, i: usize) {
        let now = self.now;
        loop {
            let c = &mut self.clients[i];
            let Some(s) = &mut c.session else { return };
            if c.attempt.sid.is_none()
                && let Some(sid) = s.peer_session_id()
            {
                c.attempt.sid = Some(sid);
                self.checker.bind(sid, i);
            }
            let Some(ev) = s.poll_event() else { return };
            let sid = c.attempt.sid.unwrap_or(0);
            let local = c.clock.local_ns(now);
            let name = c.name();
            self.note(&[8, i as u64, event_code(&ev)], || name, "event", || describe(&ev));
            match ev {
                Event::Connected { .. } => {
                    let c = &mut self.clients[i];
                    c.attempt.connected = true;
                    c.attempt.established_local = Some(local);
                    c.attempt.established_at = Some(now);
                    c.backoff = 0;
                    self.counters.handshakes += 1;
                    self.check_handshake_time(i, true);
                    if self.scenario.transport == Transport::Hybrid {
                        self.add_datagram_path(i);
                    }
                    self.open_subscriptions(i);
                }
                Event::Message(m) => {
                    self.checker.delivered(now, Side::Client, sid, &m);
                    self.subscription_message(i, &m);
                }
                Event::Acked(id) => {
                    self.checker.acked(now, Side::Client, sid, id.0);
                    self.clients[i].in_flight.remove(&id.0);
                }
                Event::Failed(id, why) => {
                    self.checker.failed(now, Side::Client, sid, id.0, why == FailReason::Unsubscribed);
                    self.marks.insert(Mark::MessageFailed);
                    let c = &mut self.clients[i];
                    if let Some(m) = c.in_flight.remove(&id.0)
                        && why == FailReason::Closed
                    {
                        // The application tries again on its next session.
                        c.pending.push_back(m);
                    }
                }
                Event::KeyUpdated { sending: false, .. } => self.clients[i].attempt.recv_key_changed = Some(local),
                Event::PathFailed { path, .. } => self.path_failed(i, path),
                Event::Closed(reason) => {
                    self.client_closed(i, sid, reason);
                    return;
                }
                other => self.checker.event(now, Side::Client, sid, brief(&other)),
            }
        }
    }

    /// The client application subscribes, on each new session.
    fn open_subscriptions(&mut self, i: usize) {
        let w = &self.scenario.workload;
        let (n, items, reliable) = (w.subscriptions, w.items, w.reliable_items);
        const TYPES: [MessageType; 3] =
            [MessageType::LIVE_UPDATES, MessageType::EVENT_STREAM, MessageType::METRICS_STREAM];
        for k in 0..n {
            let filter =
                Filter { reliable: self.choices.chance(reliable), items, server_ends: self.choices.chance(0.5) };
            let c = &mut self.clients[i];
            let (Some(s), Some(sid)) = (&mut c.session, c.attempt.sid) else { return };
            let f = filter.encode();
            match s.subscribe(TYPES[k % 3], f.clone(), SendOptions::default()) {
                Ok(id) => {
                    c.attempt.subs.insert(id.0, ClientSub { filter, done: false });
                    self.checker.sent(Side::Client, sid, id.0, &f, 0, true, SentKind::Subscribe);
                }
                Err(e) => return self.violation(format!("client{i}: subscribe refused: {e}")),
            }
        }
    }

    /// The client application reads its subscriptions: it leaves one the
    /// server does not end once an item from its second half arrives.
    fn subscription_message(&mut self, i: usize, m: &xtmp_core::session::Message) {
        if let MessageKind::End(sub) = m.kind
            && m.end_reason() != Some((ErrorCode(0x100), "done".into()))
        {
            self.violation(format!("client{i}: subscription {} ended with {:?}", sub.0, m.end_reason()));
        }
        let c = &mut self.clients[i];
        let (Some(s), Some(sid)) = (&mut c.session, c.attempt.sid) else { return };
        match m.kind {
            MessageKind::Item(sub) => {
                let Some(cs) = c.attempt.subs.get_mut(&sub.0) else { return };
                let seq = m.body.get(8..16).map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
                if cs.filter.server_ends || cs.done || 2 * seq < cs.filter.items {
                    return;
                }
                match s.unsubscribe(sub) {
                    Ok(id) => {
                        cs.done = true;
                        self.checker.sent(Side::Client, sid, id.0, b"", 0, true, SentKind::Unsubscribe(sub.0));
                    }
                    Err(SendError::WouldBlock) => {}
                    Err(e) => self.violation(format!("client{i}: unsubscribe refused: {e}")),
                }
            }
            MessageKind::End(sub) => {
                if let Some(cs) = c.attempt.subs.get_mut(&sub.0) {
                    cs.done = true;
                }
            }
            _ => {}
        }
    }

    fn check_handshake_time(&mut self, i: usize, connected: bool) {
        let c = &self.clients[i];
        let took = self.now - c.attempt.started;
        let limit = nanos(self.scenario.session.handshake_timeout) as f64 * (1.0 + self.max_drift) + 1e6;
        if took as f64 > limit {
            let what = if connected { "completed" } else { "failed" };
            self.violation(format!(
                "client{i}: handshake {what} after {} (timeout {})",
                fmt_dur(Duration::from_nanos(took)),
                fmt_dur(self.scenario.session.handshake_timeout)
            ));
        }
    }

    fn client_closed(&mut self, i: usize, sid: u64, reason: CloseReason) {
        let now = self.now;
        let c = &mut self.clients[i];
        let closing = c.attempt.closing;
        let connected = c.attempt.connected;
        if let Some(s) = c.session.take() {
            c.past_stats.push(s.stats());
        }
        // The client's sockets close with the session.
        let conns: Vec<u64> = c.paths.iter().filter(|p| p.alive).filter_map(|p| p.conn).collect();
        c.paths.clear();
        c.redial_at = None;
        if c.attempt.sid.is_some() {
            self.checker.closed(now, Side::Client, sid);
        }
        for id in conns {
            self.sever_conn(id, true);
        }
        if !connected {
            match reason {
                CloseReason::HandshakeTimeout
                | CloseReason::HandshakeFailed(_)
                | CloseReason::Peer { .. }
                | CloseReason::PathsLost => {}
                ref other => self.violation(format!("client{i}: handshake ended with an unexpected reason: {other}")),
            }
            self.check_handshake_time(i, false);
        }
        if reason == CloseReason::IdleTimeout {
            self.marks.insert(Mark::IdleTimeout);
        }
        if reason == CloseReason::StatelessReset {
            self.marks.insert(Mark::StatelessReset);
            // Issue 42's bound: back within 2 s of the new server listening.
            let since = now.saturating_sub(self.server.started_at);
            if self.server.incarnation < 2 || since > 2 * SECOND {
                self.violation(format!("client{i}: reset {} ms after the server (re)started", since / 1_000_000));
            }
        }
        if !closing {
            // A handshake that fails loses nothing (the application has
            // not handed the session a message yet) and is retried.
            if self.scenario.lossless && connected {
                self.violation(format!("client{i}: session ended in a lossless scenario: {reason}"));
            }
            let c = &mut self.clients[i];
            let pending: Vec<AppMsg> = core::mem::take(&mut c.in_flight).into_values().collect();
            for m in pending.into_iter().rev() {
                c.pending.push_front(m);
            }
            let wait = backoff(c.backoff) + self.choices.below(SECOND / 10);
            let c = &mut self.clients[i];
            c.backoff += 1;
            c.reconnect_at = Some(now + wait);
        }
    }

    /// The client's session gave up on a path: the application closes its
    /// socket and opens a new one of the same kind a little later.
    fn path_failed(&mut self, i: usize, path: PathId) {
        let Some(p) = self.clients[i].paths.get(path.0 as usize).copied() else { return };
        if p.kind == PathKind::Datagram {
            self.marks.insert(Mark::DatagramPathFailed);
        }
        if let Some(id) = p.conn {
            self.sever_conn(id, true);
        }
        let c = &mut self.clients[i];
        c.paths[path.0 as usize].alive = false;
        let wait = self.choices.between(SECOND / 100, SECOND / 2);
        let c = &mut self.clients[i];
        c.redial_at = Some(self.now + wait);
        c.redial_kind = p.kind;
    }

    fn add_datagram_path(&mut self, i: usize) {
        let Some(path) = self.open_path(i, PathKind::Datagram) else { return };
        let c = &mut self.clients[i];
        let Some(s) = &mut c.session else { return };
        if let Some(id) = s.add_path(PathKind::Datagram, false) {
            let idx = id.0 as usize;
            if c.paths.len() <= idx {
                c.paths.resize(idx + 1, ClientPath { alive: false, ..path });
            }
            c.paths[idx] = path;
        }
    }

    // ------------------------------------------------------------ transmit

    /// Drains every node's output and events until nothing moves.
    fn pump(&mut self) {
        let mut buf = vec![0u8; 1 << 17];
        loop {
            let mut moved = false;
            for i in 0..self.clients.len() {
                self.client_events(i);
                self.feed(i);
                let now = self.now;
                loop {
                    let c = &mut self.clients[i];
                    let Some(s) = &mut c.session else { break };
                    let t = match s.poll_transmit(c.clock.local(now), &mut buf) {
                        Ok(Some(t)) => t,
                        Ok(None) => break,
                        Err(e) => {
                            self.violation(format!("client{i}: poll_transmit: {e}"));
                            return;
                        }
                    };
                    moved = true;
                    self.client_sent(i, t.path, buf[..t.len].to_vec());
                }
                self.client_events(i);
            }
            self.server_events();
            let now = self.now;
            while let Some(e) = self.server.endpoint.as_mut() {
                let (remote, len) = match e.poll_transmit(self.server.clock.local(now), &mut buf) {
                    Ok(Some(t)) => t,
                    Ok(None) => break,
                    Err(e) => {
                        self.violation(format!("server: poll_transmit: {e}"));
                        return;
                    }
                };
                moved = true;
                self.server_sent(remote, buf[..len].to_vec());
            }
            self.server_events();
            if !moved {
                return;
            }
        }
    }

    fn schedule(&mut self, arrivals: Vec<Arrival>, dest: Dest, link: &str) {
        for a in arrivals {
            match a.fault {
                Fault::Corrupted => self.counters.corrupted += 1,
                Fault::Duplicate | Fault::Replay => self.counters.duplicated += 1,
                _ => {}
            }
            let n = self.next_packet;
            self.next_packet += 1;
            let len = a.bytes.len();
            let fault = a.fault;
            self.note(
                &[9, a.at, len as u64, fault as u64],
                || link.to_string(),
                "send",
                || format!("{len} B {fault:?}"),
            );
            self.inflight.insert((a.at, n), Packet { dest, bytes: a.bytes, fault: a.fault, forged: false });
        }
    }

    fn client_sent(&mut self, i: usize, path: PathId, bytes: Vec<u8>) {
        self.counters.transmits += 1;
        let Some(p) = self.clients[i].paths.get(path.0 as usize).copied() else {
            return self.violation(format!("client{i}: transmit on unknown path {}", path.0));
        };
        if !p.alive {
            return;
        }
        let now = self.now;
        match p.kind {
            PathKind::Datagram => {
                let dest = Dest::Server { src: p.addr, kind: RemoteKind::Datagram, conn: None };
                self.capture(dest, p.addr, &bytes);
                let c = &mut self.clients[i];
                match c.up_dgram.datagram(now, &bytes, &mut self.choices) {
                    Ok(a) => self.schedule(a, dest, "up"),
                    Err(d) => self.dropped(d, bytes.len(), "up"),
                }
            }
            PathKind::Stream => {
                let conn = p.conn;
                let dest = Dest::Server { src: p.addr, kind: RemoteKind::Stream, conn };
                self.stream_send(i, conn.unwrap_or(0), true, dest, bytes);
            }
        }
    }

    fn server_sent(&mut self, remote: Remote, bytes: Vec<u8>) {
        self.counters.transmits += 1;
        let now = self.now;
        match remote.kind {
            RemoteKind::Datagram => {
                let dest = Dest::Client { dst: remote.addr, conn: None };
                self.capture(dest, SERVER, &bytes);
                let Some(&i) = self.addr_owner.get(&remote.addr) else { return self.dropped_unknown(remote) };
                let c = &mut self.clients[i];
                match c.down_dgram.datagram(now, &bytes, &mut self.choices) {
                    Ok(a) => self.schedule(a, dest, "down"),
                    Err(d) => self.dropped(d, bytes.len(), "down"),
                }
            }
            RemoteKind::Stream => {
                let Some(&id) = self.conn_by_addr.get(&remote.addr) else { return self.dropped_unknown(remote) };
                let Some(conn) = self.conns.get(&id).copied() else { return };
                if !conn.alive {
                    return;
                }
                let dest = Dest::Client { dst: remote.addr, conn: Some(id) };
                self.stream_send(conn.client, id, false, dest, bytes);
            }
        }
    }

    fn dropped_unknown(&mut self, remote: Remote) {
        // Only the attacker's own address is nobody's.
        if remote.addr != ATTACKER {
            self.violation(format!("server sent to {} which no client ever used", remote.addr));
        }
    }

    fn dropped(&mut self, why: crate::link::Drop, len: usize, link: &str) {
        self.counters.dropped += 1;
        self.note(&[10, why as u64, len as u64], || link.to_string(), "drop", || format!("{len} B {why:?}"));
    }

    /// Bytes on a stream connection: in order, possibly split into chunks;
    /// held while the direction is partitioned.
    fn stream_send(&mut self, i: usize, conn: u64, up: bool, dest: Dest, bytes: Vec<u8>) {
        let now = self.now;
        let mut pieces = vec![bytes];
        if self.scenario.split_stream_writes && self.choices.chance(0.3) {
            let b = pieces.pop().unwrap_or_default();
            let cut = self.choices.below(b.len() as u64 + 1) as usize;
            pieces = vec![b[..cut].to_vec(), b[cut..].to_vec()];
        }
        for piece in pieces {
            let c = &mut self.clients[i];
            let link = if up { &mut c.up_stream } else { &mut c.down_stream };
            match link.stream(now, &piece, &mut self.choices) {
                Some(a) => self.schedule(vec![a], dest, if up { "up tcp" } else { "down tcp" }),
                None => self.backlog.entry((conn, up)).or_default().push(piece),
            }
        }
    }

    fn flush_backlog(&mut self, i: usize) {
        let keys: Vec<(u64, bool)> =
            self.backlog.keys().filter(|(c, _)| self.conns.get(c).is_some_and(|c| c.client == i)).copied().collect();
        for (conn, up) in keys {
            let Some(chunks) = self.backlog.remove(&(conn, up)) else { continue };
            let Some(cn) = self.conns.get(&conn).copied() else { continue };
            if !cn.alive {
                continue;
            }
            let dest = if up {
                Dest::Server { src: cn.addr, kind: RemoteKind::Stream, conn: Some(conn) }
            } else {
                Dest::Client { dst: cn.addr, conn: Some(conn) }
            };
            for b in chunks {
                self.stream_send(i, conn, up, dest, b);
            }
        }
    }

    /// A stream connection breaks: both ends learn it; bytes in flight are
    /// lost. `by_client`: the client closed it (its session ended).
    fn sever_conn(&mut self, id: u64, by_client: bool) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if !conn.alive {
            return;
        }
        conn.alive = false;
        let conn = *conn;
        self.counters.severed += 1;
        self.backlog.remove(&(id, true));
        self.backlog.remove(&(id, false));
        let now = self.now;
        if let Some(e) = &mut self.server.endpoint {
            e.remote_closed(Remote { addr: conn.addr, kind: RemoteKind::Stream });
        }
        let wait = self.choices.between(SECOND / 100, SECOND / 2);
        let c = &mut self.clients[conn.client];
        if let Some(idx) = c.paths.iter().position(|p| p.conn == Some(id) && p.alive) {
            c.paths[idx].alive = false;
            if !by_client && let Some(s) = &mut c.session {
                s.path_closed(PathId(idx as u32));
                // Dial again shortly (a closing session needs a path too,
                // to deliver its Disconnect).
                c.redial_at = Some(now + wait);
                c.redial_kind = PathKind::Stream;
            }
        }
        let name = format!("client{}", conn.client);
        self.note(&[11, id], || name, "severed", || format!("connection {id}"));
    }

    // ------------------------------------------------------------ arrival

    fn deliver(&mut self, p: Packet) {
        let now = self.now;
        let len = p.bytes.len();
        match p.dest {
            Dest::Server { src, kind, conn } => {
                if let Some(id) = conn
                    && !self.conns.get(&id).is_some_and(|c| c.alive)
                {
                    return;
                }
                let Some(e) = &mut self.server.endpoint else { return };
                self.trace.record(
                    &[12, len as u64, p.forged as u64],
                    || ("server".into(), "recv".into(), format!("{len} B from {src} {:?}", p.fault)),
                    now,
                );
                e.handle_input(self.server.clock.local(now), Remote { addr: src, kind }, &p.bytes);
            }
            Dest::Client { dst, conn } => {
                if let Some(id) = conn
                    && !self.conns.get(&id).is_some_and(|c| c.alive)
                {
                    return;
                }
                let Some(&i) =
                    self.addr_owner.get(&dst).or_else(|| conn.and_then(|id| self.conns.get(&id)).map(|c| &c.client))
                else {
                    return;
                };
                let c = &mut self.clients[i];
                let Some(path) = c.path_at(dst, conn) else { return };
                let name = c.name();
                let Some(s) = &mut c.session else { return };
                self.trace.record(
                    &[13, i as u64, len as u64],
                    || (name, "recv".into(), format!("{len} B on path {}", path.0)),
                    now,
                );
                s.handle_input(c.clock.local(now), path, &p.bytes);
            }
        }
    }

    // ------------------------------------------------------------ actions

    fn who(&self, w: Who) -> Vec<usize> {
        match w {
            Who::All => (0..self.clients.len()).collect(),
            Who::Client(i) if i < self.clients.len() => vec![i],
            Who::Client(_) => Vec::new(),
        }
    }

    fn apply(&mut self, action: Action) {
        let a = format!("{action:?}");
        self.note(&[14, self.schedule_pos as u64], || "world".into(), "action", || a);
        let now = self.now;
        match action {
            Action::SetLink(w, dir, config) => {
                for i in self.who(w) {
                    let c = &mut self.clients[i];
                    let (a, b) = match dir {
                        Dir::Up => (&mut c.up_dgram, &mut c.up_stream),
                        Dir::Down => (&mut c.down_dgram, &mut c.down_stream),
                    };
                    let down = c.partitioned[dir as usize];
                    a.config = LinkConfig { down, ..config.clone() };
                    b.config = LinkConfig { down, ..config.clone() };
                }
            }
            Action::Partition(w, dir) => {
                for i in self.who(w) {
                    let c = &mut self.clients[i];
                    for d in [Dir::Up, Dir::Down] {
                        if dir.is_none_or(|x| x == d) {
                            c.partitioned[d as usize] = true;
                            let (a, b) = match d {
                                Dir::Up => (&mut c.up_dgram, &mut c.up_stream),
                                Dir::Down => (&mut c.down_dgram, &mut c.down_stream),
                            };
                            a.config.down = true;
                            b.config.down = true;
                        }
                    }
                }
            }
            Action::Heal(w) => {
                for i in self.who(w) {
                    let c = &mut self.clients[i];
                    c.partitioned = [false; 2];
                    c.datagrams_blocked = false;
                    for l in [&mut c.up_dgram, &mut c.down_dgram, &mut c.up_stream, &mut c.down_stream] {
                        l.config.down = false;
                    }
                    self.flush_backlog(i);
                }
            }
            Action::SetMtu(w, mtu) => {
                for i in self.who(w) {
                    let c = &mut self.clients[i];
                    c.up_dgram.config.mtu = mtu;
                    c.down_dgram.config.mtu = mtu;
                }
            }
            Action::BlockDatagrams(w) => {
                for i in self.who(w) {
                    let c = &mut self.clients[i];
                    c.datagrams_blocked = true;
                    c.up_dgram.config.down = true;
                    c.down_dgram.config.down = true;
                }
            }
            Action::Sever(w) => {
                for i in self.who(w) {
                    let ids: Vec<u64> =
                        self.clients[i].paths.iter().filter(|p| p.alive).filter_map(|p| p.conn).collect();
                    for id in ids {
                        self.sever_conn(id, false);
                    }
                }
            }
            Action::Rebind(w) => {
                for i in self.who(w) {
                    for k in 0..self.clients[i].paths.len() {
                        let p = self.clients[i].paths[k];
                        if p.alive && p.kind == PathKind::Datagram {
                            let addr = self.clients[i].new_addr();
                            self.addr_owner.insert(addr, i);
                            self.clients[i].paths[k].addr = addr;
                        }
                    }
                }
            }
            Action::CrashClient(w) => {
                for i in self.who(w) {
                    self.crash_client(i);
                }
            }
            Action::RestartClient(w) => {
                for i in self.who(w) {
                    self.restart_client(i);
                }
            }
            Action::CrashServer => self.crash_server(),
            Action::RestartServer => {
                if self.server.endpoint.is_none() {
                    self.start_server();
                }
            }
            Action::ClockStep(node, by) => match node {
                Some(i) if i < self.clients.len() => {
                    self.clients[i].attempt.forced_updates += 1;
                    self.clients[i].clock.step(now, nanos(by));
                }
                Some(_) => {}
                None => self.server.clock.step(now, nanos(by)),
            },
            Action::UpdateKey(w) => {
                for i in self.who(w) {
                    let c = &mut self.clients[i];
                    if let Some(s) = &mut c.session {
                        c.attempt.forced_updates += u64::from(s.update_key_now(c.clock.local(now)));
                    }
                }
            }
            Action::ServerReading(on) => self.server.reading = on,
            Action::Rekey(w) => {
                for i in self.who(w) {
                    let c = &mut self.clients[i];
                    if let Some(s) = &mut c.session {
                        s.rekey_now(c.clock.local(now));
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------ checks

    /// Periodic checks of every session: memory within its bounds, and the
    /// previous receive key erased once its grace period is over.
    fn sweep(&mut self) {
        let now = self.now;
        let bound = |cfg: &SessionConfig, max_message: usize| (cfg.max_reassembly_bytes + max_message) as u64;
        // Unread messages: a window and one message per priority class,
        // and as much again of unreliable ones (SPEC.md 4.6).
        let window = self.scenario.receive_window.unwrap_or(SessionParams::default().receive_window);
        let w = &self.scenario.workload;
        let unread_bound = 4 * (u64::from(window) + w.large.max(w.small) as u64);
        let grace = nanos(self.scenario.session.key_grace);
        let slack = SECOND / 5;
        let mut problems = Vec::new();
        let mut blocked = false;
        for c in &self.clients {
            let Some(s) = &c.session else { continue };
            let st = s.stats();
            blocked |= st.flow_blocked;
            let b = bound(&self.scenario.session, s.max_message_len());
            if st.reassembly_bytes > b {
                problems
                    .push(format!("client{}: {} bytes held for reassembly (bound {b})", c.index, st.reassembly_bytes));
            }
            if st.unread_bytes > unread_bound {
                problems.push(format!("client{}: {} bytes unread (bound {unread_bound})", c.index, st.unread_bytes));
            }
            let local = c.clock.local_ns(now);
            if st.previous_recv_key && c.attempt.recv_key_changed.is_none_or(|t| local > t + grace + slack) {
                problems.push(format!("client{}: the previous receive key outlived its grace period", c.index));
            }
            if let Some(p) = self.key_rate_problem(c, &st) {
                problems.push(p);
            }
        }
        let server_cfg = self.endpoint_config.session.clone();
        if let Some(e) = &mut self.server.endpoint {
            // All sessions together: the endpoint's budget, plus the
            // messages next in line (each up to twice its size while its
            // buffer grows) of each class of each session.
            let next_in_line = 3 * 2 * (w.large.max(w.small) + 64) * e.session_count();
            let b = self.endpoint_config.max_reassembly_bytes + next_in_line;
            if e.reassembly_bytes() > b {
                problems.push(format!("server: {} bytes held for reassembly in all (bound {b})", e.reassembly_bytes()));
            }
            let local = self.server.clock.local_ns(now);
            for (sid, ss) in self.server.sessions.iter_mut() {
                let Some(s) = e.session_mut(SessionHandle(*sid)) else { continue };
                let st = s.stats();
                ss.last_stats = st;
                blocked |= st.flow_blocked;
                if st.unread_bytes > unread_bound {
                    problems
                        .push(format!("server {sid:016x}: {} bytes unread (bound {unread_bound})", st.unread_bytes));
                }
                let b = bound(&server_cfg, s.max_message_len());
                if st.reassembly_bytes > b {
                    problems.push(format!(
                        "server {sid:016x}: {} bytes held for reassembly (bound {b})",
                        st.reassembly_bytes
                    ));
                }
                if st.previous_recv_key && ss.recv_key_changed.is_none_or(|t| local > t + grace + slack) {
                    problems.push(format!("server {sid:016x}: the previous receive key outlived its grace period"));
                }
            }
        }
        if blocked {
            self.marks.insert(Mark::FlowBlocked);
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// Key rotation at the configured rate (SPEC.md 3.6): a client's
    /// sending generation is at least one per `key_update_interval` of
    /// simulated time since it was established (less one, and less two
    /// per hybrid re-key, which holds the ratchet while open and restarts
    /// its interval), and at most one per interval of its own clock's time
    /// plus one, plus the updates and clock steps the scenario forced and
    /// the re-keys.
    fn key_rate_problem(&self, c: &ClientNode, st: &xtmp_core::session::Stats) -> Option<String> {
        let (Some(at), Some(local_at)) = (c.attempt.established_at, c.attempt.established_local) else {
            return None;
        };
        let interval = nanos(self.scenario.session.key_update_interval).max(1);
        let generation = u64::from(st.send_generation);
        let at_least = ((self.now - at) / interval).saturating_sub(1 + 2 * st.rekeys);
        let local_age = c.clock.local_ns(self.now).saturating_sub(local_at);
        let at_most = local_age / interval + 1 + c.attempt.forced_updates + st.rekeys;
        (generation < at_least || generation > at_most).then(|| {
            format!(
                "client{}: sending generation {generation} after {} with keys updated every {} (expected {at_least} to {at_most})",
                c.index,
                fmt_dur(Duration::from_nanos(self.now - at)),
                fmt_dur(self.scenario.session.key_update_interval)
            )
        })
    }

    /// The rare paths this run reached, from the nodes' public counters.
    fn collect_marks(&mut self) {
        let mut all: Vec<xtmp_core::session::Stats> = Vec::new();
        for c in &self.clients {
            all.extend(c.past_stats.iter().copied());
            all.extend(c.session.as_ref().map(|s| s.stats()));
        }
        all.extend(self.server.past_stats.iter().copied());
        all.extend(self.server.sessions.values().map(|s| s.last_stats));
        let mut endpoints = self.server.past_endpoints.clone();
        endpoints.extend(self.server.endpoint.as_ref().map(|e| e.stats()));
        let sum = |f: &dyn Fn(&xtmp_core::session::Stats) -> u64| all.iter().map(f).sum::<u64>();
        let base = self.scenario.session.max_datagram as u64;
        self.counters.lost = sum(&|s| s.lost);
        self.counters.retransmissions = sum(&|s| s.retransmissions);
        let marks = [
            (Mark::Retransmission, self.counters.retransmissions),
            (Mark::Probe, sum(&|s| s.probes)),
            (Mark::ReassemblyExpired, sum(&|s| s.reassembly_expired)),
            (Mark::KeyUpdate, sum(&|s| u64::from(s.send_generation))),
            (Mark::Rekey, sum(&|s| s.rekeys)),
            (Mark::ReplayRejected, sum(&|s| s.replays_rejected)),
            (Mark::Rejected, sum(&|s| s.decrypt_failures + s.frames_dropped)),
            (Mark::HandshakeRetransmit, sum(&|s| s.handshake_retransmits)),
            (Mark::CookieIssued, endpoints.iter().map(|e| e.retries_sent).sum()),
            (Mark::Migration, endpoints.iter().map(|e| e.migrations).sum()),
            (Mark::MtuRaised, sum(&|s| u64::from(s.max_datagram > base))),
            (Mark::BlackHole, sum(&|s| s.black_holes)),
            (Mark::ReassemblyRefused, sum(&|s| s.reassembly_refused)),
        ];
        for (m, n) in marks {
            if n > 0 {
                self.marks.insert(m);
            }
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.now)
    }

    // ------------------------------------------------------------ attacker

    fn capture(&mut self, dest: Dest, src: SocketAddr, bytes: &[u8]) {
        if self.scenario.attacker.is_none() {
            return;
        }
        if self.captured.len() == 256 {
            self.captured.pop_front();
        }
        self.captured.push_back((dest, src, bytes.to_vec()));
    }

    /// The attacker injects one frame: a replay, a reflection, a forgery
    /// (a captured frame with a changed header and a valid CRC), or garbage.
    fn attack(&mut self) {
        let Some(att) = self.scenario.attacker else { return };
        let gap = self.choices.exponential(nanos(att.interval) as f64) as u64 + 1;
        self.next_attack = Some(self.now + gap);
        if self.captured.is_empty() {
            return;
        }
        let k = self.choices.below(self.captured.len() as u64) as usize;
        let (dest, src, bytes) = self.captured[k].clone();
        let kind = self.choices.below(4);
        let (dest, bytes) = match (kind, dest) {
            // Replay to the original destination.
            (0, d) => (d, bytes),
            // Reflect: back towards its sender.
            (1, Dest::Server { src, .. }) => (Dest::Client { dst: src, conn: None }, bytes),
            (1, Dest::Client { dst, .. }) => (Dest::Server { src: dst, kind: RemoteKind::Datagram, conn: None }, bytes),
            // Forge: same header with another sequence number, fresh CRC.
            (2, d) => (d, forge(&bytes, self.choices.draw())),
            // Garbage from the attacker's own address, or the victim's.
            (_, _) => {
                let len = self.choices.between(1, 1400) as usize;
                let g: Vec<u8> = (0..len).map(|_| self.choices.draw() as u8).collect();
                let from = if self.choices.chance(0.5) { src } else { ATTACKER };
                (Dest::Server { src: from, kind: RemoteKind::Datagram, conn: None }, g)
            }
        };
        self.counters.injected += 1;
        let delay = self.choices.below(SECOND / 20);
        let n = self.next_packet;
        self.next_packet += 1;
        let at = self.now + delay;
        self.note(
            &[15, kind, bytes.len() as u64],
            || "attacker".into(),
            "inject",
            || format!("kind {kind} {} B", bytes.len()),
        );
        self.inflight.insert((at, n), Packet { dest, bytes, fault: Fault::None, forged: true });
    }
}

/// A captured datagram's first frame with its sequence number changed and
/// its CRC recomputed, so only the AEAD can refuse it.
fn forge(bytes: &[u8], salt: u32) -> Vec<u8> {
    use xtmp_core::wire::{Frame, HEADER_LEN};
    let Ok((frame, _)) = Frame::decode(bytes, 1 << 20) else { return bytes.to_vec() };
    let mut h = *frame.header();
    h.sequence = h.sequence.wrapping_add(u64::from(salt % 1000) + 1);
    let payload = frame.payload().to_vec();
    let mut out = vec![0u8; HEADER_LEN + payload.len()];
    match Frame::encode(&h, &payload, &mut out) {
        Ok(n) => {
            out.truncate(n);
            out
        }
        Err(_) => bytes.to_vec(),
    }
}

fn priority(class: u8) -> xtmp_core::session::PriorityClass {
    use xtmp_core::session::PriorityClass;
    match class {
        2 => PriorityClass::Emergency,
        1 => PriorityClass::High,
        _ => PriorityClass::Normal,
    }
}

/// Reconnection backoff: 100 ms doubling to at most 10 s.
fn backoff(n: u32) -> u64 {
    (SECOND / 10).saturating_mul(1 << n.min(7)).min(10 * SECOND)
}

fn event_code(ev: &Event) -> u64 {
    match ev {
        Event::Connected { .. } => 1,
        Event::Message(m) => 2 | (m.id.0 << 8),
        Event::KeyUpdated { generation, .. } => 3 | (u64::from(*generation) << 8),
        Event::PathFailed { path, .. } => 4 | (u64::from(path.0) << 8),
        Event::PathValidated { path, .. } => 5 | (u64::from(path.0) << 8),
        Event::Acked(id) => 6 | (id.0 << 8),
        Event::Failed(id, _) => 7 | (id.0 << 8),
        Event::Closed(_) => 8,
        _ => 9,
    }
}

fn describe(ev: &Event) -> String {
    match ev {
        Event::Message(m) => format!("Message {} {:?} {:?} {} B", m.id.0, m.kind, m.priority, m.body.len()),
        Event::Connected { cipher, .. } => format!("Connected {cipher:?}"),
        other => format!("{other:?}"),
    }
}

fn brief(ev: &Event) -> &'static str {
    match ev {
        Event::Connected { .. } => "Connected",
        Event::Message(_) => "Message",
        Event::KeyUpdated { .. } => "KeyUpdated",
        Event::PathFailed { .. } => "PathFailed",
        Event::PathValidated { .. } => "PathValidated",
        Event::Acked(_) => "Acked",
        Event::Failed(..) => "Failed",
        Event::Closed(_) => "Closed",
        _ => "other event",
    }
}

pub(crate) fn fmt_dur(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}
