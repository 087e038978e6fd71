//! One XTMP session: the handshake as its first phase, then encrypted
//! frames with sequencing, replay protection, key rotation, heartbeats,
//! request/response correlation, subscriptions and close (SPEC.md
//! sections 3 and 4).
//!
//! # Driving a session
//!
//! A [`Session`] is a value with no I/O. Its caller (an adapter, the
//! simulator, a test) runs the same loop:
//!
//! 1. feed every datagram or stream chunk to [`Session::handle_input`];
//! 2. call [`Session::poll_transmit`] with a buffer of
//!    [`Session::max_transmit_len`] bytes until it returns `Ok(None)`,
//!    sending each transmit on the path it names;
//! 3. drain [`Session::poll_event`];
//! 4. sleep until [`Session::poll_timeout`], then call
//!    [`Session::handle_timeout`].
//!
//! `poll_timeout` and `handle_timeout` read the same deadlines, so handling
//! the polled deadline always makes progress, and a spurious
//! `handle_timeout` does nothing. While output is waiting, `poll_timeout`
//! answers with the last `now` the session saw.
//!
//! Step 3 is also flow control (SPEC.md 4.6): a message's bytes count
//! against the window this side announced until the application takes it
//! from `poll_event`, and taking it may queue a MaxData for the peer (so
//! check `poll_timeout` after draining events, as step 4 does). An
//! application that cannot keep up simply reads later: its peer waits, and
//! memory stays bounded. On the sending side, [`Session::send`] returns
//! [`SendError::WouldBlock`] at the configured queue limits and
//! [`Event::Writable`] follows when there is room.
//!
//! Servers do not create sessions directly: the [`crate::endpoint::Endpoint`]
//! reassembles ClientHellos, applies the cookie policy and creates them.

use alloc::collections::{BTreeSet, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::{Bytes, BytesMut};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::crypto::{AeadAlgorithm, CryptoProvider};
use crate::handshake::{
    ClientConfig, ClientHandshake, ExpectClientFlight, ExpectServerFlight, ExpectServerHello, HandshakeError,
    HandshakeOutcome, Role, ServerConfig, ServerHandshake, messages,
};
use crate::reliability::ack::AckState;
use crate::reliability::congestion::Controller;
use crate::reliability::delivery::Inbound;
use crate::reliability::flow::{RecvCredit, SendCredit};
use crate::reliability::outbound::Outbound;
use crate::reliability::pacing::{Pacer, Rate};
use crate::reliability::recovery::{Recovery, SentFrame};
use crate::reliability::rtt::RttEstimator;
use crate::time::Instant;
use crate::wire::{DatagramFrames, Deframer, Flags, Frame, HEADER_LEN, Header, MessageType, TypeClass};

pub(crate) mod carrier;
pub(crate) mod codec;
mod config;
mod event;
mod exporter;
mod input;
mod mtu;
mod output;
#[cfg(test)]
mod overrun_tests;
mod path;
pub(crate) mod record;
mod rekey;
mod reliable;
pub(crate) mod replay;
pub mod reset;
mod send;
mod subscription;
mod timers;

pub use codec::MAX_REASON_LEN;
pub use config::{ConfigError, MIN_DATAGRAM, PathPolicy, SessionConfig};
pub use event::{
    BufferTooSmall, CloseCode, CloseReason, ErrorCode, Event, FailReason, Message, MessageId, MessageKind, PathId,
    PathKind, SendError, Stats, SubscriptionId, Transmit,
};
pub use exporter::{CHANNEL_BINDING_LABEL, CHANNEL_BINDING_LEN, ExportError};

pub use rekey::{REKEY, REKEY_ACK};

use carrier::{FlightRecv, FlightSend};
use codec::{DataHeader, HandshakeChunk};
use path::{Path, PathQueue};
use record::{Generation, OpenError, RecvKeys, SendKeys};
use replay::ReplayWindow;

/// Control frame: path challenge (8 random bytes), answered by a path response.
pub const PATH_CHALLENGE: MessageType = MessageType(0xC1);
/// Control frame: path response, echoing a challenge.
pub const PATH_RESPONSE: MessageType = MessageType(0xC2);
/// Control frame: acknowledgement ranges (SPEC.md section 4.3).
pub const ACK: MessageType = MessageType(0xC0);
/// Control frame: the sender gave up on reliable messages below a floor
/// (SPEC.md section 4.4).
pub const FORWARD: MessageType = MessageType(0xC5);
/// Control frame: padding, ignored by the receiver; an acknowledged one
/// is a path MTU probe (SPEC.md section 4.10).
pub const PADDING: MessageType = MessageType(0xC7);
/// Control frame: the receiver raises the flow-control limit of a priority
/// class (SPEC.md section 4.6).
pub const MAX_DATA: MessageType = MessageType(0xC6);
/// Control frame: a subscriber raises the flow-control limit of one of its
/// subscriptions (SPEC.md section 4.9).
pub const SUBSCRIPTION_CREDIT: MessageType = MessageType(0xC8);

/// Options of [`Session::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendOptions {
    /// The priority class.
    pub priority: PriorityClass,
    /// Whether the message is a request (the peer answers with a response).
    pub request: bool,
    /// Whether the message is an item of a live stream (`STREAM_DATA`).
    pub stream_data: bool,
    /// Reliable (the default): repeated until the peer acknowledges it,
    /// delivered exactly once and in send order within its priority class,
    /// and reported by [`Event::Acked`] or [`Event::Failed`]. Unreliable:
    /// sent once, delivered at most once, in any order.
    pub reliable: bool,
    /// How long a reliable message may wait for its acknowledgement before
    /// [`Event::Failed`]; `None` for [`SessionConfig::delivery_timeout`].
    pub deadline: Option<Duration>,
    /// LZ4-compress the body on the wire (SPEC.md section 4.8) if it is at
    /// least [`crate::compression::MIN_COMPRESS_LEN`] bytes and compression
    /// makes it smaller; the peer's application receives the original body.
    /// Off by default: worth it for large textual or repetitive bodies.
    pub compress: bool,
    /// The kind of path the message prefers in a hybrid session; `None`
    /// for [`SessionConfig::path_policy`]'s choice by type.
    pub path: Option<PathKind>,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            priority: PriorityClass::Normal,
            request: false,
            stream_data: false,
            reliable: true,
            deadline: None,
            compress: false,
            path: None,
        }
    }
}

/// The priority class of an outgoing message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PriorityClass {
    /// Normal.
    #[default]
    Normal,
    /// `PRIORITY_HIGH`.
    High,
    /// `EMERGENCY`: sent before everything but control frames.
    Emergency,
}

impl SendOptions {
    /// A request with default options.
    pub fn request() -> Self {
        SendOptions { request: true, ..Default::default() }
    }

    /// A one-way message sent once, without acknowledgement (a live
    /// stream's items, say).
    pub fn unreliable() -> Self {
        SendOptions { reliable: false, ..Default::default() }
    }
}

pub(super) enum State {
    /// Client: ClientHello sent, waiting for a ServerHello or Retry.
    ClientHello(ExpectServerHello),
    /// Client: ServerHello processed, waiting for the server's Encrypted message.
    ClientFlight(ExpectServerFlight),
    /// Server: flight sent, waiting for the client's.
    ServerFlight(ExpectClientFlight),
    Established,
    /// `close` was called: queued messages go out, then Disconnect.
    Closing,
    /// Disconnect sent or received: stray frames are ignored until `until`.
    Draining {
        until: Instant,
    },
    Closed,
}

/// What differs between a client's and a server's new session.
struct Start {
    role: Role,
    state: State,
    local_sid: u64,
    kind: PathKind,
    params: crate::handshake::SessionParams,
}

/// What an outgoing frame carries besides its body.
#[derive(Clone, Copy, Debug)]
pub(super) enum Head {
    Data(DataHeader),
    Heartbeat(u8, u64),
    /// The body is the whole payload.
    Raw,
    /// An ACK of what has been received, written when sent.
    Ack,
    /// A Forward for a priority class, its floor computed when sent.
    Forward(u8),
    /// A MaxData for a priority class, its limit computed when sent.
    MaxData(u8),
    /// A SubscriptionCredit for a subscription, its limit computed when sent.
    SubCredit(u64),
    /// A Padding frame of this many payload bytes: a path MTU probe.
    Padding(u32),
}

#[derive(Clone, Debug)]
pub(super) struct Outgoing {
    ty: MessageType,
    flags: Flags,
    head: Head,
    /// For data: the part of the message still to send in this item.
    body: Bytes,
    /// For data: where `body` starts within the message.
    offset: u64,
    /// For data: the message's length.
    total: u64,
    /// For reliable data: the message's credit offset (SPEC.md 4.6).
    credit: u64,
    /// For data: the kind of path it prefers (hybrid sessions); `None`:
    /// any.
    route: Option<PathKind>,
}

/// A data message built but not queued (SPEC.md 4.9: an item waiting for
/// its subscription's credit gets its place in its class only when it
/// goes).
#[derive(Debug)]
pub(super) struct Staged {
    /// Its send queue.
    q: usize,
    ty: MessageType,
    flags: Flags,
    /// Order 0 until it is queued.
    head: DataHeader,
    body: Bytes,
    /// For a reliable message, when it fails; `None`: the default from
    /// when it is queued.
    deadline: Option<Instant>,
    /// The kind of path it prefers.
    route: PathKind,
}

impl Outgoing {
    pub(super) fn new(ty: MessageType, flags: Flags, head: Head, body: Bytes) -> Outgoing {
        let total = body.len() as u64;
        Outgoing { ty, flags, head, body, offset: 0, total, credit: 0, route: None }
    }

    /// The reliable message's order number, 0 for anything else.
    pub(super) fn order(&self) -> u64 {
        match self.head {
            Head::Data(d) => d.order,
            _ => 0,
        }
    }

    /// Whether the item counts against the application's send queue
    /// limits while queued: unreliable data. (Reliable messages count
    /// until acknowledged, through `outbound`; the session's own control
    /// frames never do.)
    pub(super) fn counted(&self) -> bool {
        matches!(self.head, Head::Data(d) if d.order == 0)
    }
}

/// Queue indices, highest priority first.
const Q_CONTROL: usize = 0;
const Q_EMERGENCY: usize = 1;
const Q_HIGH: usize = 2;
const Q_NORMAL: usize = 3;

/// One XTMP session, client or server. See the module documentation for
/// the call order.
pub struct Session {
    config: Arc<SessionConfig>,
    provider: Arc<dyn CryptoProvider>,
    role: Role,
    rng: ChaCha20Rng,
    state: State,
    /// The id frames to this side carry.
    local_sid: u64,
    /// The id frames to the peer carry, once known.
    peer_sid: Option<u64>,
    paths: Vec<Path>,
    primary: PathId,
    /// Frames that must go out on one particular path.
    path_queue: PathQueue,
    /// The path the newest authenticated frame arrived on.
    latest_path: PathId,
    /// The path and the peer's key generation of the frame being dispatched.
    rx_path: PathId,
    rx_generation: u32,
    rekey: rekey::Rekey,
    now: Instant,
    created: Instant,
    hs_send: Option<FlightSend>,
    hs_recv: FlightRecv,
    hs_ack_pending: bool,
    /// Client: a sealed Heartbeat goes along with the next resend of its
    /// final flight (SPEC.md 3.2), so a server that already has the flight
    /// learns the client's new address after a NAT rebinding.
    hs_probe: bool,
    /// Whether the peer has proven it completed the handshake: a server
    /// at once, a client on the first frame from the server that opens
    /// under the session keys (SPEC.md 3.1).
    confirmed: bool,
    /// Client: the `Connected` event, held until the handshake is confirmed.
    connected: Option<Event>,
    hs_frames: u64,
    retried: bool,
    /// Client: the token of the server's Retry, sent in every stage-`00`
    /// frame from then on (SPEC.md 3.2).
    retry_token: Vec<u8>,
    local_max_frame: u32,
    local_idle_ms: u32,
    peer_max_frame: u32,
    cipher: Option<AeadAlgorithm>,
    send_keys: Option<SendKeys>,
    recv_keys: Option<RecvKeys>,
    /// When the peer's current generation was first used, and frames opened under it.
    recv_since: Instant,
    recv_opened: u64,
    replay: ReplayWindow,
    next_seq: u64,
    next_message_id: u64,
    queues: [VecDeque<Outgoing>; 4],
    /// Bytes and items of unreliable data in `queues` (reliable messages
    /// are counted by `outbound` until acknowledged).
    queued_bytes: usize,
    queued_items: usize,
    /// The path the transmit being written goes on.
    tx_path: PathId,
    /// In a hybrid session, which of the two data paths tries first on the
    /// next transmit (they take turns, so neither starves the other).
    tx_turn: bool,
    /// The frame being written completes a reliable message and nothing
    /// else waits: it asks for an immediate ACK.
    tx_ack_now: bool,
    /// The data frame being written carries the pending ACK (SPEC.md 4.3).
    tx_with_ack: bool,
    /// The frame being dispatched asked for an immediate ACK.
    rx_ack_now: bool,
    /// What to acknowledge, and when.
    acks: AckState,
    /// Recent ACK frames sent: `(sequence number, largest acknowledged)`.
    /// Scratch for the ranges of an ACK being processed.
    acked_ranges: Vec<core::ops::Range<u64>>,
    recovery: Recovery,
    rtt: RttEstimator,
    congestion: alloc::boxed::Box<dyn Controller>,
    /// Spreads datagrams over the round trip.
    pacer: Pacer,
    /// Where the frame being written starts in its datagram.
    tx_offset: usize,
    /// Reliable messages waiting for acknowledgement.
    outbound: Outbound<Outgoing>,
    /// Fragments and reliable messages waiting for their turn.
    inbound: Inbound<reliable::Incoming>,
    /// What `inbound` may hold: the configured bound, or less when an
    /// endpoint shares a budget among its sessions.
    reassembly_budget: usize,
    local_max_message: u32,
    peer_max_message: u32,
    /// Reusable buffer for frames resolved by an ACK or a loss.
    resolved: Vec<SentFrame>,
    /// A Forward is queued for the priority class.
    forward_queued: [bool; 3],
    /// A MaxData is queued for the priority class.
    max_data_queued: [bool; 3],
    /// The peer's flow-control limits.
    send_credit: SendCredit,
    /// This side's flow-control window and what the application has read.
    recv_credit: RecvCredit,
    /// Bytes of unreliable messages in `events`.
    unread_unreliable: usize,
    /// Credit of best-effort items counted against their subscription's
    /// window, in the event queue.
    unread_best_effort: u64,
    /// `send` returned `WouldBlock`: report `Writable` once there is room.
    send_blocked: bool,
    /// Paths failed since the endpoint last looked (it drops their routes).
    failed_paths: Vec<PathId>,
    /// Requests from the peer not yet answered.
    requests_in: BTreeSet<u64>,
    /// This side's requests not yet answered.
    requests_out: BTreeSet<u64>,
    /// Open subscriptions, both ways.
    subs: subscription::Subscriptions,
    disconnect: Option<Outgoing>,
    close_reason: Option<CloseReason>,
    /// Events for the application, each with the flow-control credit its
    /// reading releases. `None`: an item of a subscription this side left
    /// before the application took it (its credit is released in turn).
    events: VecDeque<(Option<Event>, reliable::Credit)>,
    stats: Stats,
    idle_timeout: Option<Duration>,
    last_recv: Instant,
    last_send: Instant,
    /// When the last heartbeat was queued: a heartbeat that cannot leave
    /// (no live path) is not queued again on every timeout.
    last_heartbeat: Instant,
    ping: Option<(u64, Instant)>,
    scratch: Vec<u8>,
    /// `exp master` (SPEC.md 2.4), kept from the handshake for
    /// [`Session::export`]; zeroized on drop.
    exporter: Option<crate::crypto::Secret<{ crate::crypto::HASH_LEN }>>,
    /// A client's: the server's stateless reset token for this session
    /// (SPEC.md 3.7.1), if it gave one.
    reset_token: Option<[u8; reset::RESET_TOKEN_LEN]>,
    /// Where frames are decrypted. Message bodies are split off it, so a
    /// received message costs no allocation of its own (SPEC-independent:
    /// an implementation detail measured by the `session` benchmark).
    rx_buf: BytesMut,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("local_sid", &format_args!("{:016x}", self.local_sid))
            .field("established", &self.is_established())
            .field("primary", &self.primary.0)
            .field("paths", &self.paths.iter().map(|p| (p.kind, p.alive, p.validated)).collect::<alloc::vec::Vec<_>>())
            .field("queued", &self.queues.iter().map(|q| q.len()).collect::<alloc::vec::Vec<_>>())
            .field("path_queue", &self.path_queue.len())
            .field("acks_pending", &self.acks.pending())
            .field("ack_due", &self.ack_due())
            .field("can_send_data", &self.can_send_data())
            .field("in_flight", &self.recovery.in_flight())
            .field("unacked", &self.outbound.len())
            .finish_non_exhaustive()
    }
}

impl Session {
    fn new(
        config: Arc<SessionConfig>,
        provider: Arc<dyn CryptoProvider>,
        now: Instant,
        rng: &mut dyn rand_core::CryptoRng,
        start: Start,
    ) -> Session {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let replay = ReplayWindow::new(config.replay_window);
        let Start { role, state, local_sid, kind, params } = start;
        let mut s = Session {
            rng: ChaCha20Rng::from_seed(seed),
            provider,
            role,
            state,
            local_sid,
            peer_sid: None,
            paths: Vec::new(),
            primary: PathId(0),
            path_queue: PathQueue::new(),
            latest_path: PathId(0),
            rx_path: PathId(0),
            rx_generation: 0,
            rekey: rekey::Rekey::new(now),
            now,
            created: now,
            hs_send: None,
            hs_recv: FlightRecv::new(),
            hs_ack_pending: false,
            hs_probe: false,
            confirmed: false,
            connected: None,
            hs_frames: 0,
            retried: false,
            retry_token: Vec::new(),
            local_max_frame: params.max_frame_payload,
            local_idle_ms: params.idle_timeout_ms,
            // Until the peer's parameters arrive, within what this side
            // accepts itself, so `max_transmit_len` bounds every transmit.
            peer_max_frame: crate::wire::DEFAULT_MAX_PAYLOAD
                .min(params.max_frame_payload.max(crate::wire::MIN_MAX_PAYLOAD)),
            cipher: None,
            send_keys: None,
            recv_keys: None,
            recv_since: now,
            recv_opened: 0,
            replay,
            next_seq: 0,
            next_message_id: 1,
            queues: Default::default(),
            queued_bytes: 0,
            queued_items: 0,
            tx_path: PathId(0),
            tx_turn: false,
            tx_ack_now: false,
            tx_with_ack: false,
            rx_ack_now: false,
            acks: AckState::new(now),
            acked_ranges: Vec::new(),
            recovery: Recovery::new(),
            rtt: RttEstimator::new(config.initial_rtt),
            congestion: config.congestion.build(now, config.max_datagram as u64),
            pacer: Pacer::default(),
            tx_offset: 0,
            outbound: Outbound::new(),
            inbound: Inbound::new(),
            reassembly_budget: usize::MAX,
            local_max_message: params.max_message_len,
            peer_max_message: params.max_message_len,
            resolved: Vec::new(),
            forward_queued: [false; 3],
            max_data_queued: [false; 3],
            send_credit: SendCredit::new(params.receive_window),
            recv_credit: RecvCredit::new(params.receive_window),
            unread_unreliable: 0,
            unread_best_effort: 0,
            send_blocked: false,
            failed_paths: Vec::new(),
            requests_in: BTreeSet::new(),
            requests_out: BTreeSet::new(),
            subs: subscription::Subscriptions::new(params.subscription_window),
            disconnect: None,
            close_reason: None,
            events: VecDeque::new(),
            stats: Stats::default(),
            idle_timeout: None,
            last_recv: now,
            last_send: now,
            last_heartbeat: now,
            ping: None,
            scratch: Vec::new(),
            exporter: None,
            reset_token: None,
            rx_buf: BytesMut::new(),
            config,
        };
        s.push_path(kind, role == Role::Client || kind == PathKind::Stream);
        seed.fill(0);
        s
    }

    /// Starts a client session on its first path: generates the handshake
    /// keys and queues the ClientHello. `rng` seeds the session's own
    /// CSPRNG; nothing else is drawn from it.
    pub fn connect(
        now: Instant,
        config: Arc<SessionConfig>,
        client: Arc<ClientConfig>,
        path: PathKind,
        rng: &mut dyn rand_core::CryptoRng,
    ) -> Result<Session, ConnectError> {
        config.validate()?;
        let pad = if path == PathKind::Datagram { config.datagram_hello_padding } else { 0 };
        let mut seeded = ChaCha20Rng::from_seed({
            let mut s = [0u8; 32];
            rng.fill_bytes(&mut s);
            s
        });
        let provider = client.provider.clone();
        let params = client.params;
        let (expect, hello) = ClientHandshake::start(client, &mut seeded, pad)?;
        let sid = expect.client_session_id();
        let start = Start { role: Role::Client, state: State::ClientHello(expect), local_sid: sid, kind: path, params };
        let mut s = Session::new(config, provider, now, &mut seeded, start);
        s.hs_send = Some(FlightSend::new(codec::STAGE_CLIENT_HELLO, hello, s.config.handshake_rto));
        Ok(s)
    }

    /// Creates a server session from a complete ClientHello that passed the
    /// endpoint's admission checks: encapsulates, signs and queues the
    /// server's flight. `received` is how many bytes arrived on the path so
    /// far (the amplification budget is three times that).
    pub fn accept(
        now: Instant,
        config: Arc<SessionConfig>,
        server: Arc<ServerConfig>,
        path: PathKind,
        hello: &[u8],
        received: usize,
        rng: &mut dyn rand_core::CryptoRng,
    ) -> Result<Session, ConnectError> {
        let checked = ServerHandshake::check(&server, hello)?;
        Session::accept_checked(now, config, server, path, hello, checked, received, rng)
    }

    /// [`Session::accept`] for a hello the endpoint already checked.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn accept_checked(
        now: Instant,
        config: Arc<SessionConfig>,
        server: Arc<ServerConfig>,
        path: PathKind,
        hello: &[u8],
        checked: crate::handshake::server::Checked,
        received: usize,
        rng: &mut dyn rand_core::CryptoRng,
    ) -> Result<Session, ConnectError> {
        config.validate()?;
        let provider = server.provider.clone();
        let params = server.params;
        let (flight, expect) = ServerHandshake::accept_checked(server, checked, hello, rng)?;
        let sid = expect.server_session_id();
        let peer = expect.client_session_id();
        let start =
            Start { role: Role::Server, state: State::ServerFlight(expect), local_sid: sid, kind: path, params };
        let mut s = Session::new(config, provider, now, rng, start);
        s.peer_sid = Some(peer);
        s.paths[0].received = received as u64;
        s.hs_send = Some(FlightSend::new(codec::STAGE_SERVER_FLIGHT, flight, s.config.handshake_rto));
        Ok(s)
    }

    /// A session established from fixed traffic secrets, without a
    /// handshake: fuzzing starts from here, so every run reaches the
    /// established state in microseconds. `sids` is `[client, server]`.
    #[cfg(any(test, feature = "__fuzzing"))]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn established_for_fuzzing(
        role: Role,
        now: Instant,
        config: Arc<SessionConfig>,
        provider: Arc<dyn CryptoProvider>,
        kind: PathKind,
        cipher: AeadAlgorithm,
        secrets: [[u8; crate::crypto::HASH_LEN]; 2],
        sids: [u64; 2],
    ) -> Session {
        use crate::crypto::{Secret, Suite};
        use crate::handshake::{HandshakeOutcome, SessionParams};
        let (local_sid, peer_sid) = match role {
            Role::Client => (sids[0], sids[1]),
            Role::Server => (sids[1], sids[0]),
        };
        let mut rng = ChaCha20Rng::from_seed([role as u8 + 1; 32]);
        let start = Start { role, state: State::Closed, local_sid, kind, params: SessionParams::default() };
        let mut s = Session::new(config, provider, now, &mut rng, start);
        s.peer_sid = Some(peer_sid);
        s.establish(HandshakeOutcome {
            role,
            suite: Suite::V1,
            cipher,
            client_session_id: sids[0],
            server_session_id: sids[1],
            peer_identity: None,
            peer_params: SessionParams::default(),
            client_secret: Secret::new(secrets[0]),
            server_secret: Secret::new(secrets[1]),
            exporter: Secret::zero(),
            resumption: Secret::zero(),
            transcript_hash: [0; crate::crypto::HASH_LEN],
        });
        s.hs_ack_pending = false;
        // A settled session: a client's handshake counts as confirmed.
        s.confirmed = true;
        s.connected = None;
        s.events.clear();
        s
    }

    /// What a frame that fails authentication must leave untouched: the
    /// replay window, each path's highest sequence number and liveness, the
    /// key generations and their use, the queues, held bytes, events and
    /// the timers that authenticated frames reset.
    #[cfg(any(test, feature = "__fuzzing"))]
    pub(crate) fn authenticated_state(&self) -> impl PartialEq + core::fmt::Debug + use<> {
        (
            self.replay.clone(),
            self.paths.iter().map(|p| (p.highest, p.alive, p.validated)).collect::<Vec<_>>(),
            self.recv_keys.as_ref().map(|k| (k.current.number, k.previous.as_ref().map(|p| p.0.number))),
            (self.recv_opened, self.recv_since, self.last_recv, self.latest_path),
            (self.events.len(), self.inbound.held(), self.acks.pending(), self.queued_items, self.outbound.len()),
            (self.is_established(), self.is_closed(), self.stats.frames_received, self.stats.bytes_received),
        )
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The session id frames to this side carry.
    pub fn local_session_id(&self) -> u64 {
        self.local_sid
    }

    /// The session id frames to the peer carry, once known.
    pub fn peer_session_id(&self) -> Option<u64> {
        self.peer_sid
    }

    /// Whether the handshake has completed (this side has its traffic
    /// keys) and the session is not closing. A client's handshake is
    /// confirmed later, with [`Event::Connected`].
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established)
    }

    /// Whether the handshake is still running (not yet established, closing
    /// or closed).
    pub(crate) fn is_handshaking(&self) -> bool {
        matches!(self.state, State::ClientHello(_) | State::ClientFlight(_) | State::ServerFlight(_))
    }

    /// Established or closing gracefully: keys exist and frames flow.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, State::Established | State::Closing)
    }

    /// Whether the session has told its peer it is closing (the Disconnect
    /// went out) and is now draining: it ignores whatever still arrives
    /// until the drain period ends with the `Closed` event. Nothing this
    /// side queued is still to be sent.
    pub fn is_draining(&self) -> bool {
        matches!(self.state, State::Draining { .. })
    }

    /// Why the session is closing or closed, once that is decided.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_ref()
    }

    /// Whether the session has ended (the `Closed` event was queued).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The largest transmit [`Session::poll_transmit`] writes: a buffer
    /// this long never gets [`BufferTooSmall`]. It is fixed when the session
    /// is made (by this side's `max_frame_payload`), so a caller sizes its
    /// buffer once.
    pub fn max_transmit_len(&self) -> usize {
        HEADER_LEN + (self.local_max_frame.max(crate::wire::MIN_MAX_PAYLOAD) as usize)
    }

    /// The session's counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        if self.rtt.has_sample() {
            s.rtt = Some(self.rtt.get());
            s.rtt_var = self.rtt.var();
        }
        s.congestion_window = self.congestion.window();
        s.bytes_in_flight = self.recovery.in_flight();
        s.unacked_messages = self.outbound.len() as u64;
        s.subscriptions = self.subs.open_count() as u64;
        s.reassembly_bytes = self.inbound.held() as u64;
        let primary = &self.paths[self.primary.0 as usize];
        s.max_datagram = match primary.kind {
            PathKind::Datagram => primary.mtu.current() as u64,
            PathKind::Stream => 0,
        };
        s.send_generation = self.send_keys.as_ref().map_or(0, |k| k.current.number);
        s.recv_generation = self.recv_keys.as_ref().map_or(0, |k| k.current.number);
        s.previous_recv_key = self.recv_keys.as_ref().is_some_and(|k| k.previous.is_some());
        let reliable: u64 = (0..3).map(|c| self.recv_credit.unread(c)).sum();
        s.unread_bytes = reliable + self.unread_unreliable as u64 + self.unread_best_effort;
        s.items_waiting = self.subs.waiting_count() as u64;
        s.flow_blocked = s.items_waiting > 0
            || (Q_EMERGENCY..self.queues.len()).any(|q| !self.queues[q].is_empty() && !self.queue_ready(q));
        s
    }

    /// Bytes held for reassembly and reordering now (as
    /// [`Stats::reassembly_bytes`], without computing the rest).
    pub fn reassembly_held(&self) -> usize {
        self.inbound.held()
    }

    /// Lowers what this session holds for reassembly and reordering below
    /// [`SessionConfig::max_reassembly_bytes`] (a larger value restores
    /// it): how a server shares one budget among its sessions. Frames
    /// beyond it are dropped unacknowledged and the peer repeats them; the
    /// next message in line of each priority class is still taken, so the
    /// session always progresses. [`crate::endpoint::Endpoint`] does this
    /// itself with [`crate::endpoint::EndpointConfig::max_reassembly_bytes`].
    pub fn set_reassembly_budget(&mut self, bytes: usize) {
        self.reassembly_budget = bytes;
    }

    /// The largest body [`Session::send`] accepts: the peer's announced
    /// maximum message (larger bodies than a frame holds are fragmented).
    pub fn max_message_len(&self) -> usize {
        self.peer_max_message as usize
    }

    /// Client: starts a hybrid re-key now rather than at the configured
    /// interval. Returns whether one started (not on a server, before the
    /// handshake completes, or while one is open).
    pub fn rekey_now(&mut self, now: Instant) -> bool {
        self.now = self.now.max(now);
        let before = self.rekey.freezes_sending();
        self.start_rekey();
        !before && self.rekey.freezes_sending()
    }

    /// Ratchets this side's sending key now rather than at the configured
    /// interval or frame limit. Returns whether it did (not while a re-key
    /// is open or before the handshake completes).
    pub fn update_key_now(&mut self, now: Instant) -> bool {
        self.now = self.now.max(now);
        if !self.is_established() || self.rekey.freezes_sending() {
            return false;
        }
        let before = self.stats().send_generation;
        self.update_send_key();
        self.stats().send_generation != before
    }

    pub(super) fn unix_time(&self) -> Option<u64> {
        self.config.unix_time_origin.map(|o| o + self.now.as_nanos() / 1_000_000_000)
    }

    /// Closes the session gracefully: messages already queued are sent,
    /// then Disconnect with `code` and `reason`; after a short drain the
    /// `Closed` event reports [`CloseReason::Local`].
    pub fn close(&mut self, now: Instant, code: CloseCode, reason: &str) {
        self.now = self.now.max(now);
        self.close_inner(code, reason, false);
    }

    /// Closes the session at once: queued messages are discarded and only
    /// Disconnect is sent.
    pub fn abort(&mut self, now: Instant, code: CloseCode, reason: &str) {
        self.now = self.now.max(now);
        self.close_inner(code, reason, true);
    }

    /// Ends a handshake: tells the peer in the clear (code `0x0100` only)
    /// if it can route the frame, otherwise finishes at once.
    pub(super) fn abandon_handshake(&mut self) {
        self.hs_send = None;
        if self.peer_sid.is_some() {
            self.queue_disconnect(CloseCode::HANDSHAKE_FAILED, "");
            self.state = State::Closing;
        } else {
            let reason = self.close_reason.clone().unwrap_or(CloseReason::HandshakeTimeout);
            self.finish(reason);
        }
    }

    fn close_inner(&mut self, code: CloseCode, reason: &str, discard: bool) {
        if self.close_reason.is_some() || matches!(self.state, State::Draining { .. } | State::Closed) {
            return;
        }
        self.close_reason = Some(CloseReason::Local { code, reason: String::from(reason) });
        if !self.is_established() {
            return self.abandon_handshake();
        }
        if discard {
            self.clear_queues();
            self.fail_all(FailReason::Closed);
        }
        self.queue_disconnect(code, reason);
        self.state = State::Closing;
    }

    /// The next event for the application.
    ///
    /// Taking a [`Event::Message`] is what releases its bytes from the
    /// flow-control window (SPEC.md 4.6): a peer can send only so far
    /// ahead of what this side's application has read.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.writable_due() {
            self.send_blocked = false;
            return Some(Event::Writable);
        }
        while let Some((event, credit)) = self.events.pop_front() {
            self.release_credit(credit);
            if event.is_some() {
                return event;
            }
        }
        None
    }

    /// Whether `Writable` is to be reported: a `send` was refused, and
    /// now there is room.
    fn writable_due(&self) -> bool {
        self.send_blocked && matches!(self.state, State::Established) && self.has_room()
    }

    /// Whether `send` would take another message now (the queue limits).
    fn has_room(&self) -> bool {
        self.queued_items + self.outbound.len() < self.config.max_queued_messages
            && (self.queued_bytes as u64 + self.outbound.bytes()) < self.config.max_queued_bytes as u64
    }

    /// A path that failed since the last call (the endpoint's view).
    pub(crate) fn take_failed_path(&mut self) -> Option<PathId> {
        self.failed_paths.pop()
    }

    /// Whether an event may wait for [`Session::poll_event`] (which may
    /// still find only withdrawn items): a driver that called into the
    /// session outside its own loop (a send from another task) checks it
    /// to know whether its loop must run.
    pub fn has_event(&self) -> bool {
        !self.events.is_empty() || self.writable_due()
    }

    /// Queues an event that releases no credit.
    pub(super) fn push_event(&mut self, event: Event) {
        self.events.push_back((Some(event), reliable::Credit::None));
    }
}

/// Why a session could not be created.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// The session configuration is invalid.
    Config(ConfigError),
    /// The handshake could not start (or, on a server, the ClientHello was refused).
    Handshake(HandshakeError),
}

impl core::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConnectError::Config(e) => e.fmt(f),
            ConnectError::Handshake(e) => write!(f, "handshake: {e}"),
        }
    }
}

impl core::error::Error for ConnectError {}

impl From<ConfigError> for ConnectError {
    fn from(e: ConfigError) -> Self {
        ConnectError::Config(e)
    }
}

impl From<HandshakeError> for ConnectError {
    fn from(e: HandshakeError) -> Self {
        ConnectError::Handshake(e)
    }
}
