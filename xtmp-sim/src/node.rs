//! The simulated nodes: clients (a session, its paths, an application that
//! sends the workload and reconnects), the server (an endpoint and an
//! application that answers requests and pushes stream items), and the
//! message bodies they exchange.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use bytes::Bytes;
use xtmp_core::endpoint::Endpoint;
use xtmp_core::session::{PathId, PathKind, Session, Stats};
use xtmp_core::wire::MessageType;

use crate::clock::NodeClock;
use crate::link::{Link, LinkConfig};

/// The server's address.
pub(crate) const SERVER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7778));

/// A message the client application wants sent.
#[derive(Clone, Debug)]
pub(crate) struct AppMsg {
    pub(crate) message_type: MessageType,
    pub(crate) body: Bytes,
    pub(crate) class: u8,
    pub(crate) reliable: bool,
    pub(crate) request: bool,
    /// The hosted application's tag for its request.
    pub(crate) tag: Option<u64>,
}

/// One of a client's paths, as the network sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientPath {
    pub(crate) kind: PathKind,
    /// The address the server sees (changes on a NAT rebinding).
    pub(crate) addr: SocketAddr,
    /// For a stream path: its connection.
    pub(crate) conn: Option<u64>,
    pub(crate) alive: bool,
}

/// A session attempt's bookkeeping.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) started: u64,
    pub(crate) connected: bool,
    /// The server's session id, once the handshake told it.
    pub(crate) sid: Option<u64>,
    /// Local time of the peer's last key change (for the grace check).
    pub(crate) recv_key_changed: Option<u64>,
    /// Local time the session was established.
    pub(crate) established_local: Option<u64>,
    /// Simulator time the session was established.
    pub(crate) established_at: Option<u64>,
    /// Key updates and clock steps forced on the session by the scenario
    /// (each may add a sending generation beyond the configured rate).
    pub(crate) forced_updates: u64,
    pub(crate) closing: bool,
    /// The session's subscriptions, by id.
    pub(crate) subs: BTreeMap<u64, ClientSub>,
}

impl Attempt {
    /// A session attempt started at simulator time `started`.
    pub(crate) fn new(started: u64) -> Attempt {
        Attempt {
            started,
            connected: false,
            sid: None,
            recv_key_changed: None,
            established_local: None,
            established_at: None,
            forced_updates: 0,
            closing: false,
            subs: BTreeMap::new(),
        }
    }
}

/// A client node.
pub(crate) struct ClientNode {
    pub(crate) index: usize,
    pub(crate) ip: Ipv4Addr,
    next_port: u16,
    pub(crate) clock: NodeClock,
    pub(crate) session: Option<Session>,
    pub(crate) attempt: Attempt,
    pub(crate) sessions_started: u32,
    pub(crate) paths: Vec<ClientPath>,
    /// Messages generated and not yet accepted by a session.
    pub(crate) pending: VecDeque<AppMsg>,
    /// Messages generated so far.
    pub(crate) generated: u64,
    pub(crate) next_send: Option<u64>,
    pub(crate) reconnect_at: Option<u64>,
    pub(crate) backoff: u32,
    /// A new stream connection is due (the last one was severed).
    pub(crate) redial_at: Option<u64>,
    pub(crate) redial_kind: PathKind,
    pub(crate) up_dgram: Link,
    pub(crate) down_dgram: Link,
    pub(crate) up_stream: Link,
    pub(crate) down_stream: Link,
    /// Messages of the current session, to re-queue them if it dies.
    pub(crate) in_flight: BTreeMap<u64, AppMsg>,
    /// The hosted application's requests of the current session awaiting
    /// their answers: message id -> the application's tag.
    pub(crate) app_tags: BTreeMap<u64, u64>,
    /// Counters of sessions that ended, summed.
    pub(crate) past_stats: Vec<Stats>,
    pub(crate) partitioned: [bool; 2],
    /// Its datagram links are down (`BlockDatagrams`), even after the
    /// faults stop, until `Heal`.
    pub(crate) datagrams_blocked: bool,
    /// The node is down (between `CrashClient` and `RestartClient`).
    pub(crate) crashed: bool,
}

impl ClientNode {
    /// Client `index`; behind a NAT (`nat`), every client has the same
    /// address and its own range of ports.
    pub(crate) fn new(index: usize, clock: NodeClock, up: LinkConfig, down: LinkConfig, nat: bool) -> ClientNode {
        let ip = match nat {
            true => Ipv4Addr::new(10, 1, 0, 1),
            false => Ipv4Addr::new(10, 1, (index / 250) as u8, (index % 250 + 1) as u8),
        };
        ClientNode {
            index,
            ip,
            next_port: if nat { 2_000 + 100 * index as u16 } else { 40_000 },
            clock,
            session: None,
            attempt: Attempt::new(0),
            sessions_started: 0,
            paths: Vec::new(),
            pending: VecDeque::new(),
            generated: 0,
            next_send: None,
            reconnect_at: None,
            backoff: 0,
            redial_at: None,
            redial_kind: PathKind::Stream,
            up_dgram: Link::new(up.clone()),
            down_dgram: Link::new(down.clone()),
            up_stream: Link::new(up),
            down_stream: Link::new(down),
            in_flight: BTreeMap::new(),
            app_tags: BTreeMap::new(),
            past_stats: Vec::new(),
            partitioned: [false; 2],
            datagrams_blocked: false,
            crashed: false,
        }
    }

    /// A fresh source address (a new socket, or a NAT's new mapping).
    pub(crate) fn new_addr(&mut self) -> SocketAddr {
        let port = self.next_port;
        self.next_port = self.next_port.wrapping_add(1).max(1024);
        SocketAddr::V4(SocketAddrV4::new(self.ip, port))
    }

    /// The path the server reaches at `addr` (for arriving bytes).
    pub(crate) fn path_at(&self, addr: SocketAddr, conn: Option<u64>) -> Option<PathId> {
        self.paths.iter().position(|p| p.alive && p.addr == addr && p.conn == conn).map(|i| PathId(i as u32))
    }

    pub(crate) fn name(&self) -> String {
        format!("client{}", self.index)
    }
}

/// A server session's bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct ServerSession {
    pub(crate) established: bool,
    pub(crate) recv_key_changed: Option<u64>,
    pub(crate) last_stats: Stats,
    /// The subscriptions it publishes to, by id.
    pub(crate) subs: BTreeMap<u64, ServerSub>,
}

/// What a subscriber asked for, in its filter: `reliable u8 ‖ items u64 ‖
/// server_ends u8` (the simulated application's own convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Filter {
    /// Items are reliable (bundle status) or best-effort (metrics).
    pub(crate) reliable: bool,
    /// How many items the subscription runs for.
    pub(crate) items: u64,
    /// The server ends it after the last item; otherwise the client
    /// unsubscribes once it got half of them.
    pub(crate) server_ends: bool,
}

impl Filter {
    pub(crate) fn encode(&self) -> Bytes {
        let mut b = vec![u8::from(self.reliable)];
        b.extend_from_slice(&self.items.to_be_bytes());
        b.push(u8::from(self.server_ends));
        b.into()
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Filter> {
        if b.len() != 10 {
            return None;
        }
        let items = u64::from_be_bytes(b[1..9].try_into().ok()?);
        Some(Filter { reliable: b[0] == 1, items, server_ends: b[9] == 1 })
    }
}

/// A subscription the server publishes to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerSub {
    pub(crate) filter: Filter,
    /// Items pushed so far.
    pub(crate) pushed: u64,
}

/// A subscription of a client's current session.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientSub {
    pub(crate) filter: Filter,
    /// Ended by the server, or left by the client.
    pub(crate) done: bool,
}

/// The server node.
pub(crate) struct ServerNode {
    pub(crate) endpoint: Option<Endpoint>,
    pub(crate) clock: NodeClock,
    pub(crate) incarnation: u64,
    /// When the current incarnation started (virtual time).
    pub(crate) started_at: u64,
    pub(crate) sessions: BTreeMap<u64, ServerSession>,
    pub(crate) next_push: Option<u64>,
    pub(crate) pushes: u64,
    /// Counters of sessions that ended, and of endpoints that crashed.
    pub(crate) past_stats: Vec<Stats>,
    pub(crate) past_endpoints: Vec<xtmp_core::endpoint::EndpointStats>,
    /// Whether the server's application takes its events.
    pub(crate) reading: bool,
}

/// A body: `client u32 ‖ session u32 ‖ seq u64 ‖ filler` where the filler
/// is a function of the first 16 bytes, so a corrupted body cannot pass
/// for a different valid one by accident.
pub(crate) fn body(client: u32, session: u32, seq: u64, len: usize) -> Bytes {
    let mut b = Vec::with_capacity(len.max(16));
    b.extend_from_slice(&client.to_be_bytes());
    b.extend_from_slice(&session.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    let mut x = (u64::from(client) << 40) ^ (u64::from(session) << 32) ^ seq ^ 0x9E37_79B9_7F4A_7C15;
    while b.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (len - b.len()).min(8);
        b.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    b.truncate(len.max(16));
    Bytes::from(b)
}

/// The message types the client application uses, by kind.
pub(crate) const CLIENT_TYPES: [MessageType; 4] = [
    MessageType::BUNDLE_SUBMIT,
    MessageType::WALLET_REGISTER,
    MessageType::REGISTRY_QUERY,
    MessageType::WALLET_TRANSACTION,
];
