//! The world: nodes, links, the packets in flight, virtual time, and the
//! run's phases (faults, then a calm liveness phase, then a graceful close).
//!
//! The loop is the adapters' loop (GUIDE.md section 2), single-threaded:
//! drain every node's transmits into the links and its events into the
//! applications and the checker, then jump virtual time to the earliest of
//! the next arrival, node deadline, application timer or scheduled action.

mod app;
mod clients;
mod flood;
mod server;
mod transport;

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

use crate::app::Application;
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
    /// The flood's next spoofed hello.
    next_flood: Option<u64>,
    /// Whole ClientHellos the clients sent, for the flood to copy, and
    /// those being reassembled (by client id).
    hellos: Vec<Vec<u8>>,
    hello_parts: Vec<(u64, Vec<u8>)>,
    /// Bytes from and to each spoofed address.
    spoofed_in: BTreeMap<SocketAddr, u64>,
    spoofed_out: BTreeMap<SocketAddr, u64>,
    captured: std::collections::VecDeque<(Dest, SocketAddr, Vec<u8>)>,
    /// Stream bytes waiting for a partition to heal, per connection.
    backlog: BTreeMap<(u64, bool), Vec<Vec<u8>>>,
    max_drift: f64,
    /// The hosted application, if any, and its next tick.
    pub(crate) app: Option<Box<dyn Application>>,
    next_app_tick: Option<u64>,
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
        if let Some(n) = scenario.half_open_per_prefix {
            endpoint.max_half_open_per_prefix = n;
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
            .map(|i| ClientNode::new(i, clock(&mut choices), scenario.up.clone(), scenario.down.clone(), scenario.nat))
            .collect();
        let next_attack = scenario.attacker.map(|_| SECOND);
        let app = scenario.app.as_ref().map(|a| a.make(seed, scenario.clients));
        let next_flood = scenario.flood.map(|f| nanos(f.from));
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
            next_flood,
            hellos: Vec::new(),
            hello_parts: Vec::new(),
            spoofed_in: BTreeMap::new(),
            spoofed_out: BTreeMap::new(),
            captured: std::collections::VecDeque::new(),
            backlog: BTreeMap::new(),
            next_app_tick: app.as_ref().map(|_| 0),
            app,
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
        if self.checker.violations.is_empty()
            && let Some(Err(e)) = self.app.as_ref().map(|a| a.check(true))
        {
            self.violation(format!("application: {e}"));
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
        for x in [self.server.next_push, self.next_attack, self.next_flood, self.next_app_tick].into_iter().flatten() {
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
        if self.next_flood.is_some_and(|t| t <= now) {
            self.flood();
        }
        if self.next_app_tick.is_some_and(|t| t <= now) {
            self.app_tick();
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
        let app = self.app.as_ref().is_none_or(|a| (0..self.clients.len()).all(|i| a.done(i)));
        clients && server && app && self.server.sessions.values().all(|s| s.last_stats.unacked_messages == 0)
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
        self.check_half_open();
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
        if let Some(Err(e)) = self.app.as_ref().map(|a| a.check(false)) {
            problems.push(format!("application: {e}"));
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
            (Mark::Busy, endpoints.iter().map(|e| e.busy_sent).sum()),
            (Mark::HelloEvicted, endpoints.iter().map(|e| e.hellos_evicted).sum()),
            (Mark::ForgeryIgnored, sum(&|s| s.forgeries_ignored)),
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
        if self.scenario.attacker.is_none() && self.scenario.flood.is_none_or(|f| f.forgeries == 0.0) {
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
