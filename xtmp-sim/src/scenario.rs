//! What a run simulates: the nodes, the links and their faults, the
//! workload, scheduled actions (partitions, crashes, clock steps) and what
//! the run must reach.

use std::time::Duration;

use xtmp_core::endpoint::RetryPolicy;
use xtmp_core::session::SessionConfig;

use crate::choices::Choices;
use crate::link::LinkConfig;

/// How clients reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP-like datagrams.
    Datagram,
    /// A TCP-like stream (ordered, reliable until severed).
    Stream,
    /// A stream path and a datagram path in one session.
    Hybrid,
}

/// A direction of a client's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// Which clients an action applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// Every client.
    All,
    /// One client, by index.
    Client(usize),
}

/// Something that happens at a scheduled time.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Replaces a direction's faults (on the datagram and stream links).
    SetLink(Who, Dir, LinkConfig),
    /// Cuts a direction (`None`: both).
    Partition(Who, Option<Dir>),
    /// Ends every partition of these clients.
    Heal(Who),
    /// Changes the datagram MTU in both directions.
    SetMtu(Who, usize),
    /// Severs the clients' stream connections (a TCP reset).
    Sever(Who),
    /// The clients' datagram links go down both ways while their stream
    /// links keep working (a firewall starts dropping UDP), until `Heal`;
    /// the end of the faults does not lift it.
    BlockDatagrams(Who),
    /// The clients' datagram address changes, as behind a NAT.
    Rebind(Who),
    /// The server loses all its state; it is down until `RestartServer`.
    CrashServer,
    /// The server comes back, empty.
    RestartServer,
    /// The clients' nodes crash: their sessions, sockets and everything
    /// their applications had in flight are gone, with no Disconnect sent
    /// (the kernel resets their stream connections). They stay down until
    /// `RestartClient`; the messages they had not yet handed to a session
    /// survive, as in a durable outbox.
    CrashClient(Who),
    /// The clients come back with new sockets and start new sessions.
    RestartClient(Who),
    /// A client's clock (or the server's, with `None`) steps forward.
    ClockStep(Option<usize>, Duration),
    /// A client rotates its sending key now.
    UpdateKey(Who),
    /// A client starts a hybrid re-key now.
    Rekey(Who),
    /// The server's application stops (`false`) or resumes (`true`)
    /// taking its events: flow control must hold the clients back.
    ServerReading(bool),
}

/// What the clients and the server send.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Messages each client sends.
    pub messages: u64,
    /// Mean gap between a client's sends (exponential); zero sends all at once.
    pub interval: Duration,
    /// Most messages are up to this many bytes.
    pub small: usize,
    /// Chance that a message is large: up to `large` bytes.
    pub large_chance: f64,
    /// The largest message.
    pub large: usize,
    /// Chance that a message is unreliable.
    pub unreliable: f64,
    /// Chance that a message is a request (the server answers it).
    pub request: f64,
    /// Chance of `PRIORITY_HIGH` and of `EMERGENCY`.
    pub high: f64,
    /// Chance of `EMERGENCY`.
    pub emergency: f64,
    /// The server pushes an unreliable stream item to every client this
    /// often, and an item to each of the clients' subscriptions.
    pub push_interval: Option<Duration>,
    /// Subscriptions each client opens on every session once connected
    /// (to live updates, events and metrics in turn). Each runs for
    /// `items` items: then the server ends it, or, for half of them, the
    /// client unsubscribes once it got half of its items.
    pub subscriptions: usize,
    /// Items of each subscription.
    pub items: u64,
    /// Chance that a subscription's items are reliable (otherwise
    /// best-effort).
    pub reliable_items: f64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            messages: 200,
            interval: Duration::from_millis(5),
            small: 256,
            large_chance: 0.0,
            large: 64 * 1024,
            unreliable: 0.1,
            request: 0.2,
            high: 0.1,
            emergency: 0.02,
            push_interval: Some(Duration::from_millis(100)),
            subscriptions: 0,
            items: 20,
            reliable_items: 0.5,
        }
    }
}

/// A rare path a run should reach (a "coverage mark"): a sweep fails if a
/// scenario that expects one never reaches it, which catches a fault model
/// that silently stopped biting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mark {
    /// A frame's data was sent again after a loss.
    Retransmission,
    /// A probe timeout fired.
    Probe,
    /// An unreliable message expired incomplete.
    ReassemblyExpired,
    /// A sending key was ratcheted.
    KeyUpdate,
    /// A hybrid re-key completed.
    Rekey,
    /// A replayed or too old frame was refused.
    ReplayRejected,
    /// A frame failed authentication (or its CRC).
    Rejected,
    /// The server answered a hello with a Retry cookie.
    CookieIssued,
    /// A session moved to a new address or connection.
    Migration,
    /// Handshake bytes were sent again.
    HandshakeRetransmit,
    /// A reliable message failed (deadline or close).
    MessageFailed,
    /// A session ended on its idle timeout.
    IdleTimeout,
    /// A client started a new session after losing one.
    Reconnect,
    /// A message was fragmented (larger than a frame).
    Fragmented,
    /// A sender waited for its peer's flow-control credit.
    FlowBlocked,
    /// Path MTU discovery raised a datagram path above its base size.
    MtuRaised,
    /// A datagram path fell back to its base size after large datagrams
    /// kept disappearing.
    BlackHole,
    /// A frame was refused unacknowledged for lack of reassembly budget.
    ReassemblyRefused,
    /// A reliable subscription item failed because its subscriber left.
    ItemWithdrawn,
    /// The server closed a session whose client had crashed.
    OrphanClosed,
    /// A client's datagram path failed (its validation, or it stopped
    /// delivering while a stream path worked).
    DatagramPathFailed,
    /// A client's session ended on a genuine stateless Reset from a
    /// restarted server.
    StatelessReset,
    /// The server answered a hello with Busy (a full half-open limit).
    Busy,
    /// The server forgot an unproven hello to make room for a newer one.
    HelloEvicted,
    /// The flood attacker injected a spoofed hello.
    Flooded,
    /// A session ignored a forged frame from an address not validated as
    /// its peer's.
    ForgeryIgnored,
}

/// Clock faults.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClockFaults {
    /// Each node's clock starts up to this far ahead.
    pub max_offset: Duration,
    /// Each node's clock drifts by up to this many ppm either way.
    pub max_drift_ppm: u32,
}

/// The attacker node: it sees every datagram to and from the server and
/// injects replays, reflections, forgeries and garbage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attacker {
    /// Mean gap between injections.
    pub interval: Duration,
}

/// A flood of spoofed hellos (SPEC.md 3.2, "Admission"): copies of the
/// clients' captured ClientHello datagrams sent from addresses the
/// attacker does not own, spread over many /24 prefixes; each is either
/// the hello's first datagram alone or the whole hello.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flood {
    /// When it starts and stops (from the start of the run).
    pub from: Duration,
    /// When it stops.
    pub until: Duration,
    /// Mean gap between spoofed hellos.
    pub interval: Duration,
    /// How many /24 prefixes the spoofed addresses are spread over.
    pub prefixes: u8,
    /// The chance that a spoofed hello is sent whole (all its datagrams
    /// from one address) rather than its first datagram alone.
    pub whole: f64,
    /// The chance that an injection is instead a forgery of a captured
    /// sealed frame of a live session (one ciphertext bit flipped, racing
    /// the genuine one), from a spoofed address: off the path, it must
    /// change nothing.
    pub forgeries: f64,
    /// The chance that an injection is instead a whole hello over a new
    /// TCP connection from one of 32 addresses (one /24), never finished:
    /// the server spends a handshake on it and holds it half open.
    pub tcp_hellos: f64,
    /// The chance that an injection is instead a TCP connection from one
    /// of 250 addresses (one /24) that stays silent or announces a frame
    /// of 60,000 bytes, sends 1,000 of them and stalls.
    pub stalled_streams: f64,
}

/// A simulation scenario. Build one with the named constructors in
/// [`crate::scenarios`] or by hand; [`crate::run`] runs it from a seed.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Its name (the failure message's replay command uses it).
    pub name: String,
    /// Number of clients.
    pub clients: usize,
    /// How they reach the server.
    pub transport: Transport,
    /// The clients' session configuration.
    pub session: SessionConfig,
    /// The server's session configuration (`None`: the clients').
    pub server_session: Option<SessionConfig>,
    /// The server's cookie policy.
    pub retry: RetryPolicy,
    /// What all the server's sessions together may hold for reassembly
    /// (`None`: the endpoint's default).
    pub endpoint_reassembly: Option<usize>,
    /// The idle timeout both sides announce. Default 30 s.
    pub idle_timeout: Duration,
    /// The flow-control window both sides announce (`None`: the default).
    pub receive_window: Option<u32>,
    /// The subscription window the clients announce (`None`: the default).
    pub subscription_window: Option<u32>,
    /// Faults from the client to the server.
    pub up: LinkConfig,
    /// Faults from the server to the client.
    pub down: LinkConfig,
    /// Split stream writes into arbitrary chunks.
    pub split_stream_writes: bool,
    /// Clock faults.
    pub clocks: ClockFaults,
    /// An attacker, if any.
    pub attacker: Option<Attacker>,
    /// A hello flood, if any.
    pub flood: Option<Flood>,
    /// Every client behind one IP address (a NAT), each on its own ports.
    pub nat: bool,
    /// The server's half-open share of one address prefix (`None`: the
    /// endpoint's default).
    pub half_open_per_prefix: Option<usize>,
    /// A bound on every handshake of an honest client (a violation when
    /// one takes longer, or ends without a session for any reason but
    /// Busy). `None`: only the handshake timeout applies.
    pub max_handshake: Option<Duration>,
    /// What is sent.
    pub workload: Workload,
    /// Actions at their times (from the start of the run).
    pub schedule: Vec<(Duration, Action)>,
    /// Draw the link faults from the seed ("swarm" testing) instead of
    /// `up` and `down`.
    pub swarm: bool,
    /// With `swarm`: also draw the transport and up to four recoverable
    /// events (partitions, flapping, rebinding, stream resets, MTU dips,
    /// clock steps).
    pub swarm_events: bool,
    /// Marks each run should reach (checked over a sweep: at least one run
    /// of the sweep must reach each).
    pub marks: Vec<Mark>,
    /// Whether every reliable message must be acknowledged (no session may
    /// be lost to a fault: partitions shorter than the idle timeout, no
    /// crash). Otherwise messages may fail with their session, but never
    /// be duplicated, reordered or corrupted.
    pub lossless: bool,
    /// The server has a stateless reset key (from its identity, SPEC.md
    /// 3.7.1): a restarted server resets its previous run's sessions.
    pub stateless_reset: bool,
    /// Whether every client must be connected at the end of the fault phase
    /// (reconnections included).
    pub reconnect: bool,
    /// Keep the link faults on until every client message was
    /// acknowledged or failed, not only until the workload is generated
    /// (a bulk transfer measured under loss).
    pub hold_faults: bool,
    /// How long (simulated) the run may take before it is a liveness failure.
    pub time_limit: Duration,
    /// How long the liveness phase (faults calmed) may take to settle.
    pub settle_limit: Duration,
    /// An application to host instead of the synthetic workload's
    /// requests and answers (see [`crate::app`]); the workload's other
    /// parts (messages, subscriptions, pushes) still apply.
    pub app: Option<crate::app::AppSpec>,
}

impl Scenario {
    /// A clean scenario: one datagram client, 200 messages, no faults.
    pub fn new(name: &str) -> Scenario {
        let mut session = SessionConfig::default();
        session.heartbeat_interval = Some(Duration::from_secs(5));
        Scenario {
            name: name.to_string(),
            clients: 1,
            transport: Transport::Datagram,
            session,
            server_session: None,
            retry: RetryPolicy::UnderLoad(64),
            endpoint_reassembly: None,
            idle_timeout: Duration::from_secs(30),
            receive_window: None,
            subscription_window: None,
            up: LinkConfig::default(),
            down: LinkConfig::default(),
            split_stream_writes: true,
            clocks: ClockFaults::default(),
            attacker: None,
            flood: None,
            nat: false,
            half_open_per_prefix: None,
            max_handshake: None,
            workload: Workload::default(),
            schedule: Vec::new(),
            swarm: false,
            swarm_events: false,
            marks: Vec::new(),
            lossless: true,
            stateless_reset: false,
            reconnect: true,
            hold_faults: false,
            time_limit: Duration::from_secs(600),
            settle_limit: Duration::from_secs(120),
            app: None,
        }
    }

    /// Both directions' faults.
    pub fn links(mut self, config: LinkConfig) -> Scenario {
        self.up = config.clone();
        self.down = config;
        self
    }

    /// Adds an action at `at`.
    pub fn at(mut self, at: Duration, action: Action) -> Scenario {
        self.schedule.push((at, action));
        self.schedule.sort_by_key(|(t, _)| *t);
        self
    }

    /// Expects these marks.
    pub fn expect(mut self, marks: &[Mark]) -> Scenario {
        self.marks.extend_from_slice(marks);
        self
    }

    /// The seed-drawn variant of this scenario's faults: links drawn per
    /// direction, and the fault schedule's times jittered.
    pub(crate) fn sample(&mut self, c: &mut Choices) {
        if !self.swarm {
            return;
        }
        self.up = LinkConfig::swarm(c);
        self.down = LinkConfig::swarm(c);
        if !self.swarm_events {
            return;
        }
        self.transport = c.weighted(&[(2, Transport::Datagram), (1, Transport::Stream), (1, Transport::Hybrid)]);
        // A few recoverable events at random times in the first seconds:
        // each shorter than the idle and delivery timeouts, so the run
        // still promises that nothing is lost.
        for _ in 0..c.below(5) {
            let at = Duration::from_millis(c.between(100, 3000));
            let who = Who::Client(c.below(self.clients as u64) as usize);
            let dir = match c.below(3) {
                0 => None,
                1 => Some(Dir::Up),
                _ => Some(Dir::Down),
            };
            let lasting = Duration::from_millis(c.between(50, 4000));
            match c.below(6) {
                0 => {
                    self.schedule.push((at, Action::Partition(who, dir)));
                    self.schedule.push((at + lasting, Action::Heal(who)));
                }
                1 => {
                    // Flapping: down and up every `period`, four times.
                    let period = Duration::from_millis(c.between(20, 400));
                    for k in 0..4u32 {
                        self.schedule.push((at + period * (2 * k), Action::Partition(who, dir)));
                        self.schedule.push((at + period * (2 * k + 1), Action::Heal(who)));
                    }
                }
                2 => self.schedule.push((at, Action::Rebind(who))),
                3 => self.schedule.push((at, Action::Sever(who))),
                4 => {
                    self.schedule.push((at, Action::SetMtu(who, c.between(400, 1199) as usize)));
                    self.schedule.push((at + lasting, Action::SetMtu(who, 1500)));
                }
                _ => {
                    let node = if c.chance(0.5) { None } else { Some(c.below(self.clients as u64) as usize) };
                    self.schedule.push((at, Action::ClockStep(node, Duration::from_millis(c.between(1, 5000)))));
                }
            }
        }
        self.schedule.sort_by_key(|(t, _)| *t);
    }

    /// The sampled configuration, as it would be written in a test.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "scenario = {:?}\nclients = {}\ntransport = {:?}\nlossless = {}\n",
            self.name, self.clients, self.transport, self.lossless
        );
        s += &format!("up = {:?}\ndown = {:?}\n", self.up, self.down);
        s += &format!("clocks = {:?}\nattacker = {:?}\nworkload = {:?}\n", self.clocks, self.attacker, self.workload);
        s += &format!(
            "flood = {:?}\nnat = {}\nhalf_open_per_prefix = {:?}\nmax_handshake = {:?}\n",
            self.flood, self.nat, self.half_open_per_prefix, self.max_handshake
        );
        for (t, a) in &self.schedule {
            s += &format!("at {:?}: {:?}\n", t, a);
        }
        s
    }
}
